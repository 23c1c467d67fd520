//! The Kafka of the stack is a real broker with transactions: a `read_committed` consumer sees
//! the records of a committed transaction and none of an aborted one, while a
//! `read_uncommitted` consumer sees that the aborted record was written. Mock brokers fail
//! this test, which is its point.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::Message;

use crate::common::{unique, Stack};

fn read_all(stack: &Stack, topic: &str, isolation: &str, expect_last: &str) -> Vec<String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &stack.kafka_bootstrap)
        .set("group.id", unique("smoke_group"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    while std::time::Instant::now() < deadline {
        if let Some(msg) = consumer.poll(Duration::from_millis(200)) {
            let msg = msg.unwrap();
            let v = String::from_utf8(msg.payload().unwrap().to_vec()).unwrap();
            let last = v == expect_last;
            seen.push(v);
            if last {
                return seen;
            }
        }
    }
    panic!("{isolation} consumer did not reach {expect_last:?} within 30s; saw {seen:?}");
}

#[tokio::test]
async fn read_committed_hides_aborted_transactions() {
    let stack = Stack::get();
    let topic = unique("smoke_txn");
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &stack.kafka_bootstrap)
        .create()
        .unwrap();
    let res = admin
        .create_topics(
            &[NewTopic::new(&topic, 1, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    assert!(res.iter().all(|r| r.is_ok()), "create topic: {res:?}");

    let stack2 = Stack::get();
    let topic2 = topic.clone();
    tokio::task::spawn_blocking(move || {
        let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
            .set("bootstrap.servers", &stack2.kafka_bootstrap)
            .set("transactional.id", unique("smoke_txid"))
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .create()
            .unwrap();
        let t = Duration::from_secs(30);
        producer.init_transactions(t).unwrap();
        let send = |v: &str| {
            producer
                .send(BaseRecord::<(), str>::to(&topic2).payload(v))
                .unwrap()
        };

        producer.begin_transaction().unwrap();
        send("committed-1");
        producer.commit_transaction(t).unwrap();

        producer.begin_transaction().unwrap();
        send("aborted-1");
        producer.flush(t).unwrap(); // the record reaches the log before the abort
        producer.abort_transaction(t).unwrap();

        producer.begin_transaction().unwrap();
        send("committed-2");
        producer.commit_transaction(t).unwrap();
    })
    .await
    .unwrap();

    let (s, t) = (Stack::get(), topic.clone());
    let committed =
        tokio::task::spawn_blocking(move || read_all(&s, &t, "read_committed", "committed-2"))
            .await
            .unwrap();
    assert_eq!(committed, vec!["committed-1", "committed-2"]);

    let (s, t) = (Stack::get(), topic.clone());
    let uncommitted =
        tokio::task::spawn_blocking(move || read_all(&s, &t, "read_uncommitted", "committed-2"))
            .await
            .unwrap();
    assert_eq!(uncommitted, vec!["committed-1", "aborted-1", "committed-2"]);

    admin
        .delete_topics(&[&topic], &AdminOptions::new())
        .await
        .unwrap();
}
