//! The streaming half of a replication connection: CopyBoth data after
//! `START_REPLICATION`, read as XLogData and keepalives, and the standby status updates
//! written back.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, BytesMut};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};

use crate::decode::pgoutput::PG_EPOCH_OFFSET_MICROS;
use crate::error::{Code, Error, Result};
use crate::Lsn;

use super::*;

/// The receiving half of a streaming replication connection.
pub struct ReplicationStream {
    pub(super) io: ReadHalf<BoxIo>,
    pub(super) rbuf: BytesMut,
    pub(super) server: String,
}

impl ReplicationStream {
    pub async fn next(&mut self) -> Result<StreamEvent> {
        loop {
            let frame = read_frame(&mut self.io, &mut self.rbuf, &self.server).await?;
            let mut data = match frame {
                Frame::Msg(Message::CopyData(body)) => body.into_bytes(),
                Frame::Msg(Message::ErrorResponse(body)) => {
                    return Err(server_error(&self.server, &body))
                }
                Frame::Msg(Message::CopyDone) => {
                    return Err(Error::transient(
                        Code::PostgresConnect,
                        format!("PostgreSQL {}: the server ended replication", self.server),
                    ))
                }
                Frame::Msg(_) | Frame::CopyBoth => continue,
            };
            let bad = |what: &str| {
                Error::permanent(
                    Code::PostgresProtocol,
                    format!("PostgreSQL {}: malformed {what}", self.server),
                )
            };
            match data.first() {
                Some(b'w') if data.len() >= 25 => {
                    data.advance(1);
                    let wal_start = Lsn(data.get_u64());
                    let wal_end = Lsn(data.get_u64());
                    let _send_time = data.get_i64();
                    return Ok(StreamEvent::XLogData {
                        wal_start,
                        wal_end,
                        data,
                    });
                }
                Some(b'k') if data.len() >= 18 => {
                    data.advance(1);
                    let wal_end = Lsn(data.get_u64());
                    let _send_time = data.get_i64();
                    return Ok(StreamEvent::Keepalive {
                        wal_end,
                        reply_requested: data.get_u8() == 1,
                    });
                }
                Some(b'w') => return Err(bad("XLogData")),
                Some(b'k') => return Err(bad("keepalive")),
                _ => return Err(bad("replication message")),
            }
        }
    }
}

/// The sending half: standby status updates.
pub struct StatusSender {
    pub(super) io: WriteHalf<BoxIo>,
    pub(super) server: String,
}

impl StatusSender {
    /// Reports `written` (received) and `flushed` (durably delivered) positions.
    pub async fn send(&mut self, written: Lsn, flushed: Lsn, reply_requested: bool) -> Result<()> {
        let mut payload = BytesMut::with_capacity(34);
        payload.put_u8(b'r');
        payload.put_u64(written.0);
        payload.put_u64(flushed.0);
        payload.put_u64(flushed.0);
        payload.put_i64(pg_now_micros());
        payload.put_u8(u8::from(reply_requested));
        let mut b = BytesMut::new();
        frontend::CopyData::new(payload.freeze())
            .map_err(|e| Error::permanent(Code::PostgresProtocol, e.to_string()))?
            .write(&mut b);
        self.io
            .write_all(&b)
            .await
            .map_err(|e| io_err(&self.server, "status update", e))?;
        self.io
            .flush()
            .await
            .map_err(|e| io_err(&self.server, "status update", e))
    }
}

fn pg_now_micros() -> i64 {
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_micros() as i64;
    unix - PG_EPOCH_OFFSET_MICROS
}
