//! A row change between decoding and encoding: what one pgoutput Insert, Update, Delete or
//! Truncate becomes as Debezium events, as plain data (no I/O), so that the rules are
//! functions of a change and testable without a server:
//!
//! - an insert is a create (`c`) with the new row;
//! - an update is `u` with the old image (full, or key-only under REPLICA IDENTITY DEFAULT)
//!   and the new row; one that changes the primary key is, as in Debezium, a delete of the
//!   old key, its tombstone, and a create of the new key;
//! - a delete is `d` with the old image, then its tombstone;
//! - a truncate is `t`.
//!
//! Tombstones follow the connector's `tombstones` setting. Images of the old row are
//! converted here (their [`Marks`] name what a key-only image lacked); new rows stay
//! pgoutput text, converted at delivery once unchanged TOAST values are settled, when
//! [`Event::encode`] makes the key and the Debezium envelope (unit-tested here by reading the
//! bytes back with the registered schema).

use std::collections::HashMap;
use std::sync::Arc;

use apache_avro::types::Value;

use crate::avro::envelope::{
    ChangeContext, Encoded, EventKey, Op, Origin, ReplOrigin, SnapshotMark, TableCodec,
};
use crate::avro::policy::Marks;
use crate::config::SkippedOp;
use crate::decode::Tuple;
use crate::error::Result;
use crate::Lsn;

/// The PostgreSQL transaction a change belongs to, from its BEGIN on: what every event of
/// it carries in `source` and `transaction` (Debezium's `total_order` counts the
/// transaction's events, `data_collection_order` those of one table).
#[derive(Debug)]
pub struct Transaction {
    pub xid: u32,
    /// The LSN of its commit record (pgoutput's `final_lsn`).
    pub commit_lsn: Lsn,
    /// Commit time, Unix microseconds.
    pub commit_ts_us: i64,
    /// Already delivered before the checkpoint: decoded again after a restart, not sent.
    pub skip: bool,
    /// Its changes before this LSN were delivered by the tool pgcdc took over from (the
    /// transaction it stopped inside): not sent.
    pub skip_changes_before: Lsn,
    /// The replication origin PostgreSQL named for it, if any.
    pub repl_origin: Option<Arc<ReplOrigin>>,
    total: u64,
    per_table: HashMap<u32, u64>,
}

impl Transaction {
    pub fn begin(xid: u32, commit_lsn: Lsn, commit_ts_us: i64, skip: bool) -> Self {
        Transaction {
            xid,
            commit_lsn,
            commit_ts_us,
            skip,
            skip_changes_before: Lsn::ZERO,
            repl_origin: None,
            total: 0,
            per_table: HashMap::new(),
        }
    }

    /// The context of the transaction's next event, of relation `rel` (0 for events of no
    /// table) at `lsn`; `last_commit` is the previous transaction's commit.
    pub fn next_context(&mut self, rel: u32, lsn: Lsn, last_commit: Lsn) -> ChangeContext {
        self.total += 1;
        let per = self.per_table.entry(rel).or_insert(0);
        *per += 1;
        ChangeContext {
            snapshot: SnapshotMark::False,
            xid: self.xid,
            commit_lsn: self.commit_lsn,
            commit_ts_us: self.commit_ts_us,
            lsn,
            last_commit_lsn: last_commit,
            total_order: self.total,
            table_order: *per,
            repl_origin: self.repl_origin.clone(),
            source: None,
        }
    }
}

/// Whether `skipped_operations` drops events of `op`: snapshot reads are never skipped, and
/// a skipped delete takes its tombstone with it.
pub fn skipped(op: Op, skipped_operations: &[SkippedOp]) -> bool {
    let as_skipped = match op {
        Op::Read => return false,
        Op::Create => SkippedOp::Create,
        Op::Update => SkippedOp::Update,
        Op::Delete => SkippedOp::Delete,
        Op::Truncate => SkippedOp::Truncate,
    };
    skipped_operations.contains(&as_skipped)
}

/// The context of an event outside any transaction (a non-transactional logical message).
pub fn outside_transaction(lsn: Lsn, last_commit: Lsn) -> ChangeContext {
    ChangeContext {
        snapshot: SnapshotMark::False,
        xid: 0,
        commit_lsn: Lsn::ZERO,
        commit_ts_us: 0,
        lsn,
        last_commit_lsn: last_commit,
        total_order: 0,
        table_order: 0,
        repl_origin: None,
        source: None,
    }
}

/// One event a row change becomes, in the order they are sent.
#[derive(Debug)]
pub enum Change {
    Event(Event),
    /// The null-valued record after a delete, for log compaction.
    Tombstone {
        key: Value,
    },
}

#[derive(Debug)]
pub struct Event {
    pub op: Op,
    /// The key, converted while the change was decoded (a delete's, a key change's), or
    /// None: the key of `after`, written from its text when the event is encoded (none for
    /// a keyless table).
    pub key: Option<Value>,
    /// The old row image, converted.
    pub before: Option<Value>,
    /// The new row as pgoutput sent it (converted at delivery).
    pub after: Option<Tuple>,
    /// What the conversion of `before` marked (columns a key-only image lacked, values
    /// under a policy).
    pub marks: Marks,
    /// The second event of a primary-key change: it gets its own position in the
    /// transaction (`total_order`), as Debezium's create after the delete does.
    pub follows: bool,
}

impl Event {
    /// The event as the sink sends it: `after` converted (its marks joined to those of
    /// `before`), key and Debezium envelope in the Confluent wire format, and the headers
    /// naming the columns a policy touched.
    pub fn encode(
        self,
        codec: &TableCodec,
        origin: &Origin,
        cx: &ChangeContext,
    ) -> Result<Encoded> {
        codec.encode_event(
            self.op,
            match (self.key, &self.after) {
                (None, Some(t)) => EventKey::Row(t),
                (k, _) => EventKey::Converted(k),
            },
            self.before,
            self.after.as_ref(),
            self.marks,
            origin,
            cx,
        )
    }
}

fn event(op: Op, key: Option<Value>, before: Option<Value>, after: Option<Tuple>) -> Event {
    Event {
        op,
        key,
        before,
        after,
        marks: Marks::default(),
        follows: false,
    }
}

/// An insert: its key is the new row's, written when the event is encoded.
pub fn insert(new: Tuple) -> Vec<Change> {
    vec![Change::Event(event(Op::Create, None, None, Some(new)))]
}

/// `old` is the old image PostgreSQL sent (none when the key did not change under
/// REPLICA IDENTITY DEFAULT), `key_only` whether it holds only the identity columns.
pub fn update(
    codec: &TableCodec,
    old: Option<&Tuple>,
    key_only: bool,
    new: Tuple,
    tombstones: bool,
) -> Result<Vec<Change>> {
    // Without an old image the key did not change: the new row's is written at encoding.
    let (new_key, old_key) = match old {
        Some(o) => (codec.key(&new)?, codec.key(o)?),
        None => (None, None),
    };
    // A key-only old image gives Debezium's before: the key, other columns null (or the
    // fill of a required field), and the marks name what was missing.
    let mut marks = Marks::default();
    let before = match old {
        Some(o) => Some(codec.row(o, key_only, &mut marks)?),
        None => None,
    };
    match old_key {
        Some(ok) if Some(&ok) != new_key.as_ref() => {
            let mut del = event(Op::Delete, Some(ok.clone()), before, None);
            del.marks = marks;
            let mut out = vec![Change::Event(del)];
            if tombstones {
                out.push(Change::Tombstone { key: ok });
            }
            let mut create = event(Op::Create, new_key, None, Some(new));
            create.follows = true;
            out.push(Change::Event(create));
            Ok(out)
        }
        _ => {
            let mut ev = event(Op::Update, new_key, before, Some(new));
            ev.marks = marks;
            Ok(vec![Change::Event(ev)])
        }
    }
}

pub fn delete(
    codec: &TableCodec,
    old: &Tuple,
    key_only: bool,
    tombstones: bool,
) -> Result<Vec<Change>> {
    let key = codec.key(old)?;
    let mut marks = Marks::default();
    let before = codec.row(old, key_only, &mut marks)?;
    let mut ev = event(Op::Delete, key.clone(), Some(before), None);
    ev.marks = marks;
    let mut out = vec![Change::Event(ev)];
    if let (true, Some(k)) = (tombstones, key) {
        out.push(Change::Tombstone { key: k });
    }
    Ok(out)
}

pub fn truncate() -> Vec<Change> {
    vec![Change::Event(event(Op::Truncate, None, None, None))]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skipped_operations_never_drop_snapshot_reads() {
        let all = [
            SkippedOp::Create,
            SkippedOp::Update,
            SkippedOp::Delete,
            SkippedOp::Truncate,
        ];
        for op in [Op::Create, Op::Update, Op::Delete, Op::Truncate] {
            assert!(skipped(op, &all), "{op:?}");
            assert!(!skipped(op, &[]), "{op:?}");
        }
        assert!(!skipped(Op::Read, &all));
        assert!(!skipped(Op::Create, &[SkippedOp::Truncate]));
    }

    #[test]
    fn a_transaction_numbers_its_events_overall_and_per_table() {
        let mut t = Transaction::begin(7, Lsn(900), 1_000, false);
        let at = |t: &mut Transaction, rel, lsn| {
            let cx = t.next_context(rel, Lsn(lsn), Lsn(100));
            (
                cx.total_order,
                cx.table_order,
                cx.xid,
                cx.commit_lsn,
                cx.last_commit_lsn,
            )
        };
        assert_eq!(at(&mut t, 1, 200), (1, 1, 7, Lsn(900), Lsn(100)));
        assert_eq!(at(&mut t, 2, 300), (2, 1, 7, Lsn(900), Lsn(100)));
        assert_eq!(at(&mut t, 1, 400), (3, 2, 7, Lsn(900), Lsn(100)));
        t.repl_origin = Some(Arc::new(ReplOrigin {
            name: "o".into(),
            lsn: Lsn(5),
        }));
        assert!(t.next_context(1, Lsn(500), Lsn(100)).repl_origin.is_some());
        let out = outside_transaction(Lsn(50), Lsn(40));
        assert_eq!((out.xid, out.total_order, out.lsn), (0, 0, Lsn(50)));
    }
    use crate::avro::envelope::SnapshotMark;
    use crate::decode::{Column, Relation, TupleData};
    use crate::typemap::PgType;

    fn codec() -> std::sync::Arc<TableCodec> {
        let col = |n: &str, key: bool| Column::test(n, PgType::Int4, key);
        crate::avro::envelope::tests::codec(Relation {
            oid: 3,
            schema: "public".into(),
            table: "t".into(),
            replica_identity: b'd',
            columns: vec![col("id", true), col("v", false)],
        })
    }

    fn row(id: &str, v: Option<&str>) -> Tuple {
        let text = |s: &str| TupleData::Text(bytes::Bytes::from(s.to_owned()));
        vec![text(id), v.map_or(TupleData::Null, text)]
    }

    fn cx(snapshot: SnapshotMark) -> ChangeContext {
        ChangeContext {
            snapshot,
            xid: 742,
            commit_lsn: "0/16B3748".parse().unwrap(),
            commit_ts_us: 1_764_000_000_123_456,
            lsn: "0/16B3700".parse().unwrap(),
            last_commit_lsn: "0/16B3000".parse().unwrap(),
            total_order: 3,
            table_order: 2,
            repl_origin: None,
            source: None,
        }
    }

    const ORIGIN: fn() -> Origin = || Origin {
        name: "p".into(),
        db: "d".into(),
    };

    /// Reads back one record in the Confluent wire format with its schema.
    fn decode(bytes: &[u8], registered: &crate::avro::Registered) -> Value {
        assert_eq!(bytes[0], 0, "magic byte");
        assert_eq!(
            u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]),
            registered.id
        );
        let reader = apache_avro::reader::datum::GenericDatumReader::builder(registered.schema())
            .build()
            .unwrap();
        let mut body = &bytes[5..];
        let v = reader.read_value(&mut body).unwrap();
        assert!(body.is_empty(), "trailing bytes after the record");
        v
    }

    /// The value at `path` (`source.table`), unions unwrapped; Null for a null union.
    fn at<'v>(v: &'v Value, path: &str) -> &'v Value {
        let mut cur = v;
        for part in path.split('.') {
            while let Value::Union(_, inner) = cur {
                cur = inner;
            }
            let Value::Record(fields) = cur else {
                panic!("{path}: {cur:?} is not a record")
            };
            cur = &fields
                .iter()
                .find(|(n, _)| n == part)
                .unwrap_or_else(|| panic!("{path}: no {part}"))
                .1;
        }
        while let Value::Union(_, inner) = cur {
            cur = inner;
        }
        cur
    }

    fn encoded(
        c: &TableCodec,
        ch: Change,
        mark: SnapshotMark,
    ) -> (Value, Value, Vec<(&'static str, String)>) {
        let Change::Event(e) = ch else {
            panic!("not an event")
        };
        let enc = e.encode(c, &ORIGIN(), &cx(mark)).unwrap();
        let key = decode(enc.key.as_deref().unwrap(), c.key.as_ref().unwrap());
        (key, decode(&enc.value, &c.value), enc.headers)
    }

    #[test]
    fn an_insert_is_debeziums_create_envelope() {
        let c = codec();
        let mut out = insert(row("1", Some("7")));
        let (key, value, headers) = encoded(&c, out.remove(0), SnapshotMark::False);
        assert_eq!(at(&key, "id"), &Value::Int(1));
        assert_eq!(at(&value, "op"), &Value::String("c".into()));
        assert_eq!(at(&value, "before"), &Value::Null);
        assert_eq!(at(&value, "after.id"), &Value::Int(1));
        assert_eq!(at(&value, "after.v"), &Value::Int(7));
        for (path, want) in [
            ("source.connector", Value::String("postgresql".into())),
            ("source.name", Value::String("p".into())),
            ("source.db", Value::String("d".into())),
            ("source.schema", Value::String("public".into())),
            ("source.table", Value::String("t".into())),
            ("source.snapshot", Value::String("false".into())),
            ("source.txId", Value::Long(742)),
            ("source.lsn", Value::Long(0x16B3700)),
            ("source.commit_lsn", Value::Long(0x16B3748)),
            ("source.ts_ms", Value::Long(1_764_000_000_123)),
            ("source.ts_us", Value::Long(1_764_000_000_123_456)),
            ("source.origin", Value::Null),
            (
                "source.sequence",
                Value::String(format!("[\"{}\",\"{}\"]", 0x16B3000, 0x16B3700)),
            ),
            (
                "transaction.id",
                Value::String(format!("742:{}", 0x16B3748)),
            ),
            ("transaction.total_order", Value::Long(3)),
            ("transaction.data_collection_order", Value::Long(2)),
        ] {
            assert_eq!(at(&value, path), &want, "{path}");
        }
        let Value::Long(ts) = at(&value, "ts_ms") else {
            panic!()
        };
        assert!(
            *ts > 1_700_000_000_000,
            "ts_ms is the time of processing: {ts}"
        );
        assert!(headers.is_empty(), "{headers:?}");
    }

    #[test]
    fn extreme_positions_and_xids_are_spelled_in_full() {
        let c = codec();
        for (xid, last, lsn, commit) in [
            (0, 0, 0, 0),
            (u32::MAX, u64::MAX, u64::MAX - 1, u64::MAX),
            (9, 10, 99, 100),
        ] {
            let mut out = insert(row("1", Some("7")));
            let Change::Event(e) = out.remove(0) else {
                panic!("not an event")
            };
            let mut cx = cx(SnapshotMark::False);
            (cx.xid, cx.last_commit_lsn.0, cx.lsn.0, cx.commit_lsn.0) = (xid, last, lsn, commit);
            // Debug builds also assert these bytes against apache-avro's for the Value.
            let enc = e.encode(&c, &ORIGIN(), &cx).unwrap();
            let value = decode(&enc.value, &c.value);
            assert_eq!(
                at(&value, "source.sequence"),
                &Value::String(format!("[\"{last}\",\"{lsn}\"]"))
            );
            assert_eq!(
                at(&value, "transaction.id"),
                &Value::String(format!("{xid}:{commit}"))
            );
        }
    }

    #[test]
    fn a_key_change_encodes_as_delete_with_a_marked_key_only_before_then_create() {
        let c = codec();
        let out = update(&c, Some(&row("1", None)), true, row("2", Some("7")), true).unwrap();
        let mut it = out.into_iter();
        let (key, del, headers) = encoded(&c, it.next().unwrap(), SnapshotMark::False);
        assert_eq!(at(&key, "id"), &Value::Int(1));
        assert_eq!(at(&del, "op"), &Value::String("d".into()));
        assert_eq!(at(&del, "before.id"), &Value::Int(1));
        assert_eq!(
            at(&del, "before.v"),
            &Value::Null,
            "a key-only image lacks v"
        );
        assert_eq!(at(&del, "after"), &Value::Null);
        assert_eq!(
            headers,
            vec![(
                crate::avro::policy::HEADER_UNAVAILABLE,
                r#"["v"]"#.to_owned()
            )],
            "the header names what the old image lacked"
        );
        assert!(matches!(
            it.next(),
            Some(Change::Tombstone {
                key: Value::Record(_)
            })
        ));
        let (key, create, headers) = encoded(&c, it.next().unwrap(), SnapshotMark::False);
        assert_eq!(at(&key, "id"), &Value::Int(2));
        assert_eq!(at(&create, "op"), &Value::String("c".into()));
        assert_eq!(at(&create, "after.v"), &Value::Int(7));
        assert!(headers.is_empty());
    }

    #[test]
    fn a_snapshot_row_is_a_read_in_no_transaction() {
        let c = codec();
        let mut out = insert(row("4", None));
        let Change::Event(mut e) = out.remove(0) else {
            panic!()
        };
        e.op = Op::Read;
        let enc = e
            .encode(&c, &ORIGIN(), &cx(SnapshotMark::Incremental))
            .unwrap();
        let value = decode(&enc.value, &c.value);
        assert_eq!(at(&value, "op"), &Value::String("r".into()));
        assert_eq!(
            at(&value, "source.snapshot"),
            &Value::String("incremental".into())
        );
        assert_eq!(at(&value, "transaction"), &Value::Null);
        assert_eq!(at(&value, "after.v"), &Value::Null);
    }

    /// What a list of changes says, compactly: `c1` (op and key), `~1` (tombstone).
    fn shape(cs: &[Change]) -> Vec<String> {
        let key = |k: &Option<Value>| match k {
            Some(Value::Record(f)) => match &f[0].1 {
                Value::Int(i) => i.to_string(),
                other => format!("{other:?}"),
            },
            other => format!("{other:?}"),
        };
        cs.iter()
            .map(|c| match c {
                Change::Event(Event {
                    op,
                    key: None,
                    after: Some(t),
                    ..
                }) => match &t[0] {
                    // The key of `after`: its first column here.
                    TupleData::Text(b) => format!("{}{}", op.code(), String::from_utf8_lossy(b)),
                    other => format!("{}{other:?}", op.code()),
                },
                Change::Event(e) => format!("{}{}", e.op.code(), key(&e.key)),
                Change::Tombstone { key: k } => format!("~{}", key(&Some(k.clone()))),
            })
            .collect()
    }

    #[test]
    fn a_primary_key_change_is_a_delete_its_tombstone_and_a_create() {
        let c = codec();
        let old = row("1", None);
        let out = update(&c, Some(&old), true, row("2", Some("7")), true).unwrap();
        assert_eq!(shape(&out), ["d1", "~1", "c2"]);
        let Change::Event(del) = &out[0] else {
            panic!()
        };
        assert!(del.before.is_some() && del.after.is_none());
        assert_eq!(del.marks.missing, vec![1], "the key-only image lacked v");
        let Change::Event(create) = &out[2] else {
            panic!()
        };
        assert!(create.follows && create.before.is_none());

        let out = update(&c, Some(&old), true, row("2", Some("7")), false).unwrap();
        assert_eq!(
            shape(&out),
            ["d1", "c2"],
            "no tombstone when tombstones: false"
        );
    }

    #[test]
    fn updates_deletes_inserts_and_truncates() {
        let c = codec();
        let out = update(&c, None, false, row("1", Some("8")), true).unwrap();
        assert_eq!(shape(&out), ["u1"]);
        let full = row("1", Some("7"));
        let out = update(&c, Some(&full), false, row("1", Some("8")), true).unwrap();
        assert_eq!(
            shape(&out),
            ["u1"],
            "same key: an update with its before image"
        );
        let Change::Event(u) = &out[0] else { panic!() };
        assert!(u.before.is_some() && u.marks.missing.is_empty());
        assert_eq!(
            shape(&delete(&c, &full, false, true).unwrap()),
            ["d1", "~1"]
        );
        assert_eq!(shape(&delete(&c, &full, false, false).unwrap()), ["d1"]);
        assert_eq!(shape(&insert(row("5", None))), ["c5"]);
        assert_eq!(shape(&truncate()), ["tNone"]);
    }
}
