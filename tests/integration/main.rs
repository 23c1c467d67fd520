#![recursion_limit = "512"]
//! Integration tests against the real local stack (`make stack`): PostgreSQL, Apache Kafka
//! and Apicurio Registry on loopback. One test binary, so rdkafka links once.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test tool: failing loudly is its job

/// The version matrix (issue 14.1): `on_majors!(name, f)` makes module `name` with one test
/// per other PostgreSQL major of the stack (`pg14`, `pg15`, `pg16`, `pg18`), each running
/// `f(Some(major))` on that server; the test calling `f(None)` covers the stack's 17.
macro_rules! on_majors {
    ($name:ident, $f:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn pg14() {
                super::$f(Some(14)).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn pg15() {
                super::$f(Some(15)).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn pg16() {
                super::$f(Some(16)).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn pg18() {
                super::$f(Some(18)).await
            }
        }
    };
}

mod bad_input;
mod checkpoint;
mod columns;
mod common;
mod connect;
mod consumers;
mod debezium_schemas;
mod debezium_takeover;
mod failover;
mod fencing;
mod generated;
mod harness;
mod heartbeats;
mod isolation;
mod java_spelling;
mod jdbc_sink;
mod lost_slot;
mod messages;
mod outbox;
mod partitions;
mod pg_values;
mod pipeline_changes;
mod pipeline_types;
mod python_consumer;
mod restart;
mod safety;
mod schema_changes;
mod secured_kafka;
mod shutdown;
mod slots;
mod smoke_kafka;
mod smoke_postgres;
mod smoke_registry;
mod snapshot;
mod stream_schema;
mod takeover;
mod toast;
mod txmeta;
mod txn_timeout;
