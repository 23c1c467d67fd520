//! Process-wide counters, named in one place. Served as Prometheus text by `http`.

use std::sync::atomic::AtomicU64;

pub static EVENTS: AtomicU64 = AtomicU64::new(0);
pub static TRANSACTIONS: AtomicU64 = AtomicU64::new(0);
pub static KAFKA_COMMITS: AtomicU64 = AtomicU64::new(0);
pub static CONNECTOR_ERRORS: AtomicU64 = AtomicU64::new(0);
pub static CONNECTOR_RESTARTS: AtomicU64 = AtomicU64::new(0);
pub static SNAPSHOT_ROWS: AtomicU64 = AtomicU64::new(0);
pub static SIGNAL_ERRORS: AtomicU64 = AtomicU64::new(0);

/// (name, help, counter) for each metric.
pub fn all() -> [(&'static str, &'static str, &'static AtomicU64); 7] {
    [
        (
            "pgcdc_events_total",
            "Change events encoded and handed to Kafka.",
            &EVENTS,
        ),
        (
            "pgcdc_pg_transactions_total",
            "PostgreSQL transactions delivered.",
            &TRANSACTIONS,
        ),
        (
            "pgcdc_kafka_commits_total",
            "Kafka transactions committed.",
            &KAFKA_COMMITS,
        ),
        (
            "pgcdc_connector_errors_total",
            "Errors that stopped a connector run.",
            &CONNECTOR_ERRORS,
        ),
        (
            "pgcdc_connector_restarts_total",
            "Connector restarts after a transient error.",
            &CONNECTOR_RESTARTS,
        ),
        (
            "pgcdc_snapshot_rows_total",
            "Snapshot rows (op r) encoded and handed to Kafka.",
            &SNAPSHOT_ROWS,
        ),
        (
            "pgcdc_signal_errors_total",
            "Signals ignored because they were malformed or named a table that cannot be snapshotted.",
            &SIGNAL_ERRORS,
        ),
    ]
}

pub fn render() -> String {
    let mut out = String::new();
    for (name, help, c) in all() {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}\n",
            c.load(std::sync::atomic::Ordering::Relaxed)
        ));
    }
    out
}
