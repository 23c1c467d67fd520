//! Daemon settings: `config/pgcdc.yaml`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::*;

pub const DEFAULT_COMPRESSION: &str = "lz4";
/// A commit cannot make librdkafka skip the linger (see `kafka::producer`), so a thin stream
/// pays it in every transaction: 1 ms against 5 ms took make bench's live-phase commits from
/// ~7 to ~2.5 ms; its drains stayed within the run-to-run spread.
pub const DEFAULT_LINGER: Duration = Duration::from_millis(1);
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
    "transaction.timeout.ms",
    "queue.buffering.max.ms",
    "batch.size",
    "queue.buffering.max.kbytes",
    "isolation.level",
    "enable.auto.commit",
];

/// Every field's default is in the `Default` impls of this file (serde's container
/// `default`); the two without one (`kafka.bootstrap_servers`, `schema_registry.url`) are
/// empty there, which [`DaemonConfig::validate`] refuses, naming the field.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DaemonConfig {
    pub kafka: KafkaConfig,
    pub schema_registry: RegistryConfig,
    pub http: HttpConfig,
    pub logging: LoggingConfig,
    /// After SIGTERM/SIGINT, how long a connector may take to commit what is whole and stop;
    /// one still starting up (e.g. waiting for Kafka) is abandoned then. Nothing that was
    /// not delivered is acknowledged either way.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// A permanent error in one connector stops every connector of the process (default:
    /// only that one stops; the others go on and `/healthz` names it).
    pub fail_fast: bool,
}

/// The largest record pgcdc produces; topics it creates accept as much (max.message.bytes),
/// and librdkafka's queue must hold one.
pub const MAX_RECORD_BYTES: usize = 10 * 1024 * 1024;

/// The Kafka transaction timeout: 15 minutes, the brokers' default ceiling.
pub const DEFAULT_TXN_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// Reader → producer buffer: 32 MiB.
pub const DEFAULT_BUFFER_BYTES: u64 = 32 * 1024 * 1024;
/// librdkafka's queue: 32 MiB (librdkafka's own default is 1 GiB).
pub const DEFAULT_PRODUCER_QUEUE_BYTES: u64 = 32 * 1024 * 1024;

pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            kafka: KafkaConfig::default(),
            schema_registry: RegistryConfig::default(),
            http: HttpConfig::default(),
            logging: LoggingConfig::default(),
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            fail_fast: false,
        }
    }
}

#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    pub bootstrap_servers: String,
    pub compression: String,
    #[serde(with = "humantime_serde")]
    pub linger: Duration,
    pub batch_bytes: u64,
    /// Bytes of encoded events between the reader and the Kafka producer.
    pub buffer_bytes: u64,
    /// librdkafka's queue of records not yet acknowledged by the brokers, in bytes
    /// (`queue.buffering.max.kbytes`).
    pub producer_queue_bytes: u64,
    pub topics: TopicDefaults,
    pub transaction: TransactionConfig,
    pub offsets_topic: String,
    /// Kafka transactions around events and checkpoint (the default). `false` is
    /// at-least-once: a restart may repeat events; kept to measure what transactions cost.
    pub exactly_once: bool,
    /// Extra librdkafka options for the producer and consumers (security settings, say).
    pub librdkafka: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            bootstrap_servers: String::new(),
            compression: DEFAULT_COMPRESSION.to_owned(),
            linger: DEFAULT_LINGER,
            batch_bytes: DEFAULT_BATCH_BYTES,
            buffer_bytes: DEFAULT_BUFFER_BYTES,
            producer_queue_bytes: DEFAULT_PRODUCER_QUEUE_BYTES,
            topics: TopicDefaults::default(),
            transaction: TransactionConfig::default(),
            offsets_topic: DEFAULT_OFFSETS_TOPIC.to_owned(),
            exactly_once: true,
            librdkafka: BTreeMap::new(),
        }
    }
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
            .field("buffer_bytes", &self.buffer_bytes)
            .field("producer_queue_bytes", &self.producer_queue_bytes)
            .field("topics", &self.topics)
            .field("transaction", &self.transaction)
            .field("offsets_topic", &self.offsets_topic)
            .field("exactly_once", &self.exactly_once)
            .field("librdkafka", &librdkafka)
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TopicDefaults {
    pub partitions: i32,
    pub replication_factor: i32,
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
#[serde(default, deny_unknown_fields)]
pub struct TransactionConfig {
    pub max_events: usize,
    pub max_bytes: u64,
    #[serde(with = "humantime_serde")]
    pub max_interval: Duration,
    /// At a PostgreSQL transaction boundary with nothing more read yet: how long to wait
    /// for more before committing. Zero (the default) commits at once, the lowest latency;
    /// more makes fewer, larger Kafka transactions out of a trickle of small ones.
    #[serde(with = "humantime_serde")]
    pub idle_wait: Duration,
    /// librdkafka's `transaction.timeout.ms`: the broker aborts a Kafka transaction open
    /// longer (one PostgreSQL transaction must stream within it). At most the brokers'
    /// `transaction.max.timeout.ms` (15 minutes by default).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for TransactionConfig {
    fn default() -> Self {
        TransactionConfig {
            max_events: DEFAULT_TXN_MAX_EVENTS,
            max_bytes: DEFAULT_TXN_MAX_BYTES,
            max_interval: DEFAULT_TXN_MAX_INTERVAL,
            idle_wait: Duration::ZERO,
            timeout: DEFAULT_TXN_TIMEOUT,
        }
    }
}

#[derive(Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryConfig {
    pub url: String,
    pub username: Option<String>,
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
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
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
#[serde(default, deny_unknown_fields)]
pub struct LoggingConfig {
    pub level: String,
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
                "is required: at least one host:port of the Kafka cluster".into(),
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
        let t = self.kafka.transaction.timeout;
        if t < Duration::from_secs(1) || t > Duration::from_secs(24 * 3600) {
            return err(
                "kafka.transaction.timeout",
                format!("{} must be between 1s and 24h (and at most the brokers' transaction.max.timeout.ms, 15m by default)", humantime::format_duration(t)),
            );
        }
        const MIB: u64 = 1024 * 1024;
        if !(MIB..=u64::from(u32::MAX)).contains(&self.kafka.buffer_bytes) {
            return err(
                "kafka.buffer_bytes",
                "must be between 1048576 (1 MiB) and 4294967295 bytes".into(),
            );
        }
        let least = MAX_RECORD_BYTES as u64 + 64 * 1024;
        if !(least..=2_147_483_647 * 1024).contains(&self.kafka.producer_queue_bytes) {
            return err(
                "kafka.producer_queue_bytes",
                format!("must be at least {least} bytes (pgcdc's largest record) and at most 2147483647 KiB (librdkafka's queue.buffering.max.kbytes)"),
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
        if self.kafka.transaction.idle_wait > self.kafka.transaction.max_interval {
            return err(
                "kafka.transaction.idle_wait",
                format!(
                    "{} is longer than kafka.transaction.max_interval ({}), which always commits first; lower it",
                    humantime::format_duration(self.kafka.transaction.idle_wait),
                    humantime::format_duration(self.kafka.transaction.max_interval)
                ),
            );
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
        if self.schema_registry.url.is_empty() {
            return err(
                "schema_registry.url",
                "is required: the registry's Confluent-compatible URL, e.g. http://127.0.0.1:8081"
                    .into(),
            );
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
