//! Everything that talks to PostgreSQL: the replication connection (on postgres-protocol
//! codecs), the catalog connection (tokio-postgres), and the feedback task that reports the
//! delivered position back to the slot.

pub mod catalog;
pub mod ddl;
pub mod feedback;
pub mod hosts;
pub mod replication;
pub mod snapshot;
pub mod tls;
pub mod toast;

pub use catalog::Catalog;
pub use replication::{ReplicationClient, ReplicationStream, StatusSender, StreamEvent};
