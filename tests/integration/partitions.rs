//! Partitioned tables: the partitioned root names the topic (the publication pgcdc creates
//! sets `publish_via_partition_root`), for rows snapshotted and streamed, in every partition,
//! and a new partition makes no new topic. A publication someone else made that publishes
//! partitions under their own names is refused (by `validate` too) with the statement that
//! fixes it. With `publish_via_partition_root: false` each partition has its own topic, for
//! snapshot and stream alike.

use std::time::Duration;

use pgcdc::consume::{Reader, Start};

use crate::harness::Harness;

const SCHEMA: &str = "
CREATE TABLE events (id int, day date, v text, PRIMARY KEY (id, day)) PARTITION BY RANGE (day);
CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
INSERT INTO events VALUES (1, '2025-06-01', 'snap-a'), (2, '2026-06-01', 'snap-b');
";

/// Records in `topic` within `wait` (none when the topic does not exist).
async fn count(h: &Harness, topic: &str, wait: Duration) -> usize {
    let reader = Reader::plain(
        &h.stack.kafka_bootstrap,
        &h.stack.registry_url,
        "partitions",
        Start::Beginning,
    )
    .unwrap();
    reader.subscribe(&[topic]).unwrap();
    let mut n = 0;
    while reader.next(wait).await.unwrap().is_some() {
        n += 1;
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_stream_and_snapshot_under_the_root() {
    let h = Harness::new("parts", SCHEMA).await;
    let extra = "tables:\n  include: [public.events]\nsignal_table: public.pgcdc_signal\n";
    let run = h.start(extra).await;
    h.sql("INSERT INTO events VALUES (3, '2025-07-01', 'stream-a'), (4, '2026-07-01', 'stream-b')")
        .await;
    // A partition created while streaming: its rows go to the root's topic too.
    h.sql("CREATE TABLE events_2027 PARTITION OF events FOR VALUES FROM ('2027-01-01') TO ('2028-01-01')")
        .await;
    h.sql("INSERT INTO events VALUES (5, '2027-03-01', 'new-partition')")
        .await;
    // A row moving to another partition: a delete and a create of the root's rows.
    h.sql("UPDATE events SET day = '2026-02-02' WHERE id = 3")
        .await;

    // 2 snapshot reads, 3 creates, then the move: d, tombstone, c.
    let recs = h.read("events", 8, Duration::from_secs(90)).await;
    let ops: Vec<String> = recs
        .iter()
        .map(|r| r.value["op"].as_str().unwrap_or("tombstone").to_owned())
        .collect();
    assert_eq!(
        ops,
        ["r", "r", "c", "c", "c", "d", "tombstone", "c"],
        "{recs:#?}"
    );
    let vs: Vec<&str> = recs
        .iter()
        .filter_map(|r| r.value["after"]["v"].as_str())
        .collect();
    assert_eq!(
        vs,
        [
            "snap-a",
            "snap-b",
            "stream-a",
            "stream-b",
            "new-partition",
            "stream-a"
        ]
    );
    assert_eq!(recs[0].value["source"]["table"], "events");

    // An incremental snapshot of the root reads every partition's rows.
    let (_, conn) = h.configs(extra);
    pgcdc::admin::signal_snapshot(&conn, &["public.events".to_string()])
        .await
        .unwrap();
    let recs = h.read("events", 13, Duration::from_secs(90)).await;
    let mut ids: Vec<i64> = recs[8..]
        .iter()
        .map(|r| {
            assert_eq!(r.value["source"]["snapshot"], "incremental", "{r:?}");
            r.key["id"].as_i64().unwrap()
        })
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, [1, 2, 3, 4, 5]);

    for part in ["events_2025", "events_2026", "events_2027"] {
        assert_eq!(
            count(&h, &h.topic(part), Duration::from_secs(3)).await,
            0,
            "no topic for partition {part}"
        );
    }
    run.stop().await.unwrap();
    h.drop_slot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publication_that_publishes_partitions_by_name_is_refused() {
    let h = Harness::new("partpub", SCHEMA).await;
    h.sql("CREATE PUBLICATION leafpub FOR TABLE events").await;
    let fix = "ALTER PUBLICATION leafpub SET (publish_via_partition_root = true)";
    let (code, out) = h.validate("publication: leafpub\n");
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains(fix) && out.contains("public.events"), "{out}");
    let err = h
        .run_once_expect_error("publication: leafpub\n", Duration::from_secs(60))
        .await;
    let text = err.to_string();
    assert!(!err.is_transient(), "{text}");
    assert!(
        text.contains(fix) && text.contains("public.events"),
        "{text}"
    );

    // pgcdc's own publication (an older pgcdc made it without the setting) is fixed at start.
    let own = format!("pgcdc_{}", h.name);
    h.sql(&format!(
        "CREATE PUBLICATION {own} FOR TABLE events; \
         COMMENT ON PUBLICATION {own} IS 'managed by pgcdc connector {}'",
        h.name
    ))
    .await;
    let (code, out) = h.validate("");
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("(managed by pgcdc) gets publish_via_partition_root = true at start"),
        "{out}"
    );
    let run = h.start("").await;
    h.sql("INSERT INTO events VALUES (9, '2026-09-09', 'after-fix')")
        .await;
    let recs = h.read("events", 3, Duration::from_secs(90)).await;
    assert_eq!(recs[2].value["after"]["v"], "after-fix");
    let c = h.client().await;
    let via_root: bool = c
        .query_one(
            "SELECT pubviaroot FROM pg_publication WHERE pubname = $1",
            &[&own],
        )
        .await
        .unwrap()
        .get(0);
    assert!(via_root);
    run.stop().await.unwrap();
    h.drop_slot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_publish_via_partition_root_each_partition_has_its_own_topic() {
    let h = Harness::new("partleaf", SCHEMA).await;
    let run = h
        .start("publish_via_partition_root: false\ntables:\n  include: [public.events]\n")
        .await;
    h.sql("INSERT INTO events VALUES (3, '2025-07-01', 'stream-a'), (4, '2026-07-01', 'stream-b')")
        .await;
    for (part, snap, stream) in [
        ("events_2025", "snap-a", "stream-a"),
        ("events_2026", "snap-b", "stream-b"),
    ] {
        let recs = h.read(part, 2, Duration::from_secs(90)).await;
        let got: Vec<(&str, &str)> = recs
            .iter()
            .map(|r| {
                (
                    r.value["op"].as_str().unwrap(),
                    r.value["after"]["v"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(got, [("r", snap), ("c", stream)], "{part}: {recs:#?}");
        assert_eq!(recs[1].value["source"]["table"], part);
    }
    assert_eq!(
        count(&h, &h.topic("events"), Duration::from_secs(3)).await,
        0,
        "nothing under the partitioned table's own topic"
    );
    let c = h.client().await;
    let via_root: bool = c
        .query_one(
            "SELECT pubviaroot FROM pg_publication WHERE pubname = $1",
            &[&format!("pgcdc_{}", h.name)],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!via_root);
    run.stop().await.unwrap();
    h.drop_slot().await;
}
