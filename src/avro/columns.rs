//! What a table's configured column rules (`columns.<schema.table>`) make of each column:
//! sent as is, left out, masked, hashed or truncated; and how its field's schema says so,
//! as Debezium's column mappers do (`connect.parameters` `masked` / `truncateLength`).
//!
//! Two differences from Debezium, both so that nothing configured as hidden leaks:
//! - a masked or hashed column becomes a string field whatever its type (Debezium passes a
//!   non-string column through unmasked), optional and without default (a default would
//!   carry an unmasked value in the schema); a NULL stays null;
//! - a rule on a key column is refused: a key is sent whole, or the table's events could
//!   no longer be told apart.

use std::sync::Arc;

use apache_avro::types::Value;
use serde_json::{json, Map, Value as Json};
use sha2::{Digest, Sha256};

use crate::config::{ColumnRules, ConnectorConfig, TableName};
use crate::decode::{Column, Relation};
use crate::error::{Code, Error, Result};
use crate::typemap::PgType;

const VARCHAR_OID: u32 = 1043;
const BPCHAR_OID: u32 = 1042;

/// What one column's field carries.
#[derive(Debug, Clone, PartialEq)]
pub enum Rule {
    Keep,
    /// Not in the schema, not in events.
    Drop,
    /// This string instead of every non-null value.
    Mask(Arc<str>),
    /// Text values cut to this many characters, bytes to this many bytes.
    Truncate(usize),
    /// Hex SHA-256 of salt ‖ text, cut to `len` characters.
    Hash {
        salt: Arc<[u8]>,
        len: Option<usize>,
    },
}

/// The declared length of a `varchar(n)` / `char(n)` column.
fn declared_length(c: &Column) -> Option<usize> {
    (matches!(c.type_oid, VARCHAR_OID | BPCHAR_OID) && c.type_modifier >= 4)
        .then(|| (c.type_modifier - 4) as usize)
}

/// Each column's rule for `rel` (all [`Rule::Keep`] for a table without rules).
pub fn rules(conn: &ConnectorConfig, rel: &Relation) -> Result<Vec<Rule>> {
    let name = TableName::new(&rel.schema, &rel.table);
    let Some(cfg) = conn.columns.get(&name) else {
        return Ok(vec![Rule::Keep; rel.columns.len()]);
    };
    for (field, c) in cfg.named() {
        if !rel.columns.iter().any(|col| col.name == c) {
            // A column dropped since the file was written: nothing to apply the rule to.
            tracing::warn!(connector = %conn.name, table = %rel.quoted_name(), column = c,
                "columns.{name}.{field} names a column the table does not have (now); the rule applies to nothing");
        }
    }
    rel.columns
        .iter()
        .map(|c| rule(conn, &name, cfg, rel, c))
        .collect()
}

fn rule(
    conn: &ConnectorConfig,
    name: &TableName,
    cfg: &ColumnRules,
    rel: &Relation,
    c: &Column,
) -> Result<Rule> {
    let r = if !cfg.sends(&c.name) {
        Rule::Drop
    } else if let Some(n) = cfg.mask_with_chars.get(&c.name) {
        Rule::Mask("*".repeat(*n).into())
    } else if let Some(salt) = cfg.hash.get(&c.name) {
        Rule::Hash {
            salt: salt.0.as_bytes().into(),
            len: declared_length(c),
        }
    } else if let Some(n) = cfg.truncate_to_chars.get(&c.name) {
        if matches!(c.ty, PgType::Text | PgType::Other { .. } | PgType::Bytea) {
            Rule::Truncate(*n)
        } else {
            tracing::warn!(connector = %conn.name, table = %rel.quoted_name(), column = %c.name,
                "columns.{name}.truncate_to_chars applies to text and bytea columns; this one is sent whole");
            Rule::Keep
        }
    } else {
        Rule::Keep
    };
    if c.key && r != Rule::Keep {
        return Err(Error::permanent(
            Code::Config,
            format!(
                "connector {}: columns.{name}: column {:?} of table {} is part of the event key, which is sent whole; \
                 take it out of the column rules (or choose other key_columns)",
                conn.name,
                c.name,
                rel.quoted_name()
            ),
        ));
    }
    Ok(r)
}

impl Rule {
    /// A masked or hashed column: a string whatever its type.
    pub fn replaces_type(&self) -> bool {
        matches!(self, Rule::Mask(_) | Rule::Hash { .. })
    }

    /// The field's type schema under this rule, from the column's own.
    pub fn field_type(&self, c: &Column, ty: Json) -> Json {
        match self {
            Rule::Mask(_) | Rule::Hash { .. } => {
                json!({"type": "string", "connect.parameters": {"masked": "true"}})
            }
            // As Debezium: said only where it can cut (length unknown or over N).
            Rule::Truncate(n) if declared_length(c).is_none_or(|l| l > *n) => {
                with_parameter(ty, "truncateLength", n.to_string())
            }
            _ => ty,
        }
    }

    /// The value of a non-null cell given as PostgreSQL's text (mask, hash).
    pub fn replace(&self, text: &[u8]) -> Option<Value> {
        match self {
            Rule::Mask(m) => Some(Value::String(m.to_string())),
            Rule::Hash { salt, len } => {
                let mut h = Sha256::new();
                h.update(salt);
                h.update(text);
                let mut hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
                if let Some(l) = len {
                    hex.truncate(*l);
                }
                Some(Value::String(hex))
            }
            _ => None,
        }
    }

    /// A converted value under [`Rule::Truncate`].
    pub fn truncate(&self, v: Value) -> Value {
        match (self, v) {
            (Rule::Truncate(n), Value::String(s)) => match s.char_indices().nth(*n) {
                Some((at, _)) => Value::String(s[..at].to_owned()),
                None => Value::String(s),
            },
            (Rule::Truncate(n), Value::Bytes(mut b)) => {
                b.truncate(*n);
                Value::Bytes(b)
            }
            (_, v) => v,
        }
    }
}

/// `ty` with `connect.parameters.<key> = value`, placed as Kafka Connect's AvroData places
/// it (after `connect.version`, before `connect.default` and `connect.name`).
fn with_parameter(ty: Json, key: &str, value: String) -> Json {
    let mut m = match ty {
        Json::String(t) => {
            let mut m = Map::new();
            m.insert("type".into(), Json::String(t));
            m
        }
        Json::Object(m) => m,
        other => return other,
    };
    if let Some(Json::Object(p)) = m.get_mut("connect.parameters") {
        p.insert(key.into(), Json::String(value));
        return Json::Object(m);
    }
    let mut out = Map::new();
    let mut placed = false;
    for (k, v) in m {
        if !placed && (k == "connect.default" || k == "connect.name" || k == "logicalType") {
            out.insert("connect.parameters".into(), json!({ key: value }));
            placed = true;
        }
        out.insert(k, v);
    }
    if !placed {
        out.insert("connect.parameters".into(), json!({ key: value }));
    }
    Json::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_debeziums_v2_sha256_of_salt_and_text() {
        // echo -n 'pepperann@example.com' | sha256sum
        let r = Rule::Hash {
            salt: b"pepper".as_slice().into(),
            len: None,
        };
        let Some(Value::String(h)) = r.replace(b"ann@example.com") else {
            panic!()
        };
        assert_eq!(
            h,
            "831740710d6a8225c6ad8e71610353afdfcf9f6a3caa448dc11ab17a513081c2"
        );
        let cut = Rule::Hash {
            salt: b"pepper".as_slice().into(),
            len: Some(10),
        };
        let Some(Value::String(c)) = cut.replace(b"ann@example.com") else {
            panic!()
        };
        assert_eq!(c, h[..10]);
    }

    #[test]
    fn truncation_counts_characters_and_bytes() {
        let r = Rule::Truncate(3);
        assert_eq!(
            r.truncate(Value::String("héllo".into())),
            Value::String("hél".into())
        );
        assert_eq!(
            r.truncate(Value::String("hé".into())),
            Value::String("hé".into())
        );
        assert_eq!(
            r.truncate(Value::Bytes(vec![1, 2, 3, 4])),
            Value::Bytes(vec![1, 2, 3])
        );
    }

    #[test]
    fn parameters_sit_where_kafka_connect_puts_them() {
        let c = Column::test("c", PgType::Text, false);
        assert_eq!(
            Rule::Truncate(5)
                .field_type(&c, json!("string"))
                .to_string(),
            r#"{"type":"string","connect.parameters":{"truncateLength":"5"}}"#
        );
        let ty = json!({"type": "string", "connect.default": "x"});
        assert_eq!(
            Rule::Truncate(5).field_type(&c, ty).to_string(),
            r#"{"type":"string","connect.parameters":{"truncateLength":"5"},"connect.default":"x"}"#
        );
        let mut v = Column::test("v", PgType::Text, false);
        v.type_oid = VARCHAR_OID;
        v.type_modifier = 4 + 5;
        assert_eq!(
            Rule::Truncate(5).field_type(&v, json!("string")),
            json!("string")
        );
        assert_eq!(
            Rule::Mask("**".into())
                .field_type(&c, json!("long"))
                .to_string(),
            r#"{"type":"string","connect.parameters":{"masked":"true"}}"#
        );
    }
}
