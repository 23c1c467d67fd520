//! pgcdc: PostgreSQL logical replication (`pgoutput`) into Kafka as Debezium-compatible Avro
//! events, exactly once.
//!
//! Module map, in the order the data flows:
//!
//! ```text
//!  PostgreSQL ──pgoutput──▶ postgres ──bytes──▶ decode ──rows──▶ typemap ──values──▶ avro
//!  (slot, publication)      (connect,           (messages,       (PG type →          (schemas,
//!                            replication,        relations)       Avro type/value)    registry,
//!                            feedback)                                                wire format)
//!                                                                                        │
//!        slot flush LSN ◀── checkpoint ◀── kafka (transactional producer, topics) ◀──────┘
//! ```
//!
//! - [`lsn`]: the `Lsn` newtype shared by every stage.
//! - [`config`]: daemon and connector files.
//! - [`decode`]: pgoutput messages and the relation cache.
//! - [`typemap`]: PostgreSQL types to Avro schemas and values.

pub mod config;
pub mod decode;
pub mod lsn;
pub mod typemap;

pub use lsn::Lsn;
