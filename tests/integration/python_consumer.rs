//! A Python microservice with nothing but confluent-kafka (Consumer, AvroDeserializer,
//! SchemaRegistryClient) decodes every event, and sees exactly what our own decoding sees.

use std::process::Command;
use std::time::Duration;

use serde_json::Value as Json;

use crate::harness::Harness;
use crate::pipeline_types::{EDGES, NULLS, SCHEMA, TYPICAL};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_confluent_kafka_decodes_every_event() {
    let root = env!("CARGO_MANIFEST_DIR");
    let status = Command::new(format!("{root}/dev/python-env"))
        .status()
        .expect("run dev/python-env");
    assert!(status.success(), "dev/python-env failed");

    let h = Harness::new("python", SCHEMA).await;
    let run = h.start("").await;
    h.sql(TYPICAL).await;
    h.sql(EDGES).await;
    h.sql(NULLS).await;
    h.sql(
        "UPDATE all_types SET c_text = 'changed' WHERE id = 1; DELETE FROM all_types WHERE id = 2;",
    )
    .await;
    // 3 creates, 1 update, 1 delete, 1 tombstone.
    let ours = h.read("all_types", 6, Duration::from_secs(60)).await;
    run.stop().await.unwrap();

    let topic = h.topic("all_types");
    let out = Command::new(format!("{root}/.stack/venv/bin/python"))
        .arg(format!("{root}/tests/python/consume.py"))
        .args([
            "--bootstrap",
            &h.stack.kafka_bootstrap,
            "--registry",
            &h.stack.registry_url,
        ])
        .args(["--topic", &topic, "--count", "6", "--timeout", "60"])
        .output()
        .expect("run the Python consumer");
    assert!(
        out.status.success(),
        "Python consumer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs: Vec<Json> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(theirs.len(), ours.len());
    for (t, o) in theirs.iter().zip(&ours) {
        assert_eq!(t["offset"], o.offset, "offsets differ");
        assert_eq!(t["key"], o.key, "key at offset {}", o.offset);
        assert_eq!(t["value"], o.value, "value at offset {}", o.offset);
    }
    let ops: Vec<Json> = theirs.iter().map(|t| t["value"]["op"].clone()).collect();
    assert_eq!(
        ops,
        [
            Json::from("c"),
            "c".into(),
            "c".into(),
            "u".into(),
            "d".into(),
            Json::Null
        ]
    );
    h.drop_slot().await;
}
