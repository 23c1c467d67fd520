//! Debezium's outbox event router, as pure functions: which columns of the outbox table
//! carry what, and one insert (or one logical decoding message) as a routed event: its
//! aggregate type (the topic), aggregate id (the key), payload (the value) and event id (a
//! header), with the schemas Debezium's router gives them (the columns' own, optional when
//! the column is nullable). A composite-type payload is an Avro record of its attributes.

use apache_avro::types::Value;
use serde_json::{json, Value as Json};

use crate::avro::schema::avro_name;
use crate::config::OutboxConfig;
use crate::decode::{Relation, Tuple, TupleData};
use crate::typemap::{Composite, Names, PgType};

/// One routed event.
#[derive(Debug, Clone, PartialEq)]
pub struct Routed {
    pub aggregate_type: String,
    pub id: Option<String>,
    pub key: Value,
    pub value: Value,
}

impl Composite {
    /// A record of the attributes, each optional (a composite's attributes can be NULL).
    fn avro_schema(&self) -> Json {
        let mut names = Names::default();
        let fields: Vec<Json> = self
            .fields
            .iter()
            .map(|(n, t)| json!({"name": avro_name(n), "type": ["null", t.avro_schema(&mut names)], "default": null}))
            .collect();
        json!({
            "type": "record",
            "name": avro_name(&self.name),
            "namespace": avro_name(&self.schema),
            "fields": fields,
        })
    }

    fn value(&self, text: &[u8]) -> Result<Value, String> {
        let text = std::str::from_utf8(text).map_err(|_| "is not UTF-8".to_owned())?;
        let cells = composite_cells(text)?;
        if cells.len() != self.fields.len() {
            return Err(format!(
                "has {} attributes where type {}.{} has {}",
                cells.len(),
                self.schema,
                self.name,
                self.fields.len()
            ));
        }
        let mut out = Vec::with_capacity(cells.len());
        for ((name, ty), cell) in self.fields.iter().zip(cells) {
            let v = match cell {
                None => Value::Union(0, Box::new(Value::Null)),
                Some(s) => Value::Union(
                    1,
                    Box::new(
                        ty.to_avro(s.as_bytes())
                            .map_err(|e| format!("attribute {name}: {e}"))?,
                    ),
                ),
            };
            out.push((avro_name(name), v));
        }
        Ok(Value::Record(out))
    }
}

/// The attribute texts of PostgreSQL's text form of a composite value, `(a,"b ""c""",)`:
/// None for NULL (nothing between the commas), quotes and backslashes undone.
pub fn composite_cells(text: &str) -> Result<Vec<Option<String>>, String> {
    let inner = text
        .strip_prefix('(')
        .and_then(|t| t.strip_suffix(')'))
        .ok_or("is not a composite value (no parentheses)")?;
    let mut out = Vec::new();
    let mut chars = inner.chars().peekable();
    loop {
        let (mut cell, mut quoted) = (String::new(), false);
        while let Some(&c) = chars.peek() {
            if c == ',' {
                break;
            }
            chars.next();
            match c {
                '"' => {
                    quoted = true;
                    loop {
                        match chars.next() {
                            None => return Err("has an unterminated quote".into()),
                            Some('"') if chars.peek() == Some(&'"') => {
                                chars.next();
                                cell.push('"');
                            }
                            Some('"') => break,
                            Some('\\') => cell.push(chars.next().ok_or("ends in a backslash")?),
                            Some(c) => cell.push(c),
                        }
                    }
                }
                '\\' => cell.push(chars.next().ok_or("ends in a backslash")?),
                c => cell.push(c),
            }
        }
        out.push((quoted || !cell.is_empty()).then_some(cell));
        if chars.next().is_none() {
            return Ok(out);
        }
    }
}

/// A column's place and type, and whether its field is a union with null.
#[derive(Debug, Clone)]
struct Slot {
    index: usize,
    ty: PgType,
    optional: bool,
    /// The column's composite type, carried as a record.
    composite: Option<Composite>,
}

impl Slot {
    fn schema(&self) -> Json {
        let t = match &self.composite {
            Some(c) => c.avro_schema(),
            None => self.ty.avro_schema(&mut Names::default()),
        };
        if self.optional {
            json!(["null", t])
        } else {
            t
        }
    }

    fn value(&self, t: &Tuple) -> Result<Value, String> {
        let v = match t.get(self.index) {
            Some(TupleData::Text(b)) => Some(match &self.composite {
                Some(c) => c.value(b)?,
                None => self.ty.to_avro(b).map_err(|e| e.to_string())?,
            }),
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
    /// The plan for `rel`, or what is missing; `payload_type` is the payload column's
    /// composite type, if it is one.
    pub fn of(
        cfg: &OutboxConfig,
        rel: &Relation,
        payload_type: Option<Composite>,
    ) -> Result<Self, String> {
        let find = |name: &str, what: &str| {
            rel.columns
                .iter()
                .position(|c| c.name == name)
                .ok_or_else(|| format!("has no column {name:?} (outbox.fields.{what})"))
        };
        let slot = |i: usize, composite: Option<Composite>| Slot {
            index: i,
            ty: rel.columns[i].ty.clone(),
            optional: !rel.columns[i].not_null,
            composite,
        };
        Ok(OutboxPlan {
            id: find(&cfg.fields.id, "id")?,
            aggregate_type: find(&cfg.fields.aggregate_type, "aggregate_type")?,
            key: slot(find(&cfg.fields.aggregate_id, "aggregate_id")?, None),
            value: slot(find(&cfg.fields.payload, "payload")?, payload_type),
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
        let plan = OutboxPlan::of(&cfg, &outbox(), None).unwrap();
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
        assert!(OutboxPlan::of(&cfg, &missing, None)
            .unwrap_err()
            .contains("payload"));
    }

    #[test]
    fn composite_text_splits_into_attributes() {
        let cells = composite_cells(r#"(1,"a ""b"", c",,"",x\,y)"#).unwrap();
        assert_eq!(
            cells,
            [
                Some("1".into()),
                Some(r#"a "b", c"#.into()),
                None,
                Some(String::new()),
                Some("x,y".into())
            ]
        );
        assert!(composite_cells("1,2").is_err());
        assert!(composite_cells(r#"("open)"#).is_err());
        let c = Composite {
            schema: "public".into(),
            name: "order_event".into(),
            fields: vec![("item".into(), PgType::Text), ("qty".into(), PgType::Int4)],
        };
        assert_eq!(
            c.value(b"(book,2)").unwrap(),
            Value::Record(vec![
                (
                    "item".into(),
                    Value::Union(1, Box::new(Value::String("book".into())))
                ),
                ("qty".into(), Value::Union(1, Box::new(Value::Int(2)))),
            ])
        );
        assert_eq!(c.avro_schema()["name"], "order_event");
        assert!(c.value(b"(book)").is_err());
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
