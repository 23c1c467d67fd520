//! The one producer of a connector. `acks=all`, idempotence and the murmur2 partitioner
//! (keys land on the partitions Java clients would choose). With `kafka.exactly_once` (the
//! default) it is transactional, with a `transactional.id` derived from the connector name:
//! stable across restarts, so a new instance fences an old one. Without, a "commit" is a
//! flush that waits until the broker acknowledged every record or a failure was reported
//! (at-least-once, kept for comparison).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};

use crate::config::KafkaConfig;
use crate::error::{Code, Error, Result};
use crate::kafka::{base_config, classify};

/// How long librdkafka waits for a transaction operation (init, commit, abort).
const TXN_TIMEOUT: Duration = Duration::from_secs(60);
pub use crate::config::MAX_RECORD_BYTES;

/// Waits until every queued record is acknowledged (or its failure reported). rust-rdkafka's flush (which
/// commit_transaction calls first) polls in fixed 100 ms slices whenever anything is still in
/// flight, which added ~100 ms to every commit in make bench; the poll thread of the
/// ThreadedProducer serves the failure reports meanwhile, so a short sleep loop is enough.
/// Unlike a flush it does not make librdkafka send lingering batches at once (only
/// `rd_kafka_flush` with a timeout does, and rust-rdkafka calls it with none), so every
/// commit waits out `kafka.linger`.
fn drain(p: &Inner) {
    let deadline = std::time::Instant::now() + TXN_TIMEOUT;
    while p.in_flight_count() > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_micros(500));
    }
}

/// How long a full queue may go without shrinking (no record acknowledged) before the producer asks
/// the brokers whether they answer (see [`TxProducer::stalled`]).
const STALL_CHECK: Duration = Duration::from_secs(30);
/// How long that metadata request may take: a broker that does not answer within it is an
/// outage, waited out.
const STALL_PROBE: Duration = Duration::from_secs(10);

/// How long after a transaction ended the next one waits before its first record. librdkafka
/// registers a transaction's partitions (AddPartitionsToTxn) as its first record is queued;
/// for a few ms after EndTxn returns the coordinator is still writing the previous
/// transaction's markers, answers CONCURRENT_TRANSACTIONS, and librdkafka retries only after
/// a fixed 20 ms. In make bench's live phase (10,000 events/s) that made 1 to 16 of every
/// ~200 commits take 20-46 ms instead of 2-9, and set the p99; the refused requests went
/// 1.8-4.0 ms after EndTxn returned. Streaming waits it out ([`TxProducer::begin_spaced`]);
/// a snapshot does not: its large transactions lost more to the pause (means 0.343 and 0.377x
/// COPY, six runs each) than a retry costs them (its records queue meanwhile).
const NEXT_TXN_GAP: Duration = Duration::from_millis(5);

/// How long a failed blocking transaction call waits for librdkafka to record a fatal
/// (fenced) state before its error is classified.
const FENCED_GRACE: Duration = Duration::from_secs(1);

fn fenced_or(p: &Inner, brokers: &str, what: &str, e: KafkaError) -> Error {
    if let Some((code, reason)) = p.client().fatal_error() {
        if matches!(
            code,
            RDKafkaErrorCode::Fenced
                | RDKafkaErrorCode::ProducerFenced
                | RDKafkaErrorCode::InvalidProducerEpoch
        ) {
            return Error::fenced(format!(
                "Kafka {brokers}: {what}: {reason}; {}",
                crate::kafka::FENCED_NOTE
            ))
            .with_source(e);
        }
    }
    classify(brokers, what, e)
}

pub fn transactional_id(connector: &str) -> String {
    format!("pgcdc-{connector}")
}

/// Counts failed deliveries, so a non-transactional flush can tell success from loss.
pub struct Deliveries {
    /// The connector whose librdkafka lines are counted when suppressed.
    connector: std::sync::Arc<str>,
    /// Failed deliveries (librdkafka reports only failures: `delivery.report.only.error`).
    failed: AtomicU64,
    /// The first failed delivery's error, classified when the flush reports it.
    first_error: Mutex<Option<KafkaError>>,
    /// The topic of the first record the broker refused for want of an ACL: a transaction
    /// fails at its commit, and this names what to grant.
    first_denied: Mutex<Option<String>>,
    /// The topics of the open transaction (up to [`TXN_TOPICS_NAMED`]), for a refusal that
    /// names no topic (AddPartitionsToTxn).
    txn_topics: Mutex<Vec<String>>,
}

/// How many of a transaction's topics a refusal names.
const TXN_TOPICS_NAMED: usize = 8;

impl ClientContext for Deliveries {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, msg: &str) {
        crate::kafka::client_log(&self.connector, level, fac, msg);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        crate::kafka::client_log(
            &self.connector,
            rdkafka::config::RDKafkaLogLevel::Error,
            "ERROR",
            &format!("{reason}: {error}"),
        );
    }
}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, m)) = result {
            if e.rdkafka_error_code() == Some(RDKafkaErrorCode::TopicAuthorizationFailed) {
                if let Ok(mut first) = self.first_denied.lock() {
                    first.get_or_insert_with(|| rdkafka::Message::topic(m).to_owned());
                }
            }
            self.failed.fetch_add(1, Ordering::AcqRel);
            if let Ok(mut first) = self.first_error.lock() {
                first.get_or_insert_with(|| e.clone());
            }
        }
    }
}

type Inner = ThreadedProducer<Deliveries>;

/// The broker refused records for `topic`: what to grant.
fn refused_topic(brokers: &str, what: &str, principal: &str, topic: &str, e: KafkaError) -> Error {
    Error::permanent(
        Code::KafkaAuthorization,
        format!(
            "Kafka {brokers}: {what}: the broker refused records for topic {topic} \
             (TopicAuthorizationFailed); grant {principal} Write on Topic {topic}"
        ),
    )
    .with_source(e)
}

#[derive(Clone)]
pub struct TxProducer {
    inner: Arc<Inner>,
    brokers: Arc<str>,
    transactional: bool,
    transactional_id: Arc<str>,
    /// When the last transaction ended (committed or aborted), for [`NEXT_TXN_GAP`].
    ended: Arc<Mutex<Instant>>,
    /// Who the broker sees, for the ACL a refusal names.
    principal: Arc<str>,
    /// The client settings without the producer's, for the stall watchdog's probe.
    probe: Arc<rdkafka::config::ClientConfig>,
    connector: Arc<str>,
}

impl TxProducer {
    pub fn new(cfg: &KafkaConfig, transactional_id: &str, connector: &str) -> Result<Self> {
        let mut c = base_config(cfg);
        if cfg.exactly_once {
            c.set("transactional.id", transactional_id).set(
                "transaction.timeout.ms",
                cfg.transaction.timeout.as_millis().to_string(),
            );
        }
        c.set("acks", "all")
            .set("enable.idempotence", "true")
            .set("partitioner", "murmur2_random")
            .set("compression.type", &cfg.compression)
            .set("linger.ms", cfg.linger.as_millis().to_string())
            .set(
                "batch.size",
                cfg.batch_bytes.min(i32::MAX as u64).to_string(),
            )
            .set(
                "queue.buffering.max.kbytes",
                (cfg.producer_queue_bytes / 1024).to_string(),
            )
            .set("queue.buffering.max.messages", "200000")
            // A delivery report per record cost ~5% of the snapshot's CPU (the poll
            // thread's events and callbacks); failures still report, and a commit or
            // settle waits for the queue to empty.
            .set("delivery.report.only.error", "true")
            // Headroom over MAX_RECORD_BYTES for the record batch framing.
            .set(
                "message.max.bytes",
                (MAX_RECORD_BYTES + 64 * 1024).to_string(),
            );
        let inner: Inner = c
            .create_with_context(Deliveries {
                connector: connector.into(),
                failed: AtomicU64::new(0),
                first_error: Mutex::new(None),
                first_denied: Mutex::new(None),
                txn_topics: Mutex::new(Vec::new()),
            })
            .map_err(|e| classify(&cfg.bootstrap_servers, "creating the producer", e))?;
        Ok(TxProducer {
            inner: Arc::new(inner),
            brokers: cfg.bootstrap_servers.as_str().into(),
            transactional: cfg.exactly_once,
            transactional_id: transactional_id.into(),
            ended: Arc::new(Mutex::new(Instant::now())),
            principal: crate::kafka::principal(cfg).into(),
            probe: Arc::new(base_config(cfg)),
            connector: connector.into(),
        })
    }

    /// Classifies an error of this producer. A producer that was fenced can report it as a
    /// generic fatal error (e.g. on a send); its fatal-error record tells the truth.
    fn error(&self, what: &str, e: KafkaError) -> Error {
        fenced_or(&self.inner, &self.brokers, what, e)
    }

    async fn blocking<F>(&self, what: &'static str, f: F) -> Result<()>
    where
        F: FnOnce(&Inner) -> Result<(), KafkaError> + Send + 'static,
    {
        let p = self.inner.clone();
        let brokers = self.brokers.clone();
        let principal = self.principal.clone();
        tokio::task::spawn_blocking(move || {
            f(&p).map_err(|e| {
                // librdkafka can return a generic error from EndTxn ("Unknown broker error")
                // a moment before it records the fatal "fenced" state. Treating that as
                // transient restarts this instance, whose new producer then fences the
                // successor back (seen in the fencing test). So wait briefly for the truth.
                let deadline = std::time::Instant::now() + FENCED_GRACE;
                while p.client().fatal_error().is_none() && std::time::Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let denied = p
                    .context()
                    .first_denied
                    .lock()
                    .ok()
                    .and_then(|mut d| d.take());
                match denied {
                    Some(topic) => refused_topic(&brokers, what, &principal, &topic, e),
                    None => {
                        let topics = p
                            .context()
                            .txn_topics
                            .lock()
                            .map(|t| t.join(", "))
                            .unwrap_or_default();
                        let e = fenced_or(&p, &brokers, what, e);
                        if topics.is_empty() {
                            e
                        } else {
                            crate::kafka::missing_acl(
                                e,
                                &principal,
                                format_args!("Write on each Topic of the transaction ({topics})"),
                            )
                        }
                    }
                }
            })
        })
        .await
        .map_err(|e| {
            Error::permanent(Code::Kafka, format!("Kafka {what}: task failed: {e}")).with_source(e)
        })?
    }

    /// Registers the transactional id with the coordinator, fencing any older producer with
    /// the same id and aborting its open transaction.
    pub async fn init(&self) -> Result<()> {
        if !self.transactional {
            return Ok(());
        }
        self.blocking("init_transactions", |p| p.init_transactions(TXN_TIMEOUT))
            .await
            .map_err(|e| {
                crate::kafka::missing_acl(
                    e,
                    &self.principal,
                    format_args!(
                        "Write and Describe on TransactionalId {}",
                        self.transactional_id
                    ),
                )
            })
    }

    /// Begins a transaction no sooner than [`NEXT_TXN_GAP`] after the last one ended.
    pub async fn begin_spaced(&self) -> Result<()> {
        if self.transactional {
            let ready = self.ended.lock().ok().map(|e| *e + NEXT_TXN_GAP);
            if let Some(ready) = ready {
                tokio::time::sleep_until(ready.into()).await;
            }
        }
        self.begin()
    }

    /// Begins a transaction at once.
    pub fn begin(&self) -> Result<()> {
        if !self.transactional {
            return Ok(());
        }
        if let Ok(mut t) = self.inner.context().txn_topics.lock() {
            t.clear();
        }
        self.inner
            .begin_transaction()
            .map_err(|e| self.error("begin_transaction", e))
    }

    fn ended(&self) {
        if let Ok(mut e) = self.ended.lock() {
            *e = Instant::now();
        }
    }

    /// Queues one record, waiting while librdkafka's queue is full (memory stays bounded);
    /// `headers` are (name, value) pairs, e.g. `pgcdc.unavailable`.
    pub async fn send(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, String)],
    ) -> Result<()> {
        if self.transactional {
            if let Ok(mut t) = self.inner.context().txn_topics.lock() {
                if t.last().is_none_or(|l| l != topic)
                    && t.len() < TXN_TOPICS_NAMED
                    && !t.iter().any(|l| l == topic)
                {
                    t.push(topic.to_owned());
                }
            }
        }
        // Since when the queue has been full without shrinking, and its length then.
        let mut full_since: Option<(std::time::Instant, u64)> = None;
        loop {
            let mut rec = BaseRecord::<[u8], [u8]>::to(topic);
            if let Some(k) = key {
                rec = rec.key(k);
            }
            if let Some(v) = value {
                rec = rec.payload(v);
            }
            if !headers.is_empty() {
                let mut h = OwnedHeaders::new_with_capacity(headers.len());
                for (name, value) in headers {
                    h = h.insert(Header {
                        key: name,
                        value: Some(value.as_bytes()),
                    });
                }
                rec = rec.headers(h);
            }
            match self.inner.send(rec) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    // Records the broker acknowledged leave the queue: progress.
                    let queued = self.inner.in_flight_count().max(0) as u64;
                    match full_since {
                        Some((since, seen)) if queued >= seen => {
                            if since.elapsed() >= STALL_CHECK {
                                self.stalled(topic, since.elapsed()).await?;
                                full_since = Some((std::time::Instant::now(), queued));
                            }
                        }
                        _ => full_since = Some((std::time::Instant::now(), queued)),
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                // librdkafka refuses at once when the topic's metadata already said
                // TopicAuthorizationFailed: the same refusal as in a delivery report.
                Err((
                    e @ KafkaError::MessageProduction(RDKafkaErrorCode::TopicAuthorizationFailed),
                    _,
                )) => {
                    return Err(refused_topic(
                        &self.brokers,
                        &format!("producing to {topic}"),
                        &self.principal,
                        topic,
                        e,
                    ))
                }
                Err((e, _)) => return Err(self.error(&format!("producing to {topic}"), e)),
            }
        }
    }

    /// The queue has been full for `waited` without shrinking. While the brokers do
    /// not answer, or a partition of `topic` has no leader, that is an outage: waited out
    /// (Ok). When they answer and every partition has a leader, this producer is stuck:
    /// librdkafka can keep a partition's leader as unknown after a broker was fenced and
    /// came back ("new leader-1 not found in cache", the same stall as
    /// vectordotdev/vector#25375), and nothing moves until `message.timeout.ms` expires the
    /// queue. A transient error then restarts the connector from its checkpoint with a new
    /// producer; the open transaction is aborted by the new producer's fencing, so nothing
    /// is delivered twice.
    ///
    /// The brokers are asked through a new client: the stuck producer's own metadata
    /// request waits for a broker it considers usable, and in that state it has none, so
    /// asking it made every stall look like an outage (seen in `make bounds`: 416,050 of
    /// 5,000,000 rows, then no progress for minutes while the watchdog kept waiting).
    async fn stalled(&self, topic: &str, waited: Duration) -> Result<()> {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let probe = self.probe.clone();
        let cx = crate::kafka::QuietContext::new(&self.connector);
        let t = topic.to_owned();
        let leaders = tokio::task::spawn_blocking(move || {
            let c: BaseConsumer<crate::kafka::QuietContext> = probe.create_with_context(cx).ok()?;
            let md = c.fetch_metadata(Some(&t), STALL_PROBE).ok()?;
            let topic = md.topics().iter().find(|m| m.name() == t)?;
            let parts = topic.partitions();
            let led = topic.error().is_none()
                && !parts.is_empty()
                && parts.iter().all(|p| p.error().is_none() && p.leader() >= 0);
            Some((led, parts.len()))
        })
        .await
        .ok()
        .flatten();
        match leaders {
            Some((true, partitions)) => Err(Error::transient(
                Code::KafkaStalled,
                format!(
                    "Kafka {}: producing to {topic}: nothing delivered for {} s with the \
                     producer's queue full, although the brokers answer and all {partitions} \
                     partitions of {topic} have a leader (librdkafka stuck after a broker \
                     outage); restarting the connector from its last checkpoint with a new \
                     producer",
                    self.brokers,
                    waited.as_secs()
                ),
            )),
            _ => {
                tracing::debug!(%topic, waited_s = waited.as_secs(), "producer queue full and the brokers do not answer (or a partition has no leader); waiting");
                Ok(())
            }
        }
    }

    /// Before the checkpoint is sent: without transactions, waits until every event sent so
    /// far is acknowledged and fails on any refused one, so a checkpoint never
    /// names a position the broker lacks events before. With transactions, nothing: the
    /// commit takes events and checkpoint together or neither.
    pub async fn settle(&self) -> Result<()> {
        if self.transactional {
            return Ok(());
        }
        self.commit().await
    }

    pub async fn commit(&self) -> Result<()> {
        if self.transactional {
            let r = self
                .blocking("commit_transaction", |p| {
                    drain(p);
                    p.commit_transaction(TXN_TIMEOUT)
                })
                .await;
            self.ended();
            return r;
        }
        self.blocking("flush", |p| {
            drain(p);
            p.flush(TXN_TIMEOUT)
        })
        .await?;
        let ctx = self.inner.context();
        let failed = ctx.failed.swap(0, Ordering::AcqRel);
        if failed == 0 {
            return Ok(());
        }
        // Classified as any Kafka error: a refusal is permanent and names its ACL, a timeout
        // or a lost leader is transient (the connector rewinds to its checkpoint).
        let first = ctx.first_error.lock().ok().and_then(|mut f| f.take());
        let denied = ctx.first_denied.lock().ok().and_then(|mut d| d.take());
        let what = format!("delivering records ({failed} failed)");
        let e = first.unwrap_or(KafkaError::Flush(RDKafkaErrorCode::Fail));
        Err(match denied {
            Some(topic) => refused_topic(&self.brokers, &what, &self.principal, &topic, e),
            None => crate::kafka::classify(&self.brokers, &what, e),
        })
    }

    /// One record in a Kafka transaction of its own (aborted when anything fails).
    pub async fn send_alone(&self, topic: &str, key: &[u8], value: Option<&[u8]>) -> Result<()> {
        self.begin_spaced().await?;
        let done = async {
            self.send(topic, Some(key), value, &[]).await?;
            self.commit().await
        };
        if let Err(e) = done.await {
            let _ = self.abort().await;
            return Err(e);
        }
        Ok(())
    }

    /// Aborts the open transaction. Without transactions, records already sent cannot be
    /// taken back: they are flushed (at-least-once).
    pub async fn abort(&self) -> Result<()> {
        if self.transactional {
            let r = self
                .blocking("abort_transaction", |p| p.abort_transaction(TXN_TIMEOUT))
                .await;
            self.ended();
            return r;
        }
        self.blocking("flush", |p| p.flush(TXN_TIMEOUT)).await
    }
}
