//! The prefixes of pgcdc's own logical decoding messages (`pg_logical_emit_message`):
//! never events, whatever `messages.prefix_include` says.

/// Incremental-snapshot watermarks (low and high) around each chunk.
pub const WATERMARK: &str = "pgcdc.watermark";
/// Heartbeats that move the slot on a database whose captured tables are idle.
pub const HEARTBEAT: &str = "pgcdc.heartbeat";
/// DDL written by the event trigger of `pgcdc install-ddl-capture`.
pub const DDL: &str = "pgcdc.ddl";
