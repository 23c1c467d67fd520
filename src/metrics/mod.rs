//! The daemon's metrics, on `prometheus-client`, served by [`crate::http`] at `/metrics`.
//!
//! Every series carries a `connector` label (`table` and `op` where they apply). Gauges that change continuously (replication lag, the age of the
//! open Kafka transaction) are computed at scrape time from positions the pipeline keeps in
//! atomics ([`Live`], in `live.rs`), so the hot path only stores numbers.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, LazyLock, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
pub use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

mod live;
use live::Live;
pub use live::Positions;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnectorLabels {
    connector: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableLabels {
    connector: String,
    table: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableOpLabels {
    connector: String,
    table: String,
    op: String,
}

type ByConnector = Family<ConnectorLabels, Counter>;
type ByTable = Family<TableLabels, Counter>;
type ByTableOp = Family<TableOpLabels, Counter>;
type Seconds = Family<ConnectorLabels, Histogram, fn() -> Histogram>;

/// A labeled counter of one connector's table, as callers name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableCounter {
    /// Column values PostgreSQL did not send (unchanged TOAST) carried as the placeholder.
    Unavailable,
    /// Column values the Avro type cannot hold, carried as null.
    Lossy,
    /// Unchanged TOASTed values completed by reading the row back.
    ToastFetched,
}

impl TableCounter {
    /// The series' name, for log lines that point at it.
    pub fn series(self) -> &'static str {
        match self {
            TableCounter::Unavailable => "pgcdc_unavailable_values_total",
            TableCounter::Lossy => "pgcdc_lossy_values_total",
            TableCounter::ToastFetched => "pgcdc_toast_fetched_values_total",
        }
    }
}

pub const UNAVAILABLE_VALUES: TableCounter = TableCounter::Unavailable;
pub const LOSSY_VALUES: TableCounter = TableCounter::Lossy;
pub const TOAST_FETCHED: TableCounter = TableCounter::ToastFetched;

struct Metrics {
    registry: Registry,
    events: ByTableOp,
    skipped: ByTableOp,
    snapshot_rows: ByTable,
    unavailable: ByTable,
    lossy: ByTable,
    toast_fetched: ByTable,
    transactions: ByConnector,
    kafka_commits: ByConnector,
    kafka_commit_seconds: Seconds,
    connector_errors: ByConnector,
    connector_restarts: ByConnector,
    signal_errors: ByConnector,
    heartbeats: ByConnector,
    outbox_events: ByConnector,
    outbox_unroutable: ByConnector,
    slots_lost: ByConnector,
    transaction_timeouts: ByConnector,
    heartbeat_errors: ByConnector,
    client_logs_suppressed: ByConnector,
    live: Arc<Live>,
    /// The tables each connector has series of, so that [`remove`] finds them.
    tables: Mutex<BTreeMap<String, BTreeSet<String>>>,
}

fn commit_histogram() -> Histogram {
    // 1 ms … ~16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let mut registry = Registry::default();
    let m = Metrics {
        registry: Registry::default(),
        events: Family::default(),
        skipped: Family::default(),
        snapshot_rows: Family::default(),
        unavailable: Family::default(),
        lossy: Family::default(),
        toast_fetched: Family::default(),
        transactions: Family::default(),
        kafka_commits: Family::default(),
        kafka_commit_seconds: Family::new_with_constructor(commit_histogram),
        connector_errors: Family::default(),
        connector_restarts: Family::default(),
        signal_errors: Family::default(),
        heartbeats: Family::default(),
        outbox_events: Family::default(),
        outbox_unroutable: Family::default(),
        slots_lost: Family::default(),
        transaction_timeouts: Family::default(),
        heartbeat_errors: Family::default(),
        client_logs_suppressed: Family::default(),
        live: Arc::new(Live::default()),
        tables: Mutex::default(),
    };
    // prometheus-client appends `_total` to counters (and the unit to unit-bearing names).
    registry.register(
        "pgcdc_events",
        "Change events encoded and handed to Kafka (op: c, u, d, t, r for snapshot rows).",
        m.events.clone(),
    );
    registry.register(
        "pgcdc_skipped_operations",
        "Change events not sent because their op is in skipped_operations.",
        m.skipped.clone(),
    );
    registry.register(
        "pgcdc_snapshot_rows",
        "Snapshot rows (op r) encoded and handed to Kafka.",
        m.snapshot_rows.clone(),
    );
    registry.register(
        "pgcdc_unavailable_values",
        "Column values PostgreSQL did not send (unchanged TOAST) that events carry as the placeholder.",
        m.unavailable.clone(),
    );
    registry.register(
        "pgcdc_lossy_values",
        "Column values the Avro type cannot hold, carried as null under unrepresentable: null.",
        m.lossy.clone(),
    );
    registry.register(
        "pgcdc_toast_fetched_values",
        "Unchanged TOASTed values completed by reading the row back from the table.",
        m.toast_fetched.clone(),
    );
    registry.register(
        "pgcdc_pg_transactions",
        "PostgreSQL transactions delivered.",
        m.transactions.clone(),
    );
    registry.register(
        "pgcdc_kafka_commits",
        "Kafka transactions committed.",
        m.kafka_commits.clone(),
    );
    registry.register_with_unit(
        "pgcdc_kafka_commit",
        "Time a Kafka transaction commit took (checkpoint included).",
        Unit::Seconds,
        m.kafka_commit_seconds.clone(),
    );
    registry.register(
        "pgcdc_connector_errors",
        "Errors that stopped a connector run.",
        m.connector_errors.clone(),
    );
    registry.register(
        "pgcdc_connector_restarts",
        "Connector restarts after a transient error.",
        m.connector_restarts.clone(),
    );
    registry.register(
        "pgcdc_signal_errors",
        "Signals ignored because they were malformed or named a table that cannot be snapshotted.",
        m.signal_errors.clone(),
    );
    registry.register(
        "pgcdc_heartbeats",
        "Heartbeat records written to the connector's heartbeat topic.",
        m.heartbeats.clone(),
    );
    registry.register(
        "pgcdc_outbox_events",
        "Outbox events routed to their aggregate's topic.",
        m.outbox_events.clone(),
    );
    registry.register(
        "pgcdc_kafka_transaction_timeouts",
        "Kafka transactions the broker aborted because they were open longer than kafka.transaction.timeout (a PostgreSQL transaction too large to stream within it).",
        m.transaction_timeouts.clone(),
    );
    registry.register(
        "pgcdc_slots_lost",
        "Slots found lost (invalidated, gone or ahead of the checkpoint) and recreated by on_slot_lost: resnapshot.",
        m.slots_lost.clone(),
    );
    registry.register(
        "pgcdc_outbox_unroutable",
        "Outbox rows and messages that could not be routed (sent as change or message events instead).",
        m.outbox_unroutable.clone(),
    );
    registry.register(
        "pgcdc_heartbeat_errors",
        "Heartbeat action queries that failed (the next interval tries again).",
        m.heartbeat_errors.clone(),
    );
    registry.register(
        "pgcdc_kafka_client_logs_suppressed",
        "librdkafka log lines not printed because the same broker said the same within a minute.",
        m.client_logs_suppressed.clone(),
    );
    registry.register_collector(Box::new(m.live.clone()));
    Metrics { registry, ..m }
});

fn connector(c: &str) -> ConnectorLabels {
    ConnectorLabels {
        connector: c.to_owned(),
    }
}

fn table(c: &str, t: &str) -> TableLabels {
    seen_table(c, t);
    TableLabels {
        connector: c.to_owned(),
        table: t.to_owned(),
    }
}

fn table_op(c: &str, t: &str, op: &str) -> TableOpLabels {
    seen_table(c, t);
    TableOpLabels {
        connector: c.to_owned(),
        table: t.to_owned(),
        op: op.to_owned(),
    }
}

fn table_family(which: TableCounter) -> &'static ByTable {
    match which {
        TableCounter::Unavailable => &METRICS.unavailable,
        TableCounter::Lossy => &METRICS.lossy,
        TableCounter::ToastFetched => &METRICS.toast_fetched,
    }
}

fn seen_table(c: &str, t: &str) {
    let mut m = METRICS.tables.lock().unwrap_or_else(|e| e.into_inner());
    match m.get_mut(c) {
        Some(ts) if ts.contains(t) => {}
        Some(ts) => {
            ts.insert(t.to_owned());
        }
        None => {
            m.insert(c.to_owned(), BTreeSet::from([t.to_owned()]));
        }
    }
}

/// Every op a table series may carry (`Op::code`, and `m` for messages).
const OPS: [&str; 6] = ["r", "c", "u", "d", "t", "m"];

/// Drops every series of `connector` (its file was removed): a scrape no longer shows a
/// connector that does not exist, frozen at its last values.
pub fn remove(c: &str) {
    let m = &*METRICS;
    m.live.remove(c);
    let labels = connector(c);
    for f in [
        &m.transactions,
        &m.kafka_commits,
        &m.connector_errors,
        &m.connector_restarts,
        &m.signal_errors,
        &m.heartbeats,
        &m.outbox_events,
        &m.outbox_unroutable,
        &m.slots_lost,
        &m.transaction_timeouts,
        &m.heartbeat_errors,
        &m.client_logs_suppressed,
    ] {
        f.remove(&labels);
    }
    m.kafka_commit_seconds.remove(&labels);
    let tables = m
        .tables
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(c)
        .unwrap_or_default();
    for t in &tables {
        let tl = TableLabels {
            connector: c.to_owned(),
            table: t.clone(),
        };
        for f in [&m.snapshot_rows, &m.unavailable, &m.lossy, &m.toast_fetched] {
            f.remove(&tl);
        }
        for op in OPS {
            let tol = TableOpLabels {
                connector: c.to_owned(),
                table: t.clone(),
                op: op.to_owned(),
            };
            m.events.remove(&tol);
            m.skipped.remove(&tol);
        }
    }
}

/// The counter of events of one table and op: callers on the per-event path keep it.
pub fn events(connector: &str, table: &str, op: &str) -> Counter {
    METRICS
        .events
        .get_or_create(&table_op(connector, table, op))
        .clone()
}

/// Counts `n` snapshot rows of a table (as events of op `r` and as snapshot rows).
pub fn count_snapshot_rows(connector: &str, table: &str, n: u64) {
    events(connector, table, "r").inc_by(n);
    METRICS
        .snapshot_rows
        .get_or_create(&self::table(connector, table))
        .inc_by(n);
}

/// Adds `n` to a labeled counter of one connector's table.
pub fn count(which: TableCounter, connector: &str, table: &str, n: u64) {
    table_family(which)
        .get_or_create(&self::table(connector, table))
        .inc_by(n);
}

/// The current value of a labeled counter (0 when never counted).
pub fn get(which: TableCounter, connector: &str, table: &str) -> u64 {
    table_family(which)
        .get(&self::table(connector, table))
        .map_or(0, |c| c.get())
}

/// Counts one skipped event of `op` (`c`, `u`, `d`, `t`).
pub fn count_skipped(connector: &str, table: &str, op: &str) {
    METRICS
        .skipped
        .get_or_create(&table_op(connector, table, op))
        .inc();
}

pub fn get_skipped(connector: &str, table: &str, op: &str) -> u64 {
    METRICS
        .skipped
        .get(&table_op(connector, table, op))
        .map_or(0, |c| c.get())
}

/// What happened to a connector, for its counters.
#[derive(Clone, Copy, Debug)]
pub enum ConnectorEvent {
    Transaction,
    Error,
    Restart,
    SignalError,
    Heartbeat,
    HeartbeatError,
    Outbox,
    OutboxUnroutable,
    SlotLost,
    TransactionTimeout,
}

pub fn count_connector(c: &str, what: ConnectorEvent) {
    let family = match what {
        ConnectorEvent::Transaction => &METRICS.transactions,
        ConnectorEvent::Error => &METRICS.connector_errors,
        ConnectorEvent::Restart => &METRICS.connector_restarts,
        ConnectorEvent::SignalError => &METRICS.signal_errors,
        ConnectorEvent::Heartbeat => &METRICS.heartbeats,
        ConnectorEvent::HeartbeatError => &METRICS.heartbeat_errors,
        ConnectorEvent::Outbox => &METRICS.outbox_events,
        ConnectorEvent::OutboxUnroutable => &METRICS.outbox_unroutable,
        ConnectorEvent::SlotLost => &METRICS.slots_lost,
        ConnectorEvent::TransactionTimeout => &METRICS.transaction_timeouts,
    };
    family.get_or_create(&connector(c)).inc();
}

/// One committed Kafka transaction and how long its commit took.
pub fn kafka_committed(c: &str, seconds: f64) {
    let labels = connector(c);
    METRICS.kafka_commits.get_or_create(&labels).inc();
    METRICS
        .kafka_commit_seconds
        .get_or_create(&labels)
        .observe(seconds);
}

/// A librdkafka line of one of `connector`'s clients was not printed (a repeat).
pub fn client_log_suppressed(connector: &str) {
    METRICS
        .client_logs_suppressed
        .get_or_create(&self::connector(connector))
        .inc();
}

/// The live positions of one connector, read at scrape time.
pub fn live(c: &str) -> Arc<Positions> {
    METRICS.live.of(c)
}

/// Every series in the text exposition format.
pub fn render() -> String {
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &METRICS.registry).is_err() {
        out.clear();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn a_removed_connector_leaves_no_series() {
        for c in ["gone", "kept"] {
            events(c, "public.t", "c").inc();
            count_skipped(c, "public.t", "t");
            count(LOSSY_VALUES, c, "public.t", 1);
            count_connector(c, ConnectorEvent::Restart);
            kafka_committed(c, 0.01);
            live(c).confirmed.store(5, Ordering::Relaxed);
        }
        remove("gone");
        let out = render();
        assert!(!out.contains("connector=\"gone\""), "{out}");
        for series in [
            "pgcdc_events_total",
            "pgcdc_skipped_operations_total",
            "pgcdc_lossy_values_total",
            "pgcdc_connector_restarts_total",
            "pgcdc_kafka_commit_seconds_bucket",
            "pgcdc_replication_lag_bytes",
        ] {
            assert!(
                out.lines()
                    .any(|l| l.starts_with(series) && l.contains("connector=\"kept\"")),
                "{series} of the kept connector: {out}"
            );
        }
    }

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
        assert!(text.contains("# TYPE pgcdc_lossy_values counter"), "{text}");
        assert_eq!(get(LOSSY_VALUES, "c1", "public.\"we\\ird\""), 3);
        count_skipped("c1", "public.t", "t");
        assert!(render().contains(
            "pgcdc_skipped_operations_total{connector=\"c1\",table=\"public.t\",op=\"t\"} 1\n"
        ));
        assert_eq!(get_skipped("c1", "public.t", "t"), 1);
    }

    #[test]
    fn lag_and_open_transaction_age_are_computed_at_scrape_time() {
        let p = live("lag1");
        p.server_wal_end.store(10_000, Ordering::Relaxed);
        p.confirmed.store(9_000, Ordering::Relaxed);
        p.delivered_commit_us
            .store(crate::clock::now_micros() - 2_500_000, Ordering::Relaxed);
        p.open_since_us
            .store(crate::clock::now_micros() - 1_000_000, Ordering::Relaxed);
        kafka_committed("lag1", 0.004);
        let text = render();
        assert!(
            text.contains("pgcdc_replication_lag_bytes{connector=\"lag1\"} 1000.0\n"),
            "{text}"
        );
        let seconds = |name: &str| -> f64 {
            let prefix = format!("{name}{{connector=\"lag1\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(prefix.as_str()))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {name} in {text}"))
        };
        let lag = seconds("pgcdc_replication_lag_seconds");
        assert!((2.4..60.0).contains(&lag), "{lag}");
        let age = seconds("pgcdc_open_kafka_transaction_age_seconds");
        assert!((0.9..60.0).contains(&age), "{age}");
        assert!(
            text.contains("pgcdc_kafka_commit_seconds_count{connector=\"lag1\"} 1\n"),
            "{text}"
        );
        p.idle.store(true, Ordering::Relaxed);
        p.open_since_us.store(0, Ordering::Relaxed);
        let text = render();
        assert!(text.contains("pgcdc_replication_lag_seconds{connector=\"lag1\"} 0.0\n"));
        assert!(text.contains("pgcdc_open_kafka_transaction_age_seconds{connector=\"lag1\"} 0.0\n"));
    }
}
