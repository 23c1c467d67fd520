//! Key and envelope schemas of a table, named as Debezium names them so its consumers and
//! tooling recognise them: `<prefix>.<schema>.<table>.Key`, `.Value` and `.Envelope`, with
//! `io.debezium.connector.postgresql.Source` and `event.block`.

use apache_avro::types::Value;
use apache_avro::Schema;
use serde_json::{json, Value as Json};

use crate::avro::columns::Rule;
use crate::avro::fields::{key_field, FieldSpec};
use crate::decode::Relation;
use crate::error::{Code, Error, Result};
use crate::typemap::Names;

/// Avro names allow `[A-Za-z_][A-Za-z0-9_]*`; Debezium's `avro` adjustment replaces anything
/// else with `_` and prefixes a leading digit.
pub fn avro_name(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.as_bytes()[0].is_ascii_digit() {
        out.insert(0, '_');
    }
    out
}

/// Kafka topic names allow `[a-zA-Z0-9._-]`.
pub fn topic_name(prefix: &str, schema: &str, table: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    format!("{prefix}.{}.{}", clean(schema), clean(table))
}

pub fn namespace(prefix: &str, rel: &Relation) -> String {
    [prefix, &rel.schema, &rel.table]
        .iter()
        .flat_map(|p| p.split('.'))
        .map(avro_name)
        .collect::<Vec<_>>()
        .join(".")
}

/// The Avro field names of a relation's columns; two columns that adjust to the same name
/// are an error rather than a silent overwrite.
pub fn field_names(rel: &Relation) -> Result<Vec<String>> {
    let names: Vec<String> = rel.columns.iter().map(|c| avro_name(&c.name)).collect();
    for (i, n) in names.iter().enumerate() {
        if let Some(j) = names[..i].iter().position(|m| m == n) {
            return Err(Error::permanent(
                Code::Registry,
                format!(
                "table {}: columns {:?} and {:?} both become Avro field {n:?}; rename one of them",
                rel.quoted_name(),
                rel.columns[j].name,
                rel.columns[i].name
            ),
            ));
        }
    }
    Ok(names)
}

pub fn source_schema() -> Json {
    let opt = |name: &str, ty: &str| json!({"name": name, "type": ["null", ty], "default": null});
    json!({
        "type": "record",
        "name": "Source",
        "namespace": "io.debezium.connector.postgresql",
        "fields": [
            {"name": "version", "type": "string"},
            {"name": "connector", "type": "string"},
            {"name": "name", "type": "string"},
            {"name": "ts_ms", "type": "long"},
            {"name": "snapshot", "type": [{
                "type": "string",
                "connect.version": 1,
                "connect.parameters": {"allowed": "true,first,first_in_data_collection,last_in_data_collection,last,false,incremental"},
                "connect.default": "false",
                "connect.name": "io.debezium.data.Enum"
            }, "null"], "default": "false"},
            {"name": "db", "type": "string"},
            opt("sequence", "string"),
            opt("ts_us", "long"),
            opt("ts_ns", "long"),
            {"name": "schema", "type": "string"},
            {"name": "table", "type": "string"},
            opt("txId", "long"),
            opt("lsn", "long"),
            opt("xmin", "long"),
            opt("origin", "string"),
            opt("origin_lsn", "long"),
            // pgcdc's own, after Debezium 3.6's fields: the transaction's commit LSN.
            opt("commit_lsn", "long"),
        ],
        "connect.version": 1,
        "connect.name": "io.debezium.connector.postgresql.Source"
    })
}

pub fn block_schema() -> Json {
    json!({
        "type": "record",
        "name": "block",
        "namespace": "event",
        "fields": [
            {"name": "id", "type": "string"},
            {"name": "total_order", "type": "long"},
            {"name": "data_collection_order", "type": "long"}
        ],
        "connect.version": 1,
        "connect.name": "event.block"
    })
}

/// Schema JSON (as registered) and the parsed schema used to encode.
#[derive(Debug)]
pub struct Built {
    pub json: String,
    pub schema: Schema,
}

pub(crate) fn build(json: Json) -> Result<Built> {
    let text = json.to_string();
    let schema = Schema::parse_str(&text).map_err(|e| {
        Error::permanent(
            Code::Registry,
            format!("internal error: generated Avro schema does not parse: {e}"),
        )
        .with_source(e)
    })?;
    Ok(Built { json: text, schema })
}

/// The key schema, or None for a table without key columns (its events have a null key).
pub fn key_schema(prefix: &str, rel: &Relation) -> Result<Option<Built>> {
    if !rel.has_key() {
        return Ok(None);
    }
    let ns = namespace(prefix, rel);
    let names = field_names(rel)?;
    let mut named = Names::default();
    let fields: Vec<Json> = rel
        .key_columns()
        .map(|(i, c)| key_field(&names[i], c, c.ty.avro_schema(&mut named)))
        .collect();
    build(json!({
        "type": "record",
        "name": "Key",
        "namespace": ns,
        "fields": fields,
        "connect.name": format!("{ns}.Key"),
    }))
    .map(Some)
}

/// The envelope schema; its `Value` fields are shaped as [`crate::avro::fields`] says
/// (required for NOT NULL columns, with Debezium's defaults).
/// Columns whose [`Rule`] drops them are left out; masked, hashed and truncated ones say so.
pub fn envelope_schema(
    prefix: &str,
    rel: &Relation,
    specs: &[FieldSpec],
    rules: &[Rule],
) -> Result<Built> {
    let ns = namespace(prefix, rel);
    let names = field_names(rel)?;
    let mut named = Names::default();
    let fields: Vec<Json> = specs
        .iter()
        .zip(&rel.columns)
        .zip(rules)
        .enumerate()
        .filter(|(_, (_, rule))| **rule != Rule::Drop)
        .map(|(i, ((spec, c), rule))| {
            // A replaced type defines no named type (it would be referenced but missing).
            let ty = if rule.replaces_type() {
                Json::Null
            } else {
                c.ty.avro_schema(&mut named)
            };
            spec.schema(&names[i], rule.field_type(c, ty))
        })
        .collect();
    // Spelled as Java's Avro prints it (Schema.toString(), the text Confluent's AvroConverter
    // looks up): a nested name in the enclosing namespace is written without it.
    let value = json!({
        "type": "record",
        "name": "Value",
        "fields": fields,
        "connect.name": format!("{ns}.Value"),
    });
    let opt_long = |n: &str| json!({"name": n, "type": ["null", "long"], "default": null});
    build(json!({
        "type": "record",
        "name": "Envelope",
        "namespace": ns,
        "fields": [
            {"name": "before", "type": ["null", value], "default": null},
            {"name": "after", "type": ["null", "Value"], "default": null},
            {"name": "source", "type": source_schema()},
            {"name": "transaction", "type": ["null", block_schema()], "default": null},
            {"name": "op", "type": "string"},
            opt_long("ts_ms"),
            opt_long("ts_us"),
            opt_long("ts_ns"),
        ],
        "connect.version": 2,
        "connect.name": format!("{ns}.Envelope"),
    }))
}

/// `["null", T]` holding a value.
pub fn some(v: Value) -> Value {
    Value::Union(1, Box::new(v))
}

/// `["null", T]` holding null.
pub fn none() -> Value {
    Value::Union(0, Box::new(Value::Null))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NumericMode;
    use crate::decode::Column;
    use crate::typemap::PgType;

    fn rel(cols: &[(&str, PgType, bool)]) -> Relation {
        Relation {
            oid: 1,
            schema: "public".into(),
            table: "order-lines".into(),
            replica_identity: b'd',
            columns: cols
                .iter()
                .map(|(n, t, k)| Column {
                    name: (*n).into(),
                    type_oid: 0,
                    type_modifier: -1,
                    ty: t.clone(),
                    key: *k,
                    identity: *k,
                    not_null: false,
                    default: None,
                })
                .collect(),
        }
    }

    #[test]
    fn names_follow_debezium() {
        let r = rel(&[
            ("id", PgType::Int4, true),
            ("1st note", PgType::Text, false),
        ]);
        assert_eq!(
            topic_name("shop", &r.schema, &r.table),
            "shop.public.order-lines"
        );
        assert_eq!(namespace("shop", &r), "shop.public.order_lines");
        assert_eq!(field_names(&r).unwrap(), vec!["id", "_1st_note"]);
        let key = key_schema("shop", &r).unwrap().unwrap();
        assert!(
            key.json
                .contains("\"connect.name\":\"shop.public.order_lines.Key\""),
            "{}",
            key.json
        );
        let env = envelope_schema(
            "shop",
            &r,
            &crate::avro::fields::field_specs(&r),
            &vec![Rule::Keep; r.columns.len()],
        )
        .unwrap();
        assert!(env.json.contains("io.debezium.connector.postgresql.Source"));
        // Java's spelling: names in the enclosing namespace are written without it (the text
        // Confluent's AvroConverter looks up); the parsed schema still has the full name.
        assert!(
            env.json
                .contains("{\"type\":\"record\",\"name\":\"Value\",\"fields\"")
                && env
                    .json
                    .contains("{\"name\":\"after\",\"type\":[\"null\",\"Value\"]"),
            "{}",
            env.json
        );
    }

    #[test]
    fn colliding_field_names_are_an_error() {
        let r = rel(&[("a b", PgType::Int4, true), ("a_b", PgType::Text, false)]);
        let e = envelope_schema(
            "shop",
            &r,
            &crate::avro::fields::field_specs(&r),
            &vec![Rule::Keep; r.columns.len()],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("both become Avro field"), "{e}");
    }

    #[test]
    fn keyless_table_has_no_key_schema() {
        let r = rel(&[("v", PgType::Text, false)]);
        assert!(key_schema("shop", &r).unwrap().is_none());
    }

    #[test]
    fn named_types_in_several_columns_parse() {
        let v = PgType::NumericAny(NumericMode::Precise);
        let r = rel(&[
            ("a", v.clone(), true),
            ("b", v.clone(), false),
            (
                "c",
                PgType::Array {
                    elem: Box::new(v),
                    delim: b',',
                },
                false,
            ),
        ]);
        envelope_schema(
            "shop",
            &r,
            &crate::avro::fields::field_specs(&r),
            &vec![Rule::Keep; r.columns.len()],
        )
        .unwrap();
        key_schema("shop", &r).unwrap().unwrap();
    }
}
