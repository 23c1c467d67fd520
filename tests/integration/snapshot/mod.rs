//! Snapshots against the real servers: a million-row initial snapshot under concurrent
//! writes, a crash in the middle of one, an incremental snapshot during heavy updates, and
//! the snapshot modes. The check that matters for a consumer: after everything is
//! delivered, the newest event of every key equals the table, and no row is read twice.
//! The helpers are here; [`initial`] and [`incremental`] hold the tests.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use apache_avro::types::Value;
use pgcdc::checkpoint::progress::SnapshotState;
use rdkafka::Message;

use crate::common::Stack;
use crate::harness::Harness;

mod incremental;
mod initial;

/// What the test keeps of each key: the newest row image (None after a delete) and how
/// many `op: r` events and events in all it got.
#[derive(Default)]
pub(super) struct Seen {
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
pub(super) fn field<'a>(v: &'a Value, name: &str) -> &'a Value {
    let Value::Record(fields) = v else {
        panic!("not a record: {v:?}")
    };
    match fields.iter().find(|(n, _)| n == name) {
        Some((_, Value::Union(_, inner))) => inner,
        Some((_, v)) => v,
        None => panic!("no field {name} in {v:?}"),
    }
}

pub(super) fn string(v: &Value) -> &str {
    match v {
        Value::String(s) | Value::Enum(_, s) => s,
        Value::Null => "",
        other => panic!("not a string: {other:?}"),
    }
}

/// Consumes `topic` with read_committed from the beginning to its current end.
pub(super) async fn consume_to_end(stack: &Stack, topic: &str) -> Seen {
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
pub(super) async fn table_state(h: &Harness, table: &str) -> HashMap<i64, (i64, String)> {
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
pub(super) fn assert_latest_equals_table(seen: &Seen, table: &HashMap<i64, (i64, String)>) {
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

pub(super) fn assert_no_row_read_twice(seen: &Seen) {
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
pub(super) async fn writer(
    h: &Harness,
    table: &str,
    max_id: i64,
    stop: Arc<AtomicBool>,
    ops: Arc<AtomicU64>,
) {
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
pub(super) fn table_sql(table: &str, rows: i64) -> String {
    format!(
        "CREATE TABLE {table} (id bigint PRIMARY KEY, v int NOT NULL, t text);
         INSERT INTO {table} SELECT g, 0, 'r' || g FROM generate_series(1, {rows}) g;
         ANALYZE {table};"
    )
}

/// Starts [`writer`] on its own connection; returns its stop flag, op counter and task.
pub(super) fn spawn_writer(
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

pub(super) async fn current_lsn(h: &Harness) -> String {
    let c = h.client().await;
    c.query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap()
        .get(0)
}

/// Bytes of WAL written since the slot's last acknowledgement (0 before the slot exists).
pub(super) async fn slot_lag(c: &tokio_postgres::Client, slot: &str) -> i64 {
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
pub(super) async fn wait_flushed(h: &Harness, lsn: &str, timeout: Duration) {
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
pub(super) async fn checkpoint_state(h: &Harness) -> Option<SnapshotState> {
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

pub(super) async fn wait_checkpoint(
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

pub(super) fn initial_rows(s: &SnapshotState) -> u64 {
    s.initial.iter().flatten().map(|t| t.rows).sum()
}
