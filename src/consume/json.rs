//! Avro records in the Confluent wire format, decoded through the registry and rendered as
//! JSON the way `pgcdc tail` prints them: decimals as exact strings (`"123.45"`), bytes as
//! PostgreSQL's `\x` hex, float NaN and infinities as strings, unions as their value.

use std::collections::HashMap;

use apache_avro::types::Value;
use apache_avro::Schema;
use schema_registry_converter::async_impl::avro::AvroDecoder;
use serde_json::{json, Value as Json};

use crate::error::{Code, Error, Result};

/// Decodes a Confluent wire-format key or value through the registry into JSON.
pub async fn decode_json(decoder: &AvroDecoder, bytes: Option<&[u8]>) -> Result<Json> {
    let Some(b) = bytes else {
        return Ok(Json::Null);
    };
    if b.len() < 5 || b[0] != 0 {
        return Err(Error::permanent(
            Code::Kafka,
            "record is not in the Confluent wire format (magic byte 0, schema id)",
        ));
    }
    let id = u32::from_be_bytes([b[1], b[2], b[3], b[4]]);
    let schema = decoder.get_schema(id).await.map_err(|e| {
        Error::transient(
            Code::RegistryUnavailable,
            format!("schema registry: fetching schema {id}: {e}"),
        )
        .with_source(e)
    })?;
    let decoded = decoder.decode(Some(b)).await.map_err(|e| {
        Error::permanent(
            Code::Registry,
            format!("decoding a record with schema {id}: {e}"),
        )
        .with_source(e)
    })?;
    let mut names = HashMap::new();
    collect_names(&schema.parsed, &mut names);
    Ok(to_json(&decoded.value, &schema.parsed, &names))
}

fn collect_names(s: &Schema, names: &mut HashMap<String, Schema>) {
    match s {
        Schema::Record(r) => {
            names.insert(r.name.fullname(None), s.clone());
            for f in &r.fields {
                collect_names(&f.schema, names);
            }
        }
        Schema::Union(u) => u.variants().iter().for_each(|v| collect_names(v, names)),
        Schema::Array(a) => collect_names(&a.items, names),
        Schema::Map(m) => collect_names(&m.types, names),
        _ => {}
    }
}

/// Renders a decoded value as JSON, using its schema for decimals and named references.
pub fn to_json(v: &Value, s: &Schema, names: &HashMap<String, Schema>) -> Json {
    if let Schema::Ref { name } = s {
        if let Some(resolved) = names.get(&name.fullname(None)) {
            return to_json(v, resolved, names);
        }
    }
    match (v, s) {
        (Value::Union(i, inner), Schema::Union(u)) => match u.variants().get(*i as usize) {
            Some(vs) => to_json(inner, vs, names),
            None => to_json(inner, &Schema::Null, names),
        },
        (Value::Union(_, inner), _) => to_json(inner, s, names),
        (Value::Record(fields), Schema::Record(r)) => {
            let mut m = serde_json::Map::new();
            for (name, fv) in fields {
                let fs = r
                    .lookup
                    .get(name)
                    .and_then(|&i| r.fields.get(i))
                    .map(|f| &f.schema)
                    .unwrap_or(&Schema::Null);
                m.insert(name.clone(), to_json(fv, fs, names));
            }
            Json::Object(m)
        }
        (Value::Array(items), Schema::Array(a)) => {
            Json::Array(items.iter().map(|i| to_json(i, &a.items, names)).collect())
        }
        (Value::Decimal(d), Schema::Decimal(ds)) => {
            let bytes: Vec<u8> = d.clone().try_into().unwrap_or_default();
            Json::String(decimal_string(&bytes, ds.scale))
        }
        _ => plain(v),
    }
}

fn plain(v: &Value) -> Json {
    let float = |f: f64| {
        if f.is_finite() {
            json!(f)
        } else {
            Json::String(f.to_string().replace("inf", "Infinity"))
        }
    };
    match v {
        Value::Null => Json::Null,
        Value::Boolean(b) => json!(b),
        Value::Int(i) | Value::Date(i) | Value::TimeMillis(i) => json!(i),
        Value::Long(l) => json!(l),
        Value::Float(f) => float(f64::from(*f)),
        Value::Double(f) => float(*f),
        Value::String(s) | Value::Enum(_, s) => json!(s),
        Value::Bytes(b) | Value::Fixed(_, b) => Json::String(format!(
            "\\x{}",
            b.iter().map(|x| format!("{x:02x}")).collect::<String>()
        )),
        Value::Union(_, inner) => plain(inner),
        Value::Array(items) => Json::Array(items.iter().map(plain).collect()),
        Value::Record(fields) => {
            Json::Object(fields.iter().map(|(k, v)| (k.clone(), plain(v))).collect())
        }
        Value::Map(m) => Json::Object(m.iter().map(|(k, v)| (k.clone(), plain(v))).collect()),
        other => Json::String(format!("{other:?}")),
    }
}

/// Big-endian two's complement unscaled bytes → decimal string with `scale` fraction digits.
pub fn decimal_string(bytes: &[u8], scale: usize) -> String {
    let negative = bytes.first().is_some_and(|b| b & 0x80 != 0);
    let mut mag: Vec<u8> = bytes.to_vec();
    if negative {
        // Two's complement → magnitude: invert, add one.
        let mut carry = 1u16;
        for b in mag.iter_mut().rev() {
            let v = u16::from(!*b) + carry;
            *b = (v & 0xff) as u8;
            carry = v >> 8;
        }
    }
    let mut digits = Vec::new();
    while mag.iter().any(|&b| b != 0) {
        let mut rem = 0u32;
        for b in mag.iter_mut() {
            let cur = (rem << 8) | u32::from(*b);
            *b = (cur / 10) as u8;
            rem = cur % 10;
        }
        digits.push(b'0' + rem as u8);
    }
    while digits.len() <= scale {
        digits.push(b'0');
    }
    digits.reverse();
    let (int, frac) = digits.split_at(digits.len() - scale);
    let mut s = String::new();
    if negative {
        s.push('-');
    }
    s.push_str(std::str::from_utf8(int).unwrap_or("0"));
    if scale > 0 {
        s.push('.');
        s.push_str(std::str::from_utf8(frac).unwrap_or(""));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::typemap::parse_decimal;

    #[test]
    fn decimal_strings_round_trip() {
        for (text, scale) in [
            ("0.00", 2),
            ("1.28", 2),
            ("-1.28", 2),
            ("-0.01", 2),
            ("12345678901234567890123.456", 3),
            ("7", 0),
            ("-128", 0),
        ] {
            let bytes = parse_decimal(text).unwrap().unscaled_bytes(scale).unwrap();
            assert_eq!(decimal_string(&bytes, scale as usize), text);
        }
    }
}
