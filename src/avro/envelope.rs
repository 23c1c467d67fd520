//! Row changes → Debezium envelopes: `before`, `after`, `source`, `transaction`, `op`,
//! `ts_ms` (`ts_us`, `ts_ns`), keyed by the table's key columns.

use std::sync::Arc;

use apache_avro::schema::NamespaceRef;
use apache_avro::types::Value;
use apache_avro::Schema;

use crate::avro::columns::Rule;
use crate::avro::policy::{Marks, ValuePolicy};
use crate::avro::schema::{none, some};
use crate::avro::{encode, Registered};
use crate::config::MAX_RECORD_BYTES;
use crate::decode::{Relation, Tuple};
use crate::error::{Code, Error, Result};
use crate::Lsn;

/// Debezium's operation codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Read,
    Create,
    Update,
    Delete,
    Truncate,
}

impl Op {
    pub fn code(self) -> &'static str {
        match self {
            Op::Read => "r",
            Op::Create => "c",
            Op::Update => "u",
            Op::Delete => "d",
            Op::Truncate => "t",
        }
    }
}

/// Everything about a table needed to encode its events.
pub struct TableCodec {
    pub rel: Arc<Relation>,
    pub topic: Arc<str>,
    pub field_names: Vec<String>,
    /// Each column's field in the `Value` record (required or optional, default).
    pub fields: Vec<crate::avro::fields::FieldSpec>,
    /// Each column's rule (`columns.<table>`): sent, left out, masked, hashed, truncated.
    pub rules: Vec<Rule>,
    pub key: Option<Registered>,
    pub value: Registered,
    pub policy: Arc<ValuePolicy>,
}

/// One encoded event: key and value in the Confluent wire format, and the headers that
/// name the columns a policy changed.
pub struct Encoded {
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: Vec<(&'static str, String)>,
}

/// An event's key: converted while the change was decoded (a key change compares old and
/// new), or written from the row it belongs to ([`TableCodec::encode_key`]).
pub enum EventKey<'a> {
    Converted(Option<Value>),
    Row(&'a Tuple),
}

/// What every event of a connector says about where it comes from.
pub struct Origin {
    /// Debezium's logical server name: the topic prefix.
    pub name: String,
    pub db: String,
}

/// Debezium's `source.snapshot`: where a row sits in a snapshot, or `False` for a change
/// from the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SnapshotMark {
    #[default]
    False,
    True,
    First,
    FirstInDataCollection,
    LastInDataCollection,
    Last,
    Incremental,
}

impl SnapshotMark {
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotMark::False => "false",
            SnapshotMark::True => "true",
            SnapshotMark::First => "first",
            SnapshotMark::FirstInDataCollection => "first_in_data_collection",
            SnapshotMark::LastInDataCollection => "last_in_data_collection",
            SnapshotMark::Last => "last",
            SnapshotMark::Incremental => "incremental",
        }
    }
}

/// The position of one change: its transaction and its place in it.
#[derive(Debug, Clone)]
pub struct ChangeContext {
    pub snapshot: SnapshotMark,
    pub xid: u32,
    pub commit_lsn: Lsn,
    pub commit_ts_us: i64,
    /// The LSN of the change itself.
    pub lsn: Lsn,
    /// The end LSN of the previous committed transaction (Debezium's `sequence[0]`).
    pub last_commit_lsn: Lsn,
    /// 1-based position in the transaction, over all tables and per table.
    pub total_order: u64,
    pub table_order: u64,
    /// The replication origin of a transaction replicated into this server (pgoutput's
    /// Origin message): Debezium's `source.origin` and `source.origin_lsn`.
    pub repl_origin: Option<Arc<ReplOrigin>>,
    /// The `source` block already encoded ([`TableCodec::source_bytes`]), when many events
    /// share it (the rows of a snapshot chunk); None to encode it from the fields above.
    pub source: Option<Arc<[u8]>>,
}

/// A transaction's replication origin: its name and the commit LSN on the origin server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplOrigin {
    pub name: String,
    pub lsn: Lsn,
}

impl TableCodec {
    /// The envelope as a `Value` (what [`Self::write_envelope`] encodes directly; debug builds
    /// check one against the other for every event).
    #[cfg_attr(not(debug_assertions), allow(dead_code))]
    fn envelope_at(
        &self,
        op: Op,
        before: Option<Value>,
        after: Option<Value>,
        origin: &Origin,
        cx: &ChangeContext,
        now_us: i64,
    ) -> Value {
        let source = source_value(origin, cx, &self.rel.schema, &self.rel.table);
        let block = block_value(cx);
        Value::Record(vec![
            ("before".into(), before.map(some).unwrap_or_else(none)),
            ("after".into(), after.map(some).unwrap_or_else(none)),
            ("source".into(), source),
            (
                "transaction".into(),
                // As Debezium: snapshot rows belong to no transaction.
                if cx.snapshot == SnapshotMark::False {
                    some(block)
                } else {
                    none()
                },
            ),
            ("op".into(), Value::String(op.code().into())),
            ("ts_ms".into(), some(Value::Long(now_us.div_euclid(1000)))),
            ("ts_us".into(), some(Value::Long(now_us))),
            (
                "ts_ns".into(),
                some(Value::Long(now_us.saturating_mul(1000))),
            ),
        ])
    }
}

impl TableCodec {
    /// Appends the Avro body of the envelope (`schema::envelope_schema`) straight from the
    /// event: the rows through [`encode::write`], `source`, `transaction` and the
    /// timestamps field by field, without the `Value` tree and its ~30 allocations and
    /// frees per event that `perf` showed at a quarter of the streaming CPU. The layout is
    /// the envelope schema's, which pgcdc builds itself; debug builds compare every event
    /// with apache-avro's bytes for [`Self::envelope_at`].
    #[allow(clippy::too_many_arguments)]
    fn write_envelope(
        &self,
        op: Op,
        before: Option<&Value>,
        after: Option<&Tuple>,
        marks: &mut Marks,
        origin: &Origin,
        cx: &ChangeContext,
        now_us: i64,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        match before {
            None => encode::zigzag(0, out),
            Some(v) => {
                encode::zigzag(1, out);
                let (row, ns) = self.row_schema()?;
                encode::write(v, row, self.value.names(), ns, out).map_err(|e| self.misfit(e))?;
            }
        }
        match after {
            None => encode::zigzag(0, out),
            Some(t) => {
                encode::zigzag(1, out);
                self.write_row(t, false, marks, out)?;
            }
        }
        match &cx.source {
            Some(b) => out.extend_from_slice(b),
            None => write_source(origin, cx, &self.rel.schema, &self.rel.table, out),
        }
        if cx.snapshot == SnapshotMark::False {
            encode::zigzag(1, out);
            write_block(cx, out);
        } else {
            encode::zigzag(0, out);
        }
        encode::bytes(op.code().as_bytes(), out);
        for t in [now_us.div_euclid(1000), now_us, now_us.saturating_mul(1000)] {
            opt_long(t, out);
        }
        Ok(())
    }
}

impl TableCodec {
    /// The `source` block of this table's events at `cx`, encoded, for events that share
    /// it ([`ChangeContext::source`]).
    pub fn source_bytes(&self, origin: &Origin, cx: &ChangeContext) -> Arc<[u8]> {
        let mut out = Vec::with_capacity(128);
        write_source(origin, cx, &self.rel.schema, &self.rel.table, &mut out);
        out.into()
    }

    /// The row record of the envelope schema (the `before` union's record) and the
    /// envelope's namespace, which its references resolve in.
    pub(super) fn row_schema(&self) -> Result<(&'static Schema, NamespaceRef<'static>)> {
        let Schema::Record(env) = self.value.schema() else {
            return Err(self.misfit("the value schema is not an envelope record"));
        };
        let row = match env.fields.first().map(|f| &f.schema) {
            Some(Schema::Union(u)) if env.fields[0].name == "before" => u.variants().get(1),
            _ => None,
        }
        .ok_or_else(|| self.misfit("the envelope schema has no before row"))?;
        Ok((row, env.name.namespace()))
    }
}

/// `["null", long]` holding `v`.
fn opt_long(v: i64, out: &mut Vec<u8>) {
    encode::zigzag(1, out);
    encode::zigzag(v, out);
}

/// `["null", string]` (or bytes) holding `v`.
fn opt_bytes(v: &[u8], out: &mut Vec<u8>) {
    encode::zigzag(1, out);
    encode::bytes(v, out);
}

/// The Avro body of [`source_value`], in `schema::source_schema`'s field order.
fn write_source(origin: &Origin, cx: &ChangeContext, schema: &str, table: &str, out: &mut Vec<u8>) {
    let commit_us = cx.commit_ts_us;
    encode::bytes(env!("CARGO_PKG_VERSION").as_bytes(), out);
    encode::bytes(b"postgresql", out);
    encode::bytes(origin.name.as_bytes(), out);
    encode::zigzag(commit_us.div_euclid(1000), out);
    // snapshot: [enum string, null], the string first.
    encode::zigzag(0, out);
    encode::bytes(cx.snapshot.as_str().as_bytes(), out);
    encode::bytes(origin.db.as_bytes(), out);
    // sequence: ["<last commit lsn>","<lsn>"], formatted on the stack.
    let mut seq = [0u8; 48];
    let mut n = 0;
    for (part, lsn) in [
        (&b"[\""[..], cx.last_commit_lsn.0),
        (&b"\",\""[..], cx.lsn.0),
    ] {
        seq[n..n + part.len()].copy_from_slice(part);
        n += part.len();
        n += decimal(lsn, &mut seq[n..]);
    }
    seq[n..n + 2].copy_from_slice(b"\"]");
    n += 2;
    opt_bytes(&seq[..n], out);
    opt_long(commit_us, out);
    opt_long(commit_us.saturating_mul(1000), out);
    encode::bytes(schema.as_bytes(), out);
    encode::bytes(table.as_bytes(), out);
    opt_long(i64::from(cx.xid), out);
    opt_long(cx.lsn.0 as i64, out);
    encode::zigzag(0, out); // xmin
    match &cx.repl_origin {
        Some(o) => {
            opt_bytes(o.name.as_bytes(), out);
            opt_long(o.lsn.0 as i64, out);
        }
        None => {
            encode::zigzag(0, out);
            encode::zigzag(0, out);
        }
    }
    opt_long(cx.commit_lsn.0 as i64, out);
}

/// Writes `v` in decimal at the start of `buf` (at least 20 bytes), returning its length.
fn decimal(mut v: u64, buf: &mut [u8]) -> usize {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let len = tmp.len() - i;
    buf[..len].copy_from_slice(&tmp[i..]);
    len
}

/// The Avro body of [`block_value`].
fn write_block(cx: &ChangeContext, out: &mut Vec<u8>) {
    // id: "<xid>:<commit lsn>", formatted on the stack.
    let mut id = [0u8; 41];
    let mut n = decimal(u64::from(cx.xid), &mut id);
    id[n] = b':';
    n += 1;
    n += decimal(cx.commit_lsn.0, &mut id[n..]);
    encode::bytes(&id[..n], out);
    encode::zigzag(cx.total_order as i64, out);
    encode::zigzag(cx.table_order as i64, out);
}

impl TableCodec {
    /// Encodes one event (key and value in the Confluent wire format), refusing records
    /// over pgcdc's size limit with the table named. `after` is the new row as PostgreSQL
    /// sent it, converted as it is written; `marks` are those of `before`, and the columns
    /// of `after` under a policy join them.
    #[allow(clippy::too_many_arguments)]
    pub fn encode_event(
        &self,
        op: Op,
        key: EventKey<'_>,
        before: Option<Value>,
        after: Option<&Tuple>,
        mut marks: Marks,
        origin: &Origin,
        cx: &ChangeContext,
    ) -> Result<Encoded> {
        let what = || format!("table {}", self.rel.quoted_name());
        let key = match (key, &self.key) {
            (EventKey::Row(t), _) => self.encode_key(t)?,
            (EventKey::Converted(Some(k)), Some(ks)) => Some(ks.encode(k, &what)?),
            (EventKey::Converted(_), _) => None,
        };
        #[cfg(debug_assertions)]
        let before_marks = marks.clone();
        let now_us = crate::clock::now_micros();
        let value = self.value.encode_with(
            |out| {
                self.write_envelope(
                    op,
                    before.as_ref(),
                    after,
                    &mut marks,
                    origin,
                    cx,
                    now_us,
                    out,
                )
            },
            || {
                let after = after.map(|t| {
                    self.row(t, false, &mut Marks::default())
                        .unwrap_or_else(|e| {
                            panic!("the direct writer accepted a row row() refuses: {e}")
                        })
                });
                self.envelope_at(op, before.clone(), after, origin, cx, now_us)
            },
        )?;
        #[cfg(debug_assertions)]
        {
            // The direct writer marks what the `Value` path marks.
            let mut expected = before_marks;
            if let Some(t) = after {
                let _ = self.row(t, false, &mut expected);
            }
            assert_eq!(
                marks, expected,
                "the row writer's marks differ from row()'s"
            );
        }
        let size = value.len() + key.as_ref().map_or(0, Vec::len);
        if size > MAX_RECORD_BYTES {
            return Err(Error::permanent(Code::Value, format!(
                "table {}: a row at LSN {} encodes to {size} bytes, over pgcdc's record limit of {MAX_RECORD_BYTES} bytes; \
                 pgcdc stops rather than drop or truncate it (store such values outside the row, or exclude the table)",
                self.rel.quoted_name(),
                cx.lsn
            )));
        }
        let headers = if marks.is_empty() {
            Vec::new()
        } else {
            marks.headers(&self.rel, &self.policy)
        };
        Ok(Encoded {
            key,
            value,
            headers,
        })
    }
}

/// The `source` block of an event: where it comes from (for a logical decoding message,
/// `schema` and `table` are empty, as in Debezium).
pub fn source_value(origin: &Origin, cx: &ChangeContext, schema: &str, table: &str) -> Value {
    let commit_us = cx.commit_ts_us;
    Value::Record(vec![
        (
            "version".into(),
            Value::String(env!("CARGO_PKG_VERSION").into()),
        ),
        ("connector".into(), Value::String("postgresql".into())),
        ("name".into(), Value::String(origin.name.clone())),
        ("ts_ms".into(), Value::Long(commit_us.div_euclid(1000))),
        (
            "snapshot".into(),
            Value::Union(0, Box::new(Value::String(cx.snapshot.as_str().into()))),
        ),
        ("db".into(), Value::String(origin.db.clone())),
        (
            "sequence".into(),
            some(Value::String(format!(
                "[\"{}\",\"{}\"]",
                cx.last_commit_lsn.0, cx.lsn.0
            ))),
        ),
        ("ts_us".into(), some(Value::Long(commit_us))),
        (
            "ts_ns".into(),
            some(Value::Long(commit_us.saturating_mul(1000))),
        ),
        ("schema".into(), Value::String(schema.to_owned())),
        ("table".into(), Value::String(table.to_owned())),
        ("txId".into(), some(Value::Long(i64::from(cx.xid)))),
        ("lsn".into(), some(Value::Long(cx.lsn.0 as i64))),
        ("xmin".into(), none()),
        (
            "origin".into(),
            cx.repl_origin
                .as_ref()
                .map_or_else(none, |o| some(Value::String(o.name.clone()))),
        ),
        (
            "origin_lsn".into(),
            cx.repl_origin
                .as_ref()
                .map_or_else(none, |o| some(Value::Long(o.lsn.0 as i64))),
        ),
        (
            "commit_lsn".into(),
            some(Value::Long(cx.commit_lsn.0 as i64)),
        ),
    ])
}

/// The `transaction` block: the transaction's id and the event's place in it.
pub fn block_value(cx: &ChangeContext) -> Value {
    Value::Record(vec![
        (
            "id".into(),
            Value::String(format!("{}:{}", cx.xid, cx.commit_lsn.0)),
        ),
        ("total_order".into(), Value::Long(cx.total_order as i64)),
        (
            "data_collection_order".into(),
            Value::Long(cx.table_order as i64),
        ),
    ])
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::avro::schema::{envelope_schema, field_names, key_schema};

    /// A codec for `rel` with made-up schema ids and the default policy.
    pub(crate) fn codec(rel: Relation) -> Arc<TableCodec> {
        let conn: crate::config::ConnectorConfig = serde_yaml_ng::from_str(
            "name: t\npostgres: {host: h, user: u, dbname: d}\ntopic_prefix: p\n",
        )
        .unwrap();
        let key = key_schema("p", &rel)
            .unwrap()
            .map(|b| Registered::new(1, b.schema).unwrap());
        let rules = vec![Rule::Keep; rel.columns.len()];
        let value = Registered::new(
            2,
            envelope_schema("p", &rel, &crate::avro::fields::field_specs(&rel), &rules)
                .unwrap()
                .schema,
        )
        .unwrap();
        Arc::new(TableCodec {
            field_names: field_names(&rel).unwrap(),
            fields: crate::avro::fields::field_specs(&rel),
            rules,
            topic: "p.public.t".into(),
            key,
            value,
            rel: Arc::new(rel),
            policy: Arc::new(ValuePolicy::of(&conn)),
        })
    }
}
