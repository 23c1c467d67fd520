//! Gauges computed at scrape time from positions each connector's pipeline keeps in atomics
//! (replication lag in bytes and seconds, the open Kafka transaction's age).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::TypedMetric;
use prometheus_client::registry::Unit;

use super::connector;

/// Positions and timestamps one connector's pipeline stores as they change.
#[derive(Debug, Default)]
pub struct Positions {
    /// The server's WAL end, from the replication stream.
    pub server_wal_end: AtomicU64,
    /// The position named by the last committed checkpoint (what the slot may confirm).
    pub confirmed: AtomicU64,
    /// Commit time (µs since 1970) of the newest PostgreSQL transaction delivered, and when
    /// it was delivered; both 0 before the first.
    pub delivered_commit_us: AtomicI64,
    /// µs since 1970 when the open Kafka transaction began; 0 when none is open.
    pub open_since_us: AtomicI64,
    /// Set when the sink is caught up with an idle server: lag in seconds is then 0.
    pub idle: std::sync::atomic::AtomicBool,
}

/// The registry's view of every connector's [`Positions`].
#[derive(Debug, Default)]
pub(super) struct Live(Mutex<BTreeMap<String, Arc<Positions>>>);

impl Live {
    pub(super) fn of(&self, c: &str) -> Arc<Positions> {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(c.to_owned()).or_default().clone()
    }

    pub(super) fn remove(&self, c: &str) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(c);
    }
}

/// (name, help, unit, value from a connector's positions and the time now in µs).
type LiveGauge = (
    &'static str,
    &'static str,
    Option<Unit>,
    fn(&Positions, i64) -> f64,
);

impl Collector for Live {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let all: Vec<(String, Arc<Positions>)> = {
            let m = self.0.lock().unwrap_or_else(|e| e.into_inner());
            m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        let now = crate::clock::now_micros();
        let gauges: [LiveGauge; 3] = [
            (
                "pgcdc_replication_lag_bytes",
                "WAL between the server's end and the position the last Kafka commit confirmed.",
                None,
                |p, _| {
                    let end = p.server_wal_end.load(Ordering::Relaxed);
                    let done = p.confirmed.load(Ordering::Relaxed);
                    if end == 0 || done == 0 {
                        0.0
                    } else {
                        end.saturating_sub(done) as f64
                    }
                },
            ),
            (
                "pgcdc_replication_lag",
                "Now minus the commit time of the newest PostgreSQL transaction delivered (0 when caught up with an idle server).",
                Some(Unit::Seconds),
                |p, now| {
                    let ts = p.delivered_commit_us.load(Ordering::Relaxed);
                    if ts == 0 || p.idle.load(Ordering::Relaxed) {
                        0.0
                    } else {
                        ((now - ts).max(0) as f64) / 1e6
                    }
                },
            ),
            (
                "pgcdc_open_kafka_transaction_age",
                "How long the open Kafka transaction has been open (0 when none is).",
                Some(Unit::Seconds),
                |p, now| {
                    let since = p.open_since_us.load(Ordering::Relaxed);
                    if since == 0 {
                        0.0
                    } else {
                        ((now - since).max(0) as f64) / 1e6
                    }
                },
            ),
        ];
        for (name, help, unit, value) in gauges {
            let mut family = encoder.encode_descriptor(
                name,
                help,
                unit.as_ref(),
                <ConstGauge<f64> as TypedMetric>::TYPE,
            )?;
            for (c, p) in &all {
                let labels = connector(c);
                let enc = family.encode_family(&labels)?;
                ConstGauge::new(value(p, now)).encode(enc)?;
            }
        }
        Ok(())
    }
}
