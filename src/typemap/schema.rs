//! The Avro schema each PostgreSQL type is carried as, spelled as Debezium spells it.

use std::collections::HashSet;

use serde_json::{json, Value as Json};

use crate::config::NumericMode;

use super::*;

/// Named Avro types already defined in the schema being built: a name is defined once and
/// referenced afterwards.
#[derive(Default)]
pub struct Names(HashSet<String>);

pub(in crate::typemap) const VARIABLE_SCALE_DECIMAL: &str = "io.debezium.data.VariableScaleDecimal";

pub(in crate::typemap) fn semantic(base: &str, name: &str) -> Json {
    json!({"type": base, "connect.version": 1, "connect.name": name})
}

pub(in crate::typemap) fn decimal_schema(precision: Option<u32>, scale: u32) -> Json {
    let mut params = serde_json::Map::new();
    params.insert("scale".into(), json!(scale.to_string()));
    if let Some(p) = precision {
        params.insert("connect.decimal.precision".into(), json!(p.to_string()));
    }
    json!({
        "type": "bytes",
        "scale": scale,
        // Avro requires a precision; money and unbounded decimals use numeric's maximum.
        "precision": precision.unwrap_or(1000),
        "connect.version": 1,
        "connect.parameters": params,
        "connect.name": "org.apache.kafka.connect.data.Decimal",
        "logicalType": "decimal",
    })
}

impl PgType {
    /// The Avro schema of a non-null value of this type.
    pub fn avro_schema(&self, names: &mut Names) -> Json {
        match self {
            PgType::Bool | PgType::Bit1 => json!("boolean"),
            PgType::Int2 => json!({"type": "int", "connect.type": "int16"}),
            PgType::Int4 => json!("int"),
            PgType::Int8 | PgType::Oid => json!("long"),
            PgType::Float4 => json!("float"),
            PgType::Float8 => json!("double"),
            PgType::Numeric { precision, scale } => decimal_schema(Some(*precision), *scale),
            PgType::Money => decimal_schema(None, 2),
            PgType::NumericAny(NumericMode::Double) => json!("double"),
            PgType::NumericAny(NumericMode::String) => json!("string"),
            PgType::NumericAny(NumericMode::Precise) => {
                if !names.0.insert(VARIABLE_SCALE_DECIMAL.into()) {
                    return json!(VARIABLE_SCALE_DECIMAL);
                }
                json!({
                    "type": "record",
                    "name": "VariableScaleDecimal",
                    "namespace": "io.debezium.data",
                    "fields": [
                        {"name": "scale", "type": "int"},
                        {"name": "value", "type": "bytes"}
                    ],
                    "connect.doc": "Variable scaled decimal",
                    "connect.version": 1,
                    "connect.name": VARIABLE_SCALE_DECIMAL,
                })
            }
            PgType::Text | PgType::Inet | PgType::Cidr | PgType::MacAddr | PgType::VarBit => {
                json!("string")
            }
            PgType::Other { .. } => json!("string"),
            PgType::Bytea => json!("bytes"),
            PgType::Uuid => semantic("string", "io.debezium.data.Uuid"),
            PgType::Json | PgType::Hstore => semantic("string", "io.debezium.data.Json"),
            PgType::Xml => semantic("string", "io.debezium.data.Xml"),
            PgType::Date => semantic("int", "io.debezium.time.Date"),
            PgType::Time => semantic("long", "io.debezium.time.MicroTime"),
            PgType::TimeTz => semantic("string", "io.debezium.time.ZonedTime"),
            PgType::Timestamp => semantic("long", "io.debezium.time.MicroTimestamp"),
            PgType::TimestampTz => semantic("string", "io.debezium.time.ZonedTimestamp"),
            PgType::Interval => semantic("string", "io.debezium.time.Interval"),
            PgType::Enum { labels } => json!({
                "type": "string",
                "connect.version": 1,
                "connect.parameters": {"allowed": labels.join(",")},
                "connect.name": "io.debezium.data.Enum",
            }),
            PgType::Bits { length } => json!({
                "type": "bytes",
                "connect.version": 1,
                "connect.parameters": {"length": length.to_string()},
                "connect.name": "io.debezium.data.Bits",
            }),
            PgType::Array { elem, .. } => {
                json!({"type": "array", "items": ["null", elem.avro_schema(names)]})
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// Values
