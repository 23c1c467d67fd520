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

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::avro::envelope::Origin;
use crate::config::{ConnectorConfig, DaemonConfig, SnapshotMode};
use crate::error::{Code, Error, Result};
use crate::kafka::sink::{Sink, SinkMsg, SinkRx};
use crate::metrics;
use crate::postgres::feedback::{self, Positions};
use crate::postgres::snapshot::SnapshotConn;
use crate::postgres::{Catalog, ReplicationClient};
use crate::snapshot::incremental::{self, ChunkBox};
use crate::snapshot::initial;
use crate::Lsn;

mod ddl;
mod deliver;
mod heartbeat;
mod initial_only;
mod outbox;
pub mod plan;
mod prepare;
mod reader;
mod signals;
mod start;
mod stream;
pub mod takeover;
use initial_only::initial_only;
use reader::Reader;

/// Capacity of the reader → sink channel, in messages: bounded, so a slow Kafka slows the
/// reader (and PostgreSQL keeps the WAL) instead of growing memory.
const SINK_CHANNEL_CAPACITY: usize = 8192;

/// Runs the connector until `shutdown` turns true (Ok) or an error stops it.
pub async fn run(
    daemon: &DaemonConfig,
    conn: &ConnectorConfig,
    mut shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let app = format!("pgcdc-{}", conn.name);
    let slot = conn.slot_name();
    let catalog = Catalog::connect(&conn.postgres, conn.numeric_mode, &app).await?;
    let messages = prepare::database(conn, &catalog).await?;
    if !prepare::stand_by(conn, &catalog, &mut shutdown).await? {
        return Ok(());
    }
    let kafka = prepare::kafka(daemon, conn).await?;
    let (producer, mut ck, claim) = (kafka.producer, kafka.ck, kafka.claim);
    if let (None, Some(from)) = (&ck, &conn.from_debezium) {
        // First start of a connector that continues Debezium's stream.
        let t = takeover::plan(daemon, conn, from, None).await?;
        tracing::info!(connector = %conn.name, "taking over from Debezium:\n{}", t.describe(conn, daemon));
        ck = Some(
            t.write(conn, &producer, &daemon.kafka.offsets_topic)
                .await?,
        );
    }

    let (tx, rx) = crate::kafka::sink::channel(
        SINK_CHANNEL_CAPACITY,
        usize::try_from(daemon.kafka.buffer_bytes).unwrap_or(usize::MAX),
    );
    let origin = Arc::new(Origin {
        name: conn.topic_prefix.clone(),
        db: conn.postgres.dbname.clone(),
    });
    let mut reader = Reader::new(
        conn,
        catalog,
        kafka.topics,
        kafka.registry,
        tx,
        origin.clone(),
    )
    .await?;
    let (flushed_tx, flushed_rx) = watch::channel(Lsn::ZERO);
    let sink = Sink::new(
        producer.clone(),
        daemon.kafka.offsets_topic.clone(),
        conn.name.clone(),
        daemon.kafka.transaction.clone(),
        flushed_tx,
    );

    if conn.snapshot.mode == SnapshotMode::InitialOnly {
        return initial_only(reader, sink, rx, ck, &app, shutdown).await;
    }

    let mut repl = ReplicationClient::connect(&conn.postgres, &app).await?;
    let sys = repl.identify_system().await?;
    let existing = reader.catalog.slot(&slot).await?;
    crate::pipeline::plan::check_identity(
        conn,
        ck.as_ref(),
        &sys,
        existing.is_some(),
        &daemon.kafka.offsets_topic,
    )?;
    let sink = sink.identified(&sys);
    let decision =
        crate::pipeline::plan::plan_start(conn, ck.as_ref(), claim.as_ref(), existing.as_ref())
            .map_err(|e| {
                if e.kind() == crate::error::Kind::Permanent {
                    e.context(format_args!("connector {}", conn.name))
                } else {
                    e
                }
            })?;
    let opened = start::Slot {
        conn,
        offsets_topic: &daemon.kafka.offsets_topic,
        producer: &producer,
        ck: ck.as_ref(),
        existing: existing.as_ref(),
    }
    .open(decision, &mut repl, &mut reader)
    .await?;
    let start = opened.start;
    reader.last_commit = start;
    reader.skip_before = start;
    let seam = ck.as_ref().and_then(|c| c.takeover.clone());
    reader.seam_within = seam.as_ref().and_then(|s| s.within().map(|w| (w, s.xid)));
    let sink = sink.continuing(seam);

    let sink_task = if let Some(name) = opened.exported {
        match initial_snapshot(reader, sink, rx, &name, start, &app, &mut shutdown).await? {
            Some((r, task)) => {
                reader = r;
                task
            }
            // Stopped: the sink committed the chunks it had whole; the rest resumes later.
            None => return Ok(()),
        }
    } else {
        reader.snap.resume(opened.state.clone());
        tokio::spawn(sink.starting_at(start, opened.state).run(rx))
    };
    if let Some(n) = &opened.gap_notice {
        let codec = crate::avro::notification::NotificationCodec::register(
            &mut reader.registry,
            &conn.topic_prefix,
        )
        .await?;
        reader.topics.ensure(codec.topic(), None, &[]).await?;
        reader.send(SinkMsg::Record(codec.record(n)?)).await?;
        reader.send(SinkMsg::Boundary(start)).await?;
    }

    let interval = feedback::status_interval(&repl.show("wal_sender_timeout").await?);
    let (mut stream, status) = repl
        .start_replication(&slot, start, &conn.publication_name(), messages)
        .await?;
    tracing::info!(connector = %conn.name, slot = %slot, lsn = %start, "streaming");
    crate::health::set(&conn.name, crate::health::State::Running);

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
    let driver = tokio::spawn(incremental::driver(
        SnapshotConn::connect(&conn.postgres, &app).await?,
        conn.name.clone(),
        req_rx,
        chunks.clone(),
    ));
    reader.snap.attach(req_tx, chunks, messages);
    reader.next_chunk().await?;
    let _heartbeat_action = conn
        .heartbeat
        .interval
        .map(|i| heartbeat::spawn_action(conn, i));

    let mut tasks = stream::Tasks {
        sink: sink_task,
        sink_taken: false,
        driver,
    };
    let feed = stream::Feed {
        positions,
        live: metrics::live(&conn.name),
        reply: reply_tx,
    };
    let result = stream::run(
        conn,
        &mut reader,
        &mut stream,
        &mut tasks,
        &feed,
        &mut shutdown,
    )
    .await;

    // Close the channel: the sink commits what is complete, aborts what is not, and stops.
    drop(reader);
    tasks.driver.abort();
    let sink_result = if tasks.sink_taken {
        Ok(())
    } else {
        match tasks.sink.await {
            Ok(r) => r,
            Err(e) => Err(Error::permanent(
                Code::Internal,
                format!("the Kafka sink failed: {e}"),
            )),
        }
    };
    // Let the feedback task report the final flush position before it goes.
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(feed);
    fb.abort();
    match (result, sink_result) {
        // The reader stopped because the sink did (its channel closed): the sink says why.
        (Err(e), Err(sink)) if e.code() == Code::SinkStopped => Err(sink),
        (result, sink) => result.and(sink),
    }
}

/// Reads the tables inside the slot's exported snapshot while the sink commits their
/// chunks. The reader and the sink task to stream on, or None when shutdown came first (the sink has then
/// committed the chunks it had whole, and stopped).
async fn initial_snapshot<'a>(
    mut reader: Reader<'a>,
    sink: Sink,
    rx: SinkRx,
    exported: &str,
    start: Lsn,
    app: &str,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<Option<(Reader<'a>, JoinHandle<Result<()>>)>> {
    let conn = reader.conn;
    let tables = reader.snapshot_tables().await?;
    let plan = initial::plan(
        &conn.postgres,
        app,
        exported,
        start,
        conn.snapshot.chunk_rows,
        tables,
    )
    .await?;
    let mut sink_task = tokio::spawn(sink.starting_at(start, plan.state()).run(rx));
    let started = Instant::now();
    let work = initial::run(
        &conn.postgres,
        app,
        exported,
        conn.snapshot.workers,
        plan,
        reader.origin.clone(),
        reader.tx.clone(),
    );
    let done = tokio::select! {
        biased;
        _ = shutdown.changed() => None,
        r = &mut sink_task => return Err(sink_stopped(r)),
        r = work => Some(r?),
    };
    let Some((rows, state)) = done else {
        // Stop: dropping the reader closes the channel; the sink commits what it has whole.
        drop(reader);
        return match sink_task.await {
            Ok(r) => r.map(|()| None),
            Err(e) => Err(Error::permanent(
                Code::Internal,
                format!("the Kafka sink failed: {e}"),
            )),
        };
    };
    // The stream's incremental snapshots go on from the state the initial one ended with.
    reader.snap.resume(state);
    let secs = started.elapsed().as_secs_f64();
    tracing::info!(
        connector = %conn.name,
        rows,
        secs = format!("{secs:.1}"),
        rows_per_sec = (rows as f64 / secs.max(1e-3)) as u64,
        "initial snapshot read; streaming from its consistent point"
    );
    Ok(Some((reader, sink_task)))
}

pub(super) fn sink_stopped(r: std::result::Result<Result<()>, tokio::task::JoinError>) -> Error {
    match r {
        Ok(Ok(())) => Error::transient(Code::Internal, "the Kafka sink stopped"),
        Ok(Err(e)) => e,
        Err(e) => Error::permanent(Code::Internal, format!("the Kafka sink failed: {e}")),
    }
}
