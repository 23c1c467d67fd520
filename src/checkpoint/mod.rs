//! The checkpoint: one record per connector in a compacted offsets topic, written inside
//! the same Kafka transaction as the events it covers. A `read_committed` reader therefore
//! sees a checkpoint exactly when it sees every event before it, and the slot is told to
//! release WAL only up to a position some committed checkpoint names.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use crate::config::KafkaConfig;
use crate::error::{Code, Error, Result};
use crate::kafka::{base_config, classify};
use crate::snapshot::SnapshotState;
use crate::Lsn;

pub const CHECKPOINT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub version: u32,
    pub connector: String,
    /// Everything before this position has been delivered: the end LSN of the last included
    /// PostgreSQL transaction, or a later WAL position reported while idle. Replication
    /// resumes here.
    pub lsn: String,
    /// Commit and end LSN, xid and commit time (µs since 1970) of the last included
    /// PostgreSQL transaction.
    pub commit_lsn: Option<String>,
    pub end_lsn: Option<String>,
    pub xid: Option<u32>,
    pub commit_ts_us: Option<i64>,
    /// Snapshot progress: chunks committed, ranges left, rows per table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotState>,
    /// The database system identifier and timeline `IDENTIFY_SYSTEM` reported to the run
    /// that wrote this record: a later start against another cluster is refused, and a
    /// timeline switch (a promotion) is told apart from it. Absent in records written
    /// before pgcdc kept them, and by `snapshot.mode: initial_only` (no replication
    /// connection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<u32>,
}

impl Checkpoint {
    pub fn position(&self) -> Result<Lsn> {
        self.lsn.parse().map_err(|e| {
            Error::permanent(
                Code::Checkpoint,
                format!("checkpoint of connector {}: {e}", self.connector),
            )
        })
    }

    /// The record's JSON; an error, never empty bytes, if it cannot be written.
    pub fn encode(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self).map_err(|e| {
            Error::permanent(
                Code::Checkpoint,
                format!("internal error: checkpoint record does not serialize: {e}"),
            )
        })
    }
}

/// pgcdc's proof that it created a replication slot: written to the offsets topic (key
/// `<connector>.slot`) in its own Kafka transaction right after the slot is created and
/// before anything uses it. pgcdc drops a slot only when this record names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotClaim {
    pub connector: String,
    pub slot: String,
    /// The slot's consistent point when pgcdc created it.
    pub created_lsn: String,
}

impl SlotClaim {
    pub fn key(connector: &str) -> String {
        // Connector names are [a-z0-9_]: no connector's checkpoint key contains a dot.
        format!("{connector}.slot")
    }

    /// The record's JSON; an error, never empty bytes, if it cannot be written.
    pub fn encode(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self).map_err(|e| {
            Error::permanent(
                Code::Checkpoint,
                format!("internal error: checkpoint record does not serialize: {e}"),
            )
        })
    }
}

/// Reads the newest committed checkpoint of `connector` from the offsets topic (None when
/// the topic or the connector's record does not exist yet).
pub fn read_last(cfg: &KafkaConfig, connector: &str) -> Result<Option<Checkpoint>> {
    Ok(read_state(cfg, connector)?.0)
}

/// The newest committed checkpoint and slot claim of `connector`.
pub fn read_state(
    cfg: &KafkaConfig,
    connector: &str,
) -> Result<(Option<Checkpoint>, Option<SlotClaim>)> {
    let claim_key = SlotClaim::key(connector);
    let brokers = &cfg.bootstrap_servers;
    let consumer: BaseConsumer<crate::kafka::QuietContext> = base_config(cfg)
        .set("group.id", format!("pgcdc-checkpoint-reader-{connector}"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "false")
        .create_with_context(crate::kafka::QuietContext::new(connector))
        .map_err(|e| classify(brokers, "creating the checkpoint reader", e))?;
    let topic = &cfg.offsets_topic;
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(30))
        .map_err(|e| classify(brokers, &format!("reading metadata of {topic}"), e))?;
    let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
        return Ok((None, None));
    };
    if t.partitions().is_empty() {
        return Ok((None, None));
    }
    let mut last: Option<Checkpoint> = None;
    let mut claim: Option<SlotClaim> = None;
    for p in t.partitions() {
        let (low, high) = consumer
            .fetch_watermarks(topic, p.id(), Duration::from_secs(30))
            .map_err(|e| classify(brokers, &format!("reading watermarks of {topic}"), e))?;
        if high <= low {
            continue;
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
            .map_err(|e| classify(brokers, "assigning the offsets topic", e))?;
        consumer
            .assign(&tpl)
            .map_err(|e| classify(brokers, "assigning the offsets topic", e))?;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let pos = consumer
                .position()
                .ok()
                .and_then(|l| {
                    l.find_partition(topic, p.id())
                        .and_then(|e| e.offset().to_raw())
                })
                .unwrap_or(-1);
            if pos >= high {
                break;
            }
            if std::time::Instant::now() > deadline {
                return Err(Error::transient(Code::Checkpoint, format!(
                    "Kafka {brokers}: reading checkpoints from {topic} did not reach offset {high} within 60s"
                )));
            }
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    if m.key() == Some(claim_key.as_bytes()) {
                        claim = m.payload().and_then(|v| serde_json::from_slice(v).ok());
                        continue;
                    }
                    if m.key() != Some(connector.as_bytes()) {
                        continue;
                    }
                    match m.payload() {
                        Some(v) => {
                            let c: Checkpoint = serde_json::from_slice(v).map_err(|e| {
                                Error::permanent(Code::Checkpoint, format!(
                                    "checkpoint of connector {connector} in {topic} offset {} is not valid: {e}",
                                    m.offset()
                                ))
                            })?;
                            last = Some(c);
                        }
                        None => last = None, // a tombstone resets the connector
                    }
                }
                Some(Err(e)) => return Err(classify(brokers, &format!("reading {topic}"), e)),
                None => {}
            }
        }
    }
    Ok((last, claim))
}
