//! Two daemons on the same connector: the newer fences the older (same transactional.id),
//! the older stops with a clear message, the newer takes over the slot and continues, and no
//! change is lost or delivered twice.

use std::time::Duration;

use crate::harness::Harness;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newer_instance_fences_the_older_without_duplicates() {
    let h = Harness::new("fence", "CREATE TABLE items (id int PRIMARY KEY);").await;
    let (daemon, conn) = h.write_configs("");
    let mut older = h.spawn_daemon(&daemon, &conn, "older.log");
    h.wait_slot(true, || true).await;
    let c = h.client().await;
    for i in 1..=40 {
        c.execute("INSERT INTO items VALUES ($1)", &[&i])
            .await
            .unwrap();
    }

    let mut newer = h.spawn_daemon(&daemon, &conn, "newer.log");
    for i in 41..=80 {
        c.execute("INSERT INTO items VALUES ($1)", &[&i])
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = tokio::time::timeout(Duration::from_secs(60), older.wait())
        .await
        .expect("the older instance must stop once fenced")
        .unwrap();
    assert!(!status.success(), "a fenced instance exits non-zero");
    let log = std::fs::read_to_string(h.dir.join("older.log")).unwrap();
    assert!(
        log.contains("another pgcdc instance runs this connector"),
        "older's log:\n{log}"
    );

    // The newer one streams: the slot is taken again and new rows arrive.
    for i in 81..=100 {
        c.execute("INSERT INTO items VALUES ($1)", &[&i])
            .await
            .unwrap();
    }
    let recs = h.read("items", 100, Duration::from_secs(90)).await;
    let ids: Vec<i64> = recs
        .iter()
        .map(|r| r.value["after"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(
        ids,
        (1..=100).collect::<Vec<i64>>(),
        "lost, duplicated or reordered events"
    );
    assert!(
        newer.try_wait().unwrap().is_none(),
        "the newer instance must keep running"
    );
    newer.start_kill().unwrap();
    newer.wait().await.unwrap();
    h.drop_slot().await;
}
