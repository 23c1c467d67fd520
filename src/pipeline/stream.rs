//! The streaming loop: replication messages to the reader, keepalives answered and turned
//! into idle checkpoints, until shutdown, a failed task, or an error.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::ConnectorConfig;
use crate::error::{Code, Error, Result};
use crate::kafka::sink::SinkMsg;
use crate::postgres::feedback::Positions;
use crate::postgres::{ReplicationStream, StreamEvent};

use super::reader::Reader;
use super::sink_stopped;

/// How often a running connector checks that its publication still publishes every
/// captured table.
const PUBLICATION_CHECK_INTERVAL: Duration = Duration::from_secs(10);

/// The tasks beside the reader; either one ending stops the stream.
pub(super) struct Tasks {
    /// The Kafka sink.
    pub(super) sink: JoinHandle<Result<()>>,
    /// Whether the loop already took the sink's result (it ended the stream).
    pub(super) sink_taken: bool,
    /// The incremental snapshot's watermark reads.
    pub(super) driver: JoinHandle<Result<()>>,
}

/// Where the stream is, for the feedback task and the metrics.
pub(super) struct Feed {
    /// WAL received from the server (the feedback task reports it).
    pub(super) positions: Arc<Positions>,
    /// The connector's series (server WAL end, for lag).
    pub(super) live: Arc<crate::metrics::Positions>,
    /// Asks the feedback task for a status update now (the server requested one).
    pub(super) reply: mpsc::Sender<()>,
}

impl Feed {
    /// The server has sent WAL up to `wal_end`.
    fn saw(&self, wal_end: crate::Lsn) {
        self.positions
            .received
            .fetch_max(wal_end.0, Ordering::AcqRel);
        self.live
            .server_wal_end
            .fetch_max(wal_end.0, Ordering::Relaxed);
    }
}

pub(super) async fn run(
    conn: &ConnectorConfig,
    reader: &mut Reader<'_>,
    stream: &mut ReplicationStream,
    tasks: &mut Tasks,
    feed: &Feed,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<()> {
    let mut publication_check = tokio::time::interval(PUBLICATION_CHECK_INTERVAL);
    publication_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    publication_check.tick().await;
    loop {
        let ev = tokio::select! {
            biased;
            _ = shutdown.changed() => return Ok(()),
            r = &mut tasks.sink => {
                tasks.sink_taken = true;
                return Err(sink_stopped(r));
            }
            _ = publication_check.tick() => {
                // A captured table someone removed from the publication stops streaming
                // without a sound: re-added to pgcdc's own publication, an error otherwise.
                reader.catalog.cover_tables(conn).await?;
                continue;
            }
            r = &mut tasks.driver => return Err(match r {
                Ok(Err(e)) => e,
                Ok(Ok(())) => Error::transient(Code::Internal, "the snapshot reader stopped"),
                Err(e) => Error::permanent(Code::Internal, format!("the snapshot reader failed: {e}")),
            }),
            ev = stream.next() => ev,
        };
        match ev? {
            StreamEvent::XLogData {
                wal_start,
                wal_end,
                data,
            } => {
                feed.saw(wal_end);
                reader.handle(wal_start, data).await?;
            }
            StreamEvent::Keepalive {
                wal_end,
                reply_requested,
            } => {
                feed.saw(wal_end);
                if reply_requested {
                    let _ = feed.reply.try_send(());
                }
                if reader.txn.is_none() {
                    reader.send(SinkMsg::Idle(wal_end)).await?;
                    reader.beat(wal_end).await?;
                }
            }
        }
    }
}
