//! Topic creation: one topic per table, created when first needed with the configured
//! partitions, replication factor and configs.

use std::collections::HashSet;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::error::RDKafkaErrorCode;

use crate::config::KafkaConfig;
use crate::error::{retry, Code, Error, Result, IN_PLACE};
use crate::kafka::{base_config, classify, QuietContext};

pub struct Topics {
    admin: std::sync::Arc<AdminClient<QuietContext>>,
    brokers: String,
    partitions: i32,
    replication: i32,
    configs: Vec<(String, String)>,
    known: HashSet<String>,
    /// Who the broker sees, for the ACL a refusal names.
    principal: String,
}

impl Topics {
    pub fn new(cfg: &KafkaConfig, connector: &str) -> Result<Self> {
        let admin = base_config(cfg)
            .create_with_context(QuietContext::new(connector))
            .map_err(|e| classify(&cfg.bootstrap_servers, "creating the admin client", e))?;
        Ok(Topics {
            admin: std::sync::Arc::new(admin),
            brokers: cfg.bootstrap_servers.clone(),
            partitions: cfg.topics.partitions,
            replication: cfg.topics.replication_factor,
            configs: cfg
                .topics
                .configs
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            known: HashSet::new(),
            principal: crate::kafka::principal(cfg),
        })
    }

    /// Whether `topic` exists, from the cluster's metadata (false also when the principal
    /// may not describe it: the create that follows names the ACLs).
    async fn exists(&self, topic: &str) -> Result<Option<usize>> {
        let (admin, name) = (self.admin.clone(), topic.to_owned());
        let md = tokio::task::spawn_blocking(move || {
            admin
                .inner()
                .fetch_metadata(Some(&name), Duration::from_secs(30))
        })
        .await
        .map_err(|e| {
            Error::permanent(Code::Internal, format!("topic metadata task failed: {e}"))
                .with_source(e)
        })?
        .map_err(|e| classify(&self.brokers, &format!("reading metadata of {topic}"), e))?;
        let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
            return Ok(None);
        };
        match t.error().map(RDKafkaErrorCode::from) {
            None => Ok((!t.partitions().is_empty()).then(|| t.partitions().len())),
            // A missing topic the principal may not create looks the same as one it may not
            // describe (the metadata request allows auto-creation): creating it tells them
            // apart, and its refusal names both ACLs.
            Some(
                RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::TopicAuthorizationFailed,
            ) => Ok(None),
            Some(code) => Err(Error::transient(
                Code::KafkaUnavailable,
                format!(
                    "Kafka {}: reading metadata of {topic}: {code}",
                    self.brokers
                ),
            )),
        }
    }

    /// Creates `topic` unless it exists. `extra` configs override the defaults (the offsets
    /// topic is compacted).
    pub async fn ensure(
        &mut self,
        topic: &str,
        partitions: Option<i32>,
        extra: &[(&str, &str)],
    ) -> Result<()> {
        let want = partitions.unwrap_or(self.partitions);
        if self.known.contains(topic) || self.existing(topic, want).await? {
            return Ok(());
        }
        self.create(&[topic], want, extra).await
    }

    /// Creates the topics of `topics` that do not exist, with the default partitions and
    /// configs, in one request: creating them one by one took ~30 ms each (the initial
    /// snapshot of 50 tables spent 1.5 s on it).
    pub async fn ensure_all(&mut self, topics: &[String]) -> Result<()> {
        let mut missing = Vec::new();
        for topic in topics {
            // Tables whose names differ only in characters a topic name cannot hold share a
            // topic: asked for once (a request naming a topic twice is refused).
            if !missing.contains(&topic.as_str())
                && !self.known.contains(topic)
                && !self.existing(topic, self.partitions).await?
            {
                missing.push(topic.as_str());
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        self.create(&missing, self.partitions, &[]).await
    }

    /// Whether `topic` exists (then known, and used as it is): a topic that exists is never
    /// created again, which would need Create, which a principal with Write on topics an
    /// operator made does not have.
    async fn existing(&mut self, topic: &str, want: i32) -> Result<bool> {
        let exists = retry(IN_PLACE, "reading topic metadata", || self.exists(topic)).await?;
        let Some(n) = exists else {
            return Ok(false);
        };
        if n != want as usize {
            tracing::warn!(
                topic,
                partitions = n,
                configured = want,
                "topic {topic} exists with {n} partitions, not the {want} pgcdc would create it with: pgcdc uses it as it is (each key keeps its order within its partition); to change it, alter the topic's partitions (keys then move to other partitions) or delete it before pgcdc first writes"
            );
        }
        self.known.insert(topic.to_owned());
        Ok(true)
    }

    /// Creates `topics` with `partitions` and the configured configs, `extra` overriding them.
    async fn create(
        &mut self,
        topics: &[&str],
        partitions: i32,
        extra: &[(&str, &str)],
    ) -> Result<()> {
        // Accept every record pgcdc may produce, unless the operator chose otherwise.
        let max_bytes = (crate::kafka::producer::MAX_RECORD_BYTES + 64 * 1024).to_string();
        // The configured configs, `extra` overriding them; the same for every topic.
        let mut configs: Vec<(&str, &str)> = self
            .configs
            .iter()
            .filter(|(k, _)| !extra.iter().any(|(ek, _)| ek == k))
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain(extra.iter().copied())
            .collect();
        if !configs.iter().any(|(k, _)| *k == "max.message.bytes") {
            configs.push(("max.message.bytes", &max_bytes));
        }
        let new: Vec<NewTopic> = topics
            .iter()
            .map(|topic| {
                let nt =
                    NewTopic::new(topic, partitions, TopicReplication::Fixed(self.replication));
                configs.iter().fold(nt, |nt, (k, v)| nt.set(k, v))
            })
            .collect();
        let named = topics.join(", ");
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let (admin, brokers, principal) = (&self.admin, &self.brokers, &self.principal);
        retry(IN_PLACE, "creating topics", || async {
            let res = admin
                .create_topics(&new, &opts)
                .await
                .map_err(|e| classify(brokers, &format!("creating topic {named}"), e))?;
            for r in res {
                match r {
                    Ok(topic) => tracing::info!(topic, "created topic"),
                    Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                    Err((t, code)) => {
                        let msg = format!("Kafka {brokers}: creating topic {t}: {code}");
                        return Err(match code {
                            RDKafkaErrorCode::TopicAuthorizationFailed
                            | RDKafkaErrorCode::ClusterAuthorizationFailed => Error::permanent(
                                Code::KafkaAuthorization,
                                format!(
                                    "{msg}; grant {} Create on Topic {t}, or create the topic yourself (pgcdc then needs Write and Describe on it)",
                                    principal
                                ),
                            ),
                            RDKafkaErrorCode::InvalidReplicationFactor
                            | RDKafkaErrorCode::InvalidPartitions
                            | RDKafkaErrorCode::InvalidConfig
                            | RDKafkaErrorCode::PolicyViolation => Error::permanent(
                                Code::Kafka,
                                format!("{msg}; fix kafka.topics in the daemon config or create the topic yourself"),
                            ),
                            _ => Error::transient(Code::KafkaUnavailable, msg),
                        });
                    }
                }
            }
            Ok(())
        })
        .await?;
        self.known.extend(topics.iter().map(|t| t.to_string()));
        Ok(())
    }

    /// Refuses an offsets topic that is not compacted: Kafka would delete pgcdc's checkpoints
    /// after `retention.ms`, and a restart after that would not know where it stopped. Kafka
    /// Connect refuses its offsets topic likewise. A principal without DescribeConfigs on the
    /// topic gets a warning instead.
    pub async fn check_compacted(&self, topic: &str) -> Result<()> {
        use rdkafka::admin::ResourceSpecifier;
        let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(30)));
        let res = self
            .admin
            .describe_configs(&[ResourceSpecifier::Topic(topic)], &opts)
            .await
            .map_err(|e| classify(&self.brokers, &format!("describing topic {topic}"), e))?;
        let policy = match res.into_iter().next() {
            Some(Ok(r)) => r.get("cleanup.policy").and_then(|e| e.value.clone()),
            Some(Err(_)) | None => None,
        };
        match policy {
            Some(p) if p.split(',').any(|v| v.trim() == "compact") => Ok(()),
            // Not shown (a principal without DescribeConfigs on the topic): not checkable.
            None => {
                tracing::warn!(topic, "cannot read cleanup.policy of the offsets topic {topic}; make sure it is compacted (grant {} DescribeConfigs on Topic {topic} to let pgcdc check)", self.principal);
                Ok(())
            }
            Some(p) => Err(Error::permanent(
                Code::Kafka,
                format!(
                    "Kafka {}: offsets topic {topic} has cleanup.policy={}, so Kafka would delete pgcdc's checkpoints after retention.ms; run kafka-configs.sh --bootstrap-server {} --alter --entity-type topics --entity-name {topic} --add-config cleanup.policy=compact (or set kafka.offsets_topic to a compacted topic)",
                    self.brokers, p, self.brokers
                ),
            )),
        }
    }
}
