//! Debezium's own consumer on pgcdc's topics: Kafka Connect (Maven Central's jars, installed
//! by `dev/connect/install`) running Debezium's JDBC sink 3.6 with Confluent's AvroConverter
//! (`read_committed`, upsert, deletes, `primary.key.mode=record_key`, `schema.evolution=basic`)
//! replicates a pgcdc stream into a second database. Every table equals its source, except
//! the sink limits this test names; the sink creates NOT NULL columns and defaults from the
//! schemas.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value as Json;

use crate::harness::Harness;

const SCHEMA: &str = r#"
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE kinds (
  id int PRIMARY KEY,
  c_bool bool NOT NULL DEFAULT true, c_int2 int2, c_int4 int4 NOT NULL DEFAULT 1, c_int8 int8,
  c_float4 float4, c_float8 float8,
  c_numeric numeric(10, 2), c_numeric_any numeric,
  c_text text NOT NULL DEFAULT 'pending', c_varchar varchar(20), c_char char(3) DEFAULT 'EUR',
  c_bytea bytea, c_uuid uuid, c_json json, c_jsonb jsonb,
  c_date date, c_time time, c_timestamp timestamp, c_timestamptz timestamptz,
  c_interval interval, c_enum mood
);
CREATE TABLE by_text (code text PRIMARY KEY, v int NOT NULL);
CREATE TABLE by_uuid (id uuid PRIMARY KEY, v text);
CREATE TABLE by_pair (a bigint, b text, qty int NOT NULL, note text, PRIMARY KEY (a, b));
"#;

const CHANGES: &str = r#"
INSERT INTO kinds (id) VALUES (1);
INSERT INTO kinds VALUES (2,
  false, -32768, 2147483647, -9223372036854775808,
  1.5, -2.25,
  12345678.90, 3.14159,
  'héllo "wörld" ✓', 'abc', 'ab',
  '\x00ff10', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"a": [1, 2.50]}', '{"b": 1, "a": [true, null]}',
  '2024-02-29', '13:45:01.5', '2024-02-29 12:00:00.000001', '2024-01-02 03:04:05.123456+02',
  '1 year 2 months 3 days 04:05:06.5', 'happy');
INSERT INTO kinds (id, c_date, c_timestamp, c_timestamptz)
  VALUES (3, 'infinity', '-infinity', 'infinity'), (4, '1969-12-31', '1900-01-01 00:00:00', '1970-01-01 00:00:00+00');
INSERT INTO kinds (id, c_numeric_any, c_float8) VALUES (5, 'NaN', 'NaN');
INSERT INTO kinds (id, c_numeric_any) VALUES (6, 12345678901234567890.123456789);
UPDATE kinds SET c_text = 'changed', c_int2 = 7 WHERE id = 1;
UPDATE kinds SET id = 10 WHERE id = 4;
DELETE FROM kinds WHERE id = 5;
INSERT INTO by_text VALUES ('a', 1), ('b b', 2), ('ç', 3);
UPDATE by_text SET code = 'bb' WHERE code = 'b b';
DELETE FROM by_text WHERE code = 'a';
INSERT INTO by_uuid VALUES ('00000000-0000-0000-0000-000000000001', 'x'), ('ffffffff-0000-0000-0000-000000000002', NULL);
UPDATE by_uuid SET v = 'y' WHERE v IS NULL;
INSERT INTO by_pair VALUES (1, 'x', 1, 'n'), (1, 'y', 2, NULL), (2, 'x', 3, 'm');
UPDATE by_pair SET b = 'w' WHERE a = 1 AND b = 'x';
UPDATE by_pair SET qty = 20 WHERE a = 2;
DELETE FROM by_pair WHERE a = 1 AND b = 'y';
"#;

/// Tables and their key columns, for ordering.
const TABLES: [(&str, &str); 4] = [
    ("kinds", "id"),
    ("by_text", "code"),
    ("by_uuid", "id"),
    ("by_pair", "a, b"),
];

/// Kafka Connect, stopped when dropped.
struct Connect(Child);

impl Drop for Connect {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Each row as JSON (`to_jsonb`), in key order; `optional`: a table the sink has not
/// created yet has no rows.
async fn rows(c: &tokio_postgres::Client, table: &str, order: &str, optional: bool) -> Vec<Json> {
    match c
        .query(
            &format!("SELECT to_jsonb(t)::text FROM {table} t ORDER BY {order}"),
            &[],
        )
        .await
    {
        Ok(rows) => rows
            .iter()
            .map(|r| serde_json::from_str(r.get::<_, &str>(0)).unwrap())
            .collect(),
        Err(e)
            if optional && e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) =>
        {
            Vec::new()
        }
        Err(e) => panic!("{table}: {e}"),
    }
}

/// What the sink cannot store as the source holds it, by (table, column): the value the
/// target holds instead, or None where it must hold SQL NULL. Everything else must be equal.
fn sink_limit(table: &str, column: &str, id: &Json, source: &Json) -> Option<Option<Json>> {
    match (table, column, id.as_i64()) {
        // Debezium's JDBC sink stores io.debezium.data.VariableScaleDecimal (unconstrained
        // numeric under numeric_mode: precise) as double precision: the nearest double.
        // pgcdc sends it exactly; numeric_mode: string keeps it exact in the sink too.
        ("kinds", "c_numeric_any", Some(2 | 6)) => {
            let f: f64 = source.to_string().parse().unwrap();
            Some(Some(serde_json::json!(f)))
        }
        // ±infinity in date and timestamp: no Debezium integer type holds it; pgcdc sends
        // null (header pgcdc.lossy), so the sink stores NULL, never a finite instant.
        ("kinds", "c_date" | "c_timestamp", Some(3)) => Some(None),
        // Unconstrained numeric NaN: null (pgcdc.lossy) under numeric_mode: precise.
        ("kinds", "c_numeric_any", Some(5)) => Some(None),
        // interval is Debezium's interval.handling.mode=string: the sink stores the ISO 8601
        // text in a text column.
        ("kinds", "c_interval", Some(2)) => Some(Some(Json::String("P1Y2M3DT4H5M6.5S".into()))),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debeziums_jdbc_sink_replicates_pgcdc_topics() {
    let _jvm = crate::common::one_jvm().await;
    let h = Harness::new("jdbcsink", SCHEMA).await;
    let dst = format!("{}_dst", h.db);
    let _drop_dst = crate::harness::DropDatabase::on(&h.stack, &dst);
    let admin = h.stack.pg_connect("postgres").await;
    for sql in [
        format!("DROP DATABASE IF EXISTS {dst}"),
        format!("CREATE DATABASE {dst}"),
    ] {
        admin.batch_execute(&sql).await.unwrap();
    }

    let run = h.start("").await;
    h.sql(CHANGES).await;
    // Its own query string: in one, BEGIN would take the statements before it along.
    h.sql("BEGIN; INSERT INTO by_pair VALUES (9, 'rolled back', 1, NULL); ROLLBACK;")
        .await;

    let root = env!("CARGO_MANIFEST_DIR");
    let work = h.dir.join("connect");
    let log = h.dir.join("connect.log");
    let connect = Connect(
        Command::new(format!("{root}/dev/connect/run-sink"))
            .env(
                "SINK_JDBC_URL",
                format!(
                    "jdbc:postgresql://{}:{}/{dst}",
                    h.stack.pg_host, h.stack.pg_port
                ),
            )
            .env("SINK_JDBC_USER", &h.stack.pg_user)
            .env(
                "SINK_TOPICS_REGEX",
                format!("{}\\.public\\..*", h.prefix.replace('.', "\\.")),
            )
            .env("SINK_NAME", &h.name)
            .env("KAFKA_BOOTSTRAP", &h.stack.kafka_bootstrap)
            .env("SCHEMA_REGISTRY_URL", &h.stack.registry_url)
            .env("CONNECT_WORK_DIR", &work)
            .env("CONNECT_LOG_FILE", &log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dev/connect/run-sink"),
    );

    let src = h.client().await;
    let target = h.stack.pg_connect(&dst).await;
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut last = String::new();
    let equal = loop {
        let mut diffs = Vec::new();
        for (table, order) in TABLES {
            let want = rows(&src, table, order, false).await;
            assert!(!want.is_empty(), "{table} has rows");
            let got = rows(&target, table, order, true).await;
            if want.len() != got.len() {
                diffs.push(format!(
                    "{table}: {} rows, the sink has {}",
                    want.len(),
                    got.len()
                ));
                continue;
            }
            for (w, g) in want.iter().zip(&got) {
                let (w, g) = (w.as_object().unwrap(), g.as_object().unwrap());
                let key = w.get("id").cloned().unwrap_or(Json::Null);
                for (col, wv) in w {
                    let gv = g.get(col).cloned().unwrap_or(Json::Null);
                    let limit = sink_limit(table, col, &key, wv);
                    let same = match &limit {
                        // A named limit: what the sink holds instead (numbers as numbers:
                        // double precision prints its own way).
                        Some(instead) => {
                            let expect = instead.clone().unwrap_or(Json::Null);
                            match (gv.as_f64(), expect.as_f64()) {
                                (Some(a), Some(b)) => a == b,
                                _ => gv == expect,
                            }
                        }
                        None => &gv == wv,
                    };
                    let expect = limit.map_or_else(|| wv.clone(), |i| i.unwrap_or(Json::Null));
                    if !same {
                        diffs.push(format!(
                            "{table} {key} {col}: source {wv}, sink {gv}, expected {expect}"
                        ));
                    }
                }
            }
        }
        if diffs.is_empty() {
            break true;
        }
        last = diffs.join("\n");
        if Instant::now() > deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    drop(connect);
    run.stop().await.unwrap();
    assert!(
        equal,
        "the sink's tables differ from the source:\n{last}\n(Connect's log: {})",
        log.display()
    );

    // The sink created its tables from pgcdc's schemas: NOT NULL where the source has it
    // (and the field is required), defaults carried.
    let cols: BTreeMap<String, (String, Option<String>)> = target
        .query(
            "SELECT table_name || '.' || column_name, is_nullable, column_default
               FROM information_schema.columns WHERE table_schema = 'public'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    for (col, nullable) in [
        ("kinds.id", "NO"),
        ("kinds.c_bool", "NO"),
        ("kinds.c_int4", "NO"),
        ("kinds.c_text", "NO"),
        ("kinds.c_int2", "YES"),
        // NOT NULL would be kept too, but date may hold ±infinity: optional (README).
        ("kinds.c_date", "YES"),
        ("by_text.v", "NO"),
        ("by_pair.qty", "NO"),
        ("by_pair.note", "YES"),
    ] {
        assert_eq!(
            cols.get(col).map(|c| c.0.as_str()),
            Some(nullable),
            "{col}: {cols:?}"
        );
    }
    let default = |c: &str| cols.get(c).and_then(|c| c.1.clone()).unwrap_or_default();
    assert!(default("kinds.c_text").contains("pending"), "{cols:?}");
    assert!(default("kinds.c_int4").contains('1'), "{cols:?}");
    h.drop_slot().await;
}
