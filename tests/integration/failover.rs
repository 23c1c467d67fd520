//! Failover, end to end: a PostgreSQL 17 primary and a physical streaming standby that
//! synchronizes failover slots (`dev/stack pair-up`). pgcdc, given both hosts with
//! `target_session_attrs: read-write` and `slot_failover: true`, streams a workload; the
//! primary stops, the standby is promoted, and pgcdc goes on from the synced slot on the new
//! timeline. Read back with `read_committed`: nothing lost, nothing duplicated, in order.

use std::time::{Duration, Instant};

use crate::common::Stack;
use crate::harness::Harness;

fn pair(cmd: &str) {
    crate::common::dev_stack(cmd);
}

fn pair_port(which: &str) -> u16 {
    crate::common::stack_port(&format!("pair-{which}"))
}

async fn insert(c: &tokio_postgres::Client, from: i32, to: i32) {
    for start in (from..=to).step_by(10) {
        let end = (start + 9).min(to);
        c.batch_execute(&format!(
            "INSERT INTO items SELECT i, 'v' || i FROM generate_series({start}, {end}) i"
        ))
        .await
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promoted_standby_with_the_synced_slot_goes_on_exactly_once() {
    pair("pair-up");
    let (p1, p2) = (pair_port("primary"), pair_port("standby"));
    let primary = Stack {
        pg_port: p1,
        ..Stack::get()
    };
    let standby = Stack {
        pg_port: p2,
        ..Stack::get()
    };
    let h = Harness::on_stack(
        primary.clone(),
        "failover",
        "CREATE TABLE items (id int PRIMARY KEY, v text NOT NULL);",
    )
    .await;
    let (daemon, conn) = h.write_configs("slot_failover: true\n");
    let one_host = format!("  host: {}\n  port: {p1}\n", primary.pg_host);
    let text = std::fs::read_to_string(&conn).unwrap();
    assert!(text.contains(&one_host), "{text}");
    let both = format!(
        "  host: {0}:{p1},{0}:{p2}\n  target_session_attrs: read-write\n",
        primary.pg_host
    );
    std::fs::write(&conn, text.replace(&one_host, &both)).unwrap();

    let mut child = h.spawn_daemon(&daemon, &conn, "failover.log");
    h.wait_slot(true, || true).await;
    let c = h.client().await;
    insert(&c, 1, 100).await;
    h.read("items", 100, Duration::from_secs(90)).await;

    // The standby holds the slot, synchronized and persistent (a temporary synced slot
    // would not survive the promotion).
    let on_standby = standby.pg_connect(&h.db).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let ready = on_standby
            .query_opt(
                "SELECT synced AND NOT temporary FROM pg_replication_slots WHERE slot_name = $1",
                &[&h.slot()],
            )
            .await
            .unwrap()
            .is_some_and(|r| r.get::<_, bool>(0));
        if ready {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the standby never held slot {} synchronized",
            h.slot()
        );
        // Activity without events, so that the slot moves and the worker syncs it again.
        c.batch_execute("SELECT pg_logical_emit_message(true, 'failover-test', 'tick')")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // More changes while the primary still runs, some of them perhaps not yet delivered
    // when it stops.
    insert(&c, 101, 150).await;
    drop(c);
    pair("pair-stop-primary");
    drop(on_standby);
    pair("pair-promote");

    let new_primary = standby.pg_connect(&h.db).await;
    insert(&new_primary, 151, 250).await;
    let recs = h.read("items", 250, Duration::from_secs(180)).await;
    let ids: Vec<i64> = recs
        .iter()
        .map(|r| r.value["after"]["id"].as_i64().unwrap())
        .collect();
    let expected: Vec<i64> = (1..=250).collect();
    assert_eq!(ids, expected, "lost, duplicated or reordered events");
    assert!(child.try_wait().unwrap().is_none(), "pgcdc exited");
    let log = std::fs::read_to_string(h.dir.join("failover.log")).unwrap();
    assert!(log.contains("timeline switched"), "{log}");

    child.start_kill().unwrap();
    child.wait().await.unwrap();
    pair("pair-down");
}
