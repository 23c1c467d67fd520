//! The built-in outbox event router: inserts into the outbox table and messages with the
//! outbox prefix become records on their aggregate's topic, keyed by the aggregate id,
//! valued by the payload, with the event id as header `id`; updates and deletes of the
//! outbox table are not sent; what cannot be routed arrives as what it was.

use std::time::Duration;

use serde_json::{json, Value as Json};

use crate::harness::{read_topic, Harness};

const SCHEMA: &str = "
CREATE TABLE orders (id int PRIMARY KEY, item text);
CREATE TABLE outbox (id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
                     aggregatetype varchar(255) NOT NULL, aggregateid varchar(255) NOT NULL,
                     payload jsonb);";

fn payload(r: &crate::harness::Record) -> Json {
    serde_json::from_str(r.value.as_str().unwrap_or_else(|| panic!("{r:?}"))).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_rows_and_messages_are_routed_to_their_aggregates_topic() {
    let h = Harness::new("outbox", SCHEMA).await;
    // Rows already in the outbox are not snapshotted (they were routed when inserted).
    h.sql("INSERT INTO outbox (aggregatetype, aggregateid, payload) VALUES ('order', '0', '{}')")
        .await;
    let run = h
        .start(&format!(
            "outbox:\n  table: public.outbox\n  message_prefix: outbox\n  topic: '{}.outbox.{{aggregatetype}}'\n",
            h.prefix
        ))
        .await;
    h.sql(
        "BEGIN;
         INSERT INTO orders VALUES (1, 'book');
         INSERT INTO outbox VALUES ('00000000-0000-4000-8000-000000000001', 'order', '1', '{\"item\": \"book\"}');
         DELETE FROM outbox;
         COMMIT",
    )
    .await;
    h.sql(
        r#"SELECT pg_logical_emit_message(false, 'outbox', '{"id": "m1", "aggregatetype": "customer", "aggregateid": "7", "payload": {"name": "ann"}}')"#,
    )
    .await;
    h.sql(
        r#"BEGIN; SELECT pg_logical_emit_message(true, 'outbox', '{"aggregatetype": "order", "aggregateid": "2", "payload": null}'); COMMIT"#,
    )
    .await;
    // Cannot be routed: an empty aggregate type names no topic; a message without JSON.
    h.sql("INSERT INTO outbox (aggregatetype, aggregateid, payload) VALUES ('', '3', '{}')")
        .await;
    h.sql("SELECT pg_logical_emit_message(false, 'outbox', 'not json')")
        .await;
    h.sql("UPDATE outbox SET aggregateid = '4'").await;

    let orders = read_topic(
        &h.stack,
        &format!("{}.outbox.order", h.prefix),
        2,
        Duration::from_secs(90),
    )
    .await;
    assert_eq!(orders[0].key, json!("1"), "{orders:?}");
    assert_eq!(payload(&orders[0]), json!({"item": "book"}));
    assert_eq!(
        orders[0].headers,
        [(
            "id".to_owned(),
            "00000000-0000-4000-8000-000000000001".to_owned()
        )]
    );
    assert_eq!(orders[1].key, json!("2"));
    assert_eq!(
        orders[1].value,
        json!("null"),
        "a message's JSON null payload is its text"
    );
    assert!(orders[1].headers.is_empty());

    let customers = read_topic(
        &h.stack,
        &format!("{}.outbox.customer", h.prefix),
        1,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(customers[0].key, json!("7"));
    assert_eq!(payload(&customers[0]), json!({"name": "ann"}));
    assert_eq!(customers[0].headers, [("id".to_owned(), "m1".to_owned())]);

    // The unroutable row as a change event of the outbox table; nothing else of it.
    let own = h.read("outbox", 1, Duration::from_secs(60)).await;
    assert_eq!(own[0].value["op"], "c");
    assert_eq!(own[0].value["after"]["aggregateid"], "3");
    let msgs = read_topic(
        &h.stack,
        &format!("{}.message", h.prefix),
        1,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(msgs[0].value["message"]["prefix"], "outbox");
    h.read("orders", 1, Duration::from_secs(30)).await;
    run.stop().await.unwrap();

    // Nothing more arrived on the outbox table's topic (update, delete, snapshot row).
    let again = h.read("outbox", 1, Duration::from_secs(10)).await;
    assert_eq!(again.len(), 1);
    h.drop_slot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_composite_payload_is_an_avro_record() {
    let h = Harness::new(
        "outboxrec",
        "CREATE TYPE order_event AS (item text, qty int, note text);
         CREATE TABLE outbox (id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
                              aggregatetype text NOT NULL, aggregateid text NOT NULL,
                              payload order_event NOT NULL);",
    )
    .await;
    let run = h
        .start(&format!(
            "outbox:\n  table: public.outbox\n  topic: '{}.outbox.{{aggregatetype}}'\n",
            h.prefix
        ))
        .await;
    h.sql(
        "INSERT INTO outbox (aggregatetype, aggregateid, payload)
         VALUES ('order', '1', ROW('book, \"signed\"', 2, NULL))",
    )
    .await;
    let topic = format!("{}.outbox.order", h.prefix);
    let recs = read_topic(&h.stack, &topic, 1, Duration::from_secs(60)).await;
    run.stop().await.unwrap();
    assert_eq!(recs[0].key, json!("1"));
    assert_eq!(
        recs[0].value,
        json!({"item": "book, \"signed\"", "qty": 2, "note": null}),
        "{recs:?}"
    );
    let latest = crate::common::get_json(&format!(
        "{}/subjects/{topic}-value/versions/latest",
        h.stack.registry_url
    ))
    .await;
    let schema: Json = serde_json::from_str(latest["schema"].as_str().unwrap()).unwrap();
    assert_eq!(schema["type"], "record", "{schema}");
    assert_eq!(schema["name"], "order_event");
    h.drop_slot().await;
}
