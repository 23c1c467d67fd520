//! What a connector does when it starts: resume from its checkpoint, or take an initial
//! snapshot on a new slot, or refuse.
//!
//! A replication slot holds changes nobody else has: dropping one that another consumer
//! reads (or a Debezium connector pgcdc is pointed at) destroys them. So pgcdc drops a slot
//! only when its own slot claim ([`SlotClaim`], written right after it created the slot)
//! names it, and never while the slot is in use. Any other existing slot is used as it is
//! when its position can be trusted (a checkpoint, or `snapshot.mode: never`); otherwise the
//! connector stops and says how to go on.

use crate::checkpoint::{Checkpoint, SlotClaim};
use crate::config::{ConnectorConfig, OnSlotLost, SnapshotMode};
use crate::error::{Code, Error, Result};
use crate::postgres::catalog::SlotInfo;
use crate::postgres::replication::SystemId;
use crate::Lsn;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// Stream from the slot (created when missing), from the checkpoint if there is one.
    Resume,
    /// Create the slot with an exported snapshot and read the tables first, after dropping
    /// the existing slot (proven pgcdc's own and idle) when `drop_existing`.
    Snapshot { drop_existing: bool },
    /// `on_slot_lost: resnapshot`: the slot lost changes after the checkpoint (`lost` says
    /// how). Drop it when `drop_existing` (invalidated, pgcdc's own), create it when it is
    /// missing, write a gap notice and re-read every table incrementally.
    Resnapshot { drop_existing: bool, lost: String },
}

/// Decides how to start. Errors are the one line the operator reads.
pub fn plan_start(
    conn: &ConnectorConfig,
    ck: Option<&Checkpoint>,
    claim: Option<&SlotClaim>,
    slot: Option<&SlotInfo>,
) -> Result<Start> {
    let ck_pos = match ck {
        Some(c) => Some(c.position()?),
        None => None,
    };
    let gap = match (slot, ck_pos) {
        (Some(s), Some(c)) => s.confirmed_flush.unwrap_or(Lsn::ZERO) > c,
        _ => false,
    };
    let invalidated = slot.and_then(SlotInfo::invalidated);
    let when_needed = conn.snapshot.mode == SnapshotMode::WhenNeeded;
    let name = conn.slot_name();
    let checkpoint = || match ck {
        Some(c) => format!("the checkpoint of connector {} is at {}", conn.name, c.lsn),
        None => format!("connector {} has no checkpoint", conn.name),
    };
    let resnapshot = conn.on_slot_lost == OnSlotLost::Resnapshot
        && conn.snapshot.mode != SnapshotMode::InitialOnly;
    if resnapshot {
        if let Some(c) = ck {
            let lost = match (slot, &invalidated) {
                (Some(s), Some(why)) => Some((true, format!(
                    "replication slot {name} was invalidated by PostgreSQL ({why}; restart_lsn {}), the checkpoint is at {}",
                    s.restart_lsn.map_or_else(|| "none".to_owned(), |l| l.to_string()),
                    c.lsn
                ))),
                (None, _) => Some((false, format!(
                    "replication slot {name} does not exist, the checkpoint is at {}",
                    c.lsn
                ))),
                (Some(s), None) if gap => Some((false, format!(
                    "replication slot {name} is at {} but the checkpoint is at {}",
                    s.confirmed_flush.map_or_else(|| "none".to_owned(), |l| l.to_string()),
                    c.lsn
                ))),
                _ => None,
            };
            if let Some((invalid, lost)) = lost {
                if invalid && !slot.is_some_and(|s| owned(conn, claim, s)) {
                    return Err(Error::permanent(Code::Slot, format!(
                        "{lost}; connector {} has no record of creating the slot, so pgcdc will not drop it: drop it \
                         yourself (SELECT pg_drop_replication_slot('{name}')) and start again",
                        conn.name
                    )));
                }
                if slot.is_some_and(|s| s.active) {
                    return Err(Error::transient(
                        Code::Slot,
                        format!("{lost}, and the slot is in use; pgcdc retries once it is free"),
                    ));
                }
                return Ok(Start::Resnapshot {
                    drop_existing: invalid,
                    lost,
                });
            }
        }
    }
    if let (Some(why), false) = (&invalidated, when_needed) {
        let s = slot.map(describe).unwrap_or_default();
        return Err(Error::permanent(Code::Slot, format!(
            "replication slot {name} can no longer be read: PostgreSQL invalidated it ({why}; {s}, restart_lsn {}), \
             and {}: the changes after it are gone from the WAL (max_slot_wal_keep_size, or 18's \
             idle_replication_slot_timeout, while the connector was stopped or behind). To re-read every table, \
             set on_slot_lost: resnapshot (a gap notice, then an incremental re-read while the stream goes on) or \
             snapshot.mode: when_needed (pgcdc drops the slot it created and takes a new initial snapshot); \
             raise max_slot_wal_keep_size so that it does not happen again",
            slot.and_then(|s| s.restart_lsn).map_or_else(|| "none".to_owned(), |l| l.to_string()),
            checkpoint()
        )));
    }
    if slot.is_none() && !when_needed && conn.snapshot.mode != SnapshotMode::InitialOnly {
        if let Some(c) = ck {
            return Err(Error::permanent(Code::Slot, format!(
                "replication slot {name} does not exist, but the checkpoint of connector {} is at {}: the slot was \
                 dropped (or did not survive a failover), and the changes after the checkpoint are gone. To re-read \
                 every table, set on_slot_lost: resnapshot or snapshot.mode: when_needed; to start over without them, delete the checkpoint \
                 (a tombstone for key {:?} in the offsets topic)",
                conn.name, c.lsn, conn.name
            )));
        }
    }
    let need_snapshot = match conn.snapshot.mode {
        SnapshotMode::Never | SnapshotMode::InitialOnly => false,
        SnapshotMode::Initial => ck.is_none(),
        SnapshotMode::WhenNeeded => ck.is_none() || slot.is_none() || gap || invalidated.is_some(),
    };
    if !need_snapshot {
        if let (true, Some(s), Some(c)) = (
            gap && conn.snapshot.mode != SnapshotMode::InitialOnly,
            slot,
            ck,
        ) {
            return Err(Error::permanent(Code::Slot, format!(
                "replication slot {name} is at {} but the last checkpoint of connector {} is at {}: changes between \
                 them were acknowledged without being delivered (was the slot dropped and recreated?). pgcdc stops \
                 rather than skip them. To re-read every table, set on_slot_lost: resnapshot or snapshot.mode: \
                 when_needed; to start over, delete the checkpoint (a tombstone for key {:?} in the offsets topic)",
                s.confirmed_flush.map_or_else(|| "none".to_owned(), |l| l.to_string()),
                conn.name,
                c.lsn,
                conn.name
            )));
        }
        return Ok(Start::Resume);
    }
    let Some(s) = slot else {
        return Ok(Start::Snapshot {
            drop_existing: false,
        });
    };
    if !owned(conn, claim, s) {
        return Err(Error::permanent(Code::Slot, format!(
            "replication slot {name} already exists ({}) and connector {} has no record of creating it, so pgcdc \
             will not drop it to take an initial snapshot (its changes may belong to another consumer); to stream \
             from it as it is, set snapshot.mode: never; to start afresh, drop it yourself \
             (SELECT pg_drop_replication_slot('{name}')) or set slot: to another name",
            describe(s),
            conn.name
        )));
    }
    if s.active {
        return Err(Error::transient(Code::Slot, format!(
            "replication slot {name} is in use ({}); pgcdc never drops a slot in use and retries once it is free",
            describe(s)
        )));
    }
    Ok(Start::Snapshot {
        drop_existing: true,
    })
}

/// Whether the slot claim proves `s` is the slot pgcdc created for `conn`.
fn owned(conn: &ConnectorConfig, claim: Option<&SlotClaim>, s: &SlotInfo) -> bool {
    claim.is_some_and(|c| {
        c.slot == conn.slot_name()
            && c.created_lsn
                .parse::<Lsn>()
                .is_ok_and(|created| s.confirmed_flush.is_none_or(|f| f >= created))
    })
}

/// Refuses a checkpoint written against another database cluster, and a promotion whose
/// new primary lacks the slot (unless `snapshot.mode: when_needed` may re-read the tables).
/// A switched timeline with the slot present goes on: the slot-behind-checkpoint check
/// then guards the position.
pub fn check_identity(
    conn: &ConnectorConfig,
    ck: Option<&Checkpoint>,
    sys: &SystemId,
    slot_exists: bool,
    offsets_topic: &str,
) -> Result<()> {
    let Some(ck) = ck else { return Ok(()) };
    let server = format!("{}:{}", conn.postgres.host, conn.postgres.port);
    let tombstone = format!(
        "to start this connector afresh on this cluster, produce a tombstone (key {:?}, null value) to {offsets_topic}",
        conn.name
    );
    if let Some(id) = ck.system_id.as_deref() {
        if id != sys.systemid {
            return Err(Error::permanent(Code::Checkpoint, format!(
                "connector {}: PostgreSQL {server} is database system {} (timeline {}) but the checkpoint in \
                 {offsets_topic} (at {}) was written reading database system {id} (timeline {}): this is another \
                 cluster (a restore, or postgres.host points elsewhere), and its WAL positions mean nothing here. \
                 Point postgres.host at the cluster the checkpoint came from; {tombstone}",
                conn.name,
                sys.systemid,
                sys.timeline,
                ck.lsn,
                ck.timeline.map_or_else(|| "?".to_owned(), |t| t.to_string()),
            )));
        }
    }
    let Some(tli) = ck.timeline else {
        return Ok(());
    };
    if tli == sys.timeline {
        return Ok(());
    }
    if !slot_exists
        && conn.snapshot.mode != SnapshotMode::WhenNeeded
        && conn.on_slot_lost != OnSlotLost::Resnapshot
    {
        return Err(Error::permanent(Code::Slot, format!(
            "connector {}: PostgreSQL {server} was promoted (timeline {tli} -> {}) and replication slot {} does not \
             exist on it, so the changes after the checkpoint at {} cannot be read. To re-read every table, set \
             snapshot.mode: when_needed; before the next failover make the slot a failover slot (slot_failover: true, \
             PostgreSQL 17+ with sync_replication_slots = on on the standby); {tombstone}",
            conn.name,
            sys.timeline,
            conn.slot_name(),
            ck.lsn,
        )));
    }
    tracing::info!(connector = %conn.name, from = tli, to = sys.timeline, "timeline switched since the checkpoint (a promotion); resuming from the slot");
    Ok(())
}

/// `plugin pgoutput, database shop, active pid 4242, confirmed 0/16B3748`.
fn describe(s: &SlotInfo) -> String {
    format!(
        "plugin {}, database {}, {}, confirmed {}",
        s.plugin.as_deref().unwrap_or("?"),
        s.database.as_deref().unwrap_or("?"),
        match (s.active, s.active_pid) {
            (true, Some(pid)) => format!("active pid {pid}"),
            (true, None) => "active".to_owned(),
            (false, _) => "inactive".to_owned(),
        },
        s.confirmed_flush
            .map_or_else(|| "none".to_owned(), |l| l.to_string())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(mode: &str) -> ConnectorConfig {
        serde_yaml_ng::from_str(&format!(
            "name: shop\npostgres: {{host: h, user: u, dbname: d}}\ntopic_prefix: p\nsnapshot: {{mode: {mode}}}\n"
        ))
        .unwrap()
    }

    fn slot(active: bool, at: &str) -> SlotInfo {
        SlotInfo {
            plugin: Some("pgoutput".into()),
            database: Some("d".into()),
            confirmed_flush: Some(at.parse().unwrap()),
            active,
            active_pid: active.then_some(4242),
            failover: Some(false),
            restart_lsn: Some(at.parse().unwrap()),
            wal_status: Some("reserved".into()),
            invalidation_reason: None,
        }
    }

    fn claim(at: &str) -> SlotClaim {
        SlotClaim {
            connector: "shop".into(),
            slot: "pgcdc_shop".into(),
            created_lsn: at.into(),
        }
    }

    fn ck(at: &str) -> Checkpoint {
        Checkpoint {
            version: 1,
            connector: "shop".into(),
            lsn: at.into(),
            commit_lsn: None,
            end_lsn: None,
            xid: None,
            commit_ts_us: None,
            snapshot: None,
            system_id: Some("7000000000000000001".into()),
            timeline: Some(1),
            takeover: None,
        }
    }

    fn sys(id: &str, timeline: u32) -> SystemId {
        SystemId {
            systemid: id.into(),
            timeline,
            xlogpos: Lsn::ZERO,
            dbname: None,
        }
    }

    #[test]
    fn another_cluster_is_refused_a_promotion_needs_the_slot() {
        let c = ck("0/5000");
        let here = "7000000000000000001";
        // Same cluster, same timeline; and a record without identity (older pgcdc).
        assert!(check_identity(&conn("initial"), Some(&c), &sys(here, 1), true, "o").is_ok());
        let old = Checkpoint {
            system_id: None,
            timeline: None,
            ..c.clone()
        };
        assert!(check_identity(&conn("initial"), Some(&old), &sys("9", 3), false, "o").is_ok());
        assert!(check_identity(&conn("initial"), None, &sys("9", 3), false, "o").is_ok());

        let e =
            check_identity(&conn("initial"), Some(&c), &sys("7999", 1), true, "offs").unwrap_err();
        let m = e.to_string();
        assert!(!e.is_transient(), "{m}");
        assert!(
            m.contains("database system 7999 (timeline 1)")
                && m.contains(&format!("database system {here} (timeline 1)"))
                && m.contains("h:5432")
                && m.contains("tombstone (key \"shop\", null value) to offs"),
            "{m}"
        );

        // Promoted: goes on with the slot, stops without it unless when_needed re-reads.
        assert!(check_identity(&conn("initial"), Some(&c), &sys(here, 2), true, "o").is_ok());
        let e = check_identity(&conn("initial"), Some(&c), &sys(here, 2), false, "o").unwrap_err();
        let m = e.to_string();
        assert!(
            m.contains("timeline 1 -> 2")
                && m.contains("pgcdc_shop does not exist")
                && m.contains("snapshot.mode: when_needed"),
            "{m}"
        );
        assert!(check_identity(&conn("when_needed"), Some(&c), &sys(here, 2), false, "o").is_ok());
    }

    #[test]
    fn a_slot_ahead_of_the_checkpoint_stops_unless_a_policy_re_reads() {
        let c = ck("0/5000");
        let ahead = slot(false, "0/9000");
        for mode in ["initial", "never"] {
            let e = plan_start(&conn(mode), Some(&c), None, Some(&ahead)).unwrap_err();
            let m = e.to_string();
            assert!(!e.is_transient(), "{m}");
            assert!(
                m.contains("pgcdc_shop is at 0/9000")
                    && m.contains("checkpoint of connector shop is at 0/5000")
                    && m.contains("on_slot_lost: resnapshot"),
                "{mode}: {m}"
            );
        }
        // At or behind the checkpoint: resume (PostgreSQL skips what was delivered).
        for at in ["0/5000", "0/4000"] {
            assert!(matches!(
                plan_start(&conn("initial"), Some(&c), None, Some(&slot(false, at))),
                Ok(Start::Resume)
            ));
        }
        // initial_only reads no slot; when_needed would take a new snapshot, but not by
        // dropping a slot pgcdc has no record of creating.
        assert!(matches!(
            plan_start(&conn("initial_only"), Some(&c), None, Some(&ahead)),
            Ok(Start::Resume)
        ));
        let m = plan_start(&conn("when_needed"), Some(&c), None, Some(&ahead))
            .unwrap_err()
            .to_string();
        assert!(m.contains("no record of creating it"), "{m}");
    }

    #[test]
    fn another_consumers_slot_is_never_dropped() {
        for mode in ["initial", "when_needed"] {
            for active in [true, false] {
                let e =
                    plan_start(&conn(mode), None, None, Some(&slot(active, "0/5000"))).unwrap_err();
                let m = e.to_string();
                assert!(!e.is_transient(), "{m}");
                assert!(
                    m.contains("pgcdc_shop")
                        && m.contains("snapshot.mode: never")
                        && m.contains("pg_drop_replication_slot('pgcdc_shop')")
                        && m.contains("confirmed 0/5000"),
                    "{m}"
                );
                assert_eq!(active, m.contains("active pid 4242"), "{m}");
            }
        }
        // A claim for another slot name proves nothing.
        let other = SlotClaim {
            slot: "elsewhere".into(),
            ..claim("0/1000")
        };
        assert!(plan_start(
            &conn("initial"),
            None,
            Some(&other),
            Some(&slot(false, "0/5000"))
        )
        .is_err());
    }

    #[test]
    fn pgcdcs_own_idle_slot_is_recreated_a_busy_one_waited_for() {
        let c = claim("0/1000");
        assert_eq!(
            plan_start(
                &conn("initial"),
                None,
                Some(&c),
                Some(&slot(false, "0/1000"))
            )
            .unwrap(),
            Start::Snapshot {
                drop_existing: true
            }
        );
        let e = plan_start(
            &conn("initial"),
            None,
            Some(&c),
            Some(&slot(true, "0/1000")),
        )
        .unwrap_err();
        assert!(e.is_transient(), "{e}");
        // A slot behind its claim's creation point is not the one pgcdc created.
        assert!(plan_start(
            &conn("initial"),
            None,
            Some(&claim("0/9000")),
            Some(&slot(false, "0/1000"))
        )
        .is_err());
    }

    #[test]
    fn a_lost_or_missing_slot_stops_unless_when_needed_re_reads() {
        let lost = SlotInfo {
            wal_status: Some("lost".into()),
            invalidation_reason: Some("wal_removed".into()),
            ..slot(false, "0/5000")
        };
        for mode in ["initial", "never"] {
            let e = plan_start(
                &conn(mode),
                Some(&ck("0/5000")),
                Some(&claim("0/1000")),
                Some(&lost),
            )
            .unwrap_err();
            let m = e.to_string();
            assert!(!e.is_transient(), "{m}");
            assert!(
                m.contains("pgcdc_shop can no longer be read")
                    && m.contains("wal_status lost, invalidation_reason wal_removed")
                    && m.contains("restart_lsn 0/5000")
                    && m.contains("checkpoint of connector shop is at 0/5000")
                    && m.contains("snapshot.mode: when_needed"),
                "{m}"
            );
            let e = plan_start(&conn(mode), Some(&ck("0/5000")), None, None).unwrap_err();
            let m = e.to_string();
            assert!(
                m.contains("pgcdc_shop does not exist")
                    && m.contains("is at 0/5000")
                    && m.contains("snapshot.mode: when_needed"),
                "{m}"
            );
        }
        assert_eq!(
            plan_start(
                &conn("when_needed"),
                Some(&ck("0/5000")),
                Some(&claim("0/1000")),
                Some(&lost)
            )
            .unwrap(),
            Start::Snapshot {
                drop_existing: true
            }
        );
        assert_eq!(
            plan_start(&conn("when_needed"), Some(&ck("0/5000")), None, None).unwrap(),
            Start::Snapshot {
                drop_existing: false
            }
        );
    }

    #[test]
    fn resnapshot_recreates_a_lost_slot_only_when_it_is_pgcdcs() {
        let c: ConnectorConfig = serde_yaml_ng::from_str(
            "name: shop\npostgres: {host: h, user: u, dbname: d}\ntopic_prefix: p\non_slot_lost: resnapshot\n",
        )
        .unwrap();
        let lost = SlotInfo {
            wal_status: Some("lost".into()),
            ..slot(false, "0/5000")
        };
        let ck = ck("0/5000");
        match plan_start(&c, Some(&ck), Some(&claim("0/1000")), Some(&lost)).unwrap() {
            Start::Resnapshot {
                drop_existing: true,
                lost,
            } => assert!(
                lost.contains("invalidated") && lost.contains("0/5000"),
                "{lost}"
            ),
            other => panic!("{other:?}"),
        }
        // Not provably pgcdc's: never dropped.
        let e = plan_start(&c, Some(&ck), None, Some(&lost)).unwrap_err();
        assert!(e.to_string().contains("pg_drop_replication_slot"), "{e}");
        // Gone, or ahead of the checkpoint (a crash right after recreating it): re-read
        // from the slot as it is.
        for s in [None, Some(slot(false, "0/9000"))] {
            assert!(matches!(
                plan_start(&c, Some(&ck), Some(&claim("0/1000")), s.as_ref()).unwrap(),
                Start::Resnapshot {
                    drop_existing: false,
                    ..
                }
            ));
        }
        // A healthy slot resumes.
        assert_eq!(
            plan_start(
                &c,
                Some(&ck),
                Some(&claim("0/1000")),
                Some(&slot(false, "0/5000"))
            )
            .unwrap(),
            Start::Resume
        );
    }

    #[test]
    fn trusted_positions_resume_and_no_slot_snapshots() {
        let s = slot(false, "0/5000");
        assert_eq!(
            plan_start(&conn("never"), None, None, Some(&s)).unwrap(),
            Start::Resume
        );
        assert_eq!(
            plan_start(&conn("initial"), Some(&ck("0/5000")), None, Some(&s)).unwrap(),
            Start::Resume
        );
        assert_eq!(
            plan_start(&conn("initial"), None, None, None).unwrap(),
            Start::Snapshot {
                drop_existing: false
            }
        );
        // when_needed with a gap needs a snapshot, and the slot is not provably ours.
        assert!(plan_start(&conn("when_needed"), Some(&ck("0/1000")), None, Some(&s)).is_err());
        assert_eq!(
            plan_start(
                &conn("when_needed"),
                Some(&ck("0/1000")),
                Some(&claim("0/1000")),
                Some(&s)
            )
            .unwrap(),
            Start::Snapshot {
                drop_existing: true
            }
        );
    }
}
