//! Parsers for PostgreSQL's text output formats: booleans, floats, numerics, bytea, bit
//! strings, hstore and arrays. Dates and times are in [`time`].

mod time;
pub(in crate::typemap) use time::*;

use serde_json::Value as Json;

pub(in crate::typemap) fn parse_bool(t: &str) -> Option<bool> {
    match t {
        "t" => Some(true),
        "f" => Some(false),
        _ => None,
    }
}

pub(in crate::typemap) fn parse_float(t: &str) -> Option<f64> {
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
    pub(in crate::typemap) negative: bool,
    pub(in crate::typemap) int: String,
    pub(in crate::typemap) frac: String,
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

pub(in crate::typemap) fn parse_bytea(t: &str) -> Option<Vec<u8>> {
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
pub(in crate::typemap) fn parse_bits(t: &str, length: u32) -> Option<Vec<u8>> {
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
pub(in crate::typemap) fn parse_hstore(t: &str) -> Option<String> {
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
pub(in crate::typemap) fn parse_array(
    t: &str,
    delim: u8,
    nested: bool,
) -> Result<Vec<Option<String>>, String> {
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
pub(in crate::typemap) fn split_subarrays(
    inner: &str,
    delim: char,
) -> Result<Vec<Option<String>>, String> {
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
