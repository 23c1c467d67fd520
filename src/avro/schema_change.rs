//! Schema change events (`schema_changes: true`) on `<topic_prefix>.schema_changes`: the
//! DDL, its command tag, and per table it touched the topic and the registry ids (and value
//! version) of the schemas registered for its new shape. Keyed by `{databaseName}`, as
//! Debezium's schema change events; the value is pgcdc's own (Debezium's PostgreSQL
//! connector has no schema change topic).

use apache_avro::types::Value;
use serde_json::{json, Value as Json};

use crate::avro::envelope::{source_value, ChangeContext, Origin};
use crate::avro::registry::Registry;
use crate::avro::schema::source_schema;
use crate::avro::TopicCodec;
use crate::clock::now_micros;
use crate::error::Result;
use crate::kafka::sink::Record;

pub fn key_schema() -> Json {
    json!({
        "type": "record",
        "name": "SchemaChangeKey",
        "namespace": "io.pgcdc",
        "fields": [{"name": "databaseName", "type": "string"}],
        "connect.name": "io.pgcdc.SchemaChangeKey"
    })
}

pub fn value_schema() -> Json {
    json!({
        "type": "record",
        "name": "SchemaChangeValue",
        "namespace": "io.pgcdc",
        "fields": [
            {"name": "source", "type": source_schema()},
            {"name": "ts_ms", "type": "long"},
            {"name": "databaseName", "type": "string"},
            {"name": "tag", "type": "string"},
            {"name": "ddl", "type": "string"},
            {"name": "tableChanges", "type": {"type": "array", "items": {
                "type": "record",
                "name": "TableChange",
                "fields": [
                    {"name": "id", "type": "string"},
                    {"name": "topic", "type": "string"},
                    {"name": "key_schema_id", "type": ["null", "int"], "default": null},
                    {"name": "value_schema_id", "type": "int"},
                    {"name": "value_schema_version", "type": ["null", "int"], "default": null}
                ],
                "connect.name": "io.pgcdc.TableChange"
            }}}
        ],
        "connect.name": "io.pgcdc.SchemaChangeValue"
    })
}

/// One table a DDL changed, with what was registered for it.
#[derive(Debug, Clone)]
pub struct TableChange {
    /// `"schema"."table"`.
    pub id: String,
    pub topic: String,
    pub key_schema_id: Option<u32>,
    pub value_schema_id: u32,
    pub value_schema_version: Option<u32>,
}

pub struct SchemaChangeCodec(TopicCodec);

impl SchemaChangeCodec {
    pub async fn register(registry: &mut Registry, prefix: &str) -> Result<Self> {
        Ok(SchemaChangeCodec(
            TopicCodec::register(
                registry,
                &format!("{prefix}.schema_changes"),
                key_schema(),
                value_schema(),
            )
            .await?,
        ))
    }

    pub fn topic(&self) -> &str {
        self.0.topic()
    }

    pub(crate) fn record(
        &self,
        origin: &Origin,
        cx: &ChangeContext,
        tag: &str,
        ddl: &str,
        tables: &[TableChange],
    ) -> Result<Record> {
        let what = || format!("schema change event for {tag}");
        let int = |v: Option<u32>| match v {
            Some(i) => Value::Union(1, Box::new(Value::Int(i as i32))),
            None => Value::Union(0, Box::new(Value::Null)),
        };
        let changes = tables
            .iter()
            .map(|t| {
                Value::Record(vec![
                    ("id".into(), Value::String(t.id.clone())),
                    ("topic".into(), Value::String(t.topic.clone())),
                    ("key_schema_id".into(), int(t.key_schema_id)),
                    (
                        "value_schema_id".into(),
                        Value::Int(t.value_schema_id as i32),
                    ),
                    ("value_schema_version".into(), int(t.value_schema_version)),
                ])
            })
            .collect();
        let key = Value::Record(vec![(
            "databaseName".into(),
            Value::String(origin.db.clone()),
        )]);
        let value = Value::Record(vec![
            ("source".into(), source_value(origin, cx, "", "")),
            ("ts_ms".into(), Value::Long(now_micros().div_euclid(1000))),
            ("databaseName".into(), Value::String(origin.db.clone())),
            ("tag".into(), Value::String(tag.to_owned())),
            ("ddl".into(), Value::String(ddl.to_owned())),
            ("tableChanges".into(), Value::Array(changes)),
        ]);
        self.0.record(key, value, &what)
    }
}
