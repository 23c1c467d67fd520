//! Producer floor (`make bench` prints it after the snapshot): the CPU pgcdc's transactional producer
//! (`kafka::producer::TxProducer`, librdkafka through rust-rdkafka, pgcdc's settings) spends
//! to send `--rows` records of `--bytes` bytes in transactions of 20,000, with nothing
//! else in the process: no PostgreSQL, no encoding. Prints one RESULT line.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test tool: failing loudly is its job

use std::time::Instant;

use pgcdc::config::KafkaConfig;
use pgcdc::kafka::producer::TxProducer;
use pgcdc::kafka::topics::Topics;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn cpu_secs() -> f64 {
    // utime + stime of this process, from /proc/self/stat (fields 14 and 15), in the kernel's
    // USER_HZ ticks: 100 per second on Linux, whatever the kernel's own HZ.
    let s = std::fs::read_to_string("/proc/self/stat").unwrap();
    let f: Vec<&str> = s[s.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rows: usize = arg(&args, "--rows").map_or(1_000_000, |v| v.parse().unwrap());
    let bytes: usize = arg(&args, "--bytes").map_or(200, |v| v.parse().unwrap());
    let topic = arg(&args, "--topic").expect("--topic");
    let cfg = KafkaConfig {
        bootstrap_servers: arg(&args, "--bootstrap").expect("--bootstrap"),
        compression: arg(&args, "--compression").unwrap_or_else(|| "lz4".into()),
        ..KafkaConfig::default()
    };
    let mut topics = Topics::new(&cfg, "producer-floor").unwrap();
    topics.ensure(&topic, None, &[]).await.unwrap();
    let p = TxProducer::new(&cfg, &format!("pgcdc-floor-{topic}"), "producer-floor").unwrap();
    p.init().await.unwrap();
    // 1,024 distinct values of hex digits, cycled: 200 KB, more than LZ4's 64 KB window, so
    // a batch compresses about as the bench's md5 text does, not as one repeated value.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let values: Vec<Vec<u8>> = (0..1024)
        .map(|_| {
            (0..bytes)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    b"0123456789abcdef"[(state & 15) as usize]
                })
                .collect()
        })
        .collect();
    let (t0, c0) = (Instant::now(), cpu_secs());
    let mut sent = 0;
    while sent < rows {
        let end = (sent + 20_000).min(rows);
        p.begin().unwrap();
        for i in sent..end {
            let key = (i as u64).to_be_bytes();
            p.send(&topic, Some(&key), Some(&values[i % 1024]), &[])
                .await
                .unwrap();
        }
        sent = end;
        p.commit().await.unwrap();
    }
    let (secs, cpu) = (t0.elapsed().as_secs_f64(), cpu_secs() - c0);
    println!(
        "RESULT producer_floor rows={rows} bytes={bytes} compression={} rows_per_sec={:.0} cpu_us_per_row={:.2} secs={secs:.2}",
        cfg.compression,
        rows as f64 / secs,
        cpu * 1e6 / rows as f64
    );
}
