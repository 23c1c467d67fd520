//! An ordinary (non-replication) connection for everything that is plain SQL: preflight
//! checks, the publication, slot state, and catalog look-ups for types and primary keys.

mod preflight;
mod publication;
mod relation;
mod snapshot;

pub use preflight::Preflight;
pub use snapshot::SnapshotTable;

use std::collections::HashMap;

use tokio_postgres::Client;

use crate::config::{NumericMode, PostgresConfig, SslMode};
use crate::error::{Code, Error, Result};
use crate::postgres::replication::classify_sqlstate;
use crate::postgres::tls;
use crate::typemap::PgType;
use crate::Lsn;

pub struct Catalog {
    client: Client,
    server: String,
    numeric_mode: NumericMode,
    types: HashMap<(u32, i32), PgType>,
}

#[derive(Debug, Clone)]
pub struct SlotInfo {
    pub plugin: Option<String>,
    pub database: Option<String>,
    pub confirmed_flush: Option<Lsn>,
    pub active: bool,
    pub active_pid: Option<i32>,
    /// Whether it is a failover slot (PostgreSQL 17+; None before).
    pub failover: Option<bool>,
    pub restart_lsn: Option<Lsn>,
    /// `reserved`, `extended`, `unreserved` or `lost` (PostgreSQL 13+).
    pub wal_status: Option<String>,
    /// Why PostgreSQL invalidated it (17+: `wal_removed`, `rows_removed`,
    /// `wal_level_insufficient`; 18: `idle_timeout`); on 16 `conflicting` gives
    /// `rows_removed`.
    pub invalidation_reason: Option<String>,
}

impl SlotInfo {
    /// When PostgreSQL invalidated the slot (it can no longer be read): what it says why.
    pub fn invalidated(&self) -> Option<String> {
        let lost = self.wal_status.as_deref() == Some("lost");
        if !lost && self.invalidation_reason.is_none() {
            return None;
        }
        let mut why = Vec::new();
        if let Some(w) = &self.wal_status {
            why.push(format!("wal_status {w}"));
        }
        if let Some(r) = &self.invalidation_reason {
            why.push(format!("invalidation_reason {r}"));
        }
        Some(why.join(", "))
    }
}

/// Reading a catalog row: a column of another type than the query promises is an error
/// naming the column, never a panic (`Row::get` panics).
trait Col {
    fn col<'a, T: tokio_postgres::types::FromSql<'a>>(&'a self, i: usize) -> Result<T>;
}

impl Col for tokio_postgres::Row {
    fn col<'a, T: tokio_postgres::types::FromSql<'a>>(&'a self, i: usize) -> Result<T> {
        self.try_get(i).map_err(|e| {
            let name = self.columns().get(i).map_or("?", |c| c.name());
            Error::permanent(
                Code::PostgresConnect,
                format!("internal error: catalog query column {i} ({name}): {e}; please report it"),
            )
            .with_source(e)
        })
    }
}

pub(crate) fn pg_err(server: &str, e: tokio_postgres::Error) -> Error {
    if let Some(db) = e.as_db_error() {
        let hint = db
            .hint()
            .map(|h| format!("; hint: {h}"))
            .unwrap_or_default();
        let text = format!(
            "PostgreSQL {server}: {}{hint} [SQLSTATE {}]",
            db.message(),
            db.code().code()
        );
        return classify_sqlstate(db.code().code(), text).with_source(e);
    }
    Error::transient(
        Code::PostgresConnect,
        format!("PostgreSQL {server}: {}", error_chain(&e)),
    )
    .with_source(e)
}

/// An error's text followed by its causes, `: `-separated.
fn error_chain(e: &tokio_postgres::Error) -> String {
    let mut text = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(cause) = src {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        src = cause.source();
    }
    text
}

/// Whether a connection failed in the TLS handshake: the error's source is native-tls's.
fn is_tls_failure(e: &tokio_postgres::Error) -> bool {
    std::error::Error::source(e).is_some_and(|s| s.downcast_ref::<native_tls::Error>().is_some())
}

/// An ordinary connection; `options` are startup options (`-c name=value ...`). Returns the
/// client and the server's `host:port` for messages. Of several hosts, the first that
/// answers with the `target_session_attrs`.
pub(crate) async fn connect_client(
    cfg: &PostgresConfig,
    application_name: &str,
    options: Option<&str>,
) -> Result<(Client, String)> {
    let check = crate::postgres::hosts::check_sql(cfg.target_session_attrs);
    crate::postgres::hosts::first_host(cfg, |one| async move {
        let (client, server) = connect_one(&one, application_name, options).await?;
        let Some((sql, yes)) = check else {
            return Ok(Some((client, server)));
        };
        let answer = client
            .simple_query(sql)
            .await
            .map_err(|e| pg_err(&server, e))?
            .into_iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                _ => None,
            });
        Ok((answer.as_deref() == Some(yes)).then_some((client, server)))
    })
    .await
}

async fn connect_one(
    cfg: &PostgresConfig,
    application_name: &str,
    options: Option<&str>,
) -> Result<(Client, String)> {
    let server = format!("{}:{}", cfg.host, cfg.port);
    let mut pc = tokio_postgres::Config::new();
    pc.host(&cfg.host)
        .port(cfg.port)
        .user(&cfg.user)
        .dbname(&cfg.dbname)
        .application_name(application_name);
    if let Some(o) = options {
        pc.options(o);
    }
    if let Some(p) = cfg.password.as_ref().filter(|p| !p.0.is_empty()) {
        pc.password(&p.0);
    }
    pc.ssl_mode(match cfg.sslmode {
        SslMode::Disable => tokio_postgres::config::SslMode::Disable,
        SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
        _ => tokio_postgres::config::SslMode::Require,
    });
    // Without TLS no connector is built: building one loads the system's CA certificates,
    // about 40 ms of CPU per connection.
    let connected = if cfg.sslmode == SslMode::Disable {
        pc.connect(tokio_postgres::NoTls)
            .await
            .map(|(client, conn)| (client, drive(conn)))
    } else {
        let tls = postgres_native_tls::MakeTlsConnector::new(tls::connector(cfg)?);
        pc.connect(tls)
            .await
            .map(|(client, conn)| (client, drive(conn)))
    };
    match connected {
        Ok((client, ())) => Ok((client, server)),
        Err(e) if is_tls_failure(&e) => {
            Err(tls::handshake_failed(cfg, &server, &error_chain(&e)).await)
        }
        Err(e) if e.as_db_error().is_none() => {
            // Failed before the server sent an error: a missing password, a server without
            // TLS, or the network. tokio-postgres's error kinds are private, so pgcdc's own
            // protocol code asks again and classifies what it meets.
            Err(
                match crate::postgres::replication::ReplicationClient::probe(cfg, application_name)
                    .await
                {
                    Err(typed) if !typed.is_transient() => typed,
                    _ => pg_err(&server, e),
                },
            )
        }
        Err(e) => Err(pg_err(&server, e)),
    }
}

/// Runs a connection's I/O in the background until it closes.
fn drive<S, T>(conn: tokio_postgres::Connection<S, T>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "postgres connection closed");
        }
    });
}

impl Catalog {
    pub async fn connect(
        cfg: &PostgresConfig,
        numeric_mode: NumericMode,
        application_name: &str,
    ) -> Result<Self> {
        // pgoutput's text formats, so that defaults cast here print as values arrive.
        let (client, server) = connect_client(
            cfg,
            application_name,
            Some(crate::postgres::SESSION_OPTIONS),
        )
        .await?;
        Ok(Catalog {
            client,
            server,
            numeric_mode,
            types: HashMap::new(),
        })
    }

    /// Waits until transaction `xid` (a `pg_current_xact_id()` text) is visible to new
    /// snapshots of this session, for at most `limit`; returns whether it became visible.
    ///
    /// The walsender decodes a commit as soon as its WAL is flushed, which can be before
    /// the committing backend leaves the proc array: a catalog read at once on another
    /// session may still see the state before the transaction.
    pub async fn wait_visible(&self, xid: &str, limit: std::time::Duration) -> Result<bool> {
        let start = std::time::Instant::now();
        loop {
            let row = self
                .client
                .query_one(
                    "SELECT pg_visible_in_snapshot($1::text::xid8, pg_current_snapshot())",
                    &[&xid],
                )
                .await
                .map_err(|e| self.err(e))?;
            if row.col::<bool>(0)? {
                return Ok(true);
            }
            if start.elapsed() >= limit {
                return Ok(false);
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    fn err(&self, e: tokio_postgres::Error) -> Error {
        pg_err(&self.server, e)
    }

    async fn show(&self, setting: &str) -> Result<String> {
        let row = self
            .client
            .query_one(&format!("SHOW {setting}"), &[])
            .await
            .map_err(|e| self.err(e))?;
        row.col(0)
    }

    pub async fn server_version_num(&self) -> Result<i32> {
        let row = self
            .client
            .query_one("SELECT current_setting('server_version_num')::int", &[])
            .await
            .map_err(|e| self.err(e))?;
        row.col(0)
    }

    /// The `application_name` of backend `pid` (None when it is gone or not visible).
    pub async fn application_name(&self, pid: i32) -> Result<Option<String>> {
        let row = self
            .client
            .query_opt(
                "SELECT application_name FROM pg_stat_activity WHERE pid = $1",
                &[&pid],
            )
            .await
            .map_err(|e| self.err(e))?;
        match row {
            Some(r) => r.col(0),
            None => Ok(None),
        }
    }

    pub async fn slot(&self, name: &str) -> Result<Option<SlotInfo>> {
        let row = self
            .client
            .query_opt(
                "SELECT plugin::text, database::text, confirmed_flush_lsn::text, active, active_pid,
                        (to_jsonb(s) ->> 'failover')::bool, restart_lsn::text, wal_status::text,
                        coalesce(to_jsonb(s) ->> 'invalidation_reason',
                                 CASE WHEN (to_jsonb(s) ->> 'conflicting')::bool THEN 'rows_removed' END)
                   FROM pg_replication_slots s WHERE slot_name = $1",
                &[&name],
            )
            .await
            .map_err(|e| self.err(e))?;
        row.map(|r| {
            Ok(SlotInfo {
                plugin: r.col(0)?,
                database: r.col(1)?,
                confirmed_flush: r.col::<Option<String>>(2)?.and_then(|s| s.parse().ok()),
                active: r.col(3)?,
                active_pid: r.col(4)?,
                failover: r.col(5)?,
                restart_lsn: r.col::<Option<String>>(6)?.and_then(|s| s.parse().ok()),
                wal_status: r.col(7)?,
                invalidation_reason: r.col(8)?,
            })
        })
        .transpose()
    }
}
