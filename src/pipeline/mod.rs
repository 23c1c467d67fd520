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

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use crate::avro::envelope::Origin;
use crate::avro::policy::ValuePolicy;
use crate::avro::registry::Registry;
use crate::checkpoint;
use crate::checkpoint::progress::SnapshotState;
use crate::config::{ConnectorConfig, DaemonConfig, SnapshotMode};
use crate::decode::RelationCache;
use crate::error::{Code, Error, Result};
use crate::kafka::producer::{transactional_id, TxProducer};
use crate::kafka::sink::{Sink, SinkMsg};
use crate::kafka::topics::Topics;
use crate::metrics;
use crate::postgres::feedback::{self, Positions};
use crate::postgres::snapshot::SnapshotConn;
use crate::postgres::{Catalog, ReplicationClient, StreamEvent};
use crate::snapshot::incremental::{self, ChunkBox, Incremental};
use crate::snapshot::initial;
use crate::startup::Start;
use crate::toast::TxnToast;
use crate::Lsn;

mod ddl;
mod deliver;
mod heartbeat;
mod initial_only;
mod outbox;
mod reader;
mod signals;
use deliver::event;
use initial_only::initial_only;
use reader::Reader;

/// Capacity of the reader → sink channel, in messages: bounded, so a slow Kafka slows the
/// reader (and PostgreSQL keeps the WAL) instead of growing memory.
const SINK_CHANNEL_CAPACITY: usize = 8192;
/// How often a running connector checks that its publication still publishes every
/// captured table.
const PUBLICATION_CHECK_INTERVAL: Duration = Duration::from_secs(10);

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
        return Err(Error::permanent(
            Code::Preflight,
            format!("connector {}: {first}{more}", conn.name),
        ));
    }
    catalog.ensure_publication(conn).await?;
    catalog.cover_tables(conn).await?;
    catalog.ensure_signal_table(conn).await?;
    let version = catalog.server_version_num().await?;
    let messages = version >= 140_000;

    // A property librdkafka refuses is permanent; then Kafka answers within 10 s, or the
    // operator reads pgcdc's own line (not librdkafka's retries) and the connector retries.
    crate::kafka::check_config(&daemon.kafka, &conn.name)?;
    crate::kafka::check_brokers(&daemon.kafka, &conn.name).await?;
    let producer = TxProducer::new(&daemon.kafka, &transactional_id(&conn.name), &conn.name)?;
    producer.init().await?;
    let mut topics = Topics::new(&daemon.kafka, &conn.name)?;
    topics
        .ensure(
            &daemon.kafka.offsets_topic,
            Some(1),
            &[("cleanup.policy", "compact")],
        )
        .await?;
    let kcfg = daemon.kafka.clone();
    let name = conn.name.clone();
    let (ck, claim) =
        tokio::task::spawn_blocking(move || crate::kafka::offsets::read_state(&kcfg, &name))
            .await
            .map_err(|e| {
                Error::permanent(Code::Internal, format!("checkpoint reader failed: {e}"))
            })??;
    // Both sinks answer before a slot is created or a snapshot begins: a retry while one is
    // down never has anything to undo.
    crate::avro::registry::check(&daemon.schema_registry).await?;
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
        event_counters: HashMap::new(),
        txmeta: None,
        meta_txn: None,
        messages: None,
        heartbeat: None,
        outbox: (conn.outbox.table.is_some() || conn.outbox.message_prefix.is_some())
            .then(outbox::Outbox::default),
        schema_changes: None,
    };
    if conn.schema_changes {
        let codec = crate::avro::schema_change::SchemaChangeCodec::register(
            &mut reader.registry,
            &conn.topic_prefix,
        )
        .await?;
        reader.topics.ensure(codec.topic(), None, &[]).await?;
        reader.schema_changes = Some(codec);
    }
    if conn.provide_transaction_metadata {
        let meta =
            crate::avro::txmeta::TxMeta::register(&mut reader.registry, &conn.topic_prefix).await?;
        reader.topics.ensure(meta.topic(), None, &[]).await?;
        reader.txmeta = Some(meta);
    }
    if conn.messages.enabled {
        let codec =
            crate::avro::message::MessageCodec::register(&mut reader.registry, &conn.topic_prefix)
                .await?;
        reader.topics.ensure(codec.topic(), None, &[]).await?;
        reader.messages = Some(codec);
    }
    if let Some(interval) = conn.heartbeat.interval {
        let topic = conn.heartbeat.topic(&conn.topic_prefix);
        let codec = crate::avro::heartbeat::HeartbeatCodec::register(
            &mut reader.registry,
            &topic,
            &conn.topic_prefix,
        )
        .await?;
        reader.topics.ensure(codec.topic(), None, &[]).await?;
        reader.heartbeat = Some(heartbeat::Beat {
            codec,
            interval,
            last: Instant::now(),
        });
    }
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
    crate::startup::check_identity(
        conn,
        ck.as_ref(),
        &sys,
        existing.is_some(),
        &daemon.kafka.offsets_topic,
    )?;
    let sink = sink.identified(&sys);
    let decision = crate::startup::decide(conn, ck.as_ref(), claim.as_ref(), existing.as_ref())
        .map_err(|e| {
            if e.kind() == crate::error::Kind::Permanent {
                e.context(format_args!("connector {}", conn.name))
            } else {
                e
            }
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
    // The snapshot progress the checkpoint left, to go on with.
    let resumed = || {
        ck.as_ref()
            .and_then(|c| c.snapshot.clone())
            .unwrap_or_default()
            .resume()
    };
    // `on_slot_lost: resnapshot`: the gap notice, written in the first Kafka transaction.
    let mut gap_notice: Option<crate::avro::notification::Notification> = None;
    let (start, exported, state) = if let Start::Resnapshot {
        drop_existing,
        lost,
    } = &decision
    {
        if *drop_existing {
            repl.drop_slot(&slot).await?;
        }
        let slot_pos = match (&existing, drop_existing) {
            (Some(s), false) => s.confirmed_flush.unwrap_or(Lsn::ZERO),
            _ => {
                let lsn = repl.create_slot(&slot, conn.slot_failover).await?;
                claim(lsn).await?;
                lsn
            }
        };
        let mut state = resumed();
        let (keyed, keyless): (Vec<_>, Vec<_>) = reader
            .snapshot_tables()
            .await?
            .into_iter()
            .partition(|t| !t.st.pk.is_empty());
        let names = |ts: &[crate::snapshot::initial::SnapTable]| {
            ts.iter()
                .map(|t| t.st.relation.qualified_name())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (reread, not_reread) = (names(&keyed), names(&keyless));
        state.add(
            keyed
                .iter()
                .map(|t| {
                    incremental::whole_table(
                        &t.st.relation.qualified_name(),
                        t.st.estimate.unwrap_or(0),
                    )
                })
                .collect(),
        );
        let from = ck.as_ref().map(|c| c.lsn.clone()).unwrap_or_default();
        tracing::error!(connector = %conn.name, slot = %slot, lost = %lost, from = %from, to = %slot_pos, tables = %reread, without_key = %not_reread,
            "on_slot_lost: resnapshot: changes between the checkpoint and the new slot are lost; re-reading every table while streaming");
        metrics::count_connector(&conn.name, metrics::ConnectorEvent::SlotLost);
        let mut data = vec![
            ("connector_name".to_owned(), conn.name.clone()),
            ("slot".to_owned(), slot.clone()),
            ("reason".to_owned(), lost.clone()),
            ("lost_from_lsn".to_owned(), from),
            ("resumed_at_lsn".to_owned(), slot_pos.to_string()),
            ("data_collections".to_owned(), reread),
        ];
        if !not_reread.is_empty() {
            data.push(("not_reread_without_primary_key".to_owned(), not_reread));
        }
        gap_notice = Some(crate::avro::notification::Notification {
            id: format!("{}-slot-lost-{}", conn.name, slot_pos),
            kind: "SLOT_LOST".to_owned(),
            aggregate_type: "Replication Slot".to_owned(),
            additional_data: data,
            timestamp_ms: crate::clock::now_micros() / 1000,
        });
        (slot_pos, None, state)
    } else if let Start::Snapshot { drop_existing } = decision {
        if drop_existing {
            tracing::warn!(connector = %conn.name, slot = %slot, "dropping the replication slot pgcdc created earlier, to recreate it with a snapshot (snapshot.mode {:?})", conn.snapshot.mode);
            repl.drop_slot(&slot).await?;
        }
        let (lsn, name) = repl.create_slot_exported(&slot, conn.slot_failover).await?;
        claim(lsn).await?;
        tracing::info!(connector = %conn.name, slot = %slot, lsn = %lsn, snapshot = %name, "created replication slot with an exported snapshot");
        (lsn, Some(name), SnapshotState::default())
    } else {
        let slot_pos = match &existing {
            Some(s) => {
                if s.failover.is_some_and(|f| f != conn.slot_failover) {
                    repl.set_slot_failover(&slot, conn.slot_failover).await?;
                    tracing::info!(connector = %conn.name, slot = %slot, failover = conn.slot_failover, "replication slot altered to follow slot_failover");
                }
                s.confirmed_flush.unwrap_or(Lsn::ZERO)
            }
            None => {
                let lsn = repl.create_slot(&slot, conn.slot_failover).await?;
                claim(lsn).await?;
                tracing::info!(connector = %conn.name, slot = %slot, lsn = %lsn, "created replication slot");
                lsn
            }
        };
        if let Some(ck_pos) = ck_pos {
            if slot_pos > ck_pos {
                return Err(Error::permanent(Code::Slot, format!(
                    "connector {}: replication slot {slot} is at {slot_pos} but the last checkpoint in {} is at {ck_pos}: \
                     changes between them were acknowledged without being delivered (was the slot dropped and recreated?). \
                     pgcdc stops rather than skip them. To re-snapshot instead, set snapshot.mode: when_needed; to start \
                     over, delete the checkpoint by producing a tombstone (key {:?}, null value) to {}",
                    conn.name, daemon.kafka.offsets_topic, conn.name, daemon.kafka.offsets_topic
                )));
            }
        }
        let state = resumed();
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
            return sink_task.await.map_err(|e| {
                Error::permanent(Code::Internal, format!("the Kafka sink failed: {e}"))
            })?;
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
        reader.snap.resume(state.pending.clone());
        sink_task = tokio::spawn(sink.starting_at(start, state).run(rx));
    }
    if let Some(n) = &gap_notice {
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
        .start_replication(&slot, start, &publication, messages)
        .await?;
    tracing::info!(connector = %conn.name, slot = %slot, lsn = %start, "streaming");
    crate::health::set(&conn.name, crate::health::State::Running);
    let live = metrics::live(&conn.name);

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
    reader.snap.attach(req_tx, chunks, messages);
    reader.next_chunk().await?;
    let _heartbeat_action = conn
        .heartbeat
        .interval
        .map(|i| heartbeat::spawn_action(conn, i));

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
                Ok(Ok(())) => Error::transient(Code::Internal, "the snapshot reader stopped"),
                Err(e) => Error::permanent(Code::Internal, format!("the snapshot reader failed: {e}")),
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
                live.server_wal_end.fetch_max(wal_end.0, Ordering::Relaxed);
                reader.handle(wal_start, data).await
            }
            Ok(StreamEvent::Keepalive {
                wal_end,
                reply_requested,
            }) => {
                positions.received.fetch_max(wal_end.0, Ordering::AcqRel);
                live.server_wal_end.fetch_max(wal_end.0, Ordering::Relaxed);
                if reply_requested {
                    let _ = reply_tx.try_send(());
                }
                if reader.txn.is_none() {
                    match reader.send(SinkMsg::Idle(wal_end)).await {
                        Ok(()) => reader.beat(wal_end).await,
                        e => e,
                    }
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
            Err(e) => Err(Error::permanent(
                Code::Internal,
                format!("the Kafka sink failed: {e}"),
            )),
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

pub(super) fn sink_stopped(r: std::result::Result<Result<()>, tokio::task::JoinError>) -> Error {
    match r {
        Ok(Ok(())) => Error::transient(Code::Internal, "the Kafka sink stopped"),
        Ok(Err(e)) => e,
        Err(e) => Error::permanent(Code::Internal, format!("the Kafka sink failed: {e}")),
    }
}
