//! A logical replication connection, built on postgres-protocol's message codecs
//! (tokio-postgres does not speak the replication protocol).
//!
//! Protocol: <https://www.postgresql.org/docs/current/protocol-replication.html>.
//! After `START_REPLICATION` the connection is in copy-both mode: the server sends CopyData
//! frames holding XLogData (`w`) and primary keepalives (`k`); we send standby status updates
//! (`r`). The flush position we report is the slot's `confirmed_flush_lsn`: PostgreSQL may
//! discard WAL before it and will never send a transaction that committed before it again, so
//! we report only what Kafka has durably committed.

mod frame;
mod stream;
pub(crate) use frame::{classify_sqlstate, server_error};
use frame::{io_err, read_frame, Frame};
pub use stream::{ReplicationStream, StatusSender};

use bytes::{Bytes, BytesMut};
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::{PostgresConfig, SslMode};
use crate::error::{Code, Error, Result};
use crate::postgres::{tls, SESSION_OPTIONS};
use crate::sql::{sql_ident, sql_literal};
use crate::Lsn;

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
type BoxIo = Box<dyn Io>;

/// A connection in replication mode (`replication=database`), before streaming starts.
pub struct ReplicationClient {
    io: BoxIo,
    rbuf: BytesMut,
    server: String,
}

/// What `IDENTIFY_SYSTEM` returns.
#[derive(Debug, Clone)]
pub struct SystemId {
    pub systemid: String,
    pub timeline: u32,
    pub xlogpos: Lsn,
    pub dbname: Option<String>,
}

/// One frame of the replication stream.
#[derive(Debug)]
pub enum StreamEvent {
    XLogData {
        wal_start: Lsn,
        wal_end: Lsn,
        data: Bytes,
    },
    Keepalive {
        wal_end: Lsn,
        reply_requested: bool,
    },
}

impl ReplicationClient {
    /// A replication connection to the first host of `cfg` that answers with the
    /// `target_session_attrs`.
    pub async fn connect(cfg: &PostgresConfig, application_name: &str) -> Result<Self> {
        let check = crate::postgres::hosts::check_sql(cfg.target_session_attrs);
        crate::postgres::hosts::first_host(cfg, |one| async move {
            let mut c = Self::connect_one(&one, application_name).await?;
            let Some((sql, yes)) = check else {
                return Ok(Some(c));
            };
            let rows = c.simple_query(sql).await?;
            let answer = rows.first().and_then(|r| r.first()).cloned().flatten();
            Ok((answer.as_deref() == Some(yes)).then_some(c))
        })
        .await
    }

    async fn connect_one(cfg: &PostgresConfig, application_name: &str) -> Result<Self> {
        let server = format!("{}:{}", cfg.host, cfg.port);
        let tcp = TcpStream::connect((cfg.host.as_str(), cfg.port))
            .await
            .map_err(|e| io_err(&server, "connect", e))?;
        let _ = tcp.set_nodelay(true);
        let io = negotiate_tls(tcp, cfg, &server).await?;
        let mut c = ReplicationClient {
            io,
            rbuf: BytesMut::with_capacity(64 * 1024),
            server,
        };
        c.startup(cfg, application_name, true).await?;
        Ok(c)
    }

    /// Opens an ordinary (not replication) session with pgcdc's own protocol code and
    /// closes it. tokio-postgres reports a missing password or a server without TLS as
    /// untyped text; after it failed before the server sent an error, this says why with
    /// a typed [`Error`] (the same the replication connection would give).
    pub async fn probe(cfg: &PostgresConfig, application_name: &str) -> Result<()> {
        let server = format!("{}:{}", cfg.host, cfg.port);
        let tcp = TcpStream::connect((cfg.host.as_str(), cfg.port))
            .await
            .map_err(|e| io_err(&server, "connect", e))?;
        let io = negotiate_tls(tcp, cfg, &server).await?;
        let mut c = ReplicationClient {
            io,
            rbuf: BytesMut::with_capacity(8192),
            server,
        };
        c.startup(cfg, application_name, false).await?;
        let mut b = BytesMut::new();
        frontend::terminate(&mut b);
        c.send(&b).await
    }

    async fn send(&mut self, buf: &[u8]) -> Result<()> {
        self.io
            .write_all(buf)
            .await
            .map_err(|e| io_err(&self.server, "write", e))?;
        self.io
            .flush()
            .await
            .map_err(|e| io_err(&self.server, "write", e))
    }

    async fn recv(&mut self) -> Result<Frame> {
        read_frame(&mut self.io, &mut self.rbuf, &self.server).await
    }

    async fn startup(
        &mut self,
        cfg: &PostgresConfig,
        application_name: &str,
        replication: bool,
    ) -> Result<()> {
        let mut buf = BytesMut::new();
        let mut params = vec![
            ("user", cfg.user.as_str()),
            ("database", cfg.dbname.as_str()),
            ("application_name", application_name),
            ("options", SESSION_OPTIONS),
        ];
        if replication {
            params.push(("replication", "database"));
        }
        frontend::startup_message(params.iter().copied(), &mut buf).map_err(|e| {
            Error::permanent(Code::PostgresProtocol, format!("startup message: {e}")).with_source(e)
        })?;
        self.send(&buf).await?;

        let server = self.server.clone();
        let password = || {
            cfg.password.as_ref().filter(|p| !p.0.is_empty()).map(|p| p.0.clone()).ok_or_else(|| {
                Error::permanent(Code::PostgresAuth, format!(
                    "PostgreSQL {server} asks for a password for user {:?}; set postgres.password in the connector file",
                    cfg.user
                ))
            })
        };
        loop {
            let Frame::Msg(msg) = self.recv().await? else {
                return Err(Error::permanent(
                    Code::PostgresProtocol,
                    format!(
                        "PostgreSQL {}: unexpected CopyBoth during startup",
                        self.server
                    ),
                ));
            };
            match msg {
                Message::AuthenticationOk => {}
                Message::AuthenticationCleartextPassword => {
                    let mut b = BytesMut::new();
                    frontend::password_message(password()?.as_bytes(), &mut b)
                        .map_err(|e| Error::permanent(Code::PostgresProtocol, e.to_string()))?;
                    self.send(&b).await?;
                }
                Message::AuthenticationMd5Password(body) => {
                    let hash = postgres_protocol::authentication::md5_hash(
                        cfg.user.as_bytes(),
                        password()?.as_bytes(),
                        body.salt(),
                    );
                    let mut b = BytesMut::new();
                    frontend::password_message(hash.as_bytes(), &mut b)
                        .map_err(|e| Error::permanent(Code::PostgresProtocol, e.to_string()))?;
                    self.send(&b).await?;
                }
                Message::AuthenticationSasl(body) => {
                    let mut mechs = body.mechanisms();
                    let mut scram_ok = false;
                    while let Ok(Some(m)) = mechs.next() {
                        scram_ok |= m == "SCRAM-SHA-256";
                    }
                    if !scram_ok {
                        return Err(Error::permanent(
                            Code::PostgresAuth,
                            format!(
                            "PostgreSQL {} offers no SASL mechanism pgcdc supports (SCRAM-SHA-256)",
                            self.server
                        ),
                        ));
                    }
                    self.scram(password()?.as_bytes()).await?;
                }
                Message::AuthenticationGss
                | Message::AuthenticationSspi
                | Message::AuthenticationKerberosV5 => {
                    return Err(Error::permanent(Code::PostgresAuth, format!(
                        "PostgreSQL {} asks for GSS/SSPI/Kerberos authentication, which pgcdc does not support; \
                         allow md5 or scram-sha-256 for user {:?} in pg_hba.conf",
                        self.server, cfg.user
                    )));
                }
                Message::ParameterStatus(_)
                | Message::BackendKeyData(_)
                | Message::NoticeResponse(_) => {}
                Message::ReadyForQuery(_) => return Ok(()),
                Message::ErrorResponse(body) => return Err(server_error(&self.server, &body)),
                _ => {
                    return Err(Error::permanent(
                        Code::PostgresProtocol,
                        format!(
                            "PostgreSQL {}: unexpected message during startup",
                            self.server
                        ),
                    ))
                }
            }
        }
    }

    async fn scram(&mut self, password: &[u8]) -> Result<()> {
        let mut scram = ScramSha256::new(password, ChannelBinding::unsupported());
        let mut b = BytesMut::new();
        frontend::sasl_initial_response("SCRAM-SHA-256", scram.message(), &mut b)
            .map_err(|e| Error::permanent(Code::PostgresProtocol, e.to_string()))?;
        self.send(&b).await?;
        let bad = |s: &str| {
            Error::permanent(
                Code::PostgresAuth,
                format!("PostgreSQL {s}: SCRAM authentication failed"),
            )
        };
        match self.recv().await? {
            Frame::Msg(Message::AuthenticationSaslContinue(body)) => {
                scram.update(body.data()).map_err(|_| bad(&self.server))?;
            }
            Frame::Msg(Message::ErrorResponse(body)) => {
                return Err(server_error(&self.server, &body))
            }
            _ => return Err(bad(&self.server)),
        }
        let mut b = BytesMut::new();
        frontend::sasl_response(scram.message(), &mut b)
            .map_err(|e| Error::permanent(Code::PostgresProtocol, e.to_string()))?;
        self.send(&b).await?;
        match self.recv().await? {
            Frame::Msg(Message::AuthenticationSaslFinal(body)) => {
                scram.finish(body.data()).map_err(|_| bad(&self.server))
            }
            Frame::Msg(Message::ErrorResponse(body)) => Err(server_error(&self.server, &body)),
            _ => Err(bad(&self.server)),
        }
    }

    /// Runs one simple-protocol command and returns its rows as text.
    pub async fn simple_query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>> {
        let mut b = BytesMut::new();
        frontend::query(sql, &mut b)
            .map_err(|e| Error::permanent(Code::PostgresProtocol, e.to_string()))?;
        self.send(&b).await?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            match self.recv().await? {
                Frame::Msg(Message::DataRow(row)) => {
                    let buf = row.buffer();
                    let mut vals = Vec::new();
                    let mut ranges = row.ranges();
                    while let Some(r) = ranges
                        .next()
                        .map_err(|e| io_err(&self.server, "data row", e))?
                    {
                        vals.push(r.map(|r| String::from_utf8_lossy(&buf[r]).into_owned()));
                    }
                    rows.push(vals);
                }
                Frame::Msg(Message::ErrorResponse(body)) => {
                    error = Some(server_error(&self.server, &body))
                }
                Frame::Msg(Message::ReadyForQuery(_)) => break,
                Frame::Msg(_) => {}
                Frame::CopyBoth => {
                    return Err(Error::permanent(
                        Code::PostgresProtocol,
                        format!("PostgreSQL {}: unexpected copy mode", self.server),
                    ))
                }
            }
        }
        match error {
            Some(e) => Err(e),
            None => Ok(rows),
        }
    }

    pub async fn identify_system(&mut self) -> Result<SystemId> {
        let rows = self.simple_query("IDENTIFY_SYSTEM").await?;
        let row = rows.first().ok_or_else(|| {
            Error::permanent(Code::PostgresProtocol, "IDENTIFY_SYSTEM returned no row")
        })?;
        let col = |i: usize| row.get(i).cloned().flatten();
        let bad = || {
            Error::permanent(
                Code::PostgresProtocol,
                format!(
                    "PostgreSQL {}: malformed IDENTIFY_SYSTEM reply",
                    self.server
                ),
            )
        };
        Ok(SystemId {
            systemid: col(0).ok_or_else(bad)?,
            timeline: col(1).and_then(|t| t.parse().ok()).ok_or_else(bad)?,
            xlogpos: col(2).and_then(|l| l.parse().ok()).ok_or_else(bad)?,
            dbname: col(3),
        })
    }

    /// Creates a pgoutput slot; returns its consistent point.
    pub async fn create_slot(&mut self, slot: &str, failover: bool) -> Result<Lsn> {
        Ok(self.create_slot_with(slot, false, failover).await?.0)
    }

    /// Creates a pgoutput slot and exports the snapshot of its consistent point: every
    /// transaction that committed before the consistent point is visible in the snapshot,
    /// every later one is in the stream. The snapshot lives until the next command on this
    /// connection, so the caller reads its tables before it starts replication.
    pub async fn create_slot_exported(
        &mut self,
        slot: &str,
        failover: bool,
    ) -> Result<(Lsn, String)> {
        let (lsn, name) = self.create_slot_with(slot, true, failover).await?;
        let name = name.ok_or_else(|| {
            Error::permanent(Code::PostgresProtocol, format!(
                "PostgreSQL {}: CREATE_REPLICATION_SLOT ... EXPORT_SNAPSHOT returned no snapshot name",
                self.server
            ))
        })?;
        Ok((lsn, name))
    }

    /// Makes an existing slot a failover slot or an ordinary one (PostgreSQL 17+; the slot
    /// must be inactive).
    pub async fn set_slot_failover(&mut self, slot: &str, failover: bool) -> Result<()> {
        self.simple_query(&format!(
            "ALTER_REPLICATION_SLOT {} (FAILOVER {failover})",
            sql_ident(slot)
        ))
        .await?;
        Ok(())
    }

    /// `failover` (PostgreSQL 17+) makes a slot that standbys with `sync_replication_slots`
    /// keep in step, so it survives a promotion; it needs the option-list syntax.
    async fn create_slot_with(
        &mut self,
        slot: &str,
        export: bool,
        failover: bool,
    ) -> Result<(Lsn, Option<String>)> {
        let opt = match (export, failover) {
            (true, false) => "EXPORT_SNAPSHOT".to_owned(),
            (false, false) => "NOEXPORT_SNAPSHOT".to_owned(),
            (e, true) => format!(
                "(SNAPSHOT '{}', FAILOVER true)",
                if e { "export" } else { "nothing" }
            ),
        };
        let rows = self
            .simple_query(&format!(
                "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput {opt}",
                sql_ident(slot)
            ))
            .await
            .map_err(|e| {
                // configuration_limit_exceeded: every slot max_replication_slots allows
                // exists. Retried: dropping a slot frees one without restarting pgcdc.
                if e.sqlstate() == Some("53400") {
                    Error::transient(
                        Code::Slot,
                        format!(
                            "PostgreSQL {}: cannot create replication slot {slot}: all replication slots are in use (max_replication_slots); drop one that is no longer needed (SELECT slot_name, active FROM pg_replication_slots) or raise max_replication_slots and restart the server; pgcdc retries",
                            self.server
                        ),
                    )
                    .with_sqlstate("53400")
                } else {
                    e
                }
            })?;
        let row = rows.first();
        let lsn = row
            .and_then(|r| r.get(1).cloned().flatten())
            .and_then(|l| l.parse().ok())
            .ok_or_else(|| {
                Error::permanent(
                    Code::PostgresProtocol,
                    format!(
                        "PostgreSQL {}: malformed CREATE_REPLICATION_SLOT reply",
                        self.server
                    ),
                )
            })?;
        Ok((lsn, row.and_then(|r| r.get(2).cloned().flatten())))
    }

    /// Drops a slot (ours, inactive).
    pub async fn drop_slot(&mut self, slot: &str) -> Result<()> {
        self.simple_query(&format!("DROP_REPLICATION_SLOT {}", sql_ident(slot)))
            .await?;
        Ok(())
    }

    pub async fn show(&mut self, setting: &str) -> Result<String> {
        let rows = self.simple_query(&format!("SHOW {setting}")).await?;
        rows.first()
            .and_then(|r| r.first().cloned().flatten())
            .ok_or_else(|| {
                Error::permanent(
                    Code::PostgresProtocol,
                    format!("SHOW {setting} returned nothing"),
                )
            })
    }

    /// Enters copy-both mode. `messages` asks pgoutput for logical decoding messages
    /// (PostgreSQL 14+).
    pub async fn start_replication(
        mut self,
        slot: &str,
        start: Lsn,
        publication: &str,
        messages: bool,
    ) -> Result<(ReplicationStream, StatusSender)> {
        let mut opts = format!(
            "proto_version '1', publication_names {}",
            sql_literal(&sql_ident(publication))
        );
        if messages {
            opts.push_str(", messages 'true'");
        }
        let sql = format!(
            "START_REPLICATION SLOT {} LOGICAL {start} ({opts})",
            sql_ident(slot)
        );
        let mut b = BytesMut::new();
        frontend::query(&sql, &mut b)
            .map_err(|e| Error::permanent(Code::PostgresProtocol, e.to_string()))?;
        self.send(&b).await?;
        loop {
            match self.recv().await? {
                Frame::CopyBoth => break,
                Frame::Msg(Message::ErrorResponse(body)) => {
                    return Err(server_error(&self.server, &body))
                }
                Frame::Msg(Message::NoticeResponse(_)) => {}
                Frame::Msg(_) => {
                    return Err(Error::permanent(
                        Code::PostgresProtocol,
                        format!(
                            "PostgreSQL {}: unexpected reply to START_REPLICATION",
                            self.server
                        ),
                    ))
                }
            }
        }
        let (r, w) = tokio::io::split(self.io);
        Ok((
            ReplicationStream {
                io: r,
                rbuf: self.rbuf,
                server: self.server.clone(),
            },
            StatusSender {
                io: w,
                server: self.server,
            },
        ))
    }
}

async fn negotiate_tls(mut tcp: TcpStream, cfg: &PostgresConfig, server: &str) -> Result<BoxIo> {
    if cfg.sslmode == SslMode::Disable {
        return Ok(Box::new(tcp));
    }
    let answer = tls::ssl_request(&mut tcp)
        .await
        .map_err(|e| io_err(server, "SSL request", e))?;
    match answer {
        b'S' => {
            let connector = tls::connector(cfg)?;
            match tokio_native_tls::TlsConnector::from(connector)
                .connect(&cfg.host, tcp)
                .await
            {
                Ok(tls) => Ok(Box::new(tls)),
                Err(e) => Err(tls::handshake_failed(cfg, server, &e.to_string()).await),
            }
        }
        b'N' if cfg.sslmode == SslMode::Prefer => Ok(Box::new(tcp)),
        b'N' => Err(Error::permanent(Code::PostgresTls, format!(
            "PostgreSQL {server} does not accept TLS but postgres.sslmode is {}; enable ssl on the server or lower sslmode",
            cfg.sslmode.as_str()
        ))),
        _ => Err(Error::permanent(Code::PostgresTls, format!("PostgreSQL {server}: unexpected answer to the SSL request"))),
    }
}
