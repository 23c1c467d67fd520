//! Before a slot is touched: the database passes preflight and publishes every captured
//! table, Kafka answers (producer initialised, offsets topic there, the checkpoint read
//! back), the registry answers, and the side topics' codecs are registered. A failure here
//! has nothing to undo.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use crate::avro::envelope::Origin;
use crate::avro::policy::ValuePolicy;
use crate::avro::registry::Registry;
use crate::checkpoint::{Checkpoint, SlotClaim};
use crate::config::{ConnectorConfig, DaemonConfig, RegistryConfig};
use crate::decode::RelationCache;
use crate::error::{retry, Code, Error, Result, IN_PLACE};
use crate::kafka::producer::{transactional_id, TxProducer};
use crate::kafka::sink::SinkTx;
use crate::kafka::topics::Topics;
use crate::postgres::Catalog;
use crate::snapshot::incremental::Incremental;
use crate::toast::TxnToast;
use crate::Lsn;

use super::heartbeat::AbortOnDrop;
use super::reader::Reader;
use super::{heartbeat, outbox};

/// Preflight (the first problem stops the connector, `pgcdc validate` lists them all), then
/// the publication and signal table. Returns whether the server sends logical decoding
/// messages (14+).
pub(super) async fn database(conn: &ConnectorConfig, catalog: &Catalog) -> Result<bool> {
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
    Ok(catalog.server_version_num().await? >= 140_000)
}

/// High availability: while the slot is active in another session of this connector (another
/// instance, by its application_name), waits, saying so once: initialising the producer would
/// fence that instance. Polls often enough to take over within `takeover` of the slot's
/// release. Returns false when shutdown came first.
pub(super) async fn stand_by(
    conn: &ConnectorConfig,
    catalog: &Catalog,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<bool> {
    let slot = conn.slot_name();
    let poll = (conn.takeover / 4).max(std::time::Duration::from_millis(100));
    let mut waiting_since: Option<Instant> = None;
    // pgcdc's replication sessions carry this application_name; a slot active in any other
    // session (pg_recvlogical, another tool) is not a peer's, and the start decision
    // reports it.
    let peer_app = format!("pgcdc-{}", conn.name);
    loop {
        let mut active = catalog.slot(&slot).await?.filter(|s| s.active);
        if let Some(pid) = active.as_ref().and_then(|s| s.active_pid) {
            if catalog.application_name(pid).await?.as_deref() != Some(peer_app.as_str()) {
                active = None;
            }
        }
        match (active, waiting_since) {
            (None, None) => return Ok(true),
            (None, Some(since)) => {
                tracing::info!(connector = %conn.name, slot = %slot, waited_s = since.elapsed().as_secs(),
                    "replication slot released: taking over");
                crate::health::set(&conn.name, crate::health::State::Starting);
                return Ok(true);
            }
            (Some(s), None) => {
                let pid = s
                    .active_pid
                    .map_or_else(|| "?".to_owned(), |p| p.to_string());
                tracing::warn!(connector = %conn.name, slot = %slot, active_pid = %pid, takeover = ?conn.takeover,
                    "replication slot {slot} is active in another instance of this connector (walsender pid {pid}): standing by, taking over when it is released");
                crate::health::set(&conn.name, crate::health::State::Standby);
                waiting_since = Some(Instant::now());
            }
            (Some(_), Some(_)) => {}
        }
        tokio::select! {
            _ = shutdown.changed() => return Ok(false),
            _ = tokio::time::sleep(poll) => {}
        }
    }
}

/// What Kafka holds for this connector, with the producer that writes it.
pub(super) struct KafkaState {
    pub(super) producer: TxProducer,
    pub(super) topics: Topics,
    pub(super) ck: Option<Checkpoint>,
    pub(super) claim: Option<SlotClaim>,
    pub(super) registry: Registry,
}

/// Kafka and the registry both answer before a slot is created or a snapshot begins: a
/// retry while one is down never has anything to undo.
pub(super) async fn kafka(daemon: &DaemonConfig, conn: &ConnectorConfig) -> Result<KafkaState> {
    // The registry does not depend on Kafka: checked meanwhile (building its client loads
    // the CA bundle, ~35 ms, and it answers in ~40 ms more). Kafka's error comes first and
    // calls the check off (dropping the guard aborts it; it has nothing to undo).
    let mut registry = AbortOnDrop(tokio::spawn(checked_registry(
        daemon.schema_registry.clone(),
    )));
    let (producer, topics, ck, claim) = kafka_only(daemon, conn).await?;
    let registry = (&mut registry.0).await.map_err(|e| {
        Error::permanent(Code::Internal, format!("registry check failed: {e}")).with_source(e)
    })??;
    Ok(KafkaState {
        producer,
        topics,
        ck,
        claim,
        registry,
    })
}

async fn checked_registry(cfg: RegistryConfig) -> Result<Registry> {
    let registry = Registry::new(&cfg)?;
    retry(IN_PLACE, "checking the schema registry", || {
        registry.check()
    })
    .await?;
    Ok(registry)
}

async fn kafka_only(
    daemon: &DaemonConfig,
    conn: &ConnectorConfig,
) -> Result<(TxProducer, Topics, Option<Checkpoint>, Option<SlotClaim>)> {
    // A property librdkafka refuses is permanent (creating the producer says so, before
    // anything else is asked of Kafka); then Kafka answers within 10 s, or the operator
    // reads pgcdc's own line (not librdkafka's retries) and the connector retries.
    // Created before the broker check (it claims nothing yet), so that its connections come
    // up during the check: created after it, init_transactions took ~505 ms in 5 of 8 starts
    // (55-90 ms in the others), created before it 32-95 ms in 16 of 16.
    let producer = TxProducer::new(&daemon.kafka, &transactional_id(&conn.name), &conn.name)?;
    crate::kafka::check_brokers(&daemon.kafka, &conn.name).await?;
    let mut topics = Topics::new(&daemon.kafka, &conn.name)?;
    // Claiming the transactional id (which aborts what an earlier instance left open) and
    // making sure of the offsets topic do not depend on each other: at the same time.
    let offsets_topic = async {
        topics
            .ensure(
                &daemon.kafka.offsets_topic,
                Some(1),
                &[("cleanup.policy", "compact")],
            )
            .await?;
        topics.check_compacted(&daemon.kafka.offsets_topic).await
    };
    // Both run to their end (init_transactions cannot be called off: it would go on
    // claiming the id after a restart's new producer did), the claim's error first.
    let (claimed, offsets_topic) = tokio::join!(producer.init(), offsets_topic);
    claimed?;
    offsets_topic?;
    // Read after the claim, so that no transaction of an earlier instance is still open.
    // A coordinator moving or a partition without a leader for a moment is retried here,
    // not by restarting the connector.
    let (ck, claim) = crate::kafka::offsets::state(&daemon.kafka, &conn.name).await?;
    Ok((producer, topics, ck, claim))
}

impl<'a> Reader<'a> {
    /// A reader at the start of the stream, with the codecs of the side topics the
    /// connector's settings turn on registered and their topics there.
    pub(super) async fn new(
        conn: &'a ConnectorConfig,
        catalog: Catalog,
        topics: Topics,
        registry: Registry,
        tx: SinkTx,
        origin: Arc<Origin>,
    ) -> Result<Reader<'a>> {
        let mut reader = Reader {
            conn,
            catalog,
            registry,
            topics,
            relations: RelationCache::default(),
            codecs: HashMap::new(),
            txn: None,
            last_commit: Lsn::ZERO,
            skip_before: Lsn::ZERO,
            seam_within: None,
            tx,
            origin,
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
        reader.register_side_topics().await?;
        Ok(reader)
    }

    async fn register_side_topics(&mut self) -> Result<()> {
        let conn = self.conn;
        let prefix = &conn.topic_prefix;
        if conn.schema_changes {
            let codec =
                crate::avro::schema_change::SchemaChangeCodec::register(&mut self.registry, prefix)
                    .await?;
            self.topics.ensure(codec.topic(), None, &[]).await?;
            self.schema_changes = Some(codec);
        }
        if conn.provide_transaction_metadata {
            let meta = crate::avro::txmeta::TxMeta::register(&mut self.registry, prefix).await?;
            self.topics.ensure(meta.topic(), None, &[]).await?;
            self.txmeta = Some(meta);
        }
        if conn.messages.enabled {
            let codec =
                crate::avro::message::MessageCodec::register(&mut self.registry, prefix).await?;
            self.topics.ensure(codec.topic(), None, &[]).await?;
            self.messages = Some(codec);
        }
        if let Some(interval) = conn.heartbeat.interval {
            let topic = conn.heartbeat.topic(prefix);
            let codec = crate::avro::heartbeat::HeartbeatCodec::register(
                &mut self.registry,
                &topic,
                prefix,
            )
            .await?;
            self.topics.ensure(codec.topic(), None, &[]).await?;
            self.heartbeat = Some(heartbeat::Beat {
                codec,
                interval,
                last: Instant::now(),
            });
        }
        Ok(())
    }
}
