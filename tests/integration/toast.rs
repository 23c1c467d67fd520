//! Unchanged TOASTed values under REPLICA IDENTITY DEFAULT, in each `toast` mode: every
//! emitted value equals PostgreSQL's value at that change, or is Debezium's placeholder with
//! the column named in the `pgcdc.unavailable` header; never null, never another version.

use std::time::Duration;

use serde_json::{json, Value as Json};

use crate::harness::{Harness, Record};

/// Four out-of-line columns (> 8 kB each, STORAGE EXTERNAL defeats compression), rows 1-9.
const SCHEMA: &str = "
CREATE TABLE docs (id int PRIMARY KEY, n int NOT NULL DEFAULT 0,
                   body text, meta jsonb, blob bytea, tags text[]);
ALTER TABLE docs ALTER body SET STORAGE EXTERNAL, ALTER meta SET STORAGE EXTERNAL,
                 ALTER blob SET STORAGE EXTERNAL, ALTER tags SET STORAGE EXTERNAL;
CREATE FUNCTION big_row(i int) RETURNS docs LANGUAGE sql AS $$
  SELECT i, 0, repeat(md5(i::text), 400),
         jsonb_build_object('doc', repeat(md5((i * 7)::text), 300)),
         decode(repeat(md5((i * 13)::text), 600), 'hex'),
         array(SELECT md5((i * 17 + j)::text) FROM generate_series(1, 300) j)
$$;
INSERT INTO docs SELECT (big_row(i)).* FROM generate_series(1, 9) i;
";

const COLS: [&str; 4] = ["body", "meta", "blob", "tags"];
const PLACEHOLDER: &str = "__debezium_unavailable_value";

fn placeholder(col: &str) -> Json {
    match col {
        "blob" => Json::String(format!(
            "\\x{}",
            PLACEHOLDER
                .bytes()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        )),
        "tags" => json!([PLACEHOLDER]),
        _ => json!(PLACEHOLDER),
    }
}

/// PostgreSQL's values of a row, as the events carry them.
async fn row(h: &Harness, id: i32) -> Json {
    let c = h.client().await;
    let text: String = c
        .query_one(
            "SELECT json_build_object('body', body, 'meta', meta::text, 'blob', blob::text, 'tags', tags)::text
               FROM docs WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    serde_json::from_str(&text).unwrap()
}

/// Checks every TOAST column of an event against PostgreSQL's value at that change: equal,
/// or the placeholder and named in the header. Returns the placeholder columns.
fn check(what: &str, rec: &Record, want: &Json) -> Vec<String> {
    let after = &rec.value["after"];
    let header = rec.header_columns("pgcdc.unavailable");
    let mut placeholders = Vec::new();
    for col in COLS {
        let got = &after[col];
        let named = header.iter().any(|h| h == col);
        if got == &want[col] {
            assert!(!named, "{what}: {col} is exact but the header names it");
        } else {
            assert_eq!(
                got,
                &placeholder(col),
                "{what}: {col} is neither PostgreSQL's value at the change nor the placeholder"
            );
            assert!(
                named,
                "{what}: {col} is the placeholder but the header {header:?} does not name it"
            );
            placeholders.push(col.to_owned());
        }
    }
    assert_eq!(
        header.len(),
        placeholders.len(),
        "{what}: header {header:?}"
    );
    placeholders
}

fn all() -> Vec<String> {
    COLS.iter().map(|c| c.to_string()).collect()
}

fn none() -> Vec<String> {
    Vec::new()
}

/// Runs the scenarios in `mode`; returns the events and the values at each change.
async fn scenarios(h: &Harness, extra: &str) -> (Vec<Record>, Vec<Json>) {
    let run = h.start(extra).await;
    let before2 = row(h, 2).await;
    let before5 = row(h, 5).await;
    let before7 = row(h, 7).await;
    // S1: an update of another column.
    h.sql("UPDATE docs SET n = 1 WHERE id = 1").await;
    // S2: three updates of one row in one transaction; the second sets the large value.
    h.sql(
        "BEGIN;
         UPDATE docs SET n = 10 WHERE id = 2;
         UPDATE docs SET body = repeat('new body ', 2000) WHERE id = 2;
         UPDATE docs SET n = 11 WHERE id = 2;
         COMMIT;",
    )
    .await;
    // S3: a primary-key change (the old image is key-only).
    h.sql("UPDATE docs SET id = 100 WHERE id = 3").await;
    // S4: an update inside a savepoint (a subtransaction wrote the row version).
    h.sql("BEGIN; SAVEPOINT a; UPDATE docs SET n = 4 WHERE id = 4; RELEASE a; COMMIT;")
        .await;
    // S5: a concurrent transaction updates the large value right after (two transactions:
    // one simple query with two statements would be one).
    let c = h.client().await;
    c.batch_execute("UPDATE docs SET n = 5 WHERE id = 5")
        .await
        .unwrap();
    c.batch_execute("UPDATE docs SET body = repeat('raced ', 3000) WHERE id = 5")
        .await
        .unwrap();
    // S6: insert and update in one transaction.
    h.sql(
        "BEGIN; INSERT INTO docs SELECT (big_row(50)).*; UPDATE docs SET n = 6 WHERE id = 50; COMMIT;",
    )
    .await;
    // Wait for S1-S6 (12 records), then S7 while stopped: the row has a newer version by the
    // time pgcdc reads the first update (as in a replay after a crash).
    let recs = h.read("docs", 12, Duration::from_secs(90)).await;
    assert_eq!(recs.len(), 12, "{recs:#?}");
    run.stop().await.unwrap();
    h.sql("UPDATE docs SET n = 7 WHERE id = 7").await;
    h.sql("UPDATE docs SET body = repeat('later ', 3000) WHERE id = 7")
        .await;
    let run = h.start(extra).await;
    let recs = h.read("docs", 14, Duration::from_secs(90)).await;
    run.stop().await.unwrap();
    assert_eq!(recs.len(), 14, "{recs:#?}");

    let mut s2 = row(h, 2).await;
    let s2_final = s2.clone();
    s2["body"] = before2["body"].clone();
    let want = vec![
        row(h, 1).await, // 0: S1
        s2,              // 1: S2 first update, body as before
        s2_final.clone(),
        s2_final,
        Json::Null, // 4: delete of key 3
        Json::Null, // 5: tombstone
        row(h, 100).await,
        row(h, 4).await,
        before5,
        row(h, 5).await,
        row(h, 50).await,
        row(h, 50).await,
        before7, // 12: S7, after a restart
        row(h, 7).await,
    ];
    (recs, want)
}

fn ops(recs: &[Record]) -> Vec<String> {
    recs.iter()
        .map(|r| r.value["op"].as_str().unwrap_or("tombstone").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_completes_what_it_can_prove_and_marks_the_rest() {
    toast_fetch_on(None).await;
}

on_majors!(fetch_completes_on, toast_fetch_on);

async fn toast_fetch_on(major: Option<u32>) {
    let h = Harness::for_major(major, "toastfetch", SCHEMA).await;
    let (recs, want) = scenarios(&h, "snapshot:\n  mode: never\ntoast: fetch\n").await;
    // The first run's 12 records, then the restart's two (nothing committed is re-read).
    assert_eq!(
        ops(&recs),
        [
            "u",
            "u",
            "u",
            "u",
            "d",
            "tombstone",
            "c",
            "u",
            "u",
            "u",
            "c",
            "u",
            "u",
            "u"
        ]
    );
    let p = |i: usize| check(&format!("record {i}"), &recs[i], &want[i]);
    assert_eq!(p(0), none(), "S1: a plain update is completed");
    assert_eq!(
        p(1),
        vec!["body"],
        "S2: the value a later update set cannot be proven"
    );
    assert_eq!(p(2), none(), "S2: the update that set body");
    assert_eq!(p(3), none(), "S2: body from earlier in the transaction");
    assert_eq!(recs[6].key, json!({"id": 100}));
    assert_eq!(p(6), none(), "S3: a key change is completed, not nulled");
    assert_eq!(
        p(7),
        all(),
        "S4: a subtransaction wrote the row: placeholder"
    );
    let raced = p(8);
    assert!(raced.is_empty() || raced == all(), "S5: {raced:?}");
    assert_eq!(p(9), none(), "S5: the racing update");
    assert_eq!(p(10), none(), "S6: insert");
    assert_eq!(p(11), none(), "S6: update after insert");
    assert_eq!(p(12), all(), "S7: a newer version exists: placeholder");
    assert_eq!(p(13), none(), "S7: the newer update");
    // A delete's before under REPLICA IDENTITY DEFAULT (here: the key change's delete)
    // carries only the key: the other columns are named, NOT NULL n has its default.
    let deletes: Vec<&Record> = recs.iter().filter(|r| r.value["op"] == "d").collect();
    assert!(!deletes.is_empty());
    for d in &deletes {
        assert_eq!(
            d.header_columns("pgcdc.unavailable"),
            ["n", "body", "meta", "blob", "tags"],
            "{d:#?}"
        );
        assert_eq!(d.value["before"]["n"], 0, "the column default");
        assert_eq!(d.value["before"]["body"], Json::Null);
    }
    // The metric counts placeholders, not the columns a delete is never sent.
    let marked: usize = recs
        .iter()
        .filter(|r| r.value["op"] != "d")
        .map(|r| r.header_columns("pgcdc.unavailable").len())
        .sum();
    assert_eq!(
        pgcdc::metrics::get(pgcdc::metrics::UNAVAILABLE_VALUES, &h.name, "public.docs"),
        marked as u64
    );
    h.drop_slot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placeholder_mode_marks_every_value_it_was_not_sent() {
    let h = Harness::new("toastph", SCHEMA).await;
    let (recs, want) = scenarios(&h, "snapshot:\n  mode: never\ntoast: placeholder\n").await;
    let p = |i: usize| check(&format!("record {i}"), &recs[i], &want[i]);
    let rest = vec!["meta", "blob", "tags"];
    assert_eq!(p(0), all());
    assert_eq!(p(1), all());
    assert_eq!(p(2), rest);
    assert_eq!(
        p(3),
        rest,
        "body from earlier in the transaction, the rest placeholders"
    );
    assert_eq!(
        p(6),
        all(),
        "S3: a key change carries placeholders, never null"
    );
    assert_eq!(p(7), all());
    assert_eq!(p(8), all());
    assert_eq!(p(9), rest);
    assert_eq!(p(10), none());
    assert_eq!(
        p(11),
        none(),
        "S6: all four from the insert in the same transaction"
    );
    assert_eq!(p(12), all());
    assert_eq!(p(13), rest);
    h.drop_slot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_mode_stops_with_a_pasteable_hint() {
    let h = Harness::new("toastfail", &SCHEMA.replace("docs", "\"Doc Store\"")).await;
    let run = h.start("snapshot:\n  mode: never\ntoast: fail\n").await;
    h.sql("UPDATE \"Doc Store\" SET n = 1 WHERE id = 1").await;
    let err = run.expect_error(Duration::from_secs(60)).await;
    let msg = err.to_string();
    assert!(
        msg.contains("ALTER TABLE public.\"Doc Store\" REPLICA IDENTITY FULL")
            && msg.contains("toast: fail"),
        "{msg}"
    );
    // The hint is valid SQL as printed.
    let sql = msg
        .split("run ")
        .last()
        .and_then(|s| s.split(" so ").next())
        .unwrap();
    h.sql(sql).await;
    h.drop_slot().await;
}

/// SIGKILLs while a row's other column is updated again and again and its large value now
/// and then: after every restart the replayed updates carry the value PostgreSQL had at
/// that change, or the placeholder with the header (a newer version exists by then), and
/// every update arrives exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_after_sigkill_is_exact_or_marked() {
    let h = Harness::new("toastkill", SCHEMA).await;
    let (daemon_file, conn_file) = h.write_configs("snapshot:\n  mode: never\n");
    let mut child = h.spawn_daemon(&daemon_file, &conn_file, "run0.log");
    h.wait_slot(true, || true).await;
    const UPDATES: i32 = 300;
    let c = h.client().await;
    let mut kills = 0;
    for i in 1..=UPDATES {
        if i % 5 == 0 {
            c.batch_execute(&format!(
                "UPDATE docs SET n = {i}, body = repeat('v{i} ', 2000) WHERE id = 1"
            ))
            .await
            .unwrap();
        } else {
            c.batch_execute(&format!("UPDATE docs SET n = {i} WHERE id = 1"))
                .await
                .unwrap();
        }
        if i % 100 == 50 {
            child.start_kill().unwrap();
            child.wait().await.unwrap();
            kills += 1;
            child = h.spawn_daemon(&daemon_file, &conn_file, &format!("run{kills}.log"));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    h.wait_slot(true, || true).await;
    let recs = h
        .read("docs", UPDATES as usize, Duration::from_secs(120))
        .await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let mut seen = std::collections::BTreeSet::new();
    let mut placeholders = 0;
    for r in &recs {
        let n = r.value["after"]["n"].as_i64().unwrap() as i32;
        assert!(seen.insert(n), "update n={n} arrived twice");
        let version = n / 5 * 5;
        let want = if version == 0 {
            row_body_at_start(&h).await
        } else {
            format!("v{version} ").repeat(2000)
        };
        let got = &r.value["after"]["body"];
        let named = r
            .header_columns("pgcdc.unavailable")
            .contains(&"body".to_string());
        if got.as_str() == Some(want.as_str()) {
            assert!(!named, "n={n}: exact but named in the header");
        } else {
            assert_eq!(
                got,
                &placeholder("body"),
                "n={n}: neither the value at the change nor the placeholder"
            );
            assert!(named, "n={n}: placeholder without the header");
            placeholders += 1;
        }
    }
    assert_eq!(seen.len(), UPDATES as usize, "every update exactly once");
    eprintln!(
        "replay after {kills} SIGKILLs: {} updates, {placeholders} placeholders",
        recs.len()
    );
    h.drop_slot().await;
}

/// Row 1's body as inserted (`big_row(1)`).
async fn row_body_at_start(h: &Harness) -> String {
    h.client()
        .await
        .query_one("SELECT (big_row(1)).body", &[])
        .await
        .unwrap()
        .get(0)
}
