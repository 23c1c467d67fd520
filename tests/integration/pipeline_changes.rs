//! Inserts, updates (including primary-key changes), deletes and truncates across tables
//! with a simple key, a composite key, no primary key but configured key columns, and no key
//! at all: envelopes, keys, tombstones and per-key order as a Debezium consumer expects.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{json, Value as Json};

use crate::harness::{Harness, Record};

const SCHEMA: &str = "
CREATE TABLE accounts (id int PRIMARY KEY, owner text NOT NULL, balance numeric(12,2));
CREATE TABLE lines (order_id bigint, line_no int, sku text, qty int, PRIMARY KEY (order_id, line_no));
CREATE TABLE events (id bigint NOT NULL, body text);
ALTER TABLE events REPLICA IDENTITY FULL;
CREATE TABLE notes (body text);
ALTER TABLE notes REPLICA IDENTITY FULL;
";

/// `skipped_operations: []`: truncate events are sent (Debezium's default, and pgcdc's, skips them).
const CONNECTOR: &str = "key_columns:\n  public.events: [id]\nskipped_operations: []\n";

fn ops(recs: &[Record]) -> Vec<String> {
    recs.iter()
        .map(|r| match r.value["op"].as_str() {
            Some(op) => op.to_owned(),
            None => "tombstone".to_owned(),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inserts_updates_deletes_truncates_across_tables() {
    changes_on(None).await;
}

on_majors!(inserts_updates_deletes_truncates_on, changes_on);

async fn changes_on(major: Option<u32>) {
    let h = Harness::for_major(major, "changes", SCHEMA).await;
    let run = h.start(CONNECTOR).await;
    h.sql(
        "BEGIN;
         INSERT INTO accounts VALUES (1, 'ann', 10.00), (2, 'bob', 20.00);
         INSERT INTO lines VALUES (100, 1, 'A', 1), (100, 2, 'B', 2);
         INSERT INTO events VALUES (7, 'created');
         INSERT INTO notes VALUES ('hello');
         COMMIT;
         UPDATE accounts SET balance = 11.50 WHERE id = 1;
         UPDATE accounts SET id = 3 WHERE id = 2;
         UPDATE lines SET qty = 5 WHERE order_id = 100 AND line_no = 2;
         UPDATE events SET body = 'changed' WHERE id = 7;
         UPDATE notes SET body = 'bye';
         DELETE FROM lines WHERE order_id = 100 AND line_no = 1;
         DELETE FROM events WHERE id = 7;
         DELETE FROM notes;
         TRUNCATE accounts;",
    )
    .await;

    // accounts: c(1) c(2) u(1) [pk change 2->3: d(2) tombstone(2) c(3)] t
    let acc = h.read("accounts", 7, Duration::from_secs(60)).await;
    assert_eq!(
        ops(&acc),
        ["c", "c", "u", "d", "tombstone", "c", "t"],
        "{acc:#?}"
    );
    assert_eq!(acc[0].key, json!({"id": 1}));
    assert_eq!(
        acc[0].value["after"],
        json!({"id": 1, "owner": "ann", "balance": "10.00"})
    );
    assert_eq!(acc[2].value["after"]["balance"], "11.50");
    // REPLICA IDENTITY DEFAULT: an update that keeps the key has no before image.
    assert_eq!(acc[2].value["before"], Json::Null);
    assert_eq!(acc[3].key, json!({"id": 2}));
    assert_eq!(acc[3].value["before"]["id"], 2);
    assert_eq!(acc[3].value["after"], Json::Null);
    assert_eq!(
        (acc[4].key.clone(), acc[4].value.clone()),
        (json!({"id": 2}), Json::Null)
    );
    assert_eq!(acc[5].key, json!({"id": 3}));
    assert_eq!(
        acc[5].value["after"],
        json!({"id": 3, "owner": "bob", "balance": "20.00"})
    );
    assert_eq!(acc[6].key, Json::Null);
    assert_eq!(
        (
            acc[6].value["before"].clone(),
            acc[6].value["after"].clone()
        ),
        (Json::Null, Json::Null)
    );
    // The first transaction's six changes carry one xid and their order in it.
    assert_eq!(
        acc[0].value["source"]["txId"],
        acc[1].value["source"]["txId"]
    );
    assert_eq!(acc[0].value["transaction"]["total_order"], 1);
    assert_eq!(acc[1].value["transaction"]["total_order"], 2);
    assert_eq!(acc[1].value["transaction"]["data_collection_order"], 2);

    // lines: composite key; delete + tombstone.
    let lines = h.read("lines", 5, Duration::from_secs(30)).await;
    assert_eq!(ops(&lines), ["c", "c", "u", "d", "tombstone"], "{lines:#?}");
    assert_eq!(lines[0].key, json!({"order_id": 100, "line_no": 1}));
    assert_eq!(lines[2].key, json!({"order_id": 100, "line_no": 2}));
    assert_eq!(lines[2].value["after"]["qty"], 5);
    assert_eq!(lines[3].key, json!({"order_id": 100, "line_no": 1}));
    // DEFAULT identity: the delete's before image has the key columns only.
    assert_eq!(
        lines[3].value["before"],
        json!({"order_id": 100, "line_no": 1, "sku": null, "qty": null})
    );

    // events: no primary key, keyed by key_columns; FULL identity gives whole before images.
    let events = h.read("events", 4, Duration::from_secs(30)).await;
    assert_eq!(ops(&events), ["c", "u", "d", "tombstone"], "{events:#?}");
    assert!(events.iter().all(|r| r.key == json!({"id": 7})));
    assert_eq!(
        events[1].value["before"],
        json!({"id": 7, "body": "created"})
    );
    assert_eq!(
        events[1].value["after"],
        json!({"id": 7, "body": "changed"})
    );
    assert_eq!(
        events[2].value["before"],
        json!({"id": 7, "body": "changed"})
    );

    // notes: no key at all: null keys, and no tombstone (it would have no key to compact).
    let notes = h.read("notes", 3, Duration::from_secs(30)).await;
    assert_eq!(ops(&notes), ["c", "u", "d"], "{notes:#?}");
    assert!(notes.iter().all(|r| r.key == Json::Null));
    assert_eq!(notes[1].value["before"], json!({"body": "hello"}));

    run.stop().await.unwrap();
    h.drop_slot().await;
}

/// Many transactions touching the same keys: each key's events arrive in commit order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_key_order_follows_commit_order() {
    let h = Harness::new(
        "order",
        "CREATE TABLE counters (id int PRIMARY KEY, n int NOT NULL);",
    )
    .await;
    let run = h.start("").await;
    let client = h.client().await;
    client
        .batch_execute("INSERT INTO counters SELECT g, 0 FROM generate_series(1, 10) g")
        .await
        .unwrap();
    for round in 1..=30 {
        client
            .batch_execute(&format!(
                "UPDATE counters SET n = {round} WHERE id % {} = 0",
                1 + round % 3
            ))
            .await
            .unwrap();
    }
    let expected: usize = 10 + (1..=30).map(|r| 10 / (1 + r % 3)).sum::<usize>();
    let recs = h.read("counters", expected, Duration::from_secs(60)).await;
    assert_eq!(recs.len(), expected);
    let mut last: HashMap<i64, i64> = HashMap::new();
    for r in &recs {
        let id = r.key["id"].as_i64().unwrap();
        let n = r.value["after"]["n"].as_i64().unwrap();
        let prev = last.insert(id, n).unwrap_or(-1);
        assert!(
            n > prev || (n == 0 && prev == -1),
            "key {id}: {n} after {prev}"
        );
    }
    let final_rows = client
        .query("SELECT id, n FROM counters", &[])
        .await
        .unwrap();
    for row in final_rows {
        let (id, n): (i32, i32) = (row.get(0), row.get(1));
        assert_eq!(
            last.get(&i64::from(id)),
            Some(&i64::from(n)),
            "key {id}: last event differs from the table"
        );
    }
    run.stop().await.unwrap();
    h.drop_slot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncates_are_skipped_by_default_and_counted() {
    let h = Harness::new("skipt", "CREATE TABLE accounts (id int PRIMARY KEY);").await;
    let run = h.start("").await;
    h.sql("INSERT INTO accounts VALUES (1); TRUNCATE accounts; INSERT INTO accounts VALUES (2);")
        .await;
    // Nothing between the two inserts and nothing after them (read keeps reading past the
    // n-th record, so a truncate event would show): the truncate is not sent.
    let recs = h.read("accounts", 2, Duration::from_secs(60)).await;
    assert_eq!(ops(&recs), ["c", "c"], "{recs:#?}");
    assert_eq!(recs[1].key, json!({"id": 2}));
    assert_eq!(
        pgcdc::metrics::get_skipped(&h.name, "public.accounts", "t"),
        1
    );
    run.stop().await.unwrap();
    h.drop_slot().await;
}

/// `skipped_operations: [c, u, d]`: creates, updates and deletes are not sent (a delete's
/// tombstone neither), snapshot reads and the truncate are, and each skipped event is
/// counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skipped_operations_drop_their_events_and_a_deletes_tombstone() {
    let h = Harness::new(
        "skipcud",
        "CREATE TABLE accounts (id int PRIMARY KEY, v text); INSERT INTO accounts VALUES (0, 'snap');",
    )
    .await;
    let run = h.start("skipped_operations: [c, u, d]\n").await;
    h.sql(
        "INSERT INTO accounts VALUES (1, 'a'); UPDATE accounts SET v = 'b' WHERE id = 1; \
         DELETE FROM accounts WHERE id = 1; TRUNCATE accounts;",
    )
    .await;
    // read keeps reading past the n-th record: a create, update, delete or tombstone would
    // show.
    let recs = h.read("accounts", 2, Duration::from_secs(60)).await;
    assert_eq!(ops(&recs), ["r", "t"], "{recs:#?}");
    for op in ["c", "u", "d"] {
        assert_eq!(
            pgcdc::metrics::get_skipped(&h.name, "public.accounts", op),
            1,
            "{op}"
        );
    }
    run.stop().await.unwrap();
    h.drop_slot().await;
}

/// A transaction replicated into this server (a replication origin set up, as a subscriber
/// or a replication tool does): `source.origin` and `source.origin_lsn` name where it came
/// from, as Debezium 3.5+; local transactions have both null.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_names_the_replication_origin() {
    let h = Harness::new("origin", "CREATE TABLE t (id int PRIMARY KEY);").await;
    let run = h.start("").await;
    let origin = format!("up_{}", h.name);
    h.sql("INSERT INTO t VALUES (1)").await;
    // One session: the origin is a property of the session's next transaction.
    let c = h.client().await;
    c.batch_execute(&format!("SELECT pg_replication_origin_create('{origin}')"))
        .await
        .unwrap();
    c.batch_execute(&format!(
        "SELECT pg_replication_origin_session_setup('{origin}')"
    ))
    .await
    .unwrap();
    c.batch_execute("BEGIN").await.unwrap();
    c.batch_execute("SELECT pg_replication_origin_xact_setup('0/ABCDEF', now())")
        .await
        .unwrap();
    c.batch_execute("INSERT INTO t VALUES (2)").await.unwrap();
    c.batch_execute("COMMIT").await.unwrap();
    c.batch_execute("SELECT pg_replication_origin_session_reset()")
        .await
        .unwrap();
    c.batch_execute(&format!("SELECT pg_replication_origin_drop('{origin}')"))
        .await
        .unwrap();
    let recs = h.read("t", 2, Duration::from_secs(60)).await;
    run.stop().await.unwrap();
    let source = |i: usize| recs[i].value["source"].clone();
    assert_eq!(
        (source(0)["origin"].clone(), source(0)["origin_lsn"].clone()),
        (Json::Null, Json::Null)
    );
    assert_eq!(source(1)["origin"], json!(origin), "{:#?}", source(1));
    assert_eq!(source(1)["origin_lsn"], json!(0xABCDEF));
    // Debezium 3.6's fields in its order, then pgcdc's commit_lsn.
    let src = source(1);
    let names: Vec<&str> = src
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "version",
            "connector",
            "name",
            "ts_ms",
            "snapshot",
            "db",
            "sequence",
            "ts_us",
            "ts_ns",
            "schema",
            "table",
            "txId",
            "lsn",
            "xmin",
            "origin",
            "origin_lsn",
            "commit_lsn"
        ]
    );
    h.drop_slot().await;
}
