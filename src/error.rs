//! The daemon's error type. Every error has
//! - a [`Kind`]: transient (retrying may succeed: a network blip, a broker or registry that
//!   is briefly unavailable), permanent (the operator must change something), or fenced
//!   (another instance took over);
//! - a stable [`Code`] for logs, `/healthz` and scripts, which never depends on a message's
//!   wording;
//! - a message that names the object (file and field, table, server) and says what to do;
//! - the operator's next step as a field of its own ([`Error::next_step`]): the site's own
//!   when it knows better, else its code's ([`Code::next_step`]), so a script or
//!   `/healthz` reader gets it without parsing the message;
//! - the error it came from, if any, as its `source`.
//!
//! Classification happens where the typed error is at hand (SQLSTATE, rdkafka's
//! `RDKafkaErrorCode`, the registry's HTTP status and JSON `error_code`), not by reading text.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use crate::config::ConfigError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Transient,
    Permanent,
    Fenced,
}

/// What went wrong, as a stable identifier (see [`Code::as_str`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// A daemon or connector file that does not parse or validate.
    Config,
    /// PostgreSQL cannot be reached, or the connection broke.
    PostgresConnect,
    /// PostgreSQL refused the login (password, role, `pg_hba.conf`).
    PostgresAuth,
    /// TLS to PostgreSQL failed (certificate, name, sslmode).
    PostgresTls,
    /// PostgreSQL answered an SQL or replication command with an error (it has a SQLSTATE).
    PostgresSql,
    /// The replication protocol or pgoutput said something pgcdc cannot read.
    PostgresProtocol,
    /// A precondition of the database (wal_level, privileges, replica identity, publication).
    Preflight,
    /// The replication slot: missing, ahead of the checkpoint, of another plugin.
    Slot,
    /// Taking over from Debezium: its position cannot be continued safely.
    Takeover,
    /// Initial or incremental snapshot.
    Snapshot,
    /// A value a policy refuses (`unrepresentable: fail`, `toast: fail`).
    Value,
    /// librdkafka refused a configuration property.
    KafkaConfig,
    /// The brokers do not answer or a request failed in a way worth retrying.
    KafkaUnavailable,
    /// Kafka refused an operation (ACLs, SASL, policy).
    KafkaAuthorization,
    /// Another producer with the same transactional id took over.
    KafkaFenced,
    /// A record larger than the topic accepts.
    KafkaRecordTooLarge,
    /// The broker aborted a Kafka transaction open longer than its timeout.
    KafkaTransactionTimeout,
    /// The producer delivered nothing for a long while although the brokers answer and every
    /// partition has a leader (a librdkafka stall after a broker outage).
    KafkaStalled,
    /// The Kafka sink task ended; its own error says why.
    SinkStopped,
    /// Any other Kafka error.
    Kafka,
    /// The offsets topic: unreadable or holding what pgcdc cannot read.
    Checkpoint,
    /// The schema registry does not answer.
    RegistryUnavailable,
    /// The schema registry refused the credentials.
    RegistryAuth,
    /// The schema registry refused a schema (compatibility, invalid).
    RegistryRefused,
    /// Any other registry error.
    Registry,
    /// The HTTP endpoint (`http.listen`).
    Http,
    /// A command-line argument that names nothing (`pgcdc snapshot` of an unknown connector).
    Usage,
    /// A pgcdc task stopped unexpectedly.
    Internal,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Config => "config",
            Code::PostgresConnect => "postgres.connect",
            Code::PostgresAuth => "postgres.auth",
            Code::PostgresTls => "postgres.tls",
            Code::PostgresSql => "postgres.sql",
            Code::PostgresProtocol => "postgres.protocol",
            Code::Preflight => "postgres.preflight",
            Code::Slot => "postgres.slot",
            Code::Takeover => "takeover",
            Code::Snapshot => "snapshot",
            Code::Value => "value",
            Code::KafkaConfig => "kafka.config",
            Code::KafkaUnavailable => "kafka.unavailable",
            Code::KafkaAuthorization => "kafka.authorization",
            Code::KafkaFenced => "kafka.fenced",
            Code::KafkaRecordTooLarge => "kafka.record_too_large",
            Code::KafkaTransactionTimeout => "kafka.transaction_timeout",
            Code::KafkaStalled => "kafka.stalled",
            Code::SinkStopped => "internal.sink_stopped",
            Code::Kafka => "kafka",
            Code::Checkpoint => "checkpoint",
            Code::RegistryUnavailable => "registry.unavailable",
            Code::RegistryAuth => "registry.auth",
            Code::RegistryRefused => "registry.refused",
            Code::Registry => "registry",
            Code::Http => "http",
            Code::Usage => "usage",
            Code::Internal => "internal",
        }
    }
}

impl Code {
    /// What an operator does first about an error of this code, when the site that raised
    /// it says nothing more precise.
    pub fn next_step(self) -> &'static str {
        match self {
            Code::Config => "correct the file and field the message names, then start pgcdc again",
            Code::PostgresConnect => "check that PostgreSQL runs and that postgres.host and postgres.port reach it; pgcdc retries meanwhile",
            Code::PostgresAuth => "check postgres.user and postgres.password, and the server's pg_hba.conf entry for this host",
            Code::PostgresTls => "check postgres.sslmode and postgres.sslrootcert against the server's certificate and ssl setting",
            Code::PostgresSql => "read PostgreSQL's message and SQLSTATE; grant what it asks for or fix the object it names",
            Code::PostgresProtocol => "report it with the message and the PostgreSQL version; pgcdc retries from the last checkpoint",
            Code::Preflight => "change the database setting or grant the message names (validate lists every check)",
            Code::Slot => "inspect pg_replication_slots for the slot the message names; see snapshot.mode for what pgcdc may do about it",
            Code::Takeover => "do what the message says (stop Debezium first, let its snapshot finish, or start pgcdc on a new slot); nothing was written",
            Code::Snapshot => "read the message; the snapshot resumes from its last finished chunk on restart",
            Code::Value => "set the policy the message names (unrepresentable, toast) or change the column; the offending row is named",
            Code::KafkaConfig => "correct the librdkafka option the message names in config/pgcdc.yaml",
            Code::KafkaUnavailable => "check that the brokers in kafka.bootstrap_servers run and are reachable; pgcdc retries meanwhile",
            Code::KafkaAuthorization => "grant the ACL the message names to pgcdc's principal (README lists the ACLs it needs)",
            Code::KafkaFenced => "another instance of this connector took over; this one stands by (stop one if two were not meant to run)",
            Code::KafkaRecordTooLarge => "raise the topic's max.message.bytes (and the producer's message.max.bytes) above the size the message names",
            Code::SinkStopped => "read the error of the Kafka sink logged with it; pgcdc retries from the last checkpoint",
            Code::KafkaTransactionTimeout => "raise kafka.transaction.timeout (and the brokers' transaction.max.timeout.ms) above the time the message names; pgcdc retries meanwhile",
            Code::KafkaStalled => "none: pgcdc restarts the connector from the last checkpoint with a new producer; if it repeats, report it with the log of a run with kafka.librdkafka.debug set to eos,topic,broker",
            Code::Kafka => "read the broker's message; pgcdc retries from the last checkpoint when it can",
            Code::Checkpoint => "check the offsets topic the message names (kafka.offsets_topic): readable, compacted, written only by pgcdc",
            Code::RegistryUnavailable => "check that schema_registry.url answers; pgcdc retries meanwhile",
            Code::RegistryAuth => "check schema_registry.username and schema_registry.password",
            Code::RegistryRefused => "read the registry's reason; change the subject's compatibility or the table so the new schema is accepted",
            Code::Registry => "read the registry's message; pgcdc retries from the last checkpoint when it can",
            Code::Http => "free or change http.listen in config/pgcdc.yaml",
            Code::Usage => "run pgcdc --help and name a connector that exists in connectors/",
            Code::Internal => "report it with the log; pgcdc restarts the connector from the last checkpoint",
        }
    }

    /// Every code, for tests and documentation.
    pub const ALL: &'static [Code] = &[
        Code::Config,
        Code::PostgresConnect,
        Code::PostgresAuth,
        Code::PostgresTls,
        Code::PostgresSql,
        Code::PostgresProtocol,
        Code::Preflight,
        Code::Slot,
        Code::Takeover,
        Code::Snapshot,
        Code::Value,
        Code::KafkaConfig,
        Code::KafkaUnavailable,
        Code::KafkaAuthorization,
        Code::KafkaFenced,
        Code::KafkaRecordTooLarge,
        Code::KafkaTransactionTimeout,
        Code::KafkaStalled,
        Code::SinkStopped,
        Code::Kafka,
        Code::Checkpoint,
        Code::RegistryUnavailable,
        Code::RegistryAuth,
        Code::RegistryRefused,
        Code::Registry,
        Code::Http,
        Code::Usage,
        Code::Internal,
    ];
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

pub struct Error {
    kind: Kind,
    code: Code,
    message: String,
    next_step: Option<String>,
    sqlstate: Option<String>,
    source: Option<Source>,
}

impl Error {
    pub fn new(kind: Kind, code: Code, msg: impl Into<String>) -> Self {
        Error {
            kind,
            code,
            message: msg.into(),
            next_step: None,
            sqlstate: None,
            source: None,
        }
    }

    /// The operator must act; the message names the object and the fix.
    pub fn permanent(code: Code, msg: impl Into<String>) -> Self {
        Error::new(Kind::Permanent, code, msg)
    }

    /// Retrying the same operation later may succeed.
    pub fn transient(code: Code, msg: impl Into<String>) -> Self {
        Error::new(Kind::Transient, code, msg)
    }

    /// Another instance of the same connector took over.
    pub fn fenced(msg: impl Into<String>) -> Self {
        Error::new(Kind::Fenced, Code::KafkaFenced, msg)
    }

    /// The error this one came from.
    pub fn with_source(mut self, source: impl Into<Source>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// What the operator does next, when this site knows better than its code.
    pub fn with_next_step(mut self, step: impl Into<String>) -> Self {
        self.next_step = Some(step.into());
        self
    }

    /// What the operator does next: this error's own step, else its code's.
    pub fn next_step(&self) -> &str {
        self.next_step.as_deref().unwrap_or(self.code.next_step())
    }

    pub fn with_sqlstate(mut self, code: &str) -> Self {
        self.sqlstate = Some(code.to_owned());
        self
    }

    /// The same error with `suffix` after its message (say, the ACL a refusal lacked).
    pub fn suffixed(mut self, suffix: impl fmt::Display) -> Self {
        self.message = format!("{}; {suffix}", self.message);
        self
    }

    /// The same error with `prefix` in front of its message (say, the connector's name).
    pub fn context(mut self, prefix: impl fmt::Display) -> Self {
        self.message = format!("{prefix}: {}", self.message);
        self
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn code(&self) -> Code {
        self.code
    }

    /// PostgreSQL's SQLSTATE, when PostgreSQL raised the error.
    pub fn sqlstate(&self) -> Option<&str> {
        self.sqlstate.as_deref()
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn is_transient(&self) -> bool {
        self.kind == Kind::Transient
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.kind)
            .field("code", &self.code.as_str())
            .field("message", &self.message)
            .field("next_step", &self.next_step());
        if let Some(s) = &self.sqlstate {
            d.field("sqlstate", s);
        }
        if let Some(s) = &self.source {
            d.field("source", &s.to_string());
        }
        d.finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Self {
        Error::permanent(Code::Config, e.to_string()).with_source(e)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Backoff of an operation retried in place: `attempts` tries in all, waiting `first`, then
/// twice as long each time.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    pub attempts: u32,
    pub first: Duration,
}

/// What registry and Kafka admin calls get before their error restarts the connector: a
/// few seconds, enough for a registry restart or a leader election.
pub const IN_PLACE: Retry = Retry {
    attempts: 4,
    first: Duration::from_millis(250),
};

/// Runs `op` until it succeeds, fails with an error that is not transient, or has used
/// its attempts; each transient failure but the last is logged and waited out.
pub async fn retry<T, F, Fut>(policy: Retry, what: &str, mut op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut wait = policy.first;
    let mut attempt = 1;
    loop {
        match op().await {
            Err(e) if e.is_transient() && attempt < policy.attempts => {
                tracing::debug!(code = %e.code(), error = %e, attempt, retry_in = ?wait, "{what}: retrying in place");
                tokio::time::sleep(wait).await;
                wait *= 2;
                attempt += 1;
            }
            r => return r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn retry_repeats_transient_errors_and_stops_at_a_permanent_one() {
        let fast = Retry {
            attempts: 3,
            first: Duration::from_millis(1),
        };
        let mut calls = 0;
        let r: Result<()> = retry(fast, "test", || {
            calls += 1;
            async { Err(Error::transient(Code::RegistryUnavailable, "down")) }
        })
        .await;
        assert_eq!(calls, 3);
        assert_eq!(r.unwrap_err().code(), Code::RegistryUnavailable);

        let mut calls = 0;
        let r: Result<()> = retry(fast, "test", || {
            calls += 1;
            async { Err(Error::permanent(Code::RegistryRefused, "incompatible")) }
        })
        .await;
        assert_eq!(calls, 1);
        assert_eq!(r.unwrap_err().kind(), Kind::Permanent);

        let mut calls = 0;
        let r = retry(fast, "test", || {
            calls += 1;
            let n = calls;
            async move {
                if n < 2 {
                    Err(Error::transient(Code::KafkaUnavailable, "leader election"))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(r.unwrap(), 2);
    }

    #[test]
    fn every_code_has_a_distinct_name_and_a_next_step() {
        let mut names: Vec<&str> = Code::ALL.iter().map(|c| c.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Code::ALL.len(), "two codes share a name");
        for c in Code::ALL {
            assert!(c.next_step().len() > 20, "{c}: no next step");
        }
        let e = Error::permanent(Code::PostgresAuth, "refused");
        assert_eq!(e.next_step(), Code::PostgresAuth.next_step());
        let e = e.with_next_step("set postgres.password");
        assert_eq!(e.next_step(), "set postgres.password");
    }

    #[test]
    fn the_source_chain_is_kept() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = Error::transient(
            Code::PostgresConnect,
            "PostgreSQL 127.0.0.1:1: cannot connect",
        )
        .with_source(io);
        let src = std::error::Error::source(&e).unwrap();
        assert_eq!(src.to_string(), "refused");
        assert_eq!(e.to_string(), "PostgreSQL 127.0.0.1:1: cannot connect");
    }
}
