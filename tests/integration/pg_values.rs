//! Issue 14.3's round trip: values PostgreSQL itself generates at random, per type, go through
//! pgoutput → pgcdc → Kafka → registry decoding and arrive as what PostgreSQL prints for
//! them. The expected form of each value is computed by PostgreSQL in SQL (days since the
//! epoch for a date, `extract(epoch …)` microseconds for a timestamp, the text of a numeric),
//! never by pgcdc's own code.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value as Json;

use crate::harness::Harness;

const ROWS: usize = 300;

const SCHEMA: &str = r#"
CREATE EXTENSION IF NOT EXISTS hstore;
-- A random string of up to maxlen characters: half from what array, hstore and COPY
-- literals treat specially, half any code point below the surrogates.
CREATE FUNCTION rstr(maxlen int) RETURNS text VOLATILE LANGUAGE sql AS $$
  SELECT coalesce(string_agg(CASE WHEN random() < 0.5
      THEN substr(s, 1 + floor(random() * length(s))::int, 1)
      ELSE chr(1 + (random() * 55000)::int) END, ''), '')
  FROM generate_series(1, (random() * maxlen)::int),
       (VALUES (E'{}",\\ \t\n\rNULLnull=>''')) AS special(s)
$$;
CREATE FUNCTION rints() RETURNS int[] VOLATILE LANGUAGE sql AS $$
  SELECT ARRAY(SELECT CASE WHEN random() < 0.2 THEN NULL ELSE ((random() * 2 - 1) * 2e9)::int END
               FROM generate_series(1, (random() * 5)::int))
$$;
CREATE FUNCTION rtexts() RETURNS text[] VOLATILE LANGUAGE sql AS $$
  SELECT ARRAY(SELECT CASE WHEN random() < 0.2 THEN NULL ELSE rstr(8) END
               FROM generate_series(1, (random() * 5)::int))
$$;
CREATE FUNCTION rnums() RETURNS numeric(12, 3)[] VOLATILE LANGUAGE sql AS $$
  SELECT ARRAY(SELECT CASE WHEN random() < 0.2 THEN NULL ELSE round(((random() * 2 - 1) * 1e9)::numeric, 3) END
               FROM generate_series(1, (random() * 5)::int))
$$;
CREATE FUNCTION rbytes(maxlen int) RETURNS bytea VOLATILE LANGUAGE sql AS $$
  SELECT coalesce(decode(string_agg(lpad(to_hex((random() * 255)::int), 2, '0'), ''), 'hex'), '\x'::bytea)
  FROM generate_series(1, (random() * maxlen)::int)
$$;
CREATE FUNCTION rhstore() RETURNS hstore VOLATILE LANGUAGE sql AS $$
  SELECT coalesce(hstore(array_agg(rstr(6)), array_agg(CASE WHEN random() < 0.2 THEN NULL ELSE rstr(6) END)), ''::hstore)
  FROM generate_series(1, (random() * 4)::int)
$$;
CREATE TABLE rt (
  id int PRIMARY KEY,
  c_int8 int8, c_float8 float8, c_float4 float4, c_num numeric(20, 5), c_num_arr numeric(12, 3)[],
  c_text text, c_text_arr text[], c_int_arr int[], c_bytea bytea, c_uuid uuid, c_jsonb jsonb,
  c_date date, c_ts timestamp, c_time time, c_interval interval, c_hstore hstore
);
"#;

const INSERT: &str = r#"
INSERT INTO rt
SELECT g,
  ((random() * 2 - 1) * 9.2e18)::int8,
  (random() * 2 - 1) * 10 ^ floor(random() * 600 - 300),
  ((random() * 2 - 1) * 10 ^ floor(random() * 60 - 30))::float4,
  round(((random() * 2 - 1) * 1e15)::numeric, 5),
  rnums(), rstr(40), rtexts(), rints(), rbytes(40), gen_random_uuid(),
  jsonb_build_object(rstr(5), random(), 'k', rstr(5), 'n', (random() * 1e6)::int),
  DATE '1970-01-01' + ((random() * 2 - 1) * 2000000)::int,
  DATE '1970-01-01' + ((random() * 2 - 1) * 2000000)::int + (random() * 86400e6)::bigint * interval '1 microsecond',
  ((random() * 86400e6)::bigint * interval '1 microsecond')::time,
  make_interval(((random() * 2 - 1) * 100)::int, ((random() * 2 - 1) * 20)::int, 0,
                ((random() * 2 - 1) * 40)::int, ((random() * 2 - 1) * 100)::int, 0,
                round(((random() * 2 - 1) * 100)::numeric, 6)::float8),
  rhstore()
FROM generate_series(1, $ROWS) g
"#;

/// What PostgreSQL prints for each row, in the form the topic carries it. Floats come as
/// text (parsed exactly below), hstore as `hstore_to_json`.
const EXPECTED: &str = r#"
SET extra_float_digits = 3;
SET IntervalStyle = iso_8601;
SELECT json_build_object(
  'id', id, 'c_int8', c_int8, 'c_float8', c_float8::text, 'c_float4', c_float4::float8::text,
  'c_num', c_num::text, 'c_num_arr', to_json(c_num_arr::text[]),
  'c_text', c_text, 'c_text_arr', to_json(c_text_arr), 'c_int_arr', to_json(c_int_arr),
  'c_bytea', '\x' || encode(c_bytea, 'hex'), 'c_uuid', c_uuid::text, 'c_jsonb', c_jsonb::text,
  'c_date', c_date - DATE '1970-01-01',
  'c_ts', (extract(epoch FROM c_ts) * 1000000)::bigint,
  'c_time', (extract(epoch FROM c_time) * 1000000)::bigint,
  'c_interval', c_interval::text, 'c_hstore', hstore_to_json(c_hstore))::text
FROM rt ORDER BY id
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_postgresql_generates_arrive_as_postgresql_prints_them() {
    pg_values_on(None).await;
}

on_majors!(values_postgresql_generates_on, pg_values_on);

async fn pg_values_on(major: Option<u32>) {
    let h = Harness::for_major(major, "pgvalues", SCHEMA).await;
    let run = h.start("").await;
    h.sql(&INSERT.replace("$ROWS", &ROWS.to_string())).await;
    let recs = h.read("rt", ROWS, Duration::from_secs(120)).await;
    run.stop().await.unwrap();
    assert_eq!(recs.len(), ROWS);

    let c = h.client().await;
    let mut want = BTreeMap::new();
    for msg in c.simple_query(EXPECTED).await.unwrap() {
        if let tokio_postgres::SimpleQueryMessage::Row(r) = msg {
            let row: Json = serde_json::from_str(r.get(0).unwrap()).unwrap();
            want.insert(row["id"].as_i64().unwrap(), row);
        }
    }
    assert_eq!(want.len(), ROWS);
    let mut checked = 0;
    for r in &recs {
        assert_eq!(r.value["op"], "c");
        for h in ["pgcdc.lossy", "pgcdc.unavailable"] {
            assert_eq!(r.header_columns(h), Vec::<String>::new(), "{h}");
        }
        let got = r.value["after"].as_object().unwrap();
        let id = got["id"].as_i64().unwrap();
        let w = want[&id].as_object().unwrap();
        assert_eq!(got.len(), w.len(), "row {id}: {:?}", got.keys());
        for (k, wv) in w {
            let gv = &got[k];
            match k.as_str() {
                "c_float8" | "c_float4" => {
                    let wf: f64 = wv.as_str().unwrap().parse().unwrap();
                    let gf = gv.as_f64().unwrap_or_else(|| panic!("row {id} {k}: {gv}"));
                    assert_eq!(gf.to_bits(), wf.to_bits(), "row {id} {k}: {gf} vs {wv}");
                }
                "c_hstore" => {
                    let gm: Json = serde_json::from_str(gv.as_str().unwrap()).unwrap();
                    assert_eq!(&gm, wv, "row {id} {k}");
                }
                _ => assert_eq!(gv, wv, "row {id} {k}"),
            }
            checked += 1;
        }
    }
    assert_eq!(checked, ROWS * 17);
    h.drop_slot().await;
}
