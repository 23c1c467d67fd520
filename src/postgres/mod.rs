//! Everything that talks to PostgreSQL: the replication connection (on postgres-protocol
//! codecs), the catalog connection (tokio-postgres), and the feedback task that reports the
//! delivered position back to the slot.

pub mod catalog;
pub mod feedback;
pub mod replication;
pub mod snapshot;

pub use catalog::Catalog;
pub use replication::{ReplicationClient, ReplicationStream, StatusSender, StreamEvent};
