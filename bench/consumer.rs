//! Benchmark consumer (`make bench`): reads pgcdc topics with `read_committed` until it has
//! seen `--expect` change events (tombstones are not counted) and prints one JSON line:
//! `{"events":n,"first_ms":..,"last_ms":..,"p50_ms":..,"p99_ms":..}` where times are
//! milliseconds since the Unix epoch and latencies are consumer receive time minus the
//! PostgreSQL commit time carried in `source.ts_us` (with `--latency`), split at the
//! envelope's `ts_us` (when pgcdc encoded the event) into `p50/p99_encode_ms` (commit to
//! encoded: WAL, decoding, channels) and `p50/p99_kafka_ms` (encoded to readable: produce,
//! the transaction's commit, the fetch). `--skip n` ignores
//! the first n events. `--check-keys` (keys whose first field is a `long`, numbered 1..n):
//! reads on for a few seconds after the n-th event and adds `"distinct"`, `"duplicates"` and
//! `"out_of_range"` to the line, so `make bounds` proves every row arrived exactly once.
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
    let check_keys = args.iter().any(|a| a == "--check-keys");
    // How often each key 1..=expect was read (index 0: keys out of that range).
    let mut seen: Vec<u8> = if check_keys {
        vec![0; expect + 1]
    } else {
        Vec::new()
    };
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
    // The same latencies split where pgcdc encoded the event.
    let mut encode_us: Vec<i64> = Vec::with_capacity(lat_us.capacity());
    let mut kafka_us: Vec<i64> = Vec::with_capacity(lat_us.capacity());
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
            if let Some((commit_us, encoded_us)) = timestamps(&value) {
                lat_us.push(received - commit_us);
                encode_us.push(encoded_us - commit_us);
                kafka_us.push(received - encoded_us);
            }
        }
        if events == 0 {
            first_ms = received / 1000;
        }
        last_ms = received / 1000;
        events += 1;
        if check_keys {
            count_key(&mut seen, m.key());
        }
    }
    if check_keys {
        // Anything after the n-th event is a duplicate or a stray: give it time to show.
        let settle = Instant::now() + Duration::from_secs(3);
        loop {
            let left = settle.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            if let Some(m) = reader.next(left).await.expect("consume") {
                if m.payload().is_some() {
                    events += 1;
                    count_key(&mut seen, m.key());
                }
            }
        }
    }
    for v in [&mut lat_us, &mut encode_us, &mut kafka_us] {
        v.sort_unstable();
    }
    let pct = |v: &[i64], p: f64| -> f64 {
        if v.is_empty() {
            return 0.0;
        }
        let i = ((v.len() as f64 - 1.0) * p).round() as usize;
        v[i] as f64 / 1000.0
    };
    let keys = if check_keys {
        let distinct = seen[1..].iter().filter(|&&c| c > 0).count();
        let duplicates: u64 = seen[1..]
            .iter()
            .map(|&c| u64::from(c.saturating_sub(1)))
            .sum();
        format!(
            ",\"distinct\":{distinct},\"duplicates\":{duplicates},\"out_of_range\":{}",
            seen[0]
        )
    } else {
        String::new()
    };
    println!(
        "{{\"events\":{events},\"first_ms\":{first_ms},\"last_ms\":{last_ms},\"p50_ms\":{:.1},\"p99_ms\":{:.1},\
         \"p50_encode_ms\":{:.1},\"p99_encode_ms\":{:.1},\"p50_kafka_ms\":{:.1},\"p99_kafka_ms\":{:.1}{keys}}}",
        pct(&lat_us, 0.50),
        pct(&lat_us, 0.99),
        pct(&encode_us, 0.50),
        pct(&encode_us, 0.99),
        pct(&kafka_us, 0.50),
        pct(&kafka_us, 0.99),
    );
}

/// Counts a key whose first field is an Avro `long` in 1..seen.len() (Confluent wire format:
/// magic byte and schema id, then the zigzag varint); anything else counts in `seen[0]`.
fn count_key(seen: &mut [u8], key: Option<&[u8]>) {
    let id = key
        .and_then(|k| k.get(5..))
        .and_then(zigzag_long)
        .and_then(|v| usize::try_from(v).ok())
        .filter(|&i| i >= 1 && i < seen.len())
        .unwrap_or(0);
    seen[id] = seen[id].saturating_add(1);
}

fn zigzag_long(bytes: &[u8]) -> Option<i64> {
    let mut n: u64 = 0;
    for (i, b) in bytes.iter().take(10).enumerate() {
        n |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((n >> 1) as i64 ^ -((n & 1) as i64));
        }
    }
    None
}

/// The event's PostgreSQL commit time (`source.ts_us`) and when pgcdc encoded it (`ts_us`).
fn timestamps(v: &apache_avro::types::Value) -> Option<(i64, i64)> {
    use apache_avro::types::Value;
    let Value::Record(fields) = v else {
        return None;
    };
    let (_, Value::Record(source)) = fields.iter().find(|(k, _)| k == "source")? else {
        return None;
    };
    Some((
        optional_long(source, "ts_us")?,
        optional_long(fields, "ts_us")?,
    ))
}

/// The `["null", "long"]` field `name` of a record's fields, when it holds a long.
fn optional_long(fields: &[(String, apache_avro::types::Value)], name: &str) -> Option<i64> {
    use apache_avro::types::Value;
    match fields.iter().find(|(k, _)| k == name)? {
        (_, Value::Union(_, inner)) => match **inner {
            Value::Long(us) => Some(us),
            _ => None,
        },
        _ => None,
    }
}
