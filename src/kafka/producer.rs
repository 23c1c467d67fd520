//! The one transactional producer of a connector. `acks=all`, idempotence and a
//! `transactional.id` derived from the connector name (stable across restarts, so a new
//! instance fences an old one), and the murmur2 partitioner, so keys land on the partitions
//! Java clients would choose.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

use crate::config::KafkaConfig;
use crate::error::{Error, Result};
use crate::kafka::{base_config, classify};

const TXN_TIMEOUT: Duration = Duration::from_secs(60);

pub fn transactional_id(connector: &str) -> String {
    format!("pgcdc-{connector}")
}

#[derive(Clone)]
pub struct TxProducer {
    inner: Arc<ThreadedProducer<DefaultProducerContext>>,
    brokers: Arc<str>,
}

impl TxProducer {
    pub fn new(cfg: &KafkaConfig, transactional_id: &str) -> Result<Self> {
        let mut c = base_config(cfg);
        c.set("acks", "all")
            .set("enable.idempotence", "true")
            .set("transactional.id", transactional_id)
            .set("transaction.timeout.ms", "60000")
            .set("partitioner", "murmur2_random")
            .set("compression.type", &cfg.compression)
            .set("linger.ms", cfg.linger.as_millis().to_string())
            .set(
                "batch.size",
                cfg.batch_bytes.min(i32::MAX as u64).to_string(),
            )
            .set("queue.buffering.max.kbytes", "262144")
            .set("queue.buffering.max.messages", "200000")
            .set("message.max.bytes", "10000000");
        let inner: ThreadedProducer<DefaultProducerContext> = c
            .create()
            .map_err(|e| classify(&cfg.bootstrap_servers, "creating the producer", e))?;
        Ok(TxProducer {
            inner: Arc::new(inner),
            brokers: cfg.bootstrap_servers.as_str().into(),
        })
    }

    async fn blocking<F>(&self, what: &'static str, f: F) -> Result<()>
    where
        F: FnOnce(&ThreadedProducer<DefaultProducerContext>) -> Result<(), KafkaError>
            + Send
            + 'static,
    {
        let p = self.inner.clone();
        let brokers = self.brokers.clone();
        tokio::task::spawn_blocking(move || f(&p).map_err(|e| classify(&brokers, what, e)))
            .await
            .map_err(|e| Error::permanent(format!("Kafka {what}: task failed: {e}")))?
    }

    /// Registers the transactional id with the coordinator, fencing any older producer with
    /// the same id and aborting its open transaction.
    pub async fn init(&self) -> Result<()> {
        self.blocking("init_transactions", |p| p.init_transactions(TXN_TIMEOUT))
            .await
    }

    pub fn begin(&self) -> Result<()> {
        self.inner
            .begin_transaction()
            .map_err(|e| classify(&self.brokers, "begin_transaction", e))
    }

    /// Queues one record, waiting while librdkafka's queue is full (memory stays bounded).
    pub async fn send(&self, topic: &str, key: Option<&[u8]>, value: Option<&[u8]>) -> Result<()> {
        loop {
            let mut rec = BaseRecord::<[u8], [u8]>::to(topic);
            if let Some(k) = key {
                rec = rec.key(k);
            }
            if let Some(v) = value {
                rec = rec.payload(v);
            }
            match self.inner.send(rec) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => {
                    return Err(classify(&self.brokers, &format!("producing to {topic}"), e))
                }
            }
        }
    }

    pub async fn commit(&self) -> Result<()> {
        self.blocking("commit_transaction", |p| p.commit_transaction(TXN_TIMEOUT))
            .await
    }

    pub async fn abort(&self) -> Result<()> {
        self.blocking("abort_transaction", |p| p.abort_transaction(TXN_TIMEOUT))
            .await
    }
}
