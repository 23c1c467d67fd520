//! One process, several connectors: a connector that fails permanently stops alone (the
//! others stream on; `/healthz` and `pgcdc status` name it and why); SIGHUP picks up
//! connector files added, removed or fixed without touching the others; `fail_fast: true`
//! stops them all; the process exits non-zero only when every connector has stopped.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value as Json;

use crate::harness::Harness;

const TABLE: &str = "CREATE TABLE t (id int PRIMARY KEY, v text);";

fn signal(child: &tokio::process::Child, sig: &str) {
    let pid = child.id().expect("pgcdc runs").to_string();
    let ok = std::process::Command::new("kill")
        .args([sig, &pid])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

/// A slot created by "another consumer": pgcdc refuses it (a permanent error).
async fn foreign_slot(h: &Harness) {
    h.client()
        .await
        .execute(
            "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
            &[&h.slot()],
        )
        .await
        .unwrap();
}

async fn healthz(port: u16) -> Option<Json> {
    let r = reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
        .await
        .ok()?;
    r.json().await.ok()
}

fn state<'a>(body: &'a Json, name: &str) -> Option<&'a Json> {
    body["connectors"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == name)
}

/// Waits until `/healthz` satisfies `ok`; returns the body.
async fn wait_health(port: u16, what: &str, ok: impl Fn(&Json) -> bool) -> Json {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let body = healthz(port).await;
        if let Some(b) = body.as_ref().filter(|b| ok(b)) {
            return b.clone();
        }
        assert!(
            Instant::now() < deadline,
            "/healthz never showed {what}: {body:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn spawn(daemon: &Path, dir: &Path, log: &Path) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_pgcdc"))
        .arg("--config")
        .arg(daemon)
        .arg("run")
        .arg("--connectors-dir")
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .expect("start pgcdc")
}

async fn insert_and_read(h: &Harness, id: i32) {
    h.sql(&format!("INSERT INTO t VALUES ({id}, 'v{id}')"))
        .await;
    let recs = h.read("t", 1, Duration::from_secs(60)).await;
    assert_eq!(recs[0].value["after"]["id"], id, "{}", h.name);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_failed_connector_stops_alone_and_sighup_reloads_the_folder() {
    let mut a = Harness::new("isoa", TABLE).await;
    let b = Harness::new("isob", TABLE).await;
    let c = Harness::new("isoc", TABLE).await;
    let port = crate::common::free_port();
    a.http_listen = format!("127.0.0.1:{port}");
    foreign_slot(&b).await;

    let daemon = a.dir.join("pgcdc.yaml");
    std::fs::write(&daemon, a.daemon_yaml()).unwrap();
    let dir = a.dir.join("connectors");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("a.yaml"), a.connector_yaml("")).unwrap();
    std::fs::write(dir.join("b.yaml"), b.connector_yaml("")).unwrap();
    let log = a.dir.join("isolation.log");
    let mut child = spawn(&daemon, &dir, &log);

    // b fails for good; a streams on, and the process runs.
    a.wait_slot(true, || true).await;
    let body = wait_health(port, "b failed and a running", |h| {
        state(h, &b.name).is_some_and(|s| s["state"] == "failed")
            && state(h, &a.name).is_some_and(|s| s["state"] == "running")
    })
    .await;
    let sb = state(&body, &b.name).unwrap();
    assert_eq!(sb["code"], "postgres.slot", "{body}");
    assert!(
        sb["error"]
            .as_str()
            .unwrap()
            .contains("has no record of creating it"),
        "{body}"
    );
    assert_eq!(body["status"], "unavailable", "{body}");
    insert_and_read(&a, 1).await;
    assert!(child.try_wait().unwrap().is_none(), "pgcdc exited");

    // `pgcdc status` says which one failed and why.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgcdc"))
        .arg("--config")
        .arg(&daemon)
        .arg("status")
        .arg("--connectors-dir")
        .arg(&dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    // A connector's lines: its header, then the indented ones.
    let section = |name: &str| {
        let header = format!("connector {name}");
        let mut lines = text.lines().skip_while(|l| *l != header);
        assert!(lines.next().is_some(), "no {name} in:\n{text}");
        lines
            .take_while(|l| l.starts_with(' '))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(section(&a.name).contains("daemon: running"), "{text}");
    let sec_b = section(&b.name);
    assert!(
        sec_b.contains("daemon: failed (postgres.slot): ")
            && sec_b.contains("has no record of creating it")
            && sec_b.contains("next: "),
        "{text}"
    );

    // SIGHUP: a new file starts its connector; a is not restarted (its slot stays active
    // under the same walsender).
    let pid_a = active_pid(&a).await;
    std::fs::write(dir.join("c.yaml"), c.connector_yaml("")).unwrap();
    signal(&child, "-HUP");
    c.wait_slot(true, || true).await;
    insert_and_read(&c, 1).await;
    assert_eq!(active_pid(&a).await, pid_a, "a was restarted by the reload");

    // SIGHUP after b is fixed (the foreign slot dropped) and a's file removed: b starts
    // again, a stops, c goes on untouched.
    let pid_c = active_pid(&c).await;
    b.drop_slot().await;
    std::fs::remove_file(dir.join("a.yaml")).unwrap();
    signal(&child, "-HUP");
    b.wait_slot(true, || true).await;
    a.wait_slot(false, || true).await;
    insert_and_read(&b, 1).await;
    let body = wait_health(port, "a gone, b and c running", |h| {
        state(h, &a.name).is_none()
            && state(h, &b.name).is_some_and(|s| s["state"] == "running")
            && state(h, &c.name).is_some_and(|s| s["state"] == "running")
    })
    .await;
    assert_eq!(body["status"], "ok", "{body}");
    assert_eq!(active_pid(&c).await, pid_c, "c was restarted by the reload");

    // A file that does not load is refused on SIGHUP; the running connectors go on.
    std::fs::write(dir.join("bad.yaml"), "name: [oops\n").unwrap();
    signal(&child, "-HUP");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "pgcdc exited on a bad file"
    );
    assert_eq!(active_pid(&c).await, pid_c);
    std::fs::remove_file(dir.join("bad.yaml")).unwrap();
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("connector files not reloaded") && logged.contains("bad.yaml"),
        "{logged}"
    );

    // Nobody has failed at the end: SIGTERM exits 0.
    signal(&child, "-TERM");
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("pgcdc stops on SIGTERM")
        .unwrap();
    assert!(status.success(), "{status:?}");
    for h in [&a, &b, &c] {
        h.drop_slot().await;
    }
}

async fn active_pid(h: &Harness) -> i32 {
    let c = h.stack.pg_connect("postgres").await;
    c.query_one(
        "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1",
        &[&h.slot()],
    )
    .await
    .unwrap()
    .get::<_, Option<i32>>(0)
    .expect("the slot is active")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_fast_stops_every_connector_and_exits_non_zero() {
    let a = Harness::new("ffa", TABLE).await;
    let b = Harness::new("ffb", TABLE).await;
    let daemon = a.dir.join("pgcdc.yaml");
    std::fs::write(&daemon, format!("{}fail_fast: true\n", a.daemon_yaml())).unwrap();
    let dir = a.dir.join("connectors");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("a.yaml"), a.connector_yaml("")).unwrap();
    std::fs::write(dir.join("b.yaml"), b.connector_yaml("")).unwrap();
    // a streams first; then b meets a foreign slot.
    let log = a.dir.join("failfast.log");
    foreign_slot(&b).await;
    let mut child = spawn(&daemon, &dir, &log);
    let status = tokio::time::timeout(Duration::from_secs(120), child.wait())
        .await
        .expect("fail_fast: pgcdc exits when b fails")
        .unwrap();
    assert_eq!(status.code(), Some(1), "{status:?}");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("fail_fast: stopping every connector")
            && logged.contains("has no record of creating it"),
        "{logged}"
    );
    a.wait_slot(false, || true).await;
    a.drop_slot().await;
    b.drop_slot().await;
}
