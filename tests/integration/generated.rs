//! PostgreSQL 18's generated columns: with `publish_generated_columns: true` the
//! publication publishes stored generated columns (`publish_generated_columns = stored`),
//! and they arrive in snapshot rows and changes; without it they are not sent, as before.
//! On PostgreSQL 17 the setting is refused at start.

use std::time::Duration;

use crate::harness::Harness;

const SCHEMA: &str = "CREATE TABLE t (id int PRIMARY KEY, price int,
    doubled int GENERATED ALWAYS AS (price * 2) STORED);
INSERT INTO t (id, price) VALUES (1, 10);";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_generated_columns_are_captured_on_postgresql_18() {
    let h = Harness::on_major(18, "gen18", SCHEMA).await;
    let run = h.start("publish_generated_columns: true\n").await;
    h.sql("INSERT INTO t (id, price) VALUES (2, 21); UPDATE t SET price = 11 WHERE id = 1")
        .await;
    let recs = h.read("t", 3, Duration::from_secs(60)).await;
    run.stop().await.unwrap();
    let ops: Vec<_> = recs.iter().map(|r| r.value["op"].clone()).collect();
    assert_eq!(ops, ["r", "c", "u"], "{recs:?}");
    assert_eq!(
        recs[0].value["after"]["doubled"], 20,
        "snapshot row: {:?}",
        recs[0]
    );
    assert_eq!(recs[1].value["after"]["doubled"], 42);
    assert_eq!(recs[2].value["after"]["doubled"], 22);
    let c = h.client().await;
    let gen: String = c
        .query_one(
            "SELECT pubgencols::text FROM pg_publication WHERE pubname = $1",
            &[&format!("pgcdc_{}", h.name)],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(gen, "s");
    h.drop_slot().await;

    // Without the setting: the column is not in the events (PostgreSQL does not send it).
    let h = Harness::on_major(18, "nogen18", SCHEMA).await;
    let run = h.start("").await;
    h.sql("INSERT INTO t (id, price) VALUES (2, 21)").await;
    let recs = h.read("t", 2, Duration::from_secs(60)).await;
    run.stop().await.unwrap();
    for r in &recs {
        assert!(r.value["after"].get("doubled").is_none(), "{r:?}");
    }
    h.drop_slot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_generated_columns_is_refused_before_18() {
    let h = Harness::new("gen17", SCHEMA).await;
    let err = h
        .run_once_expect_error("publish_generated_columns: true\n", Duration::from_secs(30))
        .await;
    assert!(!err.is_transient(), "{err}");
    assert!(
        err.to_string()
            .contains("publish_generated_columns needs 18"),
        "{err}"
    );
}
