//! A slot PostgreSQL invalidated while the connector was stopped (`max_slot_wal_keep_size`
//! on the scratch server, `dev/stack scratch-up`): the connector says exactly that, with the
//! checkpoint and the slot's last position, and stops; with `snapshot.mode: when_needed` it
//! recreates the slot and re-reads the tables, so every key's newest state arrives again.

use std::time::{Duration, Instant};

use crate::common::{dev_stack, stack_port, Stack};
use crate::harness::Harness;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidated_slot_is_reported_and_when_needed_re_reads() {
    dev_stack("scratch-up");
    let scratch = Stack {
        pg_port: stack_port("scratch"),
        ..Stack::get()
    };
    let h = Harness::on_stack(
        scratch.clone(),
        "lostslot",
        "CREATE TABLE t (id int PRIMARY KEY, v text NOT NULL);",
    )
    .await;
    let run = h.start("").await;
    h.sql("INSERT INTO t VALUES (1, 'a')").await;
    h.read("t", 1, Duration::from_secs(60)).await;
    run.stop().await.unwrap();
    h.wait_slot(false, || true).await;

    // While the connector is stopped: changes, and more WAL than the slot may keep.
    h.sql("INSERT INTO t VALUES (2, 'b'); UPDATE t SET v = 'a2' WHERE id = 1;")
        .await;
    let admin = scratch.pg_connect("postgres").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // In another database, so that none of it is captured.
        admin
            .batch_execute(
                "CREATE TABLE IF NOT EXISTS filler (x text);
                 INSERT INTO filler SELECT repeat('x', 200) FROM generate_series(1, 20000);
                 SELECT pg_switch_wal(); CHECKPOINT;",
            )
            .await
            .unwrap();
        let status: Option<String> = admin
            .query_one(
                "SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1",
                &[&h.slot()],
            )
            .await
            .unwrap()
            .get(0);
        if status.as_deref() == Some("lost") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the slot was never invalidated: {status:?}"
        );
    }

    let err = h.run_once_expect_error("", Duration::from_secs(60)).await;
    let msg = err.to_string();
    assert!(!err.is_transient(), "{msg}");
    assert!(
        msg.contains(&format!("{} can no longer be read", h.slot()))
            && msg.contains("wal_status lost")
            && msg.contains("invalidation_reason wal_removed")
            && msg.contains("restart_lsn ")
            && msg.contains(&format!("checkpoint of connector {} is at ", h.name))
            && msg.contains("snapshot.mode: when_needed"),
        "{msg}"
    );

    // when_needed: the slot is recreated and the tables read again; the newest state of
    // every key arrives, including what the lost WAL held.
    let run = h.start("snapshot:\n  mode: when_needed\n").await;
    let recs = h.read("t", 3, Duration::from_secs(60)).await;
    run.stop().await.unwrap();
    let mut reads: Vec<(i64, String)> = recs[1..]
        .iter()
        .map(|r| {
            assert_eq!(r.value["op"], "r", "{:?}", r.value);
            (
                r.value["after"]["id"].as_i64().unwrap(),
                r.value["after"]["v"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    reads.sort();
    assert_eq!(reads, vec![(1, "a2".to_owned()), (2, "b".to_owned())]);
    dev_stack("scratch-down");
}
