//! `columns.<table>`: columns left out, masked, hashed (Debezium's v2 SHA-256 with a salt)
//! and truncated, in snapshot rows and streamed changes alike, with the registered schema
//! saying what is sent; and rules that would touch the key or name nothing refused at start.

use std::time::Duration;

use serde_json::{json, Value as Json};

use crate::common::get_json;
use crate::harness::Harness;

const SCHEMA: &str = "CREATE TABLE customers (
    id int PRIMARY KEY, name text, email varchar(20), card text, notes text, ssn text,
    dob date, photo bytea, score numeric);";

const RULES: &str = "columns:
  public.customers:
    exclude: [ssn]
    mask_with_chars: {card: 4, dob: 3, score: 2}
    truncate_to_chars: {notes: 5, photo: 2}
    hash: {email: '${PGCDC_TEST_SALT}'}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_shape_snapshot_rows_changes_and_the_schema() {
    std::env::set_var("PGCDC_TEST_SALT", "pepper");
    let h = Harness::new("cols", SCHEMA).await;
    h.sql(
        "INSERT INTO customers VALUES (1, 'ann', 'ann@example.com', '4111111111111111', 'hello world', \
         '123-45-6789', '1990-01-02', '\\x01020304', 12.5)",
    )
    .await;
    let run = h.start(RULES).await;
    h.sql("INSERT INTO customers (id, name) VALUES (2, 'bob')")
        .await;
    h.sql("UPDATE customers SET notes = 'héllo there', card = '5500' WHERE id = 1")
        .await;
    let recs = h.read("customers", 3, Duration::from_secs(90)).await;
    run.stop().await.unwrap();

    // echo -n 'pepperann@example.com' | sha256sum, cut to varchar(20)
    let email = "831740710d6a8225c6ad";
    let ann = &recs[0].value["after"];
    assert_eq!(recs[0].value["op"], "r");
    assert_eq!(ann["name"], "ann");
    assert_eq!(ann["email"], email);
    assert_eq!(ann["card"], "****");
    assert_eq!(ann["dob"], "***", "a masked date is a masked string");
    assert_eq!(ann["score"], "**");
    assert_eq!(ann["notes"], "hello");
    assert_eq!(ann["photo"], "\\x0102");
    assert!(ann.get("ssn").is_none(), "excluded: {ann}");

    let bob = &recs[1].value["after"];
    assert_eq!(recs[1].value["op"], "c");
    assert_eq!(bob["name"], "bob");
    for c in ["email", "card", "dob", "notes", "photo"] {
        assert!(bob[c].is_null(), "NULL stays null under a rule: {bob}");
    }

    let upd = &recs[2].value["after"];
    assert_eq!(recs[2].value["op"], "u");
    assert_eq!(upd["notes"], "héllo", "five characters, not bytes");
    assert_eq!(upd["card"], "****");
    assert_eq!(upd["email"], email);
    assert!(upd.get("ssn").is_none());

    let latest = get_json(&format!(
        "{}/subjects/{}-value/versions/latest",
        h.stack.registry_url,
        h.topic("customers")
    ))
    .await;
    let schema: Json = serde_json::from_str(latest["schema"].as_str().unwrap()).unwrap();
    let value = &schema["fields"][0]["type"][1];
    let field = |n: &str| {
        value["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == n)
            .map(|f| f["type"].clone())
    };
    assert_eq!(field("ssn"), None, "{value}");
    let masked = json!(["null", {"type": "string", "connect.parameters": {"masked": "true"}}]);
    for c in ["card", "dob", "score", "email"] {
        assert_eq!(field(c), Some(masked.clone()), "{c}: {value}");
    }
    assert_eq!(
        field("notes"),
        Some(json!(["null", {"type": "string", "connect.parameters": {"truncateLength": "5"}}]))
    );
    assert_eq!(
        field("photo"),
        Some(json!(["null", {"type": "bytes", "connect.parameters": {"truncateLength": "2"}}]))
    );
    h.drop_slot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_on_the_key_or_on_missing_columns_are_refused_at_start() {
    let h = Harness::new("colsbad", SCHEMA).await;
    for (rules, expect) in [
        (
            "columns:\n  public.customers:\n    hash: {id: salt}\n",
            "columns.public.customers.hash: column id is part of the event key",
        ),
        (
            "columns:\n  public.customers:\n    exclude: [nosuch]\n",
            "columns.public.customers.exclude: table public.customers has no column nosuch",
        ),
        (
            "columns:\n  public.customers:\n    include: [name]\n",
            "columns.public.customers.include: leaves out key column id",
        ),
        (
            "outbox:\n  table: public.customers\n",
            "outbox.fields.aggregate_type: outbox table public.customers has no column aggregatetype",
        ),
    ] {
        let err = h
            .run_once_expect_error(rules, Duration::from_secs(30))
            .await;
        assert!(!err.is_transient(), "{err}");
        assert!(
            err.to_string().contains(expect),
            "expected {expect:?} in: {err}"
        );
    }
}

/// `include` sends only the columns it lists (the key among them), in snapshot rows,
/// changes and the registered schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn include_sends_only_the_listed_columns() {
    let h = Harness::new("colinc", SCHEMA).await;
    h.sql("INSERT INTO customers (id, name, email, ssn) VALUES (1, 'ann', 'a@x', '123')")
        .await;
    let run = h
        .start("columns:\n  public.customers:\n    include: [id, name]\n")
        .await;
    h.sql("INSERT INTO customers (id, name, email, ssn) VALUES (2, 'bob', 'b@x', '456')")
        .await;
    let recs = h.read("customers", 2, Duration::from_secs(90)).await;
    run.stop().await.unwrap();
    let names = |v: &Json| -> Vec<String> {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    for (r, name) in recs.iter().zip(["ann", "bob"]) {
        assert_eq!(names(&r.value["after"]), ["id", "name"], "{r:?}");
        assert_eq!(r.value["after"]["name"], name);
    }
    let latest = get_json(&format!(
        "{}/subjects/{}-value/versions/latest",
        h.stack.registry_url,
        h.topic("customers")
    ))
    .await;
    let schema: Json = serde_json::from_str(latest["schema"].as_str().unwrap()).unwrap();
    let fields: Vec<&str> = schema["fields"][0]["type"][1]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["id", "name"], "{schema}");
    h.drop_slot().await;
}
