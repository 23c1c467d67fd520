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

use bytes::Bytes;
use tokio::sync::{mpsc, watch};

use crate::avro::envelope::{ChangeContext, Op, Origin, TableCodec};
use crate::avro::registry::Registry;
use crate::avro::schema::{envelope_schema, field_names, key_schema, topic_name};
use crate::avro::Registered;
use crate::checkpoint::{self, Checkpoint, CHECKPOINT_VERSION};
use crate::config::{ConnectorConfig, DaemonConfig};
use crate::decode::{self, Message, RelationCache};
use crate::error::{Error, Result};
use crate::kafka::producer::{transactional_id, TxProducer, MAX_RECORD_BYTES};
use crate::kafka::topics::Topics;
use crate::metrics;
use crate::postgres::feedback::{self, Positions};
use crate::postgres::{Catalog, ReplicationClient, StreamEvent};
use crate::Lsn;

/// Capacity of the reader → sink channel, in messages: bounded, so a slow Kafka slows the
/// reader (and PostgreSQL keeps the WAL) instead of growing memory.
const SINK_CHANNEL_CAPACITY: usize = 8192;
/// With no events, a checkpoint-only Kafka transaction this often: it confirms WAL progress
/// of an idle database to the slot, and a fenced producer (another instance took over)
/// learns it within this time and stops.
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);

/// What the reader hands the sink.
enum SinkMsg {
    Record {
        topic: Arc<str>,
        key: Option<Vec<u8>>,
        value: Option<Vec<u8>>,
    },
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
    let version = catalog.server_version_num().await?;

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
    let ck = tokio::task::spawn_blocking(move || checkpoint::read_last(&kcfg, &name))
        .await
        .map_err(|e| Error::permanent(format!("checkpoint reader failed: {e}")))??;
    let ck_pos = match &ck {
        Some(c) => Some(c.position()?),
        None => None,
    };

    let mut repl = ReplicationClient::connect(&conn.postgres, &app).await?;
    repl.identify_system().await?;
    let existing = catalog.slot(&slot).await?;
    let slot_pos = match &existing {
        Some(s) => s.confirmed_flush.unwrap_or(Lsn::ZERO),
        None => {
            let lsn = repl.create_slot(&slot).await?;
            tracing::info!(connector = %conn.name, slot = %slot, lsn = %lsn, "created replication slot");
            lsn
        }
    };
    if let Some(ck_pos) = ck_pos {
        if slot_pos > ck_pos {
            return Err(Error::permanent(format!(
                "connector {}: replication slot {slot} is at {slot_pos} but the last checkpoint in {} is at {ck_pos}: \
                 changes between them were acknowledged without being delivered (was the slot dropped and recreated?). \
                 pgcdc stops rather than skip them. To start over from the slot, delete the checkpoint by producing a \
                 tombstone (key {:?}, null value) to {}",
                conn.name, daemon.kafka.offsets_topic, conn.name, daemon.kafka.offsets_topic
            )));
        }
    }
    let start = ck_pos.unwrap_or(Lsn::ZERO).max(slot_pos);
    let interval = feedback::status_interval(&repl.show("wal_sender_timeout").await?);
    let (mut stream, status) = repl
        .start_replication(&slot, start, &publication, version >= 140_000)
        .await?;
    tracing::info!(connector = %conn.name, slot = %slot, lsn = %start, "streaming");

    let positions = Arc::new(Positions::default());
    positions.received.store(start.0, Ordering::Release);
    let (flushed_tx, flushed_rx) = watch::channel(start);
    let (reply_tx, reply_rx) = mpsc::channel(1);
    let fb = tokio::spawn(feedback::run(
        status,
        positions.clone(),
        flushed_rx,
        reply_rx,
        interval,
    ));

    let (tx, rx) = mpsc::channel(SINK_CHANNEL_CAPACITY);
    let sink = Sink {
        producer: producer.clone(),
        offsets_topic: daemon.kafka.offsets_topic.clone(),
        connector: conn.name.clone(),
        limits: daemon.kafka.transaction.clone(),
        flushed: flushed_tx,
        position: start,
        committed: start,
    };
    let mut sink_task = tokio::spawn(sink.run(rx));

    let mut reader = Reader {
        conn,
        catalog,
        registry: Registry::new(&daemon.schema_registry)?,
        topics,
        relations: RelationCache::default(),
        codecs: HashMap::new(),
        txn: None,
        last_commit: start,
        skip_before: start,
        tx,
        origin: Origin {
            name: conn.topic_prefix.clone(),
            db: conn.postgres.dbname.clone(),
        },
    };

    let result = loop {
        let ev = tokio::select! {
            biased;
            _ = shutdown.changed() => break Ok(()),
            r = &mut sink_task => break match r {
                Ok(Ok(())) => Err(Error::transient("the Kafka sink stopped")),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(Error::permanent(format!("the Kafka sink failed: {e}"))),
            },
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

struct TxnState {
    xid: u32,
    commit_lsn: Lsn,
    commit_ts_us: i64,
    total: u64,
    per_table: HashMap<u32, u64>,
    skip: bool,
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
    origin: Origin,
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
                self.txn = Some(TxnState {
                    xid,
                    commit_lsn: final_lsn,
                    commit_ts_us: commit_ts_us + decode::pgoutput::PG_EPOCH_OFFSET_MICROS,
                    total: 0,
                    per_table: HashMap::new(),
                    skip: final_lsn < self.skip_before,
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
                let rel = self.relations.insert(rel);
                if captured {
                    let codec = self.codec(rel).await?;
                    self.codecs.insert(r.oid, Arc::new(codec));
                } else {
                    self.codecs.remove(&r.oid);
                }
            }
            Message::Type { oid, .. } => self.catalog.invalidate_type(oid),
            Message::Origin { .. } | Message::Message { .. } => {}
            Message::Insert { rel, new } => {
                let Some((codec, cx)) = self.change(rel, lsn)? else {
                    return Ok(());
                };
                let key = codec.key(&new)?;
                let after = codec.row(&new, None)?;
                self.emit(&codec, Op::Create, key, None, Some(after), &cx)
                    .await?;
            }
            Message::Update { rel, old, new, .. } => {
                let Some((codec, cx)) = self.change(rel, lsn)? else {
                    return Ok(());
                };
                let new_key = codec.key(&new)?;
                let old_key = match &old {
                    Some(o) => codec.key(o)?,
                    None => None,
                };
                let after = codec.row(&new, old.as_ref())?;
                let before = match &old {
                    Some(o) => Some(codec.row(o, None)?),
                    None => None,
                };
                match old_key {
                    // A primary-key change: as Debezium, a delete (and tombstone) of the old
                    // key, then a create of the new one.
                    Some(ok) if Some(&ok) != new_key.as_ref() => {
                        self.emit(&codec, Op::Delete, Some(ok.clone()), before, None, &cx)
                            .await?;
                        if self.conn.tombstones {
                            self.tombstone(&codec, ok).await?;
                        }
                        let cx2 = self.next_cx(rel, lsn);
                        self.emit(&codec, Op::Create, new_key, None, Some(after), &cx2)
                            .await?;
                    }
                    _ => {
                        self.emit(&codec, Op::Update, new_key, before, Some(after), &cx)
                            .await?
                    }
                }
            }
            Message::Delete { rel, old, .. } => {
                let Some((codec, cx)) = self.change(rel, lsn)? else {
                    return Ok(());
                };
                let key = codec.key(&old)?;
                let before = codec.row(&old, None)?;
                self.emit(&codec, Op::Delete, key.clone(), Some(before), None, &cx)
                    .await?;
                if let (true, Some(k)) = (self.conn.tombstones, key) {
                    self.tombstone(&codec, k).await?;
                }
            }
            Message::Truncate { rels, .. } => {
                for rel in rels {
                    let Some((codec, cx)) = self.change(rel, lsn)? else {
                        continue;
                    };
                    self.emit(&codec, Op::Truncate, None, None, None, &cx)
                        .await?;
                }
            }
        }
        Ok(())
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
        let (xid, commit_lsn, commit_ts_us, total, table) = match txn {
            Some(t) => {
                t.total += 1;
                let per = t.per_table.entry(rel).or_insert(0);
                *per += 1;
                (t.xid, t.commit_lsn, t.commit_ts_us, t.total, *per)
            }
            None => (0, Lsn::ZERO, 0, 0, 0),
        };
        ChangeContext {
            xid,
            commit_lsn,
            commit_ts_us,
            lsn,
            last_commit_lsn: last_commit,
            total_order: total,
            table_order: table,
        }
    }

    async fn emit(
        &self,
        codec: &TableCodec,
        op: Op,
        key: Option<apache_avro::types::Value>,
        before: Option<apache_avro::types::Value>,
        after: Option<apache_avro::types::Value>,
        cx: &ChangeContext,
    ) -> Result<()> {
        let what = || format!("table {}", codec.rel.qualified_name());
        let key = match (key, &codec.key) {
            (Some(k), Some(ks)) => Some(ks.encode(k, &what)?),
            _ => None,
        };
        let value = codec
            .value
            .encode(codec.envelope(op, before, after, &self.origin, cx), &what)?;
        let size = value.len() + key.as_ref().map_or(0, Vec::len);
        if size > MAX_RECORD_BYTES {
            return Err(Error::permanent(format!(
                "table {}: a change at LSN {} encodes to {size} bytes, over pgcdc's record limit of {MAX_RECORD_BYTES} bytes; \
                 pgcdc stops rather than drop or truncate it (store such values outside the row, or exclude the table)",
                codec.rel.qualified_name(),
                cx.lsn
            )));
        }
        metrics::EVENTS.fetch_add(1, Ordering::Relaxed);
        self.send(SinkMsg::Record {
            topic: codec.topic.clone(),
            key,
            value: Some(value),
        })
        .await
    }

    async fn tombstone(&self, codec: &TableCodec, key: apache_avro::types::Value) -> Result<()> {
        let Some(ks) = &codec.key else { return Ok(()) };
        let key = ks.encode(key, &|| format!("table {}", codec.rel.qualified_name()))?;
        self.send(SinkMsg::Record {
            topic: codec.topic.clone(),
            key: Some(key),
            value: None,
        })
        .await
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
                tracing::warn!(table = %rel.qualified_name(), "table has no primary key and no key_columns: its events have a null key");
                None
            }
        };
        let v = envelope_schema(prefix, &rel)?;
        let id = self
            .registry
            .register(&format!("{topic}-value"), &v.json)
            .await?;
        Ok(TableCodec {
            field_names: field_names(&rel)?,
            topic: topic.into(),
            key,
            value: Registered::new(id, v.schema)?,
            rel,
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
}

struct OpenTxn {
    started: Instant,
    events: usize,
    bytes: u64,
}

impl Sink {
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
                Some(SinkMsg::Record { topic, key, value }) => {
                    if open.is_none() {
                        self.producer.begin()?;
                        open = Some(OpenTxn {
                            started: Instant::now(),
                            events: 0,
                            bytes: 0,
                        });
                    }
                    at_boundary = false;
                    let size =
                        key.as_ref().map_or(0, |k| k.len()) + value.as_ref().map_or(0, |v| v.len());
                    self.producer
                        .send(&topic, key.as_deref(), value.as_deref())
                        .await?;
                    if let Some(o) = open.as_mut() {
                        o.events += 1;
                        o.bytes += size as u64;
                    }
                }
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
            snapshot: None,
        };
        self.producer
            .send(
                &self.offsets_topic,
                Some(self.connector.as_bytes()),
                Some(&ck.encode()),
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
        Ok(())
    }
}
