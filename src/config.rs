//! Configuration: daemon settings (`config/pgcdc.yaml`) and one file per connector
//! (`connectors/*.yaml`).
//!
//! Both are YAML with unknown keys refused, `${VAR}` / `${VAR:-default}` substituted from the
//! environment before parsing (comment lines are left alone), and a `validate()` pass whose
//! errors name the file, the field path and what is allowed.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// A configuration problem: always permanent, always names the file and the field.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {field}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub field: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(file: &Path, field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            file: file.display().to_string(),
            field: field.into(),
            message: message.into(),
        }
    }
}

// ------------------------------------------------------------------------------------------
// Daemon settings

pub const DEFAULT_COMPRESSION: &str = "lz4";
pub const DEFAULT_LINGER: Duration = Duration::from_millis(5);
pub const DEFAULT_BATCH_BYTES: u64 = 1 << 20;
pub const DEFAULT_PARTITIONS: i32 = 1;
pub const DEFAULT_REPLICATION_FACTOR: i32 = 1;
pub const DEFAULT_TXN_MAX_EVENTS: usize = 20_000;
pub const DEFAULT_TXN_MAX_BYTES: u64 = 32 << 20;
pub const DEFAULT_TXN_MAX_INTERVAL: Duration = Duration::from_millis(50);
pub const DEFAULT_OFFSETS_TOPIC: &str = "pgcdc.offsets";
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:8686";
pub const DEFAULT_LOG_LEVEL: &str = "info";

/// librdkafka options that pgcdc sets itself: the raw options map may not override them,
/// because the delivery guarantee depends on them.
const RESERVED_LIBRDKAFKA_KEYS: &[&str] = &[
    "bootstrap.servers",
    "acks",
    "request.required.acks",
    "enable.idempotence",
    "transactional.id",
    "partitioner",
    "compression.type",
    "compression.codec",
    "linger.ms",
    "queue.buffering.max.ms",
    "batch.size",
    "isolation.level",
    "enable.auto.commit",
];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    pub kafka: KafkaConfig,
    pub schema_registry: RegistryConfig,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub logging: LoggingConfig,
    /// After SIGTERM/SIGINT, how long a connector may take to commit what is whole and stop;
    /// one still starting up (e.g. waiting for Kafka) is abandoned then. Nothing that was
    /// not delivered is acknowledged either way.
    #[serde(default = "default_shutdown_timeout", with = "humantime_serde")]
    pub shutdown_timeout: Duration,
}

pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

fn default_shutdown_timeout() -> Duration {
    DEFAULT_SHUTDOWN_TIMEOUT
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    pub bootstrap_servers: String,
    #[serde(default = "default_compression")]
    pub compression: String,
    #[serde(default = "default_linger", with = "humantime_serde")]
    pub linger: Duration,
    #[serde(default = "default_batch_bytes")]
    pub batch_bytes: u64,
    #[serde(default)]
    pub topics: TopicDefaults,
    #[serde(default)]
    pub transaction: TransactionConfig,
    #[serde(default = "default_offsets_topic")]
    pub offsets_topic: String,
    /// Kafka transactions around events and checkpoint (the default). `false` is
    /// at-least-once: a restart may repeat events; kept to measure what transactions cost.
    #[serde(default = "default_true")]
    pub exactly_once: bool,
    /// Extra librdkafka options for the producer and consumers (security settings, say).
    #[serde(default)]
    pub librdkafka: BTreeMap<String, String>,
}

/// Whether a librdkafka property holds a secret (`sasl.password`, `ssl.key.password`,
/// `ssl.key.pem`, `sasl.oauthbearer.client.secret`, `sasl.jaas.config`, …).
pub fn is_secret_property(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "key.pem",
        "jaas",
        "token",
        "credential",
        "keystore",
        "private",
    ]
    .iter()
    .any(|s| k.contains(s))
}

impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let librdkafka: BTreeMap<&str, &str> = self
            .librdkafka
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str(),
                    if is_secret_property(k) {
                        "***"
                    } else {
                        v.as_str()
                    },
                )
            })
            .collect();
        f.debug_struct("KafkaConfig")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("compression", &self.compression)
            .field("linger", &self.linger)
            .field("batch_bytes", &self.batch_bytes)
            .field("topics", &self.topics)
            .field("transaction", &self.transaction)
            .field("offsets_topic", &self.offsets_topic)
            .field("exactly_once", &self.exactly_once)
            .field("librdkafka", &librdkafka)
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicDefaults {
    #[serde(default = "default_partitions")]
    pub partitions: i32,
    #[serde(default = "default_replication_factor")]
    pub replication_factor: i32,
    #[serde(default)]
    pub configs: BTreeMap<String, String>,
}

impl Default for TopicDefaults {
    fn default() -> Self {
        TopicDefaults {
            partitions: DEFAULT_PARTITIONS,
            replication_factor: DEFAULT_REPLICATION_FACTOR,
            configs: BTreeMap::new(),
        }
    }
}

/// When an open Kafka transaction is committed: whichever limit is reached first, and only
/// ever at a PostgreSQL transaction boundary.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransactionConfig {
    #[serde(default = "default_txn_max_events")]
    pub max_events: usize,
    #[serde(default = "default_txn_max_bytes")]
    pub max_bytes: u64,
    #[serde(default = "default_txn_max_interval", with = "humantime_serde")]
    pub max_interval: Duration,
}

impl Default for TransactionConfig {
    fn default() -> Self {
        TransactionConfig {
            max_events: DEFAULT_TXN_MAX_EVENTS,
            max_bytes: DEFAULT_TXN_MAX_BYTES,
            max_interval: DEFAULT_TXN_MAX_INTERVAL,
        }
    }
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    pub url: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
}

impl fmt::Debug for RegistryConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryConfig")
            .field("url", &self.url)
            .field("username", &self.username)
            .field("password", &self.password)
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    #[serde(default = "default_http_listen")]
    pub listen: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: DEFAULT_HTTP_LISTEN.to_owned(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggingConfig {
    #[serde(default = "default_log_level")]
    pub level: String,
    #[serde(default)]
    pub format: LogFormat,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            level: DEFAULT_LOG_LEVEL.to_owned(),
            format: LogFormat::Text,
        }
    }
}

fn default_compression() -> String {
    DEFAULT_COMPRESSION.to_owned()
}
fn default_linger() -> Duration {
    DEFAULT_LINGER
}
fn default_batch_bytes() -> u64 {
    DEFAULT_BATCH_BYTES
}
fn default_partitions() -> i32 {
    DEFAULT_PARTITIONS
}
fn default_replication_factor() -> i32 {
    DEFAULT_REPLICATION_FACTOR
}
fn default_txn_max_events() -> usize {
    DEFAULT_TXN_MAX_EVENTS
}
fn default_txn_max_bytes() -> u64 {
    DEFAULT_TXN_MAX_BYTES
}
fn default_txn_max_interval() -> Duration {
    DEFAULT_TXN_MAX_INTERVAL
}
fn default_offsets_topic() -> String {
    DEFAULT_OFFSETS_TOPIC.to_owned()
}
fn default_http_listen() -> String {
    DEFAULT_HTTP_LISTEN.to_owned()
}
fn default_log_level() -> String {
    DEFAULT_LOG_LEVEL.to_owned()
}

impl DaemonConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let cfg: DaemonConfig = parse_file(path)?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let err = |field: &str, msg: String| Err(ConfigError::new(path, field, msg));
        if self.kafka.bootstrap_servers.trim().is_empty() {
            return err(
                "kafka.bootstrap_servers",
                "must name at least one host:port".into(),
            );
        }
        const CODECS: &[&str] = &["none", "gzip", "snappy", "lz4", "zstd"];
        if !CODECS.contains(&self.kafka.compression.as_str()) {
            return err(
                "kafka.compression",
                format!(
                    "{:?} is not one of {}",
                    self.kafka.compression,
                    CODECS.join(", ")
                ),
            );
        }
        // librdkafka's ranges, checked here so `validate` and the start say it in one line.
        if self.kafka.linger > Duration::from_millis(900_000) {
            return err(
                "kafka.linger",
                format!(
                    "{} is over librdkafka's limit of 900000ms (15m) for linger.ms; a few ms is usual",
                    humantime::format_duration(self.kafka.linger)
                ),
            );
        }
        if !(1..=i32::MAX as u64).contains(&self.kafka.batch_bytes) {
            return err(
                "kafka.batch_bytes",
                "must be between 1 and 2147483647 (librdkafka's batch.size)".into(),
            );
        }
        if self.kafka.topics.partitions < 1 {
            return err("kafka.topics.partitions", "must be at least 1".into());
        }
        if self.kafka.topics.replication_factor < 1 {
            return err(
                "kafka.topics.replication_factor",
                "must be at least 1".into(),
            );
        }
        if self.kafka.transaction.max_events == 0 {
            return err("kafka.transaction.max_events", "must be at least 1".into());
        }
        if self.kafka.transaction.max_bytes == 0 {
            return err("kafka.transaction.max_bytes", "must be at least 1".into());
        }
        validate_topic_name(&self.kafka.offsets_topic)
            .or_else(|m| err("kafka.offsets_topic", m))?;
        for key in self.kafka.librdkafka.keys() {
            if RESERVED_LIBRDKAFKA_KEYS.contains(&key.as_str()) {
                return err(
                    &format!("kafka.librdkafka.{key}"),
                    "is set by pgcdc itself (see the kafka section's own fields); remove it".into(),
                );
            }
        }
        if !(self.schema_registry.url.starts_with("http://")
            || self.schema_registry.url.starts_with("https://"))
        {
            return err(
                "schema_registry.url",
                "must start with http:// or https://".into(),
            );
        }
        if self.http.listen.parse::<std::net::SocketAddr>().is_err() {
            return err(
                "http.listen",
                format!(
                    "{:?} is not an address like 127.0.0.1:8686",
                    self.http.listen
                ),
            );
        }
        if tracing_subscriber::EnvFilter::try_new(&self.logging.level).is_err() {
            return err(
                "logging.level",
                format!(
                    "{:?} is not a level or filter like \"info\"",
                    self.logging.level
                ),
            );
        }
        Ok(())
    }
}

// ------------------------------------------------------------------------------------------
// Connectors

pub const DEFAULT_PG_PORT: u16 = 5432;

/// A password or other secret: never printed by `Debug`.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    Disable,
    #[default]
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    /// The YAML spelling, for messages.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    pub host: String,
    #[serde(default = "default_pg_port")]
    pub port: u16,
    pub user: String,
    #[serde(default)]
    pub password: Option<Secret>,
    pub dbname: String,
    #[serde(default)]
    pub sslmode: SslMode,
    /// CA bundle for verify-ca / verify-full.
    #[serde(default)]
    pub sslrootcert: Option<PathBuf>,
}

fn default_pg_port() -> u16 {
    DEFAULT_PG_PORT
}

/// How a `numeric` column without a declared precision and scale is carried.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NumericMode {
    /// Debezium's `io.debezium.data.VariableScaleDecimal` struct: exact.
    #[default]
    Precise,
    /// An Avro double: lossy beyond 15-17 significant digits, but NaN and ±Infinity pass.
    Double,
    /// The decimal string PostgreSQL prints: exact, NaN and ±Infinity included.
    String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableFilter {
    /// `schema.table` names; empty means every table of the database.
    #[serde(default)]
    pub include: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectorConfig {
    pub name: String,
    pub postgres: PostgresConfig,
    #[serde(default)]
    pub slot: Option<String>,
    #[serde(default)]
    pub publication: Option<String>,
    #[serde(default)]
    pub tables: TableFilter,
    pub topic_prefix: String,
    /// Key columns for tables without a primary key, by `schema.table`.
    #[serde(default)]
    pub key_columns: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub numeric_mode: NumericMode,
    /// Send a tombstone (null value) after each delete, for log compaction.
    #[serde(default = "default_true")]
    pub tombstones: bool,
    #[serde(default)]
    pub snapshot: SnapshotConfig,
    /// `schema.table` of the signal table (Debezium's `signal.data.collection`): a row
    /// inserted there starts an ad-hoc incremental snapshot. Created when missing.
    #[serde(default)]
    pub signal_table: Option<String>,
    /// What an update that leaves a TOASTed value unchanged carries for it (PostgreSQL does
    /// not send such values under REPLICA IDENTITY DEFAULT).
    #[serde(default)]
    pub toast: ToastMode,
    /// Debezium's `unavailable.value.placeholder`: the value of a column PostgreSQL did not
    /// send and pgcdc could not complete exactly.
    #[serde(default = "default_placeholder")]
    pub unavailable_value_placeholder: String,
    /// `toast: fetch` holds the rest of a transaction after its first incomplete update until
    /// its commit, up to this many bytes; past it, the held updates get the placeholder.
    #[serde(default = "default_toast_hold_bytes")]
    pub toast_hold_bytes: u64,
    /// What a value PostgreSQL accepted but its Debezium-compatible Avro type cannot hold
    /// becomes (NaN in a `numeric(p,s)`, an array whose shape differs from its declaration).
    #[serde(default)]
    pub unrepresentable: Unrepresentable,
    /// Debezium's `skipped.operations`: change events of these ops are not sent (counted in
    /// `pgcdc_skipped_operations_total`). Truncates by default, as Debezium; `[]` sends all.
    #[serde(default = "default_skipped_operations")]
    pub skipped_operations: Vec<SkippedOp>,
}

/// An op that `skipped_operations` can name (snapshot reads cannot be skipped).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub enum SkippedOp {
    #[serde(rename = "c")]
    Create,
    #[serde(rename = "u")]
    Update,
    #[serde(rename = "d")]
    Delete,
    #[serde(rename = "t")]
    Truncate,
}

fn default_skipped_operations() -> Vec<SkippedOp> {
    vec![SkippedOp::Truncate]
}

/// `toast`: how pgcdc completes unchanged TOASTed values.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ToastMode {
    /// Taken from earlier in the transaction, or read back from the table when pgcdc can
    /// prove the row it reads is the version the transaction wrote; else the placeholder.
    #[default]
    Fetch,
    /// Always Debezium's placeholder.
    Placeholder,
    /// Stop the connector (the operator sets REPLICA IDENTITY FULL for future WAL).
    Fail,
}

/// `unrepresentable`: the policy for values the Avro type cannot hold. YAML reads a bare
/// `null` as no value, so both `null` and `"null"` mean [`Unrepresentable::Null`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Unrepresentable {
    /// Null, with the column named in the event's `pgcdc.lossy` header, counted, logged once.
    #[default]
    Null,
    /// Stop the connector.
    Fail,
}

impl<'de> Deserialize<'de> for Unrepresentable {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Option::<String>::deserialize(d)?.as_deref() {
            None | Some("null") => Ok(Unrepresentable::Null),
            Some("fail") => Ok(Unrepresentable::Fail),
            Some(other) => Err(serde::de::Error::custom(format!(
                "unknown policy {other:?}, expected `null` or `fail`"
            ))),
        }
    }
}

pub const DEFAULT_UNAVAILABLE_PLACEHOLDER: &str = "__debezium_unavailable_value";
pub const DEFAULT_TOAST_HOLD_BYTES: u64 = 64 << 20;

fn default_placeholder() -> String {
    DEFAULT_UNAVAILABLE_PLACEHOLDER.to_owned()
}
fn default_toast_hold_bytes() -> u64 {
    DEFAULT_TOAST_HOLD_BYTES
}

/// When the connector reads the rows already in its tables.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotMode {
    /// On first start (no checkpoint), snapshot, then stream.
    #[default]
    Initial,
    /// Never snapshot: stream from the slot's creation.
    Never,
    /// Snapshot, then stop without streaming (no slot is kept).
    InitialOnly,
    /// Snapshot on first start, and again whenever the checkpoint cannot be resumed (slot
    /// missing, or behind/ahead of the checkpoint).
    WhenNeeded,
}

pub const DEFAULT_SNAPSHOT_WORKERS: usize = 2;
pub const DEFAULT_SNAPSHOT_CHUNK_ROWS: u64 = 10_000;
pub const DEFAULT_INCREMENTAL_CHUNK_ROWS: u64 = 2_048;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotConfig {
    #[serde(default)]
    pub mode: SnapshotMode,
    /// Connections reading the initial snapshot in parallel, across and within tables.
    #[serde(default = "default_snapshot_workers")]
    pub workers: usize,
    /// Rows per primary-key chunk of the initial snapshot.
    #[serde(default = "default_snapshot_chunk_rows")]
    pub chunk_rows: u64,
    /// Rows per chunk of incremental (watermark) snapshots; each is held in memory while
    /// its window is open.
    #[serde(default = "default_incremental_chunk_rows")]
    pub incremental_chunk_rows: u64,
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        SnapshotConfig {
            mode: SnapshotMode::default(),
            workers: DEFAULT_SNAPSHOT_WORKERS,
            chunk_rows: DEFAULT_SNAPSHOT_CHUNK_ROWS,
            incremental_chunk_rows: DEFAULT_INCREMENTAL_CHUNK_ROWS,
        }
    }
}

fn default_snapshot_workers() -> usize {
    DEFAULT_SNAPSHOT_WORKERS
}
fn default_snapshot_chunk_rows() -> u64 {
    DEFAULT_SNAPSHOT_CHUNK_ROWS
}
fn default_incremental_chunk_rows() -> u64 {
    DEFAULT_INCREMENTAL_CHUNK_ROWS
}

fn default_true() -> bool {
    true
}

impl ConnectorConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let mut cfg: ConnectorConfig = parse_file(path)?;
        cfg.normalize(path)?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    /// Table names may be written raw (`Sales & Co.Order Lines`) or as SQL quotes them
    /// (`"Sales & Co"."Order Lines"`, as pgcdc's hints print them): both become the raw form.
    pub fn normalize(&mut self, path: &Path) -> Result<(), ConfigError> {
        let norm = |field: String, v: &mut String| -> Result<(), ConfigError> {
            *v = unquote_table(v).map_err(|m| ConfigError::new(path, field, m))?;
            Ok(())
        };
        for (i, t) in self.tables.include.iter_mut().enumerate() {
            norm(format!("tables.include[{i}]"), t)?;
        }
        for (i, t) in self.tables.exclude.iter_mut().enumerate() {
            norm(format!("tables.exclude[{i}]"), t)?;
        }
        if let Some(t) = self.signal_table.as_mut() {
            norm("signal_table".into(), t)?;
        }
        let mut keys = BTreeMap::new();
        for (t, cols) in std::mem::take(&mut self.key_columns) {
            let mut n = t.clone();
            norm(format!("key_columns.{t}"), &mut n)?;
            keys.insert(n, cols);
        }
        self.key_columns = keys;
        Ok(())
    }

    /// The replication slot: configured, or `pgcdc_<name>`.
    pub fn slot_name(&self) -> String {
        self.slot
            .clone()
            .unwrap_or_else(|| format!("pgcdc_{}", self.name))
    }

    pub fn publication_name(&self) -> String {
        self.publication
            .clone()
            .unwrap_or_else(|| format!("pgcdc_{}", self.name))
    }

    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let err = |field: &str, msg: String| Err(ConfigError::new(path, field, msg));
        if !is_identifier(&self.name) {
            return err("name", format!("{:?} must be lowercase letters, digits and _ (it names the slot and the transactional id)", self.name));
        }
        let ident = |field: &str, v: &str| -> Result<(), ConfigError> {
            if is_identifier(v) && v.len() <= 63 {
                Ok(())
            } else {
                err(
                    field,
                    format!("{v:?} must be lowercase letters, digits and _, at most 63 characters"),
                )
            }
        };
        ident("slot", &self.slot_name())?;
        ident("publication", &self.publication_name())?;
        if self.postgres.host.is_empty() {
            return err("postgres.host", "must not be empty".into());
        }
        if self.postgres.port == 0 {
            return err("postgres.port", "must be a port number".into());
        }
        if matches!(
            self.postgres.sslmode,
            SslMode::VerifyCa | SslMode::VerifyFull
        ) && self.postgres.sslrootcert.is_none()
        {
            return err(
                "postgres.sslrootcert",
                "is required with sslmode verify-ca or verify-full".into(),
            );
        }
        validate_topic_name(&self.topic_prefix).or_else(|m| err("topic_prefix", m))?;
        for (i, t) in self.tables.include.iter().enumerate() {
            qualified(t).map_err(|m| ConfigError::new(path, format!("tables.include[{i}]"), m))?;
        }
        for (i, t) in self.tables.exclude.iter().enumerate() {
            qualified(t).map_err(|m| ConfigError::new(path, format!("tables.exclude[{i}]"), m))?;
        }
        for (t, cols) in &self.key_columns {
            qualified(t).map_err(|m| ConfigError::new(path, format!("key_columns.{t}"), m))?;
            if cols.is_empty() {
                return err(
                    &format!("key_columns.{t}"),
                    "must list at least one column".into(),
                );
            }
        }
        if !(1..=64).contains(&self.snapshot.workers) {
            return err("snapshot.workers", "must be between 1 and 64".into());
        }
        if !(1..=10_000_000).contains(&self.snapshot.chunk_rows) {
            return err(
                "snapshot.chunk_rows",
                "must be between 1 and 10000000".into(),
            );
        }
        if !(1..=1_000_000).contains(&self.snapshot.incremental_chunk_rows) {
            return err(
                "snapshot.incremental_chunk_rows",
                "must be between 1 and 1000000".into(),
            );
        }
        if let Some(t) = &self.signal_table {
            qualified(t).map_err(|m| ConfigError::new(path, "signal_table", m))?;
        }
        if self.unavailable_value_placeholder.is_empty() {
            return err(
                "unavailable_value_placeholder",
                "must not be empty (consumers tell a placeholder from a value by it)".into(),
            );
        }
        if !(1 << 20..=1 << 34).contains(&self.toast_hold_bytes) {
            return err(
                "toast_hold_bytes",
                "must be between 1048576 (1 MiB) and 17179869184 (16 GiB)".into(),
            );
        }
        Ok(())
    }

    /// Whether `schema.table` is captured by this connector.
    pub fn captures(&self, schema: &str, table: &str) -> bool {
        let name = format!("{schema}.{table}");
        if self.signal_table.as_deref() == Some(name.as_str()) {
            return false;
        }
        (self.tables.include.is_empty() || self.tables.include.contains(&name))
            && !self.tables.exclude.contains(&name)
    }
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !s.as_bytes()[0].is_ascii_digit()
}

/// `schema.table` with either part in SQL double quotes → the raw `schema.table`. Unquoted
/// parts are taken as written (no case folding: the raw form names tables exactly).
pub fn unquote_table(name: &str) -> Result<String, String> {
    if !name.contains('"') {
        return Ok(name.to_owned());
    }
    let mut parts = Vec::new();
    let mut chars = name.chars().peekable();
    loop {
        let mut part = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        part.push('"');
                    }
                    Some('"') => break,
                    Some(c) => part.push(c),
                    None => return Err(format!("{name:?} has an unterminated quoted name")),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == '.' || c == '"' {
                    break;
                }
                part.push(c);
                chars.next();
            }
        }
        if part.contains('.') {
            return Err(format!(
                "{name:?}: names containing a dot are not supported"
            ));
        }
        parts.push(part);
        match chars.next() {
            None => break,
            Some('.') => continue,
            Some(_) => {
                return Err(format!(
                "{name:?} must be schema.table, e.g. public.orders or \"Sales\".\"Order Lines\""
            ))
            }
        }
    }
    match parts.as_slice() {
        [s, t] if !s.is_empty() && !t.is_empty() => Ok(format!("{s}.{t}")),
        _ => Err(format!(
            "{name:?} must be schema.table, e.g. public.orders or \"Sales\".\"Order Lines\""
        )),
    }
}

/// Splits `schema.table`.
pub fn qualified(name: &str) -> Result<(&str, &str), String> {
    match name.split_once('.') {
        Some((s, t)) if !s.is_empty() && !t.is_empty() && !t.contains('.') => Ok((s, t)),
        _ => Err(format!("{name:?} must be schema.table, e.g. public.orders")),
    }
}

fn validate_topic_name(t: &str) -> Result<(), String> {
    if t.is_empty() || t.len() > 200 {
        return Err("must be 1 to 200 characters".into());
    }
    if !t
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err(format!(
            "{t:?} may only contain letters, digits, '.', '_' and '-' (Kafka topic rules)"
        ));
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------
// Loading

fn parse_file<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(path, "(file)", format!("cannot read: {e}")))?;
    parse_str(path, &text, &|k| std::env::var(k).ok())
}

pub(crate) fn parse_str<T: for<'de> Deserialize<'de>>(
    path: &Path,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<T, ConfigError> {
    let text = substitute_env(text, env)
        .map_err(|(line, m)| ConfigError::new(path, format!("line {line}"), m))?;
    let de = serde_yaml_ng::Deserializer::from_str(&text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        let field = if field == "." {
            "(top level)".to_owned()
        } else {
            field
        };
        let msg = e.inner().to_string();
        // serde_yaml_ng repeats the parent path in front of its message; the field says it.
        let msg = match msg.split_once(": ") {
            Some((prefix, rest)) if field.starts_with(prefix) => rest.to_owned(),
            _ => msg,
        };
        ConfigError::new(path, field, msg)
    })
}

/// Where a `${VAR}` stands on its line, which decides how its value is written into the
/// YAML text so that it stays data: a value is never YAML (a password `a #b` must not lose
/// ` #b` to a comment, nor `x: y` become a mapping).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Context {
    Plain,
    DoubleQuoted,
    SingleQuoted,
}

/// A value that reads back as the same text in a plain scalar, whatever the field's type.
fn plain_safe(v: &str) -> bool {
    !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._/+=-".contains(&b))
        && !v.starts_with('-')
        && !matches!(v, "null" | "Null" | "NULL")
}

/// Replaces `${VAR}` and `${VAR:-default}`; `$${` is a literal `${`. Comments are left
/// alone, so a commented-out example needs no variable. A value is written as data: escaped
/// inside a quoted string; as a whole plain value, as itself when that reads back the same
/// (`port: ${PGPORT}` stays a number) and double-quoted otherwise; inside a longer plain
/// value only when it needs no quoting (else the error says to quote the value).
pub(crate) fn substitute_env(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, (usize, String)> {
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let lineno = i + 1;
        let mut ctx = Context::Plain;
        // Outside quotes: whether the current scalar has no text yet (after `key: `, `- `).
        let mut scalar_empty = true;
        let mut prev: Option<char> = None;
        let mut it = line.char_indices().peekable();
        while let Some((j, c)) = it.next() {
            let rest = &line[j..];
            if rest.starts_with("$${") {
                out.push_str("${");
                it.next();
                it.next();
                scalar_empty = false;
                prev = Some('{');
                continue;
            }
            if rest.starts_with("${") {
                let end = rest
                    .find('}')
                    .ok_or_else(|| (lineno, "unterminated ${...}".to_owned()))?;
                let expr = &rest[2..end];
                let (name, default) = match expr.split_once(":-") {
                    Some((n, d)) => (n, Some(d)),
                    None => (expr, None),
                };
                let value = match (env(name), default) {
                    (Some(v), _) => v,
                    (None, Some(d)) => d.to_owned(),
                    (None, None) => {
                        return Err((lineno, format!("environment variable {name} is not set; export it or write ${{{name}:-default}}")))
                    }
                };
                let after = line[j + end + 1..].trim();
                let whole =
                    scalar_empty && (after.is_empty() || after.starts_with(['#', ',', ']', '}']));
                match ctx {
                    Context::DoubleQuoted => {
                        let q = serde_json::to_string(&value).unwrap_or_default();
                        out.push_str(&q[1..q.len() - 1]);
                    }
                    Context::SingleQuoted => out.push_str(&value.replace('\'', "''")),
                    Context::Plain if plain_safe(&value) => out.push_str(&value),
                    Context::Plain if whole => {
                        out.push_str(&serde_json::to_string(&value).unwrap_or_default())
                    }
                    Context::Plain => {
                        return Err((lineno, format!(
                            "the value of {name} needs quoting inside this value; write the whole value in double quotes (\"…${{{name}}}…\")"
                        )))
                    }
                }
                for _ in 0..end {
                    it.next();
                }
                scalar_empty = false;
                prev = Some('}');
                continue;
            }
            match ctx {
                Context::Plain => {
                    if c == '#' && prev.is_none_or(char::is_whitespace) {
                        out.push_str(rest);
                        break;
                    }
                    if (c == '"' || c == '\'') && scalar_empty {
                        ctx = if c == '"' {
                            Context::DoubleQuoted
                        } else {
                            Context::SingleQuoted
                        };
                        scalar_empty = false;
                    } else if c == ':' && it.peek().is_none_or(|(_, n)| n.is_whitespace()) {
                        scalar_empty = true;
                    } else if c == '-'
                        && scalar_empty
                        && it.peek().is_none_or(|(_, n)| n.is_whitespace())
                    {
                        // a sequence item: its scalar starts after the dash
                    } else if matches!(c, '[' | '{' | ',') {
                        scalar_empty = true;
                    } else if !c.is_whitespace() {
                        scalar_empty = false;
                    }
                }
                Context::DoubleQuoted => {
                    if c == '\\' {
                        out.push(c);
                        if let Some((_, n)) = it.next() {
                            out.push(n);
                        }
                        prev = None;
                        continue;
                    }
                    if c == '"' {
                        ctx = Context::Plain;
                    }
                }
                Context::SingleQuoted => {
                    if c == '\'' {
                        if it.peek().is_some_and(|(_, n)| *n == '\'') {
                            out.push(c);
                            it.next();
                        } else {
                            ctx = Context::Plain;
                        }
                    }
                }
            }
            out.push(c);
            prev = Some(c);
        }
    }
    Ok(out)
}

/// Every `*.yaml` / `*.yml` file of a connectors folder, sorted by name.
pub fn connector_files(dir: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let rd = std::fs::read_dir(dir).map_err(|e| {
        ConfigError::new(
            dir,
            "(folder)",
            format!("cannot read connectors folder: {e}"),
        )
    })?;
    let mut files: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(k: &str) -> Option<String> {
        match k {
            "PGHOST" => Some("db.internal".into()),
            "PGPORT" => Some("6543".into()),
            _ => None,
        }
    }

    const CONNECTOR: &str = "
name: orders
postgres:
  host: ${PGHOST}
  port: ${PGPORT}
  user: cdc
  password: ${PGPASSWORD:-hunter2}
  dbname: shop
topic_prefix: shop
tables:
  include: [public.orders]
key_columns:
  public.events: [id]
";

    fn connector(text: &str) -> Result<ConnectorConfig, ConfigError> {
        let p = Path::new("connectors/orders.yaml");
        let c: ConnectorConfig = parse_str(p, text, &env)?;
        c.validate(p)?;
        Ok(c)
    }

    #[test]
    fn parses_connector_with_env_and_defaults() {
        let c = connector(CONNECTOR).unwrap();
        assert_eq!(c.postgres.host, "db.internal");
        assert_eq!(c.postgres.port, 6543);
        assert_eq!(c.postgres.password, Some(Secret("hunter2".into())));
        assert_eq!(c.slot_name(), "pgcdc_orders");
        assert_eq!(c.numeric_mode, NumericMode::Precise);
        assert!(c.tombstones);
        assert!(c.captures("public", "orders"));
        assert!(!c.captures("public", "other"));
    }

    #[test]
    fn password_is_not_printed() {
        let c = connector(CONNECTOR).unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
    }

    #[test]
    fn unknown_key_names_file_and_path() {
        let text = CONNECTOR.replace("  dbname: shop", "  dbname: shop\n  hots: x");
        let e = connector(&text).unwrap_err().to_string();
        assert!(
            e.starts_with("connectors/orders.yaml: postgres.hots: unknown field `hots`"),
            "{e}"
        );
        assert!(e.contains("line 9"), "{e}");
    }

    #[test]
    fn bad_enum_value_lists_allowed() {
        let text = format!("{CONNECTOR}numeric_mode: exact\n");
        let e = connector(&text).unwrap_err().to_string();
        assert!(e.contains("numeric_mode") && e.contains("precise"), "{e}");
    }

    #[test]
    fn missing_env_var_is_reported_with_line() {
        let text = CONNECTOR.replace("${PGHOST}", "${NOPE_HOST}");
        let e = connector(&text).unwrap_err().to_string();
        assert!(e.contains("line 4") && e.contains("NOPE_HOST"), "{e}");
    }

    #[test]
    fn env_in_comments_and_escapes() {
        let out = substitute_env("# ${UNSET}\na: $${LITERAL}\nb: 1 # ${UNSET}\n", &env).unwrap();
        assert_eq!(out, "# ${UNSET}\na: ${LITERAL}\nb: 1 # ${UNSET}\n");
        let env = |k: &str| (k == "V").then(|| "a \"b\" 'c' #d".to_owned());
        assert_eq!(
            substitute_env("x: \"<${V}>\"\ny: '<${V}>'\nz: ${V} # c\n- ${V}\nw: [${V}]\n", &env).unwrap(),
            "x: \"<a \\\"b\\\" 'c' #d>\"\ny: '<a \"b\" ''c'' #d>'\nz: \"a \\\"b\\\" 'c' #d\" # c\n- \"a \\\"b\\\" 'c' #d\"\nw: [\"a \\\"b\\\" 'c' #d\"]\n"
        );
        let e = substitute_env("u: http://${V}/x\n", &env).unwrap_err();
        assert!(e.1.contains("double quotes"), "{e:?}");
        // A comment is not a value: its variables need not be set.
        let text = format!("{CONNECTOR}# password: ${{UNSET_IN_COMMENT}}\n");
        connector(&text).unwrap();
    }

    #[test]
    fn env_values_are_data_not_yaml() {
        let p = Path::new("c.yaml");
        for pw in [
            "a #b",
            "x: y",
            "it's \"q\"",
            "*star",
            "&amp",
            "- dash",
            "1234",
            "007",
            "{}",
            "true",
            "~",
            "null",
            "",
        ] {
            let env = |k: &str| match k {
                "PW" => Some(pw.to_owned()),
                "PGPORT" => Some("6543".to_owned()),
                _ => None,
            };
            let text = "name: c\npostgres:\n  host: h\n  port: ${PGPORT}\n  user: u\n  dbname: d\n  password: ${PW}\ntopic_prefix: p\n";
            let c: ConnectorConfig =
                parse_str(p, text, &env).unwrap_or_else(|e| panic!("{pw}: {e}"));
            assert_eq!(c.postgres.password, Some(Secret(pw.into())), "{pw}");
            assert_eq!(c.postgres.port, 6543);
        }
    }

    #[test]
    fn value_policies_parse_with_defaults() {
        let p = Path::new("c.yaml");
        let c: ConnectorConfig = parse_str(p, CONNECTOR, &env).unwrap();
        assert_eq!(c.toast, ToastMode::Fetch);
        assert_eq!(c.unrepresentable, Unrepresentable::Null);
        assert_eq!(
            c.unavailable_value_placeholder,
            DEFAULT_UNAVAILABLE_PLACEHOLDER
        );
        for (yaml, want) in [
            ("null", Unrepresentable::Null),
            ("\"null\"", Unrepresentable::Null),
            ("fail", Unrepresentable::Fail),
        ] {
            let text = format!("{CONNECTOR}unrepresentable: {yaml}\ntoast: placeholder\n");
            let c: ConnectorConfig = parse_str(p, &text, &env).unwrap();
            assert_eq!(c.unrepresentable, want, "{yaml}");
            assert_eq!(c.toast, ToastMode::Placeholder);
        }
        let text = format!("{CONNECTOR}unrepresentable: drop\n");
        let e = parse_str::<ConnectorConfig>(p, &text, &env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unrepresentable") && e.contains("fail"), "{e}");
        let text = format!("{CONNECTOR}toast: full\n");
        let e = parse_str::<ConnectorConfig>(p, &text, &env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("toast") && e.contains("fetch"), "{e}");
        let text = format!("{CONNECTOR}unavailable_value_placeholder: \"\"\n");
        let c: ConnectorConfig = parse_str(p, &text, &env).unwrap();
        let e = c.validate(p).unwrap_err().to_string();
        assert!(e.contains("unavailable_value_placeholder"), "{e}");
    }

    #[test]
    fn librdkafka_ranges_are_config_errors() {
        let p = Path::new("pgcdc.yaml");
        let base = "kafka:\n  bootstrap_servers: k:9092\n  linger: 10h\nschema_registry:\n  url: http://r\n";
        let d: DaemonConfig = parse_str(p, base, &env).unwrap();
        let e = d.validate(p).unwrap_err().to_string();
        assert!(e.contains("kafka.linger") && e.contains("900000"), "{e}");
    }

    #[test]
    fn secrets_in_librdkafka_properties_are_redacted_in_debug() {
        let p = Path::new("pgcdc.yaml");
        let text = "kafka:\n  bootstrap_servers: k:9092\n  librdkafka:\n    sasl.password: s3cret-one\n    \
                    ssl.key.password: s3cret-two\n    sasl.username: alice\n\
                    schema_registry:\n  url: http://r\n  username: u\n  password: s3cret-three\n";
        let d: DaemonConfig = parse_str(p, text, &env).unwrap();
        let dbg = format!("{d:?}");
        assert!(!dbg.contains("s3cret"), "{dbg}");
        assert!(
            dbg.contains("alice") && dbg.contains("sasl.password"),
            "{dbg}"
        );
    }

    #[test]
    fn table_names_in_raw_or_quoted_form() {
        assert_eq!(unquote_table("public.orders").unwrap(), "public.orders");
        assert_eq!(
            unquote_table(r#""Sales & Co"."Order Lines""#).unwrap(),
            "Sales & Co.Order Lines"
        );
        assert_eq!(unquote_table(r#"public."a""b""#).unwrap(), "public.a\"b");
        assert!(unquote_table(r#""a.b".c"#).is_err());
        assert!(unquote_table(r#""open.c"#).is_err());
        let p = Path::new("c.yaml");
        let text = "name: n\npostgres: {host: h, user: u, dbname: d}\ntopic_prefix: p\n\
                    tables:\n  include: ['\"Sales & Co\".\"Order Lines\"']\nkey_columns:\n  '\"S\".\"T\"': [id]\n";
        let mut c: ConnectorConfig = parse_str(p, text, &env).unwrap();
        c.normalize(p).unwrap();
        assert_eq!(c.tables.include, ["Sales & Co.Order Lines"]);
        assert!(c.captures("Sales & Co", "Order Lines"));
        assert!(c.key_columns.contains_key("S.T"));
    }

    #[test]
    fn validate_rejects_bad_names() {
        let e = connector(&CONNECTOR.replace("name: orders", "name: Orders-1")).unwrap_err();
        assert_eq!(e.field, "name");
        let e = connector(&CONNECTOR.replace("[public.orders]", "[orders]")).unwrap_err();
        assert_eq!(e.field, "tables.include[0]");
        let e = connector(&CONNECTOR.replace("topic_prefix: shop", "topic_prefix: 'sh op'"))
            .unwrap_err();
        assert_eq!(e.field, "topic_prefix");
    }

    const DAEMON: &str = "
kafka:
  bootstrap_servers: 127.0.0.1:9092
  linger: 10ms
  transaction:
    max_interval: 1s
schema_registry:
  url: http://127.0.0.1:8081/apis/ccompat/v7
";

    fn daemon(text: &str) -> Result<DaemonConfig, ConfigError> {
        let p = Path::new("config/pgcdc.yaml");
        let c: DaemonConfig = parse_str(p, text, &env)?;
        c.validate(p)?;
        Ok(c)
    }

    #[test]
    fn parses_daemon_with_human_durations() {
        let c = daemon(DAEMON).unwrap();
        assert_eq!(c.kafka.linger, Duration::from_millis(10));
        assert_eq!(c.kafka.transaction.max_interval, Duration::from_secs(1));
        assert_eq!(c.kafka.compression, "lz4");
        assert_eq!(c.http.listen, DEFAULT_HTTP_LISTEN);
    }

    #[test]
    fn raw_librdkafka_map_cannot_override_guarantees() {
        let text = DAEMON.replace(
            "  linger: 10ms",
            "  linger: 10ms\n  librdkafka:\n    acks: '1'",
        );
        let e = daemon(&text).unwrap_err();
        assert_eq!(e.field, "kafka.librdkafka.acks");
        let text = DAEMON.replace(
            "  linger: 10ms",
            "  linger: 10ms\n  librdkafka:\n    security.protocol: ssl",
        );
        assert!(daemon(&text).is_ok());
    }

    #[test]
    fn bad_duration_is_reported() {
        let e = daemon(&DAEMON.replace("10ms", "ten")).unwrap_err();
        assert_eq!(e.field, "kafka.linger");
    }
}
