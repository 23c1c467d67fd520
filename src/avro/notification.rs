//! Debezium's notification records (`notification.sink.topic.name`): key
//! `io.debezium.connector.common.NotificationKey` `{id}`, value
//! `io.debezium.connector.common.Notification` `{id, type, aggregate_type,
//! additional_data, timestamp}` (Debezium's SchemaFactory). pgcdc writes them to
//! `<topic_prefix>.notifications`, for instance the gap notice of a lost slot.

use std::collections::HashMap;

use apache_avro::types::Value;
use serde_json::{json, Value as Json};

use crate::avro::registry::Registry;
use crate::avro::TopicCodec;
use crate::error::Result;
use crate::kafka::sink::Record;

pub fn key_schema() -> Json {
    json!({
        "type": "record",
        "name": "NotificationKey",
        "namespace": "io.debezium.connector.common",
        "fields": [{"name": "id", "type": "string"}],
        "connect.version": 1,
        "connect.name": "io.debezium.connector.common.NotificationKey"
    })
}

pub fn value_schema() -> Json {
    json!({
        "type": "record",
        "name": "Notification",
        "namespace": "io.debezium.connector.common",
        "fields": [
            {"name": "id", "type": "string"},
            {"name": "type", "type": "string"},
            {"name": "aggregate_type", "type": "string"},
            {"name": "additional_data", "type": ["null", {"type": "map", "values": "string"}], "default": null},
            {"name": "timestamp", "type": "long"}
        ],
        "connect.version": 1,
        "connect.name": "io.debezium.connector.common.Notification"
    })
}

/// One notification.
pub struct Notification {
    pub id: String,
    pub kind: String,
    pub aggregate_type: String,
    pub additional_data: Vec<(String, String)>,
    pub timestamp_ms: i64,
}

/// The registered schemas and topic of a connector's notifications.
pub struct NotificationCodec(TopicCodec);

impl NotificationCodec {
    pub async fn register(registry: &mut Registry, topic_prefix: &str) -> Result<Self> {
        Ok(NotificationCodec(
            TopicCodec::register(
                registry,
                &format!("{topic_prefix}.notifications"),
                key_schema(),
                value_schema(),
            )
            .await?,
        ))
    }

    pub fn topic(&self) -> &str {
        self.0.topic()
    }

    pub(crate) fn record(&self, n: &Notification) -> Result<Record> {
        let what = || format!("notification {}", n.id);
        let key = Value::Record(vec![("id".into(), Value::String(n.id.clone()))]);
        let data: HashMap<String, Value> = n
            .additional_data
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        let value = Value::Record(vec![
            ("id".into(), Value::String(n.id.clone())),
            ("type".into(), Value::String(n.kind.clone())),
            (
                "aggregate_type".into(),
                Value::String(n.aggregate_type.clone()),
            ),
            (
                "additional_data".into(),
                Value::Union(1, Box::new(Value::Map(data))),
            ),
            ("timestamp".into(), Value::Long(n.timestamp_ms)),
        ]);
        self.0.record(key, value, &what)
    }
}
