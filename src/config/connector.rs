//! One connector file: `connectors/<name>.yaml`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::*;

/// `on_slot_lost`: what a connector does when its slot lost changes it had not delivered.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OnSlotLost {
    /// Stop with one line that names the slot, why, and the checkpoint.
    #[default]
    Stop,
    /// Write a gap notice to `<topic_prefix>.notifications`, recreate the slot and re-read
    /// every table with an incremental snapshot while the stream goes on.
    Resnapshot,
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
    pub include: Vec<TableName>,
    #[serde(default)]
    pub exclude: Vec<TableName>,
}

#[derive(Debug, Clone, Deserialize)]
/// Every field's default is in its `Default` impl (serde's container `default`); `name`,
/// `topic_prefix` and `postgres`' `host`, `user` and `dbname` are empty there, which
/// [`ConnectorConfig::validate`] refuses, naming the field.
#[serde(default, deny_unknown_fields)]
pub struct ConnectorConfig {
    pub name: String,
    pub postgres: PostgresConfig,
    pub slot: Option<String>,
    pub publication: Option<String>,
    /// A failover slot (PostgreSQL 17+): a standby with `sync_replication_slots = on` keeps
    /// a copy in step, so the connector continues on it after a promotion.
    pub slot_failover: bool,
    /// What to do when the slot can no longer deliver what follows the checkpoint
    /// (invalidated by PostgreSQL, gone, or ahead of the checkpoint).
    pub on_slot_lost: OnSlotLost,
    /// High availability: while the slot is active in another session (another instance of
    /// this connector), this instance stands by, and takes over within this long of the
    /// slot's release.
    #[serde(with = "humantime_serde")]
    pub takeover: std::time::Duration,
    /// Changes of a partition are published as changes of its partitioned root (the
    /// publication's `publish_via_partition_root`), so the root names the topic and a new
    /// partition makes no new topic. pgcdc sets it on the publication it creates (and on
    /// its own publication when it differs); another publication must have it already.
    pub publish_via_partition_root: bool,
    /// PostgreSQL 18's `publish_generated_columns = stored` on the publication: stored
    /// generated columns are sent (and snapshotted) like the others.
    pub publish_generated_columns: bool,
    pub tables: TableFilter,
    pub topic_prefix: String,
    /// Key columns for tables without a primary key, by `schema.table`.
    pub key_columns: BTreeMap<TableName, Vec<String>>,
    /// Which columns of a table are sent, and which are masked, hashed or truncated, by
    /// `schema.table` (Debezium's `column.include.list`, `column.exclude.list`,
    /// `column.mask.with.N.chars`, `column.truncate.to.N.chars`, `column.mask.hash.v2.*`).
    pub columns: BTreeMap<TableName, ColumnRules>,
    /// Debezium's outbox event router, built in.
    pub outbox: OutboxConfig,
    /// Schema change events on `<topic_prefix>.schema_changes`, from DDL captured by the
    /// event trigger `pgcdc install-ddl-capture` installs; a table's new schemas are
    /// registered at its DDL, before its first row of the new shape.
    pub schema_changes: bool,
    pub numeric_mode: NumericMode,
    /// Send a tombstone (null value) after each delete, for log compaction.
    pub tombstones: bool,
    /// Debezium's `provide.transaction.metadata`: BEGIN and END events of each PostgreSQL
    /// transaction on `<topic_prefix>.transaction`, in the Kafka transaction of its changes.
    pub provide_transaction_metadata: bool,
    /// Logical decoding messages (`pg_logical_emit_message`) as `op: m` events.
    pub messages: MessagesConfig,
    /// Debezium's heartbeats: records on `<topics_prefix>.<topic_prefix>` and a write that
    /// keeps the slot moving while the captured tables are idle.
    pub heartbeat: HeartbeatConfig,
    pub snapshot: SnapshotConfig,
    /// `schema.table` of the signal table (Debezium's `signal.data.collection`): a row
    /// inserted there starts an ad-hoc incremental snapshot. Created when missing.
    pub signal_table: Option<TableName>,
    /// What an update that leaves a TOASTed value unchanged carries for it (PostgreSQL does
    /// not send such values under REPLICA IDENTITY DEFAULT).
    pub toast: ToastMode,
    /// Debezium's `unavailable.value.placeholder`: the value of a column PostgreSQL did not
    /// send and pgcdc could not complete exactly.
    pub unavailable_value_placeholder: String,
    /// `toast: fetch` holds the rest of a transaction after its first incomplete update until
    /// its commit, up to this many bytes; past it, the held updates get the placeholder.
    pub toast_hold_bytes: u64,
    /// What a value PostgreSQL accepted but its Debezium-compatible Avro type cannot hold
    /// becomes (NaN in a `numeric(p,s)`, an array whose shape differs from its declaration).
    pub unrepresentable: Unrepresentable,
    /// Debezium's `skipped.operations`: change events of these ops are not sent (counted in
    /// `pgcdc_skipped_operations_total`). Truncates by default, as Debezium; `[]` sends all.
    pub skipped_operations: Vec<SkippedOp>,
    /// On the first start (no checkpoint yet), continue the stream of a Debezium
    /// PostgreSQL connector where it stopped, on its slot and publication, with no
    /// snapshot: what `pgcdc takeover debezium` does, unattended.
    pub from_debezium: Option<FromDebezium>,
}

impl Default for ConnectorConfig {
    fn default() -> Self {
        ConnectorConfig {
            name: String::new(),
            postgres: PostgresConfig::default(),
            slot: None,
            publication: None,
            slot_failover: false,
            on_slot_lost: OnSlotLost::Stop,
            takeover: std::time::Duration::from_secs(10),
            publish_via_partition_root: true,
            publish_generated_columns: false,
            tables: TableFilter::default(),
            topic_prefix: String::new(),
            key_columns: BTreeMap::new(),
            columns: BTreeMap::new(),
            outbox: OutboxConfig::default(),
            schema_changes: false,
            numeric_mode: NumericMode::default(),
            tombstones: true,
            provide_transaction_metadata: false,
            messages: MessagesConfig::default(),
            heartbeat: HeartbeatConfig::default(),
            snapshot: SnapshotConfig::default(),
            signal_table: None,
            toast: ToastMode::default(),
            unavailable_value_placeholder: DEFAULT_UNAVAILABLE_PLACEHOLDER.to_owned(),
            toast_hold_bytes: DEFAULT_TOAST_HOLD_BYTES,
            unrepresentable: Unrepresentable::default(),
            skipped_operations: vec![SkippedOp::Truncate],
            from_debezium: None,
        }
    }
}

/// `from_debezium`: where the Debezium connector's position is read.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FromDebezium {
    /// Kafka Connect's offsets topic (the worker's `offset.storage.topic`).
    pub offsets_topic: String,
    /// The Debezium connector's name in Kafka Connect. May be left out when the offsets of
    /// only one connector name this connector's `topic_prefix`.
    pub connector: Option<String>,
    /// An explicit position instead of Connect's offsets (Debezium Server, an embedded
    /// engine): every transaction that committed before this LSN is in Kafka.
    pub lsn: Option<String>,
}

pub const DEFAULT_CONNECT_OFFSETS_TOPIC: &str = "connect-offsets";

impl Default for FromDebezium {
    fn default() -> Self {
        FromDebezium {
            offsets_topic: DEFAULT_CONNECT_OFFSETS_TOPIC.to_owned(),
            connector: None,
            lsn: None,
        }
    }
}

/// `messages`: Debezium's message events, off unless enabled; `prefix_include` /
/// `prefix_exclude` (Debezium's `message.prefix.include.list` / `exclude.list`) filter by
/// prefix, exact names.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MessagesConfig {
    pub enabled: bool,
    pub prefix_include: Vec<String>,
    pub prefix_exclude: Vec<String>,
}

impl MessagesConfig {
    /// Whether a message with `prefix` becomes an event (pgcdc's own watermarks never do).
    pub fn wants(&self, prefix: &str) -> bool {
        self.enabled
            && prefix != crate::prefix::WATERMARK
            && prefix != crate::prefix::HEARTBEAT
            && prefix != crate::prefix::DDL
            && (self.prefix_include.is_empty() || self.prefix_include.iter().any(|p| p == prefix))
            && !self.prefix_exclude.iter().any(|p| p == prefix)
    }
}

/// `heartbeat` (Debezium's `heartbeat.interval.ms`, `heartbeat.action.query`,
/// `heartbeat.topics.prefix`). Off unless `interval` is set.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HeartbeatConfig {
    /// How often a heartbeat record is written and the action query runs.
    #[serde(with = "humantime_serde")]
    pub interval: Option<std::time::Duration>,
    /// SQL run on the captured database at every interval (e.g. an UPDATE of a captured
    /// heartbeat table). Unset, pgcdc writes a non-transactional logical decoding message
    /// (`pg_logical_emit_message(false, 'pgcdc.heartbeat', '')`), which its slot decodes
    /// and acknowledges even when every captured table is idle.
    pub action_query: Option<String>,
    /// The heartbeat topic is `<topics_prefix>.<topic_prefix>`.
    pub topics_prefix: String,
}

pub const DEFAULT_HEARTBEAT_TOPICS_PREFIX: &str = "__pgcdc-heartbeat";

impl Default for HeartbeatConfig {
    fn default() -> Self {
        HeartbeatConfig {
            interval: None,
            action_query: None,
            topics_prefix: DEFAULT_HEARTBEAT_TOPICS_PREFIX.to_owned(),
        }
    }
}

impl HeartbeatConfig {
    pub fn topic(&self, topic_prefix: &str) -> String {
        format!("{}.{topic_prefix}", self.topics_prefix)
    }
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
#[serde(default, deny_unknown_fields)]
pub struct SnapshotConfig {
    pub mode: SnapshotMode,
    /// Connections reading the initial snapshot in parallel, across and within tables.
    pub workers: usize,
    /// Rows per primary-key chunk of the initial snapshot.
    pub chunk_rows: u64,
    /// Rows per chunk of incremental (watermark) snapshots; each is held in memory while
    /// its window is open.
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

impl ConnectorConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let cfg: ConnectorConfig = parse_file(path)?;
        cfg.validate(path)?;
        Ok(cfg)
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
        for (field, v, what) in [
            ("name", &self.name, "the connector's name, e.g. inventory"),
            (
                "topic_prefix",
                &self.topic_prefix,
                "the first part of every topic name, e.g. inventory",
            ),
            (
                "postgres.host",
                &self.postgres.host,
                "the database server's host name or address",
            ),
            (
                "postgres.user",
                &self.postgres.user,
                "a role with REPLICATION that owns or may read the captured tables",
            ),
            (
                "postgres.dbname",
                &self.postgres.dbname,
                "the database whose tables are captured",
            ),
        ] {
            if v.is_empty() {
                return err(field, format!("is required: {what}"));
            }
        }
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
        if self.postgres.port == 0 {
            return err("postgres.port", "must be a port number".into());
        }
        if let Err(m) = self.postgres.endpoints() {
            return err(
                "postgres.host",
                format!("{m}; write one host, or several as a,b or a:5432,b:5433"),
            );
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
        if let Some(l) = self.from_debezium.as_ref().and_then(|d| d.lsn.as_deref()) {
            if l.parse::<crate::Lsn>().is_err() {
                return err(
                    "from_debezium.lsn",
                    format!(
                        "{l:?} is not an LSN; write it as PostgreSQL prints it, e.g. 0/16B3748"
                    ),
                );
            }
        }
        for (t, rules) in &self.columns {
            rules
                .validate()
                .or_else(|(f, m)| err(&format!("columns.{t}.{f}"), m))?;
        }
        if let Some(t) = &self.outbox.table {
            if !self.captures(t.schema(), t.table()) {
                return err(
                    "outbox.table",
                    format!("{t} is not captured (tables.include / tables.exclude); capture it so its inserts can be routed"),
                );
            }
            if self.columns.contains_key(t) {
                return err(
                    "outbox.table",
                    format!("{t} has column rules (columns.{t}); the outbox router reads its columns whole, so remove them"),
                );
            }
        }
        if self.outbox.message_prefix.as_deref().is_some_and(|p| {
            p.is_empty()
                || self.messages.wants(p) && self.messages.prefix_include.iter().any(|i| i == p)
        }) {
            return err(
                "outbox.message_prefix",
                "is empty or also a messages.prefix_include prefix; give routed messages a prefix of their own".into(),
            );
        }
        validate_topic_name(&self.outbox.topic_for("x")).or_else(|m| err("outbox.topic", m))?;
        if let Some(i) = self.heartbeat.interval {
            if i < std::time::Duration::from_millis(100) {
                return err(
                    "heartbeat.interval",
                    format!(
                        "{} is under 100ms; a few seconds is usual",
                        humantime::format_duration(i)
                    ),
                );
            }
            validate_topic_name(&self.heartbeat.topic(&self.topic_prefix))
                .or_else(|m| err("heartbeat.topics_prefix", m))?;
        }
        if self
            .heartbeat
            .action_query
            .as_deref()
            .is_some_and(|q| q.trim().is_empty())
        {
            return err(
                "heartbeat.action_query",
                "is empty; leave it out for pgcdc's own heartbeat message".into(),
            );
        }
        for (t, cols) in &self.key_columns {
            if cols.is_empty() {
                return err(
                    &format!("key_columns.{t}"),
                    "must list at least one column".into(),
                );
            }
        }
        if !self.messages.prefix_include.is_empty() && !self.messages.prefix_exclude.is_empty() {
            return err(
                "messages.prefix_exclude",
                "cannot be used with messages.prefix_include; keep one of them".into(),
            );
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
        if self
            .signal_table
            .as_ref()
            .is_some_and(|s| s.is(schema, table))
        {
            return false;
        }
        (self.tables.include.is_empty() || self.tables.include.iter().any(|t| t.is(schema, table)))
            && !self.tables.exclude.iter().any(|t| t.is(schema, table))
    }
}
