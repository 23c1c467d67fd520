//! Issue 18: taking over from Debezium (`pgcdc takeover debezium`, `from_debezium`). These
//! tests stand in for Debezium with what it leaves behind: its pgoutput slot and
//! publication, and an offsets record in Kafka Connect's format (key
//! `["<connector>",{"server":"<topic.prefix>"}]`, LSNs as integers) whose positions are
//! real ones PostgreSQL reports for the transactions written. Each refusal of the issue's
//! point 2 has its own test; nothing is written when one refuses.

use std::path::PathBuf;
use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde_json::json;

use crate::harness::Harness;

const SCHEMA: &str = "CREATE TABLE t (id int PRIMARY KEY, v text NOT NULL);";

/// A database as Debezium leaves it: table `t` in its publication and its pgoutput slot
/// (named after the test, as `slot.name` would be).
async fn debezium_was_here(label: &str) -> Harness {
    with_slot(label, "pgoutput").await
}

/// [`debezium_was_here`] with a slot of `plugin`.
async fn with_slot(label: &str, plugin: &str) -> Harness {
    let h = Harness::new(label, SCHEMA).await;
    h.sql(&format!(
        "CREATE PUBLICATION {} FOR TABLE t",
        publication(&h)
    ))
    .await;
    h.sql(&format!(
        "SELECT pg_create_logical_replication_slot('{}', '{plugin}')",
        slot(&h)
    ))
    .await;
    h
}

/// Drops the test's stand-in for Debezium's slot (an idle slot holds WAL).
async fn drop_debeziums_slot(h: &Harness) {
    let c = h.stack.pg_connect("postgres").await;
    c.execute(
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active",
        &[&slot(h)],
    )
    .await
    .unwrap();
}

fn slot(h: &Harness) -> String {
    format!("dbz_{}", h.name)
}

fn publication(h: &Harness) -> String {
    format!("dbz_pub_{}", h.name)
}

/// The connector settings that point pgcdc at Debezium's slot and publication.
fn on_debeziums(h: &Harness, extra: &str) -> String {
    format!(
        "slot: {}\npublication: {}\ntables:\n  include: [public.t]\n{extra}",
        slot(h),
        publication(h)
    )
}

fn connect_offsets_topic(h: &Harness) -> String {
    format!("{}.connect-offsets", h.name)
}

/// `pgcdc takeover debezium <connector> <args>`: exit code, and stdout with stderr.
fn takeover(h: &Harness, extra: &str, args: &[&str]) -> (Option<i32>, String) {
    let daemon = h.dir.join("pgcdc.yaml");
    std::fs::write(&daemon, h.daemon_yaml()).unwrap();
    let dir: PathBuf = h.dir.join("connectors");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("c.yaml"),
        h.connector_yaml(&on_debeziums(h, extra)),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgcdc"))
        .arg("--config")
        .arg(&daemon)
        .args(["takeover", "debezium", "--connectors-dir"])
        .arg(&dir)
        .arg(&h.name)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Writes Debezium's offsets record for connector `dbz` into Connect's offsets topic, as
/// Kafka Connect's worker does (schemaless JSON key and value).
async fn connect_offset(h: &Harness, value: serde_json::Value) {
    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &h.stack.kafka_bootstrap)
        .create()
        .unwrap();
    let topic = connect_offsets_topic(h);
    // Connect creates its offsets topic compacted, 25 partitions by default.
    static CREATED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let new = CREATED.lock().map(|mut c| {
        let new = !c.contains(&topic);
        c.push(topic.clone());
        new
    });
    if new.unwrap_or(true) {
        crate::bad_input::create_topic(
            &h.stack.kafka_bootstrap,
            &topic,
            25,
            &[("cleanup.policy", "compact")],
        )
        .await;
        wait_for_leaders(h, &topic).await;
    }
    let key = json!(["dbz", {"server": h.prefix}]).to_string();
    let value = value.to_string();
    p.send(
        FutureRecord::to(&topic).key(&key).payload(&value),
        Duration::from_secs(30),
    )
    .await
    .map_err(|(e, _)| e)
    .unwrap();
}

/// Until every partition of a topic just created has a leader (as Connect's long-lived
/// offsets topic has).
async fn wait_for_leaders(h: &Harness, topic: &str) {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &h.stack.kafka_bootstrap)
        .create()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let ready = c
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .is_ok_and(|md| {
                md.topics().iter().all(|t| {
                    !t.partitions().is_empty()
                        && t.partitions()
                            .iter()
                            .all(|p| p.leader() >= 0 && p.error().is_none())
                })
            });
        if ready {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{topic} has partitions without a leader after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The slot's pgoutput messages not yet confirmed, as PostgreSQL decodes them: each
/// message's LSN (what Debezium stores) and its type byte (B, I, U, D, C, R).
async fn messages(h: &Harness) -> Vec<(u64, char)> {
    messages_with_xid(h)
        .await
        .into_iter()
        .map(|(l, t, _)| (l, t))
        .collect()
}

/// [`messages`] with each message's transaction id (Debezium's `txId`).
async fn messages_with_xid(h: &Harness) -> Vec<(u64, char, i64)> {
    let c = h.client().await;
    let rows = c
        .query(
            "SELECT (lsn - '0/0')::bigint, get_byte(data, 0), xid::text::int8 FROM pg_logical_slot_peek_binary_changes($1, NULL, NULL,
                'proto_version', '1', 'publication_names', $2)",
            &[&slot(h), &publication(h)],
        )
        .await
        .unwrap();
    rows.iter()
        .map(|r| {
            let lsn: i64 = r.get(0);
            let b: i32 = r.get(1);
            (lsn as u64, b as u8 as char, r.get(2))
        })
        .collect()
}

fn lsn_text(n: u64) -> String {
    format!("{:X}/{:X}", n >> 32, n & 0xFFFF_FFFF)
}

fn ids(records: &[crate::harness::Record]) -> Vec<i64> {
    records
        .iter()
        .map(|r| r.value["after"]["id"].as_i64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_takeover_continues_inside_the_transaction_debezium_stopped_in() {
    let h = debezium_was_here("tkseam").await;
    // Debezium delivered transaction A (rows 1-3) and, of transaction B (rows 10-19), the
    // rows up to 13 when it stopped: its offset is B's fourth change, lsn_commit A's end.
    h.sql("INSERT INTO t SELECT g, 'a' || g FROM generate_series(1, 3) g")
        .await;
    h.sql("INSERT INTO t SELECT g, 'b' || g FROM generate_series(10, 19) g")
        .await;
    let m = messages(&h).await;
    let commits: Vec<u64> = m
        .iter()
        .filter(|(_, t)| *t == 'C')
        .map(|(l, _)| *l)
        .collect();
    let inserts: Vec<u64> = m
        .iter()
        .filter(|(_, t)| *t == 'I')
        .map(|(l, _)| *l)
        .collect();
    assert_eq!((commits.len(), inserts.len()), (2, 13), "{m:?}");
    let (a_end, b_fourth) = (commits[0], inserts[3 + 3]);
    let b_xid = messages_with_xid(&h)
        .await
        .into_iter()
        .find(|m| m.0 == b_fourth)
        .unwrap()
        .2;
    connect_offset(
        &h,
        json!({"lsn_proc": b_fourth, "messageType": "INSERT", "lsn": b_fourth, "txId": b_xid,
               "ts_usec": 1_700_000_000_000_000i64, "lsn_commit": a_end}),
    )
    .await;
    let topic = connect_offsets_topic(&h);

    // --dry-run says what it found and will do, and writes nothing.
    let (code, out) = takeover(&h, "", &["--offsets-topic", &topic, "--dry-run"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(&format!("lsn_commit {}", lsn_text(a_end)))
            && out.contains(&format!("lsn_proc {}", lsn_text(b_fourth)))
            && out.contains("connector dbz")
            && out.contains(&format!(
                "changes before {} are skipped",
                lsn_text(b_fourth)
            ))
            && out.contains(&h.topic("t"))
            && out.contains("--dry-run: nothing written"),
        "{out}"
    );
    let (daemon, _) = h.configs("");
    let written = pgcdc::kafka::offsets::read_last(&daemon.kafka, &h.name).unwrap();
    assert!(written.is_none(), "a dry run wrote {written:?}");

    let (code, out) = takeover(&h, "", &["--offsets-topic", &topic]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("first checkpoint written"), "{out}");
    let ck = pgcdc::kafka::offsets::read_last(&daemon.kafka, &h.name)
        .unwrap()
        .expect("the takeover's checkpoint");
    assert_eq!(ck.lsn, lsn_text(a_end));
    assert_eq!(
        ck.takeover.as_ref().and_then(|s| s.within.clone()),
        Some(lsn_text(b_fourth))
    );
    // Twice is refused: the connector has a checkpoint of its own now.
    let (code, out) = takeover(&h, "", &["--offsets-topic", &topic]);
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("has a checkpoint of its own"), "{out}");

    // pgcdc streams from the seam: no snapshot, nothing of A, B from the change Debezium
    // stopped at (13, sent again), then what follows.
    let run = h.start_on(&on_debeziums(&h, ""), &slot(&h)).await;
    h.sql("INSERT INTO t VALUES (20, 'c20')").await;
    let got = h.read("t", 8, Duration::from_secs(60)).await;
    assert_eq!(ids(&got), vec![13, 14, 15, 16, 17, 18, 19, 20], "{got:#?}");
    assert!(got.iter().all(|r| r.value["op"] == "c"), "{got:#?}");
    run.stop().await.unwrap();
    // Its own checkpoint replaced the seam; a restart sends nothing again.
    let ck = pgcdc::kafka::offsets::read_last(&daemon.kafka, &h.name)
        .unwrap()
        .unwrap();
    assert!(ck.takeover.is_none(), "{ck:?}");
    let run = h.start_on(&on_debeziums(&h, ""), &slot(&h)).await;
    h.sql("INSERT INTO t VALUES (21, 'c21')").await;
    let got = h.read("t", 9, Duration::from_secs(60)).await;
    assert_eq!(ids(&got), vec![13, 14, 15, 16, 17, 18, 19, 20, 21]);
    run.stop().await.unwrap();
    drop_debeziums_slot(&h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_debezium_takes_over_unattended_on_the_first_start() {
    let h = debezium_was_here("tkset").await;
    h.sql("INSERT INTO t VALUES (1, 'a')").await;
    h.sql("INSERT INTO t VALUES (2, 'b')").await;
    let m = messages(&h).await;
    let first_end = m.iter().find(|(_, t)| *t == 'C').unwrap().0;
    // Debezium's offset right after the COMMIT of the first transaction.
    connect_offset(
        &h,
        json!({"lsn_proc": first_end, "messageType": "COMMIT", "lsn": first_end,
               "txId": 1, "ts_usec": 1, "lsn_commit": first_end}),
    )
    .await;
    let extra = format!(
        "from_debezium:\n  offsets_topic: {}\n",
        connect_offsets_topic(&h)
    );
    let run = h.start_on(&on_debeziums(&h, &extra), &slot(&h)).await;
    h.sql("INSERT INTO t VALUES (3, 'c')").await;
    let got = h.read("t", 2, Duration::from_secs(60)).await;
    assert_eq!(ids(&got), vec![2, 3], "{got:#?}");
    run.stop().await.unwrap();
    // The next start resumes from pgcdc's own checkpoint: the setting does nothing more.
    let run = h.start_on(&on_debeziums(&h, &extra), &slot(&h)).await;
    h.sql("INSERT INTO t VALUES (4, 'd')").await;
    let got = h.read("t", 3, Duration::from_secs(60)).await;
    assert_eq!(ids(&got), vec![2, 3, 4], "{got:#?}");
    run.stop().await.unwrap();
    drop_debeziums_slot(&h).await;
}

/// Runs the takeover (not a dry run) and returns its refusal; nothing may be written.
async fn refused(h: &Harness, args: &[&str]) -> String {
    let (code, out) = takeover(h, "", args);
    assert_eq!(code, Some(1), "a refusal exits 1: {out}");
    let line = out
        .lines()
        .find(|l| l.contains("takeover from Debezium refused"))
        .unwrap_or_else(|| panic!("no refusal line: {out}"))
        .to_owned();
    let (daemon, _) = h.configs("");
    assert!(
        pgcdc::kafka::offsets::read_last(&daemon.kafka, &h.name)
            .unwrap()
            .is_none(),
        "a refused takeover wrote a checkpoint"
    );
    line
}

async fn current_lsn(h: &Harness) -> String {
    h.client()
        .await
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_debezium_still_reads_is_refused() {
    let h = debezium_was_here("tkactive").await;
    let lsn = current_lsn(&h).await;
    let mut recv = tokio::process::Command::new("pg_recvlogical")
        .args(["-h", &h.stack.pg_host, "-p", &h.stack.pg_port.to_string()])
        .args(["-U", &h.stack.pg_user, "-d", &h.db, "--slot", &slot(&h)])
        .args(["--start", "-o", "proto_version=1", "-o"])
        .arg(format!("publication_names={}", publication(&h)))
        .args(["-f", "/dev/null", "--no-loop"])
        .kill_on_drop(true)
        .spawn()
        .expect("start pg_recvlogical");
    // pg_recvlogical holds the slot, as Debezium's walsender would.
    crate::debezium_takeover::slot_active(&h, &slot(&h), true).await;
    let line = refused(&h, &["--lsn", &lsn]).await;
    assert!(
        line.contains(&format!("replication slot {} is active", slot(&h)))
            && line.contains("stop its connector first"),
        "{line}"
    );
    recv.start_kill().unwrap();
    recv.wait().await.unwrap();
    drop_debeziums_slot(&h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_in_progress_is_refused() {
    let h = debezium_was_here("tksnap").await;
    let lsn = messages(&h).await.first().map_or(0, |m| m.0);
    // What Connect stores while Debezium's initial snapshot still runs.
    connect_offset(
        &h,
        json!({"last_snapshot_record": false, "lsn": lsn.max(1), "txId": 5, "ts_usec": 1,
               "snapshot": "INITIAL", "snapshot_completed": false}),
    )
    .await;
    let line = refused(&h, &["--offsets-topic", &connect_offsets_topic(&h)]).await;
    assert!(
        line.contains("INITIAL snapshot was in progress") && line.contains("let Debezium finish"),
        "{line}"
    );
    drop_debeziums_slot(&h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_past_debeziums_offset_is_refused() {
    let h = debezium_was_here("tkahead").await;
    let before = current_lsn(&h).await;
    h.sql("INSERT INTO t VALUES (1, 'a')").await;
    let c = h.client().await;
    let now = current_lsn(&h).await;
    c.execute(
        "SELECT pg_replication_slot_advance($1, $2::text::pg_lsn)",
        &[&slot(&h), &now],
    )
    .await
    .unwrap();
    let line = refused(&h, &["--lsn", &before]).await;
    assert!(
        line.contains("confirmed_flush_lsn")
            && line.contains(&format!("past Debezium's last committed position {before}"))
            && line.contains("may never have reached Kafka"),
        "{line}"
    );
    drop_debeziums_slot(&h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_of_another_plugin_is_refused() {
    let h = with_slot("tkplugin", "test_decoding").await;
    let lsn = current_lsn(&h).await;
    let line = refused(&h, &["--lsn", &lsn]).await;
    assert!(
        line.contains("decodes with plugin test_decoding") && line.contains("pgoutput only"),
        "{line}"
    );
    drop_debeziums_slot(&h).await;
}

/// Registers the subjects of table `t` as they were before `alter` (pgcdc streams one row
/// under another connector name with the same topic prefix, as Debezium would have), sets
/// the value subject's compatibility, then runs `alter`.
async fn subjects_from_before(h: &Harness, compatibility: &str, alter: &str) {
    let mut before = h.clone();
    before.name = format!("{}_pre", h.name);
    before.offsets_topic = format!("{}_pre.offsets", h.name);
    let run = before.start("tables:\n  include: [public.t]\n").await;
    h.sql("INSERT INTO t VALUES (1, '1')").await;
    before.read("t", 1, Duration::from_secs(60)).await;
    run.stop().await.unwrap();
    before.drop_slot().await;
    let r = reqwest::Client::new()
        .put(format!(
            "{}/config/{}-value",
            h.stack.registry_url,
            h.topic("t")
        ))
        .json(&json!({"compatibility": compatibility}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    h.sql(alter).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_the_subject_would_refuse_is_refused() {
    // Debezium's value schema had `v` an int; the column is text now, and under BACKWARD a
    // reader's string cannot read a writer's int.
    let h = Harness::new(
        "tkschema",
        "CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL);",
    )
    .await;
    subjects_from_before(&h, "BACKWARD", "ALTER TABLE t ALTER COLUMN v TYPE text").await;
    h.sql(&format!(
        "CREATE PUBLICATION {} FOR TABLE t",
        publication(&h)
    ))
    .await;
    h.sql(&format!(
        "SELECT pg_create_logical_replication_slot('{}', 'pgoutput')",
        slot(&h)
    ))
    .await;
    let subject = format!("{}-value", h.topic("t"));
    let lsn = current_lsn(&h).await;
    let line = refused(&h, &["--lsn", &lsn]).await;
    assert!(
        line.contains(&format!("subject {subject}"))
            && line.contains("refuses pgcdc's schema as its next version")
            && line.contains("compatibility level BACKWARD"),
        "{line}"
    );
    drop_debeziums_slot(&h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_schema_other_than_debeziums_is_refused() {
    // Debezium's key was {id: int}; pgcdc's would be {id: long} (say, message.key.columns or
    // a changed key type): the key bytes would differ, so keys would move partition.
    let h = debezium_was_here("tkkey").await;
    subjects_from_before(&h, "NONE", "ALTER TABLE t ALTER COLUMN id TYPE bigint").await;
    let lsn = current_lsn(&h).await;
    let line = refused(&h, &["--lsn", &lsn]).await;
    assert!(
        line.contains(&format!("subject {}-key", h.topic("t")))
            && line.contains("pgcdc's key schema is not the newest one Debezium registered")
            && line.contains("column id is int there, long from pgcdc")
            && line.contains("move partition"),
        "{line}"
    );
    drop_debeziums_slot(&h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_publication_is_refused() {
    // pgcdc would create its own publication after the changes it must send: PostgreSQL 18
    // decodes them without it (dropped), older ones fail. Refused, naming the setting.
    let h = debezium_was_here("tkpub").await;
    h.sql(&format!("DROP PUBLICATION {}", publication(&h)))
        .await;
    let lsn = current_lsn(&h).await;
    let line = refused(&h, &["--lsn", &lsn]).await;
    assert!(
        line.contains(&format!("publication {} does not exist", publication(&h)))
            && line.contains("publication.name"),
        "{line}"
    );
    drop_debeziums_slot(&h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_debezium_refuses_at_start_and_writes_nothing() {
    // The offsets topic holds no offsets for this topic prefix: the first start stops with
    // the takeover's refusal (permanent), no checkpoint, the slot where it was.
    let h = debezium_was_here("tksetref").await;
    connect_offset(&h, json!({"lsn": 1, "lsn_proc": 1, "lsn_commit": 1})).await;
    let extra = format!(
        "from_debezium:\n  offsets_topic: {}\n",
        connect_offsets_topic(&h)
    );
    let mut other = h.clone();
    other.prefix = format!("{}x", h.prefix);
    let e = other
        .run_once_expect_error(&on_debeziums(&h, &extra), Duration::from_secs(60))
        .await;
    let msg = e.to_string();
    assert_eq!(e.code().as_str(), "takeover", "{msg}");
    assert!(!e.is_transient(), "{msg}");
    assert!(
        msg.contains("holds no Debezium offsets for topic.prefix") && msg.contains("topic_prefix"),
        "{msg}"
    );
    let (daemon, _) = h.configs("");
    assert!(pgcdc::kafka::offsets::read_last(&daemon.kafka, &h.name)
        .unwrap()
        .is_none());
    drop_debeziums_slot(&h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_column_debezium_typed_otherwise_is_refused() {
    // Debezium with time.precision.mode: connect wrote `at` as milliseconds in a long;
    // pgcdc writes microseconds in a long. Under compatibility NONE (or BACKWARD, for a
    // long after a long) the registry takes either: the takeover must not.
    let h = debezium_was_here("tkmeaning").await;
    h.sql("ALTER TABLE t ADD COLUMN at timestamp").await;
    let subject = format!("{}-value", h.topic("t"));
    let ms = json!({"type": "long", "connect.version": 1, "logicalType": "timestamp-millis",
        "connect.name": "org.apache.kafka.connect.data.Timestamp"});
    let schema = json!({"type": "record", "name": "Envelope", "namespace": h.topic("t"),
        "connect.name": format!("{}.Envelope", h.topic("t")),
        "fields": [{"name": "before", "default": null, "type": ["null", {"type": "record", "name": "Value",
            "fields": [{"name": "id", "type": "int"}, {"name": "v", "type": "string"},
                       {"name": "at", "default": null, "type": ["null", ms]}]}]},
            {"name": "after", "default": null, "type": ["null", "Value"]},
            {"name": "op", "type": "string"}]});
    let client = reqwest::Client::new();
    let r = client
        .post(format!(
            "{}/subjects/{subject}/versions",
            h.stack.registry_url
        ))
        .header("Content-Type", "application/vnd.schemaregistry.v1+json")
        .json(&json!({"schema": schema.to_string()}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let r = client
        .put(format!("{}/config/{subject}", h.stack.registry_url))
        .json(&json!({"compatibility": "NONE"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let lsn = current_lsn(&h).await;
    let line = refused(&h, &["--lsn", &lsn]).await;
    assert!(
        line.contains(&format!("subject {subject}"))
            && line.contains("column at is long logicalType timestamp-millis")
            && line.contains("io.debezium.time.MicroTimestamp")
            && line.contains("time.precision.mode"),
        "{line}"
    );
    drop_debeziums_slot(&h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_of_a_multi_row_insert_at_debeziums_position_are_all_sent() {
    // COPY writes one WAL record for several rows: their changes share one LSN. Debezium's
    // offset cannot say how many of them it sent, so pgcdc sends them all again (its own
    // WalPositionLocator skips every change at that LSN: rows 11 and 12 would be lost).
    let h = debezium_was_here("tkmulti").await;
    h.sql("INSERT INTO t VALUES (1, 'a')").await;
    h.sql(
        "BEGIN; COPY t FROM PROGRAM 'printf \"10\\tb10\\n11\\tb11\\n12\\tb12\\n\"'; \
         INSERT INTO t VALUES (13, 'b13'); COMMIT;",
    )
    .await;
    let m = messages_with_xid(&h).await;
    let a_end = m.iter().find(|x| x.1 == 'C').unwrap().0;
    let inserts: Vec<&(u64, char, i64)> = m.iter().filter(|x| x.1 == 'I').skip(1).collect();
    assert_eq!(inserts.len(), 4, "{m:?}");
    assert!(
        inserts[0].0 == inserts[2].0 && inserts[2].0 < inserts[3].0,
        "COPY's rows share one LSN: {m:?}"
    );
    // Debezium sent row 10 (at the shared LSN) and stopped.
    let (at, xid) = (inserts[0].0, inserts[0].2);
    connect_offset(
        &h,
        json!({"lsn_proc": at, "messageType": "INSERT", "lsn": at, "txId": xid,
               "ts_usec": 1, "lsn_commit": a_end}),
    )
    .await;
    let (code, out) = takeover(&h, "", &["--offsets-topic", &connect_offsets_topic(&h)]);
    assert_eq!(code, Some(0), "{out}");
    let run = h.start_on(&on_debeziums(&h, ""), &slot(&h)).await;
    let got = h.read("t", 4, Duration::from_secs(60)).await;
    assert_eq!(ids(&got), vec![10, 11, 12, 13], "{got:#?}");
    run.stop().await.unwrap();
    drop_debeziums_slot(&h).await;
}
