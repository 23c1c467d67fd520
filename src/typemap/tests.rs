use apache_avro::types::Value;
use serde_json::json;

use super::schema::*;
use super::text::*;
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
    assert_eq!(
        conv(&PgType::TimeTz, "01:00:00-05:30:15"),
        Value::String("01:00:00-05:30:15".into())
    );
    assert_eq!(
        conv(&PgType::TimeTz, "01:00:00+00:00:00"),
        Value::String("01:00:00Z".into())
    );
    for bad in [
        "01:00:00+5",
        "01:00:00+05:3",
        "01:00:00+05:30:15:00",
        "01:00:00+",
    ] {
        assert!(PgType::TimeTz.to_avro(bad.as_bytes()).is_err(), "{bad}");
    }
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
        conv(&PgType::TimestampTz, "2024-01-02 03:04:05-03:30"),
        Value::String("2024-01-02T03:04:05-03:30".into())
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
