//! Snapshots: the rows already in the tables, delivered before (initial) or alongside
//! (incremental) the stream, resumable exactly once.
//!
//! - [`initial`]: a new connector's slot exports the snapshot of its consistent point; worker
//!   connections read primary-key chunks inside it, in parallel across and within tables,
//!   and the stream starts at the consistent point once every chunk is committed.
//! - Incremental (DBLog): while streaming, a chunk is read between a low and a high
//!   watermark written to the WAL; keys changed in the stream between the two are dropped
//!   from the chunk (the streamed change is newer), and the rest is emitted at the high
//!   watermark's position. Used for ad-hoc snapshots (signals) and to finish an initial
//!   snapshot after a crash: its exported snapshot died with the crashed process, so the
//!   chunks not yet committed are read this way.
//!
//! Progress lives in [`crate::checkpoint::progress::SnapshotState`], written into every checkpoint, so a finished chunk
//! and its record of completion are in the same Kafka transaction.

pub mod incremental;
pub mod initial;
