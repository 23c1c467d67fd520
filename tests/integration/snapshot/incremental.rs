//! An incremental snapshot during heavy updates never overwrites a newer change.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pgcdc::checkpoint::progress::Kind;

use super::*;
use crate::harness::Harness;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_snapshot_during_heavy_updates_never_overwrites_newer_changes() {
    const ROWS: i64 = 60_000;
    let h = Harness::new("snapincr", &table_sql("items", ROWS)).await;
    let extra = "snapshot:\n  mode: never\n  incremental_chunk_rows: 1000\nsignal_table: public.pgcdc_signal\n";
    let run = h.start(extra).await;
    // Heavy updates on two connections: every update bumps v, so a stale copy shows.
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for _ in 0..2 {
        let (stop, ops) = (stop.clone(), ops.clone());
        let h2 = h.clone();
        writers.push(tokio::spawn(async move {
            let c = h2.client().await;
            let slot = h2.slot();
            let mut i: i64 = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                // Heavy, yet never further ahead of the slot than a few MB of WAL: a chunk's
                // watermarks travel through the same stream, so a writer that outran a slow
                // machine's stream would stretch the snapshot without end.
                if i % 25 == 0 {
                    while !stop.load(Ordering::Relaxed) && slot_lag(&c, &slot).await > 4 << 20 {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                let a = (i * 7919 + ops.load(Ordering::Relaxed) as i64 * 13) % ROWS + 1;
                c.batch_execute(&format!(
                    "UPDATE items SET v = v + 1, t = 'u' || v WHERE id BETWEEN {a} AND {a} + 4"
                ))
                .await
                .unwrap();
                tokio::time::sleep(Duration::from_millis(2)).await;
                ops.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    while ops.load(Ordering::Relaxed) < 50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The CLI signals, as an operator would.
    let connectors = h.dir.join("connectors");
    std::fs::create_dir_all(&connectors).unwrap();
    std::fs::copy(h.dir.join("connector.yaml"), connectors.join("c.yaml")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgcdc"))
        .arg("--config")
        .arg(h.dir.join("pgcdc.yaml"))
        .arg("snapshot")
        .arg("--connectors-dir")
        .arg(&connectors)
        .arg(&h.name)
        .arg("public.items")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pgcdc snapshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let before = ops.load(Ordering::Relaxed);
    let s = wait_checkpoint(
        &h,
        "the incremental snapshot finished",
        Duration::from_secs(600),
        |s| s.pending.is_empty() && s.finished.contains_key("public.items"),
    )
    .await;
    let after = ops.load(Ordering::Relaxed);
    assert!(
        after > before + 20,
        "updates must run during the snapshot ({before} → {after})"
    );
    assert_eq!(s.finished["public.items"].kind, Kind::Incremental);
    // `pgcdc status` reports it.
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_pgcdc"))
        .arg("--config")
        .arg(h.dir.join("pgcdc.yaml"))
        .arg("status")
        .arg("--connectors-dir")
        .arg(&connectors)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{text}");
    assert!(
        text.contains("snapshot public.items: done,"),
        "pgcdc status:\n{text}"
    );

    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let end = current_lsn(&h).await;
    wait_flushed(&h, &end, Duration::from_secs(120)).await;
    run.stop().await.unwrap();

    let seen = consume_to_end(&h.stack, &h.topic("items")).await;
    let table = table_state(&h, "items").await;
    assert_latest_equals_table(&seen, &table);
    assert_no_row_read_twice(&seen);
    assert_eq!(
        seen.marks.keys().collect::<Vec<_>>(),
        vec!["incremental"],
        "incremental reads are marked so"
    );
    // Rows changed inside a chunk's window came from the stream instead; most were read.
    assert!(
        seen.reads.len() as i64 > ROWS / 2,
        "only {} rows read",
        seen.reads.len()
    );
    assert_eq!(s.finished["public.items"].rows, seen.reads.len() as u64);
    h.drop_slot().await;
}
