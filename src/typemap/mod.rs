//! PostgreSQL types → Avro schemas and values, following Debezium's PostgreSQL connector so
//! that its consumers read our events unchanged.
//!
//! Values arrive in PostgreSQL's text output format. The replication session pins the output
//! settings that text depends on (see `postgres::SESSION_OPTIONS`): `DateStyle=ISO`,
//! `TimeZone=UTC`, `IntervalStyle=iso_8601`, `extra_float_digits=3`, `bytea_output=hex`,
//! `lc_monetary=C`.
//!
//! Fidelity rule: a value either converts exactly or the conversion fails with an error that
//! names the type; nothing becomes a sentinel or a truncated form here. What a failed value
//! becomes is the connector's `unrepresentable` policy ([`crate::avro::policy`]). Where
//! Debezium's mapping loses information we deviate, and README.md lists each deviation.
//!
//! - this file: the types ([`PgType`]) and how a column's catalog entry resolves to one;
//! - [`schema`]: the Avro schema each type is carried as;
//! - [`value`]: text output → Avro value, or a [`ValueError`] naming the problem;
//! - `text`: parsers for PostgreSQL's text output formats (numbers, arrays, hstore, dates).

#[cfg(test)]
mod props;
mod schema;
#[cfg(test)]
mod tests;
mod text;
mod value;

pub use schema::Names;
#[cfg(test)]
pub(crate) use text::parse_decimal;
pub use value::{Scalar, ValueError};

use crate::config::NumericMode;

/// A composite type: its schema and name, and its attributes with their types.
#[derive(Debug, Clone, PartialEq)]
pub struct Composite {
    pub schema: String,
    pub name: String,
    pub fields: Vec<(String, PgType)>,
}

/// How one PostgreSQL column type is carried. Domains are resolved to their base type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgType {
    Bool,
    Int2,
    Int4,
    Int8,
    Oid,
    Float4,
    Float8,
    /// `numeric(p, s)` with 0 <= s <= p: an Avro decimal.
    Numeric {
        precision: u32,
        scale: u32,
    },
    /// `numeric` without (usable) precision and scale: carried per [`NumericMode`].
    NumericAny(NumericMode),
    Text,
    Bytea,
    Uuid,
    Json,
    Xml,
    Date,
    Time,
    TimeTz,
    Timestamp,
    TimestampTz,
    Interval,
    Enum {
        labels: Vec<String>,
    },
    Array {
        elem: Box<PgType>,
        delim: u8,
    },
    Inet,
    Cidr,
    MacAddr,
    Money,
    /// `bit(1)`: a boolean, as Debezium.
    Bit1,
    /// `bit(n)`, n > 1: Debezium's `io.debezium.data.Bits`, little-endian bytes.
    Bits {
        length: u32,
    },
    /// `bit varying`: a string of 0 and 1 (Debezium's bytes would lose trailing zero bits).
    VarBit,
    Hstore,
    /// Any other type: PostgreSQL's text form as a string.
    Other {
        name: String,
    },
}

/// What the catalog says about a type; enough to build a [`PgType`].
#[derive(Debug, Clone)]
pub struct TypeInfo {
    pub name: String,
    pub schema: String,
    /// `b` base, `d` domain, `e` enum, `c` composite, `r` range, `m` multirange, `p` pseudo.
    pub typtype: u8,
    pub category: u8,
    pub enum_labels: Vec<String>,
    pub delim: u8,
}

impl PgType {
    /// A base, enum or other non-domain, non-array type with its column type modifier.
    pub fn scalar(info: &TypeInfo, typmod: i32, numeric_mode: NumericMode) -> PgType {
        if info.typtype == b'e' {
            return PgType::Enum {
                labels: info.enum_labels.clone(),
            };
        }
        let builtin = info.schema == "pg_catalog";
        match (builtin, info.name.as_str()) {
            (true, "bool") => PgType::Bool,
            (true, "int2") => PgType::Int2,
            (true, "int4") => PgType::Int4,
            (true, "int8") => PgType::Int8,
            (true, "oid") => PgType::Oid,
            (true, "float4") => PgType::Float4,
            (true, "float8") => PgType::Float8,
            (true, "numeric") => numeric_from_typmod(typmod, numeric_mode),
            (true, "text" | "varchar" | "bpchar" | "name" | "char") => PgType::Text,
            (_, "citext") => PgType::Text,
            (true, "bytea") => PgType::Bytea,
            (true, "uuid") => PgType::Uuid,
            (true, "json" | "jsonb") => PgType::Json,
            (true, "xml") => PgType::Xml,
            (true, "date") => PgType::Date,
            (true, "time") => PgType::Time,
            (true, "timetz") => PgType::TimeTz,
            (true, "timestamp") => PgType::Timestamp,
            (true, "timestamptz") => PgType::TimestampTz,
            (true, "interval") => PgType::Interval,
            (true, "inet") => PgType::Inet,
            (true, "cidr") => PgType::Cidr,
            (true, "macaddr" | "macaddr8") => PgType::MacAddr,
            (true, "money") => PgType::Money,
            (true, "bit") if typmod == 1 => PgType::Bit1,
            (true, "bit") if typmod > 1 => PgType::Bits {
                length: typmod as u32,
            },
            (true, "bit" | "varbit") => PgType::VarBit,
            (_, "hstore") => PgType::Hstore,
            _ => PgType::Other {
                name: format!("{}.{}", info.schema, info.name),
            },
        }
    }

    /// A short name for errors and logs.
    pub fn describe(&self) -> String {
        match self {
            PgType::Numeric { precision, scale } => format!("numeric({precision},{scale})"),
            PgType::NumericAny(_) => "numeric".into(),
            PgType::Array { elem, .. } => format!("{}[]", elem.describe()),
            PgType::Bits { length } => format!("bit({length})"),
            PgType::Enum { .. } => "enum".into(),
            PgType::Other { name } => name.clone(),
            other => format!("{other:?}").to_lowercase(),
        }
    }
}

fn numeric_from_typmod(typmod: i32, mode: NumericMode) -> PgType {
    if typmod < 4 {
        return PgType::NumericAny(mode);
    }
    let t = typmod - 4;
    let precision = ((t >> 16) & 0xffff) as u32;
    // PostgreSQL 15+ stores the scale as an 11-bit signed number.
    let raw_scale = t & 0x7ff;
    let scale = if raw_scale & 0x400 != 0 {
        raw_scale - 0x800
    } else {
        raw_scale
    };
    if scale < 0 || scale as u32 > precision || precision == 0 {
        // Negative scale or scale > precision cannot be an Avro decimal.
        return PgType::NumericAny(mode);
    }
    PgType::Numeric {
        precision,
        scale: scale as u32,
    }
}

// ------------------------------------------------------------------------------------------
// Schemas
