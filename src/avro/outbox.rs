//! Debezium's outbox event router, as pure functions: which columns of the outbox table
//! carry what, and one insert (or one logical decoding message) as a routed event: its
//! aggregate type (the topic), aggregate id (the key), payload (the value) and event id (a
//! header), with the schemas Debezium's router gives them (the columns' own, optional when
//! the column is nullable).

use apache_avro::types::Value;
use serde_json::{json, Value as Json};

use crate::config::OutboxConfig;
use crate::decode::{Relation, Tuple, TupleData};
use crate::typemap::{Names, PgType};

/// One routed event.
#[derive(Debug, Clone, PartialEq)]
pub struct Routed {
    pub aggregate_type: String,
    pub id: Option<String>,
    pub key: Value,
    pub value: Value,
}

/// A column's place and type, and whether its field is a union with null.
#[derive(Debug, Clone)]
struct Slot {
    index: usize,
    ty: PgType,
    optional: bool,
}

impl Slot {
    fn schema(&self) -> Json {
        let t = self.ty.avro_schema(&mut Names::default());
        if self.optional {
            json!(["null", t])
        } else {
            t
        }
    }

    fn value(&self, t: &Tuple) -> Result<Value, String> {
        let v = match t.get(self.index) {
            Some(TupleData::Text(b)) => Some(self.ty.to_avro(b).map_err(|e| e.to_string())?),
            Some(TupleData::Null) => None,
            _ => return Err("arrived without a value".into()),
        };
        Ok(match (self.optional, v) {
            (false, Some(v)) => v,
            (true, Some(v)) => Value::Union(1, Box::new(v)),
            (true, None) => Value::Union(0, Box::new(Value::Null)),
            (false, None) => return Err("is NULL".into()),
        })
    }
}

/// Where the outbox table's columns are.
#[derive(Debug, Clone)]
pub struct OutboxPlan {
    id: usize,
    aggregate_type: usize,
    key: Slot,
    value: Slot,
}

fn text(t: &Tuple, i: usize) -> Option<String> {
    match t.get(i) {
        Some(TupleData::Text(b)) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    }
}

impl OutboxPlan {
    /// The plan for `rel`, or what is missing.
    pub fn of(cfg: &OutboxConfig, rel: &Relation) -> Result<Self, String> {
        let find = |name: &str, what: &str| {
            rel.columns
                .iter()
                .position(|c| c.name == name)
                .ok_or_else(|| format!("has no column {name:?} (outbox.fields.{what})"))
        };
        let slot = |i: usize| Slot {
            index: i,
            ty: rel.columns[i].ty.clone(),
            optional: !rel.columns[i].not_null,
        };
        Ok(OutboxPlan {
            id: find(&cfg.fields.id, "id")?,
            aggregate_type: find(&cfg.fields.aggregate_type, "aggregate_type")?,
            key: slot(find(&cfg.fields.aggregate_id, "aggregate_id")?),
            value: slot(find(&cfg.fields.payload, "payload")?),
        })
    }

    pub fn key_schema(&self) -> Json {
        self.key.schema()
    }

    pub fn value_schema(&self) -> Json {
        self.value.schema()
    }

    /// One inserted row as a routed event, or why it cannot be routed.
    pub fn route(&self, t: &Tuple) -> Result<Routed, String> {
        let aggregate_type = text(t, self.aggregate_type)
            .filter(|s| !s.is_empty())
            .ok_or("its aggregate type is NULL or empty, so it names no topic")?;
        Ok(Routed {
            aggregate_type,
            id: text(t, self.id),
            key: self
                .key
                .value(t)
                .map_err(|e| format!("its aggregate id {e}"))?,
            value: self
                .value
                .value(t)
                .map_err(|e| format!("its payload {e}"))?,
        })
    }
}

/// The key schema of events routed from messages: a string.
pub fn message_key_schema() -> Json {
    json!("string")
}

/// The value schema of events routed from messages: JSON text, as a `jsonb` payload.
pub fn message_value_schema() -> Json {
    json!({"type": "string", "connect.version": 1, "connect.name": "io.debezium.data.Json"})
}

/// A logical decoding message's content (a JSON object keyed by the `fields` names) as a
/// routed event; the payload is carried as its JSON text.
pub fn route_message(cfg: &OutboxConfig, content: &[u8]) -> Result<Routed, String> {
    let doc: Json = serde_json::from_slice(content)
        .map_err(|e| format!("its content is not a JSON object ({e})"))?;
    let field = |name: &str| -> Option<String> {
        match doc.get(name)? {
            Json::String(s) => Some(s.clone()),
            Json::Null => None,
            other => Some(other.to_string()),
        }
    };
    let f = &cfg.fields;
    let aggregate_type = field(&f.aggregate_type)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| format!("it has no {:?}, so it names no topic", f.aggregate_type))?;
    let key = field(&f.aggregate_id).ok_or_else(|| format!("it has no {:?}", f.aggregate_id))?;
    let payload = doc
        .get(&f.payload)
        .ok_or_else(|| format!("it has no {:?}", f.payload))?;
    Ok(Routed {
        aggregate_type,
        id: field(&f.id),
        key: Value::String(key),
        value: Value::String(payload.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::Column;

    fn outbox() -> Relation {
        let mut cols = vec![
            Column::test("id", PgType::Uuid, true),
            Column::test("aggregatetype", PgType::Text, false),
            Column::test("aggregateid", PgType::Text, false),
            Column::test("payload", PgType::Json, false),
        ];
        cols[2].not_null = true;
        Relation {
            oid: 1,
            schema: "public".into(),
            table: "outbox".into(),
            replica_identity: b'd',
            columns: cols,
        }
    }

    fn row(cells: &[Option<&str>]) -> Tuple {
        cells
            .iter()
            .map(|c| match c {
                Some(s) => TupleData::Text(bytes::Bytes::copy_from_slice(s.as_bytes())),
                None => TupleData::Null,
            })
            .collect()
    }

    #[test]
    fn an_insert_routes_by_aggregate_type_with_the_columns_schemas() {
        let cfg = OutboxConfig::default();
        let plan = OutboxPlan::of(&cfg, &outbox()).unwrap();
        assert_eq!(plan.key_schema(), json!("string"));
        assert_eq!(plan.value_schema()[0], "null");
        let id = "7f1c2d9e-0000-4000-8000-000000000001";
        let r = plan
            .route(&row(&[
                Some(id),
                Some("order"),
                Some("42"),
                Some(r#"{"a":1}"#),
            ]))
            .unwrap();
        assert_eq!(r.aggregate_type, "order");
        assert_eq!(r.id.as_deref(), Some(id));
        assert_eq!(r.key, Value::String("42".into()));
        assert_eq!(
            r.value,
            Value::Union(1, Box::new(Value::String(r#"{"a":1}"#.into())))
        );
        assert_eq!(cfg.topic_for(&r.aggregate_type), "outbox.event.order");
        assert_eq!(cfg.topic_for("a b/c"), "outbox.event.a_b_c");
        let e = plan
            .route(&row(&[Some(id), None, Some("42"), None]))
            .unwrap_err();
        assert!(e.contains("names no topic"), "{e}");
        let mut missing = outbox();
        missing.columns.remove(3);
        assert!(OutboxPlan::of(&cfg, &missing)
            .unwrap_err()
            .contains("payload"));
    }

    #[test]
    fn a_message_routes_from_its_json() {
        let cfg = OutboxConfig::default();
        let r = route_message(
            &cfg,
            br#"{"id": 9, "aggregatetype": "customer", "aggregateid": 17, "payload": {"name": "ann"}}"#,
        )
        .unwrap();
        assert_eq!(r.aggregate_type, "customer");
        assert_eq!(r.id.as_deref(), Some("9"));
        assert_eq!(r.key, Value::String("17".into()));
        assert_eq!(r.value, Value::String(r#"{"name":"ann"}"#.into()));
        assert!(route_message(&cfg, b"not json").is_err());
        assert!(route_message(&cfg, br#"{"aggregateid": 1, "payload": 2}"#).is_err());
    }
}
