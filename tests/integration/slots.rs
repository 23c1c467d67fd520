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

/// `validate` checks `slot_failover` against the server: a warning where no standby is in
/// `synchronized_standby_slots` (the failover slot may then confirm what no standby has),
/// a problem before PostgreSQL 17.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_checks_slot_failover_against_the_server() {
    let h = Harness::new("fovalid", "CREATE TABLE t (id int PRIMARY KEY);").await;
    let standbys: String = h
        .client()
        .await
        .query_one("SELECT current_setting('synchronized_standby_slots')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(standbys, "", "the stack's server names no standby");
    let (code, out) = h.validate("slot_failover: true\n");
    assert_eq!(code, Some(0), "a warning, not a problem: {out}");
    assert!(
        out.contains("names no standby in synchronized_standby_slots"),
        "{out}"
    );
    let (_, without) = h.validate("");
    assert!(!without.contains("synchronized_standby_slots"), "{without}");

    let old = Harness::for_major(
        Some(16),
        "fovalid16",
        "CREATE TABLE t (id int PRIMARY KEY);",
    )
    .await;
    let (code, out) = old.validate("slot_failover: true\n");
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("slot_failover needs 17 or newer") && out.contains("remove slot_failover"),
        "{out}"
    );
}
