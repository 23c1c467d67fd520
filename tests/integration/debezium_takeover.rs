//! Issue 18, end to end: real Debezium (`debezium-connector-postgres` 3.6.3.Final in a
//! distributed Kafka Connect worker with Confluent's AvroConverter, `dev/connect/run-source`)
//! streams a workload of inserts, updates, deletes and key changes; the worker is stopped
//! (gracefully, or with SIGKILL); `pgcdc takeover debezium` continues on its slot, topic and
//! subjects while the workload goes on. One Python consumer (confluent-kafka's stock
//! AvroDeserializer, read_committed, one consumer group, never restarted) reads the topic
//! from before the switch to the end: every change of the workload (recorded by a trigger in
//! its own transaction) is there, in order per key, each key on one partition, no snapshot
//! read after the seam; the duplicates (Debezium's unflushed tail, replayed) are counted and
//! printed.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use serde_json::Value as Json;

use crate::harness::Harness;

const SCHEMA: &str = r#"
CREATE TABLE t (id int PRIMARY KEY, n int NOT NULL, note text);
-- The workload's ground truth, written in the same transactions (not published).
CREATE TABLE truth (seq bigserial PRIMARY KEY, id int NOT NULL, op text NOT NULL, n int);
CREATE FUNCTION record_truth() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    INSERT INTO truth (id, op, n) VALUES (NEW.id, 'c', NEW.n);
  ELSIF TG_OP = 'UPDATE' AND NEW.id <> OLD.id THEN
    INSERT INTO truth (id, op, n) VALUES (OLD.id, 'd', NULL), (NEW.id, 'c', NEW.n);
  ELSIF TG_OP = 'UPDATE' THEN
    INSERT INTO truth (id, op, n) VALUES (NEW.id, 'u', NEW.n);
  ELSE
    INSERT INTO truth (id, op, n) VALUES (OLD.id, 'd', NULL);
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER truth AFTER INSERT OR UPDATE OR DELETE ON t FOR EACH ROW EXECUTE FUNCTION record_truth();
-- Rows Debezium's initial snapshot reads (op r).
INSERT INTO t SELECT -g, 0, 'before' FROM generate_series(1, 5) g;
"#;

/// Step `i` of the workload, one transaction: an insert, an update of an earlier row, a
/// delete of an older one, and every 7th step a primary-key change.
fn step(i: i64) -> String {
    let mut s = format!(
        "BEGIN; INSERT INTO t VALUES ({i}, 0, 'row {i}'); UPDATE t SET n = n + 1 WHERE id = {};",
        i - 3
    );
    if i % 3 == 0 {
        s += &format!("DELETE FROM t WHERE id = {};", i - 10);
    }
    if i % 7 == 0 {
        s += &format!("UPDATE t SET id = id + 1000000 WHERE id = {};", i - 5);
    }
    s + "COMMIT;"
}

/// The workload, every 20 ms until stopped; returns how many steps it ran.
fn workload(h: &Harness, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<i64> {
    let h = h.clone();
    tokio::spawn(async move {
        let c = h.client().await;
        let mut i = 0;
        while !stop.load(Ordering::Relaxed) {
            i += 1;
            c.batch_execute(&step(i)).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        i
    })
}

/// The Connect worker process, killed when dropped.
struct Worker(tokio::process::Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.start_kill();
    }
}

struct Debezium<'a> {
    h: &'a Harness,
    root: &'static str,
}

impl Debezium<'_> {
    fn slot(&self) -> String {
        format!("dbz_{}", self.h.name)
    }

    fn offsets_topic(&self) -> String {
        format!("connect-{}-offsets", self.h.name)
    }

    fn env(&self, c: &mut tokio::process::Command) {
        let h = self.h;
        c.env("SOURCE_NAME", &h.name)
            .env("CONNECT_WORK_DIR", h.dir.join("connect"))
            .env("CONNECT_LOG_FILE", h.dir.join("connect.log"))
            .env("KAFKA_BOOTSTRAP", &h.stack.kafka_bootstrap)
            .env("SCHEMA_REGISTRY_URL", &h.stack.registry_url)
            .env("SOURCE_DB_HOST", &h.stack.pg_host)
            .env("SOURCE_DB_PORT", h.stack.pg_port.to_string())
            .env("SOURCE_DB_USER", &h.stack.pg_user)
            .env("SOURCE_DB_NAME", &h.db)
            .env("SOURCE_TABLES", "public\\.t")
            .env("SOURCE_TOPIC_PREFIX", &h.prefix)
            .env("SOURCE_SLOT", self.slot())
            .env("SOURCE_PUBLICATION", format!("dbz_pub_{}", h.name))
            // Three partitions: a key must stay on its partition across the seam.
            .env("SOURCE_EXTRA", "topic.creation.default.partitions=3");
    }

    /// Starts the worker and creates the connector (waits until its task runs).
    async fn start(&self) -> Worker {
        let mut c = tokio::process::Command::new(format!("{}/dev/connect/run-source", self.root));
        self.env(&mut c);
        let worker = Worker(
            c.stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("start dev/connect/run-source"),
        );
        self.connector("create").await;
        worker
    }

    async fn connector(&self, cmd: &str) {
        let mut c =
            tokio::process::Command::new(format!("{}/dev/connect/source-connector", self.root));
        self.env(&mut c);
        let out = c.arg(cmd).output().await.unwrap();
        assert!(
            out.status.success(),
            "source-connector {cmd}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The slot's `active`, polled until it is `want`.
pub(crate) async fn slot_active(h: &Harness, slot: &str, want: bool) {
    let c = h.stack.pg_connect("postgres").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let active: Option<bool> = c
            .query_opt(
                "SELECT active FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await
            .unwrap()
            .map(|r| r.get(0));
        if active == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "slot {slot} not active={want} in 60s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// End offsets of each partition of `topic` now: the seam.
fn end_offsets(h: &Harness, topic: &str) -> BTreeMap<i32, i64> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &h.stack.kafka_bootstrap)
        .set("group.id", "seam")
        .create()
        .unwrap();
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(30))
        .unwrap();
    md.topics()[0]
        .partitions()
        .iter()
        .map(|p| {
            let (_, high) = c
                .fetch_watermarks(topic, p.id(), Duration::from_secs(30))
                .unwrap();
            (p.id(), high)
        })
        .collect()
}

/// What one change is: its key, op (`r` counted as `c`) and `n` (none for a delete).
type Change = (i64, String, Option<i64>);

fn change_of(r: &Json) -> Option<Change> {
    let v = &r["value"];
    if v.is_null() {
        return None; // a tombstone
    }
    let op = v["op"].as_str().unwrap();
    let id = r["key"]["id"].as_i64().unwrap();
    let n = v["after"]["n"].as_i64();
    Some((id, if op == "r" { "c" } else { op }.to_owned(), n))
}

fn read_lines(path: &std::path::Path) -> Vec<Json> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

async fn switch(label: &str, kill: bool) {
    let root = env!("CARGO_MANIFEST_DIR");
    let status = std::process::Command::new(format!("{root}/dev/python-env"))
        .status()
        .expect("run dev/python-env");
    assert!(status.success(), "dev/python-env failed");
    let _jvm = crate::common::one_jvm().await;

    let h = Harness::new(label, SCHEMA).await;
    let dbz = Debezium { h: &h, root };
    let topic = h.topic("t");
    let mut worker = dbz.start().await;

    // The consumer: started on Debezium's events, kept until the end.
    let out_path = h.dir.join("seam.jsonl");
    let stop_file = h.dir.join("seam.stop");
    let python = tokio::process::Command::new(format!("{root}/.stack/venv/bin/python"))
        .arg(format!("{root}/tests/python/seam.py"))
        .args(["--bootstrap", &h.stack.kafka_bootstrap])
        .args(["--registry", &h.stack.registry_url])
        .args(["--topic", &topic, "--group", &format!("{}-app", h.name)])
        .arg("--stop-file")
        .arg(&stop_file)
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the Python consumer");

    let stop = Arc::new(AtomicBool::new(false));
    let load = workload(&h, stop.clone());
    // Debezium streams: the consumer has decoded some of its change events.
    let deadline = Instant::now() + Duration::from_secs(120);
    while read_lines(&out_path)
        .iter()
        .filter(|r| r["value"]["op"] == "c")
        .count()
        < 40
    {
        assert!(
            Instant::now() < deadline,
            "no Debezium events reached the consumer"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    if kill {
        worker.0.start_kill().unwrap();
        worker.0.wait().await.unwrap();
    } else {
        dbz.connector("stop").await;
        let _ = nix_term(&worker);
        if tokio::time::timeout(Duration::from_secs(20), worker.0.wait())
            .await
            .is_err()
        {
            // A Connect worker can hang in its shutdown hook (Jetty): stopped anyway.
            worker.0.start_kill().unwrap();
            worker.0.wait().await.unwrap();
        }
    }
    slot_active(&h, &dbz.slot(), false).await;
    let seam = end_offsets(&h, &topic);

    let extra = format!(
        "slot: {}\npublication: dbz_pub_{}\ntables:\n  include: [public.t]\n",
        dbz.slot(),
        h.name
    );
    let (d, c) = h.write_configs(&extra);
    let dir = h.dir.join("connectors");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(&c, dir.join("c.yaml")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgcdc"))
        .arg("--config")
        .arg(&d)
        .args(["takeover", "debezium", "--connectors-dir"])
        .arg(&dir)
        .arg(&h.name)
        .args(["--offsets-topic", &dbz.offsets_topic()])
        .args(["--debezium-connector", &h.name])
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "takeover failed: {said}");
    eprintln!("takeover ({label}):\n{said}");

    let run = h.start_on(&extra, &dbz.slot()).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, Ordering::Relaxed);
    let steps = load.await.unwrap();

    let truth: Vec<Change> = h
        .client()
        .await
        .query("SELECT id::int8, op, n::int8 FROM truth ORDER BY seq", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let mut want: BTreeMap<i64, Vec<Change>> = BTreeMap::new();
    for c in &truth {
        want.entry(c.0).or_default().push(c.clone());
    }
    // Wait until every change of the workload has reached the consumer.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let seen: std::collections::HashSet<Change> =
            read_lines(&out_path).iter().filter_map(change_of).collect();
        let missing = truth.iter().filter(|c| !seen.contains(*c)).count();
        if missing == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} of {} changes never reached the consumer",
            truth.len()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    std::fs::write(&stop_file, "").unwrap();
    let py = python.wait_with_output().await.unwrap();
    assert!(
        py.status.success(),
        "the consumer failed: {}",
        String::from_utf8_lossy(&py.stderr)
    );
    run.stop().await.unwrap();

    let records = read_lines(&out_path);
    let mut got: BTreeMap<i64, Vec<(i32, i64, Change)>> = BTreeMap::new();
    let (mut before, mut after, mut tombstones) = (0, 0, 0);
    let mut key_schemas = std::collections::BTreeSet::new();
    for r in &records {
        let (p, o) = (
            r["partition"].as_i64().unwrap() as i32,
            r["offset"].as_i64().unwrap(),
        );
        let pgcdc = o >= seam[&p];
        key_schemas.insert(r["key_schema"].as_i64());
        if pgcdc {
            after += 1;
            assert_ne!(r["value"]["op"], "r", "a snapshot read after the seam: {r}");
        } else {
            before += 1;
        }
        match change_of(r) {
            Some(c) => got.entry(c.0).or_default().push((p, o, c)),
            None => tombstones += 1,
        }
    }
    assert!(before > 0 && after > 0, "before {before}, after {after}");
    let mut duplicates = 0;
    for (id, events) in &got {
        let parts: std::collections::BTreeSet<i32> = events.iter().map(|e| e.0).collect();
        assert_eq!(
            parts.len(),
            1,
            "key {id} is on partitions {parts:?} across the seam"
        );
        let mut events = events.clone();
        events.sort_by_key(|e| e.1);
        let seen: Vec<Change> = events.into_iter().map(|e| e.2).collect();
        let expected = want.get(id).cloned().unwrap_or_default();
        duplicates += replayed(*id, &seen, &expected);
    }
    assert_eq!(got.len(), want.len(), "keys with changes");
    let result = format!(
        "RESULT takeover mode={label} steps={steps} changes={} records_before_seam={before} records_after_seam={after} \
         duplicates={duplicates} tombstones={tombstones} key_schema_ids={key_schemas:?}",
        truth.len()
    );
    eprintln!("{result}");
    // make test prints these after the test run (cargo test shows no output of a passing test).
    std::fs::write(
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("takeover-{label}.result")),
        result + "\n",
    )
    .unwrap();
    let c = h.stack.pg_connect("postgres").await;
    c.execute("SELECT pg_drop_replication_slot($1)", &[&dbz.slot()])
        .await
        .unwrap();
}

/// How many of a key's changes the consumer got twice, given that it must have got them
/// as `expected[..j]` (Debezium) followed by `expected[i..]` (pgcdc, from where Debezium's
/// last offset left off, i <= j): every change, in commit order, and a repeat only as the
/// one contiguous replay a seam makes. Panics naming the key otherwise.
fn replayed(id: i64, seen: &[Change], expected: &[Change]) -> usize {
    let j = seen
        .iter()
        .zip(expected)
        .take_while(|(a, b)| a == b)
        .count();
    let rest = &seen[j..];
    if rest.is_empty() {
        assert_eq!(
            j,
            expected.len(),
            "key {id}: changes lost: got {seen:?}, want {expected:?}"
        );
        return 0;
    }
    let i = expected
        .iter()
        .position(|c| *c == rest[0])
        .unwrap_or_else(|| {
            panic!(
                "key {id}: {:?} is no change of the workload (got {seen:?})",
                rest[0]
            )
        });
    assert!(
        i <= j && rest == &expected[i..],
        "key {id}: not the workload's changes with one replay at the seam: got {seen:?}, want {expected:?}"
    );
    j - i
}

/// SIGTERM to the worker (the JVM: run-source execs it).
fn nix_term(w: &Worker) -> std::io::Result<()> {
    let pid = w.0.id().ok_or_else(|| std::io::Error::other("gone"))?;
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgcdc_takes_over_from_a_stopped_debezium_connector() {
    switch("dbzstop", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgcdc_takes_over_from_a_killed_connect_worker() {
    switch("dbzkill", true).await;
}

#[test]
fn the_seam_check_takes_one_replay_and_nothing_else() {
    let ch = |op: &str, n: Option<i64>| (7, op.to_owned(), n);
    let want = vec![
        ch("c", Some(0)),
        ch("u", Some(1)),
        ch("u", Some(2)),
        ch("d", None),
    ];
    assert_eq!(replayed(7, &want, &want), 0);
    let replay = [&want[..3], &want[1..]].concat();
    assert_eq!(replayed(7, &replay, &want), 2);
    // A stale change after a newer one, a lost one, a foreign one: each is caught.
    for bad in [
        vec![
            want[0].clone(),
            want[1].clone(),
            want[2].clone(),
            want[1].clone(),
        ],
        vec![want[0].clone(), want[2].clone(), want[3].clone()],
        vec![want[0].clone(), want[1].clone()],
        vec![want[0].clone(), ch("u", Some(9))],
    ] {
        let r = std::panic::catch_unwind(|| replayed(7, &bad, &want));
        assert!(r.is_err(), "{bad:?} passed");
    }
}
