//! Incremental snapshots with DBLog watermarks
//! (<https://arxiv.org/abs/2010.12597>), run beside the stream without pausing it.
//!
//! For one chunk at a time:
//! 1. the driver writes a low watermark (a transactional logical message), reads the chunk
//!    (`… WHERE key > last ORDER BY key LIMIT n`) in its own statement, parks the rows, and
//!    writes a high watermark;
//! 2. the reader, seeing the low watermark in the stream, starts noting the keys of that
//!    table's changes; seeing the high one, it drops the noted keys from the chunk (their
//!    streamed change is at least as new as the chunk's copy and was already emitted) and
//!    emits the rest as `op: r` at the high watermark's position, in the same Kafka
//!    transaction as the chunk's progress.
//!
//! A row changed after the high watermark is emitted after the chunk, so the newest event
//! of every key is its newest state: no stale overwrite. Watermarks carry a per-run id; the
//! ones a crashed run left in the WAL are ignored when replayed.
//!
//! One race the watermarks alone do not close: a transaction's commit record can be in the
//! WAL before the low watermark while the transaction is still finishing (not yet visible
//! to new snapshots) when the chunk is read. The chunk then misses its change, yet the
//! stream delivered it before the window opened. So the chunk is read in a snapshot whose
//! `txid_current_snapshot()` comes with it, the reader remembers the keys every transaction
//! changed in the table being snapshotted (until they are older than a chunk snapshot's
//! xmin), and a key changed by any transaction the chunk's snapshot misses is dropped too.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::checkpoint::progress::{Advanced, ChunkDone, Kind, SnapshotState, TableWork};
use crate::decode::{Relation, Tuple, TupleData};
use crate::error::{Code, Error, Result};
use crate::postgres::snapshot::{key_of, Key, KeyRange, SnapshotConn, TxSnapshot};
use crate::snapshot::initial::SnapTable;

/// Chunks read (with the snapshot they were read in) and waiting for their high
/// watermark, by watermark id.
pub type ChunkBox = Arc<Mutex<HashMap<String, (Vec<Tuple>, TxSnapshot)>>>;

pub struct ChunkRequest {
    pub id: String,
    pub table: SnapTable,
    pub range: KeyRange,
    pub limit: u64,
}

/// The content of a watermark message.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Watermark {
    pub connector: String,
    pub id: String,
    pub kind: WatermarkKind,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum WatermarkKind {
    Low,
    High,
}

/// Reads requested chunks between watermarks, one at a time.
pub async fn driver(
    conn: SnapshotConn,
    connector: String,
    mut requests: mpsc::Receiver<ChunkRequest>,
    chunks: ChunkBox,
) -> Result<()> {
    while let Some(req) = requests.recv().await {
        let mark = |kind| {
            serde_json::to_string(&Watermark {
                connector: connector.clone(),
                id: req.id.clone(),
                kind,
            })
            .unwrap_or_default()
        };
        conn.watermark(&mark(WatermarkKind::Low)).await?;
        let read = conn
            .read_with_snapshot(&req.table.st, &req.range, Some(req.limit))
            .await?;
        chunks
            .lock()
            .map_err(|_| Error::permanent(Code::Snapshot, "snapshot chunk store poisoned"))?
            .insert(req.id.clone(), read);
        conn.watermark(&mark(WatermarkKind::High)).await?;
    }
    Ok(())
}

/// The chunk whose window is open or about to open.
struct InFlight {
    id: String,
    table: String,
    limit: u64,
    /// The low watermark has been seen.
    open: bool,
    changed: HashSet<Key>,
    /// The table was truncated inside the window: nothing of the chunk survives.
    truncated: bool,
}

/// A chunk whose window closed: what of it the stream did not overtake, to be emitted as
/// reads at the high watermark, in the Kafka transaction that records its progress.
pub struct ClosedChunk {
    pub table: SnapTable,
    pub rows: Vec<Tuple>,
    /// The progress once the rows are written, for the sink to record with them.
    pub progress: Advanced,
    /// The chunk was short: the table is done.
    pub finished: bool,
    /// The work is the rest of an interrupted initial snapshot (`snapshot: true`), not an
    /// incremental one (`snapshot: incremental`).
    pub initial: bool,
}

/// The reader's side of incremental snapshots: the snapshot progress (the one writer of it
/// while streaming), the chunk in flight and its window, the keys the stream changed.
#[derive(Default)]
pub struct Incremental {
    /// The progress once the chunks handed to the sink are written; each chunk carries a
    /// copy of it to the sink. Its `pending` ranges come first one next.
    progress: SnapshotState,
    tables: HashMap<String, SnapTable>,
    requests: Option<mpsc::Sender<ChunkRequest>>,
    chunks: ChunkBox,
    /// The server sends logical decoding messages (PostgreSQL 14+).
    messages: bool,
    in_flight: Option<InFlight>,
    /// Keys changed in the table at the head of `pending`, with the changing transaction's
    /// xid, kept until a chunk snapshot shows the transaction settled.
    recent: Vec<(u32, Key)>,
    run: String,
    seq: u64,
}

impl Incremental {
    /// Connects the reader to the stream's chunk driver.
    pub fn attach(
        &mut self,
        requests: mpsc::Sender<ChunkRequest>,
        chunks: ChunkBox,
        messages: bool,
    ) {
        self.requests = Some(requests);
        self.chunks = chunks;
        self.messages = messages;
    }

    /// The progress to go on with: what a checkpoint left (pending ranges first one next),
    /// or what the initial snapshot ended with.
    pub fn resume(&mut self, state: SnapshotState) {
        self.progress = state;
    }

    /// Work a signal asked for, after what is pending: the state for the sink to record.
    pub fn add(&mut self, work: Vec<TableWork>) -> Box<SnapshotState> {
        self.progress.add(work);
        Box::new(self.progress.clone())
    }

    /// The work of the next chunk to read, when none is in flight.
    pub fn next_work(&self) -> Option<&TableWork> {
        if self.in_flight.is_some() {
            return None;
        }
        self.progress.pending.first()
    }

    /// Whether the server sends the logical decoding messages watermarks need.
    pub fn has_messages(&self) -> bool {
        self.messages
    }

    pub fn table(&self, name: &str) -> Option<&SnapTable> {
        self.tables.get(name)
    }

    pub fn keep_table(&mut self, name: &str, t: SnapTable) {
        self.tables.insert(name.to_owned(), t);
    }

    /// Drops a cached table (its shape changed).
    pub fn forget_table(&mut self, name: &str) {
        self.tables.remove(name);
    }

    /// Puts the next chunk of `w` in flight and asks the driver to read it between
    /// watermarks.
    pub fn request(&mut self, t: SnapTable, w: &TableWork, limit: u64) -> Result<()> {
        let id = self.next_id();
        self.in_flight = Some(InFlight {
            id: id.clone(),
            table: w.table.clone(),
            limit,
            open: false,
            changed: HashSet::new(),
            truncated: false,
        });
        let req = ChunkRequest {
            id,
            table: t,
            range: w.range.clone(),
            limit,
        };
        match &self.requests {
            Some(r) => r
                .try_send(req)
                .map_err(|_| Error::transient(Code::Snapshot, "the snapshot reader stopped")),
            None => Ok(()),
        }
    }

    /// A watermark of this connector in the stream. The low one opens the chunk's window;
    /// the high one closes it and returns what of the chunk the stream did not overtake,
    /// and the mirror advances as the sink will once the chunk is written. Watermarks a
    /// crashed run left in the WAL match no chunk and are ignored.
    pub fn watermark(&mut self, w: &Watermark) -> Result<Option<ClosedChunk>> {
        let Some(f) = self.in_flight.as_mut().filter(|f| f.id == w.id) else {
            return Ok(None);
        };
        if w.kind == WatermarkKind::Low {
            f.open = true;
            return Ok(None);
        }
        let Some(f) = self.in_flight.take() else {
            return Ok(None);
        };
        let (rows, snap) = self
            .chunks
            .lock()
            .map_err(|_| Error::permanent(Code::Snapshot, "snapshot chunk store poisoned"))?
            .remove(&f.id)
            .ok_or_else(|| {
                Error::permanent(
                    Code::PostgresProtocol,
                    format!(
                        "incremental snapshot of {}: high watermark before its chunk was read",
                        f.table
                    ),
                )
            })?;
        // Cached when the chunk was requested, and rebuilt at once on a schema change.
        let t = self.tables.get(&f.table).cloned().ok_or_else(|| {
            Error::permanent(
                Code::Internal,
                format!(
                    "incremental snapshot: table {} vanished from the cache",
                    f.table
                ),
            )
        })?;
        let last = rows.last().and_then(|r| key_of(&t.st, &t.positions, r));
        let finished = (rows.len() as u64) < f.limit;
        let overtaken = self.overtaken(&f, &snap);
        let rows: Vec<Tuple> = if f.truncated {
            Vec::new()
        } else {
            rows.into_iter()
                .filter(|r| key_of(&t.st, &t.positions, r).is_none_or(|k| !overtaken.contains(&k)))
                .collect()
        };
        let initial = self.progress.pending.first().map(|w| w.kind) == Some(Kind::Initial);
        let done = ChunkDone::Work {
            last,
            rows: rows.len() as u64,
            finished,
        };
        let progress = self.progress.advance(&done);
        if finished {
            self.recent.clear();
        }
        Ok(Some(ClosedChunk {
            table: t,
            rows,
            progress,
            finished,
            initial,
        }))
    }

    fn next_id(&mut self) -> String {
        if self.run.is_empty() {
            self.run = format!("{:x}-{:x}", std::process::id(), crate::clock::now_micros());
        }
        self.seq += 1;
        format!("{}-{}", self.run, self.seq)
    }

    /// Notes the keys of a streamed change by transaction `xid` to `rel` when `rel` is being
    /// snapshotted.
    pub fn note_change(&mut self, rel: &Relation, xid: u32, tuples: &[&Tuple]) {
        let Some(head) = self.progress.pending.first() else {
            return;
        };
        let name = rel.qualified_name();
        if head.table != name {
            return;
        }
        let Some(t) = self.tables.get(&name) else {
            return;
        };
        let window = self
            .in_flight
            .as_mut()
            .filter(|f| f.open && f.table == name);
        let keys: Vec<Key> = tuples
            .iter()
            .filter_map(|tuple| stream_key(rel, &t.st.pk, tuple))
            .collect();
        if let Some(f) = window {
            f.changed.extend(keys.iter().cloned());
        }
        self.recent.extend(keys.into_iter().map(|k| (xid, k)));
    }

    /// Keys the chunk read in `snap` must leave to the stream: changed inside the window,
    /// or by a transaction the snapshot misses. Forgets what the snapshot shows settled.
    fn overtaken(&mut self, f: &InFlight, snap: &TxSnapshot) -> HashSet<Key> {
        let mut out = f.changed.clone();
        for (xid, k) in &self.recent {
            if snap.misses(*xid) {
                out.insert(k.clone());
            }
        }
        self.recent.retain(|(xid, _)| !snap.settled(*xid));
        out
    }

    pub fn note_truncate(&mut self, rel: &Relation) {
        if let Some(f) = self.in_flight.as_mut().filter(|f| f.open) {
            if f.table == rel.qualified_name() {
                f.truncated = true;
            }
        }
    }
}

/// The primary key of a streamed row, found by column name (the stream's relation may
/// order columns differently from the snapshot's after a schema change).
fn stream_key(rel: &Relation, pk: &[(String, String)], tuple: &Tuple) -> Option<Key> {
    pk.iter()
        .map(|(name, _)| {
            let i = rel.columns.iter().position(|c| &c.name == name)?;
            match tuple.get(i)? {
                TupleData::Text(b) => Some(String::from_utf8_lossy(b).into_owned()),
                _ => None,
            }
        })
        .collect()
}

/// A Debezium `execute-snapshot` signal's `data`.
#[derive(Debug, Deserialize)]
struct SignalData {
    #[serde(rename = "data-collections")]
    data_collections: Vec<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

/// Parses a signal row; returns the tables to snapshot, or None for a signal type pgcdc
/// does not act on.
pub fn parse_signal(
    kind: &str,
    data: Option<&str>,
) -> std::result::Result<Option<Vec<String>>, String> {
    if kind != "execute-snapshot" {
        return Ok(None);
    }
    let data = data.ok_or("execute-snapshot signal without data")?;
    let d: SignalData = serde_json::from_str(data)
        .map_err(|e| format!("data is not {{\"data-collections\": [...]}}: {e}"))?;
    if let Some(k) = &d.kind {
        if !k.eq_ignore_ascii_case("incremental") {
            return Err(format!(
                "snapshot type {k:?} is not supported; use \"incremental\""
            ));
        }
    }
    if d.data_collections.is_empty() {
        return Err("data-collections is empty".into());
    }
    Ok(Some(d.data_collections))
}

/// Watermark-driven work for a whole table.
pub fn whole_table(table: &str, estimate: u64) -> TableWork {
    TableWork {
        table: table.to_string(),
        kind: Kind::Incremental,
        range: KeyRange::ALL,
        rows: 0,
        estimate,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_like_debezium() {
        assert_eq!(
            parse_signal(
                "execute-snapshot",
                Some(r#"{"data-collections": ["public.a", "public.b"], "type": "incremental"}"#)
            )
            .unwrap(),
            Some(vec!["public.a".to_string(), "public.b".to_string()])
        );
        assert_eq!(parse_signal("log", Some("{}")).unwrap(), None);
        assert!(parse_signal("execute-snapshot", Some(r#"{"data-collections": []}"#)).is_err());
        assert!(parse_signal(
            "execute-snapshot",
            Some(r#"{"data-collections": ["public.a"], "type": "blocking"}"#)
        )
        .is_err());
        assert!(parse_signal("execute-snapshot", None).is_err());
    }

    #[test]
    fn watermarks_round_trip() {
        let w = Watermark {
            connector: "c".into(),
            id: "1-2-3".into(),
            kind: WatermarkKind::High,
        };
        let j = serde_json::to_string(&w).unwrap();
        assert!(j.contains(r#""kind":"high""#));
        assert_eq!(serde_json::from_str::<Watermark>(&j).unwrap(), w);
    }

    fn table() -> (Relation, SnapTable) {
        use crate::decode::Column;
        let col = |n: &str, key: bool| Column::test(n, crate::typemap::PgType::Int4, key);
        let rel = Relation {
            oid: 7,
            schema: "public".into(),
            table: "t".into(),
            replica_identity: b'd',
            columns: vec![col("id", true), col("v", false)],
        };
        let st = crate::postgres::catalog::SnapshotTable {
            relation: rel.clone(),
            pk: vec![("id".into(), "integer".into())],
            estimate: None,
        };
        let codec = crate::avro::envelope::tests::codec(rel.clone());
        (rel, SnapTable::new(st, codec).unwrap())
    }

    fn row(id: &str) -> Tuple {
        vec![
            TupleData::Text(bytes::Bytes::from(id.to_owned())),
            TupleData::Text(bytes::Bytes::from_static(b"x")),
        ]
    }

    /// The DBLog window without a server: keys the stream changed inside the window, or in
    /// a transaction the chunk's snapshot misses, leave the chunk; the rest is emitted and
    /// the next chunk starts after the chunk's last key.
    #[test]
    fn the_window_drops_what_the_stream_overtook_and_advances() {
        let (rel, t) = table();
        let (tx, mut rx) = mpsc::channel(1);
        let chunks: ChunkBox = Arc::default();
        let mut inc = Incremental::default();
        inc.attach(tx, chunks.clone(), true);
        inc.resume(SnapshotState {
            pending: vec![whole_table("public.t", 0)],
            ..SnapshotState::default()
        });
        inc.keep_table("public.t", t.clone());

        let w = inc.next_work().cloned().unwrap();
        inc.request(t, &w, 3).unwrap();
        assert!(inc.next_work().is_none(), "one chunk in flight at a time");
        let req = rx.try_recv().unwrap();
        let mark = |kind| Watermark {
            connector: "c".into(),
            id: req.id.clone(),
            kind,
        };

        // Before the window: transaction 5 changes key 2 and is still running when the
        // chunk is read (its xid is in the chunk snapshot's xip).
        inc.note_change(&rel, 5, &[&row("2")]);
        assert!(inc.watermark(&mark(WatermarkKind::Low)).unwrap().is_none());
        // Inside the window: key 1 changes.
        inc.note_change(&rel, 7, &[&row("1")]);
        let snap = TxSnapshot {
            xmin: 5,
            xmax: 8,
            xip: vec![5],
        };
        chunks
            .lock()
            .unwrap()
            .insert(req.id.clone(), (vec![row("1"), row("2"), row("3")], snap));
        // A watermark another run left in the WAL matches nothing.
        let stale = Watermark {
            connector: "c".into(),
            id: "old-1".into(),
            kind: WatermarkKind::High,
        };
        assert!(inc.watermark(&stale).unwrap().is_none());

        let c = inc.watermark(&mark(WatermarkKind::High)).unwrap().unwrap();
        let ids: Vec<Key> = c
            .rows
            .iter()
            .filter_map(|r| key_of(&c.table.st, &c.table.positions, r))
            .collect();
        assert_eq!(ids, vec![vec!["3".to_string()]]);
        // The state handed over with the rows is the reader's own after the chunk.
        let handed = &c.progress.state.pending[0];
        assert_eq!(handed.range.after, Some(vec!["3".to_string()]));
        assert_eq!(handed.rows, 1);
        assert_eq!(c.progress.finished, None);
        assert!(!c.finished, "a full chunk: the table has more rows");
        assert!(!c.initial);
        let next = inc.next_work().unwrap();
        assert_eq!(next.range.after, Some(vec!["3".to_string()]));
    }
}
