//! Kafka: client settings, topic creation and the transactional producer.

pub mod offsets;
pub mod producer;
pub mod sink;
pub mod topics;

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::config::KafkaConfig;
use crate::error::{Code, Error};

/// librdkafka repeats the same complaint (a broker refusing connections) many times a
/// second: each distinct complaint is logged at most once per this interval, the rest counted.
const CLIENT_LOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

type LastLogged = std::collections::HashMap<String, std::time::Instant>;
static CLIENT_LOGS: std::sync::Mutex<Option<LastLogged>> = std::sync::Mutex::new(None);

/// Logs one librdkafka message unless the same source (facility and broker) said something
/// within [`CLIENT_LOG_INTERVAL`]; suppressed lines are counted in a metric.
pub(crate) fn client_log(
    connector: &str,
    level: rdkafka::config::RDKafkaLogLevel,
    fac: &str,
    msg: &str,
) {
    use rdkafka::config::RDKafkaLogLevel as L;
    // "127.0.0.1:29092/bootstrap: Connect to ... failed": the broker names the source.
    let source = format!("{fac} {}", msg.split(": ").next().unwrap_or(""));
    let now = std::time::Instant::now();
    let fresh = CLIENT_LOGS.lock().is_ok_and(|mut m| {
        let m = m.get_or_insert_with(Default::default);
        match m.get(&source) {
            Some(t) if now.duration_since(*t) < CLIENT_LOG_INTERVAL => false,
            _ => {
                m.insert(source, now);
                true
            }
        }
    });
    if !fresh {
        crate::metrics::client_log_suppressed(connector);
        return;
    }
    match level {
        L::Emerg | L::Alert | L::Critical | L::Error => {
            tracing::error!(target: "librdkafka", facility = fac, "{msg} (repeats suppressed for 60s)")
        }
        L::Warning => {
            tracing::warn!(target: "librdkafka", facility = fac, "{msg} (repeats suppressed for 60s)")
        }
        _ => tracing::debug!(target: "librdkafka", facility = fac, "{msg}"),
    }
}

/// The context of pgcdc's own short-lived clients (broker check, checkpoint reader, topic
/// admin): librdkafka's logs go through [`client_log`], counted for `connector`.
#[derive(Clone)]
pub struct QuietContext {
    connector: std::sync::Arc<str>,
}

impl QuietContext {
    pub fn new(connector: &str) -> Self {
        QuietContext {
            connector: connector.into(),
        }
    }
}

impl rdkafka::client::ClientContext for QuietContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, msg: &str) {
        client_log(&self.connector, level, fac, msg);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        client_log(
            &self.connector,
            rdkafka::config::RDKafkaLogLevel::Error,
            "ERROR",
            &format!("{reason}: {error}"),
        );
    }
}

impl rdkafka::consumer::ConsumerContext for QuietContext {}

/// Settings shared by every client: the brokers and the operator's raw options
/// (`kafka.librdkafka`, which cannot contain the keys pgcdc sets itself).
pub fn base_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.bootstrap_servers);
    for (k, v) in &cfg.librdkafka {
        c.set(k, v);
    }
    c
}

/// What a fenced producer's error adds: the usual reason. A broker that aborted a
/// transaction past its timeout fences the same way ([`sink`] tells the two apart).
pub(crate) const FENCED_NOTE: &str =
    "another pgcdc instance runs this connector (same transactional.id) and took over; this one stands by";

/// The principal pgcdc authenticates as, for messages: `User:<sasl.username>`.
pub fn principal(cfg: &KafkaConfig) -> String {
    cfg.librdkafka
        .get("sasl.username")
        .map_or_else(|| "pgcdc's principal".to_owned(), |u| format!("User:{u}"))
}

/// An authorization refusal restated with the ACL the operation needs (`Write and Describe
/// on TransactionalId pgcdc-shop`); other errors pass unchanged.
pub fn missing_acl(e: Error, principal: &str, acl: impl std::fmt::Display) -> Error {
    if e.code() != Code::KafkaAuthorization {
        return e;
    }
    e.suffixed(format_args!("grant {principal} {acl}"))
}

/// Sorts a Kafka error into the daemon's classes: fenced (another instance took over),
/// permanent (authorization, configuration) or transient (abort, rewind to the checkpoint,
/// try again).
pub fn classify(brokers: &str, what: &str, e: KafkaError) -> Error {
    // A property librdkafka refuses (unknown, out of range) is fixed in the config, not by
    // retrying: name the YAML key it came from.
    if let KafkaError::ClientConfig(_, desc, key, _) = &e {
        return Error::permanent(
            Code::KafkaConfig,
            format!(
                "Kafka client configuration: {} (librdkafka property {key}: {}); fix it in the daemon config",
                yaml_key(key),
                desc.trim()
            ),
        );
    }
    let text = format!("Kafka {brokers}: {what}: {e}");
    // A refusal is permanent whatever state it left the transaction in: retrying cannot
    // grant an ACL.
    let refused = match &e {
        KafkaError::Transaction(t) => Some(t.code()),
        other => other.rdkafka_error_code(),
    };
    match refused {
        Some(RDKafkaErrorCode::SaslAuthenticationFailed) => {
            return Error::permanent(
                Code::KafkaAuthorization,
                format!("{text}; check sasl.username, sasl.password and sasl.mechanisms under kafka.librdkafka"),
            )
            .with_next_step("fix the SASL credentials in the kafka section of the daemon config")
            .with_source(e);
        }
        Some(
            RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::GroupAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed
            | RDKafkaErrorCode::TransactionalIdAuthorizationFailed,
        ) => return Error::permanent(Code::KafkaAuthorization, text).with_source(e),
        _ => {}
    }
    let code = match &e {
        KafkaError::Transaction(t) => {
            if matches!(
                t.code(),
                RDKafkaErrorCode::Fenced | RDKafkaErrorCode::ProducerFenced
            ) {
                return Error::fenced(format!("{text}; {FENCED_NOTE}")).with_source(e);
            }
            if t.is_fatal() && !t.txn_requires_abort() {
                return Error::permanent(Code::Kafka, text).with_source(e);
            }
            Some(t.code())
        }
        other => other.rdkafka_error_code(),
    };
    let err = match code {
        // Retrying a record the broker finds too large only fails again (a topic created
        // before pgcdc, with a smaller max.message.bytes).
        Some(RDKafkaErrorCode::MessageSizeTooLarge) => Error::permanent(
            Code::KafkaRecordTooLarge,
            format!(
                "{text}; raise the topic's max.message.bytes to at least {} bytes",
                crate::kafka::producer::MAX_RECORD_BYTES
            ),
        ),
        Some(
            RDKafkaErrorCode::InvalidConfig
            | RDKafkaErrorCode::InvalidReplicationFactor
            | RDKafkaErrorCode::PolicyViolation,
        ) => Error::permanent(
            Code::Kafka,
            format!("{text}; check the broker ACLs and the kafka section of the daemon config"),
        ),
        Some(RDKafkaErrorCode::Fenced | RDKafkaErrorCode::ProducerFenced) => Error::fenced(text),
        _ => Error::transient(Code::KafkaUnavailable, text),
    };
    err.with_source(e)
}

/// The daemon-config key a librdkafka property comes from.
fn yaml_key(property: &str) -> String {
    match property {
        "linger.ms" => "kafka.linger".into(),
        "batch.size" => "kafka.batch_bytes".into(),
        "transaction.timeout.ms" => "kafka.transaction.timeout".into(),
        "queue.buffering.max.kbytes" => "kafka.producer_queue_bytes".into(),
        "compression.type" => "kafka.compression".into(),
        "bootstrap.servers" => "kafka.bootstrap_servers".into(),
        other => format!("kafka.librdkafka.{other}"),
    }
}

/// Checks that librdkafka accepts the producer configuration (property names and ranges),
/// without touching the network: a refused property is a permanent error naming the key.
pub fn check_config(cfg: &KafkaConfig, connector: &str) -> Result<(), Error> {
    producer::TxProducer::new(cfg, "pgcdc-config-check", connector).map(|_| ())
}

/// Checks that the brokers answer a metadata request.
pub async fn check_brokers(cfg: &KafkaConfig, connector: &str) -> Result<(), Error> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let cfg = cfg.clone();
    let cx = QuietContext::new(connector);
    tokio::task::spawn_blocking(move || {
        let c: BaseConsumer<QuietContext> =
            base_config(&cfg).create_with_context(cx).map_err(|e| classify(&cfg.bootstrap_servers, "creating a client", e))?;
        // One topic's metadata, not every topic's: a cluster with thousands of topics
        // answers that slowly. A consumer's request never creates the topic.
        c.fetch_metadata(Some(&cfg.offsets_topic), std::time::Duration::from_secs(10)).map(|_| ()).map_err(|e| {
            Error::transient(Code::KafkaUnavailable, format!(
                "Kafka {}: no answer to a metadata request ({e}); check kafka.bootstrap_servers and that the brokers run",
                cfg.bootstrap_servers
            ))
        .with_source(e)
})
    })
    .await
    .map_err(|e| Error::permanent(Code::Internal, format!("broker check failed: {e}")).with_source(e))?
}
