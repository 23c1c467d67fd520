//! Chaos checker (`make chaos`): compares every event in the chaos topics, read with
//! `read_committed` and decoded through the registry, with the ground truth PostgreSQL
//! recorded in `chaos_truth`. Prints exactly one line
//! `RESULT crashes=<n> events=<m> lost=<x> duplicated=<y> out_of_order=<z> snapshot_reads=<r>`
//! and exits non-zero unless the three counts are 0 (or an event matches no committed
//! change).
//!
//! An incremental snapshot's read (`op: r`) must carry a version of its row that was
//! committed (else it is a phantom) and must not be older than the last event of that row
//! before it (else out of order: a consumer would go back to an older state); it is neither
//! lost nor duplicated when absent or repeated.
//!
//! Memory (issue 14.2): the truth is streamed with COPY into flat arrays indexed by
//! `change_id` (a dense sequence), about 10 bytes per change and 4 per row, instead of hash
//! maps of strings (~300 bytes per change): 23 million changes take ~250 MB, not gigabytes.
//! The wait for each topic follows progress: the checker fails only when nothing arrives for
//! `STALL` before the end offsets.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test tool: failing loudly is its job

use std::time::{Duration, Instant};

use apache_avro::types::Value;
use futures_util::StreamExt;
use pgcdc::consume::{Reader, Start};
use rdkafka::Message;

fn arg(args: &[String], name: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| panic!("{name} is required"))
}

const TABLES: [&str; 3] = ["chaos_a", "chaos_b", "chaos_c"];

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

/// Ground truth, indexed by `change_id`. `kind`: 0 no committed change, else
/// `table index + 1` in the low two bits and the op (1 insert, 2 update, 3 delete) above.
/// `row`: the row's id. `delete_of[prev]`: the change_id of the delete that removed the
/// row version `prev` (0: none). `seen`: events matched, saturating.
struct Truth {
    kind: Vec<u8>,
    row: Vec<u32>,
    delete_of: Vec<u32>,
    seen: Vec<u8>,
}

fn op_code(op: char) -> u8 {
    match op {
        'i' => 1,
        'u' => 2,
        'd' => 3,
        _ => 0,
    }
}

fn small(v: i64, what: &str) -> u32 {
    u32::try_from(v).unwrap_or_else(|_| panic!("{what} {v} does not fit the checker's u32 arrays"))
}

async fn read_truth(client: &tokio_postgres::Client) -> Truth {
    let max: i64 = client
        .query_one("SELECT coalesce(max(change_id), 0) FROM chaos_truth", &[])
        .await
        .expect("read chaos_truth")
        .get(0);
    let n = small(max, "change_id") as usize + 1;
    let mut t = Truth {
        kind: vec![0; n],
        row: vec![0; n],
        delete_of: vec![0; n],
        seen: vec![0; n],
    };
    let stream = client
        .copy_out(
            "COPY (SELECT change_id, tbl, op, id, coalesce(prev, 0) FROM chaos_truth) TO STDOUT",
        )
        .await
        .expect("COPY chaos_truth");
    futures_util::pin_mut!(stream);
    let mut pending = Vec::new();
    while let Some(chunk) = stream.next().await {
        pending.extend_from_slice(&chunk.expect("COPY chaos_truth"));
        let mut start = 0;
        while let Some(nl) = pending[start..].iter().position(|&b| b == b'\n') {
            let line = std::str::from_utf8(&pending[start..start + nl]).expect("UTF-8");
            let mut f = line.split('\t');
            let mut next = || f.next().expect("five columns");
            let change_id = small(next().parse().unwrap(), "change_id") as usize;
            let tbl = next();
            let table = TABLES
                .iter()
                .position(|x| *x == tbl)
                .expect("a chaos table") as u8;
            let op = op_code(next().chars().next().unwrap_or('?'));
            let id = small(next().parse().unwrap(), "row id");
            let prev = small(next().parse().unwrap(), "change_id") as usize;
            t.kind[change_id] = (table + 1) | (op << 2);
            t.row[change_id] = id;
            if op == 3 {
                t.delete_of[prev] = change_id as u32;
            }
            start += nl + 1;
        }
        pending.drain(..start);
    }
    t
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
    let mut truth = read_truth(&client).await;
    // Per row: the position (change_id) of the last event seen, for per-row order.
    let mut last: Vec<u32> = vec![0; truth.row.iter().copied().max().unwrap_or(0) as usize + 1];

    // Every committed record of the three topics, in offset order.
    let reader = Reader::plain(&bootstrap, &registry, "pgcdc-chaos-check", Start::Beginning)
        .expect("consumer");
    let mut events = 0u64;
    let mut phantom = 0u64;
    let mut duplicated = 0u64;
    let mut out_of_order = 0u64;
    let mut snapshot_reads = 0u64;
    for (ti, table) in TABLES.iter().enumerate() {
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
                "r" => ('r', "after"),
                other => panic!("{topic} offset {}: unexpected op {other}", m.offset()),
            };
            let img = field(&v, image)
                .unwrap_or_else(|| panic!("{topic} offset {}: no {image}", m.offset()));
            let id = long(field(img, "id")).expect("id");
            let change_id = long(field(img, "change_id")).expect("change_id");
            events += 1;
            if op == 'r' {
                snapshot_reads += 1;
                // A committed version of this row: its insert or one of its updates.
                let c = usize::try_from(change_id)
                    .ok()
                    .filter(|&c| c < truth.kind.len())
                    .filter(|&c| {
                        truth.kind[c] & 3 == ti as u8 + 1
                            && matches!(truth.kind[c] >> 2, 1 | 2)
                            && i64::from(truth.row[c]) == id
                    });
                let Some(c) = c else {
                    phantom += 1;
                    eprintln!("phantom snapshot read (no committed version matches): {table} id {id} change_id {change_id}");
                    continue;
                };
                let row = truth.row[c] as usize;
                if (c as u32) < last[row] {
                    out_of_order += 1;
                    eprintln!("snapshot read older than an earlier event: {table} id {id} change_id {c} after {}", last[row]);
                } else {
                    last[row] = c as u32;
                }
                continue;
            }
            // The truth entry this event stands for: the change itself for an insert or an
            // update, the delete of that row version for a delete.
            let at = usize::try_from(change_id)
                .ok()
                .filter(|&c| c < truth.kind.len())
                .map(|c| {
                    if op == 'd' {
                        truth.delete_of[c] as usize
                    } else {
                        c
                    }
                })
                .filter(|&c| c != 0);
            let want = (ti as u8 + 1) | (op_code(op) << 2);
            let Some(c) = at.filter(|&c| truth.kind[c] == want && i64::from(truth.row[c]) == id)
            else {
                phantom += 1;
                eprintln!("phantom event (no committed change matches): {table} {op} id {id} change_id {change_id}");
                continue;
            };
            if truth.seen[c] > 0 {
                duplicated += 1;
            }
            truth.seen[c] = truth.seen[c].saturating_add(1);
            let row = truth.row[c] as usize;
            if (c as u32) < last[row] {
                out_of_order += 1;
            } else {
                last[row] = c as u32;
            }
        }
    }

    let missing: Vec<usize> = (1..truth.kind.len())
        .filter(|&c| truth.kind[c] != 0 && truth.seen[c] == 0)
        .collect();
    let lost = missing.len();
    if lost > 0 {
        let sample: Vec<String> = missing
            .iter()
            .take(5)
            .map(|&c| {
                format!(
                    "change {c}: {} op {} id {}",
                    TABLES[(truth.kind[c] & 3) as usize - 1],
                    ['?', 'i', 'u', 'd'][(truth.kind[c] >> 2) as usize],
                    truth.row[c]
                )
            })
            .collect();
        eprintln!("lost, for example: {sample:?}");
    }
    if phantom > 0 {
        eprintln!("phantom events: {phantom}");
    }
    let rss_mb = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024);
    eprintln!(
        "checker: {} changes of ground truth, peak RSS {rss_mb} MB",
        truth.kind.iter().filter(|&&k| k != 0).count()
    );
    println!("RESULT crashes={crashes} events={events} lost={lost} duplicated={duplicated} out_of_order={out_of_order} snapshot_reads={snapshot_reads}");
    if lost > 0 || duplicated > 0 || out_of_order > 0 || phantom > 0 {
        std::process::exit(1);
    }
}
