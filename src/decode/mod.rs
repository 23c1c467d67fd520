//! pgoutput bytes → logical replication messages, and the relation cache that gives them
//! meaning.
//!
//! Message formats: <https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html>.
//! We request protocol version 1 (PostgreSQL 10+): no streamed in-progress transactions, so
//! every row change arrives between the Begin and Commit of its transaction.

pub mod pgoutput;
pub mod relation;

pub use pgoutput::{decode, DecodeError, Message, Tuple, TupleData};
pub use relation::{Column, Relation, RelationCache};
