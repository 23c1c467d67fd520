//! pgcdc: PostgreSQL logical replication (`pgoutput`) into Kafka as Debezium-compatible Avro
//! events, exactly once.
//!
//! Module map, in the order the data flows:
//!
//! ```text
//!  PostgreSQL ──pgoutput──▶ postgres ──bytes──▶ decode ──rows──▶ typemap ──values──▶ avro
//!  (slot, publication)      (connect,           (messages,       (PG type →          (schemas,
//!                            replication,        transactions,    Avro type/value)    registry,
//!                            feedback)           relations)                           wire format)
//!                                                                                        │
//!        slot flush LSN ◀── checkpoint ◀── kafka (transactional producer, topics) ◀──────┘
//! ```
//!
//! - [`lsn`]: the `Lsn` newtype shared by every stage.

pub mod lsn;

pub use lsn::Lsn;
