//! Where a Debezium PostgreSQL connector stopped, read from Kafka Connect's offsets topic,
//! and the seam pgcdc continues its stream at (`pgcdc takeover debezium`).
//!
//! Connect stores a source task's offsets as schemaless JSON: the key
//! `["<connector name>",{"server":"<topic.prefix>"}]`, the value a map Debezium's
//! `PostgresOffsetContext` writes, LSNs as integers:
//! `{"lsn_proc":…,"lsn_commit":…,"lsn":…,"txId":…,"ts_usec":…,"messageType":"INSERT"}`.
//! `lsn_commit` is the end of the last COMMIT Debezium processed, `lsn_proc` the last
//! message it processed (a change of the next transaction when it stopped inside one).
//! Connect stores only offsets of records Kafka acknowledged, so everything up to them is in
//! Kafka; Debezium's slot is flushed to at most `lsn_commit`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Lsn;

/// The position Debezium's newest offsets record names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DebeziumOffset {
    pub lsn: Option<Lsn>,
    pub lsn_proc: Option<Lsn>,
    pub lsn_commit: Option<Lsn>,
    pub tx_id: Option<i64>,
    pub ts_usec: Option<i64>,
    pub message_type: Option<String>,
    /// `snapshot` (`INITIAL`, `BLOCKING`, `INCREMENTAL`; `true` in 3.0.0-3.0.1), with
    /// `last_snapshot_record` and `snapshot_completed`: present only around a snapshot.
    pub snapshot: Option<String>,
    pub last_snapshot_record: Option<bool>,
    pub snapshot_completed: Option<bool>,
    /// An `incremental_snapshot_*` key: an incremental snapshot was running.
    pub incremental_snapshot: bool,
}

impl DebeziumOffset {
    /// Parses a Connect offsets value. Unknown keys are ignored (Debezium adds some, such as
    /// `xmin` or `transaction_id`); a key of the wrong type is an error naming it.
    pub fn parse(value: &[u8]) -> Result<Self, String> {
        let v: Value = serde_json::from_slice(value).map_err(|e| format!("not JSON ({e})"))?;
        let Value::Object(m) = v else {
            return Err("not a JSON object".to_owned());
        };
        let int = |k: &str| -> Result<Option<i64>, String> {
            match m.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => v
                    .as_i64()
                    .map(Some)
                    .ok_or_else(|| format!("{k} is not an integer ({v})")),
            }
        };
        let lsn = |k: &str| -> Result<Option<Lsn>, String> {
            match int(k)? {
                Some(n) if n < 0 => Err(format!("{k} is negative ({n})")),
                n => Ok(n.map(|n| Lsn(n as u64))),
            }
        };
        let flag = |k: &str| match m.get(k) {
            Some(Value::Bool(b)) => Some(*b),
            Some(Value::String(s)) => Some(s == "true"),
            _ => None,
        };
        Ok(DebeziumOffset {
            lsn: lsn("lsn")?,
            lsn_proc: lsn("lsn_proc")?,
            lsn_commit: lsn("lsn_commit")?,
            tx_id: int("txId")?,
            ts_usec: int("ts_usec")?,
            message_type: m
                .get("messageType")
                .and_then(Value::as_str)
                .map(str::to_owned),
            snapshot: match m.get("snapshot") {
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Bool(true)) => Some("true".to_owned()),
                _ => None,
            },
            last_snapshot_record: flag("last_snapshot_record"),
            snapshot_completed: flag("snapshot_completed"),
            incremental_snapshot: m.keys().any(|k| k.starts_with("incremental_snapshot_")),
        })
    }

    /// An explicit position (`--lsn`, for Debezium Server or an embedded engine): every
    /// transaction that committed before it is in Kafka.
    pub fn at(lsn: Lsn) -> Self {
        DebeziumOffset {
            lsn: Some(lsn),
            lsn_commit: Some(lsn),
            lsn_proc: Some(lsn),
            message_type: Some("COMMIT".to_owned()),
            ..Default::default()
        }
    }

    /// Why the offset is not a streaming position to continue from, if it is not: a
    /// snapshot still in progress (its rows are not all in Kafka), or no LSN at all.
    pub fn unsafe_reason(&self) -> Option<String> {
        if let Some(kind) = &self.snapshot {
            let done = self.snapshot_completed.unwrap_or(false)
                || (self.snapshot_completed.is_none() && self.last_snapshot_record == Some(true));
            if !done {
                return Some(format!(
                    "Debezium's offset says its {} snapshot was in progress (snapshot_completed {}): \
                     its rows are not all in Kafka; let Debezium finish the snapshot and stream, then take over",
                    if kind == "true" { "initial" } else { kind.as_str() },
                    self.snapshot_completed.map_or("absent".to_owned(), |b| b.to_string())
                ));
            }
        }
        if self.incremental_snapshot {
            return Some(
                "Debezium's offset holds a running incremental snapshot (incremental_snapshot_* keys): \
                 pgcdc cannot go on with it; let it finish (or stop it with a stop-snapshot signal), then take over"
                    .to_owned(),
            );
        }
        if self.commit().is_none() {
            return Some(
                "Debezium's offset holds no lsn, lsn_proc or lsn_commit: it is not a PostgreSQL connector's streaming \
                 position; give Debezium's last committed LSN instead (--lsn)"
                    .to_owned(),
            );
        }
        None
    }

    /// Every transaction that committed before this position is in Kafka: `lsn_commit`, or
    /// `lsn_proc` without it, or `lsn` right after a snapshot (Debezium's own order).
    pub fn commit(&self) -> Option<Lsn> {
        self.lsn_commit.or(self.lsn_proc).or(self.lsn)
    }

    /// The seam pgcdc continues at.
    pub fn seam(&self, connector: &str) -> Option<Seam> {
        let commit = self.commit()?;
        // Inside a transaction: lsn_proc is a change after the last COMMIT (a COMMIT sets
        // lsn_proc = lsn_commit, and an offset right after a snapshot has no lsn_proc).
        let within = match (self.lsn_proc, self.message_type.as_deref()) {
            (Some(p), t) if p > commit && t != Some("COMMIT") => Some(p.to_string()),
            _ => None,
        };
        Some(Seam {
            from: "debezium".to_owned(),
            connector: connector.to_owned(),
            commit: commit.to_string(),
            xid: within
                .as_ref()
                .and(self.tx_id)
                .and_then(|x| u32::try_from(x).ok()),
            within,
        })
    }
}

/// Kafka Connect's offsets key for a Debezium PostgreSQL connector: its name, when the
/// key is `["<name>",{"server":"<topic_prefix>"}]`.
pub fn connector_of(key: &[u8], topic_prefix: &str) -> Option<String> {
    let v: Value = serde_json::from_slice(key).ok()?;
    let [name, partition] = v.as_array()?.as_slice() else {
        return None;
    };
    let p = partition.as_object()?;
    (p.len() == 1 && p.get("server")?.as_str()? == topic_prefix)
        .then(|| name.as_str().map(str::to_owned))
        .flatten()
}

/// Where pgcdc continues a stream another tool wrote, kept in the checkpoint until pgcdc's
/// own first commit replaces it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seam {
    /// `debezium`.
    pub from: String,
    /// The Debezium connector's name.
    pub connector: String,
    /// Transactions that committed before this LSN were delivered: skipped.
    pub commit: String,
    /// The transaction after `commit` was delivered in part: its changes before this LSN
    /// (Debezium's `lsn_proc`) are skipped. The change at it is sent again: a multi-row
    /// insert puts several rows at one LSN, and the offset does not say how many of them
    /// Debezium sent, so pgcdc repeats them rather than lose one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within: Option<String>,
    /// That transaction's id (Debezium's `txId`): `within` applies to it alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xid: Option<u32>,
}

impl Seam {
    /// The LSN changes of the partly delivered transaction are skipped before.
    pub fn within(&self) -> Option<Lsn> {
        self.within.as_deref().and_then(|l| l.parse().ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_streaming_offset_inside_a_transaction_skips_its_delivered_changes() {
        let o = DebeziumOffset::parse(
            br#"{"transaction_id":null,"lsn_proc":24023128,"messageType":"UPDATE","lsn":24023128,"txId":771,"ts_usec":1719000000000000,"lsn_commit":24023032}"#,
        )
        .unwrap();
        assert_eq!(o.lsn_commit, Some(Lsn(24023032)));
        assert_eq!(o.tx_id, Some(771));
        assert_eq!(o.unsafe_reason(), None);
        let s = o.seam("inventory").unwrap();
        assert_eq!(s.commit, Lsn(24023032).to_string());
        assert_eq!(s.within(), Some(Lsn(24023128)));
        assert_eq!(s.xid, Some(771));
    }

    #[test]
    fn an_offset_at_a_commit_has_no_partial_transaction() {
        let o = DebeziumOffset::parse(
            br#"{"lsn_proc":500,"lsn_commit":500,"lsn":500,"messageType":"COMMIT"}"#,
        )
        .unwrap();
        assert_eq!(o.seam("c").unwrap().within, None);
        // A COMMIT type with lsn_proc past lsn_commit still names no partial transaction.
        let o =
            DebeziumOffset::parse(br#"{"lsn_proc":600,"lsn_commit":500,"messageType":"COMMIT"}"#)
                .unwrap();
        assert_eq!(o.seam("c").unwrap().within, None);
    }

    #[test]
    fn the_offset_after_a_completed_snapshot_continues_from_its_lsn() {
        let o = DebeziumOffset::parse(
            br#"{"last_snapshot_record":true,"lsn":1000,"txId":5,"ts_usec":1,"snapshot":"INITIAL","snapshot_completed":true}"#,
        )
        .unwrap();
        assert_eq!(o.unsafe_reason(), None);
        assert_eq!(o.commit(), Some(Lsn(1000)));
        assert_eq!(o.seam("c").unwrap().within, None);
    }

    #[test]
    fn a_snapshot_in_progress_is_refused() {
        for v in [
            &br#"{"lsn":1000,"snapshot":"INITIAL","last_snapshot_record":false,"snapshot_completed":false}"#[..],
            br#"{"lsn":1000,"snapshot":true,"last_snapshot_record":false}"#,
        ] {
            let why = DebeziumOffset::parse(v).unwrap().unsafe_reason().unwrap();
            assert!(why.contains("snapshot was in progress"), "{why}");
        }
        let why = DebeziumOffset::parse(
            br#"{"lsn":1,"lsn_proc":1,"incremental_snapshot_collections":"[]"}"#,
        )
        .unwrap()
        .unsafe_reason()
        .unwrap();
        assert!(why.contains("incremental snapshot"), "{why}");
    }

    #[test]
    fn wrong_types_are_named() {
        let e = DebeziumOffset::parse(br#"{"lsn":"0/16B3748"}"#).unwrap_err();
        assert!(e.contains("lsn is not an integer"), "{e}");
        assert!(DebeziumOffset::parse(b"[1]").is_err());
    }

    #[test]
    fn the_key_names_the_connector_of_a_topic_prefix() {
        let k = br#"["inventory-connector",{"server":"dbserver1"}]"#;
        assert_eq!(
            connector_of(k, "dbserver1").as_deref(),
            Some("inventory-connector")
        );
        assert_eq!(connector_of(k, "dbserver2"), None);
        assert_eq!(
            connector_of(br#"["x",{"server":"dbserver1","db":"a"}]"#, "dbserver1"),
            None
        );
        assert_eq!(connector_of(b"not json", "dbserver1"), None);
    }
}
