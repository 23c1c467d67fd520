//! Heartbeats: Debezium's records on `__pgcdc-heartbeat.<prefix>`, and an action at each
//! interval, with the slot's confirmed position (and the WAL it retains) moving while the
//! captured tables are idle and another database of the cluster writes.
//!
//! pgcdc also acknowledges the walsender's idle keepalive positions, so the slot follows
//! without heartbeats too (the same test without `heartbeat` retained 56 bytes after
//! 1.16 GB): this test shows the bound with heartbeats on, not that they are what makes it.

use std::time::{Duration, Instant};

use crate::harness::{read_topic, Harness};

/// The WAL a slot holds back (current − restart) and its unconfirmed lag (current −
/// confirmed flush), in bytes.
async fn slot_lag(h: &Harness) -> (i64, i64) {
    let c = h.stack.pg_connect("postgres").await;
    let row = c
        .query_one(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::int8, \
                    pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::int8 \
             FROM pg_replication_slots WHERE slot_name = $1",
            &[&h.slot()],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_keep_an_idle_slot_moving_while_another_database_writes() {
    let h = Harness::new("hb", "CREATE TABLE t (id int PRIMARY KEY);").await;
    let other = h.stack.fresh_database("hbother").await;
    let _drop_other = crate::harness::DropDatabase::on(&h.stack, &other);
    let run = h.start("heartbeat:\n  interval: 500ms\n").await;
    h.sql("INSERT INTO t VALUES (1)").await;
    h.read("t", 1, Duration::from_secs(60)).await;

    // ~1.1 GB of WAL in another database, in 8 transactions; the captured table stays idle.
    let o = h.stack.pg_connect(&other).await;
    o.batch_execute("CREATE TABLE big (id int, pad text)")
        .await
        .unwrap();
    let start: i64 = o
        .query_one(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::int8",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    for i in 0..8 {
        o.batch_execute(&format!(
            "INSERT INTO big SELECT g, repeat('x', 2000) FROM generate_series({}, {}) g",
            i * 70_000,
            i * 70_000 + 69_999
        ))
        .await
        .unwrap();
    }
    let end: i64 = o
        .query_one(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::int8",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let written = end - start;
    assert!(written >= 1 << 30, "only {written} bytes of WAL written");
    drop(o);

    // The slot follows: its retained WAL comes down to a few heartbeat intervals' worth
    // (PostgreSQL moves restart_lsn at its next running-transactions record, ≤ 15 s).
    let deadline = Instant::now() + Duration::from_secs(120);
    let (retained, unconfirmed) = loop {
        let (retained, unconfirmed) = slot_lag(&h).await;
        if retained < 64 << 20 && unconfirmed < 16 << 20 {
            break (retained, unconfirmed);
        }
        assert!(
            Instant::now() < deadline,
            "after {written} bytes of WAL elsewhere the slot still retains {retained} bytes ({unconfirmed} unconfirmed)"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    eprintln!(
        "heartbeats: {written} bytes of WAL written to another database; the slot retains {retained} bytes, {unconfirmed} unconfirmed"
    );

    let topic = format!("__pgcdc-heartbeat.{}", h.prefix);
    let beats = read_topic(&h.stack, &topic, 3, Duration::from_secs(60)).await;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let mut last = 0;
    for b in &beats {
        assert_eq!(b.key["serverName"], h.prefix.as_str(), "{b:?}");
        let ts = b.value["ts_ms"].as_i64().unwrap();
        assert!(
            ts >= last && ts <= now_ms && ts > now_ms - 600_000,
            "{beats:?}"
        );
        last = ts;
    }
    run.stop().await.unwrap();
    h.drop_slot().await;
    h.stack
        .pg_connect("postgres")
        .await
        .batch_execute(&format!("DROP DATABASE {other} WITH (FORCE)"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_action_query_runs_at_every_interval() {
    let h = Harness::new(
        "hbq",
        "CREATE TABLE hb (id serial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now());",
    )
    .await;
    let run = h
        .start(
            "heartbeat:\n  interval: 300ms\n  action_query: INSERT INTO public.hb DEFAULT VALUES\n",
        )
        .await;
    let rows = h.read("hb", 3, Duration::from_secs(60)).await;
    for r in &rows {
        assert_eq!(r.value["op"], "c", "{r:?}");
    }
    let beats = read_topic(
        &h.stack,
        &format!("__pgcdc-heartbeat.{}", h.prefix),
        2,
        Duration::from_secs(60),
    )
    .await;
    assert!(beats.iter().all(|b| b.value["ts_ms"].as_i64().unwrap() > 0));
    run.stop().await.unwrap();
    h.drop_slot().await;
}
