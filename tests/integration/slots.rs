//! `slot_failover: true` creates a failover slot (PostgreSQL 17+), which streams as usual;
//! an existing slot is altered to follow the setting at start, either way.

use std::time::Duration;

use crate::harness::Harness;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slot_failover_creates_a_failover_slot() {
    failover_on(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slot_failover_creates_a_failover_slot_on_18() {
    failover_on(Some(18)).await;
}

async fn failover_on(major: Option<u32>) {
    let h = Harness::for_major(major, "failover", "CREATE TABLE t (id int PRIMARY KEY);").await;
    let c = h.client().await;
    let version: i32 = c
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .unwrap()
        .get(0);
    assert!(version >= 170_000, "failover slots need PostgreSQL 17+");
    let run = h.start("slot_failover: true\n").await;
    h.sql("INSERT INTO t VALUES (1)").await;
    let recs = h.read("t", 1, Duration::from_secs(60)).await;
    assert_eq!(recs[0].value["after"]["id"], 1);
    let failover = || async {
        let b: bool = c
            .query_one(
                "SELECT failover FROM pg_replication_slots WHERE slot_name = $1",
                &[&h.slot()],
            )
            .await
            .unwrap()
            .get(0);
        b
    };
    assert!(failover().await, "slot {} is not a failover slot", h.slot());
    run.stop().await.unwrap();

    // The same slot, restarted without the setting and then with it again.
    let run = h.start("").await;
    h.sql("INSERT INTO t VALUES (2)").await;
    let recs = h.read("t", 2, Duration::from_secs(60)).await;
    assert_eq!(recs[1].value["after"]["id"], 2);
    assert!(
        !failover().await,
        "slot {} is still a failover slot",
        h.slot()
    );
    run.stop().await.unwrap();
    let run = h.start("slot_failover: true\n").await;
    h.sql("INSERT INTO t VALUES (3)").await;
    let recs = h.read("t", 3, Duration::from_secs(60)).await;
    assert_eq!(
        recs[2].value["after"]["id"], 3,
        "one stream across the restarts: {recs:?}"
    );
    assert!(failover().await, "slot {} was not altered back", h.slot());
    run.stop().await.unwrap();
    h.drop_slot().await;
}
