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

/// Output settings pinned for every session pgcdc opens (replication, catalog, snapshot),
/// so that text values have one format whatever the server's defaults (see `typemap`).
pub const SESSION_OPTIONS: &str = "-c DateStyle=ISO -c TimeZone=UTC -c IntervalStyle=iso_8601 \
     -c extra_float_digits=3 -c bytea_output=hex -c lc_monetary=C";
pub use replication::{ReplicationClient, ReplicationStream, StatusSender, StreamEvent};
