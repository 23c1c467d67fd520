//! Value schemas field for field against what Debezium 3.6.3 registers for the same tables
//! (`dev/debezium-ref/out/`, captured by `dev/debezium-ref/run`): NOT NULL columns are
//! required, constant defaults carried as Debezium carries them. Where pgcdc deviates, this
//! test names the field and holds pgcdc's form.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value as Json};

use crate::harness::Harness;

const SCHEMA: &str = include_str!("../../dev/debezium-ref/schema.sql");

fn debezium(subject: &str) -> Json {
    let path = format!(
        "{}/dev/debezium-ref/out/{subject}.avsc",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// The fields of the `Value` record inside an envelope schema, by name.
fn value_fields(envelope: &Json) -> BTreeMap<String, Json> {
    let value = &envelope["fields"][0]["type"][1];
    assert_eq!(value["name"], "Value", "{envelope}");
    value["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["name"].as_str().unwrap().to_owned(), f.clone()))
        .collect()
}

async fn registered(h: &Harness, subject: &str) -> Json {
    let latest = crate::common::get_json(&format!(
        "{}/subjects/{subject}/versions/latest",
        h.stack.registry_url
    ))
    .await;
    serde_json::from_str(latest["schema"].as_str().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_null_and_defaults_match_debeziums_schemas() {
    let h = Harness::new("dbzschema", SCHEMA).await;
    let run = h.start("snapshot:\n  mode: never\n").await;
    h.sql(
        "INSERT INTO orders (customer) VALUES ('ann');
         DELETE FROM orders;
         INSERT INTO full_t VALUES (1, 'a', 'infinity', '2024-01-01');
         INSERT INTO multi VALUES (1, 'x', 'v');",
    )
    .await;
    let orders = h.read("orders", 3, Duration::from_secs(60)).await;
    let full = h.read("full_t", 1, Duration::from_secs(30)).await;
    h.read("multi", 1, Duration::from_secs(30)).await;
    run.stop().await.unwrap();

    // Fields where pgcdc deviates on purpose, with pgcdc's form.
    let deviations: BTreeMap<&str, Json> = [
        // nextval(…) and now() compute a value: Debezium declares 0 and the epoch, pgcdc no default.
        ("id", json!({"name": "id", "type": "long"})),
        ("created_at", json!({"name": "created_at", "type": {"type": "string", "connect.version": 1, "connect.name": "io.debezium.time.ZonedTimestamp"}})),
        // NaN (numeric) and ±infinity (date) fall under `unrepresentable`, which needs null.
        ("price", json!({"name": "price", "type": [{"type": "bytes", "scale": 2, "precision": 10, "connect.version": 1, "connect.parameters": {"scale": "2", "connect.decimal.precision": "10"}, "connect.default": "\u{0}", "connect.name": "org.apache.kafka.connect.data.Decimal", "logicalType": "decimal"}, "null"], "default": "\u{0}"})),
        ("day", json!({"name": "day", "type": [{"type": "int", "connect.version": 1, "connect.default": 19723, "connect.name": "io.debezium.time.Date"}, "null"], "default": 19723})),
        // The string default "{}": Apicurio Registry 3.0.9 refuses a schema holding it.
        ("data", json!({"name": "data", "type": {"type": "string", "connect.version": 1, "connect.name": "io.debezium.data.Json"}})),
        // interval as Debezium's interval.handling.mode=string.
        ("iv", json!({"name": "iv", "type": [{"type": "string", "connect.version": 1, "connect.default": "P1D", "connect.name": "io.debezium.time.Interval"}, "null"], "default": "P1D"})),
    ]
    .into_iter()
    .collect();

    let topic = h.topic("orders");
    let ours = value_fields(&registered(&h, &format!("{topic}-value")).await);
    let theirs = value_fields(&debezium("dbzref.public.orders-value"));
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        theirs.keys().collect::<Vec<_>>()
    );
    for (name, field) in &ours {
        match deviations.get(name.as_str()) {
            Some(want) => assert_eq!(field, want, "field {name} (a documented deviation)"),
            None => assert_eq!(field, &theirs[name], "field {name}"),
        }
    }

    for table in ["full_t", "multi"] {
        let ours = value_fields(&registered(&h, &format!("{}-value", h.topic(table))).await);
        let theirs = value_fields(&debezium(&format!("dbzref.public.{table}-value")));
        for (name, field) in &ours {
            if (table, name.as_str()) == ("full_t", "d") {
                // NOT NULL date: optional, since ±infinity needs null.
                assert_eq!(field["type"][0], json!("null"), "{table}.{name}: {field}");
                continue;
            }
            if (table, name.as_str()) == ("full_t", "t") {
                assert_eq!(field["type"][0], json!("null"), "{table}.{name}");
                continue;
            }
            assert_eq!(field, &theirs[name], "{table}.{name}");
        }
    }

    // Values: the insert takes the defaults; the delete's before (REPLICA IDENTITY DEFAULT)
    // has the key, Debezium's fills for NOT NULL columns, null elsewhere, and names them.
    let after = &orders[0].value["after"];
    assert_eq!(
        (
            &after["status"],
            &after["currency"],
            &after["paid"],
            &after["qty"]
        ),
        (&json!("pending"), &json!("EUR"), &json!(true), &json!(1))
    );
    let del = &orders[1];
    assert_eq!(del.value["op"], "d");
    let before = &del.value["before"];
    assert_eq!(before["id"], after["id"]);
    assert_eq!(
        (
            &before["customer"],
            &before["status"],
            &before["qty"],
            &before["note"],
            &before["big"]
        ),
        (
            &json!(""),
            &json!("pending"),
            &json!(1),
            &Json::Null,
            &Json::Null
        )
    );
    let named = del.header_columns("pgcdc.unavailable");
    assert_eq!(named.len(), 22, "every column but the key: {named:?}");
    assert!(!named.contains(&"id".to_owned()));
    // ±infinity in a NOT NULL date: null and named.
    assert_eq!(full[0].value["after"]["d"], Json::Null);
    assert_eq!(full[0].header_columns("pgcdc.lossy"), ["d"]);
    h.drop_slot().await;
}

/// A subject registered with optional fields (by pgcdc before it carried NOT NULL, or
/// before the column became NOT NULL) under a BACKWARD compatibility level refuses the
/// required field: pgcdc registers it optional, as the subject holds it, and streams on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subject_that_refuses_required_fields_keeps_them_optional() {
    let h = Harness::new("dbzupgrade", "CREATE TABLE t (id int PRIMARY KEY, v text);").await;
    let run = h.start("").await;
    h.sql("INSERT INTO t VALUES (1, 'a')").await;
    h.read("t", 1, Duration::from_secs(60)).await;
    run.stop().await.unwrap();

    let subject = format!("{}-value", h.topic("t"));
    let resp = reqwest::Client::new()
        .put(format!("{}/config/{subject}", h.stack.registry_url))
        .header("Content-Type", "application/vnd.schemaregistry.v1+json")
        .body(r#"{"compatibility":"BACKWARD"}"#)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    h.sql("ALTER TABLE t ALTER v SET NOT NULL; INSERT INTO t VALUES (2, 'b');")
        .await;

    let run = h.start("").await;
    let recs = h.read("t", 2, Duration::from_secs(60)).await;
    run.stop().await.unwrap();
    assert_eq!(recs[1].value["after"], json!({"id": 2, "v": "b"}));
    let v = &value_fields(&registered(&h, &subject).await)["v"];
    assert_eq!(
        v,
        &json!({"name": "v", "type": ["null", "string"], "default": null})
    );
    h.drop_slot().await;
}
