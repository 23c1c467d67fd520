//! What an event carries when a value cannot travel as PostgreSQL wrote it, and how the
//! event says so.
//!
//! Two cases, each with a configured policy whose default keeps the stream flowing:
//!
//! - **Unavailable**: PostgreSQL did not send the value (an unchanged TOASTed column under
//!   REPLICA IDENTITY DEFAULT) and pgcdc could not complete it exactly (see [`crate::toast`]).
//!   The column carries Debezium's `unavailable.value.placeholder` in its own type (a
//!   string, the placeholder's UTF-8 bytes, an array of one placeholder element), or null
//!   where the type has no placeholder form.
//! - **Lossy**: the Debezium-compatible Avro type cannot hold the value (NaN in a
//!   `numeric(p,s)`, an array of a shape the schema does not have). Under
//!   `unrepresentable: null` the column is null.
//!
//! Either way the record gets a header naming the columns (`pgcdc.unavailable`,
//! `pgcdc.lossy`; a JSON array of column names), a labeled counter counts them, and the log
//! warns once per column. Nothing is silent.

use std::collections::HashSet;
use std::sync::Mutex;

use apache_avro::types::Value;

use crate::config::{ConnectorConfig, ToastMode, Unrepresentable};
use crate::decode::Relation;
use crate::metrics;
use crate::typemap::PgType;

/// Header naming the columns that carry the placeholder.
pub const HEADER_UNAVAILABLE: &str = "pgcdc.unavailable";
/// Header naming the columns nulled because their type cannot hold the value.
pub const HEADER_LOSSY: &str = "pgcdc.lossy";

/// A connector's rules for values that cannot travel as PostgreSQL wrote them.
pub struct ValuePolicy {
    pub connector: String,
    pub toast: ToastMode,
    pub placeholder: Placeholder,
    pub unrepresentable: Unrepresentable,
    /// (table, column, kind) already logged: one warning per column, not per row.
    warned: Mutex<HashSet<(String, String, &'static str)>>,
}

impl ValuePolicy {
    pub fn of(conn: &ConnectorConfig) -> Self {
        ValuePolicy {
            connector: conn.name.clone(),
            toast: conn.toast,
            placeholder: Placeholder::new(&conn.unavailable_value_placeholder),
            unrepresentable: conn.unrepresentable,
            warned: Mutex::new(HashSet::new()),
        }
    }

    /// The first time a column of a table falls under a policy: one warning line.
    fn warn_once(&self, rel: &Relation, column: usize, kind: &'static str, why: &str) {
        let Some(col) = rel.columns.get(column) else {
            return;
        };
        // Key-only old images lack the same columns in every delete: once per table.
        let per = if kind == "missing" {
            String::new()
        } else {
            col.name.clone()
        };
        let first = self
            .warned
            .lock()
            .map(|mut w| w.insert((rel.qualified_name(), per, kind)))
            .unwrap_or(false);
        if first && kind == "missing" {
            tracing::info!(connector = %self.connector, table = %rel.quoted_name(), "{why} (logged once per table)");
        } else if first {
            tracing::warn!(
                connector = %self.connector,
                table = %rel.quoted_name(),
                column = %crate::sql::ident(&col.name),
                "{why} (logged once per column; header {}, metric {})",
                if kind == "lossy" { HEADER_LOSSY } else { HEADER_UNAVAILABLE },
                if kind == "lossy" { metrics::LOSSY_VALUES.series() } else { metrics::UNAVAILABLE_VALUES.series() },
            );
        }
    }
}

/// The columns of one event that fall under a policy, by column index.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Marks {
    pub unavailable: Vec<usize>,
    pub lossy: Vec<usize>,
    /// Columns a key-only old image does not carry (named in `pgcdc.unavailable` too, but
    /// neither counted nor warned about per column: every such delete lacks them).
    pub missing: Vec<usize>,
}

impl Marks {
    pub fn is_empty(&self) -> bool {
        self.unavailable.is_empty() && self.lossy.is_empty() && self.missing.is_empty()
    }

    pub fn missing(&mut self, i: usize) {
        if !self.missing.contains(&i) {
            self.missing.push(i);
        }
    }

    pub fn unavailable(&mut self, i: usize) {
        if !self.unavailable.contains(&i) {
            self.unavailable.push(i);
        }
    }

    pub fn lossy(&mut self, i: usize) {
        if !self.lossy.contains(&i) {
            self.lossy.push(i);
        }
    }

    /// The record headers for these marks, and the counts and warnings that go with them.
    pub fn headers(&self, rel: &Relation, policy: &ValuePolicy) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let table = rel.qualified_name();
        for (name, cols, metric, kind, why) in [
            (
                HEADER_UNAVAILABLE,
                &self.unavailable,
                metrics::UNAVAILABLE_VALUES,
                "unavailable",
                "an update left this TOASTed column unchanged, PostgreSQL did not send it, and pgcdc \
                 could not complete it exactly: the event carries the placeholder",
            ),
            (
                HEADER_LOSSY,
                &self.lossy,
                metrics::LOSSY_VALUES,
                "lossy",
                "a value of this column does not fit its Avro type: the event carries null, or in a \
                 required (NOT NULL) field the column default or zero (unrepresentable: null)",
            ),
        ] {
            // The header also names the columns a key-only old image lacked; the metric and
            // the per-column warning are for the marked ones only.
            let mut named = cols.clone();
            if name == HEADER_UNAVAILABLE && !self.missing.is_empty() {
                policy.warn_once(
                    rel,
                    self.missing[0],
                    "missing",
                    "PostgreSQL sends only the key of a deleted row under this table's replica identity: \
                     before's other columns are null, or in a NOT NULL field the column default or zero, \
                     as in Debezium, and header pgcdc.unavailable names them; ALTER TABLE … REPLICA \
                     IDENTITY FULL sends whole rows",
                );
                named.extend(self.missing.iter().filter(|i| !cols.contains(i)));
            }
            if named.is_empty() {
                continue;
            }
            let names: Vec<&str> = named
                .iter()
                .filter_map(|&i| rel.columns.get(i).map(|c| c.name.as_str()))
                .collect();
            if !cols.is_empty() {
                metrics::count(metric, &policy.connector, &table, cols.len() as u64);
            }
            for &i in cols {
                policy.warn_once(rel, i, kind, why);
            }
            out.push((
                name,
                serde_json::to_string(&names).unwrap_or_else(|_| "[]".into()),
            ));
        }
        out
    }
}

/// Debezium's `unavailable.value.placeholder`: text, or octets given as `hex:…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placeholder {
    pub bytes: Vec<u8>,
    pub text: String,
}

impl Placeholder {
    pub fn new(setting: &str) -> Self {
        let bytes = match setting.strip_prefix("hex:").and_then(parse_hex) {
            Some(b) => b,
            None => setting.as_bytes().to_vec(),
        };
        Placeholder {
            text: String::from_utf8_lossy(&bytes).into_owned(),
            bytes,
        }
    }

    /// Java's `UUID.nameUUIDFromBytes` of the placeholder, Debezium's `uuid[]` form.
    fn name_uuid(&self) -> String {
        use md5::{Digest, Md5};
        let mut h: [u8; 16] = Md5::digest(&self.bytes).into();
        h[6] = (h[6] & 0x0f) | 0x30;
        h[8] = (h[8] & 0x3f) | 0x80;
        let hex: String = h.iter().map(|b| format!("{b:02x}")).collect();
        format!(
            "{}-{}-{}-{}-{}",
            &hex[0..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..32]
        )
    }
}

pub(crate) fn parse_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Debezium's placeholder in the Avro type of `ty` (as its PostgreSQL connector converts it,
/// `UnchangedToastedPlaceholder`), or None where Debezium's own conversion fails and sends
/// null: other arrays, decimals, numbers, bits. Such a column is null, and the header
/// still names it.
pub fn placeholder_value(ty: &PgType, p: &Placeholder) -> Option<Value> {
    let one = |v: Value| Value::Array(vec![Value::Union(1, Box::new(v))]);
    match ty {
        PgType::Text
        | PgType::Json
        | PgType::Xml
        | PgType::Inet
        | PgType::Cidr
        | PgType::MacAddr
        | PgType::VarBit
        | PgType::Interval
        | PgType::TimeTz
        | PgType::TimestampTz
        | PgType::Uuid
        | PgType::Enum { .. }
        | PgType::NumericAny(crate::config::NumericMode::String)
        | PgType::Other { .. } => Some(Value::String(p.text.clone())),
        // hstore as JSON: Debezium's map {placeholder: placeholder}.
        PgType::Hstore => {
            let mut m = serde_json::Map::new();
            m.insert(p.text.clone(), serde_json::Value::String(p.text.clone()));
            Some(Value::String(serde_json::Value::Object(m).to_string()))
        }
        PgType::Bytea => Some(Value::Bytes(p.bytes.clone())),
        PgType::Array { elem, .. } => match elem.as_ref() {
            PgType::Text | PgType::Json => Some(one(Value::String(p.text.clone()))),
            PgType::Bytea => Some(one(Value::Bytes(p.bytes.clone()))),
            PgType::Uuid => Some(one(Value::String(p.name_uuid()))),
            // int4[] and date[]: one element per placeholder byte (Java's signed bytes).
            PgType::Int4 | PgType::Date => Some(Value::Array(
                p.bytes
                    .iter()
                    .map(|&b| Value::Union(1, Box::new(Value::Int(i32::from(b as i8)))))
                    .collect(),
            )),
            PgType::Int8 => Some(Value::Array(
                p.bytes
                    .iter()
                    .map(|&b| Value::Union(1, Box::new(Value::Long(i64::from(b as i8)))))
                    .collect(),
            )),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_take_debeziums_form_per_type() {
        let p = Placeholder::new(crate::config::DEFAULT_UNAVAILABLE_PLACEHOLDER);
        let s = |v: &str| Value::String(v.into());
        assert_eq!(
            placeholder_value(&PgType::Text, &p),
            Some(s("__debezium_unavailable_value"))
        );
        assert_eq!(
            placeholder_value(&PgType::Bytea, &p),
            Some(Value::Bytes(b"__debezium_unavailable_value".to_vec()))
        );
        assert_eq!(
            placeholder_value(&PgType::Hstore, &p),
            Some(s(
                r#"{"__debezium_unavailable_value":"__debezium_unavailable_value"}"#
            ))
        );
        let arr = |e: PgType| PgType::Array {
            elem: Box::new(e),
            delim: b',',
        };
        // Debezium's tests assert this UUID for the default placeholder.
        assert_eq!(
            placeholder_value(&arr(PgType::Uuid), &p),
            Some(Value::Array(vec![Value::Union(
                1,
                Box::new(s("b68a35a7-17ad-35b3-af2a-ae46edb4545a"))
            )]))
        );
        match placeholder_value(&arr(PgType::Int4), &p) {
            Some(Value::Array(items)) => {
                assert_eq!(items.len(), 28);
                assert_eq!(items[0], Value::Union(1, Box::new(Value::Int(95))));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(placeholder_value(&arr(PgType::Int2), &p), None);
        assert_eq!(
            placeholder_value(
                &PgType::Numeric {
                    precision: 5,
                    scale: 2
                },
                &p
            ),
            None
        );
        let hex = Placeholder::new("hex:00ff41");
        assert_eq!(hex.bytes, vec![0, 255, 65]);
        assert_eq!(
            placeholder_value(&arr(PgType::Int8), &hex),
            Some(Value::Array(
                [0i64, -1, 65]
                    .iter()
                    .map(|&v| Value::Union(1, Box::new(Value::Long(v))))
                    .collect()
            ))
        );
    }
}
