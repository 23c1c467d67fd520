//! Reading the offsets topic back: the newest committed checkpoint and slot claim of a
//! connector, with `read_committed`, so only what a committed Kafka transaction holds.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::checkpoint::{Checkpoint, SlotClaim};
use crate::config::KafkaConfig;
use crate::error::{Code, Error, Result};
use crate::kafka::{base_config, classify, missing_acl, principal, QuietContext};

/// Reads the newest committed checkpoint of `connector` from the offsets topic (None when
/// the topic or the connector's record does not exist yet).
pub fn read_last(cfg: &KafkaConfig, connector: &str) -> Result<Option<Checkpoint>> {
    Ok(read_state(cfg, connector)?.0)
}

/// The newest committed checkpoint and slot claim of `connector`.
pub fn read_state(
    cfg: &KafkaConfig,
    connector: &str,
) -> Result<(Option<Checkpoint>, Option<SlotClaim>)> {
    let claim_key = SlotClaim::key(connector);
    let topic = &cfg.offsets_topic;
    let mut last: Option<Checkpoint> = None;
    let mut claim: Option<SlotClaim> = None;
    scan(
        cfg,
        topic,
        &format!("pgcdc-checkpoint-reader-{connector}"),
        connector,
        "the checkpoint",
        |m| {
            if m.key() == Some(claim_key.as_bytes()) {
                claim = m.payload().and_then(|v| serde_json::from_slice(v).ok());
                return Ok(());
            }
            if m.key() != Some(connector.as_bytes()) {
                return Ok(());
            }
            match m.payload() {
                Some(v) => {
                    let c: Checkpoint = serde_json::from_slice(v).map_err(|e| {
                        Error::permanent(
                            Code::Checkpoint,
                            format!(
                                "checkpoint of connector {connector} in {topic} offset {} is not valid: {e}",
                                m.offset()
                            ),
                        )
                        .with_source(e)
                    })?;
                    last = Some(c);
                }
                None => last = None, // a tombstone resets the connector
            }
            Ok(())
        },
    )?;
    Ok((last, claim))
}

/// [`read_state`] off the runtime's threads, a partition without a leader for a moment (a
/// coordinator moving, an election) retried in place rather than by restarting.
pub async fn state(
    cfg: &KafkaConfig,
    connector: &str,
) -> Result<(Option<Checkpoint>, Option<SlotClaim>)> {
    let (cfg, connector) = (cfg.clone(), connector.to_owned());
    blocking_in_place("reading the checkpoint", move || {
        read_state(&cfg, &connector)
    })
    .await
}

/// [`read_connect_offsets`] off the runtime's threads, retried in place as [`state`].
pub async fn connect_offsets(
    cfg: &KafkaConfig,
    topic: &str,
    topic_prefix: &str,
    connector: &str,
) -> Result<Option<ConnectOffsets>> {
    let (cfg, topic, prefix, connector) = (
        cfg.clone(),
        topic.to_owned(),
        topic_prefix.to_owned(),
        connector.to_owned(),
    );
    blocking_in_place("reading Kafka Connect's offsets", move || {
        read_connect_offsets(&cfg, &topic, &prefix, &connector)
    })
    .await
}

async fn blocking_in_place<T: Send + 'static>(
    what: &str,
    read: impl Fn() -> Result<T> + Clone + Send + 'static,
) -> Result<T> {
    crate::error::retry(crate::error::IN_PLACE, what, || {
        let read = read.clone();
        async move {
            tokio::task::spawn_blocking(read).await.map_err(|e| {
                Error::permanent(Code::Internal, format!("offsets reader failed: {e}"))
                    .with_source(e)
            })?
        }
    })
    .await
}

/// Kafka Connect offsets values by connector name, with where each was read.
pub type ConnectOffsets = std::collections::BTreeMap<String, (Vec<u8>, String)>;

/// The newest value of each Debezium connector whose Kafka Connect offsets key names
/// `topic_prefix` (`["<name>",{"server":"<topic_prefix>"}]`), by connector name, with where
/// it was read (`partition/offset`). A tombstone removes the connector. False when the topic
/// does not exist.
pub fn read_connect_offsets(
    cfg: &KafkaConfig,
    topic: &str,
    topic_prefix: &str,
    connector: &str,
) -> Result<Option<ConnectOffsets>> {
    let mut found = std::collections::BTreeMap::new();
    let exists = scan(
        cfg,
        topic,
        &format!("pgcdc-takeover-reader-{connector}"),
        connector,
        "Kafka Connect's offsets",
        |m| {
            let Some(name) = m
                .key()
                .and_then(|k| crate::checkpoint::debezium::connector_of(k, topic_prefix))
            else {
                return Ok(());
            };
            match m.payload() {
                Some(v) => {
                    found.insert(
                        name,
                        (v.to_vec(), format!("{}/{}", m.partition(), m.offset())),
                    );
                }
                None => {
                    found.remove(&name);
                }
            }
            Ok(())
        },
    )?;
    Ok(exists.then_some(found))
}

/// Reads every partition of `topic` from its beginning to its end (read_committed) and
/// hands each record to `each`. False when the topic does not exist.
fn scan(
    cfg: &KafkaConfig,
    topic: &str,
    group: &str,
    connector: &str,
    what: &str,
    mut each: impl FnMut(&rdkafka::message::BorrowedMessage<'_>) -> Result<()>,
) -> Result<bool> {
    let brokers = &cfg.bootstrap_servers;
    // librdkafka assigns partitions only within a group; this one never joins or commits,
    // but finding its coordinator needs Describe on it.
    let consumer: BaseConsumer<QuietContext> = base_config(cfg)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "false")
        .create_with_context(QuietContext::new(connector))
        .map_err(|e| classify(brokers, &format!("creating the reader of {what}"), e))?;
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(30))
        .map_err(|e| classify(brokers, &format!("reading metadata of {topic}"), e))?;
    let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
        return Ok(false);
    };
    // A topic pgcdc may not read would look empty: never take that for "nothing there".
    let read_acl =
        || format!("Read and Describe on Topic {topic} (without them {what} cannot be read)");
    match t.error() {
        None => {}
        Some(rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) => {
            return Ok(false)
        }
        Some(code) => {
            let e = classify(
                brokers,
                &format!("reading metadata of {topic}"),
                rdkafka::error::KafkaError::MetadataFetch(code.into()),
            );
            return Err(missing_acl(e, &principal(cfg), read_acl()));
        }
    }
    if t.partitions().is_empty() {
        return Ok(false);
    }
    for p in t.partitions() {
        let (low, high) = consumer
            .fetch_watermarks(topic, p.id(), Duration::from_secs(30))
            .map_err(|e| classify(brokers, &format!("reading watermarks of {topic}"), e))?;
        if high <= low {
            continue;
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
            .map_err(|e| classify(brokers, &format!("assigning {topic}"), e))?;
        consumer
            .assign(&tpl)
            .map_err(|e| classify(brokers, &format!("assigning {topic}"), e))?;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let pos = consumer
                .position()
                .ok()
                .and_then(|l| {
                    l.find_partition(topic, p.id())
                        .and_then(|e| e.offset().to_raw())
                })
                .unwrap_or(-1);
            if pos >= high {
                break;
            }
            if std::time::Instant::now() > deadline {
                return Err(Error::transient(Code::Checkpoint, format!(
                    "Kafka {brokers}: reading {what} from {topic} did not reach offset {high} within 60s"
                )));
            }
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => each(&m)?,
                Some(Err(e)) => {
                    let acl = if e.rdkafka_error_code()
                        == Some(RDKafkaErrorCode::GroupAuthorizationFailed)
                    {
                        format!("Describe on Group {group} (the reader of {what})")
                    } else {
                        read_acl()
                    };
                    let e = classify(brokers, &format!("reading {topic}"), e);
                    return Err(missing_acl(e, &principal(cfg), acl));
                }
                None => {}
            }
        }
    }
    // Closing a consumer that fetched takes librdkafka ~100 ms (measured at every start with
    // a checkpoint): on a thread of its own, not in the connector's start-up.
    std::thread::spawn(move || drop(consumer));
    Ok(true)
}
