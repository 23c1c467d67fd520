//! The registry of the stack is a real Confluent-compatible registry: a schema registered
//! under a subject reads back by id, and an incompatible second version is refused under
//! BACKWARD compatibility.

use schema_registry_converter::async_impl::schema_registry::{
    get_schema_by_id, post_schema, SrSettings,
};
use schema_registry_converter::schema_registry_common::{SchemaType, SuppliedSchema};

use crate::common::{unique, Stack};

const V1: &str = r#"{"type":"record","name":"Smoke","namespace":"pgcdc.smoke","fields":[{"name":"id","type":"int"}]}"#;
// Adds a field without a default: old data cannot be read with it, so BACKWARD refuses it.
const V2_INCOMPATIBLE: &str = r#"{"type":"record","name":"Smoke","namespace":"pgcdc.smoke","fields":[{"name":"id","type":"int"},{"name":"note","type":"string"}]}"#;
// The same change with a default is backward compatible.
const V2_COMPATIBLE: &str = r#"{"type":"record","name":"Smoke","namespace":"pgcdc.smoke","fields":[{"name":"id","type":"int"},{"name":"note","type":"string","default":""}]}"#;

fn avro(s: &str) -> SuppliedSchema {
    SuppliedSchema::new(None, SchemaType::Avro, s.to_owned())
}

#[tokio::test]
async fn registers_reads_back_and_enforces_backward_compatibility() {
    let stack = Stack::get();
    let sr = SrSettings::new(stack.registry_url.clone());
    let subject = format!("{}-value", unique("smoke_topic"));

    let registered = post_schema(&sr, subject.clone(), avro(V1)).await.unwrap();
    let fetched = get_schema_by_id(registered.id, &sr).await.unwrap();
    let a: serde_json::Value = serde_json::from_str(&fetched.schema).unwrap();
    let b: serde_json::Value = serde_json::from_str(V1).unwrap();
    assert_eq!(
        a, b,
        "schema read back by id differs from the one registered"
    );

    let http = reqwest::Client::new();
    let resp = http
        .put(format!("{}/config/{subject}", stack.registry_url))
        .header("Content-Type", "application/vnd.schemaregistry.v1+json")
        .body(r#"{"compatibility":"BACKWARD"}"#)
        .send()
        .await
        .unwrap();
    assert!(
        resp.status().is_success(),
        "set compatibility: {}",
        resp.status()
    );

    let refused = post_schema(&sr, subject.clone(), avro(V2_INCOMPATIBLE)).await;
    let err = refused.expect_err("an incompatible schema must be refused under BACKWARD");
    assert!(
        err.error.contains("409") || err.error.to_lowercase().contains("incompatible"),
        "unexpected error for an incompatible schema: {err:?}"
    );

    let accepted = post_schema(&sr, subject.clone(), avro(V2_COMPATIBLE))
        .await
        .unwrap();
    assert_ne!(accepted.id, registered.id);
}
