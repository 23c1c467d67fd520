//! The checkpoint: one record per connector in a compacted offsets topic, written inside
//! the same Kafka transaction as the events it covers. A `read_committed` reader therefore
//! sees a checkpoint exactly when it sees every event before it, and the slot is told to
//! release WAL only up to a position some committed checkpoint names.

pub mod debezium;
pub mod progress;

use serde::{Deserialize, Serialize};

use crate::error::{Code, Error, Result};
use crate::Lsn;
use progress::SnapshotState;

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
    /// Written by `pgcdc takeover`: the stream another tool (Debezium) delivered up to, and
    /// the rule for its partly delivered transaction. pgcdc's first commit drops it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub takeover: Option<debezium::Seam>,
}

impl Checkpoint {
    pub fn position(&self) -> Result<Lsn> {
        self.lsn.parse().map_err(|e| {
            Error::permanent(
                Code::Checkpoint,
                format!("checkpoint of connector {}: {e}", self.connector),
            )
            .with_source(e)
        })
    }

    /// The record's JSON; an error, never empty bytes, if it cannot be written.
    pub fn encode(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self).map_err(|e| {
            Error::permanent(
                Code::Checkpoint,
                format!("internal error: checkpoint record does not serialize: {e}"),
            )
            .with_source(e)
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
            .with_source(e)
        })
    }
}
