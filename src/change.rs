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
//! pgoutput text, converted at delivery once unchanged TOAST values are settled.

use apache_avro::types::Value;

use crate::avro::envelope::{Op, TableCodec};
use crate::avro::policy::Marks;
use crate::decode::Tuple;
use crate::error::Result;

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

pub fn insert(codec: &TableCodec, new: Tuple) -> Result<Vec<Change>> {
    let key = codec.key(&new)?;
    Ok(vec![Change::Event(event(Op::Create, key, None, Some(new)))])
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
    let new_key = codec.key(&new)?;
    let old_key = match old {
        Some(o) => codec.key(o)?,
        None => None,
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
        assert_eq!(shape(&insert(&c, row("5", None)).unwrap()), ["c5"]);
        assert_eq!(shape(&truncate()), ["tNone"]);
    }
}
