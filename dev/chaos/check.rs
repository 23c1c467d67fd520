//! Chaos checker (`make chaos`): compares every event in the chaos topics, read with
//! `read_committed` and decoded through the registry, with the ground truth PostgreSQL
//! recorded in `chaos_truth`. Prints exactly one line
//! `RESULT crashes=<n> events=<m> lost=<x> duplicated=<y> out_of_order=<z>` and exits
//! non-zero unless all three are 0 (or an event matches no committed change).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test tool: failing loudly is its job

use std::collections::HashMap;
use std::time::{Duration, Instant};

use apache_avro::types::Value;
use pgcdc::consume::{Reader, Start};
use rdkafka::Message;

fn arg(args: &[String], name: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| panic!("{name} is required"))
}

/// A change as both sides can name it: table, op, row id and the row's change_id (for
/// inserts and updates the new one, for deletes the one that was deleted).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Change {
    table: String,
    op: char,
    id: i64,
    change_id: i64,
}

/// How long the checker waits for the next record before it calls the stream stuck.
const STALL: Duration = Duration::from_secs(120);

fn field<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    let Value::Record(fields) = v else {
        return None;
    };
    let v = &fields.iter().find(|(k, _)| k == name)?.1;
    match v {
        Value::Union(_, inner) => Some(inner),
        other => Some(other),
    }
}

fn long(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Long(l) => Some(*l),
        Value::Int(i) => Some(i64::from(*i)),
        Value::Union(_, inner) => long(Some(inner)),
        _ => None,
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let pg = arg(&args, "--pg");
    let bootstrap = arg(&args, "--bootstrap");
    let registry = arg(&args, "--registry");
    let prefix = arg(&args, "--prefix");
    let crashes = arg(&args, "--crashes");

    // Ground truth: change_id order is commit order for any one row (row locks serialize).
    let (client, conn) = tokio_postgres::connect(&pg, tokio_postgres::NoTls)
        .await
        .expect("connect to PostgreSQL");
    tokio::spawn(conn);
    let rows = client
        .query(
            "SELECT change_id, tbl, op::text, id, prev FROM chaos_truth ORDER BY change_id",
            &[],
        )
        .await
        .expect("read chaos_truth");
    let mut truth: HashMap<Change, i64> = HashMap::with_capacity(rows.len());
    for r in &rows {
        let op: String = r.get(2);
        let op = op.chars().next().unwrap_or('?');
        let change_id: i64 = r.get(0);
        let key = Change {
            table: r.get(1),
            op,
            id: r.get(3),
            change_id: if op == 'd' {
                r.get::<_, Option<i64>>(4).unwrap_or(-1)
            } else {
                change_id
            },
        };
        truth.insert(key, change_id);
    }

    // Every committed record of the three topics, in offset order.
    let reader = Reader::plain(&bootstrap, &registry, "pgcdc-chaos-check", Start::Beginning)
        .expect("consumer");
    let mut seen: HashMap<Change, u32> = HashMap::new();
    let mut per_row: HashMap<(String, i64), Vec<i64>> = HashMap::new();
    let mut events = 0u64;
    let mut phantom = 0u64;
    for table in ["chaos_a", "chaos_b", "chaos_c"] {
        let topic = format!("{prefix}.public.{table}");
        let ends = reader.assign_to_end(&topic).expect("assign");
        // The deadline follows progress: only a reader that stops receiving fails.
        let mut last_progress = Instant::now();
        while !reader.reached(&topic, &ends) {
            assert!(
                last_progress.elapsed() < STALL,
                "{topic}: nothing read for {STALL:?} before the end offsets {ends:?}"
            );
            let Some(m) = reader
                .next(Duration::from_millis(500))
                .await
                .expect("consume")
            else {
                continue;
            };
            last_progress = Instant::now();
            let Some(payload) = m.payload() else { continue }; // tombstone
            let v = reader.avro_value(payload).await.expect("decode");
            let op = match field(&v, "op") {
                Some(Value::String(s)) => s.clone(),
                _ => panic!("{topic} offset {}: no op", m.offset()),
            };
            let (op, image) = match op.as_str() {
                "c" => ('i', "after"),
                "u" => ('u', "after"),
                "d" => ('d', "before"),
                other => panic!("{topic} offset {}: unexpected op {other}", m.offset()),
            };
            let img = field(&v, image)
                .unwrap_or_else(|| panic!("{topic} offset {}: no {image}", m.offset()));
            let change = Change {
                table: table.to_owned(),
                op,
                id: long(field(img, "id")).expect("id"),
                change_id: long(field(img, "change_id")).expect("change_id"),
            };
            events += 1;
            match truth.get(&change) {
                Some(order) => per_row
                    .entry((change.table.clone(), change.id))
                    .or_default()
                    .push(*order),
                None => {
                    phantom += 1;
                    eprintln!("phantom event (no committed change matches): {change:?}");
                }
            }
            *seen.entry(change).or_default() += 1;
        }
    }

    let lost = truth.keys().filter(|k| !seen.contains_key(*k)).count();
    let duplicated: u64 = seen
        .values()
        .filter(|&&n| n > 1)
        .map(|&n| u64::from(n - 1))
        .sum();
    let out_of_order: usize = per_row
        .values()
        .map(|seq| seq.windows(2).filter(|w| w[1] < w[0]).count())
        .sum();
    if lost > 0 {
        let sample: Vec<_> = truth
            .keys()
            .filter(|k| !seen.contains_key(*k))
            .take(5)
            .collect();
        eprintln!("lost, for example: {sample:?}");
    }
    if phantom > 0 {
        eprintln!("phantom events: {phantom}");
    }
    println!("RESULT crashes={crashes} events={events} lost={lost} duplicated={duplicated} out_of_order={out_of_order}");
    if lost > 0 || duplicated > 0 || out_of_order > 0 || phantom > 0 {
        std::process::exit(1);
    }
}
