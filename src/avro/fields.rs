//! How each column travels in the `Value` record, as Debezium's PostgreSQL connector
//! registers it: a `NOT NULL` column is a required field, a constant column default is the
//! field's default (`default`, and `connect.default` on its type), and a nullable column
//! with a default is the union `[T, "null"]` whose first branch the default belongs to.
//!
//! A `NOT NULL` column stays optional where a policy could need null for it, because null is
//! then the only honest value: a type that can hold values its Avro type cannot
//! (`unrepresentable`: `date`/`timestamp` ±infinity, `numeric` NaN, arrays of another shape),
//! and, unless the table has REPLICA IDENTITY FULL, a type that can be stored out of line
//! and has no placeholder form (`toast`).
//!
//! A required field still needs a value where PostgreSQL sent none: a key-only old image
//! (REPLICA IDENTITY DEFAULT or USING INDEX: a delete's `before`) lacks every other column,
//! and a row written before `SET NOT NULL` can hold NULL. There the field carries what
//! Debezium carries (the column default, else the type's zero: `0`, `""`, `false`, the
//! epoch), and the event names the column: `pgcdc.unavailable` for a column not sent,
//! `pgcdc.lossy` for a NULL the required type cannot hold.

use apache_avro::types::Value;
use serde_json::{json, Map, Value as Json};

use crate::avro::policy::{placeholder_value, Placeholder};
use crate::config::NumericMode;
use crate::decode::{Column, Relation};
use crate::typemap::PgType;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// The type itself.
    Required,
    /// `["null", T]`, default null.
    Optional,
    /// `[T, "null"]`, default the column default.
    OptionalWithDefault,
}

/// One column's field: its shape and its default (the Avro value and its JSON form).
#[derive(Debug, Clone)]
pub struct FieldSpec {
    pub shape: Shape,
    pub default: Option<(Value, Json)>,
}

impl FieldSpec {
    /// `["null", T]`, default null.
    pub fn optional() -> Self {
        FieldSpec {
            shape: Shape::Optional,
            default: None,
        }
    }

    /// The field's value for a converted cell. A required field given None gets
    /// [`FieldSpec::fill`]; the caller marks the event.
    pub fn wrap(&self, v: Option<Value>, ty: &PgType) -> Value {
        match (self.shape, v) {
            (Shape::Required, Some(v)) => v,
            (Shape::Required, None) => self.fill(ty),
            (Shape::Optional, Some(v)) => Value::Union(1, Box::new(v)),
            (Shape::Optional, None) => Value::Union(0, Box::new(Value::Null)),
            (Shape::OptionalWithDefault, Some(v)) => Value::Union(0, Box::new(v)),
            (Shape::OptionalWithDefault, None) => Value::Union(1, Box::new(Value::Null)),
        }
    }

    /// What a required field carries when PostgreSQL sent no value: the column default,
    /// else the type's zero, as Debezium.
    pub fn fill(&self, ty: &PgType) -> Value {
        match &self.default {
            Some((v, _)) => v.clone(),
            None => zero(ty),
        }
    }

    /// The field's schema JSON around the column type's schema.
    pub fn schema(&self, name: &str, ty: Json) -> Json {
        match (self.shape, &self.default) {
            (Shape::Required, None) => json!({"name": name, "type": ty}),
            (Shape::Required, Some((_, d))) => {
                json!({"name": name, "type": annotate(ty, d), "default": d})
            }
            (Shape::Optional, _) | (Shape::OptionalWithDefault, None) => {
                json!({"name": name, "type": ["null", ty], "default": null})
            }
            (Shape::OptionalWithDefault, Some((_, d))) => {
                json!({"name": name, "type": [annotate(ty, d), "null"], "default": d})
            }
        }
    }
}

/// The fields of a relation's `Value` record, column by column.
pub fn field_specs(rel: &Relation) -> Vec<FieldSpec> {
    rel.columns
        .iter()
        .map(|c| {
            let default = default_of(c);
            let shape = if required(rel, c) {
                Shape::Required
            } else if default.is_some() {
                Shape::OptionalWithDefault
            } else {
                Shape::Optional
            };
            FieldSpec { shape, default }
        })
        .collect()
}

/// The same fields, every one `["null", T]` without default: the form subjects registered
/// before pgcdc carried NOT NULL and defaults hold.
pub fn all_optional(specs: &[FieldSpec]) -> Vec<FieldSpec> {
    specs.iter().map(|_| FieldSpec::optional()).collect()
}

/// A key field: required, with the column's constant default as Debezium declares it.
pub fn key_field(name: &str, c: &Column, ty: Json) -> Json {
    FieldSpec {
        shape: Shape::Required,
        default: default_of(c),
    }
    .schema(name, ty)
}

fn required(rel: &Relation, c: &Column) -> bool {
    c.not_null
        && !may_be_unrepresentable(&c.ty)
        && (rel.replica_identity == b'f' || !toast_may_need_null(&c.ty))
}

/// Types with values PostgreSQL accepts that their Avro type cannot hold.
fn may_be_unrepresentable(ty: &PgType) -> bool {
    matches!(
        ty,
        PgType::Date
            | PgType::Timestamp
            | PgType::Numeric { .. }
            | PgType::NumericAny(NumericMode::Precise)
            | PgType::Array { .. }
    )
}

/// Types whose values can be stored out of line (so an update can leave them unsent) and
/// that have no placeholder form.
fn toast_may_need_null(ty: &PgType) -> bool {
    let out_of_line = matches!(
        ty,
        PgType::Text
            | PgType::Json
            | PgType::Xml
            | PgType::Bytea
            | PgType::Hstore
            | PgType::Array { .. }
            | PgType::Numeric { .. }
            | PgType::NumericAny(_)
            | PgType::Bits { .. }
            | PgType::VarBit
            | PgType::Other { .. }
    );
    out_of_line && placeholder_value(ty, &Placeholder::new("x")).is_none()
}

/// The column's constant default as an Avro value and its JSON form, where Debezium carries
/// one: not for bytes, arrays or variable-scale decimals (Debezium drops those), nor for
/// the string `{}`, which Apicurio Registry 3.0.9 cannot store in a schema (it rewrites
/// `"{}"` before parsing and then refuses the schema).
fn default_of(c: &Column) -> Option<(Value, Json)> {
    let text = c.default.as_deref()?;
    if matches!(
        c.ty,
        PgType::Bytea
            | PgType::Bits { .. }
            | PgType::Array { .. }
            | PgType::NumericAny(NumericMode::Precise)
    ) {
        return None;
    }
    let v = c.ty.to_avro(text.as_bytes()).ok()?;
    let j = match &v {
        Value::Boolean(b) => json!(b),
        Value::Int(i) => json!(i),
        Value::Long(l) => json!(l),
        Value::Float(f) if f.is_finite() => json!(f),
        Value::Double(d) if d.is_finite() => json!(d),
        Value::String(s) if s != "{}" => json!(s),
        Value::Decimal(d) => json!(Vec::<u8>::try_from(d)
            .ok()?
            .iter()
            .map(|&b| char::from(b))
            .collect::<String>()),
        _ => return None,
    };
    Some((v, j))
}

/// The type's schema with `connect.default`, placed as Kafka Connect's AvroData places it
/// (before `connect.name`).
fn annotate(ty: Json, default: &Json) -> Json {
    match ty {
        Json::String(t) => json!({"type": t, "connect.default": default}),
        Json::Object(m) => {
            let mut out = Map::new();
            let mut placed = false;
            for (k, v) in m {
                if !placed && (k == "connect.name" || k == "logicalType") {
                    out.insert("connect.default".into(), default.clone());
                    placed = true;
                }
                out.insert(k, v);
            }
            if !placed {
                out.insert("connect.default".into(), default.clone());
            }
            Json::Object(out)
        }
        other => other,
    }
}

/// The zero of a column's Avro type, as Debezium's converters fall back to.
fn zero(ty: &PgType) -> Value {
    match ty {
        PgType::Bool | PgType::Bit1 => Value::Boolean(false),
        PgType::Int2 | PgType::Int4 | PgType::Date => Value::Int(0),
        PgType::Int8 | PgType::Oid | PgType::Time | PgType::Timestamp => Value::Long(0),
        PgType::Float4 => Value::Float(0.0),
        PgType::Float8 | PgType::NumericAny(NumericMode::Double) => Value::Double(0.0),
        PgType::Numeric { .. } | PgType::Money => {
            Value::Decimal(apache_avro::Decimal::from(vec![0u8]))
        }
        PgType::NumericAny(NumericMode::Precise) => Value::Record(vec![
            ("scale".into(), Value::Int(0)),
            ("value".into(), Value::Bytes(vec![0])),
        ]),
        PgType::Bytea | PgType::Bits { .. } => Value::Bytes(Vec::new()),
        PgType::Array { .. } => Value::Array(Vec::new()),
        PgType::Uuid => Value::String("00000000-0000-0000-0000-000000000000".into()),
        PgType::TimestampTz => Value::String("1970-01-01T00:00:00Z".into()),
        PgType::TimeTz => Value::String("00:00:00Z".into()),
        PgType::Json | PgType::Hstore => Value::String("{}".into()),
        _ => Value::String(String::new()),
    }
}

/// For `validate`: per table, a note naming the NOT NULL columns whose fields stay
/// optional because a value policy may need null for them (see the module docs).
pub fn optional_not_null_notes(tables: &[(String, Relation)]) -> Vec<String> {
    let mut notes = Vec::new();
    for (quoted, rel) in tables {
        let optional: Vec<String> = field_specs(rel)
            .iter()
            .zip(&rel.columns)
            .filter(|(s, c)| c.not_null && s.shape != Shape::Required)
            .map(|(_, c)| crate::sql::ident(&c.name))
            .collect();
        if !optional.is_empty() {
            notes.push(format!(
                "table {quoted}: NOT NULL columns {} are optional fields: their types can hold values a policy \
                 turns into null (±infinity, NaN, arrays of another shape, or unsent TOASTed values without \
                 a placeholder form); README \"Events\" lists the types",
                optional.join(", ")
            ));
        }
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(ty: PgType, not_null: bool, default: Option<&str>) -> Column {
        Column {
            name: "c".into(),
            type_oid: 0,
            type_modifier: -1,
            ty,
            key: false,
            identity: false,
            not_null,
            default: default.map(Into::into),
        }
    }

    fn rel(identity: u8, c: Column) -> Relation {
        Relation {
            oid: 1,
            schema: "public".into(),
            table: "t".into(),
            replica_identity: identity,
            columns: vec![c],
        }
    }

    fn spec(identity: u8, c: Column) -> (Shape, Json) {
        let r = rel(identity, c);
        let s = field_specs(&r).remove(0);
        let ty = r.columns[0].ty.avro_schema(&mut Default::default());
        (s.shape, s.schema("c", ty))
    }

    #[test]
    fn shapes_and_defaults_as_debezium_registers_them() {
        assert_eq!(
            spec(b'd', col(PgType::Text, true, Some("pending"))).1,
            json!({"name": "c", "type": {"type": "string", "connect.default": "pending"}, "default": "pending"})
        );
        assert_eq!(
            spec(b'd', col(PgType::Int8, false, Some("9000000000"))).1,
            json!({"name": "c", "type": [{"type": "long", "connect.default": 9000000000i64}, "null"], "default": 9000000000i64})
        );
        assert_eq!(
            spec(b'd', col(PgType::Date, false, Some("2024-01-01"))).1,
            json!({"name": "c", "type": [{"type": "int", "connect.version": 1, "connect.default": 19723, "connect.name": "io.debezium.time.Date"}, "null"], "default": 19723})
        );
        assert_eq!(
            spec(
                b'd',
                col(
                    PgType::Numeric {
                        precision: 10,
                        scale: 2
                    },
                    false,
                    Some("0.00")
                )
            )
            .1["default"],
            json!("\u{0}")
        );
        assert_eq!(
            spec(b'd', col(PgType::Bool, true, None)).1,
            json!({"name": "c", "type": "boolean"})
        );
        // Nullable, no default: as before.
        assert_eq!(
            spec(b'd', col(PgType::Text, false, None)).1,
            json!({"name": "c", "type": ["null", "string"], "default": null})
        );
        // The string {} is not carried (Apicurio 3.0.9 refuses it).
        assert_eq!(
            spec(b'd', col(PgType::Json, true, Some("{}"))).1,
            json!({"name": "c", "type": {"type": "string", "connect.version": 1, "connect.name": "io.debezium.data.Json"}})
        );
    }

    #[test]
    fn not_null_stays_optional_where_a_policy_may_need_null() {
        // ±infinity, NaN: unrepresentable.
        assert_eq!(spec(b'f', col(PgType::Date, true, None)).0, Shape::Optional);
        assert_eq!(
            spec(
                b'f',
                col(
                    PgType::Numeric {
                        precision: 5,
                        scale: 0
                    },
                    true,
                    None
                )
            )
            .0,
            Shape::Optional
        );
        // Out-of-line without a placeholder form, unless REPLICA IDENTITY FULL.
        let bits = || col(PgType::Bits { length: 9000 }, true, None);
        assert_eq!(spec(b'd', bits()).0, Shape::Optional);
        assert_eq!(spec(b'f', bits()).0, Shape::Required);
        // Text has a placeholder.
        assert_eq!(spec(b'd', col(PgType::Text, true, None)).0, Shape::Required);
    }

    #[test]
    fn fills_are_the_default_else_zero() {
        let r = rel(b'd', col(PgType::Text, true, Some("pending")));
        let s = field_specs(&r).remove(0);
        assert_eq!(s.wrap(None, &PgType::Text), Value::String("pending".into()));
        let r = rel(b'd', col(PgType::Int4, true, None));
        let s = field_specs(&r).remove(0);
        assert_eq!(s.wrap(None, &PgType::Int4), Value::Int(0));
        assert_eq!(s.wrap(Some(Value::Int(5)), &PgType::Int4), Value::Int(5));
    }
}
