//! SIGTERM while PostgreSQL does not answer (every process of a scratch server stopped with
//! SIGSTOP, `dev/stack scratch-freeze frozen`): pgcdc still exits within
//! `shutdown_timeout`, and what it had delivered stays delivered exactly once; and a
//! connector whose host list starts with the frozen server moves on to the next host.

use std::time::{Duration, Instant};

use crate::common::{dev_stack_args, stack_port, Stack};
use crate::harness::Harness;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_within_shutdown_timeout_while_postgres_does_not_answer() {
    dev_stack_args(&["scratch-up", "frozen"]);
    let frozen_port = stack_port("scratch-frozen");
    let scratch = Stack {
        pg_port: frozen_port,
        ..Stack::get()
    };
    let h = Harness::on_stack(
        scratch,
        "frozen",
        "CREATE TABLE t (id int PRIMARY KEY, v text NOT NULL);",
    )
    .await;
    let (daemon, conn) = h.write_configs("");
    std::fs::write(
        &daemon,
        format!("{}shutdown_timeout: 3s\n", h.daemon_yaml()),
    )
    .unwrap();
    let mut child = h.spawn_daemon(&daemon, &conn, "frozen.log");
    h.wait_slot(true, || true).await;
    h.sql("INSERT INTO t SELECT i, 'v' || i FROM generate_series(1, 50) i")
        .await;
    h.read("t", 50, Duration::from_secs(60)).await;

    dev_stack_args(&["scratch-freeze", "frozen"]);
    // Let the stream notice nothing for a moment, then ask pgcdc to stop.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pid = child.id().expect("running").to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let asked = Instant::now();
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    let took = asked.elapsed();

    // While it is frozen: a connector whose host list starts with it gives up on it after
    // the connect timeout and streams from the next host (the stack's PostgreSQL).
    let other = Harness::new("frozenlist", "CREATE TABLE t (id int PRIMARY KEY);").await;
    let mut listed = other.clone();
    listed.stack.pg_host = format!("127.0.0.1:{},{}", frozen_port, other.stack.pg_host);
    let (daemon_cfg, conn_cfg) = listed.configs("");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let run = tokio::spawn(pgcdc::supervisor::run(daemon_cfg, vec![conn_cfg], stop_rx));
    other.wait_slot(true, || !run.is_finished()).await;
    other.sql("INSERT INTO t VALUES (1)").await;
    other.read("t", 1, Duration::from_secs(60)).await;
    let _ = stop_tx.send(true);
    run.await.unwrap().unwrap();
    other.drop_slot().await;

    dev_stack_args(&["scratch-thaw", "frozen"]);
    let status = status
        .expect("pgcdc must exit on SIGTERM while PostgreSQL does not answer")
        .unwrap();
    assert!(status.code().is_some(), "{status:?}");
    // shutdown_timeout (3 s), the runtime's 1 s for blocking calls, and slack for a busy
    // machine: far below the 30 s the wait allows, so a hang would show.
    assert!(took < Duration::from_secs(15), "exit took {took:?}");
    let log = std::fs::read_to_string(h.dir.join("frozen.log")).unwrap();
    assert!(log.contains("shutdown requested"), "{log}");

    // Nothing delivered twice, nothing lost of what was delivered.
    let recs = h.read("t", 50, Duration::from_secs(30)).await;
    let ids: Vec<i64> = recs
        .iter()
        .map(|r| r.value["after"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, (1..=50).collect::<Vec<i64>>());
    dev_stack_args(&["scratch-down", "frozen"]);
}

/// Shutdown with a Kafka transaction open (a long `max_interval` and `idle_wait` keep it open): pgcdc
/// commits it with its checkpoint, and its last status update tells the slot exactly that
/// position before it exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_commits_the_open_transaction_and_reports_its_position_to_the_slot() {
    let h = Harness::new("lastflush", "CREATE TABLE t (id int PRIMARY KEY, v text);").await;
    let (mut daemon, conn) = h.configs("tables:\n  include: [public.t]\n");
    daemon.kafka.transaction.max_interval = Duration::from_secs(120);
    daemon.kafka.transaction.idle_wait = Duration::from_secs(120);
    let kafka = daemon.kafka.clone();
    let (stop, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(pgcdc::supervisor::run(daemon, vec![conn], rx));
    h.wait_slot(true, || !task.is_finished()).await;
    for i in 1..=2 {
        h.sql(&format!("INSERT INTO t VALUES ({i}, 'v{i}')")).await;
    }
    let c = h.client().await;
    let last_xid: i64 = c
        .query_one(
            "INSERT INTO t VALUES (3, 'v3') RETURNING (txid_current() % 4294967296)::int8",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    // The three transactions wait in the open Kafka transaction: nothing is readable yet.
    assert!(h.read("t", 0, Duration::from_secs(3)).await.is_empty());

    stop.send(true).unwrap();
    let stopped = Instant::now();
    task.await.unwrap().unwrap();
    println!("stopped in {:.2}s", stopped.elapsed().as_secs_f64());

    let name = h.name.clone();
    let ck = tokio::task::spawn_blocking(move || pgcdc::kafka::offsets::read_last(&kafka, &name))
        .await
        .unwrap()
        .unwrap()
        .expect("the shutdown commit wrote a checkpoint");
    let ck_lsn: pgcdc::Lsn = ck.lsn.parse().unwrap();
    assert_eq!(
        ck.xid.map(i64::from),
        Some(last_xid),
        "{ck:?} covers the last insert"
    );
    let confirmed: String = c
        .query_one(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&h.slot()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        confirmed.parse::<pgcdc::Lsn>().unwrap(),
        ck_lsn,
        "the last status update names the checkpoint's position"
    );
    let ids: Vec<i64> = h
        .read("t", 3, Duration::from_secs(30))
        .await
        .iter()
        .map(|r| r.value["after"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [1, 2, 3]);
}
