//! A wrong setting never destroys anything: a replication slot pgcdc did not create is never
//! dropped (in use or not), and a schema registry that is down at the first start leaves no
//! slot behind to be dropped and recreated by the retries.

use std::time::{Duration, Instant};

use crate::harness::Harness;

const SCHEMA: &str = "CREATE TABLE t (id int PRIMARY KEY, v text);
                      CREATE PUBLICATION other_pub FOR TABLE t;";

async fn slot_position(h: &Harness) -> Option<(String, bool)> {
    let c = h.stack.pg_connect("postgres").await;
    c.query_opt(
        "SELECT confirmed_flush_lsn::text, active FROM pg_replication_slots WHERE slot_name = $1",
        &[&h.slot()],
    )
    .await
    .unwrap()
    .map(|r| (r.get(0), r.get(1)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_consumers_slot_is_never_dropped() {
    let h = Harness::new("foreignslot", SCHEMA).await;
    let c = h.client().await;
    c.execute(
        "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
        &[&h.slot()],
    )
    .await
    .unwrap();
    h.sql("INSERT INTO t VALUES (1, 'unread by the other consumer')")
        .await;
    let before = slot_position(&h).await.expect("the slot exists");

    // Inactive, with a position: pgcdc refuses to drop it for an initial snapshot.
    let err = h.run_once_expect_error("", Duration::from_secs(60)).await;
    let msg = err.to_string();
    assert!(!err.is_transient(), "{msg}");
    assert!(
        msg.contains(&h.slot()) && msg.contains("inactive") && msg.contains("snapshot.mode: never"),
        "{msg}"
    );
    assert_eq!(
        slot_position(&h).await,
        Some(before.clone()),
        "the slot is untouched"
    );

    // `pgcdc validate` says the same before anything runs.
    let (daemon_file, conn_file) = h.write_configs("");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_pgcdc"))
        .arg("--config")
        .arg(&daemon_file)
        .arg("validate")
        .arg(&conn_file)
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("has no record of creating it") && text.contains(&h.slot()),
        "{text}"
    );

    // Active (pg_recvlogical streams from it): refused too, and the slot survives the
    // consumer's disconnect.
    // Debian's postgresql-client (installed by dev/stack) ships it.
    let mut recv = tokio::process::Command::new("pg_recvlogical")
        .args(["-h", &h.stack.pg_host, "-p", &h.stack.pg_port.to_string()])
        .args(["-U", &h.stack.pg_user, "-d", &h.db, "--slot", &h.slot()])
        .args([
            "--start",
            "-o",
            "proto_version=1",
            "-o",
            "publication_names=other_pub",
        ])
        .args(["-f", "/dev/null", "--no-loop"])
        .kill_on_drop(true)
        .spawn()
        .expect("start pg_recvlogical");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !slot_position(&h).await.is_some_and(|(_, active)| active) {
        assert!(
            Instant::now() < deadline,
            "pg_recvlogical did not take the slot"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let err = h.run_once_expect_error("", Duration::from_secs(60)).await;
    let msg = err.to_string();
    assert!(msg.contains("active pid"), "{msg}");
    recv.start_kill().unwrap();
    recv.wait().await.unwrap();
    let err = h.run_once_expect_error("", Duration::from_secs(60)).await;
    assert!(
        err.to_string().contains("has no record of creating it"),
        "{err}"
    );
    assert!(slot_position(&h).await.is_some(), "the slot still exists");

    // Used as it is when told to: snapshot.mode never streams from the slot's position, so
    // the change the other consumer had not read arrives (through the consumer's publication,
    // which predates the slot).
    let run = h
        .start("publication: other_pub\nsnapshot:\n  mode: never\n")
        .await;
    let recs = h.read("t", 1, Duration::from_secs(60)).await;
    assert_eq!(recs[0].value["after"]["v"], "unread by the other consumer");
    run.stop().await.unwrap();
    h.drop_slot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_down_at_first_start_creates_no_slot() {
    let mut h = Harness::new("regdown", "CREATE TABLE t (id int PRIMARY KEY);").await;
    h.stack.registry_url = "http://127.0.0.1:9/apis/ccompat/v7".into();
    let err = h.run_once_expect_error("", Duration::from_secs(90)).await;
    assert!(
        err.is_transient(),
        "a registry that is down is worth retrying: {err}"
    );
    assert!(err.to_string().contains("127.0.0.1:9"), "{err}");
    assert_eq!(
        slot_position(&h).await,
        None,
        "no slot before the registry answers"
    );
}

/// A librdkafka property out of its range is the operator's to fix: one permanent error that
/// names the YAML key, before any slot exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_librdkafka_property_is_a_permanent_error_naming_the_key() {
    let h = Harness::new("badrdkafka", "CREATE TABLE t (id int PRIMARY KEY);").await;
    let (mut daemon, conn) = h.configs("");
    daemon
        .kafka
        .librdkafka
        .insert("socket.timeout.ms".into(), "5".into());
    let (_stop, rx) = tokio::sync::watch::channel(false);
    let err = tokio::time::timeout(
        Duration::from_secs(60),
        pgcdc::pipeline::run(&daemon, &conn, rx),
    )
    .await
    .expect("answers in time")
    .expect_err("must fail");
    let msg = err.to_string();
    assert!(!err.is_transient(), "{msg}");
    assert!(msg.contains("kafka.librdkafka.socket.timeout.ms"), "{msg}");
    assert_eq!(slot_position(&h).await, None);
    assert!(pgcdc::kafka::check_config(&daemon.kafka).is_err());
}

/// A captured table the publication lacks would be snapshotted and then never streamed: a
/// publication someone else made gets the statement to run, one pgcdc made gets the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_missing_from_the_publication_is_never_lost_silently() {
    let h = Harness::new(
        "pubgap",
        "CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE b (id int PRIMARY KEY);
         CREATE PUBLICATION theirs FOR TABLE a;",
    )
    .await;
    let include = "tables:\n  include: [public.a, public.b]\n";
    let err = h
        .run_once_expect_error(
            &format!("publication: theirs\n{include}"),
            Duration::from_secs(60),
        )
        .await;
    let msg = err.to_string();
    assert!(!err.is_transient(), "{msg}");
    assert!(
        msg.contains("ALTER PUBLICATION \"theirs\" ADD TABLE public.b"),
        "{msg}"
    );
    assert_eq!(slot_position(&h).await, None, "nothing started");

    // pgcdc's own publication, made for table a, gets b when the filter grows.
    let run = h.start("tables:\n  include: [public.a]\n").await;
    run.stop().await.unwrap();
    let run = h.start(include).await;
    h.sql("INSERT INTO b VALUES (42)").await;
    let recs = h.read("b", 1, Duration::from_secs(60)).await;
    assert_eq!(recs[0].value["after"]["id"], 42);
    run.stop().await.unwrap();
    h.drop_slot().await;
}

/// `tables.include` takes the quoted SQL form pgcdc's hints print, as well as the raw one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quoted_table_names_are_accepted() {
    let h = Harness::new(
        "quotedname",
        "CREATE SCHEMA \"Sales & Co\"; CREATE TABLE \"Sales & Co\".\"Order Lines\" (id int PRIMARY KEY);",
    )
    .await;
    let run = h
        .start("tables:\n  include: ['\"Sales & Co\".\"Order Lines\"']\n")
        .await;
    h.sql("INSERT INTO \"Sales & Co\".\"Order Lines\" VALUES (1)")
        .await;
    let topic = format!("{}.Sales___Co.Order_Lines", h.prefix);
    let recs = crate::harness::read_topic(&h.stack, &topic, 1, Duration::from_secs(60)).await;
    assert_eq!(recs[0].value["source"]["table"], "Order Lines");
    run.stop().await.unwrap();
    h.drop_slot().await;
}

/// One exit-code convention: 2 for a daemon or connector file that does not validate, with
/// the file and field named; `kafka.linger: 10h` is such a mistake, not a retry loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_mistakes_exit_2_naming_the_field() {
    let h = Harness::new("exitcodes", "CREATE TABLE t (id int PRIMARY KEY);").await;
    let (daemon_file, conn_file) = h.write_configs("toast: full\n");
    let validate = |d: &std::path::Path, c: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_pgcdc"))
            .arg("--config")
            .arg(d)
            .arg("validate")
            .arg(c)
            .output()
            .unwrap()
    };
    let out = validate(&daemon_file, &conn_file);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("connector.yaml") && text.contains("toast"),
        "{text}"
    );

    let (_, conn_file) = h.write_configs("");
    std::fs::write(
        &daemon_file,
        h.daemon_yaml()
            .replace("kafka:\n", "kafka:\n  linger: 10h\n"),
    )
    .unwrap();
    let out = validate(&daemon_file, &conn_file);
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("kafka.linger") && text.contains("900000"),
        "{text}"
    );
}
