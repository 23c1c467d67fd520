//! Process-wide counters, named in one place. Served as Prometheus text by `http`.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

pub static EVENTS: AtomicU64 = AtomicU64::new(0);
pub static TRANSACTIONS: AtomicU64 = AtomicU64::new(0);
pub static KAFKA_COMMITS: AtomicU64 = AtomicU64::new(0);
pub static CONNECTOR_ERRORS: AtomicU64 = AtomicU64::new(0);
pub static CONNECTOR_RESTARTS: AtomicU64 = AtomicU64::new(0);
pub static SNAPSHOT_ROWS: AtomicU64 = AtomicU64::new(0);
pub static SIGNAL_ERRORS: AtomicU64 = AtomicU64::new(0);
pub static KAFKA_CLIENT_LOGS_SUPPRESSED: AtomicU64 = AtomicU64::new(0);

/// (name, help, counter) for each metric.
pub fn all() -> [(&'static str, &'static str, &'static AtomicU64); 8] {
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
        (
            "pgcdc_kafka_client_logs_suppressed_total",
            "librdkafka log lines not printed because the same broker said the same within a minute.",
            &KAFKA_CLIENT_LOGS_SUPPRESSED,
        ),
    ]
}

/// Counters with `connector` and `table` labels: (name, help).
pub const UNAVAILABLE_VALUES: (&str, &str) = (
    "pgcdc_unavailable_values_total",
    "Column values PostgreSQL did not send (unchanged TOAST) that events carry as the placeholder.",
);
pub const LOSSY_VALUES: (&str, &str) = (
    "pgcdc_lossy_values_total",
    "Column values the Avro type cannot hold, carried as null under unrepresentable: null.",
);
pub const TOAST_FETCHED: (&str, &str) = (
    "pgcdc_toast_fetched_values_total",
    "Unchanged TOASTed values completed by reading the row back from the table.",
);
pub const SKIPPED_OPERATIONS: (&str, &str) = (
    "pgcdc_skipped_operations_total",
    "Change events not sent because their op is in skipped_operations (labels: connector, table, op).",
);
const LABELED: [(&str, &str); 4] = [
    UNAVAILABLE_VALUES,
    LOSSY_VALUES,
    TOAST_FETCHED,
    SKIPPED_OPERATIONS,
];

/// (metric name, rendered labels) → count.
type Labeled = BTreeMap<(&'static str, String), u64>;
static LABELED_COUNTS: Mutex<Labeled> = Mutex::new(BTreeMap::new());

fn labels(connector: &str, table: &str, op: Option<&str>) -> String {
    let mut s = format!(
        "connector=\"{}\",table=\"{}\"",
        label(connector),
        label(table)
    );
    if let Some(op) = op {
        s.push_str(&format!(",op=\"{}\"", label(op)));
    }
    s
}

fn add(metric: &'static str, labels: String, n: u64) {
    if let Ok(mut m) = LABELED_COUNTS.lock() {
        *m.entry((metric, labels)).or_insert(0) += n;
    }
}

fn read(metric: &'static str, labels: String) -> u64 {
    LABELED_COUNTS
        .lock()
        .ok()
        .and_then(|m| m.get(&(metric, labels)).copied())
        .unwrap_or(0)
}

/// Adds `n` to the labeled counter `metric` of one connector's table.
pub fn count(metric: (&'static str, &str), connector: &str, table: &str, n: u64) {
    add(metric.0, labels(connector, table, None), n);
}

/// The current value of a labeled counter (0 when never counted).
pub fn get(metric: (&'static str, &str), connector: &str, table: &str) -> u64 {
    read(metric.0, labels(connector, table, None))
}

/// Counts one skipped event of `op` (`c`, `u`, `d`, `t`).
pub fn count_skipped(connector: &str, table: &str, op: &str) {
    add(SKIPPED_OPERATIONS.0, labels(connector, table, Some(op)), 1);
}

pub fn get_skipped(connector: &str, table: &str, op: &str) -> u64 {
    read(SKIPPED_OPERATIONS.0, labels(connector, table, Some(op)))
}

/// A Prometheus label value: backslash, quote and newline escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub fn render() -> String {
    let mut out = String::new();
    for (name, help, c) in all() {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}\n",
            c.load(std::sync::atomic::Ordering::Relaxed)
        ));
    }
    let counts = LABELED_COUNTS.lock().map(|m| m.clone()).unwrap_or_default();
    for (name, help) in LABELED {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} counter\n"));
        for ((n, labels), v) in &counts {
            if *n == name {
                out.push_str(&format!("{name}{{{labels}}} {v}\n"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labeled_counters_render_with_escaped_labels() {
        count(LOSSY_VALUES, "c1", "public.\"we\\ird\"", 2);
        count(LOSSY_VALUES, "c1", "public.\"we\\ird\"", 1);
        let text = render();
        assert!(
            text.contains(
                "pgcdc_lossy_values_total{connector=\"c1\",table=\"public.\\\"we\\\\ird\\\"\"} 3\n"
            ),
            "{text}"
        );
        assert!(text.contains("# TYPE pgcdc_unavailable_values_total counter"));
        assert_eq!(get(LOSSY_VALUES, "c1", "public.\"we\\ird\""), 3);
        count_skipped("c1", "public.t", "t");
        assert!(render().contains(
            "pgcdc_skipped_operations_total{connector=\"c1\",table=\"public.t\",op=\"t\"} 1\n"
        ));
        assert_eq!(get_skipped("c1", "public.t", "t"), 1);
    }
}
