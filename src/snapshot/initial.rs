//! The initial snapshot: primary-key chunks read by parallel workers inside one exported
//! snapshot, each chunk handed to the sink whole so that its rows and its completion land
//! in the same Kafka transaction.
//!
//! Chunks of all tables sit in one queue in table order, so workers spread across tables
//! and within a large one alike. A semaphore bounds the chunks read but not yet written
//! to Kafka, so memory stays flat when Kafka is slower than PostgreSQL.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::avro::envelope::{ChangeContext, EventKey, Op, Origin, SnapshotMark, TableCodec};
use crate::avro::policy::Marks as ValueMarks;
use crate::checkpoint::progress::{ChunkDone, SnapshotState, TableProgress};
use crate::clock::now_micros;
use crate::config::PostgresConfig;
use crate::decode::Tuple;
use crate::error::{Code, Error, Result};
use crate::kafka::sink::{Record, SinkMsg, SinkTx};
use crate::postgres::catalog::SnapshotTable;
use crate::postgres::snapshot::{key_of, pk_positions, KeyRange, SnapshotConn};
use crate::Lsn;

/// A captured table with its codec.
#[derive(Clone)]
pub struct SnapTable {
    pub st: Arc<SnapshotTable>,
    pub codec: Arc<TableCodec>,
    /// Positions of the primary-key columns in the row.
    pub positions: Arc<Vec<usize>>,
}

impl SnapTable {
    pub fn new(st: SnapshotTable, codec: Arc<TableCodec>) -> Result<Self> {
        let positions = pk_positions(&st)?;
        Ok(SnapTable {
            st: Arc::new(st),
            codec,
            positions: Arc::new(positions),
        })
    }

    pub fn name(&self) -> String {
        self.st.relation.qualified_name()
    }
}

struct Task {
    table: usize,
    idx: usize,
    range: KeyRange,
    first: bool,
    last: bool,
}

/// Where the rows come from, for their `source` block.
#[derive(Clone, Copy)]
pub struct Position {
    pub lsn: Lsn,
    pub xid: u32,
    pub ts_us: i64,
}

/// A planned initial snapshot: the chunks, and the progress record the sink starts from.
pub struct Plan {
    tables: Vec<SnapTable>,
    tasks: VecDeque<Task>,
    pub progress: Vec<TableProgress>,
    pub position: Position,
}

impl Plan {
    /// The snapshot state the sink starts from: every chunk still to do.
    pub fn state(&self) -> SnapshotState {
        SnapshotState {
            initial: Some(self.progress.clone()),
            ..Default::default()
        }
    }
}

/// Cuts every table into chunks of `chunk_rows` keys, inside the exported snapshot `name`.
pub async fn plan(
    pg: &PostgresConfig,
    app: &str,
    name: &str,
    lsn: Lsn,
    chunk_rows: u64,
    tables: Vec<SnapTable>,
) -> Result<Plan> {
    let conn = SnapshotConn::connect(pg, app).await?;
    conn.begin_in(name).await?;
    let xid = conn.snapshot_xmin().await?;
    let mut tasks = VecDeque::new();
    let mut progress = Vec::new();
    let started = Instant::now();
    for (ti, t) in tables.iter().enumerate() {
        let bounds = conn.boundaries(&t.st, chunk_rows).await?;
        let chunks = bounds.len() + 1;
        for idx in 0..chunks {
            tasks.push_back(Task {
                table: ti,
                idx,
                range: KeyRange {
                    after: idx.checked_sub(1).and_then(|i| bounds.get(i).cloned()),
                    until: bounds.get(idx).cloned(),
                },
                first: idx == 0,
                last: idx + 1 == chunks,
            });
        }
        // Boundaries count rows to within one chunk; the planner's estimate fills in for
        // small tables and tables without a key.
        let estimate = (bounds.len() as u64 * chunk_rows).max(t.st.estimate.unwrap_or(0));
        progress.push(TableProgress {
            table: t.name(),
            chunks,
            done: Vec::new(),
            rows: 0,
            estimate,
        });
        tracing::info!(table = %t.name(), chunks, estimate, "snapshot planned");
    }
    conn.commit().await?;
    tracing::info!(
        tables = tables.len(),
        chunks = tasks.len(),
        plan_ms = started.elapsed().as_millis() as u64,
        "initial snapshot planned"
    );
    Ok(Plan {
        tables,
        tasks,
        progress,
        position: Position {
            lsn,
            xid,
            ts_us: now_micros(),
        },
    })
}

/// Reads every chunk of `plan` with `workers` connections in the exported snapshot `name`
/// and hands them to the sink, each with the snapshot progress after it. Returns the number
/// of rows read and the progress at the end (every table finished).
pub(crate) async fn run(
    pg: &PostgresConfig,
    app: &str,
    name: &str,
    workers: usize,
    plan: Plan,
    origin: Arc<Origin>,
    tx: SinkTx,
) -> Result<(u64, SnapshotState)> {
    // Chunks finish out of order: a worker applies its chunk and hands the state to the
    // sink under this lock, so the sink gets them in the order it writes them.
    let progress = Arc::new(tokio::sync::Mutex::new(plan.state()));
    let Plan {
        tables,
        tasks,
        position,
        ..
    } = plan;
    let n_tables = tables.len();
    let tables = Arc::new(tables);
    let queue = Arc::new(Mutex::new(tasks));
    let in_flight = Arc::new(Semaphore::new(workers * 2));
    let mut set = JoinSet::new();
    // Every worker joins the snapshot before any of them starts reading: the exporting
    // connection must stay idle until all have.
    for _ in 0..workers.max(1) {
        let conn = SnapshotConn::connect(pg, app).await?;
        conn.begin_in(name).await?;
        let (tables, queue, in_flight, origin, tx, progress) = (
            tables.clone(),
            queue.clone(),
            in_flight.clone(),
            origin.clone(),
            tx.clone(),
            progress.clone(),
        );
        set.spawn(async move {
            let mut total = 0u64;
            loop {
                let task = match queue.lock() {
                    Ok(mut q) => q.pop_front(),
                    Err(_) => None,
                };
                let Some(task) = task else { break };
                let permit = in_flight
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| Error::transient(Code::Snapshot, "snapshot stopped"))?;
                let t = &tables[task.table];
                let rows = conn.read(&t.st, &task.range, None).await?;
                let marks = Marks {
                    first_table: task.table == 0,
                    last_table: task.table + 1 == n_tables,
                    first_chunk: task.first,
                    last_chunk: task.last,
                };
                let records = encode_reads(t, &rows, &origin, position, |i, n| marks.at(i, n))?;
                let n = rows.len() as u64;
                total += n;
                crate::metrics::count_snapshot_rows(
                    &t.codec.policy.connector,
                    &t.codec.rel.qualified_name(),
                    n,
                );
                let mut state = progress.lock().await;
                let advanced = state.advance(&ChunkDone::Initial {
                    table: task.table,
                    idx: task.idx,
                    range: task.range,
                    rows: n,
                });
                tx.send(SinkMsg::Chunk {
                    records,
                    progress: advanced,
                    permit: Some(permit),
                })
                .await
                .map_err(|_| Error::transient(Code::SinkStopped, "the Kafka sink stopped"))?;
                drop(state);
            }
            conn.commit().await?;
            Ok::<u64, Error>(total)
        });
    }
    let mut total = 0;
    while let Some(r) = set.join_next().await {
        match r {
            Ok(Ok(n)) => total += n,
            Ok(Err(e)) => return Err(e),
            Err(e) => {
                return Err(Error::permanent(
                    Code::Snapshot,
                    format!("snapshot worker failed: {e}"),
                ))
            }
        }
    }
    let state = progress.lock().await.clone();
    Ok((total, state))
}

/// Reads the pending ranges of `state` page by page outside any snapshot (`initial_only`
/// resuming after a crash: there is no stream to reconcile with, and committed ranges are
/// not read again).
pub(crate) async fn run_paged(
    pg: &PostgresConfig,
    app: &str,
    page_rows: u64,
    mut state: SnapshotState,
    tables: &[SnapTable],
    origin: Arc<Origin>,
    tx: SinkTx,
) -> Result<()> {
    let conn = SnapshotConn::connect(pg, app).await?;
    while let Some(w) = state.pending.first() {
        let t = tables.iter().find(|t| t.name() == w.table).ok_or_else(|| {
            Error::permanent(Code::Snapshot, format!(
                "table {} is in the snapshot progress but no longer captured; remove the checkpoint to start over",
                w.table
            ))
        })?;
        let limit = (!t.st.pk.is_empty()).then_some(page_rows);
        let rows = conn.read(&t.st, &w.range, limit).await?;
        let position = Position {
            lsn: Lsn::ZERO,
            xid: 0,
            ts_us: now_micros(),
        };
        let records = encode_reads(t, &rows, &origin, position, |_, _| SnapshotMark::True)?;
        let last = rows.last().and_then(|r| key_of(&t.st, &t.positions, r));
        let finished = limit.is_none_or(|l| (rows.len() as u64) < l);
        let progress = state.advance(&ChunkDone::Work {
            last,
            rows: rows.len() as u64,
            finished,
        });
        tx.send(SinkMsg::Chunk {
            records,
            progress,
            permit: None,
        })
        .await
        .map_err(|_| Error::transient(Code::SinkStopped, "the Kafka sink stopped"))?;
    }
    Ok(())
}

#[derive(Clone, Copy)]
struct Marks {
    first_table: bool,
    last_table: bool,
    first_chunk: bool,
    last_chunk: bool,
}

impl Marks {
    /// Debezium's marks: the first and last row of the snapshot and of each table.
    fn at(&self, i: usize, n: usize) -> SnapshotMark {
        if self.first_chunk && i == 0 {
            if self.first_table {
                SnapshotMark::First
            } else {
                SnapshotMark::FirstInDataCollection
            }
        } else if self.last_chunk && i + 1 == n {
            if self.last_table {
                SnapshotMark::Last
            } else {
                SnapshotMark::LastInDataCollection
            }
        } else {
            SnapshotMark::True
        }
    }
}

/// Rows → `op: r` records.
pub(crate) fn encode_reads(
    t: &SnapTable,
    rows: &[Tuple],
    origin: &Origin,
    at: Position,
    mark: impl Fn(usize, usize) -> SnapshotMark,
) -> Result<Vec<Record>> {
    let n = rows.len();
    let mut out = Vec::with_capacity(n);
    // The rows differ only in their snapshot mark: one context, with its `source` block
    // encoded once, per mark.
    let mut contexts: Vec<ChangeContext> = Vec::with_capacity(3);
    for (i, row) in rows.iter().enumerate() {
        let snapshot = mark(i, n);
        let at_mark = match contexts.iter().position(|c| c.snapshot == snapshot) {
            Some(p) => p,
            None => {
                let mut cx = ChangeContext {
                    snapshot,
                    xid: at.xid,
                    commit_lsn: at.lsn,
                    commit_ts_us: at.ts_us,
                    lsn: at.lsn,
                    last_commit_lsn: at.lsn,
                    total_order: 0,
                    table_order: 0,
                    repl_origin: None,
                    source: None,
                };
                cx.source = Some(t.codec.source_bytes(origin, &cx));
                contexts.push(cx);
                contexts.len() - 1
            }
        };
        let enc = t.codec.encode_event(
            Op::Read,
            EventKey::Row(row),
            None,
            Some(row),
            ValueMarks::default(),
            origin,
            &contexts[at_mark],
        )?;
        out.push(Record {
            topic: t.codec.topic.clone(),
            key: enc.key,
            value: Some(enc.value),
            headers: enc.headers,
        });
    }
    Ok(out)
}
