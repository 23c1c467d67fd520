//! Backend frames as they arrive on the replication connection, and the errors they carry
//! (an ErrorResponse classified by its SQLSTATE, I/O trouble naming the server).

use bytes::{Buf, BytesMut};
use fallible_iterator::FallibleIterator;
use postgres_protocol::message::backend::{self, ErrorResponseBody, Message};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::error::{Code, Error, Result};

pub(crate) fn server_error(server: &str, body: &ErrorResponseBody) -> Error {
    let mut code = String::new();
    let mut message = String::new();
    let mut detail = String::new();
    let mut hint = String::new();
    let mut fields = body.fields();
    while let Ok(Some(f)) = fields.next() {
        let v = String::from_utf8_lossy(f.value_bytes());
        match f.type_() {
            b'C' => code = v.into_owned(),
            b'M' => message = v.into_owned(),
            b'D' => detail = format!(" ({v})"),
            b'H' => hint = format!("; hint: {v}"),
            _ => {}
        }
    }
    let text = format!("PostgreSQL {server}: {message}{detail}{hint} [SQLSTATE {code}]");
    classify_sqlstate(&code, text)
}

/// Connection trouble, shutdown, resource exhaustion and a slot in use by another
/// walsender are worth retrying; anything else needs the operator.
pub(crate) fn classify_sqlstate(code: &str, text: String) -> Error {
    let transient = code.starts_with("08")
        || code.starts_with("53")
        || code.starts_with("57")
        || code.starts_with("40")
        || code == "55006";
    let what = if code.starts_with("08") {
        Code::PostgresConnect
    } else if code.starts_with("28") {
        Code::PostgresAuth
    } else if code == "55006" {
        // object_in_use: the slot is active for another walsender.
        Code::Slot
    } else {
        Code::PostgresSql
    };
    let kind = if transient {
        crate::error::Kind::Transient
    } else {
        crate::error::Kind::Permanent
    };
    Error::new(kind, what, text).with_sqlstate(code)
}

pub(super) fn io_err(
    server: &str,
    what: &str,
    e: impl std::error::Error + Send + Sync + 'static,
) -> Error {
    Error::transient(
        Code::PostgresConnect,
        format!("PostgreSQL {server}: {what}: {e}"),
    )
    .with_source(e)
}

/// Reads one whole backend frame. `W` (CopyBothResponse) is not parsed by
/// postgres-protocol, so it is handled here.
pub(super) enum Frame {
    CopyBoth,
    Msg(Message),
}

pub(super) async fn read_frame<R: AsyncRead + Unpin + ?Sized>(
    io: &mut R,
    rbuf: &mut BytesMut,
    server: &str,
) -> Result<Frame> {
    loop {
        if let Some(header) =
            backend::Header::parse(rbuf).map_err(|e| io_err(server, "bad frame", e))?
        {
            let total = header.len() as usize + 1;
            if rbuf.len() >= total {
                if header.tag() == b'W' {
                    rbuf.advance(total);
                    return Ok(Frame::CopyBoth);
                }
                if let Some(m) =
                    Message::parse(rbuf).map_err(|e| io_err(server, "bad message", e))?
                {
                    return Ok(Frame::Msg(m));
                }
            } else {
                rbuf.reserve(total - rbuf.len());
            }
        }
        if rbuf.capacity() - rbuf.len() < 8192 {
            rbuf.reserve(64 * 1024);
        }
        let n = io
            .read_buf(rbuf)
            .await
            .map_err(|e| io_err(server, "read", e))?;
        if n == 0 {
            return Err(Error::transient(
                Code::PostgresConnect,
                format!("PostgreSQL {server}: connection closed by the server"),
            ));
        }
    }
}
