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
    restart_on(None).await;
}

on_majors!(sigkill_and_restart_on, restart_on);

async fn restart_on(major: Option<u32>) {
    let mut h = Harness::for_major(
        major,
        "restart",
        "CREATE TABLE items (id int PRIMARY KEY, v text NOT NULL);",
    )
    .await;
    let port = crate::common::free_port();
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

    // The second run served its events: /metrics counts them by connector, table and op,
    // with the lag and commit series; /healthz says the connector runs.
    let (status, metrics) = http_get(port, "/metrics").await;
    assert_eq!(status, 200, "{metrics}");
    let series = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in:\n{metrics}"))
    };
    let events = series(&format!(
        "pgcdc_events_total{{connector=\"{}\",table=\"public.items\",op=\"c\"}}",
        h.name
    ));
    assert!(
        events >= 30.0,
        "the second run delivered at least ids 121..150; metrics say {events}"
    );
    let labels = format!("{{connector=\"{}\"}}", h.name);
    assert!(series(&format!("pgcdc_kafka_commit_seconds_count{labels}")) >= 1.0);
    assert!(series(&format!("pgcdc_pg_transactions_total{labels}")) >= 1.0);
    let lag = series(&format!("pgcdc_replication_lag_bytes{labels}"));
    assert!(lag >= 0.0, "{lag}");
    series(&format!("pgcdc_replication_lag_seconds{labels}"));
    series(&format!("pgcdc_open_kafka_transaction_age_seconds{labels}"));
    let (status, health) = http_get(port, "/healthz").await;
    assert_eq!(status, 200, "{health}");
    let health: serde_json::Value = serde_json::from_str(&health).unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["connectors"][0]["name"], h.name.as_str());
    assert_eq!(health["connectors"][0]["state"], "running");

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

/// A GET over plain HTTP/1.1: the status code and the body.
async fn http_get(port: u16, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {out}"));
    let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    (status, body)
}

/// Two connectors in one process, one of which cannot reach its database: `/healthz`
/// answers 503 and names it, with its error, while the other runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_names_the_connector_that_does_not_run() {
    let mut h = Harness::new("healthz", "CREATE TABLE items (id int PRIMARY KEY);").await;
    let port = crate::common::free_port();
    h.http_listen = format!("127.0.0.1:{port}");
    let (daemon, good) = h.write_configs("");
    // A port nothing listens on: connection refused, a transient error the supervisor retries.
    let closed = crate::common::free_port();
    let bad_name = format!("{}_nodb", h.name);
    let bad = h.dir.join("nodb.yaml");
    std::fs::write(
        &bad,
        h.connector_yaml("")
            .replacen(
                &format!("name: {}", h.name),
                &format!("name: {bad_name}"),
                1,
            )
            .replacen(
                &format!("port: {}", h.stack.pg_port),
                &format!("port: {closed}"),
                1,
            ),
    )
    .unwrap();
    let log = std::fs::File::create(h.dir.join("daemon.log")).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_pgcdc"))
        .arg("--config")
        .arg(&daemon)
        .arg("run")
        .arg(&good)
        .arg(&bad)
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    h.wait_slot(true, || true).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let body = loop {
        let (status, body) = http_get(port, "/healthz").await;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let state = |name: &str| {
            v["connectors"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["name"] == name))
                .map(|c| c["state"].as_str().unwrap_or("").to_owned())
        };
        if state(&h.name).as_deref() == Some("running")
            && state(&bad_name).as_deref() == Some("restarting")
        {
            assert_eq!(status, 503, "{body}");
            break v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "healthz never showed one running and one restarting connector: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(body["status"], "unavailable");
    let bad_entry = body["connectors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == bad_name.as_str())
        .unwrap();
    assert_eq!(bad_entry["code"], "postgres.connect", "{bad_entry}");
    let error = bad_entry["error"].as_str().unwrap();
    assert!(
        error.contains(&closed.to_string()),
        "the error names the server: {error}"
    );
    child.start_kill().unwrap();
    child.wait().await.unwrap();
}
