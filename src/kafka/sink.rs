//! The transactional sink: records from the reader and the snapshot workers go into Kafka
//! transactions that end on PostgreSQL transaction boundaries, each with the checkpoint
//! (and snapshot progress) inside it; the position is released to the feedback task only
//! after the commit.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

use crate::checkpoint::debezium::Seam;
use crate::checkpoint::progress::{Advanced, SnapshotState};
use crate::checkpoint::{Checkpoint, CHECKPOINT_VERSION};
use crate::error::{Code, Error, Kind, Result};
use crate::kafka::producer::TxProducer;
use crate::metrics;
use crate::Lsn;

/// With no events, a checkpoint-only Kafka transaction this often: it confirms WAL progress
/// of an idle database to the slot, and a fenced producer (another instance took over)
/// learns it within this time and stops.
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
/// Snapshot progress (rows committed / estimated per table) is logged this often.
const PROGRESS_LOG_INTERVAL: Duration = Duration::from_secs(5);

/// One Kafka record.
pub struct Record {
    pub topic: Arc<str>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    /// Headers naming columns a value policy changed (`pgcdc.unavailable`, `pgcdc.lossy`).
    pub headers: Vec<(&'static str, String)>,
}

/// What the reader and the snapshot workers hand the sink.
pub(crate) enum SinkMsg {
    Record(Record),
    /// A snapshot chunk, written whole into one Kafka transaction with its progress.
    Chunk {
        records: Vec<Record>,
        /// The snapshot progress once these rows are written.
        progress: Advanced,
        /// Held until the chunk is written: bounds the chunks in memory.
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
    },
    /// The snapshot progress changed with no rows to write (a signal added ranges).
    Progress(Box<SnapshotState>),
    TxnEnd {
        commit_lsn: Lsn,
        end_lsn: Lsn,
        xid: u32,
        commit_ts_us: i64,
    },
    /// The server is idle at this WAL position and no transaction is open.
    Idle(Lsn),
    /// A record outside any transaction (a non-transactional logical decoding message)
    /// ended at this position: a boundary the sink may commit at.
    Boundary(Lsn),
}

impl SinkMsg {
    /// The bytes the message holds (keys, values, headers), for the channel's budget.
    fn bytes(&self) -> usize {
        let record = |r: &Record| {
            r.key.as_ref().map_or(0, Vec::len)
                + r.value.as_ref().map_or(0, Vec::len)
                + r.headers
                    .iter()
                    .map(|(k, v)| k.len() + v.len())
                    .sum::<usize>()
        };
        match self {
            SinkMsg::Record(r) => record(r),
            SinkMsg::Chunk { records, .. } => records.iter().map(record).sum(),
            _ => 0,
        }
    }
}

/// The reader → sink channel, bounded in messages and in bytes (`kafka.buffer_bytes`): a
/// slow or absent Kafka blocks the reader (PostgreSQL keeps the WAL) instead of growing
/// memory. A message larger than the whole budget passes alone. Its bytes are released
/// when the sink takes the message, to hand it to librdkafka, whose queue has its own bound
/// (`kafka.producer_queue_bytes`).
pub(crate) fn channel(messages: usize, bytes: usize) -> (SinkTx, SinkRx) {
    let (tx, rx) = mpsc::channel(messages);
    let max = bytes.clamp(1, u32::MAX as usize);
    (
        SinkTx {
            tx,
            budget: Arc::new(Semaphore::new(max)),
            max,
        },
        SinkRx { rx },
    )
}

type Sized = (SinkMsg, Option<OwnedSemaphorePermit>);

#[derive(Clone)]
pub(crate) struct SinkTx {
    tx: mpsc::Sender<Sized>,
    budget: Arc<Semaphore>,
    max: usize,
}

/// The sink is gone (it stopped, or failed: its task says why).
#[derive(Debug)]
pub(crate) struct SinkClosed;

impl SinkTx {
    /// Waits for room (messages and bytes), then hands `m` to the sink.
    pub(crate) async fn send(&self, m: SinkMsg) -> std::result::Result<(), SinkClosed> {
        let n = m.bytes().min(self.max);
        let permit = if n == 0 {
            None
        } else {
            // `max` fits in u32 (see `channel`).
            let n = u32::try_from(n).unwrap_or(u32::MAX);
            Some(
                self.budget
                    .clone()
                    .acquire_many_owned(n)
                    .await
                    .map_err(|_| SinkClosed)?,
            )
        };
        self.tx.send((m, permit)).await.map_err(|_| SinkClosed)
    }

    /// Bytes handed to the sink and not yet taken by it.
    #[cfg(test)]
    pub(crate) fn buffered_bytes(&self) -> usize {
        self.max - self.budget.available_permits()
    }
}

pub(crate) struct SinkRx {
    rx: mpsc::Receiver<Sized>,
}

impl SinkRx {
    pub(crate) async fn recv(&mut self) -> Option<SinkMsg> {
        self.rx.recv().await.map(|(m, _bytes)| m)
    }

    /// Nothing waits in the channel: the reader has not handed over anything more yet.
    fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }
}

pub(crate) struct Sink {
    producer: TxProducer,
    offsets_topic: String,
    connector: String,
    limits: crate::config::TransactionConfig,
    flushed: watch::Sender<Lsn>,
    /// Everything before this position has been handed to the producer.
    position: Lsn,
    /// The position of the last committed checkpoint.
    committed: Lsn,
    /// Snapshot progress as last handed over with a chunk, written into every checkpoint.
    snapshot: SnapshotState,
    last_progress_log: Instant,
    /// Positions `/metrics` reads (confirmed, open transaction, delivered commit time).
    live: Arc<metrics::Positions>,
    /// System identifier and timeline of the database streamed, recorded in checkpoints.
    identity: Option<(String, u32)>,
    /// The seam of a takeover, kept in checkpoints until the position passes it.
    seam: Option<Seam>,
}

struct OpenTxn {
    started: Instant,
    events: usize,
    bytes: u64,
}

impl Sink {
    pub(crate) fn new(
        producer: TxProducer,
        offsets_topic: String,
        connector: String,
        limits: crate::config::TransactionConfig,
        flushed: watch::Sender<Lsn>,
    ) -> Self {
        let live = metrics::live(&connector);
        Sink {
            live,
            producer,
            offsets_topic,
            connector,
            limits,
            flushed,
            position: Lsn::ZERO,
            committed: Lsn::ZERO,
            snapshot: SnapshotState::default(),
            last_progress_log: Instant::now(),
            identity: None,
            seam: None,
        }
    }

    /// After `pgcdc takeover`: checkpoints keep the seam until the first transaction is
    /// committed (a restart before then skips Debezium's part of it again; an idle position
    /// may pass the seam's LSN before that transaction arrives).
    pub(crate) fn continuing(mut self, seam: Option<Seam>) -> Self {
        self.seam = seam;
        self
    }

    /// Checkpoints record the database this run streams (see [`Checkpoint::system_id`]).
    pub(crate) fn identified(mut self, sys: &crate::postgres::replication::SystemId) -> Self {
        self.identity = Some((sys.systemid.clone(), sys.timeline));
        self
    }

    pub(crate) fn starting_at(mut self, position: Lsn, snapshot: SnapshotState) -> Self {
        self.position = position;
        self.committed = position;
        self.snapshot = snapshot;
        self.flushed.send_replace(position);
        self
    }

    pub(crate) async fn run(mut self, rx: SinkRx) -> Result<()> {
        let r = self.stream(rx).await;
        r.map_err(|e| self.timed_out(e))
    }

    /// An error while a Kafka transaction has been open longer than the transaction
    /// timeout: the broker aborted it (and bumped the producer's epoch, which librdkafka
    /// reports as fencing). Said as what it is, with its own code and metric.
    fn timed_out(&self, e: Error) -> Error {
        let since = self.live.open_since_us.load(Ordering::Relaxed);
        let timeout = self.limits.timeout;
        if since == 0
            || e.code() == Code::KafkaTransactionTimeout
            || !(e.kind() == Kind::Fenced || e.is_transient())
        {
            return e;
        }
        let open = Duration::from_micros((crate::clock::now_micros() - since).max(0) as u64);
        if open < timeout {
            return e;
        }
        metrics::count_connector(&self.connector, metrics::ConnectorEvent::TransactionTimeout);
        Error::transient(
            Code::KafkaTransactionTimeout,
            format!(
                "connector {}: a Kafka transaction was open {}s, longer than kafka.transaction.timeout ({}), \
                 so the broker aborted it: a PostgreSQL transaction too large to stream within the timeout \
                 (not fencing: no other instance took over). Nothing of it was acknowledged; the broker said: {}",
                self.connector,
                open.as_secs(),
                humantime::format_duration(timeout),
                e.message()
                    .strip_suffix(crate::kafka::FENCED_NOTE)
                    .map_or(e.message(), |m| m.trim_end_matches("; "))
            ),
        )
    }

    async fn stream(&mut self, mut rx: SinkRx) -> Result<()> {
        let mut open: Option<OpenTxn> = None;
        let mut at_boundary = true;
        let mut last_txn: Option<(Lsn, Lsn, u32, i64)> = None;
        let mut last_commit_at = Instant::now();
        let mut boundary_at = Instant::now();
        loop {
            // When to commit without new input: an open transaction at a PostgreSQL
            // transaction boundary after max_interval, or idle_wait after that boundary;
            // with nothing open, a heartbeat that checkpoints idle progress and finds out
            // early when another instance fenced us.
            let wake = match &open {
                Some(o) if at_boundary => Some(
                    (o.started + self.limits.max_interval).min(boundary_at + self.limits.idle_wait),
                ),
                Some(_) => None,
                None => Some(last_commit_at + HEARTBEAT_INTERVAL),
            };
            let msg = match wake {
                Some(w) => tokio::select! {
                    m = rx.recv() => Some(m),
                    _ = tokio::time::sleep_until(w.into()) => None,
                },
                None => Some(rx.recv().await),
            };
            let Some(msg) = msg else {
                self.commit(&mut open, last_txn).await?;
                last_commit_at = Instant::now();
                continue;
            };
            match msg {
                Some(SinkMsg::Record(r)) => {
                    self.live.idle.store(false, Ordering::Relaxed);
                    self.begin(&mut open, true).await?;
                    at_boundary = false;
                    self.write(&mut open, r).await?;
                }
                Some(SinkMsg::Chunk {
                    records,
                    progress,
                    permit,
                }) => {
                    self.begin(&mut open, false).await?;
                    for r in records {
                        self.write(&mut open, r).await?;
                    }
                    drop(permit);
                    self.snapshot = *progress.state;
                    if let Some(table) = progress.finished {
                        let rows = self.snapshot.finished.get(&table).map_or(0, |f| f.rows);
                        tracing::info!(connector = %self.connector, table = %table, rows, "table snapshot delivered (commits with the next Kafka transaction)");
                    }
                    let full = open.as_ref().is_some_and(|o| {
                        o.events >= self.limits.max_events || o.bytes >= self.limits.max_bytes
                    });
                    if full && at_boundary {
                        self.commit(&mut open, last_txn).await?;
                        last_commit_at = Instant::now();
                    }
                }
                Some(SinkMsg::Progress(state)) => self.snapshot = *state,
                Some(SinkMsg::TxnEnd {
                    commit_lsn,
                    end_lsn,
                    xid,
                    commit_ts_us,
                }) => {
                    at_boundary = true;
                    boundary_at = Instant::now();
                    self.position = self.position.max(end_lsn);
                    last_txn = Some((commit_lsn, end_lsn, xid, commit_ts_us));
                    // Committed with this transaction, the seam is behind the checkpoint.
                    self.seam = None;
                    // A thin stream commits at once (idle_wait 0): nothing more is waiting,
                    // so waiting for max_interval would only add latency. Under load the
                    // channel fills while a commit runs, and the next commit takes all of it.
                    let full = open.as_ref().is_some_and(|o| {
                        o.events >= self.limits.max_events
                            || o.bytes >= self.limits.max_bytes
                            || o.started.elapsed() >= self.limits.max_interval
                    });
                    let idle = self.limits.idle_wait.is_zero() && rx.is_empty();
                    if full || (open.is_some() && idle) {
                        self.commit(&mut open, last_txn).await?;
                        last_commit_at = Instant::now();
                    }
                }
                Some(SinkMsg::Boundary(lsn)) => {
                    if !at_boundary {
                        boundary_at = Instant::now();
                    }
                    at_boundary = true;
                    self.position = self.position.max(lsn);
                }
                Some(SinkMsg::Idle(lsn)) => {
                    if at_boundary {
                        self.position = self.position.max(lsn);
                    }
                    if at_boundary && open.is_none() {
                        self.live.idle.store(true, Ordering::Relaxed);
                    }
                }
                None => {
                    // Shutdown: commit what is whole, abort what is not.
                    if open.is_some() && at_boundary {
                        self.commit(&mut open, last_txn).await?;
                    } else if open.is_some() {
                        self.live.open_since_us.store(0, Ordering::Relaxed);
                        self.producer.abort().await?;
                    }
                    return Ok(());
                }
            }
        }
    }

    /// Opens a Kafka transaction unless one is open; `spaced` (streaming): see
    /// [`TxProducer::begin_spaced`].
    async fn begin(&mut self, open: &mut Option<OpenTxn>, spaced: bool) -> Result<()> {
        if open.is_none() {
            if spaced {
                self.producer.begin_spaced().await?;
            } else {
                self.producer.begin()?;
            }
            self.live
                .open_since_us
                .store(crate::clock::now_micros(), Ordering::Relaxed);
            *open = Some(OpenTxn {
                started: Instant::now(),
                events: 0,
                bytes: 0,
            });
        }
        Ok(())
    }

    async fn write(&mut self, open: &mut Option<OpenTxn>, r: Record) -> Result<()> {
        let size = r.key.as_ref().map_or(0, |k| k.len()) + r.value.as_ref().map_or(0, |v| v.len());
        self.producer
            .send(&r.topic, r.key.as_deref(), r.value.as_deref(), &r.headers)
            .await?;
        if let Some(o) = open.as_mut() {
            o.events += 1;
            o.bytes += size as u64;
        }
        Ok(())
    }

    /// Writes the checkpoint into the open transaction (opening one if needed), commits, and
    /// only then releases the position to the feedback task.
    async fn commit(
        &mut self,
        open: &mut Option<OpenTxn>,
        last_txn: Option<(Lsn, Lsn, u32, i64)>,
    ) -> Result<()> {
        if open.is_none() {
            self.producer.begin_spaced().await?;
        }
        let ck = Checkpoint {
            version: CHECKPOINT_VERSION,
            connector: self.connector.clone(),
            lsn: self.position.to_string(),
            commit_lsn: last_txn.map(|t| t.0.to_string()),
            end_lsn: last_txn.map(|t| t.1.to_string()),
            xid: last_txn.map(|t| t.2),
            commit_ts_us: last_txn.map(|t| t.3),
            snapshot: (self.snapshot != SnapshotState::default()).then(|| self.snapshot.clone()),
            system_id: self.identity.as_ref().map(|i| i.0.clone()),
            timeline: self.identity.as_ref().map(|i| i.1),
            takeover: self.seam.clone(),
        };
        let commit_started = Instant::now();
        let committed = async {
            self.producer.settle().await?;
            self.producer
                .send(
                    &self.offsets_topic,
                    Some(self.connector.as_bytes()),
                    Some(&ck.encode()?),
                    &[],
                )
                .await?;
            self.producer.commit().await
        };
        if let Err(e) = committed.await {
            let e = self.timed_out(e);
            let _ = self.producer.abort().await;
            self.live.open_since_us.store(0, Ordering::Relaxed);
            return Err(e);
        }
        let commit_secs = commit_started.elapsed().as_secs_f64();
        let events = open.as_ref().map_or(0, |o| o.events);
        *open = None;
        self.committed = self.position;
        metrics::kafka_committed(&self.connector, commit_secs);
        self.live.open_since_us.store(0, Ordering::Relaxed);
        self.live
            .confirmed
            .store(self.position.0, Ordering::Relaxed);
        if let Some((_, _, _, ts)) = last_txn {
            self.live.delivered_commit_us.store(ts, Ordering::Relaxed);
        }
        tracing::debug!(
            connector = %self.connector,
            lsn = %self.position,
            events,
            commit_ms = (commit_secs * 1000.0) as u64,
            "committed kafka transaction"
        );
        let _ = self.flushed.send(self.position);
        if self.last_progress_log.elapsed() >= PROGRESS_LOG_INTERVAL {
            for (table, state, rows, estimate) in self.snapshot.progress() {
                if state == "running" {
                    tracing::info!(connector = %self.connector, table = %table, rows, estimate, "snapshot progress");
                }
            }
            self.last_progress_log = Instant::now();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(n: usize) -> SinkMsg {
        SinkMsg::Record(Record {
            topic: "t".into(),
            key: None,
            value: Some(vec![0; n]),
            headers: vec![],
        })
    }

    fn len(m: Option<SinkMsg>) -> usize {
        match m {
            Some(SinkMsg::Record(r)) => r.value.map_or(0, |v| v.len()),
            _ => panic!("not a record"),
        }
    }

    #[tokio::test]
    async fn the_channel_is_bounded_by_bytes_and_a_bigger_message_passes_alone() {
        let (tx, mut rx) = channel(100, 1000);
        tx.send(rec(600)).await.unwrap();
        assert_eq!(tx.buffered_bytes(), 600);
        // 600 + 600 > 1000: the sender waits until the sink takes the first.
        let waited = tokio::time::timeout(Duration::from_millis(100), tx.send(rec(600))).await;
        assert!(waited.is_err(), "over the byte budget the sender must wait");
        assert_eq!(len(rx.recv().await), 600);
        assert_eq!(tx.buffered_bytes(), 0);
        tx.send(rec(600)).await.unwrap();

        // Larger than the whole budget: it waits for all of it, then passes alone.
        let tx2 = tx.clone();
        let big = tokio::spawn(async move { tx2.send(rec(5000)).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !big.is_finished(),
            "the big one waits for the budget to empty"
        );
        assert_eq!(len(rx.recv().await), 600);
        big.await.unwrap().unwrap();
        assert_eq!(tx.buffered_bytes(), 1000);
        // Control messages hold no bytes.
        tokio::time::timeout(
            Duration::from_millis(100),
            tx.send(SinkMsg::Idle(Lsn::ZERO)),
        )
        .await
        .expect("an Idle needs no budget")
        .unwrap();
        assert_eq!(len(rx.recv().await), 5000);
        assert_eq!(tx.buffered_bytes(), 0);
        drop(rx);
        assert!(tx.send(rec(1)).await.is_err(), "a closed sink is an error");
    }
}
