//! Reading pgcdc's topics back as an ordinary consumer does: `read_committed`, keys and
//! values decoded through the schema registry (Confluent wire format). `pgcdc tail`, the
//! integration tests, the benchmark consumer and the chaos checker all read through this
//! one reader, so what they check is what a microservice sees.

pub mod json;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apache_avro::reader::datum::GenericDatumReader;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use schema_registry_converter::async_impl::avro::AvroDecoder;
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use serde_json::Value as Json;

use crate::config::{KafkaConfig, RegistryConfig};
use crate::error::{Code, Error, Result};
use crate::kafka::{base_config, classify};

/// Where a subscription starts in a partition that has no committed group offset (every
/// reader uses a fresh group).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    Beginning,
    End,
}

/// One record with its key and value decoded to JSON ([`json::to_json`]'s rendering).
#[derive(Debug, Clone)]
pub struct Decoded {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Json,
    /// `null` for a tombstone.
    pub value: Json,
    pub headers: Vec<(String, String)>,
}

pub struct Reader {
    consumer: StreamConsumer,
    decoder: AvroDecoder,
    /// Datum readers by schema id, resolved once: the chaos checker reads millions.
    readers: Mutex<HashMap<u32, Arc<GenericDatumReader<'static>>>>,
    brokers: String,
}

impl Reader {
    /// A reader with the daemon's Kafka client settings (TLS, SASL) and registry settings
    /// (basic authentication), in a fresh consumer group named from `group`.
    pub fn new(
        kafka: &KafkaConfig,
        registry: &RegistryConfig,
        group: &str,
        start: Start,
    ) -> Result<Self> {
        let settings = crate::avro::registry::settings(registry)?;
        Self::with(
            base_config(kafka),
            &kafka.bootstrap_servers,
            settings,
            group,
            start,
        )
    }

    /// A reader for tools that have only the addresses (tests, `make bench`, `make chaos`):
    /// plaintext Kafka, a registry without authentication.
    pub fn plain(bootstrap: &str, registry_url: &str, group: &str, start: Start) -> Result<Self> {
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", bootstrap);
        Self::with(
            cfg,
            bootstrap,
            SrSettings::new(registry_url.to_owned()),
            group,
            start,
        )
    }

    fn with(
        mut cfg: ClientConfig,
        brokers: &str,
        registry: SrSettings,
        group: &str,
        start: Start,
    ) -> Result<Self> {
        let group = format!(
            "{group}-{}-{}",
            std::process::id(),
            crate::clock::now_micros()
        );
        let consumer: StreamConsumer = cfg
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .set(
                "auto.offset.reset",
                match start {
                    Start::Beginning => "earliest",
                    Start::End => "latest",
                },
            )
            // Topics appear when pgcdc sees a table's first change: notice them soon.
            .set("topic.metadata.refresh.interval.ms", "500")
            .set("fetch.wait.max.ms", "10")
            .create()
            .map_err(|e| classify(brokers, "creating the consumer", e))?;
        Ok(Reader {
            consumer,
            decoder: AvroDecoder::new(registry),
            readers: Mutex::new(HashMap::new()),
            brokers: brokers.to_owned(),
        })
    }

    /// Subscribes to topic names, or regular expressions starting with `^`.
    pub fn subscribe(&self, topics: &[&str]) -> Result<()> {
        self.consumer
            .subscribe(topics)
            .map_err(|e| classify(&self.brokers, "subscribing", e))
    }

    /// Assigns every partition of `topic` from its beginning and returns, per partition,
    /// the end offset it had then: [`Reader::reached`] says when they are all read.
    pub fn assign_to_end(&self, topic: &str) -> Result<Vec<(i32, i64)>> {
        let timeout = Duration::from_secs(30);
        let md = self
            .consumer
            .fetch_metadata(Some(topic), timeout)
            .map_err(|e| classify(&self.brokers, &format!("metadata of {topic}"), e))?;
        let mut tpl = TopicPartitionList::new();
        let mut ends = Vec::new();
        for p in md.topics().iter().flat_map(|t| t.partitions()) {
            let (_, high) = self
                .consumer
                .fetch_watermarks(topic, p.id(), timeout)
                .map_err(|e| classify(&self.brokers, &format!("end offsets of {topic}"), e))?;
            ends.push((p.id(), high));
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
                .map_err(|e| classify(&self.brokers, "assigning", e))?;
        }
        if ends.is_empty() {
            return Err(Error::permanent(
                Code::Kafka,
                format!("Kafka {}: topic {topic} has no partitions", self.brokers),
            ));
        }
        self.consumer
            .assign(&tpl)
            .map_err(|e| classify(&self.brokers, "assigning", e))?;
        Ok(ends)
    }

    /// Whether the consumer's position reached every `(partition, end)` of `topic`.
    pub fn reached(&self, topic: &str, ends: &[(i32, i64)]) -> bool {
        let Ok(pos) = self.consumer.position() else {
            return false;
        };
        ends.iter().all(|(p, end)| {
            pos.find_partition(topic, *p)
                .and_then(|e| e.offset().to_raw())
                .unwrap_or(-1)
                >= *end
        })
    }

    /// The next record, or None when none arrives within `within`. While a subscribed topic
    /// does not exist yet, it waits for it.
    pub async fn next(&self, within: Duration) -> Result<Option<BorrowedMessage<'_>>> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.consumer.recv()).await {
                Err(_) => return Ok(None),
                Ok(Err(e))
                    if e.rdkafka_error_code()
                        == Some(RDKafkaErrorCode::UnknownTopicOrPartition) =>
                {
                    if left.is_zero() {
                        return Ok(None);
                    }
                    tokio::time::sleep(Duration::from_millis(100).min(left)).await;
                }
                Ok(Err(e)) => return Err(classify(&self.brokers, "consuming", e)),
                Ok(Ok(m)) => return Ok(Some(m)),
            }
        }
    }

    /// Decodes a record's key and value to JSON and reads its headers.
    pub async fn decode(&self, m: &BorrowedMessage<'_>) -> Result<Decoded> {
        let key = json::decode_json(&self.decoder, m.key()).await?;
        let value = json::decode_json(&self.decoder, m.payload()).await?;
        let headers = m
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| {
                        let v = h.value.map(|v| String::from_utf8_lossy(v).into_owned());
                        (h.key.to_owned(), v.unwrap_or_default())
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Decoded {
            topic: m.topic().to_owned(),
            partition: m.partition(),
            offset: m.offset(),
            key,
            value,
            headers,
        })
    }

    /// Decodes Confluent wire-format bytes to the Avro value (no JSON rendering), with the
    /// writer's schema fetched and resolved once per id.
    pub async fn avro_value(&self, bytes: &[u8]) -> Result<apache_avro::types::Value> {
        if bytes.len() < 5 || bytes[0] != 0 {
            return Err(Error::permanent(
                Code::Kafka,
                "record is not in the Confluent wire format (magic byte 0, schema id)",
            ));
        }
        let id = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
        let known = self.lock_readers().get(&id).cloned();
        let reader = match known {
            Some(r) => r,
            None => {
                let s = self.decoder.get_schema(id).await.map_err(|e| {
                    Error::transient(
                        Code::RegistryUnavailable,
                        format!("schema registry: fetching schema {id}: {e}"),
                    )
                    .with_source(e)
                })?;
                let schema = crate::avro::keep(s.parsed.clone());
                let r = GenericDatumReader::builder(schema).build().map_err(|e| {
                    Error::permanent(Code::Registry, format!("schema {id}: {e}")).with_source(e)
                })?;
                let r = Arc::new(r);
                self.lock_readers().insert(id, r.clone());
                r
            }
        };
        let mut body = &bytes[5..];
        reader.read_value(&mut body).map_err(|e| {
            Error::permanent(
                Code::Registry,
                format!("decoding a record with schema {id}: {e}"),
            )
            .with_source(e)
        })
    }

    fn lock_readers(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<u32, Arc<GenericDatumReader<'static>>>> {
        self.readers.lock().unwrap_or_else(|e| e.into_inner())
    }
}
