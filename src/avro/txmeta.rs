//! Debezium's transaction metadata events (`provide_transaction_metadata`): a `BEGIN` before
//! the first change event of a PostgreSQL transaction and an `END` after its last, on
//! `<prefix>.transaction`, keyed by the transaction id, with Debezium's schemas
//! (`io.debezium.connector.common.TransactionMetadataKey` / `...Value`, `event.collection`;
//! SchemaFactory in debezium-connector-common). They are written in the same Kafka
//! transaction as the changes they frame.

use apache_avro::types::Value;
use serde_json::{json, Value as Json};

use crate::avro::registry::Registry;
use crate::avro::TopicCodec;
use crate::error::Result;
use crate::kafka::sink::Record;

pub fn key_schema() -> Json {
    json!({
        "type": "record",
        "name": "TransactionMetadataKey",
        "namespace": "io.debezium.connector.common",
        "fields": [{"name": "id", "type": "string"}],
        "connect.version": 1,
        "connect.name": "io.debezium.connector.common.TransactionMetadataKey"
    })
}

pub fn value_schema() -> Json {
    let collection = json!({
        "type": "record",
        "name": "collection",
        "namespace": "event",
        "fields": [
            {"name": "data_collection", "type": "string"},
            {"name": "event_count", "type": "long"}
        ],
        "connect.version": 1,
        "connect.name": "event.collection"
    });
    json!({
        "type": "record",
        "name": "TransactionMetadataValue",
        "namespace": "io.debezium.connector.common",
        "fields": [
            {"name": "status", "type": "string"},
            {"name": "id", "type": "string"},
            {"name": "event_count", "type": ["null", "long"], "default": null},
            // Debezium's element struct is optional: its items are a ["null", record] union.
            {"name": "data_collections", "type": ["null", {"type": "array", "items": ["null", collection]}], "default": null},
            {"name": "ts_ms", "type": "long"}
        ],
        "connect.version": 1,
        "connect.name": "io.debezium.connector.common.TransactionMetadataValue"
    })
}

/// The registered schemas and topic of a connector's transaction events.
pub struct TxMeta(TopicCodec);

/// One transaction as its metadata events describe it.
#[derive(Debug, Default)]
pub struct OpenTxn {
    /// Debezium's PostgreSQL transaction id: `<xid>:<commit LSN>` (the envelope's
    /// `transaction.id`).
    pub id: String,
    /// The commit time, in ms since 1970.
    pub ts_ms: i64,
    /// The BEGIN event was sent (it goes before the transaction's first change event).
    pub begun: bool,
    /// Events per data collection (relation oid, `schema.table`), in the order tables
    /// first appeared.
    pub counts: Vec<(u32, String, u64)>,
}

impl OpenTxn {
    /// Counts one event of `rel`; its name is built once per transaction, not per event.
    pub fn count(&mut self, rel: &crate::decode::Relation) {
        match self.counts.iter_mut().find(|(oid, _, _)| *oid == rel.oid) {
            Some((_, _, n)) => *n += 1,
            None => self.counts.push((rel.oid, rel.qualified_name(), 1)),
        }
    }
}

impl TxMeta {
    pub async fn register(registry: &mut Registry, prefix: &str) -> Result<Self> {
        Ok(TxMeta(
            TopicCodec::register(
                registry,
                &format!("{prefix}.transaction"),
                key_schema(),
                value_schema(),
            )
            .await?,
        ))
    }

    pub fn topic(&self) -> &str {
        self.0.topic()
    }

    fn record(&self, t: &OpenTxn, value: Value) -> Result<Record> {
        let what = || format!("transaction event {}", t.id);
        let key = Value::Record(vec![("id".into(), Value::String(t.id.clone()))]);
        self.0.record(key, value, &what)
    }

    pub(crate) fn begin(&self, t: &OpenTxn) -> Result<Record> {
        self.record(
            t,
            Value::Record(vec![
                ("status".into(), Value::String("BEGIN".into())),
                ("id".into(), Value::String(t.id.clone())),
                ("event_count".into(), Value::Union(0, Box::new(Value::Null))),
                (
                    "data_collections".into(),
                    Value::Union(0, Box::new(Value::Null)),
                ),
                ("ts_ms".into(), Value::Long(t.ts_ms)),
            ]),
        )
    }

    pub(crate) fn end(&self, t: &OpenTxn) -> Result<Record> {
        let total: u64 = t.counts.iter().map(|(_, _, n)| n).sum();
        let collections = t
            .counts
            .iter()
            .map(|(_, table, n)| {
                Value::Union(
                    1,
                    Box::new(Value::Record(vec![
                        ("data_collection".into(), Value::String(table.clone())),
                        ("event_count".into(), Value::Long(*n as i64)),
                    ])),
                )
            })
            .collect();
        self.record(
            t,
            Value::Record(vec![
                ("status".into(), Value::String("END".into())),
                ("id".into(), Value::String(t.id.clone())),
                (
                    "event_count".into(),
                    Value::Union(1, Box::new(Value::Long(total as i64))),
                ),
                (
                    "data_collections".into(),
                    Value::Union(1, Box::new(Value::Array(collections))),
                ),
                ("ts_ms".into(), Value::Long(t.ts_ms)),
            ]),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::avro::schema::build;
    use crate::avro::Registered;

    #[test]
    fn begin_and_end_fit_debeziums_schemas() {
        let k = build(key_schema()).unwrap();
        let v = build(value_schema()).unwrap();
        let meta = TxMeta(TopicCodec::new(
            "p.transaction",
            Registered::new(1, k.schema).unwrap(),
            Registered::new(2, v.schema).unwrap(),
        ));
        let mut t = OpenTxn {
            id: "571:53736280".into(),
            ts_ms: 1_700_000_000_000,
            ..OpenTxn::default()
        };
        let rel = |oid: u32, table: &str| crate::decode::Relation {
            oid,
            schema: "public".into(),
            table: table.into(),
            replica_identity: b'd',
            columns: vec![],
        };
        let (a, b) = (rel(1, "a"), rel(2, "b"));
        t.count(&a);
        t.count(&b);
        t.count(&a);
        let counts: Vec<(&str, u64)> = t.counts.iter().map(|(_, n, c)| (n.as_str(), *c)).collect();
        assert_eq!(counts, [("public.a", 2), ("public.b", 1)]);
        let b = meta.begin(&t).unwrap();
        let e = meta.end(&t).unwrap();
        assert_eq!(&*b.topic, "p.transaction");
        assert_eq!(b.key, e.key, "both keyed by the transaction id");
        assert_eq!(&b.value.unwrap()[..5], &[0, 0, 0, 0, 2]);
        assert!(e.value.is_some());
    }
}
