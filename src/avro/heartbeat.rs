//! Debezium's heartbeat records: on `<heartbeat.topics_prefix>.<topic_prefix>`, keyed by
//! `{serverName}` (the topic prefix), value `{ts_ms}`; Debezium's schemas
//! (`io.debezium.connector.common.ServerNameKey` / `Heartbeat`, SchemaFactory).

use std::sync::Arc;

use apache_avro::types::Value;
use serde_json::{json, Value as Json};

use crate::avro::registry::Registry;
use crate::avro::Registered;
use crate::error::Result;
use crate::kafka::sink::Record;

pub fn key_schema() -> Json {
    json!({
        "type": "record",
        "name": "ServerNameKey",
        "namespace": "io.debezium.connector.common",
        "fields": [{"name": "serverName", "type": "string"}],
        "connect.version": 1,
        "connect.name": "io.debezium.connector.common.ServerNameKey"
    })
}

pub fn value_schema() -> Json {
    json!({
        "type": "record",
        "name": "Heartbeat",
        "namespace": "io.debezium.connector.common",
        "fields": [{"name": "ts_ms", "type": "long"}],
        "connect.version": 1,
        "connect.name": "io.debezium.connector.common.Heartbeat"
    })
}

/// The registered schemas, topic and pre-encoded key of a connector's heartbeats.
pub struct HeartbeatCodec {
    topic: Arc<str>,
    key: Vec<u8>,
    value: Registered,
}

impl HeartbeatCodec {
    pub async fn register(registry: &mut Registry, topic: &str, server_name: &str) -> Result<Self> {
        let (key, value) =
            crate::avro::register_topic(registry, topic, key_schema(), value_schema()).await?;
        let key = key.encode(
            Value::Record(vec![(
                "serverName".into(),
                Value::String(server_name.to_owned()),
            )]),
            &|| "heartbeat key".to_owned(),
        )?;
        Ok(HeartbeatCodec {
            topic: topic.into(),
            key,
            value,
        })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// A heartbeat at `ts_ms` (milliseconds since the Unix epoch).
    pub(crate) fn record(&self, ts_ms: i64) -> Result<Record> {
        let value = Value::Record(vec![("ts_ms".into(), Value::Long(ts_ms))]);
        Ok(Record {
            topic: self.topic.clone(),
            key: Some(self.key.clone()),
            value: Some(self.value.encode(value, &|| "heartbeat".to_owned())?),
            headers: Vec::new(),
        })
    }
}
