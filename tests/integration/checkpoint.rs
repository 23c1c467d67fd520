//! The checkpoint guards the slot: a slot moved past the last checkpoint (changes confirmed
//! to PostgreSQL that Kafka never got) stops the connector with the gap named, instead of
//! silently skipping them. And a table's schema change mid-stream is a new schema version.

use std::time::Duration;

use serde_json::json;

use crate::harness::Harness;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slot_ahead_of_checkpoint_is_refused() {
    let h = Harness::new("gap", "CREATE TABLE t (id int PRIMARY KEY);").await;
    let run = h.start("").await;
    h.sql("INSERT INTO t VALUES (1)").await;
    h.read("t", 1, Duration::from_secs(60)).await;
    run.stop().await.unwrap();
    h.wait_slot(false, || true).await;

    // Changes pgcdc never saw, then the slot moved past them by hand.
    h.sql("INSERT INTO t VALUES (2), (3)").await;
    let c = h.stack.pg_connect(&h.db).await;
    c.execute(
        "SELECT pg_replication_slot_advance($1, pg_current_wal_lsn())",
        &[&h.slot()],
    )
    .await
    .unwrap();

    let err = h.run_once_expect_error("", Duration::from_secs(60)).await;
    let msg = err.to_string();
    assert!(
        msg.contains("is at") && msg.contains("last checkpoint") && msg.contains("tombstone"),
        "{msg}"
    );
    h.drop_slot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_change_mid_stream_registers_a_new_version() {
    let h = Harness::new("evolve", "CREATE TABLE t (id int PRIMARY KEY, a text);").await;
    let run = h.start("").await;
    h.sql(
        "INSERT INTO t VALUES (1, 'x');
         ALTER TABLE t ADD COLUMN b numeric(5,1) DEFAULT 2.5;
         INSERT INTO t VALUES (2, 'y', 7.0);
         ALTER TABLE t DROP COLUMN a;
         UPDATE t SET b = 8.0 WHERE id = 1;",
    )
    .await;
    let recs = h.read("t", 3, Duration::from_secs(60)).await;
    run.stop().await.unwrap();
    assert_eq!(recs[0].value["after"], json!({"id": 1, "a": "x"}));
    assert_eq!(
        recs[1].value["after"],
        json!({"id": 2, "a": "y", "b": "7.0"})
    );
    assert_eq!(recs[2].value["after"], json!({"id": 1, "b": "8.0"}));
    h.drop_slot().await;
}
