//! One connector's loop: replication stream → decoded changes → Avro events → one Kafka
//! transaction per batch of whole PostgreSQL transactions, with the checkpoint inside it.
//!
//! ```text
//!  reader task ──bounded channel──▶ sink task ──commit──▶ watch<Lsn> ──▶ feedback task
//!  (decode, encode)                 (Kafka txn)                         (status updates)
//! ```
//!
//! Invariants:
//! - A Kafka transaction holds whole PostgreSQL transactions plus one checkpoint record.
//! - The slot's flush position is only ever a position named by a committed checkpoint.
//! - On start, transactions that committed before the checkpoint are skipped (PostgreSQL
//!   does this too, given the checkpoint as start position), and a slot that is ahead of the
//!   checkpoint is an error: events would be missing.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, watch};

use crate::avro::envelope::{ChangeContext, Op, Origin, SnapshotMark, TableCodec};
use crate::avro::registry::Registry;
use crate::avro::schema::{envelope_schema, field_names, key_schema, topic_name};
use crate::avro::Registered;
use crate::checkpoint::{self, CHECKPOINT_VERSION};

use crate::avro::policy::{Marks, ValuePolicy};
use crate::checkpoint::Checkpoint;
use crate::config::{ConnectorConfig, DaemonConfig, SnapshotMode};
use crate::decode::{self, Message, RelationCache};
use crate::error::{Error, Result};
use crate::kafka::producer::{transactional_id, TxProducer};
use crate::kafka::topics::Topics;
use crate::metrics;
use crate::postgres::feedback::{self, Positions};
use crate::postgres::snapshot::{key_of, SnapshotConn, WATERMARK_PREFIX};
use crate::postgres::{Catalog, ReplicationClient, StreamEvent};
use crate::snapshot::incremental::{
    self, ChunkBox, ChunkRequest, InFlight, Incremental, Watermark, WatermarkKind,
};
use crate::snapshot::initial::{self, SnapTable};
use crate::snapshot::Kind;
use crate::snapshot::{ChunkDone, SnapshotState, TableWork};
use crate::startup::Start;
use crate::toast::TxnToast;
use crate::Lsn;

mod deliver;
use deliver::event;

/// Capacity of the reader → sink channel, in messages: bounded, so a slow Kafka slows the
/// reader (and PostgreSQL keeps the WAL) instead of growing memory.
const SINK_CHANNEL_CAPACITY: usize = 8192;
/// With no events, a checkpoint-only Kafka transaction this often: it confirms WAL progress
/// of an idle database to the slot, and a fenced producer (another instance took over)
/// learns it within this time and stops.
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
/// How often a running connector checks that its publication still publishes every
/// captured table.
const PUBLICATION_CHECK_INTERVAL: Duration = Duration::from_secs(10);
/// Snapshot progress (rows committed / estimated per table) is logged this often.
const PROGRESS_LOG_INTERVAL: Duration = Duration::from_secs(5);

/// One Kafka record.
pub(crate) struct Record {
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
        done: ChunkDone,
        /// Held until the chunk is written: bounds the chunks in memory.
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
    },
    /// Ranges to snapshot with watermarks (a signal asked for them).
    AddWork(Vec<TableWork>),
    TxnEnd {
        commit_lsn: Lsn,
        end_lsn: Lsn,
        xid: u32,
        commit_ts_us: i64,
    },
    /// The server is idle at this WAL position and no transaction is open.
    Idle(Lsn),
}

/// Runs the connector until `shutdown` turns true (Ok) or an error stops it.
pub async fn run(
    daemon: &DaemonConfig,
    conn: &ConnectorConfig,
    mut shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let app = format!("pgcdc-{}", conn.name);
    let slot = conn.slot_name();
    let publication = conn.publication_name();
    let catalog = Catalog::connect(&conn.postgres, conn.numeric_mode, &app).await?;
    let pre = catalog.preflight(conn).await?;
    for w in &pre.warnings {
        tracing::warn!(connector = %conn.name, "{w}");
    }
    let problems = pre.problems;
    if let Some(first) = problems.first() {
        let more = if problems.len() > 1 {
            format!(" (and {} more; run pgcdc validate)", problems.len() - 1)
        } else {
            String::new()
        };
        return Err(Error::permanent(format!(
            "connector {}: {first}{more}",
            conn.name
        )));
    }
    catalog.ensure_publication(conn).await?;
    catalog.cover_tables(conn).await?;
    catalog.ensure_signal_table(conn).await?;
    let version = catalog.server_version_num().await?;
    let messages = version >= 140_000;

    // A property librdkafka refuses is permanent; then Kafka answers within 10 s, or the
    // operator reads pgcdc's own line (not librdkafka's retries) and the connector retries.
    crate::kafka::check_config(&daemon.kafka)?;
    crate::kafka::check_brokers(&daemon.kafka)
        .await
        .map_err(|e| Error::transient(e.to_string()))?;
    let producer = TxProducer::new(&daemon.kafka, &transactional_id(&conn.name))?;
    producer.init().await?;
    let mut topics = Topics::new(&daemon.kafka)?;
    topics
        .ensure(
            &daemon.kafka.offsets_topic,
            Some(1),
            &[("cleanup.policy", "compact")],
        )
        .await?;
    let kcfg = daemon.kafka.clone();
    let name = conn.name.clone();
    let (ck, claim) = tokio::task::spawn_blocking(move || checkpoint::read_state(&kcfg, &name))
        .await
        .map_err(|e| Error::permanent(format!("checkpoint reader failed: {e}")))??;
    // Both sinks answer before a slot is created or a snapshot begins: a retry while one is
    // down never has anything to undo.
    crate::avro::registry::check(&daemon.schema_registry)
        .await
        .map_err(|e| Error::transient(e.to_string()))?;
    let ck_pos = match &ck {
        Some(c) => Some(c.position()?),
        None => None,
    };

    let (tx, rx) = mpsc::channel(SINK_CHANNEL_CAPACITY);
    let origin = Arc::new(Origin {
        name: conn.topic_prefix.clone(),
        db: conn.postgres.dbname.clone(),
    });
    let mut reader = Reader {
        conn,
        catalog,
        registry: Registry::new(&daemon.schema_registry)?,
        topics,
        relations: RelationCache::default(),
        codecs: HashMap::new(),
        txn: None,
        last_commit: Lsn::ZERO,
        skip_before: Lsn::ZERO,
        tx,
        origin: origin.clone(),
        snap: Incremental::default(),
        policy: Arc::new(ValuePolicy::of(conn)),
        toast: TxnToast::new(conn.toast, conn.toast_hold_bytes),
        toast_conn: None,
    };
    let (flushed_tx, flushed_rx) = watch::channel(Lsn::ZERO);
    let sink = Sink {
        producer: producer.clone(),
        offsets_topic: daemon.kafka.offsets_topic.clone(),
        connector: conn.name.clone(),
        limits: daemon.kafka.transaction.clone(),
        flushed: flushed_tx,
        position: Lsn::ZERO,
        committed: Lsn::ZERO,
        snapshot: SnapshotState::default(),
        last_progress_log: Instant::now(),
    };

    if conn.snapshot.mode == SnapshotMode::InitialOnly {
        return initial_only(reader, sink, rx, ck, &app, shutdown).await;
    }

    let mut repl = ReplicationClient::connect(&conn.postgres, &app).await?;
    repl.identify_system().await?;
    let existing = reader.catalog.slot(&slot).await?;
    let decision = crate::startup::decide(conn, ck.as_ref(), claim.as_ref(), existing.as_ref())
        .map_err(|e| match e {
            Error::Permanent(m) => Error::permanent(format!("connector {}: {m}", conn.name)),
            other => other,
        })?;
    // Recorded right after creation, before anything uses the slot.
    let claim = |lsn| {
        claim_slot(
            &producer,
            &daemon.kafka.offsets_topic,
            &conn.name,
            &slot,
            lsn,
        )
    };
    let (start, exported, state) = if let Start::Snapshot { drop_existing } = decision {
        if drop_existing {
            tracing::warn!(connector = %conn.name, slot = %slot, "dropping the replication slot pgcdc created earlier, to recreate it with a snapshot (snapshot.mode {:?})", conn.snapshot.mode);
            repl.drop_slot(&slot).await?;
        }
        let (lsn, name) = repl.create_slot_exported(&slot).await?;
        claim(lsn).await?;
        tracing::info!(connector = %conn.name, slot = %slot, lsn = %lsn, snapshot = %name, "created replication slot with an exported snapshot");
        (lsn, Some(name), SnapshotState::default())
    } else {
        let slot_pos = match &existing {
            Some(s) => s.confirmed_flush.unwrap_or(Lsn::ZERO),
            None => {
                let lsn = repl.create_slot(&slot).await?;
                claim(lsn).await?;
                tracing::info!(connector = %conn.name, slot = %slot, lsn = %lsn, "created replication slot");
                lsn
            }
        };
        if let Some(ck_pos) = ck_pos {
            if slot_pos > ck_pos {
                return Err(Error::permanent(format!(
                    "connector {}: replication slot {slot} is at {slot_pos} but the last checkpoint in {} is at {ck_pos}: \
                     changes between them were acknowledged without being delivered (was the slot dropped and recreated?). \
                     pgcdc stops rather than skip them. To re-snapshot instead, set snapshot.mode: when_needed; to start \
                     over, delete the checkpoint by producing a tombstone (key {:?}, null value) to {}",
                    conn.name, daemon.kafka.offsets_topic, conn.name, daemon.kafka.offsets_topic
                )));
            }
        }
        let state = ck
            .as_ref()
            .and_then(|c| c.snapshot.clone())
            .unwrap_or_default()
            .resume();
        (ck_pos.unwrap_or(Lsn::ZERO).max(slot_pos), None, state)
    };
    reader.last_commit = start;
    reader.skip_before = start;

    let mut sink_task;
    if let Some(name) = exported {
        let tables = reader.snapshot_tables().await?;
        let plan = initial::plan(
            &conn.postgres,
            &app,
            &name,
            start,
            conn.snapshot.chunk_rows,
            tables,
        )
        .await?;
        sink_task = tokio::spawn(sink.starting_at(start, plan.state()).run(rx));
        let started = Instant::now();
        let work = initial::run(
            &conn.postgres,
            &app,
            &name,
            conn.snapshot.workers,
            plan,
            origin.clone(),
            reader.tx.clone(),
        );
        let rows = tokio::select! {
            biased;
            _ = shutdown.changed() => None,
            r = &mut sink_task => return Err(sink_stopped(r)),
            r = work => Some(r?),
        };
        let Some(rows) = rows else {
            // Stop: the sink commits the chunks it has whole; the rest resumes later.
            drop(reader);
            return sink_task
                .await
                .map_err(|e| Error::permanent(format!("the Kafka sink failed: {e}")))?;
        };
        let secs = started.elapsed().as_secs_f64();
        tracing::info!(
            connector = %conn.name,
            rows,
            secs = format!("{secs:.1}"),
            rows_per_sec = (rows as f64 / secs.max(1e-3)) as u64,
            "initial snapshot read; streaming from its consistent point"
        );
    } else {
        reader.snap.pending = state.pending.clone();
        sink_task = tokio::spawn(sink.starting_at(start, state).run(rx));
    }

    let interval = feedback::status_interval(&repl.show("wal_sender_timeout").await?);
    let (mut stream, status) = repl
        .start_replication(&slot, start, &publication, messages)
        .await?;
    tracing::info!(connector = %conn.name, slot = %slot, lsn = %start, "streaming");

    let positions = Arc::new(Positions::default());
    positions.received.store(start.0, Ordering::Release);
    let (reply_tx, reply_rx) = mpsc::channel(1);
    let fb = tokio::spawn(feedback::run(
        status,
        positions.clone(),
        flushed_rx,
        reply_rx,
        interval,
    ));

    // Watermark reads for incremental snapshots run beside the stream.
    let (req_tx, req_rx) = mpsc::channel(1);
    let chunks: ChunkBox = Arc::default();
    let mut driver = tokio::spawn(incremental::driver(
        SnapshotConn::connect(&conn.postgres, &app).await?,
        conn.name.clone(),
        req_rx,
        chunks.clone(),
    ));
    reader.snap.requests = Some(req_tx);
    reader.snap.chunks = chunks;
    reader.snap.messages = messages;
    reader.next_chunk().await?;

    let mut publication_check = tokio::time::interval(PUBLICATION_CHECK_INTERVAL);
    publication_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    publication_check.tick().await;
    let result = loop {
        let ev = tokio::select! {
            biased;
            _ = shutdown.changed() => break Ok(()),
            r = &mut sink_task => break Err(sink_stopped(r)),
            _ = publication_check.tick() => {
                // A captured table someone removed from the publication stops streaming
                // without a sound: re-added to pgcdc's own publication, an error otherwise.
                if let Err(e) = reader.catalog.cover_tables(conn).await {
                    break Err(e);
                }
                continue;
            }
            r = &mut driver => break Err(match r {
                Ok(Err(e)) => e,
                Ok(Ok(())) => Error::transient("the snapshot reader stopped"),
                Err(e) => Error::permanent(format!("the snapshot reader failed: {e}")),
            }),
            ev = stream.next() => ev,
        };
        let step = match ev {
            Ok(StreamEvent::XLogData {
                wal_start,
                wal_end,
                data,
            }) => {
                positions.received.fetch_max(wal_end.0, Ordering::AcqRel);
                reader.handle(wal_start, data).await
            }
            Ok(StreamEvent::Keepalive {
                wal_end,
                reply_requested,
            }) => {
                positions.received.fetch_max(wal_end.0, Ordering::AcqRel);
                if reply_requested {
                    let _ = reply_tx.try_send(());
                }
                if reader.txn.is_none() {
                    reader.send(SinkMsg::Idle(wal_end)).await
                } else {
                    Ok(())
                }
            }
            Err(e) => Err(e),
        };
        if let Err(e) = step {
            break Err(e);
        }
    };

    // Close the channel: the sink commits what is complete, aborts what is not, and stops.
    drop(reader);
    driver.abort();
    let sink_result = if sink_task.is_finished() {
        Ok(())
    } else {
        match sink_task.await {
            Ok(r) => r,
            Err(e) => Err(Error::permanent(format!("the Kafka sink failed: {e}"))),
        }
    };
    // Let the feedback task report the final flush position before it goes.
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(reply_tx);
    fb.abort();
    result.and(sink_result)
}

/// Records, in its own Kafka transaction, that this connector created `slot` at `lsn`:
/// the proof pgcdc needs before it ever drops the slot ([`crate::startup`]).
async fn claim_slot(
    producer: &TxProducer,
    offsets_topic: &str,
    connector: &str,
    slot: &str,
    lsn: Lsn,
) -> Result<()> {
    let claim = checkpoint::SlotClaim {
        connector: connector.to_owned(),
        slot: slot.to_owned(),
        created_lsn: lsn.to_string(),
    };
    producer.begin()?;
    let key = checkpoint::SlotClaim::key(connector);
    let sent = producer
        .send(
            offsets_topic,
            Some(key.as_bytes()),
            Some(&claim.encode()?),
            &[],
        )
        .await;
    if let Err(e) = sent {
        let _ = producer.abort().await;
        return Err(e);
    }
    if let Err(e) = producer.commit().await {
        let _ = producer.abort().await;
        return Err(e);
    }
    Ok(())
}

fn sink_stopped(r: std::result::Result<Result<()>, tokio::task::JoinError>) -> Error {
    match r {
        Ok(Ok(())) => Error::transient("the Kafka sink stopped"),
        Ok(Err(e)) => e,
        Err(e) => Error::permanent(format!("the Kafka sink failed: {e}")),
    }
}

/// `snapshot.mode: initial_only`: snapshot the tables, then stop. No slot: the snapshot is
/// exported by an ordinary transaction. After a crash, the ranges not yet committed are read
/// page by page (there is no stream to reconcile them with).
async fn initial_only(
    mut reader: Reader<'_>,
    sink: Sink,
    rx: mpsc::Receiver<SinkMsg>,
    ck: Option<Checkpoint>,
    app: &str,
    mut shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let conn = reader.conn;
    let mut exporter = None;
    let name: String;
    let (mut sink_task, work) = match ck {
        None => {
            let ex = SnapshotConn::connect(&conn.postgres, app).await?;
            name = ex.begin_and_export().await?;
            let tables = reader.snapshot_tables().await?;
            let plan = initial::plan(
                &conn.postgres,
                app,
                &name,
                Lsn::ZERO,
                conn.snapshot.chunk_rows,
                tables,
            )
            .await?;
            let task = tokio::spawn(sink.starting_at(Lsn::ZERO, plan.state()).run(rx));
            let work = initial::run(
                &conn.postgres,
                app,
                &name,
                conn.snapshot.workers,
                plan,
                reader.origin.clone(),
                reader.tx.clone(),
            );
            exporter = Some(ex);
            (
                task,
                futures_util::future::Either::Left(async move { work.await.map(|_| ()) }),
            )
        }
        Some(c) => {
            let state = c.snapshot.clone().unwrap_or_default().resume();
            if state.pending.is_empty() {
                tracing::info!(connector = %conn.name, "snapshot.mode initial_only: the snapshot is complete; nothing to do");
                return Ok(());
            }
            let mut tables = Vec::new();
            for w in &state.pending {
                if !tables.iter().any(|t: &SnapTable| t.name() == w.table) {
                    tables.push(reader.snap_table(&w.table).await?);
                }
            }
            let task = tokio::spawn(sink.starting_at(c.position()?, state.clone()).run(rx));
            let (pg, origin, tx) = (&conn.postgres, reader.origin.clone(), reader.tx.clone());
            let rows = conn.snapshot.chunk_rows;
            (
                task,
                futures_util::future::Either::Right(async move {
                    initial::run_paged(pg, app, rows, state.pending, &tables, origin, tx).await
                }),
            )
        }
    };
    let finished = tokio::select! {
        biased;
        _ = shutdown.changed() => false,
        r = &mut sink_task => return Err(sink_stopped(r)),
        r = work => { r?; true }
    };
    drop(reader);
    let r = sink_task
        .await
        .map_err(|e| Error::permanent(format!("the Kafka sink failed: {e}")))?;
    if let Some(ex) = exporter {
        let _ = ex.commit().await;
    }
    r?;
    if finished {
        tracing::info!(connector = %conn.name, "snapshot.mode initial_only: snapshot complete; not streaming");
    }
    Ok(())
}

struct TxnState {
    xid: u32,
    commit_lsn: Lsn,
    commit_ts_us: i64,
    total: u64,
    per_table: HashMap<u32, u64>,
    skip: bool,
    repl_origin: Option<Arc<crate::avro::envelope::ReplOrigin>>,
}

struct Reader<'a> {
    conn: &'a ConnectorConfig,
    catalog: Catalog,
    registry: Registry,
    topics: Topics,
    relations: RelationCache,
    /// Codecs of captured tables; a relation without one is not captured.
    codecs: HashMap<u32, Arc<TableCodec>>,
    txn: Option<TxnState>,
    last_commit: Lsn,
    skip_before: Lsn,
    tx: mpsc::Sender<SinkMsg>,
    origin: Arc<Origin>,
    snap: Incremental,
    policy: Arc<ValuePolicy>,
    /// Unchanged TOASTed values of the open transaction; events held for a fetch.
    toast: TxnToast,
    /// The connection `toast: fetch` reads rows back on, opened on first use.
    toast_conn: Option<SnapshotConn>,
}

impl Reader<'_> {
    async fn send(&self, m: SinkMsg) -> Result<()> {
        self.tx
            .send(m)
            .await
            .map_err(|_| Error::transient("the Kafka sink stopped"))
    }

    async fn handle(&mut self, lsn: Lsn, data: Bytes) -> Result<()> {
        let msg = decode::decode(data).map_err(|e| {
            Error::permanent(format!("connector {}: at LSN {lsn}: {e}", self.conn.name))
        })?;
        match msg {
            Message::Begin {
                final_lsn,
                commit_ts_us,
                xid,
            } => {
                self.toast.begin();
                self.txn = Some(TxnState {
                    xid,
                    commit_lsn: final_lsn,
                    commit_ts_us: commit_ts_us + decode::pgoutput::PG_EPOCH_OFFSET_MICROS,
                    total: 0,
                    per_table: HashMap::new(),
                    skip: final_lsn < self.skip_before,
                    repl_origin: None,
                });
            }
            Message::Commit {
                commit_lsn,
                end_lsn,
                commit_ts_us,
                ..
            } => {
                let txn = self
                    .txn
                    .take()
                    .ok_or_else(|| self.protocol("Commit without Begin"))?;
                if !txn.skip {
                    if self.toast.holding() {
                        let held = self.toast.take();
                        self.deliver_held(held, txn.xid).await?;
                    }
                    self.send(SinkMsg::TxnEnd {
                        commit_lsn,
                        end_lsn,
                        xid: txn.xid,
                        commit_ts_us: commit_ts_us + decode::pgoutput::PG_EPOCH_OFFSET_MICROS,
                    })
                    .await?;
                    metrics::TRANSACTIONS.fetch_add(1, Ordering::Relaxed);
                }
                self.last_commit = end_lsn;
            }
            Message::Relation(r) => {
                let rel = self.catalog.relation(&r, self.conn).await?;
                let captured = self.conn.captures(&rel.schema, &rel.table);
                // A schema barrier: snapshot reads of this table take its new shape (rebuilt at
                // once: the incremental window looks the table up for every change).
                let name = rel.qualified_name();
                let reshaped = self.snap.tables.get(&name).is_some_and(|t| {
                    let shape = |r: &decode::Relation| -> Vec<(String, u32, i32)> {
                        r.columns
                            .iter()
                            .map(|c| (c.name.clone(), c.type_oid, c.type_modifier))
                            .collect()
                    };
                    shape(&t.st.relation) != shape(&rel)
                });
                if reshaped {
                    self.snap.tables.remove(&name);
                    self.snap_table(&name).await?;
                }
                let rel = self.relations.insert(rel);
                if captured {
                    let codec = self.codec(rel).await?;
                    self.codecs.insert(r.oid, Arc::new(codec));
                } else {
                    self.codecs.remove(&r.oid);
                }
            }
            Message::Type { oid, .. } => self.catalog.invalidate_type(oid),
            Message::Origin { lsn, name } => {
                if let Some(t) = self.txn.as_mut() {
                    t.repl_origin = Some(Arc::new(crate::avro::envelope::ReplOrigin { name, lsn }));
                }
            }
            Message::Message {
                prefix, content, ..
            } => {
                if prefix == WATERMARK_PREFIX && self.txn.as_ref().is_some_and(|t| !t.skip) {
                    self.watermark(&content, lsn).await?;
                }
            }
            Message::Insert { rel, new } => {
                if self.is_signal(rel) {
                    return self.signal(&new).await;
                }
                let Some((codec, cx)) = self.change(rel, lsn)? else {
                    return Ok(());
                };
                self.snap.note_change(&codec.rel, cx.xid, &[&new]);
                self.toast.on_insert(&codec.rel, &new);
                let key = codec.key(&new)?;
                self.deliver(event(&codec, Op::Create, key, None, Some(new), cx))
                    .await?;
            }
            Message::Update {
                rel,
                old,
                key_only,
                new,
            } => {
                let Some((codec, cx)) = self.change(rel, lsn)? else {
                    return Ok(());
                };
                match &old {
                    Some(o) => self.snap.note_change(&codec.rel, cx.xid, &[o, &new]),
                    None => self.snap.note_change(&codec.rel, cx.xid, &[&new]),
                }
                let new = self.toast.update(&codec.rel, old.as_ref(), key_only, new);
                let new_key = codec.key(&new)?;
                let old_key = match &old {
                    Some(o) => codec.key(o)?,
                    None => None,
                };
                // A key-only old image gives Debezium's before: the key, other columns null.
                let mut marks = Marks::default();
                let before = match &old {
                    Some(o) => Some(codec.row(o, key_only, &mut marks)?),
                    None => None,
                };
                match old_key {
                    // A primary-key change: as Debezium, a delete (and tombstone) of the old
                    // key, then a create of the new one.
                    Some(ok) if Some(&ok) != new_key.as_ref() => {
                        let mut del = event(&codec, Op::Delete, Some(ok.clone()), before, None, cx);
                        del.marks = marks;
                        self.deliver(del).await?;
                        if self.conn.tombstones {
                            self.tombstone(&codec, ok).await?;
                        }
                        let cx2 = self.next_cx(rel, lsn);
                        self.deliver(event(&codec, Op::Create, new_key, None, Some(new), cx2))
                            .await?;
                    }
                    _ => {
                        let mut ev = event(&codec, Op::Update, new_key, before, Some(new), cx);
                        ev.marks = marks;
                        self.deliver(ev).await?
                    }
                }
            }
            Message::Delete { rel, old, key_only } => {
                let Some((codec, cx)) = self.change(rel, lsn)? else {
                    return Ok(());
                };
                self.snap.note_change(&codec.rel, cx.xid, &[&old]);
                self.toast.on_delete(&codec.rel, &old);
                let key = codec.key(&old)?;
                let mut marks = Marks::default();
                let before = codec.row(&old, key_only, &mut marks)?;
                let mut ev = event(&codec, Op::Delete, key.clone(), Some(before), None, cx);
                ev.marks = marks;
                self.deliver(ev).await?;
                if let (true, Some(k)) = (self.conn.tombstones, key) {
                    self.tombstone(&codec, k).await?;
                }
            }
            Message::Truncate { rels, .. } => {
                for rel in rels {
                    let Some((codec, cx)) = self.change(rel, lsn)? else {
                        continue;
                    };
                    self.snap.note_truncate(&codec.rel);
                    self.toast.on_truncate(&codec.rel);
                    self.deliver(event(&codec, Op::Truncate, None, None, None, cx))
                        .await?;
                }
            }
        }
        Ok(())
    }

    fn is_signal(&self, rel: u32) -> bool {
        // Per insert: compare the parts, no formatting.
        let Some((schema, table)) = self
            .conn
            .signal_table
            .as_deref()
            .and_then(|t| crate::config::qualified(t).ok())
        else {
            return false;
        };
        self.relations
            .get(rel)
            .is_some_and(|r| r.schema == schema && r.table == table)
    }

    /// A row inserted into the signal table: Debezium's `execute-snapshot` starts an
    /// incremental snapshot of the named tables. A bad signal is logged and ignored: the
    /// stream must not stop for it (`pgcdc snapshot` checks tables before signalling).
    async fn signal(&mut self, row: &decode::Tuple) -> Result<()> {
        if self.txn.as_ref().is_none_or(|t| t.skip) {
            return Ok(());
        }
        let Some(rel) = self.conn.signal_table.clone() else {
            return Ok(());
        };
        let cols = self
            .relations
            .iter()
            .find(|r| r.qualified_name() == rel)
            .map(|r| r.columns.iter().map(|c| c.name.clone()).collect::<Vec<_>>())
            .unwrap_or_default();
        let text = |name: &str| {
            cols.iter()
                .position(|c| c == name)
                .and_then(|i| match row.get(i) {
                    Some(decode::TupleData::Text(b)) => {
                        Some(String::from_utf8_lossy(b).into_owned())
                    }
                    _ => None,
                })
        };
        let id = text("id").unwrap_or_default();
        let kind = text("type").unwrap_or_default();
        let tables = match incremental::parse_signal(&kind, text("data").as_deref()) {
            Ok(Some(t)) => t,
            Ok(None) => {
                tracing::info!(connector = %self.conn.name, signal = %id, kind = %kind, "ignoring signal of a type pgcdc does not act on");
                return Ok(());
            }
            Err(e) => {
                metrics::SIGNAL_ERRORS.fetch_add(1, Ordering::Relaxed);
                tracing::error!(connector = %self.conn.name, signal = %id, table = %rel, "signal ignored: {e}");
                return Ok(());
            }
        };
        let mut work = Vec::new();
        for t in tables {
            let (schema, table) = match crate::config::qualified(&t) {
                Ok(st) => st,
                Err(e) => {
                    metrics::SIGNAL_ERRORS.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(connector = %self.conn.name, signal = %id, "signal ignored for {t:?}: {e}");
                    continue;
                }
            };
            if !self.conn.captures(schema, table) {
                metrics::SIGNAL_ERRORS.fetch_add(1, Ordering::Relaxed);
                tracing::error!(connector = %self.conn.name, signal = %id, table = %t, "signal ignored: the connector does not capture this table");
                continue;
            }
            let st = match self.snap_table(&t).await {
                Ok(st) => st,
                Err(e) if !e.is_transient() => {
                    metrics::SIGNAL_ERRORS.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(connector = %self.conn.name, signal = %id, table = %t, error = %e, "signal ignored");
                    continue;
                }
                Err(e) => return Err(e),
            };
            if st.st.pk.is_empty() {
                metrics::SIGNAL_ERRORS.fetch_add(1, Ordering::Relaxed);
                tracing::error!(connector = %self.conn.name, signal = %id, table = %t, "signal ignored: incremental snapshots need a primary key; add one");
                continue;
            }
            tracing::info!(connector = %self.conn.name, signal = %id, table = %t, "incremental snapshot requested");
            work.push(incremental::whole_table(&t, st.st.estimate.unwrap_or(0)));
        }
        if work.is_empty() {
            return Ok(());
        }
        self.snap.pending.extend(work.iter().cloned());
        self.send(SinkMsg::AddWork(work)).await?;
        self.next_chunk().await
    }

    /// Asks the driver for the next chunk when none is in flight.
    async fn next_chunk(&mut self) -> Result<()> {
        if self.snap.in_flight.is_some() {
            return Ok(());
        }
        let Some(w) = self.snap.pending.first().cloned() else {
            return Ok(());
        };
        if !self.snap.messages {
            return Err(Error::permanent(format!(
                "connector {}: table {} has snapshot work left (an interrupted initial snapshot or a signal), \
                 and finishing it consistently needs logical decoding messages, which pgoutput sends from \
                 PostgreSQL 14 on; upgrade, or delete the checkpoint to snapshot again from scratch",
                self.conn.name, crate::postgres::quote_raw_table(&w.table)
            )));
        }
        let t = self.snap_table(&w.table).await?;
        if t.st.pk.is_empty() {
            return Err(Error::permanent(format!(
                "connector {}: the initial snapshot of table {} was interrupted, and a table without a primary \
                 key cannot be finished consistently while streaming; add a primary key, or delete the checkpoint \
                 to snapshot again from scratch",
                self.conn.name, crate::postgres::quote_raw_table(&w.table)
            )));
        }
        let id = self.snap.next_id();
        let limit = self.conn.snapshot.incremental_chunk_rows;
        self.snap.in_flight = Some(InFlight {
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
        match &self.snap.requests {
            Some(r) => r
                .try_send(req)
                .map_err(|_| Error::transient("the snapshot reader stopped")),
            None => Ok(()),
        }
    }

    /// A watermark of ours in the stream: opens the chunk's window, or closes it and emits
    /// what of the chunk the stream did not overtake.
    async fn watermark(&mut self, content: &[u8], lsn: Lsn) -> Result<()> {
        let Ok(w) = serde_json::from_slice::<Watermark>(content) else {
            return Ok(());
        };
        if w.connector != self.conn.name {
            return Ok(());
        }
        let Some(f) = self.snap.in_flight.as_mut().filter(|f| f.id == w.id) else {
            return Ok(()); // left by an earlier run
        };
        if w.kind == WatermarkKind::Low {
            f.open = true;
            return Ok(());
        }
        let Some(f) = self.snap.in_flight.take() else {
            return Ok(());
        };
        let (rows, snap) = self
            .snap
            .chunks
            .lock()
            .map_err(|_| Error::permanent("snapshot chunk store poisoned"))?
            .remove(&f.id)
            .ok_or_else(|| self.protocol("high watermark before its chunk was read"))?;
        let t = self.snap_table(&f.table).await?;
        let last = rows.last().and_then(|r| key_of(&t.st, &t.positions, r));
        let finished = (rows.len() as u64) < f.limit;
        let overtaken = self.snap.overtaken(&f, &snap);
        let keep: Vec<decode::Tuple> = if f.truncated {
            Vec::new()
        } else {
            rows.into_iter()
                .filter(|r| key_of(&t.st, &t.positions, r).is_none_or(|k| !overtaken.contains(&k)))
                .collect()
        };
        let mark = match self.snap.pending.first().map(|w| w.kind) {
            Some(Kind::Initial) => SnapshotMark::True,
            _ => SnapshotMark::Incremental,
        };
        let at = self.txn.as_ref().map_or(
            initial::Position {
                lsn,
                xid: 0,
                ts_us: 0,
            },
            |x| initial::Position {
                lsn,
                xid: x.xid,
                ts_us: x.commit_ts_us,
            },
        );
        let records = initial::encode_reads(&t, &keep, &self.origin, at, |_, _| mark)?;
        metrics::EVENTS.fetch_add(records.len() as u64, Ordering::Relaxed);
        metrics::SNAPSHOT_ROWS.fetch_add(records.len() as u64, Ordering::Relaxed);
        let done = ChunkDone::Work {
            last: last.clone(),
            rows: keep.len() as u64,
            finished,
        };
        self.send(SinkMsg::Chunk {
            records,
            done,
            permit: None,
        })
        .await?;
        self.snap.advance(last, finished);
        if finished {
            tracing::info!(connector = %self.conn.name, table = %f.table, "incremental snapshot of table read (commits with this transaction)");
        }
        self.next_chunk().await
    }

    /// The snapshot view of a captured table (its codec registered), cached.
    async fn snap_table(&mut self, name: &str) -> Result<SnapTable> {
        if let Some(t) = self.snap.tables.get(name) {
            return Ok(t.clone());
        }
        let st = self.catalog.snapshot_table(name, self.conn).await?;
        let codec = Arc::new(self.codec(Arc::new(st.relation.clone())).await?);
        let t = SnapTable::new(st, codec)?;
        self.snap.tables.insert(name.to_string(), t.clone());
        Ok(t)
    }

    /// Every captured table, for an initial snapshot.
    async fn snapshot_tables(&mut self) -> Result<Vec<SnapTable>> {
        let names = self.catalog.captured_table_names(self.conn).await?;
        let mut out = Vec::with_capacity(names.len());
        for n in names {
            out.push(self.snap_table(&n).await?);
        }
        Ok(out)
    }

    fn protocol(&self, what: &str) -> Error {
        Error::permanent(format!(
            "connector {}: pgoutput protocol error: {what}",
            self.conn.name
        ))
    }

    /// The codec and position of a change to relation `rel`, or None when the change is not
    /// delivered (table not captured, or transaction before the checkpoint).
    fn change(&mut self, rel: u32, lsn: Lsn) -> Result<Option<(Arc<TableCodec>, ChangeContext)>> {
        if self.relations.get(rel).is_none() {
            return Err(self.protocol(&format!(
                "row change for relation {rel} before its Relation message"
            )));
        }
        let skip = self
            .txn
            .as_ref()
            .map(|t| t.skip)
            .ok_or_else(|| self.protocol("row change outside a transaction"))?;
        let Some(codec) = self.codecs.get(&rel).cloned() else {
            return Ok(None);
        };
        if skip {
            return Ok(None);
        }
        Ok(Some((codec, self.next_cx(rel, lsn))))
    }

    fn next_cx(&mut self, rel: u32, lsn: Lsn) -> ChangeContext {
        let last_commit = self.last_commit;
        let txn = self.txn.as_mut();
        let (xid, commit_lsn, commit_ts_us, total, table, repl_origin) = match txn {
            Some(t) => {
                t.total += 1;
                let per = t.per_table.entry(rel).or_insert(0);
                *per += 1;
                (
                    t.xid,
                    t.commit_lsn,
                    t.commit_ts_us,
                    t.total,
                    *per,
                    t.repl_origin.clone(),
                )
            }
            None => (0, Lsn::ZERO, 0, 0, 0, None),
        };
        ChangeContext {
            snapshot: SnapshotMark::False,
            xid,
            commit_lsn,
            commit_ts_us,
            lsn,
            last_commit_lsn: last_commit,
            total_order: total,
            table_order: table,
            repl_origin,
        }
    }

    /// Schemas registered and topic created for a captured relation.
    async fn codec(&mut self, rel: Arc<decode::Relation>) -> Result<TableCodec> {
        let prefix = &self.conn.topic_prefix;
        let topic = topic_name(prefix, &rel.schema, &rel.table);
        self.topics.ensure(&topic, None, &[]).await?;
        let key = match key_schema(prefix, &rel)? {
            Some(b) => {
                let id = self
                    .registry
                    .register(&format!("{topic}-key"), &b.json)
                    .await?;
                Some(Registered::new(id, b.schema)?)
            }
            None => {
                tracing::warn!(table = %rel.quoted_name(), "table has no primary key and no key_columns: its events have a null key");
                None
            }
        };
        let subject = format!("{topic}-value");
        let mut fields = crate::avro::fields::field_specs(&rel);
        let mut v = envelope_schema(prefix, &rel, &fields)?;
        let id = match self.registry.try_register(&subject, &v.json).await? {
            Ok(id) => id,
            Err(reason) => {
                // Subjects registered before pgcdc carried NOT NULL hold optional fields,
                // and a compatibility level (BACKWARD) refuses required ones: keep every
                // field optional, as those subjects are, rather than stop the stream.
                tracing::warn!(connector = %self.conn.name, subject = %subject, reason = %reason,
                    "the subject's compatibility level refuses required (NOT NULL) fields; registering them optional, as before \
                     (to carry NOT NULL, set the subject's compatibility to NONE for one registration, or use a new topic prefix)");
                fields = crate::avro::fields::all_optional(&fields);
                v = envelope_schema(prefix, &rel, &fields)?;
                self.registry.register(&subject, &v.json).await?
            }
        };
        Ok(TableCodec {
            field_names: field_names(&rel)?,
            fields,
            topic: topic.into(),
            key,
            value: Registered::new(id, v.schema)?,
            rel,
            policy: self.policy.clone(),
        })
    }
}

struct Sink {
    producer: TxProducer,
    offsets_topic: String,
    connector: String,
    limits: crate::config::TransactionConfig,
    flushed: watch::Sender<Lsn>,
    /// Everything before this position has been handed to the producer.
    position: Lsn,
    /// The position of the last committed checkpoint.
    committed: Lsn,
    /// Snapshot progress, written into every checkpoint; the sink is its only writer.
    snapshot: SnapshotState,
    last_progress_log: Instant,
}

struct OpenTxn {
    started: Instant,
    events: usize,
    bytes: u64,
}

impl Sink {
    fn starting_at(mut self, position: Lsn, snapshot: SnapshotState) -> Self {
        self.position = position;
        self.committed = position;
        self.snapshot = snapshot;
        self.flushed.send_replace(position);
        self
    }

    async fn run(mut self, mut rx: mpsc::Receiver<SinkMsg>) -> Result<()> {
        let mut open: Option<OpenTxn> = None;
        let mut at_boundary = true;
        let mut last_txn: Option<(Lsn, Lsn, u32, i64)> = None;
        let mut last_commit_at = Instant::now();
        loop {
            // When to commit without new input: an open transaction at a PostgreSQL
            // transaction boundary after max_interval; with nothing open, a heartbeat that
            // checkpoints idle progress and finds out early when another instance fenced us.
            let wake = match &open {
                Some(o) if at_boundary => Some(o.started + self.limits.max_interval),
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
                    self.begin(&mut open)?;
                    at_boundary = false;
                    self.write(&mut open, r).await?;
                }
                Some(SinkMsg::Chunk {
                    records,
                    done,
                    permit,
                }) => {
                    self.begin(&mut open)?;
                    for r in records {
                        self.write(&mut open, r).await?;
                    }
                    drop(permit);
                    if let Some(table) = self.snapshot.apply(&done) {
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
                Some(SinkMsg::AddWork(work)) => self.snapshot.add(work),
                Some(SinkMsg::TxnEnd {
                    commit_lsn,
                    end_lsn,
                    xid,
                    commit_ts_us,
                }) => {
                    at_boundary = true;
                    self.position = self.position.max(end_lsn);
                    last_txn = Some((commit_lsn, end_lsn, xid, commit_ts_us));
                    let full = open.as_ref().is_some_and(|o| {
                        o.events >= self.limits.max_events
                            || o.bytes >= self.limits.max_bytes
                            || o.started.elapsed() >= self.limits.max_interval
                    });
                    if full {
                        self.commit(&mut open, last_txn).await?;
                        last_commit_at = Instant::now();
                    }
                }
                Some(SinkMsg::Idle(lsn)) => {
                    if at_boundary {
                        self.position = self.position.max(lsn);
                    }
                }
                None => {
                    // Shutdown: commit what is whole, abort what is not.
                    if open.is_some() && at_boundary {
                        self.commit(&mut open, last_txn).await?;
                    } else if open.is_some() {
                        self.producer.abort().await?;
                    }
                    return Ok(());
                }
            }
        }
    }

    fn begin(&mut self, open: &mut Option<OpenTxn>) -> Result<()> {
        if open.is_none() {
            self.producer.begin()?;
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
            self.producer.begin()?;
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
        };
        self.producer
            .send(
                &self.offsets_topic,
                Some(self.connector.as_bytes()),
                Some(&ck.encode()?),
                &[],
            )
            .await?;
        let commit_started = Instant::now();
        if let Err(e) = self.producer.commit().await {
            let _ = self.producer.abort().await;
            return Err(e);
        }
        let events = open.as_ref().map_or(0, |o| o.events);
        *open = None;
        self.committed = self.position;
        metrics::KAFKA_COMMITS.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            connector = %self.connector,
            lsn = %self.position,
            events,
            commit_ms = commit_started.elapsed().as_millis() as u64,
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
