//! A value in PostgreSQL's text output format → its Avro value, or an error naming the
//! type and the problem (never a sentinel).

use apache_avro::types::Value;

use crate::config::NumericMode;

use super::text::*;
use super::*;

/// Why a value could not be converted. Never contains the value itself (values may be
/// personal data and end up in logs).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a {ty} value {problem}")]
pub struct ValueError {
    pub ty: String,
    pub problem: String,
}

pub(in crate::typemap) fn bad(ty: &PgType, problem: impl Into<String>) -> ValueError {
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

/// A value of one of the common scalar types, borrowed from its text where it is a string:
/// what [`PgType::to_avro`] gives, without the `Value` (the row writer's hot path, see
/// `avro::row`).
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar<'a> {
    Boolean(bool),
    Int(i32),
    Long(i64),
    Float(f32),
    Double(f64),
    Str(&'a str),
    String(String),
}

impl PgType {
    /// The value as a [`Scalar`] when the type is one of the common ones and the text
    /// converts; None otherwise, and then [`PgType::to_avro`] has the answer (the value, or
    /// the error naming the problem). Both agree wherever this gives a value (unit and
    /// property tests, and every debug-build event through the envelope cross-check).
    pub fn scalar_of<'a>(&self, raw: &'a [u8]) -> Option<Scalar<'a>> {
        let text = std::str::from_utf8(raw).ok()?;
        Some(match self {
            PgType::Bool => Scalar::Boolean(parse_bool(text)?),
            PgType::Int2 | PgType::Int4 => Scalar::Int(text.parse().ok()?),
            PgType::Int8 | PgType::Oid => Scalar::Long(text.parse().ok()?),
            PgType::Float4 => Scalar::Float(parse_float(text)? as f32),
            PgType::Float8 => Scalar::Double(parse_float(text)?),
            PgType::Text
            | PgType::Inet
            | PgType::Cidr
            | PgType::MacAddr
            | PgType::Uuid
            | PgType::Json
            | PgType::Xml
            | PgType::Interval
            | PgType::Enum { .. }
            | PgType::Other { .. }
            | PgType::NumericAny(NumericMode::String) => Scalar::Str(text),
            PgType::Date => Scalar::Int(parse_date_days(text)?),
            PgType::Time => Scalar::Long(parse_time_micros(text)?),
            PgType::Timestamp => Scalar::Long(parse_timestamp_micros(text)?),
            PgType::TimestampTz => Scalar::String(format_timestamptz(text)?),
            _ => return None,
        })
    }
}

impl Scalar<'_> {
    /// The same value as [`PgType::to_avro`]'s.
    pub fn to_value(&self) -> Value {
        match self {
            Scalar::Boolean(b) => Value::Boolean(*b),
            Scalar::Int(i) => Value::Int(*i),
            Scalar::Long(i) => Value::Long(*i),
            Scalar::Float(x) => Value::Float(*x),
            Scalar::Double(x) => Value::Double(*x),
            Scalar::Str(t) => Value::String((*t).to_owned()),
            Scalar::String(t) => Value::String(t.clone()),
        }
    }
}

pub(in crate::typemap) fn non_finite_or(ty: &PgType, text: &str) -> ValueError {
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
