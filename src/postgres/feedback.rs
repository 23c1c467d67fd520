//! The feedback task: standby status updates on the replication connection.
//!
//! Invariants: the flush position only moves forward, and it is only ever an LSN whose
//! events Kafka has committed (it comes from the sink through a `watch`). Updates go out at
//! least every `interval` (min(10s, wal_sender_timeout/2)) so the walsender does not time us
//! out, and at once when the server asks for a reply.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::error::Result;
use crate::postgres::StatusSender;
use crate::Lsn;

/// Positions shared between the reader, the sink and the feedback task.
#[derive(Default)]
pub struct Positions {
    /// The end of the last WAL the reader received.
    pub received: AtomicU64,
}

/// The interval between unsolicited status updates for a `wal_sender_timeout` value as
/// PostgreSQL prints it (`60s`, `10s`, `500ms`, `1min`, `0` for none).
pub fn status_interval(wal_sender_timeout: &str) -> Duration {
    const MAX: Duration = Duration::from_secs(10);
    let s = wal_sender_timeout.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let Ok(n) = num.parse::<u64>() else {
        return MAX;
    };
    let d = match unit {
        "" | "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "min" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return MAX,
    };
    if d.is_zero() {
        MAX
    } else {
        (d / 2).min(MAX).max(Duration::from_millis(100))
    }
}

pub async fn run(
    mut sender: StatusSender,
    positions: Arc<Positions>,
    mut flushed: watch::Receiver<Lsn>,
    mut reply_now: mpsc::Receiver<()>,
    interval: Duration,
) -> Result<()> {
    let mut last_sent = Lsn::ZERO;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            r = reply_now.recv() => { if r.is_none() { return Ok(()); } }
            r = flushed.changed() => { if r.is_err() { return Ok(()); } }
            _ = tick.tick() => {}
        }
        let flush = (*flushed.borrow_and_update()).max(last_sent);
        let received = Lsn(positions.received.load(Ordering::Acquire)).max(flush);
        sender.send(received, flush, false).await?;
        if flush > last_sent {
            tracing::debug!(lsn = %flush, "confirmed flush position to the slot");
        }
        last_sent = flush;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_is_half_the_timeout_capped_at_ten_seconds() {
        assert_eq!(status_interval("60s"), Duration::from_secs(10));
        assert_eq!(status_interval("10s"), Duration::from_secs(5));
        assert_eq!(status_interval("1min"), Duration::from_secs(10));
        assert_eq!(status_interval("3000ms"), Duration::from_millis(1500));
        assert_eq!(status_interval("0"), Duration::from_secs(10));
        assert_eq!(status_interval("weird"), Duration::from_secs(10));
    }
}
