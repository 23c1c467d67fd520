//! Heartbeats (Debezium's `heartbeat.*`): a record on the heartbeat topic at the first
//! boundary after each interval, and an action on the database at each interval that
//! gives an idle slot something to decode and acknowledge.
//!
//! The record is written where the reader stands at a boundary (after a transaction, a
//! non-transactional message, or an idle keepalive), so it commits with a checkpoint of
//! that position. The action runs on a connection of its own, so a slow database never
//! holds up the stream; without `action_query` it is a non-transactional logical decoding
//! message with prefix [`MESSAGE_PREFIX`], which the reader treats as a boundary.

use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use crate::avro::heartbeat::HeartbeatCodec;
use crate::config::ConnectorConfig;
use crate::metrics::{self, ConnectorEvent};
use crate::prefix::HEARTBEAT as MESSAGE_PREFIX;
use crate::sql::sql_literal;

/// The heartbeat records of a connector: when the last one was written.
pub(super) struct Beat {
    pub(super) codec: HeartbeatCodec,
    pub(super) interval: Duration,
    pub(super) last: Instant,
}

impl Beat {
    /// Whether a heartbeat is due; if so, it counts as written from now.
    pub(super) fn due(&mut self) -> bool {
        if self.last.elapsed() < self.interval {
            return false;
        }
        self.last = Instant::now();
        true
    }
}

/// The SQL run at every interval.
fn action_sql(conn: &ConnectorConfig) -> String {
    match &conn.heartbeat.action_query {
        Some(q) => q.clone(),
        None => format!(
            "SELECT pg_logical_emit_message(false, {}, '')",
            sql_literal(MESSAGE_PREFIX)
        ),
    }
}

/// The action task; it stops when the guard is dropped (the connector's run ends).
pub(super) fn spawn_action(conn: &ConnectorConfig, interval: Duration) -> AbortOnDrop {
    let conn = conn.clone();
    AbortOnDrop(tokio::spawn(async move {
        let sql = action_sql(&conn);
        let app = format!("pgcdc-{}-heartbeat", conn.name);
        let mut client: Option<tokio_postgres::Client> = None;
        let mut failing = false;
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let result = async {
                let c = match client.take().filter(|c| !c.is_closed()) {
                    Some(c) => c,
                    None => {
                        crate::postgres::catalog::connect_client(&conn.postgres, &app, None)
                            .await?
                            .0
                    }
                };
                let r = c.batch_execute(&sql).await;
                client = Some(c);
                r.map_err(|e| {
                    crate::postgres::catalog::pg_err(
                        &format!("{}:{}", conn.postgres.host, conn.postgres.port),
                        e,
                    )
                })
            }
            .await;
            match result {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!(connector = %conn.name, "heartbeat action runs again");
                }
                Ok(()) => {}
                Err(e) => {
                    metrics::count_connector(&conn.name, ConnectorEvent::HeartbeatError);
                    if !failing {
                        failing = true;
                        tracing::warn!(connector = %conn.name, code = %e.code(), error = %e, "heartbeat action failed; it is tried again at every interval (counted in pgcdc_heartbeat_errors)");
                    }
                }
            }
        }
    }))
}

/// A task aborted when this is dropped; `.0` is awaited for its result.
pub(super) struct AbortOnDrop<T = ()>(pub(super) JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
