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
    assert!(pgcdc::kafka::check_config(&daemon.kafka, "t").is_err());
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

/// Kafka unreachable at start: pgcdc's own line names the brokers (not only librdkafka's
/// repeated complaints, which are rate-limited), and SIGTERM is honoured within
/// `shutdown_timeout` although the connector never got past its start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_down_at_start_is_reported_and_sigterm_still_stops() {
    let h = Harness::new("kafkadown", "CREATE TABLE t (id int PRIMARY KEY);").await;
    let (daemon_file, conn_file) = h.write_configs("");
    let yaml = h
        .daemon_yaml()
        .replace(&h.stack.kafka_bootstrap, "127.0.0.1:9")
        + "shutdown_timeout: 2s\n";
    std::fs::write(&daemon_file, yaml).unwrap();
    let mut child = h.spawn_daemon(&daemon_file, &conn_file, "run.log");
    let log = h.dir.join("run.log");
    let deadline = Instant::now() + Duration::from_secs(60);
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("no answer to a metadata request") {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "no pgcdc line about Kafka:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(text.contains("127.0.0.1:9"), "{text}");
    let refused = text.matches("Connection refused").count();
    assert!(
        refused <= 4,
        "librdkafka's repeats are not rate-limited ({refused} lines):\n{text}"
    );
    assert_eq!(slot_position(&h).await, None, "no slot while Kafka is down");

    let pid = child.id().expect("running") as i32;
    assert_eq!(send_sigterm(pid), 0);
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("pgcdc must honour SIGTERM while Kafka is down")
        .unwrap();
    assert!(status.code().is_some(), "{status:?}");
}

/// SIGTERM via the `kill` command (no libc dependency in the tests).
fn send_sigterm(pid: i32) -> i32 {
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .map(|s| s.code().unwrap_or(1))
        .unwrap_or(1)
}

/// A captured table someone removes from the publication while pgcdc runs is reported:
/// the connector stops with the statement that puts it back (its changes are no longer sent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_removed_from_the_publication_while_running_is_reported() {
    let h = Harness::new(
        "pubdrop",
        "CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE b (id int PRIMARY KEY);
         CREATE PUBLICATION theirs FOR TABLE a, b;",
    )
    .await;
    let run = h
        .start("publication: theirs\ntables:\n  include: [public.a, public.b]\n")
        .await;
    h.sql("ALTER PUBLICATION theirs DROP TABLE b").await;
    let err = run.expect_error(Duration::from_secs(60)).await;
    let msg = err.to_string();
    assert!(!err.is_transient(), "{msg}");
    assert!(
        msg.contains("ALTER PUBLICATION \"theirs\" ADD TABLE public.b"),
        "{msg}"
    );
    h.drop_slot().await;
}

/// `validate` notes the out-of-line columns of a table without FULL identity with the
/// ALTER TABLE to paste, and warns about unconstrained numeric columns under `precise`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_notes_toastable_columns_and_unconstrained_numerics() {
    let h = Harness::new(
        "valnotes",
        "CREATE TABLE \"Order Lines\" (id int PRIMARY KEY, qty int, note text, price numeric, doc jsonb,
                                       due date NOT NULL, name text NOT NULL);",
    )
    .await;
    let (code, text) = h.validate("");
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("note: connector")
            && text.contains("columns note, price, doc, name can be stored out of line")
            && text.contains("ALTER TABLE public.\"Order Lines\" REPLICA IDENTITY FULL"),
        "{text}"
    );
    assert!(
        text.contains("numeric columns price have no precision and scale")
            && text.contains("numeric_mode: string"),
        "{text}"
    ); // A NOT NULL date can hold ±infinity: optional; a NOT NULL text is required.
    assert!(
        text.contains("table public.\"Order Lines\": NOT NULL columns due are optional fields"),
        "{text}"
    );
}

/// The database system identifier and current timeline of the stack's cluster `h` is on.
async fn identity(h: &Harness) -> (String, u32) {
    let c = h.client().await;
    let r = c
        .query_one(
            "SELECT (SELECT system_identifier::text FROM pg_control_system()),
                    (SELECT timeline_id FROM pg_control_checkpoint())::int8",
            &[],
        )
        .await
        .unwrap();
    (r.get(0), r.get::<_, i64>(1) as u32)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_from_another_cluster_is_refused_naming_both() {
    const TABLE: &str = "CREATE TABLE t (id int PRIMARY KEY, v text);";
    let h = Harness::new("identity", TABLE).await;
    let run = h.start("").await;
    h.sql("INSERT INTO t VALUES (1, 'a')").await;
    h.read("t", 1, Duration::from_secs(60)).await;
    run.stop().await.unwrap();

    // The checkpoint records the cluster it was read from.
    let (daemon, _) = h.configs("");
    let name = h.name.clone();
    let ck =
        tokio::task::spawn_blocking(move || pgcdc::kafka::offsets::read_last(&daemon.kafka, &name))
            .await
            .unwrap()
            .unwrap()
            .expect("a checkpoint");
    let (here, tli) = identity(&h).await;
    assert_eq!(ck.system_id.as_deref(), Some(here.as_str()));
    assert_eq!(ck.timeline, Some(tli));

    // The same connector (name, offsets topic) pointed at another cluster: the stack's
    // PostgreSQL 16, with a database of the same shape.
    let other = Harness::on_major(16, "identity16", TABLE).await;
    let moved = Harness {
        stack: other.stack.clone(),
        db: other.db.clone(),
        ..h.clone()
    };
    let (there, _) = identity(&moved).await;
    assert_ne!(here, there, "two clusters of the stack share an identifier");
    let err = moved
        .run_once_expect_error("", Duration::from_secs(60))
        .await;
    let msg = err.to_string();
    assert!(!err.is_transient(), "{msg}");
    assert!(
        msg.contains(&format!("is database system {there}"))
            && msg.contains(&format!("reading database system {here}"))
            && msg.contains(&format!(":{}", moved.stack.pg_port))
            && msg.contains("tombstone"),
        "{msg}"
    );
    // Nothing was created on the other cluster.
    assert_eq!(
        slot_position(&moved).await,
        None,
        "no slot on the other cluster"
    );
    h.drop_slot().await;
}
