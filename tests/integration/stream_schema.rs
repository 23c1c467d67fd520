//! Keys and column types come from the stream, not today's catalog: a connector that was
//! stopped while a table's primary key and a column's type changed produces, on restart, the
//! events it would have produced running through. And a connector on a database without
//! tables starts and captures the tables created later.

use std::time::Duration;

use serde_json::json;

use crate::harness::Harness;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_written_before_a_key_and_type_change_keep_the_old_key_and_types() {
    let h = Harness::new(
        "history",
        "CREATE TABLE acct (id int PRIMARY KEY, code int NOT NULL, amount int);",
    )
    .await;
    let run = h.start("snapshot:\n  mode: never\n").await;
    h.sql("INSERT INTO acct VALUES (1, 10, 100)").await;
    h.read("acct", 1, Duration::from_secs(60)).await;
    run.stop().await.unwrap();

    h.sql("INSERT INTO acct VALUES (2, 20, 200)").await;
    h.sql(
        "ALTER TABLE acct DROP CONSTRAINT acct_pkey, ADD PRIMARY KEY (code);
         ALTER TABLE acct ALTER amount TYPE text;",
    )
    .await;
    h.sql("INSERT INTO acct VALUES (3, 30, 'three hundred')")
        .await;

    let run = h.start("snapshot:\n  mode: never\n").await;
    let recs = h.read("acct", 3, Duration::from_secs(60)).await;
    run.stop().await.unwrap();
    assert_eq!(recs.len(), 3, "{recs:#?}");
    assert_eq!(
        recs[1].key,
        json!({"id": 2}),
        "written under the old primary key"
    );
    assert_eq!(
        recs[1].value["after"],
        json!({"id": 2, "code": 20, "amount": 200}),
        "written while amount was an int"
    );
    assert_eq!(recs[2].key, json!({"code": 30}));
    assert_eq!(
        recs[2].value["after"],
        json!({"id": 3, "code": 30, "amount": "three hundred"})
    );
    h.drop_slot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_without_tables_starts_and_captures_tables_created_later() {
    let h = Harness::new("notables", "SELECT 1;").await;
    let (_, conn) = h.configs("");
    let catalog = pgcdc::postgres::Catalog::connect(&conn.postgres, conn.numeric_mode, "test")
        .await
        .unwrap();
    let pre = catalog.preflight(&conn).await.unwrap();
    assert!(pre.problems.is_empty(), "{:?}", pre.problems);
    assert!(
        pre.warnings
            .iter()
            .any(|w| w.contains("no table to capture yet")),
        "{:?}",
        pre.warnings
    );
    let run = h.start("").await;
    h.sql("CREATE TABLE later (id int PRIMARY KEY, v text); INSERT INTO later VALUES (1, 'a');")
        .await;
    let recs = h.read("later", 1, Duration::from_secs(60)).await;
    assert_eq!(recs[0].value["after"], json!({"id": 1, "v": "a"}));
    assert_eq!(recs[0].value["op"], "c");
    run.stop().await.unwrap();
    h.drop_slot().await;
}

/// A table dropped while pgcdc was behind: its last insert still carries its primary key
/// (the key comes from the Relation message, not from a catalog where the table is gone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_tables_last_insert_keeps_its_key() {
    let h = Harness::new(
        "dropped",
        "CREATE TABLE gone (id int PRIMARY KEY, v text); CREATE TABLE stays (id int PRIMARY KEY);",
    )
    .await;
    let run = h.start("snapshot:\n  mode: never\n").await;
    h.sql("INSERT INTO stays VALUES (1)").await;
    h.read("stays", 1, Duration::from_secs(60)).await;
    run.stop().await.unwrap();
    h.sql("INSERT INTO gone VALUES (7, 'last'); DROP TABLE gone;")
        .await;
    let run = h.start("snapshot:\n  mode: never\n").await;
    let recs = h.read("gone", 1, Duration::from_secs(60)).await;
    run.stop().await.unwrap();
    assert_eq!(recs[0].key, json!({"id": 7}));
    assert_eq!(recs[0].value["after"], json!({"id": 7, "v": "last"}));
    h.drop_slot().await;
}
