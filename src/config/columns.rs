//! `columns.<schema.table>` in a connector file: which columns are sent, and which are
//! masked, hashed or truncated ([`crate::avro::columns`] applies them).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::Secret;

/// `columns.<schema.table>`: the columns sent (`include` or `exclude`, by name) and
/// what named columns carry instead of their value.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ColumnRules {
    /// Only these columns are sent (the key columns must be among them).
    pub include: Vec<String>,
    /// These columns are not sent.
    pub exclude: Vec<String>,
    /// Column → N: the value is N asterisks (a string field, whatever the column's type).
    pub mask_with_chars: BTreeMap<String, usize>,
    /// Column → N: text values keep their first N characters, `bytea` its first N bytes.
    pub truncate_to_chars: BTreeMap<String, usize>,
    /// Column → salt: the value is the hex SHA-256 of the salt followed by the value's text
    /// (Debezium's `column.mask.hash.v2.SHA-256.with.salt.<salt>`), cut to a
    /// `varchar(n)`/`char(n)` column's length.
    pub hash: BTreeMap<String, Secret>,
}

impl ColumnRules {
    /// Whether `column` is sent under include/exclude.
    pub fn sends(&self, column: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|c| c == column))
            && !self.exclude.iter().any(|c| c == column)
    }

    /// Every column name the rules mention, with the field that names it.
    pub fn named(&self) -> Vec<(&'static str, &str)> {
        let mut out: Vec<(&'static str, &str)> = Vec::new();
        out.extend(self.include.iter().map(|c| ("include", c.as_str())));
        out.extend(self.exclude.iter().map(|c| ("exclude", c.as_str())));
        out.extend(
            self.mask_with_chars
                .keys()
                .map(|c| ("mask_with_chars", c.as_str())),
        );
        out.extend(
            self.truncate_to_chars
                .keys()
                .map(|c| ("truncate_to_chars", c.as_str())),
        );
        out.extend(self.hash.keys().map(|c| ("hash", c.as_str())));
        out
    }

    pub(super) fn validate(&self) -> Result<(), (String, String)> {
        let bad = |f: &str, m: String| Err((f.to_owned(), m));
        if !self.include.is_empty() && !self.exclude.is_empty() {
            return bad(
                "include",
                "and exclude are both set; use one of them".into(),
            );
        }
        let mut seen: Vec<(&str, &str)> = Vec::new();
        for (field, c) in self.named() {
            if field == "include" || field == "exclude" {
                continue;
            }
            if !self.sends(c) {
                return bad(
                    field,
                    format!("names {c:?}, which include/exclude leaves out"),
                );
            }
            if let Some((other, _)) = seen.iter().find(|(_, s)| *s == c) {
                return bad(
                    field,
                    format!("names {c:?}, which {other} names too; give a column one rule"),
                );
            }
            seen.push((field, c));
        }
        for (field, map) in [
            ("mask_with_chars", &self.mask_with_chars),
            ("truncate_to_chars", &self.truncate_to_chars),
        ] {
            if let Some((c, _)) = map.iter().find(|(_, n)| **n == 0) {
                return bad(&format!("{field}.{c}"), "must be at least 1".into());
            }
        }
        if let Some((c, _)) = self.hash.iter().find(|(_, s)| s.0.is_empty()) {
            return bad(
                &format!("hash.{c}"),
                "is an empty salt; give a secret salt (from ${VAR})".into(),
            );
        }
        Ok(())
    }
}
