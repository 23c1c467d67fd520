//! The daemon binary killed with SIGKILL and started again resumes from the slot and its
//! checkpoint: every committed change arrives, none twice, in order. SIGTERM stops it
//! cleanly with exit code 0.

use std::time::Duration;

use crate::harness::Harness;

async fn insert(h: &Harness, from: i32, to: i32) {
    let c = h.client().await;
    for start in (from..=to).step_by(5) {
        let end = (start + 4).min(to);
        c.batch_execute(&format!(
            "INSERT INTO items SELECT g, 'v' || g FROM generate_series({start}, {end}) g"
        ))
        .await
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_and_restart_lose_and_duplicate_nothing() {
    let h = Harness::new(
        "restart",
        "CREATE TABLE items (id int PRIMARY KEY, v text NOT NULL);",
    )
    .await;
    let (daemon, conn) = h.write_configs("");

    let mut child = h.spawn_daemon(&daemon, &conn, "run1.log");
    h.wait_slot(true, || true).await;
    insert(&h, 1, 60).await;
    // Kill while events are in flight: some are committed in Kafka, some not, some not read.
    tokio::time::sleep(Duration::from_millis(150)).await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    h.wait_slot(false, || true).await;

    insert(&h, 61, 120).await; // written while the daemon is down

    let mut child = h.spawn_daemon(&daemon, &conn, "run2.log");
    h.wait_slot(true, || true).await;
    insert(&h, 121, 150).await;

    let recs = h.read("items", 150, Duration::from_secs(90)).await;
    let ids: Vec<i64> = recs
        .iter()
        .map(|r| r.value["after"]["id"].as_i64().unwrap())
        .collect();
    let expected: Vec<i64> = (1..=150).collect();
    assert_eq!(ids, expected, "lost, duplicated or reordered events");
    for r in &recs {
        let id = r.key["id"].as_i64().unwrap();
        assert_eq!(r.value["after"]["v"], format!("v{id}"));
    }

    let pid = child.id().unwrap() as i32;
    let term = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(term.success());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(
        status.success(),
        "SIGTERM should stop pgcdc cleanly, got {status}"
    );
    h.drop_slot().await;
}
