//! The example consumers in `examples/` (Python: confluent-kafka's AvroDeserializer; Java:
//! Confluent's KafkaAvroDeserializer and GenericRecord) apply one table's change events to
//! an in-memory table by key; after snapshot rows, inserts, updates, deletes with their
//! tombstones, primary-key changes and a truncate, both end with the source table.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use serde_json::Value as Json;

use crate::harness::Harness;

const SCHEMA: &str = "CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, qty bigint, ok boolean, note text);
INSERT INTO items SELECT g, 'item ' || g, g * 10, g % 2 = 0, CASE WHEN g % 3 = 0 THEN NULL ELSE 'n' || g END
  FROM generate_series(1, 20) g;";

const WORKLOAD: &str = "
INSERT INTO items SELECT g, 'item ' || g, g * 10, g % 2 = 0, NULL FROM generate_series(21, 40) g;
UPDATE items SET qty = qty + 1, note = 'changed' WHERE id % 5 = 0;
DELETE FROM items WHERE id % 7 = 0;
UPDATE items SET id = 1003 WHERE id = 3;
TRUNCATE items;
INSERT INTO items SELECT g, 'again ' || g, g, g % 3 = 0, 'x' FROM generate_series(1, 30) g;
UPDATE items SET qty = -qty, ok = NULL WHERE id % 4 = 0;
DELETE FROM items WHERE id % 6 = 0;
UPDATE items SET id = 2001 WHERE id = 1;";

/// Records the workload makes on the topic: 20 snapshot rows; 20 creates, 8 updates, 5
/// deletes with 5 tombstones, a key change (delete, tombstone, create); a truncate; 30
/// creates, 7 updates, 5 deletes with 5 tombstones, a key change.
const RECORDS: usize = 20 + 20 + 8 + 10 + 3 + 1 + 30 + 7 + 10 + 3;

/// `{"key": …, "row": …}` lines as a map from the row's id to the row.
fn table(who: &str, out: &std::process::Output) -> BTreeMap<i64, Json> {
    assert!(
        out.status.success(),
        "{who} consumer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("{\"key\""))
        .map(|l| {
            let j: Json = serde_json::from_str(l).unwrap_or_else(|e| panic!("{who}: {e}: {l}"));
            assert_eq!(
                j["key"]["id"], j["row"]["id"],
                "{who}: key and row differ: {l}"
            );
            (j["row"]["id"].as_i64().unwrap(), j["row"].clone())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_java_consumers_end_with_the_source_table() {
    let root = env!("CARGO_MANIFEST_DIR");
    let status = Command::new(format!("{root}/dev/python-env"))
        .status()
        .expect("run dev/python-env");
    assert!(status.success(), "dev/python-env failed");

    let h = Harness::new("consumers", SCHEMA).await;
    let run = h.start("skipped_operations: []\n").await;
    h.sql(WORKLOAD).await;
    let recs = h.read("items", RECORDS, Duration::from_secs(90)).await;
    assert_eq!(
        recs.len(),
        RECORDS,
        "the topic holds what the workload made"
    );
    run.stop().await.unwrap();

    let source: BTreeMap<i64, Json> = h
        .client()
        .await
        .query("SELECT id::int8, row_to_json(i)::text FROM items i", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| {
            let row: String = r.get(1);
            (r.get::<_, i64>(0), serde_json::from_str(&row).unwrap())
        })
        .collect();
    assert_eq!(
        source.len(),
        25,
        "30 rows, 5 deleted; none left from before the truncate"
    );

    let topic = h.topic("items");
    let count = RECORDS.to_string();
    let python = Command::new(format!("{root}/.stack/venv/bin/python"))
        .arg(format!("{root}/examples/python/materialize.py"))
        .args([
            "--bootstrap",
            &h.stack.kafka_bootstrap,
            "--registry",
            &h.stack.registry_url,
        ])
        .args(["--topic", &topic, "--count", &count])
        .output()
        .expect("run examples/python/materialize.py");
    assert_eq!(table("Python", &python), source);

    // Built with mvn from examples/java/pom.xml as a user builds it, with Confluent's jars
    // from the local stack (they are not on Maven Central), then run from its jar.
    let build = format!("{root}/.stack/java-example");
    let mvn = Command::new("mvn")
        .args([
            "-q",
            "-B",
            "-f",
            &format!("{root}/examples/java/pom.xml"),
            "package",
        ])
        .arg(format!(
            "-Dconfluent.jars={root}/.stack/connect/plugins/confluent-avro"
        ))
        .arg(format!("-Dbuild.dir={build}"))
        .output()
        .expect("run mvn (Debian's maven)");
    assert!(
        mvn.status.success(),
        "mvn package of examples/java failed: {}{}",
        String::from_utf8_lossy(&mvn.stdout),
        String::from_utf8_lossy(&mvn.stderr)
    );
    let java = Command::new("java")
        .args(["-cp", &format!("{build}/materialize-1.0.jar:{build}/lib/*")])
        .arg("Materialize")
        .args([
            &h.stack.kafka_bootstrap,
            &h.stack.registry_url,
            &topic,
            &count,
        ])
        .output()
        .expect("run the Materialize example's jar");
    assert_eq!(table("Java", &java), source);
    h.drop_slot().await;
}
