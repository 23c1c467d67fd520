//! `outbox` in a connector file: Debezium's outbox event router, built in.

use serde::Deserialize;

use super::TableName;

/// Where routed events go, by default (Debezium's `route.topic.replacement`
/// `outbox.event.${routedByValue}`; `${…}` is environment substitution in pgcdc's files).
pub const DEFAULT_OUTBOX_TOPIC: &str = "outbox.event.{aggregatetype}";

/// `outbox`: inserts into `table`, and logical decoding messages with `message_prefix`,
/// become records on `topic` keyed by the aggregate id, valued by the payload.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutboxConfig {
    /// The outbox table (captured by `tables`); its inserts are routed instead of sent as
    /// change events, its updates and deletes are not sent.
    pub table: Option<TableName>,
    /// Logical decoding messages with this prefix carry one event each, as a JSON object
    /// with the `fields` names as keys.
    pub message_prefix: Option<String>,
    /// The topic of an event; `{aggregatetype}` is its aggregate type.
    pub topic: String,
    pub fields: OutboxFields,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            table: None,
            message_prefix: None,
            topic: DEFAULT_OUTBOX_TOPIC.to_owned(),
            fields: OutboxFields::default(),
        }
    }
}

/// The outbox columns (Debezium's `table.field.event.id`, `route.by.field`,
/// `table.field.event.key`, `table.field.event.payload`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutboxFields {
    pub id: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub payload: String,
}

impl Default for OutboxFields {
    fn default() -> Self {
        OutboxFields {
            id: "id".into(),
            aggregate_type: "aggregatetype".into(),
            aggregate_id: "aggregateid".into(),
            payload: "payload".into(),
        }
    }
}

impl OutboxConfig {
    /// The topic of an event of `aggregate_type`, characters Kafka refuses replaced by `_`.
    pub fn topic_for(&self, aggregate_type: &str) -> String {
        self.topic
            .replace("{aggregatetype}", aggregate_type)
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    }

    pub fn is_table(&self, schema: &str, table: &str) -> bool {
        self.table.as_ref().is_some_and(|t| t.is(schema, table))
    }
}
