//! Transaction metadata (`provide_transaction_metadata`): Debezium's BEGIN and END events on
//! `<prefix>.transaction`, keyed by the transaction id the change events carry in
//! `transaction.id`, with the events counted per table; transactions without captured
//! events produce none.

use std::time::Duration;

use crate::harness::{read_topic, Harness};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn begin_and_end_frame_each_transaction() {
    let h = Harness::new(
        "txmeta",
        "CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE b (id int PRIMARY KEY); \
         CREATE TABLE other (id int PRIMARY KEY);",
    )
    .await;
    let run = h
        .start("tables:\n  include: [public.a, public.b]\nprovide_transaction_metadata: true\n")
        .await;
    h.sql("BEGIN; INSERT INTO a VALUES (1), (2); INSERT INTO b VALUES (1); COMMIT")
        .await;
    h.sql("INSERT INTO other VALUES (1)").await; // nothing captured: no BEGIN/END
    h.sql("UPDATE a SET id = 3 WHERE id = 1").await; // a key change: d, tombstone, c

    let topic = format!("{}.transaction", h.prefix);
    let tx = read_topic(&h.stack, &topic, 4, Duration::from_secs(90)).await;
    let status: Vec<&str> = tx
        .iter()
        .map(|r| r.value["status"].as_str().unwrap())
        .collect();
    assert_eq!(status, ["BEGIN", "END", "BEGIN", "END"], "{tx:#?}");
    for r in &tx {
        assert_eq!(r.key["id"], r.value["id"], "keyed by the transaction id");
        assert!(r.value["ts_ms"].as_i64().unwrap() > 1_600_000_000_000);
    }
    assert!(tx[0].value["event_count"].is_null() && tx[0].value["data_collections"].is_null());
    assert_eq!(tx[1].value["event_count"], 3);
    assert_eq!(
        tx[1].value["data_collections"],
        serde_json::json!([
            {"data_collection": "public.a", "event_count": 2},
            {"data_collection": "public.b", "event_count": 1}
        ])
    );
    // The key change: a delete and a create (its tombstone is not a change event).
    assert_eq!(tx[3].value["event_count"], 2);

    // The change events name the same transactions.
    let a = h.read("a", 5, Duration::from_secs(60)).await;
    let b = h.read("b", 1, Duration::from_secs(60)).await;
    assert_eq!(a[0].value["transaction"]["id"], tx[0].value["id"]);
    assert_eq!(b[0].value["transaction"]["id"], tx[1].value["id"]);
    assert_eq!(a[2].value["transaction"]["id"], tx[2].value["id"]);
    assert_eq!(a[2].value["op"], "d");
    run.stop().await.unwrap();
    h.drop_slot().await;
}
