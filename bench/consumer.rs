//! Benchmark consumer (`make bench`): reads pgcdc topics with `read_committed` until it has
//! seen `--expect` change events (tombstones are not counted) and prints one JSON line:
//! `{"events":n,"first_ms":..,"last_ms":..,"p50_ms":..,"p99_ms":..}` where times are
//! milliseconds since the Unix epoch and latencies are consumer receive time minus the
//! PostgreSQL commit time carried in `source.ts_us` (with `--latency`). `--skip n` ignores
//! the first n events.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test tool: failing loudly is its job

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pgcdc::consume::{Reader, Start};
use rdkafka::Message;

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bootstrap = arg(&args, "--bootstrap").expect("--bootstrap");
    let registry = arg(&args, "--registry").expect("--registry");
    let topics: Vec<String> = arg(&args, "--topics")
        .expect("--topics")
        .split(',')
        .map(String::from)
        .collect();
    let expect: usize = arg(&args, "--expect")
        .expect("--expect")
        .parse()
        .expect("--expect is a number");
    let timeout =
        Duration::from_secs(arg(&args, "--timeout").map_or(600, |t| t.parse().expect("--timeout")));
    let latency = args.iter().any(|a| a == "--latency");
    // Events to read before measuring (a warm-up that created the topic).
    let mut skip: usize = arg(&args, "--skip").map_or(0, |s| s.parse().expect("--skip"));

    let reader =
        Reader::plain(&bootstrap, &registry, "pgcdc-bench", Start::Beginning).expect("consumer");
    let t: Vec<&str> = topics.iter().map(String::as_str).collect();
    reader.subscribe(&t).expect("subscribe");

    let deadline = Instant::now() + timeout;
    let mut events = 0usize;
    let mut first_ms = 0i64;
    let mut last_ms = 0i64;
    let mut lat_us: Vec<i64> = Vec::with_capacity(if latency { expect } else { 0 });
    while events < expect {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            eprintln!("bench consumer: only {events} of {expect} events within {timeout:?}");
            std::process::exit(1);
        }
        let Some(m) = reader.next(left).await.expect("consume") else {
            continue;
        };
        let Some(payload) = m.payload() else { continue };
        if skip > 0 {
            skip -= 1;
            continue;
        }
        let received = now_us();
        if latency {
            let value = reader.avro_value(payload).await.expect("decode");
            if let Some(commit_us) = source_ts_us(&value) {
                lat_us.push(received - commit_us);
            }
        }
        if events == 0 {
            first_ms = received / 1000;
        }
        last_ms = received / 1000;
        events += 1;
    }
    lat_us.sort_unstable();
    let pct = |p: f64| -> f64 {
        if lat_us.is_empty() {
            return 0.0;
        }
        let i = ((lat_us.len() as f64 - 1.0) * p).round() as usize;
        lat_us[i] as f64 / 1000.0
    };
    println!(
        "{{\"events\":{events},\"first_ms\":{first_ms},\"last_ms\":{last_ms},\"p50_ms\":{:.1},\"p99_ms\":{:.1}}}",
        pct(0.50),
        pct(0.99)
    );
}

fn source_ts_us(v: &apache_avro::types::Value) -> Option<i64> {
    use apache_avro::types::Value;
    let Value::Record(fields) = v else {
        return None;
    };
    let (_, Value::Record(source)) = fields.iter().find(|(k, _)| k == "source")? else {
        return None;
    };
    match source.iter().find(|(k, _)| k == "ts_us")?.1 {
        Value::Union(_, ref inner) => match **inner {
            Value::Long(us) => Some(us),
            _ => None,
        },
        _ => None,
    }
}
