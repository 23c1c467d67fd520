//! A PostgreSQL transaction too large to stream within `kafka.transaction.timeout`: the
//! broker aborts the Kafka transaction, and pgcdc says so with its own code and metric,
//! not as fencing.

use std::time::{Duration, Instant};

use crate::harness::Harness;

#[tokio::test]
async fn a_kafka_transaction_open_past_its_timeout_is_reported_as_such_not_as_fencing() {
    let h = Harness::new("txntimeout", "CREATE TABLE t (id int PRIMARY KEY, v text);").await;
    let (mut daemon, conn) = h.configs("tables:\n  include: [public.t]\n");
    daemon.kafka.transaction.timeout = Duration::from_secs(3);
    let (_stop, rx) = tokio::sync::watch::channel(false);
    let name = h.name.clone();
    let task = tokio::spawn(async move { pgcdc::pipeline::run(&daemon, &conn, rx).await });
    h.wait_slot(true, || !task.is_finished()).await;
    let before = pgcdc::metrics::render()
        .lines()
        .any(|l| l.starts_with("pgcdc_kafka_transaction_timeouts_total") && l.contains(&name));
    assert!(!before, "no timeout counted yet");
    let started = Instant::now();
    h.sql("INSERT INTO t SELECT g, repeat('x', 100) FROM generate_series(1, 1000000) g")
        .await;
    let e = tokio::time::timeout(Duration::from_secs(300), task)
        .await
        .expect("the connector should stop on the aborted transaction")
        .unwrap()
        .expect_err("the Kafka transaction outlived its timeout");
    println!("stopped after {:.1}s: {e}", started.elapsed().as_secs_f64());
    assert_eq!(e.code(), pgcdc::error::Code::KafkaTransactionTimeout, "{e}");
    assert!(e.is_transient(), "{e}: retried once the timeout is raised");
    let m = e.to_string();
    assert!(
        m.contains("longer than kafka.transaction.timeout (3s)")
            && m.contains("not fencing")
            && !m.contains("another pgcdc instance runs this connector"),
        "{m}"
    );
    let counted = pgcdc::metrics::render().lines().any(|l| {
        l.starts_with("pgcdc_kafka_transaction_timeouts_total")
            && l.contains(&name)
            && l.ends_with(" 1")
    });
    assert!(counted, "the metric counts it");
    // Nothing of the aborted transaction is visible to read_committed consumers.
    assert!(h.read("t", 0, Duration::from_secs(5)).await.is_empty());
}
