//! Initial snapshots: a million rows under concurrent writes, a crash in the middle, the
//! snapshot modes, composite keys.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use pgcdc::checkpoint::progress::Kind;

use super::*;
use crate::harness::Harness;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_snapshot_of_a_million_rows_under_concurrent_writes() {
    const ROWS: i64 = 1_000_000;
    let h = Harness::new("snap1m", &table_sql("big", ROWS)).await;
    let extra = "snapshot:\n  workers: 2\n  chunk_rows: 50000\n";
    let (daemon, conn) = h.configs(extra);
    // Writes start before the slot exists and go on through the snapshot and after it.
    let (stop, ops, w) = spawn_writer(&h, "big", ROWS);
    while ops.load(Ordering::Relaxed) < 20 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let run = tokio::spawn(pgcdc::supervisor::run(daemon, vec![conn], stop_rx));
    // The slot streams once the snapshot is read. Not `active`: the slot is active from the
    // start of CREATE_REPLICATION_SLOT, whose walsender holds it through the snapshot (in
    // one make test the writer's 50 ops then ran before the slot's consistent point, so the
    // end LSN below was already "flushed" and the connector was stopped mid-snapshot).
    let c = h.stack.pg_connect("postgres").await;
    let deadline = Instant::now() + Duration::from_secs(400);
    let mut during = 0;
    loop {
        let streaming: bool = c
            .query_one(
                "SELECT coalesce((SELECT r.state IN ('catchup', 'streaming')                    FROM pg_replication_slots s JOIN pg_stat_replication r ON r.pid = s.active_pid                   WHERE s.slot_name = $1), false)",
                &[&h.slot()],
            )
            .await
            .unwrap()
            .get(0);
        if streaming {
            break;
        }
        if during == 0 {
            during = ops.load(Ordering::Relaxed);
        }
        assert!(!run.is_finished(), "the connector stopped: {:?}", run.await);
        assert!(
            Instant::now() < deadline,
            "the snapshot did not finish in 400s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let at_stream = ops.load(Ordering::Relaxed);
    assert!(
        at_stream > during,
        "writes must run while the snapshot is read ({during} → {at_stream})"
    );
    while ops.load(Ordering::Relaxed) < at_stream + 50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    w.await.unwrap();
    let end = current_lsn(&h).await;
    wait_flushed(&h, &end, Duration::from_secs(120)).await;
    let _ = stop_tx.send(true);
    run.await.unwrap().unwrap();

    let seen = consume_to_end(&h.stack, &h.topic("big")).await;
    let table = table_state(&h, "big").await;
    assert_latest_equals_table(&seen, &table);
    assert_no_row_read_twice(&seen);
    // Rows the writer never touched arrive exactly once, as a read.
    let mut untouched = 0;
    for id in (1..=ROWS).filter(|i| i % 7 != 0) {
        assert_eq!(seen.events.get(&id), Some(&1), "id {id}");
        assert_eq!(seen.reads.get(&id), Some(&1), "id {id}");
        untouched += 1;
    }
    assert_eq!(untouched, 857_143);
    assert_eq!(seen.marks.get("first"), Some(&1), "{:?}", seen.marks);
    assert_eq!(seen.marks.get("last"), Some(&1), "{:?}", seen.marks);
    assert!(seen.reads.len() as i64 > ROWS - (at_stream as i64) * 2);
    let s = checkpoint_state(&h)
        .await
        .expect("snapshot state in the checkpoint");
    assert!(s.initial.is_none() && s.pending.is_empty(), "{s:?}");
    assert_eq!(s.finished["public.big"].rows, seen.reads.len() as u64);
    h.drop_slot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_mid_snapshot_resumes_without_duplicates() {
    snapshot_crash_on(None).await;
}

on_majors!(crash_mid_snapshot_on, snapshot_crash_on);

async fn snapshot_crash_on(major: Option<u32>) {
    const ROWS: i64 = 300_000;
    let h = Harness::for_major(major, "snapcrash", &table_sql("big", ROWS)).await;
    let extra = "snapshot:\n  workers: 2\n  chunk_rows: 3000\n  incremental_chunk_rows: 5000\n";
    let (daemon_file, conn_file) = h.write_configs(extra);
    let (stop, ops, w) = spawn_writer(&h, "big", ROWS);

    let mut child = h.spawn_daemon(&daemon_file, &conn_file, "run1.log");
    wait_checkpoint(
        &h,
        "initial snapshot progress",
        Duration::from_secs(120),
        |s| initial_rows(s) >= 20_000,
    )
    .await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let cut = checkpoint_state(&h).await.expect("a checkpoint");
    let committed = initial_rows(&cut);
    assert!(
        cut.initial.is_some() && committed < ROWS as u64,
        "the kill must land mid-snapshot: {cut:?}"
    );

    let mut child = h.spawn_daemon(&daemon_file, &conn_file, "run2.log");
    let s = wait_checkpoint(&h, "the snapshot finished", Duration::from_secs(300), |s| {
        s.initial.is_none() && s.pending.is_empty() && s.finished.contains_key("public.big")
    })
    .await;
    assert!(ops.load(Ordering::Relaxed) > 0, "the writer must have run");
    stop.store(true, Ordering::Relaxed);
    w.await.unwrap();
    let end = current_lsn(&h).await;
    wait_flushed(&h, &end, Duration::from_secs(120)).await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();

    let seen = consume_to_end(&h.stack, &h.topic("big")).await;
    let table = table_state(&h, "big").await;
    assert_latest_equals_table(&seen, &table);
    assert_no_row_read_twice(&seen);
    for id in (1..=ROWS).filter(|i| i % 7 != 0) {
        assert_eq!(
            seen.events.get(&id),
            Some(&1),
            "id {id}: lost or duplicated"
        );
    }
    assert_eq!(s.finished["public.big"].kind, Kind::Initial);
    assert_eq!(s.finished["public.big"].rows, seen.reads.len() as u64);
    assert!(
        seen.reads.len() as u64 > committed,
        "the second run must have finished the snapshot"
    );
    h.drop_slot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_modes_never_initial_only_and_when_needed() {
    let h = Harness::new("snapmodes", &table_sql("big", 500)).await;
    // initial_only: reads the table, stops by itself, leaves no slot.
    let (daemon, conn) = run_initial_only(&h, "  chunk_rows: 100\n").await;
    let c = h.stack.pg_connect("postgres").await;
    let slots = c
        .query(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1",
            &[&h.slot()],
        )
        .await
        .unwrap();
    assert!(slots.is_empty(), "initial_only must not leave a slot");
    let seen = consume_to_end(&h.stack, &h.topic("big")).await;
    assert_eq!(seen.reads.len(), 500);
    assert_no_row_read_twice(&seen);
    // Run again: the snapshot is complete, nothing more is read.
    let (_stop, rx) = tokio::sync::watch::channel(false);
    pgcdc::pipeline::run(&daemon, &conn, rx).await.unwrap();
    assert_eq!(
        consume_to_end(&h.stack, &h.topic("big")).await.reads.len(),
        500
    );

    // when_needed: a checkpoint exists but there is no slot, so it snapshots again, then
    // streams.
    let run = h.start("snapshot:\n  mode: when_needed\n").await;
    h.sql("UPDATE big SET v = 1 WHERE id = 1").await;
    let recs = h.read("big", 1001, Duration::from_secs(60)).await;
    assert_eq!(recs.len(), 1001);
    assert_eq!(recs[1000].value["op"], "u");
    run.stop().await.unwrap();

    // never: a restart with a checkpoint and its slot streams on; nothing is read again.
    let run = h.start("snapshot:\n  mode: never\n").await;
    h.sql("UPDATE big SET v = 2 WHERE id = 1").await;
    let recs = h.read("big", 1002, Duration::from_secs(60)).await;
    assert_eq!(recs.len(), 1002);
    assert_eq!(recs[1001].value["op"], "u");
    run.stop().await.unwrap();
    h.drop_slot().await;
}

/// Runs the connector with `snapshot.mode: initial_only` (and `snapshot_extra`, indented
/// under `snapshot:`) until it stops by itself; returns its configs.
async fn run_initial_only(
    h: &Harness,
    snapshot_extra: &str,
) -> (pgcdc::config::DaemonConfig, pgcdc::config::ConnectorConfig) {
    let (daemon, conn) = h.configs(&format!(
        "snapshot:\n  mode: initial_only\n{snapshot_extra}"
    ));
    let (_stop, rx) = tokio::sync::watch::channel(false);
    tokio::time::timeout(
        Duration::from_secs(120),
        pgcdc::pipeline::run(&daemon, &conn, rx),
    )
    .await
    .expect("initial_only must stop by itself")
    .unwrap();
    (daemon, conn)
}

/// Two tables whose names differ only in a character a topic name cannot hold share a topic
/// (`order items` and `order_items`): the snapshot creates it once and reads both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_that_share_a_topic_are_both_snapshotted() {
    let h = Harness::new(
        "snapshared",
        "CREATE TABLE \"order items\" (id bigint PRIMARY KEY, v int NOT NULL, t text);
         INSERT INTO \"order items\" SELECT g, 0, 'a' FROM generate_series(1, 3) g;
         CREATE TABLE order_items (id bigint PRIMARY KEY, v int NOT NULL, t text);
         INSERT INTO order_items SELECT g, 0, 'b' FROM generate_series(4, 6) g;",
    )
    .await;
    run_initial_only(&h, "").await;
    let seen = consume_to_end(&h.stack, &h.topic("order_items")).await;
    assert_eq!(seen.reads.len(), 6, "both tables' rows, each once");
    assert_no_row_read_twice(&seen);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn composite_keys_of_awkward_types_chunk_exactly() {
    // Keys with quotes, backslashes, tabs, newlines, unicode and leading spaces, across a
    // text + timestamptz + numeric primary key, cut into many small chunks: each row must
    // arrive exactly once, both from the initial snapshot and from an incremental one.
    let h = Harness::new(
        "snapkeys",
        r#"CREATE TABLE odd (name text, at timestamptz, n numeric, v int NOT NULL,
                             PRIMARY KEY (name, at, n));
           INSERT INTO odd
           SELECT (ARRAY[E'it''s', E'back\\slash', E'tab\there', E'new\nline', 'ünï', ' lead', '"q"', ''])[1 + g % 8] || (g / 8),
                  '2026-03-29 00:30:00+00'::timestamptz + (g % 5) * interval '1 hour 0.000001 second',
                  (g % 3)::numeric / 7,
                  g
             FROM generate_series(1, 240) g;"#,
    )
    .await;
    let extra = "snapshot:\n  workers: 3\n  chunk_rows: 7\n  incremental_chunk_rows: 11\nsignal_table: public.pgcdc_signal\n";
    let run = h.start(extra).await;
    let recs = h.read("odd", 240, Duration::from_secs(60)).await;
    assert_eq!(recs.len(), 240, "each row once");
    let mut vs: Vec<i64> = recs
        .iter()
        .map(|r| {
            assert_eq!(r.value["op"], "r");
            r.value["after"]["v"].as_i64().unwrap()
        })
        .collect();
    vs.sort_unstable();
    assert_eq!(vs, (1..=240).collect::<Vec<_>>());

    // The same keys through an incremental snapshot (keyset pages with LIMIT).
    let (_, conn) = h.configs(extra);
    pgcdc::admin::signal_snapshot(&conn, &["public.odd".to_string()])
        .await
        .unwrap();
    let recs = h.read("odd", 480, Duration::from_secs(60)).await;
    assert_eq!(recs.len(), 480, "each row once more");
    let mut vs: Vec<i64> = recs[240..]
        .iter()
        .map(|r| {
            assert_eq!(r.value["source"]["snapshot"], "incremental");
            r.value["after"]["v"].as_i64().unwrap()
        })
        .collect();
    vs.sort_unstable();
    assert_eq!(vs, (1..=240).collect::<Vec<_>>());
    run.stop().await.unwrap();
    h.drop_slot().await;
}
