//! Logical decoding messages (`pg_logical_emit_message`) as Debezium's `op: m` events on
//! `<prefix>.message`: transactional ones in their transaction, non-transactional ones at
//! once, filtered by prefix; pgcdc's own watermarks never appear.

use std::time::Duration;

use crate::harness::{read_topic, Harness};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_arrive_as_debezium_message_events() {
    messages_on(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_arrive_as_debezium_message_events_on_14() {
    messages_on(Some(14)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_arrive_as_debezium_message_events_on_15() {
    messages_on(Some(15)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_arrive_as_debezium_message_events_on_16() {
    messages_on(Some(16)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_arrive_as_debezium_message_events_on_18() {
    messages_on(Some(18)).await;
}

/// The test on the stack's PostgreSQL, or on another major of it.
async fn messages_on(major: Option<u32>) {
    let h = Harness::for_major(major, "msgs", "CREATE TABLE t (id int PRIMARY KEY);").await;
    let run = h
        .start("messages:\n  enabled: true\n  prefix_exclude: [noise]\n")
        .await;
    h.sql("SELECT pg_logical_emit_message(false, 'audit', 'outside')")
        .await;
    h.sql("SELECT pg_logical_emit_message(false, 'noise', 'dropped')")
        .await;
    h.sql(
        "BEGIN; INSERT INTO t VALUES (1); SELECT pg_logical_emit_message(true, 'audit', 'inside'); COMMIT",
    )
    .await;
    // Rolled back: its transactional message is never decoded.
    h.sql("BEGIN; SELECT pg_logical_emit_message(true, 'audit', 'rolled back'); ROLLBACK")
        .await;
    h.sql("SELECT pg_logical_emit_message(false, 'audit', 'last')")
        .await;

    let topic = format!("{}.message", h.prefix);
    let recs = read_topic(&h.stack, &topic, 3, Duration::from_secs(90)).await;
    let content: Vec<String> = recs
        .iter()
        .map(|r| {
            assert_eq!(r.value["op"], "m");
            assert_eq!(r.key["prefix"], "audit");
            assert_eq!(r.value["message"]["prefix"], "audit");
            r.value["message"]["content"].as_str().unwrap().to_owned()
        })
        .collect();
    // tail's JSON renders bytes as PostgreSQL's \x hex.
    let hex = |s: &str| {
        format!(
            "\\x{}",
            s.bytes().map(|b| format!("{b:02x}")).collect::<String>()
        )
    };
    assert_eq!(
        content,
        [hex("outside"), hex("inside"), hex("last")],
        "{recs:#?}"
    );
    assert!(recs[0].value["transaction"].is_null());
    let row = h.read("t", 1, Duration::from_secs(30)).await;
    assert_eq!(
        recs[1].value["transaction"]["id"], row[0].value["transaction"]["id"],
        "the transactional message carries its transaction"
    );
    assert_eq!(recs[1].value["source"]["table"], "");
    run.stop().await.unwrap();
    h.drop_slot().await;
}

/// `prefix_include` keeps only the prefixes it names; a non-transactional message is sent
/// when PostgreSQL writes it, whatever becomes of a transaction around it: while that
/// transaction is still open, and also when it rolls back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefix_include_and_non_transactional_messages_inside_a_transaction() {
    let h = Harness::new("msginc", "CREATE TABLE t (id int PRIMARY KEY);").await;
    let run = h
        .start("messages:\n  enabled: true\n  prefix_include: [keep]\n")
        .await;
    h.sql("SELECT pg_logical_emit_message(false, 'other', 'not included')")
        .await;
    h.sql("SELECT pg_logical_emit_message(true, 'other', 'not included either')")
        .await;
    h.sql("BEGIN; INSERT INTO t VALUES (1); SELECT pg_logical_emit_message(false, 'keep', 'rolled back'); ROLLBACK")
        .await;
    let open = h.client().await;
    open.batch_execute(
        "BEGIN; INSERT INTO t VALUES (2); SELECT pg_logical_emit_message(false, 'keep', 'while open')",
    )
    .await
    .unwrap();
    let topic = format!("{}.message", h.prefix);
    let hex = |s: &str| {
        format!(
            "\\x{}",
            s.bytes().map(|b| format!("{b:02x}")).collect::<String>()
        )
    };
    let content = |recs: &[crate::harness::Record]| -> Vec<String> {
        recs.iter()
            .map(|r| {
                assert_eq!(r.key["prefix"], "keep", "{r:?}");
                r.value["message"]["content"].as_str().unwrap().to_owned()
            })
            .collect()
    };
    // Both arrive while the transaction around the second one is still open.
    let recs = read_topic(&h.stack, &topic, 2, Duration::from_secs(90)).await;
    assert_eq!(content(&recs), [hex("rolled back"), hex("while open")]);
    assert!(recs.iter().all(|r| r.value["transaction"].is_null()));
    open.batch_execute("COMMIT").await.unwrap();
    h.sql("BEGIN; INSERT INTO t VALUES (3); SELECT pg_logical_emit_message(true, 'keep', 'in its transaction'); COMMIT")
        .await;
    let recs = read_topic(&h.stack, &topic, 3, Duration::from_secs(90)).await;
    assert_eq!(
        content(&recs),
        [
            hex("rolled back"),
            hex("while open"),
            hex("in its transaction")
        ]
    );
    assert!(!recs[2].value["transaction"].is_null());
    // Rows 2 and 3 arrived; row 1 was rolled back.
    let rows = h.read("t", 2, Duration::from_secs(30)).await;
    let ids: Vec<i64> = rows.iter().map(|r| r.key["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, [2, 3]);
    run.stop().await.unwrap();
    h.drop_slot().await;
}
