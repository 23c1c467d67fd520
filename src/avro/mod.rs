//! Avro: the key and envelope schemas of each table, the schema registry client, and the
//! Confluent wire format (magic byte 0, 4-byte big-endian schema id, Avro binary body).

pub mod columns;
pub mod encode;
pub mod envelope;
pub mod fields;
pub mod heartbeat;
pub mod message;
pub mod notification;
pub mod outbox;
pub mod policy;
pub mod registry;
pub mod row;
pub mod schema;
pub mod schema_change;
pub mod seam;
pub mod txmeta;

use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::Schema;

use crate::error::{Code, Error, Result};

/// A schema with its registry id, ready to encode values.
pub struct Registered {
    pub id: u32,
    schema: &'static Schema,
    names: encode::Names,
    /// apache-avro's writer, to cross-check our encoder in debug builds.
    #[cfg_attr(not(debug_assertions), allow(dead_code))]
    writer: GenericDatumWriter<'static>,
    /// The last encoding's length: the next one's buffer starts a little larger, so that
    /// wide rows are not copied as their buffer grows (the last, not the largest: one huge
    /// row must not make every later record hold a huge buffer).
    last_len: std::sync::atomic::AtomicUsize,
}

/// Schemas kept for the life of the process, by their JSON: the writer and the name table
/// borrow them, and a restart or a repeated Relation message finds the schema it had, so
/// memory grows with the distinct schemas (table versions), not with restarts.
static KEPT: std::sync::Mutex<Option<std::collections::HashMap<String, &'static Schema>>> =
    std::sync::Mutex::new(None);

pub(crate) fn keep(schema: Schema) -> &'static Schema {
    let Ok(key) = serde_json::to_string(&schema) else {
        // Not to be told apart from another schema by its JSON: kept on its own.
        return Box::leak(Box::new(schema));
    };
    let mut kept = KEPT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let map = kept.get_or_insert_with(Default::default);
    if let Some(s) = map.get(&key) {
        return s;
    }
    let s: &'static Schema = Box::leak(Box::new(schema));
    map.insert(key, s);
    s
}

/// Registers a fixed key and value schema for `topic` (subjects `<topic>-key` and
/// `<topic>-value`), ready to encode: the connector-level topics (transactions, messages).
pub(crate) async fn register_topic(
    registry: &mut registry::Registry,
    topic: &str,
    key: serde_json::Value,
    value: serde_json::Value,
) -> Result<(Registered, Registered)> {
    let k = schema::build(key)?;
    let v = schema::build(value)?;
    let kid = registry.register(&format!("{topic}-key"), &k.json).await?;
    let vid = registry
        .register(&format!("{topic}-value"), &v.json)
        .await?;
    Ok((
        Registered::new(kid, k.schema)?,
        Registered::new(vid, v.schema)?,
    ))
}

/// A connector-level topic (transactions, messages, schema changes, notifications) with its
/// registered key and value schemas.
pub struct TopicCodec {
    topic: std::sync::Arc<str>,
    key: Registered,
    value: Registered,
}

impl TopicCodec {
    pub async fn register(
        registry: &mut registry::Registry,
        topic: &str,
        key: serde_json::Value,
        value: serde_json::Value,
    ) -> Result<Self> {
        let (key, value) = register_topic(registry, topic, key, value).await?;
        Ok(TopicCodec::new(topic, key, value))
    }

    pub(crate) fn new(topic: &str, key: Registered, value: Registered) -> Self {
        TopicCodec {
            topic: topic.into(),
            key,
            value,
        }
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// One record on the topic; `what` names it in an error.
    pub(crate) fn record(
        &self,
        key: Value,
        value: Value,
        what: &dyn Fn() -> String,
    ) -> Result<crate::kafka::sink::Record> {
        Ok(crate::kafka::sink::Record {
            topic: self.topic.clone(),
            key: Some(self.key.encode(key, what)?),
            value: Some(self.value.encode(value, what)?),
            headers: Vec::new(),
        })
    }
}

impl Registered {
    /// The writer resolves the schema's names once, not per event.
    pub fn new(id: u32, schema: Schema) -> Result<Self> {
        let schema = keep(schema);
        let writer = GenericDatumWriter::builder(schema).build().map_err(|e| {
            Error::permanent(
                Code::Registry,
                format!("internal error: Avro schema {id} does not resolve: {e}"),
            )
            .with_source(e)
        })?;
        let names = encode::Names::of(schema).map_err(|e| {
            Error::permanent(
                Code::Registry,
                format!("internal error: Avro schema {id} does not resolve: {e}"),
            )
            .with_source(e)
        })?;
        Ok(Registered {
            id,
            schema,
            names,
            writer,
            last_len: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// The schema as registered.
    pub fn schema(&self) -> &'static Schema {
        self.schema
    }

    /// The named types of the schema, for [`encode::write`].
    pub fn names(&self) -> &encode::Names {
        &self.names
    }

    /// Encodes in the Confluent wire format with `write`, which appends the Avro body
    /// straight from the event (no `Value` tree: the streaming hot path). Debug builds also
    /// build `check`, the same event as a `Value`, and assert that apache-avro's writer
    /// produces the same bytes.
    pub fn encode_with(
        &self,
        write: impl FnOnce(&mut Vec<u8>) -> Result<()>,
        #[cfg_attr(not(debug_assertions), allow(unused_variables))] check: impl FnOnce() -> Value,
    ) -> Result<Vec<u8>> {
        use std::sync::atomic::Ordering::Relaxed;
        let last = self.last_len.load(Relaxed);
        let mut out = Vec::with_capacity((last + last / 8 + 16).clamp(64, 64 * 1024));
        out.push(0);
        out.extend_from_slice(&self.id.to_be_bytes());
        write(&mut out)?;
        self.last_len.store(out.len(), Relaxed);
        #[cfg(debug_assertions)]
        {
            let value = check();
            let mut expected = vec![0];
            expected.extend_from_slice(&self.id.to_be_bytes());
            if let Err(e) = self.writer.write_value_ref(&mut expected, &value) {
                panic!("apache-avro refuses what pgcdc encodes: {e}");
            }
            assert_eq!(
                out, expected,
                "pgcdc's Avro encoding differs from apache-avro's"
            );
        }
        Ok(out)
    }

    /// Encodes `value` in the Confluent wire format, refusing a value that does not fit the
    /// schema (debug builds check the bytes against apache-avro's, as [`Self::encode_with`]).
    pub fn encode(&self, value: Value, what: &dyn Fn() -> String) -> Result<Vec<u8>> {
        self.encode_with(
            |out| {
                encode::write(&value, self.schema, &self.names, None, out)
                    .map_err(|e| misfit(what, e))
            },
            || value.clone(),
        )
    }
}

/// A value that does not fit the schema pgcdc built for it (`what`: the table, say).
pub(crate) fn misfit(what: &dyn Fn() -> String, e: impl std::fmt::Display) -> Error {
    Error::permanent(
        Code::Registry,
        format!("{}: value does not fit its Avro schema: {e}", what()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_schema_is_kept_once() {
        let parse = || {
            Schema::parse_str(
                r#"{"type":"record","name":"K","fields":[{"name":"a","type":"int"}]}"#,
            )
            .unwrap()
        };
        let a = Registered::new(1, parse()).unwrap();
        let b = Registered::new(2, parse()).unwrap();
        assert!(std::ptr::eq(a.schema, b.schema));
        let c = Registered::new(
            3,
            Schema::parse_str(
                r#"{"type":"record","name":"K","fields":[{"name":"b","type":"int"}]}"#,
            )
            .unwrap(),
        )
        .unwrap();
        assert!(!std::ptr::eq(a.schema, c.schema));
    }
}
