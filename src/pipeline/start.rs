//! How the stream starts, as [`crate::pipeline::plan::plan_start`] chose: resume from the slot (created
//! when missing), create it with an exported snapshot for an initial snapshot, or, with
//! `on_slot_lost: resnapshot`, recreate it and queue every keyed table for an incremental
//! re-read behind a gap notice.

use crate::avro::notification::Notification;
use crate::checkpoint::progress::SnapshotState;
use crate::checkpoint::{Checkpoint, SlotClaim};
use crate::config::ConnectorConfig;
use crate::error::Result;
use crate::kafka::producer::TxProducer;
use crate::metrics;
use crate::pipeline::plan::Start;
use crate::postgres::catalog::SlotInfo;
use crate::postgres::ReplicationClient;
use crate::snapshot::incremental;
use crate::snapshot::initial::SnapTable;
use crate::Lsn;

use super::reader::Reader;

/// Where streaming begins and what comes first.
pub(super) struct Opened {
    /// The position replication starts at; transactions committed before it are skipped.
    pub(super) start: Lsn,
    /// The exported snapshot an initial snapshot reads inside.
    pub(super) exported: Option<String>,
    /// Snapshot progress to go on with.
    pub(super) state: SnapshotState,
    /// `on_slot_lost: resnapshot`: the gap notice, written in the first Kafka transaction.
    pub(super) gap_notice: Option<Notification>,
}

/// What opening the slot needs to know.
pub(super) struct Slot<'a> {
    pub(super) conn: &'a ConnectorConfig,
    pub(super) offsets_topic: &'a str,
    pub(super) producer: &'a TxProducer,
    pub(super) ck: Option<&'a Checkpoint>,
    pub(super) existing: Option<&'a SlotInfo>,
}

impl Slot<'_> {
    pub(super) async fn open(
        &self,
        decision: Start,
        repl: &mut ReplicationClient,
        reader: &mut Reader<'_>,
    ) -> Result<Opened> {
        let conn = self.conn;
        let slot = conn.slot_name();
        match decision {
            Start::Resnapshot {
                drop_existing,
                lost,
            } => {
                if drop_existing {
                    repl.drop_slot(&slot).await?;
                }
                let slot_pos = match (self.existing, drop_existing) {
                    (Some(s), false) => s.confirmed_flush.unwrap_or(Lsn::ZERO),
                    _ => self.create(repl, &slot).await?,
                };
                let tables = reader.snapshot_tables().await?;
                let (state, notice) = self.resnapshot(tables, &lost, slot_pos);
                Ok(Opened {
                    start: slot_pos,
                    exported: None,
                    state,
                    gap_notice: Some(notice),
                })
            }
            Start::Snapshot { drop_existing } => {
                if drop_existing {
                    tracing::warn!(connector = %conn.name, slot = %slot, "dropping the replication slot pgcdc created earlier, to recreate it with a snapshot (snapshot.mode {:?})", conn.snapshot.mode);
                    repl.drop_slot(&slot).await?;
                }
                self.write_claim(None).await?;
                let (lsn, name) = repl.create_slot_exported(&slot, conn.slot_failover).await?;
                self.claim(lsn).await?;
                tracing::info!(connector = %conn.name, slot = %slot, lsn = %lsn, snapshot = %name, "created replication slot with an exported snapshot");
                Ok(Opened {
                    start: lsn,
                    exported: Some(name),
                    state: SnapshotState::default(),
                    gap_notice: None,
                })
            }
            Start::Resume => {
                let slot_pos = match self.existing {
                    Some(s) => {
                        if s.failover.is_some_and(|f| f != conn.slot_failover) {
                            repl.set_slot_failover(&slot, conn.slot_failover).await?;
                            tracing::info!(connector = %conn.name, slot = %slot, failover = conn.slot_failover, "replication slot altered to follow slot_failover");
                        }
                        s.confirmed_flush.unwrap_or(Lsn::ZERO)
                    }
                    None => self.create(repl, &slot).await?,
                };
                // `decide` refused a slot ahead of the checkpoint: from the checkpoint on.
                let ck_pos = self.ck.map(Checkpoint::position).transpose()?;
                Ok(Opened {
                    start: ck_pos.unwrap_or(Lsn::ZERO).max(slot_pos),
                    exported: None,
                    state: self.resumed(),
                    gap_notice: None,
                })
            }
        }
    }

    /// Creates the slot and records the claim right after, before anything uses it.
    async fn create(&self, repl: &mut ReplicationClient, slot: &str) -> Result<Lsn> {
        self.write_claim(None).await?;
        let lsn = repl.create_slot(slot, self.conn.slot_failover).await?;
        self.claim(lsn).await?;
        tracing::info!(connector = %self.conn.name, slot = %slot, lsn = %lsn, "created replication slot");
        Ok(lsn)
    }

    /// The snapshot progress the checkpoint left, to go on with.
    fn resumed(&self) -> SnapshotState {
        self.ck
            .and_then(|c| c.snapshot.clone())
            .unwrap_or_default()
            .resume()
    }

    /// `on_slot_lost: resnapshot` from `slot_pos`: every keyed table queued for an
    /// incremental re-read, and the gap notice that says what was lost.
    fn resnapshot(
        &self,
        tables: Vec<SnapTable>,
        lost: &str,
        slot_pos: Lsn,
    ) -> (SnapshotState, Notification) {
        let conn = self.conn;
        let slot = conn.slot_name();
        let (keyed, keyless): (Vec<_>, Vec<_>) =
            tables.into_iter().partition(|t| !t.st.pk.is_empty());
        let names = |ts: &[SnapTable]| {
            ts.iter()
                .map(|t| t.st.relation.qualified_name())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (reread, not_reread) = (names(&keyed), names(&keyless));
        let mut state = self.resumed();
        state.add(
            keyed
                .iter()
                .map(|t| {
                    incremental::whole_table(
                        &t.st.relation.qualified_name(),
                        t.st.estimate.unwrap_or(0),
                    )
                })
                .collect(),
        );
        let from = self.ck.map(|c| c.lsn.clone()).unwrap_or_default();
        tracing::error!(connector = %conn.name, slot = %slot, lost = %lost, from = %from, to = %slot_pos, tables = %reread, without_key = %not_reread,
            "on_slot_lost: resnapshot: changes between the checkpoint and the new slot are lost; re-reading every table while streaming");
        metrics::count_connector(&conn.name, metrics::ConnectorEvent::SlotLost);
        let mut data = vec![
            ("connector_name".to_owned(), conn.name.clone()),
            ("slot".to_owned(), slot),
            ("reason".to_owned(), lost.to_owned()),
            ("lost_from_lsn".to_owned(), from),
            ("resumed_at_lsn".to_owned(), slot_pos.to_string()),
            ("data_collections".to_owned(), reread),
        ];
        if !not_reread.is_empty() {
            data.push(("not_reread_without_primary_key".to_owned(), not_reread));
        }
        let notice = Notification {
            id: format!("{}-slot-lost-{}", conn.name, slot_pos),
            kind: "SLOT_LOST".to_owned(),
            aggregate_type: "Replication Slot".to_owned(),
            additional_data: data,
            timestamp_ms: crate::clock::now_micros() / 1000,
        };
        (state, notice)
    }

    /// Records, in its own Kafka transaction, that this connector created the slot at
    /// `lsn`: the proof pgcdc needs before it ever drops the slot ([`crate::pipeline::plan`]).
    async fn claim(&self, lsn: Lsn) -> Result<()> {
        let claim = SlotClaim {
            connector: self.conn.name.clone(),
            slot: self.conn.slot_name(),
            created_lsn: lsn.to_string(),
        };
        self.write_claim(Some(claim.encode()?)).await
    }

    /// Writes the claim record (`None`: its tombstone) in its own Kafka transaction. The
    /// tombstone goes first, before a slot is created: a producer the offsets topic refuses
    /// (a missing Write ACL) then stops before there is a slot only a claim could prove
    /// pgcdc's.
    async fn write_claim(&self, value: Option<Vec<u8>>) -> Result<()> {
        let key = SlotClaim::key(&self.conn.name);
        self.producer
            .send_alone(self.offsets_topic, key.as_bytes(), value.as_deref())
            .await
    }
}
