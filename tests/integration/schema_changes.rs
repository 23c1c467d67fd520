//! `schema_changes: true` with the DDL capture trigger (`pgcdc install-ddl-capture`): a DDL
//! on a captured table registers the table's new schemas at the DDL and becomes an event on
//! `<prefix>.schema_changes` naming them; a shape the subject's compatibility refuses stops
//! the connector at the DDL, naming it and the registry's reason.

use std::time::Duration;

use serde_json::json;

use crate::common::get_json;
use crate::harness::{read_topic, Harness};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ddl_registers_the_new_schema_before_its_rows_and_is_an_event() {
    ddl_on(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ddl_registers_the_new_schema_before_its_rows_and_is_an_event_on_14() {
    ddl_on(Some(14)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ddl_registers_the_new_schema_before_its_rows_and_is_an_event_on_15() {
    ddl_on(Some(15)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ddl_registers_the_new_schema_before_its_rows_and_is_an_event_on_16() {
    ddl_on(Some(16)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ddl_registers_the_new_schema_before_its_rows_and_is_an_event_on_18() {
    ddl_on(Some(18)).await;
}

/// The test on the stack's PostgreSQL, or on another major of it.
async fn ddl_on(major: Option<u32>) {
    let h = Harness::for_major(major, "ddl", "CREATE TABLE t (id int PRIMARY KEY, n int);").await;
    let (_, conn) = h.configs("schema_changes: true\n");
    // Without the trigger the connector refuses to start, saying how to install it.
    let err = h
        .run_once_expect_error("schema_changes: true\n", Duration::from_secs(30))
        .await;
    assert!(
        err.to_string().contains("pgcdc install-ddl-capture"),
        "{err}"
    );
    if major.is_none() {
        // As an operator runs it: the SQL for a DBA, then the install itself.
        let (_, file) = h.write_configs("schema_changes: true\n");
        let dir = file.parent().unwrap().join("connectors");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(&file, dir.join("c.yaml")).unwrap();
        let cli = |args: &[&str]| {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgcdc"))
                .arg("install-ddl-capture")
                .arg("--connectors-dir")
                .arg(&dir)
                .args(args)
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let sql = cli(&["--print", &h.name]);
        assert!(sql.contains("CREATE EVENT TRIGGER"), "{sql}");
        let said = cli(&[&h.name]);
        assert!(
            said.contains(&format!("DDL capture installed in database {}", h.db)),
            "{said}"
        );
    } else {
        let db = pgcdc::admin::install_ddl_capture(&conn).await.unwrap();
        assert_eq!(db, h.db);
    }

    let run = h.start("schema_changes: true\n").await;
    h.sql("INSERT INTO t VALUES (1, 1)").await;
    h.sql("ALTER TABLE t ADD COLUMN label text DEFAULT 'x'")
        .await;
    h.sql("INSERT INTO t VALUES (2, 2, 'y')").await;
    let rows = h.read("t", 2, Duration::from_secs(60)).await;
    assert_eq!(rows[1].value["after"]["label"], "y");
    let events = read_topic(
        &h.stack,
        &format!("{}.schema_changes", h.prefix),
        1,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0].value;
    assert_eq!(events[0].key, json!({"databaseName": h.db}));
    assert_eq!(e["tag"], "ALTER TABLE");
    assert!(
        e["ddl"].as_str().unwrap().contains("ADD COLUMN label"),
        "{e}"
    );
    let change = &e["tableChanges"][0];
    assert_eq!(change["id"], "public.t");
    assert_eq!(change["topic"], h.topic("t"));
    let latest = get_json(&format!(
        "{}/subjects/{}-value/versions/latest",
        h.stack.registry_url,
        h.topic("t")
    ))
    .await;
    assert_eq!(change["value_schema_id"], latest["id"], "{e}");
    assert_eq!(change["value_schema_version"], latest["version"], "{e}");
    assert!(latest["schema"].as_str().unwrap().contains("\"label\""));
    // The event sits in the DDL's place: after row 1, before row 2.
    let lsn = |v: &serde_json::Value| v["source"]["lsn"].as_i64().unwrap();
    assert!(
        lsn(&rows[0].value) < lsn(e) && lsn(e) < lsn(&rows[1].value),
        "{e} {rows:?}"
    );

    // A DDL to a shape the subject's compatibility refuses stops the connector at the DDL.
    let subject = format!("{}-value", h.topic("t"));
    let put = reqwest::Client::new()
        .put(format!("{}/config/{subject}", h.stack.registry_url))
        .header("Content-Type", "application/vnd.schemaregistry.v1+json")
        .body(r#"{"compatibility": "BACKWARD"}"#)
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "PUT /config: {}", put.status());
    h.sql("ALTER TABLE t ALTER COLUMN n TYPE text").await;
    let err = run.expect_error(Duration::from_secs(60)).await;
    let msg = err.to_string();
    assert!(!err.is_transient(), "{msg}");
    assert!(
        msg.contains("ALTER TABLE t ALTER COLUMN n TYPE text") && msg.contains("refuses"),
        "{msg}"
    );
    assert!(
        err.next_step().contains(&format!("PUT /config/{subject}")),
        "{}",
        err.next_step()
    );
    h.drop_slot().await;
}
