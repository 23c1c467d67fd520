//! pgcdc: PostgreSQL logical replication (`pgoutput`) into Kafka as Debezium-compatible Avro
//! events, exactly once.
//!
//! Module map, in the order the data flows. No module imports one that imports it back
//! (`layering` checks it from the sources, and that this list keeps it): from the bottom,
//! `lsn`, `sql`, `clock`, `prefix`, `metrics`, `config`, `error`, `health`, `typemap`,
//! `decode`, `postgres`, `checkpoint`, `kafka`, `avro`, `change`, `toast`, `snapshot`,
//! `consume`, `tail`, `pipeline`, `admin`, `supervisor`, `http`.
//!
//! ```text
//!  PostgreSQL ─pgoutput─▶ postgres ─bytes─▶ decode ─tuples─▶ change ─events─▶ toast ─▶ avro
//!  (slot, publication)    (replication,     (messages,       (a row change    (unchanged  (typemap
//!                          feedback)         relations)       as Debezium      TOAST       values,
//!                                                             events)          filled)     schemas,
//!  snapshot (initial, incremental) ─rows──────────────────────────────────────────────▶  registry)
//!                                                                                           │
//!        slot flush LSN ◀── checkpoint ◀── kafka (transactional producer, topics, sink) ◀───┘
//! ```
//!
//! - [`lsn`]: the `Lsn` newtype shared by every stage; [`error`]: the one error type (kind,
//!   stable code, next step, source chain) and in-place retry; [`sql`]: identifiers and
//!   literals quoted for SQL text; [`clock`]: the wall clock; [`prefix`]: the logical
//!   message prefixes pgcdc reserves for itself.
//! - [`config`]: daemon and connector files.
//! - [`postgres`]: replication connection, catalog connection, TLS, several hosts
//!   (`target_session_attrs`), feedback task.
//! - [`decode`]: pgoutput messages and the relation cache.
//! - [`change`]: what one row change becomes as events (a key change: delete, tombstone,
//!   create), as data.
//! - [`toast`]: completes unchanged TOASTed values PostgreSQL did not send (or says it could
//!   not, with Debezium's placeholder and a header).
//! - [`typemap`]: PostgreSQL types to Avro schemas and values.
//! - [`avro`]: table schemas (fields shaped as Debezium's: NOT NULL, defaults), registry
//!   client, row images ([`avro::row`]: written from the text to Avro bytes), envelopes,
//!   value policies, wire format.
//! - [`kafka`]: topics, the transactional producer, and the sink that writes whole
//!   PostgreSQL transactions and the checkpoint in one Kafka transaction.
//! - [`checkpoint`]: the offsets record written in the same Kafka transaction as the events,
//!   with the snapshot progress it carries ([`checkpoint::progress`]); [`kafka::offsets`]
//!   reads it back (and Kafka Connect's offsets); [`checkpoint::debezium`]: where a Debezium
//!   connector stopped, and the seam pgcdc continues its stream at.
//! - [`snapshot`]: initial and incremental snapshots.
//! - [`pipeline`]: one connector's loop, wiring only; [`pipeline::plan`] is its start as
//!   a pure decision (resume, snapshot on a new slot, re-read after a lost slot, or refuse:
//!   slots pgcdc may drop, another cluster's checkpoint); [`pipeline::takeover`]: taking over
//!   from a Debezium connector (checks, plan, first checkpoint; [`avro::seam`] compares what
//!   a column means on both sides); [`supervisor`]: many connectors, each failing
//!   alone, restarts, SIGHUP reloads.
//! - [`health`], [`metrics`], [`http`]: each connector's state, its series, `/healthz` and
//!   `/metrics`.
//! - [`admin`]: `pgcdc status` and `pgcdc snapshot`.
//! - [`consume`]: reads topics back as a consumer does (read_committed, the registry,
//!   [`consume::json`] for the JSON rendering);
//!   [`tail`]: `pgcdc tail` on it.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod admin;
pub mod avro;
pub mod change;
pub mod checkpoint;
pub mod clock;
pub mod config;
pub mod consume;
pub mod decode;
pub mod error;
pub mod health;
pub mod http;
pub mod kafka;
#[cfg(test)]
mod layering;
pub mod lsn;
pub mod metrics;
pub mod pipeline;
pub mod postgres;
pub mod prefix;
pub mod snapshot;
pub mod sql;
pub mod supervisor;
pub mod tail;
pub mod toast;
pub mod typemap;

pub use lsn::Lsn;
