//! Property tests (issue 14.3) for the text parsers: any input is a value or an error naming
//! the type, never a panic; and what PostgreSQL's output functions print (mirrored here from
//! `array_out`, `hstore_out`, `numeric_out`, `byteaout`) parses back to the value printed.
//! `PROPTEST_CASES` sets the number of cases (`make fuzz` runs them for minutes).

use apache_avro::types::Value;
use proptest::prelude::*;
use std::collections::BTreeMap;

use super::text::*;
use super::*;

/// Every type pgcdc maps, arrays (one and two levels) included.
fn pg_type() -> impl Strategy<Value = PgType> {
    let scalar = prop_oneof![
        Just(PgType::Bool),
        Just(PgType::Int2),
        Just(PgType::Int4),
        Just(PgType::Int8),
        Just(PgType::Oid),
        Just(PgType::Float4),
        Just(PgType::Float8),
        (1u32..40, 0u32..40).prop_map(|(p, s)| PgType::Numeric {
            precision: p.max(s),
            scale: s
        }),
        Just(PgType::NumericAny(NumericMode::Precise)),
        Just(PgType::NumericAny(NumericMode::Double)),
        Just(PgType::NumericAny(NumericMode::String)),
        Just(PgType::Text),
        Just(PgType::Bytea),
        Just(PgType::Uuid),
        Just(PgType::Json),
        Just(PgType::Date),
        Just(PgType::Time),
        Just(PgType::TimeTz),
        Just(PgType::Timestamp),
        Just(PgType::TimestampTz),
        Just(PgType::Interval),
        Just(PgType::Enum {
            labels: vec!["a".into(), "b c".into()]
        }),
        Just(PgType::Money),
        Just(PgType::Bit1),
        (2u32..20).prop_map(|length| PgType::Bits { length }),
        Just(PgType::VarBit),
        Just(PgType::Hstore),
    ];
    scalar.prop_recursive(2, 4, 1, |inner| {
        (inner, prop::sample::select(vec![b',', b';'])).prop_map(|(elem, delim)| PgType::Array {
            elem: Box::new(elem),
            delim,
        })
    })
}

/// Text built from the characters PostgreSQL's output formats use, so that parsers get past
/// their first check; plus arbitrary bytes.
fn texty() -> impl Strategy<Value = Vec<u8>> {
    let alphabet: Vec<char> = "0123456789-+.:eE ,;{}\"\\=>NULtfxT Z[]BCinfyaN$"
        .chars()
        .collect();
    prop_oneof![
        proptest::collection::vec(prop::sample::select(alphabet), 0..40)
            .prop_map(|v| v.into_iter().collect::<String>().into_bytes()),
        proptest::collection::vec(any::<u8>(), 0..40),
    ]
}

/// `array_out`: an element is quoted when empty, `NULL` in any case, or holding a quote,
/// backslash, brace, the delimiter or white space; quotes and backslashes are escaped.
fn array_out(items: &[Option<String>], delim: char) -> String {
    let mut out = String::from("{");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(delim);
        }
        match item {
            None => out.push_str("NULL"),
            Some(s) => {
                let quote = s.is_empty()
                    || s.eq_ignore_ascii_case("NULL")
                    || s.chars().any(|c| {
                        matches!(
                            c,
                            '"' | '\\' | '{' | '}' | ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c'
                        ) || c == delim
                    });
                if quote {
                    out.push('"');
                    for c in s.chars() {
                        if c == '"' || c == '\\' {
                            out.push('\\');
                        }
                        out.push(c);
                    }
                    out.push('"');
                } else {
                    out.push_str(s);
                }
            }
        }
    }
    out.push('}');
    out
}

/// `hstore_out`: `"k"=>"v", "k2"=>NULL`, quotes and backslashes escaped.
fn hstore_out(map: &BTreeMap<String, Option<String>>) -> String {
    fn q(s: &str) -> String {
        let mut o = String::from("\"");
        for c in s.chars() {
            if c == '"' || c == '\\' {
                o.push('\\');
            }
            o.push(c);
        }
        o.push('"');
        o
    }
    map.iter()
        .map(|(k, v)| format!("{}=>{}", q(k), v.as_deref().map_or("NULL".into(), q)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `numeric_out` of `unscaled` × 10^-scale: exactly `scale` fraction digits.
fn numeric_out(unscaled: i128, scale: u32) -> String {
    let digits = unscaled.unsigned_abs().to_string();
    let scale = scale as usize;
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (int, frac) = padded.split_at(padded.len() - scale);
    let sign = if unscaled < 0 { "-" } else { "" };
    if scale == 0 {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{frac}")
    }
}

/// Big-endian two's complement bytes back to an integer.
fn from_twos(b: &[u8]) -> i128 {
    let mut v: i128 = if b.first().is_some_and(|&x| x & 0x80 != 0) {
        -1
    } else {
        0
    };
    for &x in b {
        v = (v << 8) | i128::from(x);
    }
    v
}

/// Strings with the characters array and hstore literals treat specially.
fn element() -> impl Strategy<Value = String> {
    let special: Vec<char> = "aZ0 \"\\{},;=>\tNULLnull é\n".chars().collect();
    prop_oneof![
        proptest::collection::vec(prop::sample::select(special), 0..10)
            .prop_map(|v| v.into_iter().collect()),
        proptest::collection::vec(any::<char>().prop_filter("no NUL", |c| *c != '\0'), 0..10)
            .prop_map(|v| v.into_iter().collect()),
    ]
}

proptest! {
    #[test]
    fn any_input_is_a_value_or_an_error_never_a_panic(ty in pg_type(), raw in texty()) {
        if let Err(e) = ty.to_avro(&raw) {
            // The column's type, or for an element of an array, the element's type.
            let mut names = vec![ty.describe()];
            let mut t = &ty;
            while let PgType::Array { elem, .. } = t {
                names.push(elem.describe());
                t = elem;
            }
            prop_assert!(names.contains(&e.ty), "{} names none of {:?}", e, names);
        }
    }

    /// The row writer's scalar view agrees with `to_avro` on any input: the same value
    /// where it gives one, and it gives one wherever `to_avro` converts a scalar it covers.
    #[test]
    fn scalar_of_agrees_with_to_avro(ty in pg_type(), raw in texty()) {
        let full = ty.to_avro(&raw);
        match ty.scalar_of(&raw) {
            // Debug forms: NaN equals NaN there, and -0.0 differs from 0.0.
            Some(s) => prop_assert_eq!(format!("{:?}", Some(s.to_value())), format!("{:?}", full.ok())),
            None => {
                let covered = matches!(
                    ty,
                    PgType::Bool | PgType::Int2 | PgType::Int4 | PgType::Int8 | PgType::Oid
                        | PgType::Float4 | PgType::Float8 | PgType::Text | PgType::Uuid
                        | PgType::Json | PgType::Date | PgType::Time | PgType::Timestamp
                        | PgType::TimestampTz | PgType::Interval | PgType::Enum { .. }
                        | PgType::NumericAny(NumericMode::String)
                );
                prop_assert!(!covered || full.is_err(), "{:?} converts but scalar_of gave None", ty);
            }
        }
    }

    #[test]
    fn text_arrays_as_postgresql_prints_them_parse_back(
        items in proptest::collection::vec(proptest::option::of(element()), 0..8),
        delim in prop::sample::select(vec![',', ';']),
    ) {
        let ty = PgType::Array { elem: Box::new(PgType::Text), delim: delim as u8 };
        let want: Vec<Value> = items
            .iter()
            .map(|i| match i {
                None => Value::Union(0, Box::new(Value::Null)),
                Some(s) => Value::Union(1, Box::new(Value::String(s.clone()))),
            })
            .collect();
        let text = array_out(&items, delim);
        prop_assert_eq!(ty.to_avro(text.as_bytes()), Ok(Value::Array(want)), "{}", text);
    }

    #[test]
    fn int_arrays_of_two_dimensions_parse_back(
        rows in proptest::collection::vec(proptest::collection::vec(proptest::option::of(any::<i32>()), 3), 1..4),
    ) {
        let ty = PgType::Array {
            elem: Box::new(PgType::Array { elem: Box::new(PgType::Int4), delim: b',' }),
            delim: b',',
        };
        let text = format!(
            "{{{}}}",
            rows.iter()
                .map(|r| array_out(&r.iter().map(|v| v.map(|n| n.to_string())).collect::<Vec<_>>(), ','))
                .collect::<Vec<_>>()
                .join(",")
        );
        let want = Value::Array(
            rows.iter()
                .map(|r| Value::Union(1, Box::new(Value::Array(
                    r.iter()
                        .map(|v| match v {
                            None => Value::Union(0, Box::new(Value::Null)),
                            Some(n) => Value::Union(1, Box::new(Value::Int(*n))),
                        })
                        .collect(),
                ))))
                .collect(),
        );
        prop_assert_eq!(ty.to_avro(text.as_bytes()), Ok(want), "{}", text);
    }

    #[test]
    fn hstore_as_postgresql_prints_it_parses_back(
        map in proptest::collection::btree_map(element(), proptest::option::of(element()), 0..6),
    ) {
        let text = hstore_out(&map);
        let json = parse_hstore(&text);
        prop_assert!(json.is_some(), "{} refused", text);
        let got: BTreeMap<String, Option<String>> = serde_json::from_str(&json.unwrap()).unwrap();
        prop_assert_eq!(got, map);
    }

    #[test]
    fn numerics_as_postgresql_prints_them_parse_back(
        unscaled in any::<i128>(),
        precision in 1u32..=38,
        scale_pick in any::<u32>(),
    ) {
        let scale = scale_pick % (precision + 1);
        let bound = 10i128.pow(precision);
        let unscaled = unscaled % bound;
        let text = numeric_out(unscaled, scale);
        let ty = PgType::Numeric { precision, scale };
        match ty.to_avro(text.as_bytes()) {
            Ok(Value::Decimal(d)) => {
                let bytes: Vec<u8> = (&d).try_into().unwrap();
                prop_assert_eq!(from_twos(&bytes), unscaled, "{}", text);
            }
            other => prop_assert!(false, "{}: {:?}", text, other),
        }
        // Unconstrained numeric, precise mode: the scale as printed and the same digits.
        match PgType::NumericAny(NumericMode::Precise).to_avro(text.as_bytes()) {
            Ok(Value::Record(f)) => {
                prop_assert_eq!(&f[0].1, &Value::Int(scale as i32));
                let Value::Bytes(b) = &f[1].1 else { panic!("{f:?}") };
                prop_assert_eq!(from_twos(b), unscaled);
            }
            other => prop_assert!(false, "{}: {:?}", text, other),
        }
    }

    #[test]
    fn integers_floats_and_bytea_parse_back(
        i in any::<i64>(),
        x in any::<f64>().prop_filter("finite", |x| x.is_finite()),
        b in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        prop_assert_eq!(PgType::Int8.to_avro(i.to_string().as_bytes()), Ok(Value::Long(i)));
        // float8out with extra_float_digits=3: the shortest exact form, exponent as e+NN.
        let e = format!("{x:e}");
        let pg = match e.split_once('e') {
            Some((m, exp)) if !exp.starts_with('-') => format!("{m}e+{exp}"),
            _ => e,
        };
        match PgType::Float8.to_avro(pg.as_bytes()) {
            Ok(Value::Double(y)) => prop_assert_eq!(y.to_bits(), x.to_bits(), "{}", pg),
            other => prop_assert!(false, "{}: {:?}", pg, other),
        }
        let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
        prop_assert_eq!(PgType::Bytea.to_avro(format!("\\x{hex}").as_bytes()), Ok(Value::Bytes(b)));
    }
}
