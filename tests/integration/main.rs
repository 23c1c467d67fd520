#![recursion_limit = "512"]
//! Integration tests against the real local stack (`make stack`): PostgreSQL, Apache Kafka
//! and Apicurio Registry on loopback. One test binary, so rdkafka links once.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test tool: failing loudly is its job

mod checkpoint;
mod columns;
mod common;
mod connect;
mod consumers;
mod debezium_schemas;
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
mod toast;
mod txmeta;
mod txn_timeout;
