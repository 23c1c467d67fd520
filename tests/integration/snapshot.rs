//! Snapshots against the real servers: a million-row initial snapshot under concurrent
//! writes, a crash in the middle of one, an incremental snapshot during heavy updates, and
//! the snapshot modes. The check that matters for a consumer: after everything is
//! delivered, the newest event of every key equals the table, and no row is read twice.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use apache_avro::types::Value;
use pgcdc::checkpoint::progress::{Kind, SnapshotState};
use rdkafka::Message;

use crate::common::Stack;
use crate::harness::Harness;

/// What the test keeps of each key: the newest row image (None after a delete) and how
/// many `op: r` events and events in all it got.
#[derive(Default)]
struct Seen {
    latest: HashMap<i64, Option<(i64, String)>>,
    reads: HashMap<i64, u32>,
    events: HashMap<i64, u32>,
    marks: HashMap<String, u64>,
}

impl Seen {
    fn add(&mut self, key: &Value, value: Option<&Value>) {
        let Value::Long(id) = *field(key, "id") else {
            panic!("key id: {key:?}")
        };
        let Some(value) = value else {
            return; // tombstone: the delete before it already recorded the key's end
        };
        *self.events.entry(id).or_default() += 1;
        let op = string(field(value, "op"));
        let mark = string(field(field(value, "source"), "snapshot"));
        if op == "r" {
            *self.reads.entry(id).or_default() += 1;
            *self.marks.entry(mark.to_string()).or_default() += 1;
        } else {
            assert_eq!(mark, "false", "{value:?}");
        }
        let after = field(value, "after");
        self.latest.insert(
            id,
            match after {
                Value::Null => None,
                a => Some((
                    match field(a, "v") {
                        Value::Int(v) => i64::from(*v),
                        other => panic!("v: {other:?}"),
                    },
                    string(field(a, "t")).to_string(),
                )),
            },
        );
    }
}

/// A record field, through its `["null", T]` union.
fn field<'a>(v: &'a Value, name: &str) -> &'a Value {
    let Value::Record(fields) = v else {
        panic!("not a record: {v:?}")
    };
    match fields.iter().find(|(n, _)| n == name) {
        Some((_, Value::Union(_, inner))) => inner,
        Some((_, v)) => v,
        None => panic!("no field {name} in {v:?}"),
    }
}

fn string(v: &Value) -> &str {
    match v {
        Value::String(s) | Value::Enum(_, s) => s,
        Value::Null => "",
        other => panic!("not a string: {other:?}"),
    }
}

/// Consumes `topic` with read_committed from the beginning to its current end.
async fn consume_to_end(stack: &Stack, topic: &str) -> Seen {
    use pgcdc::consume::{Reader, Start};
    let reader = Reader::plain(
        &stack.kafka_bootstrap,
        &stack.registry_url,
        "snapreader",
        Start::Beginning,
    )
    .unwrap();
    let ends = reader.assign_to_end(topic).unwrap();
    let mut seen = Seen::default();
    let deadline = Instant::now() + Duration::from_secs(600);
    while !reader.reached(topic, &ends) {
        assert!(Instant::now() < deadline, "reading {topic} took over 600s");
        if let Some(m) = reader.next(Duration::from_millis(200)).await.unwrap() {
            let key = reader.avro_value(m.key().expect("a key")).await.unwrap();
            let value = match m.payload() {
                Some(p) => Some(reader.avro_value(p).await.unwrap()),
                None => None,
            };
            seen.add(&key, value.as_ref());
        }
    }
    seen
}

/// The table as the test compares it: id → (v, t).
async fn table_state(h: &Harness, table: &str) -> HashMap<i64, (i64, String)> {
    let c = h.client().await;
    c.query(
        &format!("SELECT id, v::bigint, coalesce(t, '') FROM {table}"),
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| {
        (
            r.get::<_, i64>(0),
            (r.get::<_, i64>(1), r.get::<_, String>(2)),
        )
    })
    .collect()
}

/// The newest event per key must be the table's row (and a deleted key's newest event a
/// delete).
fn assert_latest_equals_table(seen: &Seen, table: &HashMap<i64, (i64, String)>) {
    let mut wrong = Vec::new();
    for (id, row) in table {
        match seen.latest.get(id) {
            Some(Some(r)) if r == row => {}
            other => wrong.push(format!("id {id}: table {row:?}, newest event {other:?}")),
        }
    }
    for (id, l) in &seen.latest {
        if l.is_some() && !table.contains_key(id) {
            wrong.push(format!("id {id}: deleted, but the newest event is {l:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} keys differ from the table, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(10)]
    );
}

fn assert_no_row_read_twice(seen: &Seen) {
    let twice: Vec<_> = seen
        .reads
        .iter()
        .filter(|(_, n)| **n > 1)
        .take(10)
        .collect();
    assert!(twice.is_empty(), "rows snapshotted twice: {twice:?}");
}

/// Writes until stopped: updates (`v = v + 1`) and deletes of ids divisible by 7 up to
/// `max_id`, and inserts of new ids above it, a few rows per transaction. Ids not divisible
/// by 7 and at most `max_id` are never touched.
async fn writer(h: &Harness, table: &str, max_id: i64, stop: Arc<AtomicBool>, ops: Arc<AtomicU64>) {
    let c = h.client().await;
    let mut i: i64 = 0;
    let mut next_new = max_id + 1;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        // A cheap deterministic spread over the key space.
        let a = ((i * 7919) % (max_id / 7)) * 7 + 7;
        let b = ((i * 104_729) % (max_id / 7)) * 7 + 7;
        let sql = if i % 10 == 0 {
            format!("DELETE FROM {table} WHERE id = {b}")
        } else {
            format!(
                "BEGIN; UPDATE {table} SET v = v + 1, t = 'u' || v WHERE id IN ({a}, {b}); \
                 INSERT INTO {table} VALUES ({next_new}, 1, 'new'); COMMIT;"
            )
        };
        next_new += 1;
        c.batch_execute(&sql).await.unwrap();
        ops.fetch_add(1, Ordering::Relaxed);
        // Steady load a debug build keeps up with (see the incremental test).
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// `table (id bigint PRIMARY KEY, v int, t text)` with ids 1..=rows.
fn table_sql(table: &str, rows: i64) -> String {
    format!(
        "CREATE TABLE {table} (id bigint PRIMARY KEY, v int NOT NULL, t text);
         INSERT INTO {table} SELECT g, 0, 'r' || g FROM generate_series(1, {rows}) g;
         ANALYZE {table};"
    )
}

/// Starts [`writer`] on its own connection; returns its stop flag, op counter and task.
fn spawn_writer(
    h: &Harness,
    table: &'static str,
    max_id: i64,
) -> (Arc<AtomicBool>, Arc<AtomicU64>, tokio::task::JoinHandle<()>) {
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let (h2, stop2, ops2) = (h.clone(), stop.clone(), ops.clone());
    let task = tokio::spawn(async move { writer(&h2, table, max_id, stop2, ops2).await });
    (stop, ops, task)
}

async fn current_lsn(h: &Harness) -> String {
    let c = h.client().await;
    c.query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap()
        .get(0)
}

/// Bytes of WAL written since the slot's last acknowledgement (0 before the slot exists).
async fn slot_lag(c: &tokio_postgres::Client, slot: &str) -> i64 {
    c.query_one(
        "SELECT coalesce((SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::int8 \
           FROM pg_replication_slots WHERE slot_name = $1), 0)",
        &[&slot],
    )
    .await
    .unwrap()
    .get(0)
}

/// Waits until the slot acknowledged `lsn`: everything before it is committed in Kafka.
async fn wait_flushed(h: &Harness, lsn: &str, timeout: Duration) {
    let c = h.stack.pg_connect("postgres").await;
    let deadline = Instant::now() + timeout;
    loop {
        let ok: bool = c
            .query_one(
                "SELECT coalesce(confirmed_flush_lsn >= $2::text::pg_lsn, false) FROM pg_replication_slots WHERE slot_name = $1",
                &[&h.slot(), &lsn],
            )
            .await
            .unwrap()
            .get(0);
        if ok {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "slot {} did not reach {lsn} within {timeout:?}",
            h.slot()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The snapshot state of the newest committed checkpoint (None while there is none, or
/// while the just-created offsets topic has no leader yet).
async fn checkpoint_state(h: &Harness) -> Option<SnapshotState> {
    // Its own file: the connector's files belong to the daemon under test.
    let path = h.dir.join("checkpoint-reader.yaml");
    std::fs::write(&path, h.daemon_yaml()).unwrap();
    let daemon = pgcdc::config::DaemonConfig::load(&path).unwrap();
    let name = h.name.clone();
    tokio::task::spawn_blocking(move || pgcdc::kafka::offsets::read_last(&daemon.kafka, &name))
        .await
        .unwrap()
        .ok()
        .flatten()
        .and_then(|c| c.snapshot)
}

async fn wait_checkpoint(
    h: &Harness,
    what: &str,
    timeout: Duration,
    mut ok: impl FnMut(&SnapshotState) -> bool,
) -> SnapshotState {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = checkpoint_state(h).await {
            if ok(&s) {
                return s;
            }
        }
        assert!(Instant::now() < deadline, "checkpoint never showed {what}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn initial_rows(s: &SnapshotState) -> u64 {
    s.initial.iter().flatten().map(|t| t.rows).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_snapshot_of_a_million_rows_under_concurrent_writes() {
    const ROWS: i64 = 1_000_000;
    let h = Harness::new("snap1m", &table_sql("big", ROWS)).await;
    let extra = "snapshot:\n  workers: 2\n  chunk_rows: 50000\n";
    let (daemon, conn) = h.configs(extra);
    // Writes start before the slot exists and go on through the snapshot and after it.
    let (stop, ops, w) = spawn_writer(&h, "big", ROWS);
    while ops.load(Ordering::Relaxed) < 20 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let run = tokio::spawn(pgcdc::supervisor::run(daemon, vec![conn], stop_rx));
    // The slot streams once the snapshot is read.
    let c = h.stack.pg_connect("postgres").await;
    let deadline = Instant::now() + Duration::from_secs(400);
    let mut during = 0;
    loop {
        let active = c
            .query_opt(
                "SELECT active FROM pg_replication_slots WHERE slot_name = $1",
                &[&h.slot()],
            )
            .await
            .unwrap()
            .is_some_and(|r| r.get::<_, bool>(0));
        if active {
            break;
        }
        if during == 0 {
            during = ops.load(Ordering::Relaxed);
        }
        assert!(!run.is_finished(), "the connector stopped: {:?}", run.await);
        assert!(
            Instant::now() < deadline,
            "the snapshot did not finish in 400s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let at_stream = ops.load(Ordering::Relaxed);
    assert!(
        at_stream > during,
        "writes must run while the snapshot is read ({during} → {at_stream})"
    );
    while ops.load(Ordering::Relaxed) < at_stream + 50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    w.await.unwrap();
    let end = current_lsn(&h).await;
    wait_flushed(&h, &end, Duration::from_secs(120)).await;
    let _ = stop_tx.send(true);
    run.await.unwrap().unwrap();

    let seen = consume_to_end(&h.stack, &h.topic("big")).await;
    let table = table_state(&h, "big").await;
    assert_latest_equals_table(&seen, &table);
    assert_no_row_read_twice(&seen);
    // Rows the writer never touched arrive exactly once, as a read.
    let mut untouched = 0;
    for id in (1..=ROWS).filter(|i| i % 7 != 0) {
        assert_eq!(seen.events.get(&id), Some(&1), "id {id}");
        assert_eq!(seen.reads.get(&id), Some(&1), "id {id}");
        untouched += 1;
    }
    assert_eq!(untouched, 857_143);
    assert_eq!(seen.marks.get("first"), Some(&1), "{:?}", seen.marks);
    assert_eq!(seen.marks.get("last"), Some(&1), "{:?}", seen.marks);
    assert!(seen.reads.len() as i64 > ROWS - (at_stream as i64) * 2);
    let s = checkpoint_state(&h)
        .await
        .expect("snapshot state in the checkpoint");
    assert!(s.initial.is_none() && s.pending.is_empty(), "{s:?}");
    assert_eq!(s.finished["public.big"].rows, seen.reads.len() as u64);
    h.drop_slot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_mid_snapshot_resumes_without_duplicates() {
    const ROWS: i64 = 300_000;
    let h = Harness::new("snapcrash", &table_sql("big", ROWS)).await;
    let extra = "snapshot:\n  workers: 2\n  chunk_rows: 3000\n  incremental_chunk_rows: 5000\n";
    let (daemon_file, conn_file) = h.write_configs(extra);
    let (stop, ops, w) = spawn_writer(&h, "big", ROWS);

    let mut child = h.spawn_daemon(&daemon_file, &conn_file, "run1.log");
    wait_checkpoint(
        &h,
        "initial snapshot progress",
        Duration::from_secs(120),
        |s| initial_rows(s) >= 20_000,
    )
    .await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let cut = checkpoint_state(&h).await.expect("a checkpoint");
    let committed = initial_rows(&cut);
    assert!(
        cut.initial.is_some() && committed < ROWS as u64,
        "the kill must land mid-snapshot: {cut:?}"
    );

    let mut child = h.spawn_daemon(&daemon_file, &conn_file, "run2.log");
    let s = wait_checkpoint(&h, "the snapshot finished", Duration::from_secs(300), |s| {
        s.initial.is_none() && s.pending.is_empty() && s.finished.contains_key("public.big")
    })
    .await;
    assert!(ops.load(Ordering::Relaxed) > 0, "the writer must have run");
    stop.store(true, Ordering::Relaxed);
    w.await.unwrap();
    let end = current_lsn(&h).await;
    wait_flushed(&h, &end, Duration::from_secs(120)).await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();

    let seen = consume_to_end(&h.stack, &h.topic("big")).await;
    let table = table_state(&h, "big").await;
    assert_latest_equals_table(&seen, &table);
    assert_no_row_read_twice(&seen);
    for id in (1..=ROWS).filter(|i| i % 7 != 0) {
        assert_eq!(
            seen.events.get(&id),
            Some(&1),
            "id {id}: lost or duplicated"
        );
    }
    assert_eq!(s.finished["public.big"].kind, Kind::Initial);
    assert_eq!(s.finished["public.big"].rows, seen.reads.len() as u64);
    assert!(
        seen.reads.len() as u64 > committed,
        "the second run must have finished the snapshot"
    );
    h.drop_slot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_snapshot_during_heavy_updates_never_overwrites_newer_changes() {
    const ROWS: i64 = 60_000;
    let h = Harness::new("snapincr", &table_sql("items", ROWS)).await;
    let extra = "snapshot:\n  mode: never\n  incremental_chunk_rows: 1000\nsignal_table: public.pgcdc_signal\n";
    let run = h.start(extra).await;
    // Heavy updates on two connections: every update bumps v, so a stale copy shows.
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for _ in 0..2 {
        let (stop, ops) = (stop.clone(), ops.clone());
        let h2 = h.clone();
        writers.push(tokio::spawn(async move {
            let c = h2.client().await;
            let slot = h2.slot();
            let mut i: i64 = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                // Heavy, yet never further ahead of the slot than a few MB of WAL: a chunk's
                // watermarks travel through the same stream, so a writer that outran a slow
                // machine's stream would stretch the snapshot without end.
                if i % 25 == 0 {
                    while !stop.load(Ordering::Relaxed) && slot_lag(&c, &slot).await > 4 << 20 {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                let a = (i * 7919 + ops.load(Ordering::Relaxed) as i64 * 13) % ROWS + 1;
                c.batch_execute(&format!(
                    "UPDATE items SET v = v + 1, t = 'u' || v WHERE id BETWEEN {a} AND {a} + 4"
                ))
                .await
                .unwrap();
                tokio::time::sleep(Duration::from_millis(2)).await;
                ops.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    while ops.load(Ordering::Relaxed) < 50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The CLI signals, as an operator would.
    let connectors = h.dir.join("connectors");
    std::fs::create_dir_all(&connectors).unwrap();
    std::fs::copy(h.dir.join("connector.yaml"), connectors.join("c.yaml")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgcdc"))
        .arg("--config")
        .arg(h.dir.join("pgcdc.yaml"))
        .arg("snapshot")
        .arg("--connectors-dir")
        .arg(&connectors)
        .arg(&h.name)
        .arg("public.items")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pgcdc snapshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let before = ops.load(Ordering::Relaxed);
    let s = wait_checkpoint(
        &h,
        "the incremental snapshot finished",
        Duration::from_secs(600),
        |s| s.pending.is_empty() && s.finished.contains_key("public.items"),
    )
    .await;
    let after = ops.load(Ordering::Relaxed);
    assert!(
        after > before + 20,
        "updates must run during the snapshot ({before} → {after})"
    );
    assert_eq!(s.finished["public.items"].kind, Kind::Incremental);
    // `pgcdc status` reports it.
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_pgcdc"))
        .arg("--config")
        .arg(h.dir.join("pgcdc.yaml"))
        .arg("status")
        .arg("--connectors-dir")
        .arg(&connectors)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{text}");
    assert!(
        text.contains("snapshot public.items: done,"),
        "pgcdc status:\n{text}"
    );

    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let end = current_lsn(&h).await;
    wait_flushed(&h, &end, Duration::from_secs(120)).await;
    run.stop().await.unwrap();

    let seen = consume_to_end(&h.stack, &h.topic("items")).await;
    let table = table_state(&h, "items").await;
    assert_latest_equals_table(&seen, &table);
    assert_no_row_read_twice(&seen);
    assert_eq!(
        seen.marks.keys().collect::<Vec<_>>(),
        vec!["incremental"],
        "incremental reads are marked so"
    );
    // Rows changed inside a chunk's window came from the stream instead; most were read.
    assert!(
        seen.reads.len() as i64 > ROWS / 2,
        "only {} rows read",
        seen.reads.len()
    );
    assert_eq!(s.finished["public.items"].rows, seen.reads.len() as u64);
    h.drop_slot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_modes_never_initial_only_and_when_needed() {
    let h = Harness::new("snapmodes", &table_sql("big", 500)).await;
    // initial_only: reads the table, stops by itself, leaves no slot.
    let (daemon, conn) = h.configs("snapshot:\n  mode: initial_only\n  chunk_rows: 100\n");
    let (_stop, rx) = tokio::sync::watch::channel(false);
    tokio::time::timeout(
        Duration::from_secs(120),
        pgcdc::pipeline::run(&daemon, &conn, rx),
    )
    .await
    .expect("initial_only must stop by itself")
    .unwrap();
    let c = h.stack.pg_connect("postgres").await;
    let slots = c
        .query(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1",
            &[&h.slot()],
        )
        .await
        .unwrap();
    assert!(slots.is_empty(), "initial_only must not leave a slot");
    let seen = consume_to_end(&h.stack, &h.topic("big")).await;
    assert_eq!(seen.reads.len(), 500);
    assert_no_row_read_twice(&seen);
    // Run again: the snapshot is complete, nothing more is read.
    let (_stop, rx) = tokio::sync::watch::channel(false);
    pgcdc::pipeline::run(&daemon, &conn, rx).await.unwrap();
    assert_eq!(
        consume_to_end(&h.stack, &h.topic("big")).await.reads.len(),
        500
    );

    // when_needed: a checkpoint exists but there is no slot, so it snapshots again, then
    // streams.
    let run = h.start("snapshot:\n  mode: when_needed\n").await;
    h.sql("UPDATE big SET v = 1 WHERE id = 1").await;
    let recs = h.read("big", 1001, Duration::from_secs(60)).await;
    assert_eq!(recs.len(), 1001);
    assert_eq!(recs[1000].value["op"], "u");
    run.stop().await.unwrap();

    // never: a restart with a checkpoint and its slot streams on; nothing is read again.
    let run = h.start("snapshot:\n  mode: never\n").await;
    h.sql("UPDATE big SET v = 2 WHERE id = 1").await;
    let recs = h.read("big", 1002, Duration::from_secs(60)).await;
    assert_eq!(recs.len(), 1002);
    assert_eq!(recs[1001].value["op"], "u");
    run.stop().await.unwrap();
    h.drop_slot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn composite_keys_of_awkward_types_chunk_exactly() {
    // Keys with quotes, backslashes, tabs, newlines, unicode and leading spaces, across a
    // text + timestamptz + numeric primary key, cut into many small chunks: each row must
    // arrive exactly once, both from the initial snapshot and from an incremental one.
    let h = Harness::new(
        "snapkeys",
        r#"CREATE TABLE odd (name text, at timestamptz, n numeric, v int NOT NULL,
                             PRIMARY KEY (name, at, n));
           INSERT INTO odd
           SELECT (ARRAY[E'it''s', E'back\\slash', E'tab\there', E'new\nline', 'ünï', ' lead', '"q"', ''])[1 + g % 8] || (g / 8),
                  '2026-03-29 00:30:00+00'::timestamptz + (g % 5) * interval '1 hour 0.000001 second',
                  (g % 3)::numeric / 7,
                  g
             FROM generate_series(1, 240) g;"#,
    )
    .await;
    let extra = "snapshot:\n  workers: 3\n  chunk_rows: 7\n  incremental_chunk_rows: 11\nsignal_table: public.pgcdc_signal\n";
    let run = h.start(extra).await;
    let recs = h.read("odd", 240, Duration::from_secs(60)).await;
    assert_eq!(recs.len(), 240, "each row once");
    let mut vs: Vec<i64> = recs
        .iter()
        .map(|r| {
            assert_eq!(r.value["op"], "r");
            r.value["after"]["v"].as_i64().unwrap()
        })
        .collect();
    vs.sort_unstable();
    assert_eq!(vs, (1..=240).collect::<Vec<_>>());

    // The same keys through an incremental snapshot (keyset pages with LIMIT).
    let (_, conn) = h.configs(extra);
    pgcdc::admin::signal_snapshot(&conn, &["public.odd".to_string()])
        .await
        .unwrap();
    let recs = h.read("odd", 480, Duration::from_secs(60)).await;
    assert_eq!(recs.len(), 480, "each row once more");
    let mut vs: Vec<i64> = recs[240..]
        .iter()
        .map(|r| {
            assert_eq!(r.value["source"]["snapshot"], "incremental");
            r.value["after"]["v"].as_i64().unwrap()
        })
        .collect();
    vs.sort_unstable();
    assert_eq!(vs, (1..=240).collect::<Vec<_>>());
    run.stop().await.unwrap();
    h.drop_slot().await;
}
