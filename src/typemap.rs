//! PostgreSQL types → Avro schemas and values, following Debezium's PostgreSQL connector so
//! that its consumers read our events unchanged.
//!
//! Values arrive in PostgreSQL's text output format. The replication session pins the output
//! settings that text depends on (see `postgres::replication::SESSION_OPTIONS`): `DateStyle=ISO`,
//! `TimeZone=UTC`, `IntervalStyle=iso_8601`, `extra_float_digits=3`, `bytea_output=hex`,
//! `lc_monetary=C`.
//!
//! Fidelity rule: a value either converts exactly or the conversion fails with an error that
//! names the type; nothing becomes a sentinel or a truncated form here. What a failed value
//! becomes is the connector's `unrepresentable` policy ([`crate::avro::policy`]). Where
//! Debezium's mapping loses information we deviate, and README.md lists each deviation.

use std::collections::HashSet;

use apache_avro::types::Value;
use serde_json::{json, Value as Json};

use crate::config::NumericMode;

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

/// Named Avro types already defined in the schema being built: a name is defined once and
/// referenced afterwards.
#[derive(Default)]
pub struct Names(HashSet<String>);

const VARIABLE_SCALE_DECIMAL: &str = "io.debezium.data.VariableScaleDecimal";

fn semantic(base: &str, name: &str) -> Json {
    json!({"type": base, "connect.version": 1, "connect.name": name})
}

fn decimal_schema(precision: Option<u32>, scale: u32) -> Json {
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

/// Why a value could not be converted. Never contains the value itself (values may be
/// personal data and end up in logs).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a {ty} value {problem}")]
pub struct ValueError {
    pub ty: String,
    pub problem: String,
}

fn bad(ty: &PgType, problem: impl Into<String>) -> ValueError {
    ValueError {
        ty: ty.describe(),
        problem: problem.into(),
    }
}

impl PgType {
    /// Converts PostgreSQL's text output of a non-null value.
    pub fn to_avro(&self, raw: &[u8]) -> Result<Value, ValueError> {
        let text = std::str::from_utf8(raw).map_err(|_| bad(self, "is not valid UTF-8"))?;
        let parse_err = || bad(self, "is not in PostgreSQL's text format");
        Ok(match self {
            PgType::Bool => Value::Boolean(parse_bool(text).ok_or_else(parse_err)?),
            PgType::Bit1 => Value::Boolean(match text {
                "1" => true,
                "0" => false,
                _ => return Err(parse_err()),
            }),
            PgType::Int2 | PgType::Int4 => Value::Int(text.parse().map_err(|_| parse_err())?),
            PgType::Int8 | PgType::Oid => Value::Long(text.parse().map_err(|_| parse_err())?),
            PgType::Float4 => Value::Float(parse_float(text).ok_or_else(parse_err)? as f32),
            PgType::Float8 => Value::Double(parse_float(text).ok_or_else(parse_err)?),
            PgType::Numeric { scale, .. } => {
                let d = parse_decimal(text).ok_or_else(|| non_finite_or(self, text))?;
                Value::Decimal(apache_avro::Decimal::from(d.unscaled_bytes(*scale).ok_or_else(parse_err)?))
            }
            PgType::Money => {
                let cleaned: String = text.chars().filter(|c| !matches!(c, '$' | ',')).collect();
                let d = parse_decimal(&cleaned).ok_or_else(parse_err)?;
                if d.frac.len() > 2 {
                    return Err(bad(self, "has more than 2 fraction digits (lc_monetary is not C?)"));
                }
                Value::Decimal(apache_avro::Decimal::from(d.unscaled_bytes(2).ok_or_else(parse_err)?))
            }
            PgType::NumericAny(NumericMode::String) => Value::String(text.to_owned()),
            PgType::NumericAny(NumericMode::Double) => {
                Value::Double(parse_float(text).ok_or_else(parse_err)?)
            }
            PgType::NumericAny(NumericMode::Precise) => {
                let d = parse_decimal(text).ok_or_else(|| non_finite_or(self, text))?;
                let scale = d.frac.len() as u32;
                Value::Record(vec![
                    ("scale".into(), Value::Int(scale as i32)),
                    ("value".into(), Value::Bytes(d.unscaled_bytes(scale).ok_or_else(parse_err)?)),
                ])
            }
            PgType::Text
            | PgType::Inet
            | PgType::Cidr
            | PgType::MacAddr
            | PgType::Uuid
            | PgType::Json
            | PgType::Xml
            | PgType::Interval
            | PgType::Other { .. } => Value::String(text.to_owned()),
            PgType::VarBit => {
                if !text.bytes().all(|b| b == b'0' || b == b'1') {
                    return Err(parse_err());
                }
                Value::String(text.to_owned())
            }
            PgType::Enum { labels } => {
                // A label added after the schema was built is still the truth: send it.
                let _ = labels;
                Value::String(text.to_owned())
            }
            PgType::Bytea => Value::Bytes(parse_bytea(text).ok_or_else(parse_err)?),
            PgType::Bits { length } => {
                Value::Bytes(parse_bits(text, *length).ok_or_else(parse_err)?)
            }
            PgType::Hstore => Value::String(parse_hstore(text).ok_or_else(parse_err)?),
            PgType::Date => match parse_date_days(text) {
                Some(d) => Value::Int(d),
                None => return Err(infinite(self, text).unwrap_or_else(parse_err)),
            },
            PgType::Time => Value::Long(parse_time_micros(text).ok_or_else(parse_err)?),
            PgType::TimeTz => Value::String(format_timetz(text).ok_or_else(parse_err)?),
            PgType::Timestamp => match parse_timestamp_micros(text) {
                Some(v) => Value::Long(v),
                None if infinite(self, text).is_some() => {
                    return Err(infinite(self, text).unwrap_or_else(parse_err))
                }
                None if split_date(text).is_some() => {
                    return Err(bad(self, "is outside the range of io.debezium.time.MicroTimestamp (a long of microseconds since 1970)"))
                }
                None => return Err(parse_err()),
            },
            PgType::TimestampTz => Value::String(format_timestamptz(text).ok_or_else(parse_err)?),
            PgType::Array { elem, delim } => {
                let nested = matches!(elem.as_ref(), PgType::Array { .. });
                let items = parse_array(text, *delim, nested).map_err(|p| bad(self, p))?;
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    out.push(match item {
                        None => Value::Union(0, Box::new(Value::Null)),
                        Some(s) => Value::Union(1, Box::new(elem.to_avro(s.as_bytes())?)),
                    });
                }
                Value::Array(out)
            }
        })
    }
}

fn non_finite_or(ty: &PgType, text: &str) -> ValueError {
    if matches!(text, "NaN" | "Infinity" | "-Infinity") {
        bad(
            ty,
            format!(
                "is {text}, which an Avro decimal cannot carry (numeric_mode: string carries it for \
                 unconstrained numeric columns; a numeric(p,s) column cannot carry it at all)"
            ),
        )
    } else {
        bad(ty, "is not in PostgreSQL's text format")
    }
}

fn parse_bool(t: &str) -> Option<bool> {
    match t {
        "t" => Some(true),
        "f" => Some(false),
        _ => None,
    }
}

fn parse_float(t: &str) -> Option<f64> {
    match t {
        "NaN" => Some(f64::NAN),
        "Infinity" => Some(f64::INFINITY),
        "-Infinity" => Some(f64::NEG_INFINITY),
        _ => t.parse().ok(),
    }
}

/// A finite decimal number as PostgreSQL prints it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Decimal {
    negative: bool,
    int: String,
    frac: String,
}

pub(crate) fn parse_decimal(t: &str) -> Option<Decimal> {
    let (negative, body) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    if int.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    Some(Decimal {
        negative,
        int: int.to_owned(),
        frac: frac.to_owned(),
    })
}

impl Decimal {
    /// The unscaled value at `scale` as big-endian two's complement (Avro's decimal bytes).
    /// None if the number has more fraction digits than `scale`.
    pub(crate) fn unscaled_bytes(&self, scale: u32) -> Option<Vec<u8>> {
        let scale = scale as usize;
        if self.frac.len() > scale {
            return None;
        }
        // Magnitude in base 256, little-endian while building.
        let mut mag: Vec<u8> = vec![0];
        let digits = self
            .int
            .bytes()
            .chain(self.frac.bytes())
            .chain(std::iter::repeat_n(b'0', scale - self.frac.len()));
        for d in digits {
            let mut carry = u32::from(d - b'0');
            for byte in mag.iter_mut() {
                let v = u32::from(*byte) * 10 + carry;
                *byte = (v & 0xff) as u8;
                carry = v >> 8;
            }
            while carry > 0 {
                mag.push((carry & 0xff) as u8);
                carry >>= 8;
            }
        }
        while mag.len() > 1 && *mag.last().unwrap_or(&1) == 0 {
            mag.pop();
        }
        let is_zero = mag.iter().all(|&b| b == 0);
        if self.negative && !is_zero {
            // Two's complement: invert and add one.
            let mut carry = 1u16;
            for byte in mag.iter_mut() {
                let v = u16::from(!*byte) + carry;
                *byte = (v & 0xff) as u8;
                carry = v >> 8;
            }
            if mag.last().is_some_and(|&b| b & 0x80 == 0) {
                mag.push(0xff);
            }
        } else if mag.last().is_some_and(|&b| b & 0x80 != 0) {
            mag.push(0);
        }
        mag.reverse();
        Some(mag)
    }
}

fn parse_bytea(t: &str) -> Option<Vec<u8>> {
    let hex = t.strip_prefix("\\x")?;
    if hex.len() % 2 != 0 {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// `bit(n)` as Kafka Connect's `Bits`: the bit string read as a binary number (first bit
/// most significant), in ceil(n/8) little-endian bytes.
fn parse_bits(t: &str, length: u32) -> Option<Vec<u8>> {
    if t.len() != length as usize || !t.bytes().all(|b| b == b'0' || b == b'1') {
        return None;
    }
    let mut out = vec![0u8; t.len().div_ceil(8)];
    for (i, b) in t.bytes().rev().enumerate() {
        if b == b'1' {
            out[i / 8] |= 1 << (i % 8);
        }
    }
    Some(out)
}

/// hstore's text form (`"k"=>"v", "n"=>NULL`) as a JSON object, as Debezium's json mode.
fn parse_hstore(t: &str) -> Option<String> {
    let mut map = serde_json::Map::new();
    let mut s = t.trim_start();
    fn quoted(s: &str) -> Option<(String, &str)> {
        let mut out = String::new();
        let mut chars = s.strip_prefix('"')?.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => out.push(chars.next()?.1),
                '"' => return Some((out, &s[i + 2..])),
                c => out.push(c),
            }
        }
        None
    }
    while !s.is_empty() {
        let (k, rest) = quoted(s)?;
        let rest = rest.trim_start().strip_prefix("=>")?.trim_start();
        let (v, rest) = if let Some(r) = rest.strip_prefix("NULL") {
            (Json::Null, r)
        } else {
            let (v, r) = quoted(rest)?;
            (Json::String(v), r)
        };
        map.insert(k, v);
        s = rest.trim_start();
        if let Some(r) = s.strip_prefix(',') {
            s = r.trim_start();
        } else if !s.is_empty() {
            return None;
        }
    }
    serde_json::to_string(&Json::Object(map)).ok()
}

/// An array literal's elements: `{a,"b c",NULL}`. With `nested` (a column declared with more
/// dimensions), each element is a sub-array literal `{…}`, returned whole for the next level.
/// A value whose dimensions differ from the declaration, and explicit lower bounds, are
/// refused: flattening them would lose their shape.
fn parse_array(t: &str, delim: u8, nested: bool) -> Result<Vec<Option<String>>, String> {
    if t.starts_with('[') {
        return Err("has explicit lower bounds, which pgcdc cannot carry without loss".into());
    }
    let inner = t
        .strip_prefix('{')
        .and_then(|s| s.strip_suffix('}'))
        .ok_or_else(|| "is not an array literal".to_owned())?;
    if inner.is_empty() {
        return Ok(Vec::new());
    }
    if nested {
        return split_subarrays(inner, delim as char);
    }
    if inner.starts_with('{') {
        return Err("has more dimensions than its column declares (pg_attribute.attndims), which pgcdc cannot carry without loss".into());
    }
    let delim = delim as char;
    let mut items = Vec::new();
    let mut chars = inner.chars().peekable();
    loop {
        let mut item = String::new();
        let mut was_quoted = false;
        if chars.peek() == Some(&'"') {
            was_quoted = true;
            chars.next();
            loop {
                match chars.next() {
                    Some('\\') => item.push(chars.next().ok_or("ends inside an escape")?),
                    Some('"') => break,
                    Some(c) => item.push(c),
                    None => return Err("has an unterminated quoted element".into()),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == delim {
                    break;
                }
                if c == '{' || c == '"' {
                    return Err("is not a one-dimensional array literal".into());
                }
                item.push(c);
                chars.next();
            }
        }
        items.push(if !was_quoted && item == "NULL" {
            None
        } else {
            Some(item)
        });
        match chars.next() {
            None => break,
            Some(c) if c == delim => continue,
            Some(_) => return Err("has junk after a quoted element".into()),
        }
    }
    Ok(items)
}

/// The `{…}` sub-literals of a multi-dimensional array's body, split at top-level delimiters
/// (quotes and escapes respected).
fn split_subarrays(inner: &str, delim: char) -> Result<Vec<Option<String>>, String> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut quoted = false;
    let mut escaped = false;
    let mut start = 0;
    for (i, c) in inner.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '{' if !quoted => depth += 1,
            '}' if !quoted => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| "is not a valid array literal".to_owned())?
            }
            c if c == delim && !quoted && depth == 0 => {
                out.push(Some(inner[start..i].to_owned()));
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    out.push(Some(inner[start..].to_owned()));
    if out.iter().flatten().any(|p| !p.starts_with('{')) {
        return Err("has fewer dimensions than its column declares (pg_attribute.attndims), which pgcdc cannot carry without loss".into());
    }
    Ok(out)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DD` with an optional ` BC`: (astronomical year, month, day, rest of the string).
fn split_date(t: &str) -> Option<(i64, i64, i64, &str, bool)> {
    let (body, bc) = match t.strip_suffix(" BC") {
        Some(b) => (b, true),
        None => (t, false),
    };
    let mut parts = body.splitn(3, '-');
    let y: i64 = parts.next()?.parse().ok()?;
    let m: i64 = parts.next()?.parse().ok()?;
    let rest = parts.next()?;
    let d: i64 = rest.get(..2)?.parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || y < 1 {
        return None;
    }
    let year = if bc { 1 - y } else { y };
    Some((year, m, d, &rest[2..], bc))
}

/// Days since the Unix epoch (`infinity` and `-infinity` are not dates: see [`infinite`]).
fn parse_date_days(t: &str) -> Option<i32> {
    let (y, m, d, rest, _) = split_date(t)?;
    if !rest.is_empty() {
        return None;
    }
    i32::try_from(days_from_civil(y, m, d)).ok()
}

/// `HH:MM:SS[.ffffff]` → microseconds since midnight (24:00:00 allowed, as in PostgreSQL).
fn parse_time_micros(t: &str) -> Option<i64> {
    let (hms, frac) = t.split_once('.').unwrap_or((t, ""));
    let mut it = hms.split(':');
    let h: i64 = it.next()?.parse().ok()?;
    let m: i64 = it.next()?.parse().ok()?;
    let s: i64 = it.next()?.parse().ok()?;
    if it.next().is_some() || frac.len() > 6 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let micros: i64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<6}").parse().ok()?
    };
    if h > 24 || m > 59 || s > 60 {
        return None;
    }
    Some(((h * 60 + m) * 60 + s) * 1_000_000 + micros)
}

/// Splits a trailing UTC offset (`+05`, `-03:30`, `+05:30:15`) off a time.
fn split_offset(t: &str) -> Option<(&str, &str)> {
    let pos = t.rfind(['+', '-'])?;
    Some((&t[..pos], &t[pos..]))
}

fn normalize_offset(off: &str) -> Option<String> {
    let (sign, rest) = off.split_at(1);
    let parts: Vec<&str> = rest.split(':').collect();
    if parts.is_empty()
        || parts.len() > 3
        || parts
            .iter()
            .any(|p| p.len() != 2 || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    if parts.iter().all(|p| *p == "00") {
        return Some("Z".into());
    }
    let mut s = format!("{sign}{}:{}", parts[0], parts.get(1).unwrap_or(&"00"));
    if let Some(sec) = parts.get(2) {
        s.push(':');
        s.push_str(sec);
    }
    Some(s)
}

/// `timetz`: ISO-8601 time with its own offset kept (`12:34:56.789+05:30`, `Z` for UTC).
fn format_timetz(t: &str) -> Option<String> {
    let (time, off) = split_offset(t)?;
    parse_time_micros(time)?;
    Some(format!("{time}{}", normalize_offset(off)?))
}

/// `timestamp` → microseconds since the Unix epoch (±infinity: see [`infinite`]).
fn parse_timestamp_micros(t: &str) -> Option<i64> {
    let (y, m, d, rest, _) = split_date(t)?;
    let time = rest.strip_prefix(' ')?;
    let micros = parse_time_micros(time)?;
    let v = days_from_civil(y, m, d)
        .checked_mul(86_400_000_000)?
        .checked_add(micros)?;
    // PostgreSQL's own range ends before i64::MAX; keep the extremes free of any meaning.
    (v != i64::MAX && v != i64::MIN).then_some(v)
}

/// `infinity` and `-infinity` in a `date` or `timestamp`: Debezium's integer types have no
/// value for them, and any number (PostgreSQL's internal markers included) would land in a
/// sink as a finite, wrong instant or out of its range. So they are unrepresentable: the
/// `unrepresentable` policy applies (null with the `pgcdc.lossy` header by default).
/// `timestamptz` is a string and keeps them exactly.
fn infinite(ty: &PgType, text: &str) -> Option<ValueError> {
    matches!(text, "infinity" | "-infinity").then(|| {
        bad(
            ty,
            format!(
                "is {text}, which {} cannot carry (a timestamptz column carries it exactly)",
                if *ty == PgType::Date {
                    "io.debezium.time.Date (days since 1970)"
                } else {
                    "io.debezium.time.MicroTimestamp (microseconds since 1970)"
                }
            ),
        )
    })
}

/// `timestamptz` (printed in UTC) → ISO-8601 `2024-01-02T03:04:05.123456Z`, as Debezium's
/// ZonedTimestamp; years before 1 or after 9999 use ISO's signed expanded form.
fn format_timestamptz(t: &str) -> Option<String> {
    match t {
        "infinity" | "-infinity" => return Some(t.to_owned()),
        _ => {}
    }
    let (y, m, d, rest, _) = split_date(t)?;
    let rest = rest.strip_prefix(' ')?;
    let (time, off) = split_offset(rest)?;
    parse_time_micros(time)?;
    let off = normalize_offset(off)?;
    let year = if (0..=9999).contains(&y) {
        format!("{y:04}")
    } else {
        format!("{y:+05}")
    };
    Some(format!("{year}-{m:02}-{d:02}T{time}{off}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str) -> TypeInfo {
        TypeInfo {
            name: name.into(),
            schema: "pg_catalog".into(),
            typtype: b'b',
            category: b'X',
            enum_labels: vec![],
            delim: b',',
        }
    }

    fn ty(name: &str, typmod: i32) -> PgType {
        PgType::scalar(&info(name), typmod, NumericMode::Precise)
    }

    fn conv(t: &PgType, s: &str) -> Value {
        t.to_avro(s.as_bytes())
            .unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    fn dec(v: &[u8]) -> Value {
        Value::Decimal(apache_avro::Decimal::from(v.to_vec()))
    }

    #[test]
    fn resolves_types_from_catalog_names() {
        assert_eq!(
            ty("numeric", ((10 << 16) | 2) + 4),
            PgType::Numeric {
                precision: 10,
                scale: 2
            }
        );
        assert_eq!(ty("numeric", -1), PgType::NumericAny(NumericMode::Precise));
        // numeric(3,-2), allowed since PostgreSQL 15, is not an Avro decimal.
        assert_eq!(
            ty("numeric", ((3 << 16) | 0x7fe) + 4),
            PgType::NumericAny(NumericMode::Precise)
        );
        assert_eq!(ty("bit", 1), PgType::Bit1);
        assert_eq!(ty("bit", 12), PgType::Bits { length: 12 });
        assert_eq!(ty("varbit", 12), PgType::VarBit);
        assert_eq!(ty("varchar", 14), PgType::Text);
        assert_eq!(
            ty("tsvector", -1),
            PgType::Other {
                name: "pg_catalog.tsvector".into()
            }
        );
        let mut e = info("mood");
        e.typtype = b'e';
        e.schema = "public".into();
        e.enum_labels = vec!["sad".into(), "ok".into()];
        assert_eq!(
            PgType::scalar(&e, -1, NumericMode::Precise),
            PgType::Enum {
                labels: vec!["sad".into(), "ok".into()]
            }
        );
        let mut h = info("hstore");
        h.schema = "public".into();
        assert_eq!(PgType::scalar(&h, -1, NumericMode::Precise), PgType::Hstore);
    }

    #[test]
    fn integers_bools_floats() {
        assert_eq!(conv(&PgType::Bool, "t"), Value::Boolean(true));
        assert_eq!(conv(&PgType::Bool, "f"), Value::Boolean(false));
        assert_eq!(conv(&PgType::Int2, "-32768"), Value::Int(-32768));
        assert_eq!(conv(&PgType::Int4, "2147483647"), Value::Int(i32::MAX));
        assert_eq!(
            conv(&PgType::Int8, "-9223372036854775808"),
            Value::Long(i64::MIN)
        );
        assert_eq!(conv(&PgType::Oid, "4294967295"), Value::Long(4_294_967_295));
        assert_eq!(
            conv(&PgType::Float8, "1.7976931348623157e+308"),
            Value::Double(f64::MAX)
        );
        assert_eq!(
            conv(&PgType::Float8, "-Infinity"),
            Value::Double(f64::NEG_INFINITY)
        );
        assert!(matches!(conv(&PgType::Float8, "NaN"), Value::Double(x) if x.is_nan()));
        assert!(matches!(conv(&PgType::Float4, "NaN"), Value::Float(x) if x.is_nan()));
        assert_eq!(
            conv(&PgType::Float4, "Infinity"),
            Value::Float(f32::INFINITY)
        );
        assert_eq!(
            conv(&PgType::Float4, "3.4028235e+38"),
            Value::Float(f32::MAX)
        );
        assert!(PgType::Int4.to_avro(b"x").is_err());
    }

    #[test]
    fn decimals_are_exact_twos_complement() {
        let t = PgType::Numeric {
            precision: 10,
            scale: 2,
        };
        assert_eq!(conv(&t, "0.00"), dec(&[0]));
        assert_eq!(conv(&t, "1.28"), dec(&[0x00, 0x80]));
        assert_eq!(conv(&t, "-1.28"), dec(&[0xff, 0x80]));
        assert_eq!(conv(&t, "-1.29"), dec(&[0xff, 0x7f]));
        assert_eq!(
            conv(&t, "12345678.90"),
            dec(&1_234_567_890i64.to_be_bytes()[3..])
        );
        // 40 significant digits: beyond i128, still exact.
        let big = PgType::Numeric {
            precision: 40,
            scale: 0,
        };
        let Value::Decimal(d) = conv(&big, "9999999999999999999999999999999999999999") else {
            panic!()
        };
        let bytes: Vec<u8> = d.try_into().unwrap();
        assert_eq!(bytes.len(), 17);
        assert_eq!(bytes[0], 0x1d);
    }

    #[test]
    fn numeric_nan_and_infinity_are_errors_that_say_why() {
        let t = PgType::Numeric {
            precision: 10,
            scale: 2,
        };
        for s in ["NaN", "Infinity", "-Infinity"] {
            let e = t.to_avro(s.as_bytes()).unwrap_err();
            assert!(
                e.problem.contains("cannot carry") && e.problem.contains("numeric_mode"),
                "{e}"
            );
        }
        assert!(PgType::NumericAny(NumericMode::Precise)
            .to_avro(b"NaN")
            .is_err());
        assert_eq!(
            conv(&PgType::NumericAny(NumericMode::String), "NaN"),
            Value::String("NaN".into())
        );
        assert!(
            matches!(conv(&PgType::NumericAny(NumericMode::Double), "NaN"), Value::Double(x) if x.is_nan())
        );
    }

    #[test]
    fn unconstrained_numeric_modes() {
        assert_eq!(
            conv(&PgType::NumericAny(NumericMode::Precise), "-3.14159"),
            Value::Record(vec![
                ("scale".into(), Value::Int(5)),
                (
                    "value".into(),
                    Value::Bytes((-314_159i32).to_be_bytes()[1..].to_vec())
                )
            ])
        );
        assert_eq!(
            conv(&PgType::NumericAny(NumericMode::String), "1.000"),
            Value::String("1.000".into())
        );
        assert_eq!(
            conv(&PgType::NumericAny(NumericMode::Double), "2.5"),
            Value::Double(2.5)
        );
    }

    #[test]
    fn money_is_a_scale_2_decimal() {
        assert_eq!(
            conv(&PgType::Money, "$1,234.56"),
            dec(&123_456i32.to_be_bytes()[1..])
        );
        assert_eq!(conv(&PgType::Money, "-$0.01"), dec(&[0xff]));
        assert_eq!(
            conv(&PgType::Money, "-$92,233,720,368,547,758.08"),
            dec(&i64::MIN.to_be_bytes())
        );
    }

    #[test]
    fn bytea_bits_varbit() {
        assert_eq!(
            conv(&PgType::Bytea, "\\x00ff10"),
            Value::Bytes(vec![0, 0xff, 0x10])
        );
        assert_eq!(conv(&PgType::Bytea, "\\x"), Value::Bytes(vec![]));
        assert!(PgType::Bytea.to_avro(b"\\x0").is_err());
        assert_eq!(
            conv(&PgType::Bits { length: 10 }, "1000000001"),
            Value::Bytes(vec![0x01, 0x02])
        );
        assert_eq!(
            conv(&PgType::Bits { length: 3 }, "000"),
            Value::Bytes(vec![0])
        );
        assert_eq!(conv(&PgType::Bit1, "1"), Value::Boolean(true));
        assert_eq!(conv(&PgType::VarBit, "0010"), Value::String("0010".into()));
    }

    #[test]
    fn dates_and_times() {
        assert_eq!(conv(&PgType::Date, "1970-01-01"), Value::Int(0));
        assert_eq!(conv(&PgType::Date, "2000-03-01"), Value::Int(11_017));
        assert_eq!(conv(&PgType::Date, "1969-12-31"), Value::Int(-1));
        assert_eq!(
            conv(&PgType::Date, "0001-01-01 BC"),
            Value::Int(days_from_civil(0, 1, 1) as i32)
        );
        // PostgreSQL's last date: Julian day 2147483493, Unix day 2145042905.
        assert_eq!(
            conv(&PgType::Date, "5874897-12-31"),
            Value::Int(2_145_042_905)
        );
        for (ty, inf) in [
            (PgType::Date, "infinity"),
            (PgType::Date, "-infinity"),
            (PgType::Timestamp, "infinity"),
            (PgType::Timestamp, "-infinity"),
        ] {
            let e = ty.to_avro(inf.as_bytes()).unwrap_err();
            assert!(
                e.problem
                    .contains(&format!("is {inf}, which io.debezium.time")),
                "{e}"
            );
        }
        assert_eq!(conv(&PgType::Time, "00:00:00"), Value::Long(0));
        assert_eq!(
            conv(&PgType::Time, "13:45:01.5"),
            Value::Long(49_501_500_000)
        );
        assert_eq!(conv(&PgType::Time, "24:00:00"), Value::Long(86_400_000_000));
        assert_eq!(
            conv(&PgType::TimeTz, "12:34:56.789+05:30"),
            Value::String("12:34:56.789+05:30".into())
        );
        assert_eq!(
            conv(&PgType::TimeTz, "12:34:56-03"),
            Value::String("12:34:56-03:00".into())
        );
        assert_eq!(
            conv(&PgType::TimeTz, "01:00:00+00"),
            Value::String("01:00:00Z".into())
        );
    }

    #[test]
    fn timestamps() {
        assert_eq!(
            conv(&PgType::Timestamp, "1970-01-01 00:00:00"),
            Value::Long(0)
        );
        assert_eq!(
            conv(&PgType::Timestamp, "2024-02-29 12:00:00.000001"),
            Value::Long(1_709_208_000_000_001)
        );
        assert_eq!(
            conv(&PgType::Timestamp, "1969-12-31 23:59:59.999999"),
            Value::Long(-1)
        );
        assert_eq!(
            conv(&PgType::Timestamp, "4713-01-01 00:00:00 BC"),
            Value::Long(days_from_civil(-4712, 1, 1) * 86_400_000_000)
        );
        // PostgreSQL's last timestamps lie beyond a long of microseconds since 1970: an error,
        // and so is the one finite value that would collide with the infinity marker.
        let e = PgType::Timestamp
            .to_avro(b"294276-12-31 23:59:59.999999")
            .unwrap_err();
        assert!(e.problem.contains("range"), "{e}");
        assert!(PgType::Timestamp
            .to_avro(b"294247-01-10 04:00:54.775807")
            .is_err());
        assert_eq!(
            conv(&PgType::Timestamp, "294247-01-10 04:00:54.775806"),
            Value::Long(i64::MAX - 1)
        );
        assert_eq!(
            conv(&PgType::TimestampTz, "2024-01-02 03:04:05.123456+00"),
            Value::String("2024-01-02T03:04:05.123456Z".into())
        );
        assert_eq!(
            conv(&PgType::TimestampTz, "0044-03-15 12:00:00+00 BC"),
            Value::String("-0043-03-15T12:00:00Z".into())
        );
        assert_eq!(
            conv(&PgType::TimestampTz, "12345-01-01 00:00:00+00"),
            Value::String("+12345-01-01T00:00:00Z".into())
        );
        assert_eq!(
            conv(&PgType::TimestampTz, "infinity"),
            Value::String("infinity".into())
        );
    }

    #[test]
    fn strings_pass_through() {
        for (t, s) in [
            (PgType::Text, "héllo, wörld ✓"),
            (PgType::Uuid, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
            (PgType::Json, "{\"a\": [1, 2.50]}"),
            (PgType::Interval, "P1Y2M3DT4H5M6.5S"),
            (PgType::Inet, "192.168.0.1/24"),
            (PgType::MacAddr, "08:00:2b:01:02:03"),
            (PgType::Enum { labels: vec![] }, "happy"),
        ] {
            assert_eq!(conv(&t, s), Value::String(s.into()));
        }
        assert!(PgType::Text.to_avro(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn hstore_as_json() {
        assert_eq!(
            conv(&PgType::Hstore, r#""a"=>"1", "b\"q"=>NULL, "c"=>"x,y=>z""#),
            Value::String(r#"{"a":"1","b\"q":null,"c":"x,y=>z"}"#.into())
        );
        assert_eq!(conv(&PgType::Hstore, ""), Value::String("{}".into()));
        assert!(PgType::Hstore.to_avro(b"\"a\"=>").is_err());
    }

    #[test]
    fn arrays_with_nulls_and_quotes() {
        let t = PgType::Array {
            elem: Box::new(PgType::Int4),
            delim: b',',
        };
        let some = |v: Value| Value::Union(1, Box::new(v));
        let null = Value::Union(0, Box::new(Value::Null));
        assert_eq!(
            conv(&t, "{1,NULL,3}"),
            Value::Array(vec![some(Value::Int(1)), null.clone(), some(Value::Int(3))])
        );
        assert_eq!(conv(&t, "{}"), Value::Array(vec![]));
        let t = PgType::Array {
            elem: Box::new(PgType::Text),
            delim: b',',
        };
        assert_eq!(
            conv(&t, r#"{"a b","NULL",NULL,"q\"x","c,d"}"#),
            Value::Array(vec![
                some(Value::String("a b".into())),
                some(Value::String("NULL".into())),
                null,
                some(Value::String("q\"x".into())),
                some(Value::String("c,d".into())),
            ])
        );
        let e = t.to_avro(b"{{1,2},{3,4}}").unwrap_err();
        assert!(e.problem.contains("more dimensions"), "{e}");
        assert!(t.to_avro(b"[2:3]={1,2}").is_err());
    }

    #[test]
    fn declared_dimensions_shape_arrays() {
        let t = PgType::Array {
            elem: Box::new(PgType::Array {
                elem: Box::new(PgType::Text),
                delim: b',',
            }),
            delim: b',',
        };
        let some = |v: Value| Value::Union(1, Box::new(v));
        let s = |v: &str| some(Value::String(v.into()));
        assert_eq!(
            conv(&t, r#"{{a,"}{,\""},{NULL,d}}"#),
            Value::Array(vec![
                some(Value::Array(vec![s("a"), s("}{,\"")])),
                some(Value::Array(vec![
                    Value::Union(0, Box::new(Value::Null)),
                    s("d")
                ])),
            ])
        );
        assert_eq!(conv(&t, "{}"), Value::Array(vec![]));
        let e = t.to_avro(b"{a,b}").unwrap_err();
        assert!(e.problem.contains("fewer dimensions"), "{e}");
        let mut names = Names::default();
        assert_eq!(
            t.avro_schema(&mut names),
            json!({"type": "array", "items": ["null", {"type": "array", "items": ["null", "string"]}]})
        );
    }

    #[test]
    fn schemas_define_named_types_once() {
        let mut names = Names::default();
        let t = PgType::NumericAny(NumericMode::Precise);
        assert_eq!(t.avro_schema(&mut names)["type"], "record");
        assert_eq!(t.avro_schema(&mut names), json!(VARIABLE_SCALE_DECIMAL));
        let d = PgType::Numeric {
            precision: 10,
            scale: 2,
        }
        .avro_schema(&mut names);
        assert_eq!(d["logicalType"], "decimal");
        assert_eq!(d["connect.parameters"]["connect.decimal.precision"], "10");
    }
}
