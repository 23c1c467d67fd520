//! Table and topic names as connector files spell them.

use std::fmt;

use serde::Deserialize;

/// A table a connector file names: `schema.table`, each part raw (`Sales & Co.Order Lines`)
/// or as SQL quotes it (`"Sales & Co"."Order Lines"`, as pgcdc's hints print it). Parsed
/// once, when the file is read; a name that is not `schema.table` is an error naming the
/// field.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub struct TableName {
    schema: String,
    table: String,
}

impl TableName {
    pub fn new(schema: impl Into<String>, table: impl Into<String>) -> Self {
        TableName {
            schema: schema.into(),
            table: table.into(),
        }
    }

    /// Reads a name as a connector file or a command line spells it.
    pub fn parse(spelled: &str) -> Result<Self, String> {
        let raw = unquote_table(spelled)?;
        let (schema, table) = qualified(&raw)?;
        Ok(TableName::new(schema, table))
    }

    pub fn schema(&self) -> &str {
        &self.schema
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    pub fn is(&self, schema: &str, table: &str) -> bool {
        self.schema == schema && self.table == table
    }

    /// The name as SQL needs it: `public.orders`, `"Sales & Co"."Order Lines"`.
    pub fn quoted(&self) -> String {
        crate::sql::qualified(&self.schema, &self.table)
    }
}

impl TryFrom<String> for TableName {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        TableName::parse(&s)
    }
}

/// The raw `schema.table` (how topics, metrics and checkpoints name a table).
impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.table)
    }
}

pub(crate) fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !s.as_bytes()[0].is_ascii_digit()
}

/// `schema.table` with either part in SQL double quotes → the raw `schema.table`. Unquoted
/// parts are taken as written (no case folding: the raw form names tables exactly).
pub fn unquote_table(name: &str) -> Result<String, String> {
    if !name.contains('"') {
        return Ok(name.to_owned());
    }
    let mut parts = Vec::new();
    let mut chars = name.chars().peekable();
    loop {
        let mut part = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        part.push('"');
                    }
                    Some('"') => break,
                    Some(c) => part.push(c),
                    None => return Err(format!("{name:?} has an unterminated quoted name")),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == '.' || c == '"' {
                    break;
                }
                part.push(c);
                chars.next();
            }
        }
        if part.contains('.') {
            return Err(format!(
                "{name:?}: names containing a dot are not supported"
            ));
        }
        parts.push(part);
        match chars.next() {
            None => break,
            Some('.') => continue,
            Some(_) => {
                return Err(format!(
                "{name:?} must be schema.table, e.g. public.orders or \"Sales\".\"Order Lines\""
            ))
            }
        }
    }
    match parts.as_slice() {
        [s, t] if !s.is_empty() && !t.is_empty() => Ok(format!("{s}.{t}")),
        _ => Err(format!(
            "{name:?} must be schema.table, e.g. public.orders or \"Sales\".\"Order Lines\""
        )),
    }
}

/// Splits `schema.table`.
pub fn qualified(name: &str) -> Result<(&str, &str), String> {
    match name.split_once('.') {
        Some((s, t)) if !s.is_empty() && !t.is_empty() && !t.contains('.') => Ok((s, t)),
        _ => Err(format!("{name:?} must be schema.table, e.g. public.orders")),
    }
}

pub(crate) fn validate_topic_name(t: &str) -> Result<(), String> {
    if t.is_empty() || t.len() > 200 {
        return Err("must be 1 to 200 characters".into());
    }
    if !t
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err(format!(
            "{t:?} may only contain letters, digits, '.', '_' and '-' (Kafka topic rules)"
        ));
    }
    Ok(())
}
