//! Every mapped PostgreSQL type travels PostgreSQL → pgoutput → pgcdc → Kafka → registry
//! decoding intact: typical values, edge values (NaN, ±Infinity, ±infinity, BC dates,
//! empty and NULL-holding arrays, extreme integers) and NULLs, compared field by field.

use std::time::Duration;

use serde_json::{json, Value as Json};

use crate::harness::Harness;

pub const SCHEMA: &str = r#"
CREATE EXTENSION IF NOT EXISTS hstore;
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN posint AS integer CHECK (VALUE > 0);
CREATE DOMAIN price AS numeric(8, 3);
CREATE TABLE all_types (
  id int PRIMARY KEY,
  c_bool bool, c_int2 int2, c_int4 int4, c_int8 int8, c_oid oid,
  c_float4 float4, c_float8 float8,
  c_numeric numeric(10, 2), c_numeric_any numeric,
  c_text text, c_varchar varchar(20), c_char char(5), c_name name,
  c_bytea bytea, c_uuid uuid, c_json json, c_jsonb jsonb, c_xml xml,
  c_date date, c_time time, c_timetz timetz, c_timestamp timestamp, c_timestamptz timestamptz,
  c_interval interval, c_enum mood,
  c_int_arr int[], c_text_arr text[], c_numeric_arr numeric(6, 2)[], c_date_arr date[],
  c_domain posint, c_domain_num price, c_domain_arr posint[],
  c_inet inet, c_cidr cidr, c_macaddr macaddr, c_money money,
  c_bit1 bit(1), c_bit bit(10), c_varbit varbit(20), c_hstore hstore,
  c_point point,
  c_int_2d int[][], c_lossy_arr int[], c_range int4range
);
"#;

pub const TYPICAL: &str = r#"INSERT INTO all_types VALUES (1,
  true, -32768, 2147483647, -9223372036854775808, 4294967295,
  1.5, -2.25,
  12345678.90, 3.14159,
  'héllo "wörld" ✓', 'abc', 'ab', 'nm',
  '\x00ff10', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"a": [1, 2.50]}', '{"b": 1, "a": [true, null]}', '<a x="1">t</a>',
  '2024-02-29', '13:45:01.5', '12:34:56.789+05:30', '2024-02-29 12:00:00.000001', '2024-01-02 03:04:05.123456+02',
  '1 year 2 months 3 days 04:05:06.5', 'happy',
  '{1,NULL,3}', '{"a b","NULL",NULL,"q\"x"}', '{1.50,NULL,-2.25}', '{2000-01-01,NULL}',
  7, 12.5, '{1,2}',
  '192.168.0.1/24', '10.0.0.0/8', '08:00:2b:01:02:03', 1234.56,
  B'1', B'1000000001', B'0010', 'a=>1, b=>NULL',
  '(1.5,2)',
  '{{1,2},{NULL,4}}', '{5}', '[1,5)'
)"#;

pub const EDGES: &str = r#"INSERT INTO all_types VALUES (2,
  false, 32767, -2147483648, 9223372036854775807, 0,
  'NaN', '-Infinity',
  -0.01, -12345678901234567890.123456789,
  '', '', '', '',
  '\x', '00000000-0000-0000-0000-000000000000', '[]', '{}', '',
  '-infinity', '24:00:00', '00:00:00+00', 'infinity', '-infinity',
  '-1 days -02:00:00', 'sad',
  '{}', '{""}', '{}', '{infinity,0044-03-15 BC}',
  2147483647, -99999.999, '{}',
  '::1', '::/0', 'ff:ff:ff:ff:ff:ff', -0.01,
  B'0', B'0000000000', B'', '',
  '(-1e+300,0)',
  '{}', '{{1,2},{3,4}}', 'empty'
)"#;

pub const NULLS: &str = "INSERT INTO all_types (id) VALUES (3)";

fn typical() -> Json {
    json!({
        "id": 1,
        "c_bool": true, "c_int2": -32768, "c_int4": 2147483647, "c_int8": i64::MIN, "c_oid": 4294967295u64,
        "c_float4": 1.5, "c_float8": -2.25,
        "c_numeric": "12345678.90",
        "c_numeric_any": {"scale": 5, "value": "\\x04cb2f"},
        "c_text": "héllo \"wörld\" ✓", "c_varchar": "abc", "c_char": "ab   ", "c_name": "nm",
        "c_bytea": "\\x00ff10", "c_uuid": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "c_json": "{\"a\": [1, 2.50]}", "c_jsonb": "{\"a\": [true, null], \"b\": 1}", "c_xml": "<a x=\"1\">t</a>",
        "c_date": 19782, "c_time": 49_501_500_000i64, "c_timetz": "12:34:56.789+05:30",
        "c_timestamp": 1_709_208_000_000_001i64, "c_timestamptz": "2024-01-02T01:04:05.123456Z",
        "c_interval": "P1Y2M3DT4H5M6.5S", "c_enum": "happy",
        "c_int_arr": [1, null, 3], "c_text_arr": ["a b", "NULL", null, "q\"x"],
        "c_numeric_arr": ["1.50", null, "-2.25"], "c_date_arr": [10957, null],
        "c_domain": 7, "c_domain_num": "12.500", "c_domain_arr": [1, 2],
        "c_inet": "192.168.0.1/24", "c_cidr": "10.0.0.0/8", "c_macaddr": "08:00:2b:01:02:03", "c_money": "1234.56",
        "c_bit1": true, "c_bit": "\\x0102", "c_varbit": "0010", "c_hstore": "{\"a\":\"1\",\"b\":null}",
        "c_point": "(1.5,2)",
        "c_int_2d": [[1, 2], [null, 4]], "c_lossy_arr": [5], "c_range": "[1,5)"
    })
}

fn edges() -> Json {
    json!({
        "id": 2,
        "c_bool": false, "c_int2": 32767, "c_int4": i32::MIN, "c_int8": i64::MAX, "c_oid": 0,
        "c_float4": "NaN", "c_float8": "-Infinity",
        "c_numeric": "-0.01",
        "c_numeric_any": {"scale": 9, "value": "\\xd81be4cdb941364e91c67eeb"},
        "c_text": "", "c_varchar": "", "c_char": "     ", "c_name": "",
        "c_bytea": "\\x", "c_uuid": "00000000-0000-0000-0000-000000000000",
        "c_json": "[]", "c_jsonb": "{}", "c_xml": "",
        // -infinity / infinity: no Debezium date or timestamp holds them (a number would land
        // in a sink as a wrong finite instant): null, named in pgcdc.lossy. timestamptz, a
        // string, keeps them.
        "c_date": null, "c_time": 86_400_000_000i64, "c_timetz": "00:00:00Z",
        "c_timestamp": null, "c_timestamptz": "-infinity",
        "c_interval": "P-1DT-2H", "c_enum": "sad",
        "c_int_arr": [], "c_text_arr": [""], "c_numeric_arr": [], "c_date_arr": null,
        "c_domain": 2147483647, "c_domain_num": "-99999.999", "c_domain_arr": [],
        "c_inet": "::1", "c_cidr": "::/0", "c_macaddr": "ff:ff:ff:ff:ff:ff", "c_money": "-0.01",
        "c_bit1": false, "c_bit": "\\x0000", "c_varbit": "", "c_hstore": "{}",
        "c_point": "(-1e+300,0)",
        // A 2-D value in a column declared 1-D: null under unrepresentable: null, named in
        // the pgcdc.lossy header.
        "c_int_2d": [], "c_lossy_arr": null, "c_range": "empty"
    })
}

fn nulls(columns: &serde_json::Map<String, Json>) -> Json {
    let mut m = serde_json::Map::new();
    for k in columns.keys() {
        m.insert(k.clone(), Json::Null);
    }
    m.insert("id".into(), json!(3));
    Json::Object(m)
}

fn assert_fields(row: &str, got: &Json, want: &Json) {
    let (g, w) = (got.as_object().unwrap(), want.as_object().unwrap());
    for (k, wv) in w {
        assert_eq!(g.get(k), Some(wv), "row {row}: column {k}");
    }
    assert_eq!(
        g.len(),
        w.len(),
        "row {row}: columns {:?}",
        g.keys().collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_arrives_intact() {
    every_type_on(None).await;
}

on_majors!(every_type_arrives_intact_on, every_type_on);

async fn every_type_on(major: Option<u32>) {
    let h = Harness::for_major(major, "types", SCHEMA).await;
    let run = h.start("").await;
    h.sql(TYPICAL).await;
    h.sql(EDGES).await;
    h.sql(NULLS).await;
    let recs = h.read("all_types", 3, Duration::from_secs(60)).await;
    run.stop().await.unwrap();
    assert_eq!(recs.len(), 3, "{recs:#?}");
    for r in &recs {
        assert_eq!(r.value["op"], "c");
        assert_eq!(r.value["before"], Json::Null);
        assert_eq!(r.value["source"]["table"], "all_types");
        assert_eq!(r.value["source"]["db"], h.db.as_str());
        assert_eq!(r.key, json!({"id": r.value["after"]["id"]}));
    }
    assert_fields("typical", &recs[0].value["after"], &typical());
    assert_fields("edges", &recs[1].value["after"], &edges());
    assert_eq!(recs[0].header_columns("pgcdc.lossy"), Vec::<String>::new());
    assert_eq!(
        recs[1].header_columns("pgcdc.lossy"),
        ["c_date", "c_timestamp", "c_date_arr", "c_lossy_arr"]
    );
    let want_nulls = nulls(typical().as_object().unwrap());
    assert_fields("nulls", &recs[2].value["after"], &want_nulls);
    h.drop_slot().await;
}

/// numeric(p,s) holding NaN cannot be an Avro decimal. By default (`unrepresentable: null`)
/// the column is null, the event names it in header `pgcdc.lossy`, a metric counts it, and
/// the stream goes on; with `unrepresentable: fail` the connector stops with the table and
/// column named, and nothing of that transaction is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrepresentable_values_follow_the_policy() {
    let schema = "CREATE TABLE t (id int PRIMARY KEY, amount numeric(10,2), note text);
                  CREATE TABLE u (id int PRIMARY KEY, free numeric);";
    let h = Harness::new("nan", schema).await;
    let run = h.start("").await;
    h.sql("INSERT INTO t VALUES (1, 1.00, 'a')").await;
    h.sql(
        "BEGIN; INSERT INTO t VALUES (2, 2.00, 'b'); INSERT INTO t VALUES (3, 'NaN', 'c'); COMMIT;",
    )
    .await;
    h.sql("UPDATE t SET amount = 'NaN' WHERE id = 1; INSERT INTO t VALUES (4, 4.00, 'd');")
        .await;
    let recs = h.read("t", 5, Duration::from_secs(60)).await;
    assert_eq!(recs.len(), 5, "{recs:#?}");
    let lossy: Vec<Vec<String>> = recs
        .iter()
        .map(|r| r.header_columns("pgcdc.lossy"))
        .collect();
    let none: Vec<String> = Vec::new();
    assert_eq!(
        lossy,
        [
            none.clone(),
            none.clone(),
            vec!["amount".to_string()],
            vec!["amount".to_string()],
            none
        ]
    );
    assert_eq!(
        recs[2].value["after"],
        serde_json::json!({"id": 3, "amount": null, "note": "c"})
    );
    assert_eq!(recs[3].value["after"]["amount"], Json::Null);
    assert_eq!(recs[4].value["after"]["amount"], "4.00");
    assert_eq!(
        pgcdc::metrics::get(pgcdc::metrics::LOSSY_VALUES, &h.name, "public.t"),
        2
    );
    // Unconstrained numeric under numeric_mode: precise (VariableScaleDecimal): NaN and
    // ±Infinity cannot be carried either; a finite value beside them arrives exactly.
    h.sql("INSERT INTO u VALUES (1, 'Infinity'), (2, '-Infinity'), (3, 'NaN'), (4, 1.5)")
        .await;
    let recs = h.read("u", 4, Duration::from_secs(60)).await;
    assert_eq!(recs.len(), 4, "{recs:#?}");
    for r in &recs[..3] {
        assert_eq!(r.header_columns("pgcdc.lossy"), ["free"], "{r:?}");
        assert_eq!(r.value["after"]["free"], Json::Null);
    }
    assert!(recs[3].header_columns("pgcdc.lossy").is_empty());
    assert_eq!(
        recs[3].value["after"]["free"],
        serde_json::json!({"scale": 1, "value": "\\x0f"})
    );
    run.stop().await.unwrap();
    h.drop_slot().await;

    let h = Harness::new("nanfail", schema).await;
    let run = h.start("unrepresentable: fail\n").await;
    h.sql("INSERT INTO t VALUES (1, 1.00, 'a')").await;
    h.read("t", 1, Duration::from_secs(60)).await;
    h.sql(
        "BEGIN; INSERT INTO t VALUES (2, 2.00, 'b'); INSERT INTO t VALUES (3, 'NaN', 'c'); COMMIT;",
    )
    .await;
    let err = run.expect_error(Duration::from_secs(60)).await;
    let msg = err.to_string();
    assert!(
        msg.contains("table public.t column amount")
            && msg.contains("NaN")
            && msg.contains("unrepresentable: null"),
        "{msg}"
    );
    // Row 2 shares the failed transaction: it must not be visible either.
    let recs = h.read("t", 1, Duration::from_secs(10)).await;
    assert_eq!(recs.len(), 1, "{recs:#?}");
    h.drop_slot().await;
}

/// A 3 MiB text arrives whole; a change over the 10 MiB record limit stops the connector
/// with the table named, and nothing of its transaction is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_values_arrive_whole_or_stop_clearly() {
    let h = Harness::new("big", "CREATE TABLE docs (id int PRIMARY KEY, body text);").await;
    let run = h.start("").await;
    h.sql("INSERT INTO docs VALUES (1, repeat('abcdefghij', 300000) || 'end')")
        .await;
    let recs = h.read("docs", 1, Duration::from_secs(60)).await;
    let body = recs[0].value["after"]["body"].as_str().unwrap();
    assert_eq!(body.len(), 3_000_003);
    assert!(body.ends_with("jend"));
    h.sql("INSERT INTO docs VALUES (2, repeat('x', 11 * 1024 * 1024))")
        .await;
    let err = run.expect_error(Duration::from_secs(60)).await;
    let msg = err.to_string();
    assert!(
        msg.contains("table public.docs") && msg.contains("record limit"),
        "{msg}"
    );
    assert_eq!(h.read("docs", 1, Duration::from_secs(10)).await.len(), 1);
    h.drop_slot().await;
}
