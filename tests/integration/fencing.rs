//! High availability: two instances of one connector (two hosts, or two replicas of a
//! deployment). The second stands by while the first holds the slot and never fences it;
//! each time the active one is SIGKILLed, the standby takes over once PostgreSQL releases
//! the slot, fences the dead one's producer (aborting its open Kafka transaction) and goes on
//! from the checkpoint. Three kills, alternating, under a steady workload: nothing lost,
//! nothing duplicated, nothing reordered for a `read_committed` consumer.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::Harness;

/// Waits until the daemon log `name` contains `what`.
async fn wait_log(h: &Harness, name: &str, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let log = std::fs::read_to_string(h.dir.join(name)).unwrap_or_default();
        if log.contains(what) {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "{name} did not say {what:?} within 60 s:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_takes_over_after_each_sigkill_exactly_once() {
    let h = Harness::new("ha", "CREATE TABLE items (id int PRIMARY KEY);").await;
    let (daemon, conn) = h.write_configs("takeover: 1s\n");
    let first = h.spawn_daemon(&daemon, &conn, "a0.log");
    h.wait_slot(true, || true).await;
    wait_log(&h, "a0.log", "streaming").await;
    let second = h.spawn_daemon(&daemon, &conn, "b0.log");
    wait_log(&h, "b0.log", "standing by").await;

    // One row per transaction, all along.
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicI64::new(0));
    let writer = {
        let (stop, written) = (stop.clone(), written.clone());
        let c = h.client().await;
        tokio::spawn(async move {
            let mut id = 0i32;
            while !stop.load(Ordering::Relaxed) {
                id += 1;
                c.execute("INSERT INTO items VALUES ($1)", &[&id])
                    .await
                    .unwrap();
                written.store(i64::from(id), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };

    let (mut active, mut active_log) = (first, "a0.log".to_owned());
    let (mut standby, mut standby_log) = (second, "b0.log".to_owned());
    for round in 1..=3 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        active.start_kill().unwrap();
        active.wait().await.unwrap();
        let log = wait_log(&h, &standby_log, "taking over").await;
        assert!(!log.contains("connector stopped"), "{standby_log}:\n{log}");
        wait_log(&h, &standby_log, "streaming").await;
        // The killed one comes back, as the standby now.
        let letter = if active_log.starts_with('a') {
            "a"
        } else {
            "b"
        };
        let back_log = format!("{letter}{round}.log");
        let back = h.spawn_daemon(&daemon, &conn, &back_log);
        wait_log(&h, &back_log, "standing by").await;
        (active, active_log, standby, standby_log) = (standby, standby_log, back, back_log);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    let n = written.load(Ordering::Relaxed);
    assert!(n > 100, "only {n} rows written");

    let recs = h.read("items", n as usize, Duration::from_secs(120)).await;
    let ids: Vec<i64> = recs
        .iter()
        .map(|r| r.value["after"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(
        ids,
        (1..=n).collect::<Vec<i64>>(),
        "lost, duplicated or reordered events"
    );
    for (child, log) in [(&mut active, &active_log), (&mut standby, &standby_log)] {
        assert!(
            child.try_wait().unwrap().is_none(),
            "{log}: both instances keep running"
        );
        child.start_kill().unwrap();
        child.wait().await.unwrap();
    }
    h.drop_slot().await;
}
