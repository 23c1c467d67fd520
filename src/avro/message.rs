//! Logical decoding messages (`pg_logical_emit_message`, PostgreSQL 14+) as Debezium's
//! message events: `op: m` on `<prefix>.message`, keyed by `{prefix}`, with Debezium's
//! schemas (`io.debezium.connector.postgresql.MessageKey` / `MessageValue` / `Message`;
//! PostgresSchemaFactory). Content is carried as bytes (Debezium's default
//! `binary.handling.mode`).

use apache_avro::types::Value;
use serde_json::{json, Value as Json};

use crate::avro::envelope::{block_value, source_value, ChangeContext, Origin};
use crate::avro::registry::Registry;
use crate::avro::schema::{block_schema, none, some, source_schema};
use crate::avro::TopicCodec;
use crate::clock::now_micros;
use crate::error::Result;
use crate::kafka::sink::Record;

pub fn key_schema() -> Json {
    json!({
        "type": "record",
        "name": "MessageKey",
        "namespace": "io.debezium.connector.postgresql",
        "fields": [{"name": "prefix", "type": ["null", "string"], "default": null}],
        "connect.version": 1,
        "connect.name": "io.debezium.connector.postgresql.MessageKey"
    })
}

pub fn value_schema() -> Json {
    // Spelled as Java's Avro prints it: nested names in the enclosing namespace
    // (io.debezium.connector.postgresql: Source, Message) are written without it.
    let mut source = source_schema();
    if let Some(o) = source.as_object_mut() {
        o.shift_remove("namespace");
    }
    json!({
        "type": "record",
        "name": "MessageValue",
        "namespace": "io.debezium.connector.postgresql",
        "fields": [
            {"name": "op", "type": "string"},
            {"name": "ts_ms", "type": ["null", "long"], "default": null},
            {"name": "source", "type": source},
            {"name": "transaction", "type": ["null", block_schema()], "default": null},
            {"name": "message", "type": {
                "type": "record",
                "name": "Message",
                "fields": [
                    {"name": "prefix", "type": ["null", "string"], "default": null},
                    {"name": "content", "type": ["null", "bytes"], "default": null}
                ],
                "connect.version": 1,
                "connect.name": "io.debezium.connector.postgresql.Message"
            }}
        ],
        "connect.version": 1,
        "connect.name": "io.debezium.connector.postgresql.MessageValue"
    })
}

/// The registered schemas and topic of a connector's message events.
pub struct MessageCodec(TopicCodec);

impl MessageCodec {
    pub async fn register(registry: &mut Registry, prefix: &str) -> Result<Self> {
        Ok(MessageCodec(
            TopicCodec::register(
                registry,
                &format!("{prefix}.message"),
                key_schema(),
                value_schema(),
            )
            .await?,
        ))
    }

    pub fn topic(&self) -> &str {
        self.0.topic()
    }

    /// One message event; `transactional` ones carry their transaction's block.
    pub(crate) fn record(
        &self,
        prefix: &str,
        content: &[u8],
        transactional: bool,
        origin: &Origin,
        cx: &ChangeContext,
    ) -> Result<Record> {
        let what = || format!("logical decoding message with prefix {prefix:?}");
        let key = Value::Record(vec![(
            "prefix".into(),
            some(Value::String(prefix.to_owned())),
        )]);
        let value = Value::Record(vec![
            ("op".into(), Value::String("m".into())),
            (
                "ts_ms".into(),
                some(Value::Long(now_micros().div_euclid(1000))),
            ),
            ("source".into(), source_value(origin, cx, "", "")),
            (
                "transaction".into(),
                if transactional {
                    some(block_value(cx))
                } else {
                    none()
                },
            ),
            (
                "message".into(),
                Value::Record(vec![
                    ("prefix".into(), some(Value::String(prefix.to_owned()))),
                    ("content".into(), some(Value::Bytes(content.to_vec()))),
                ]),
            ),
        ]);
        self.0.record(key, value, &what)
    }
}
