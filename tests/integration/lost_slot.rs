//! A slot PostgreSQL invalidated while the connector was stopped (`max_slot_wal_keep_size`
//! on a scratch server, `dev/stack scratch-up lost`): the connector says exactly that, with the
//! checkpoint and the slot's last position, and stops (`on_slot_lost: stop`). With
//! `on_slot_lost: resnapshot` it writes a gap notice, recreates the slot and re-reads every
//! table incrementally while it streams; with `snapshot.mode: when_needed` it takes a new
//! initial snapshot. Either way every key's newest state arrives again.

use std::time::{Duration, Instant};

use crate::common::{dev_stack_args, stack_port, Stack};
use crate::harness::{read_topic, Harness};

/// Writes WAL in another database (none of it captured) until the slot is lost.
async fn invalidate(h: &Harness, admin: &tokio_postgres::Client) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
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
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the slot was never invalidated: {status:?}"
        );
    }
}

/// The newest state per id among the reads (`op: r`) of `recs`.
fn reads(recs: &[crate::harness::Record]) -> Vec<(i64, String)> {
    let mut out: Vec<(i64, String)> = recs
        .iter()
        .filter(|r| r.value["op"] == "r")
        .map(|r| {
            (
                r.value["after"]["id"].as_i64().unwrap(),
                r.value["after"]["v"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidated_slot_is_reported_and_re_read_by_either_policy() {
    dev_stack_args(&["scratch-up", "lost"]);
    let scratch = Stack {
        pg_port: stack_port("scratch-lost"),
        ..Stack::get()
    };
    let h = Harness::on_stack(
        scratch.clone(),
        "lostslot",
        "CREATE TABLE t (id int PRIMARY KEY, v text NOT NULL);",
    )
    .await;
    let admin = scratch.pg_connect("postgres").await;
    let run = h.start("").await;
    h.sql("INSERT INTO t VALUES (1, 'a')").await;
    h.read("t", 1, Duration::from_secs(60)).await;
    run.stop().await.unwrap();
    h.wait_slot(false, || true).await;

    // While the connector is stopped: changes, and more WAL than the slot may keep.
    h.sql("INSERT INTO t VALUES (2, 'b'); UPDATE t SET v = 'a2' WHERE id = 1;")
        .await;
    invalidate(&h, &admin).await;

    // on_slot_lost: stop (the default) says exactly what happened.
    let err = h.run_once_expect_error("", Duration::from_secs(60)).await;
    let msg = err.to_string();
    assert!(!err.is_transient(), "{msg}");
    assert!(
        msg.contains(&format!("{} can no longer be read", h.slot()))
            && msg.contains("wal_status lost")
            && msg.contains("invalidation_reason wal_removed")
            && msg.contains("restart_lsn ")
            && msg.contains(&format!("checkpoint of connector {} is at ", h.name))
            && msg.contains("on_slot_lost: resnapshot"),
        "{msg}"
    );

    // on_slot_lost: resnapshot: a gap notice, the slot recreated, every table re-read while
    // the stream goes on.
    let run = h.start("on_slot_lost: resnapshot\n").await;
    h.sql("INSERT INTO t VALUES (3, 'c')").await;
    let recs = h.read("t", 4, Duration::from_secs(90)).await;
    // Row 3 may be read too, when its insert committed before the chunk was read.
    let got = reads(&recs);
    let expected = [(1, "a2"), (2, "b"), (3, "c")];
    assert!(
        got.len() >= 2
            && got
                .iter()
                .all(|(id, v)| expected.contains(&(*id, v.as_str())))
            && got.iter().any(|r| r.0 == 1)
            && got.iter().any(|r| r.0 == 2),
        "{recs:#?}"
    );
    for r in recs.iter().filter(|r| r.value["op"] == "r") {
        assert_eq!(
            r.value["source"]["snapshot"], "incremental",
            "{:?}",
            r.value
        );
    }
    assert!(
        recs.iter()
            .any(|r| r.value["op"] == "c" && r.value["after"]["id"] == 3),
        "the stream goes on during the re-read: {recs:#?}"
    );
    let notices = read_topic(
        &h.stack,
        &format!("{}.notifications", h.prefix),
        1,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(notices.len(), 1, "{notices:#?}");
    let n = &notices[0].value;
    assert_eq!(n["type"], "SLOT_LOST", "{n}");
    assert_eq!(n["aggregate_type"], "Replication Slot", "{n}");
    assert_eq!(notices[0].key["id"], n["id"], "{n}");
    let data = &n["additional_data"];
    assert_eq!(data["slot"], h.slot(), "{n}");
    assert_eq!(data["data_collections"], "public.t", "{n}");
    assert!(
        data["reason"].as_str().unwrap().contains("wal_status lost")
            && !data["lost_from_lsn"].as_str().unwrap().is_empty()
            && !data["resumed_at_lsn"].as_str().unwrap().is_empty(),
        "{n}"
    );
    run.stop().await.unwrap();
    h.wait_slot(false, || true).await;

    // Lost again; snapshot.mode: when_needed takes a new initial snapshot instead.
    h.sql("INSERT INTO t VALUES (4, 'd')").await;
    invalidate(&h, &admin).await;
    let before = h.read("t", 4, Duration::from_secs(30)).await.len();
    let run = h.start("snapshot:\n  mode: when_needed\n").await;
    let recs = h.read("t", before + 4, Duration::from_secs(60)).await;
    run.stop().await.unwrap();
    assert_eq!(
        reads(&recs[before..]),
        vec![
            (1, "a2".to_owned()),
            (2, "b".to_owned()),
            (3, "c".to_owned()),
            (4, "d".to_owned())
        ]
    );
    dev_stack_args(&["scratch-down", "lost"]);
}
