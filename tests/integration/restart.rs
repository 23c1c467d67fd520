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
    let mut h = Harness::new(
        "restart",
        "CREATE TABLE items (id int PRIMARY KEY, v text NOT NULL);",
    )
    .await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    h.http_listen = format!("127.0.0.1:{port}");
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

    // The second run served its events: /metrics counts them, /healthz answers.
    let metrics = http_get(port, "/metrics").await;
    let events: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("pgcdc_events_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no pgcdc_events_total in:\n{metrics}"));
    assert!(
        events >= 30,
        "the second run delivered at least ids 121..150; metrics say {events}"
    );
    assert!(http_get(port, "/healthz").await.ends_with("ok\n"));

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

async fn http_get(port: u16, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out
}
