//! Schemas are registered spelled exactly as Java's Avro prints them. Confluent's
//! AvroConverter (Kafka Connect, Debezium's JDBC sink) looks each writer schema up with
//! `POST /subjects/{subject}` sending `Schema.toString()`, and Apicurio matches that text
//! exactly: a schema registered with its keys in another order is "not found" (40403).

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value as Json};

use crate::common::get_json;
use crate::harness::Harness;
use crate::pipeline_types::{SCHEMA, TYPICAL};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registered_schemas_are_spelled_as_javas_avro_prints_them() {
    // Every type, and NOT NULL columns with defaults (Debezium's reference tables).
    let schema = format!(
        "{SCHEMA}{}",
        include_str!("../../dev/debezium-ref/schema.sql")
    );
    let h = Harness::new("javaspell", &schema).await;
    // With the connector-level topics too: transaction metadata, messages, heartbeats.
    let run = h
        .start("provide_transaction_metadata: true\nmessages:\n  enabled: true\nheartbeat:\n  interval: 200ms\n")
        .await;
    h.sql(TYPICAL).await;
    h.sql("INSERT INTO orders (customer) VALUES ('ann')").await;
    h.sql("SELECT pg_logical_emit_message(false, 'p', 'x')")
        .await;
    h.read("all_types", 1, Duration::from_secs(60)).await;
    h.read("orders", 1, Duration::from_secs(60)).await;
    let message = format!("{}.message", h.prefix);
    crate::harness::read_topic(&h.stack, &message, 1, Duration::from_secs(60)).await;
    let heartbeat = format!("__pgcdc-heartbeat.{}", h.prefix);
    crate::harness::read_topic(&h.stack, &heartbeat, 1, Duration::from_secs(60)).await;
    run.stop().await.unwrap();

    let http = reqwest::Client::new();
    let mut texts = Vec::new();
    let topics = [
        h.topic("all_types"),
        h.topic("orders"),
        format!("{}.transaction", h.prefix),
        message,
        heartbeat,
    ];
    let subjects = topics
        .iter()
        .flat_map(|t| [format!("{t}-key"), format!("{t}-value")]);
    for subject in subjects {
        let latest = get_json(&format!(
            "{}/subjects/{subject}/versions/latest",
            h.stack.registry_url
        ))
        .await;
        texts.push((
            subject,
            latest["schema"].as_str().unwrap().to_owned(),
            latest["id"].clone(),
        ));
    }

    let root = env!("CARGO_MANIFEST_DIR");
    let mut java = Command::new(format!("{root}/dev/java-avro/print-schemas"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run dev/java-avro/print-schemas");
    {
        let mut stdin = java.stdin.take().unwrap();
        for (_, text, _) in &texts {
            writeln!(stdin, "{text}").unwrap();
        }
    }
    let out = java.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "Java's Avro could not parse the schemas"
    );
    let printed: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(str::to_owned)
        .collect();
    assert_eq!(printed.len(), texts.len());
    for ((subject, text, id), java_text) in texts.iter().zip(&printed) {
        assert_eq!(java_text, text, "{subject}: Java spells it differently");
        // The converter's own lookup, without ?normalize.
        let found = http
            .post(format!("{}/subjects/{subject}", h.stack.registry_url))
            .header("Content-Type", "application/vnd.schemaregistry.v1+json")
            .json(&json!({"schema": java_text}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            found.status(),
            200,
            "{subject}: lookup by Java's text failed"
        );
        let body: Json = found.json().await.unwrap();
        assert_eq!(&body["id"], id, "{subject}: {body}");
    }
    h.drop_slot().await;
}

/// Upgrading over a subject registered in the old spelling (keys sorted, as pgcdc before
/// 0.1 registered them): pgcdc registers its schema in Java's spelling as the subject's next
/// version (the same schema, so any compatibility level accepts it), and the converter's
/// lookup by Java's text finds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subjects_in_the_old_spelling_get_a_version_in_javas() {
    let h = Harness::new("oldspell", "CREATE TABLE t (id int PRIMARY KEY);").await;
    let topic = h.topic("t");
    let subject = format!("{topic}-key");
    let ns = topic.replace('-', "_");
    let old = format!(
        r#"{{"connect.name":"{ns}.Key","fields":[{{"name":"id","type":"int"}}],"name":"Key","namespace":"{ns}","type":"record"}}"#
    );
    let http = reqwest::Client::new();
    let url = &h.stack.registry_url;
    let post = |path: String, schema: String| {
        http.post(format!("{url}{path}"))
            .header("Content-Type", "application/vnd.schemaregistry.v1+json")
            .json(&json!({ "schema": schema }))
            .send()
    };
    let r = post(format!("/subjects/{subject}/versions"), old.clone())
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());

    let run = h.start("").await;
    h.sql("INSERT INTO t VALUES (1)").await;
    let recs = h.read("t", 1, Duration::from_secs(60)).await;
    run.stop().await.unwrap();
    assert_eq!(recs[0].key, json!({"id": 1}));

    let versions = get_json(&format!("{url}/subjects/{subject}/versions")).await;
    assert_eq!(versions, json!([1, 2]), "the old spelling, then Java's");
    let java = format!(
        r#"{{"type":"record","name":"Key","namespace":"{ns}","fields":[{{"name":"id","type":"int"}}],"connect.name":"{ns}.Key"}}"#
    );
    let found = post(format!("/subjects/{subject}"), java).await.unwrap();
    assert_eq!(found.status(), 200);
    let body: Json = found.json().await.unwrap();
    assert_eq!(body["version"], 2, "{body}");
    h.drop_slot().await;
}
