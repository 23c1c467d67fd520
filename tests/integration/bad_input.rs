//! Issue 14.4's catalogue of operator mistakes (README, "Bad input"): the cases no other
//! test covers. Each gets one line naming the thing and the fix, the right exit code or
//! retry, and nothing acknowledged (no slot position moves) that was not delivered.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;
use serde_json::json;

use crate::harness::Harness;

const TABLE: &str = "CREATE TABLE t (id int PRIMARY KEY);";

pub(crate) async fn create_topic(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let mut nt = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    for (k, v) in configs {
        nt = nt.set(k, v);
    }
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for r in admin.create_topics(&[nt], &opts).await.unwrap() {
        r.unwrap();
    }
}

/// `pgcdc <args>` with the daemon config: exit code and standard error.
fn pgcdc(daemon: &std::path::Path, args: &[&std::path::Path], cmd: &str) -> (Option<i32>, String) {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_pgcdc"));
    c.arg("--config").arg(daemon).arg(cmd);
    for a in args {
        c.arg(a);
    }
    let out = c.output().unwrap();
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

async fn slot_exists(h: &Harness) -> bool {
    let c = h.stack.pg_connect("postgres").await;
    !c.query(
        "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1",
        &[&h.slot()],
    )
    .await
    .unwrap()
    .is_empty()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_host_is_named_and_retried() {
    let mut h = Harness::new("badhost", TABLE).await;
    h.stack.pg_host = "no-such-host.invalid".into();
    let e = h.run_once_expect_error("", Duration::from_secs(120)).await;
    let msg = e.to_string();
    assert_eq!(e.code().as_str(), "postgres.connect", "{msg}");
    assert!(
        e.is_transient(),
        "a name that does not resolve may resolve later: {msg}"
    );
    assert!(msg.contains("no-such-host.invalid"), "{msg}");
    assert!(!msg.contains('\n'), "one line: {msg}");
}

/// Creates the connector's slot in `db` with `plugin` as another consumer would, runs the
/// connector once and returns its (permanent) refusal; the slot is still there, then dropped.
async fn refusal_for_foreign_slot(h: &Harness, db: &str, plugin: &str) -> String {
    let c = h.stack.pg_connect(db).await;
    c.execute(
        "SELECT pg_create_logical_replication_slot($1, $2)",
        &[&h.slot(), &plugin],
    )
    .await
    .unwrap();
    let e = h.run_once_expect_error("", Duration::from_secs(60)).await;
    let msg = e.to_string();
    assert!(!e.is_transient(), "{msg}");
    assert!(msg.contains(&h.slot()), "{msg}");
    assert!(
        slot_exists(h).await,
        "another consumer's slot is never dropped"
    );
    c.execute("SELECT pg_drop_replication_slot($1)", &[&h.slot()])
        .await
        .unwrap();
    msg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_of_another_plugin_or_database_is_refused_and_kept() {
    let h = Harness::new("otherplugin", TABLE).await;
    let msg = refusal_for_foreign_slot(&h, &h.db, "test_decoding").await;
    assert!(
        msg.contains("test_decoding") && msg.contains("pgoutput"),
        "{msg}"
    );
    // The same name taken by a pgoutput slot in another database.
    let other = h.stack.fresh_database("otherdb").await;
    let _drop_other = crate::harness::DropDatabase::on(&h.stack, &other);
    let msg = refusal_for_foreign_slot(&h, &other, "pgoutput").await;
    assert!(msg.contains(&other), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offsets_topic_that_is_not_compacted_is_refused() {
    let mut h = Harness::new("notcompact", TABLE).await;
    h.offsets_topic = format!("{}.deleting", h.offsets_topic);
    create_topic(
        &h.stack.kafka_bootstrap,
        &h.offsets_topic,
        1,
        &[("cleanup.policy", "delete")],
    )
    .await;
    let e = h.run_once_expect_error("", Duration::from_secs(60)).await;
    let msg = e.to_string();
    assert!(!e.is_transient(), "{msg}");
    assert_eq!(e.code().as_str(), "kafka", "{msg}");
    assert!(
        msg.contains(&h.offsets_topic)
            && msg.contains("cleanup.policy=delete")
            && msg.contains("--add-config cleanup.policy=compact"),
        "{msg}"
    );
    assert!(!slot_exists(&h).await, "refused before a slot is created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_with_other_partitions_is_used_as_it_is_and_said_once() {
    let h = Harness::new("parts", TABLE).await;
    create_topic(&h.stack.kafka_bootstrap, &h.topic("t"), 3, &[]).await;
    let (daemon, conn) = h.write_configs("");
    let mut child = h.spawn_daemon(&daemon, &conn, "run.log");
    h.wait_slot(true, || true).await;
    h.sql("INSERT INTO t SELECT generate_series(1, 30)").await;
    let recs = h.read("t", 30, Duration::from_secs(60)).await;
    assert_eq!(recs.len(), 30);
    child.kill().await.unwrap();
    let log = std::fs::read_to_string(h.dir.join("run.log")).unwrap();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("exists with 3 partitions"))
        .collect();
    assert_eq!(lines.len(), 1, "said once: {log}");
    assert!(
        lines[0].contains(&h.topic("t")) && lines[0].contains("not the 1"),
        "{}",
        lines[0]
    );
    h.drop_slot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_file_mistakes_exit_2_naming_file_and_field() {
    let h = Harness::new("cfgbad", TABLE).await;
    let (daemon, conn) = h.write_configs("");

    // Two connector files with one name.
    let twin = h.dir.join("twin.yaml");
    std::fs::write(&twin, std::fs::read_to_string(&conn).unwrap()).unwrap();
    let (code, out) = pgcdc(&daemon, &[&conn, &twin], "run");
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("twin.yaml") && out.contains(&h.name) && out.contains("unique"),
        "{out}"
    );

    // An unknown key, with the file, the path and the line.
    let typo = h.dir.join("typo.yaml");
    std::fs::write(
        &typo,
        h.connector_yaml("").replace("  dbname:", "  dbnmae:"),
    )
    .unwrap();
    let (code, out) = pgcdc(&daemon, &[&typo], "validate");
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("typo.yaml") && out.contains("postgres.dbnmae") && out.contains("line"),
        "{out}"
    );

    // A variable that is not set.
    let var = h.dir.join("var.yaml");
    std::fs::write(
        &var,
        h.connector_yaml("").replace(
            &format!("  dbname: {}", h.db),
            "  dbname: ${PGCDC_TEST_UNSET_DB}",
        ),
    )
    .unwrap();
    let (code, out) = pgcdc(&daemon, &[&var], "validate");
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("var.yaml")
            && out.contains("postgres.dbname")
            && out.contains("PGCDC_TEST_UNSET_DB"),
        "{out}"
    );

    // A duration that is not one.
    std::fs::write(
        &daemon,
        h.daemon_yaml()
            .replace("max_interval: 100ms", "max_interval: soon"),
    )
    .unwrap();
    let (code, out) = pgcdc(&daemon, &[&conn], "validate");
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("pgcdc.yaml") && out.contains("kafka.transaction.max_interval"),
        "{out}"
    );
    assert!(!slot_exists(&h).await, "nothing started");
}

/// A scratch server of `dev/stack` that breaks one prerequisite, and a harness on it.
async fn on_scratch(name: &str, label: &str) -> Harness {
    crate::common::dev_stack_args(&["scratch-up", name]);
    let scratch = crate::common::Stack {
        pg_port: crate::common::stack_port(&format!("scratch-{name}")),
        ..crate::common::Stack::get()
    };
    Harness::on_stack(scratch, label, TABLE).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_level_replica_is_refused_with_the_setting_to_change() {
    let h = on_scratch("replica", "walreplica").await;
    let e = h.run_once_expect_error("", Duration::from_secs(60)).await;
    let msg = e.to_string();
    assert!(!e.is_transient(), "{msg}");
    assert!(
        msg.contains("wal_level is replica") && msg.contains("wal_level = logical"),
        "{msg}"
    );
    crate::common::dev_stack_args(&["scratch-down", "replica"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_replication_slots_are_named_and_retried() {
    let h = on_scratch("fewslots", "fewslots").await;
    let c = h.stack.pg_connect(&h.db).await;
    c.execute(
        "SELECT pg_create_logical_replication_slot('someone_else', 'pgoutput')",
        &[],
    )
    .await
    .unwrap();
    let e = h.run_once_expect_error("", Duration::from_secs(60)).await;
    let msg = e.to_string();
    assert!(e.is_transient(), "dropping a slot frees one: {msg}");
    assert_eq!(e.code().as_str(), "postgres.slot", "{msg}");
    assert!(
        msg.contains("all replication slots are in use") && msg.contains("max_replication_slots"),
        "{msg}"
    );
    assert!(!slot_exists(&h).await);
    crate::common::dev_stack_args(&["scratch-down", "fewslots"]);
}

/// `run`, not only `validate`: a user without REPLICATION, then a captured table with
/// REPLICA IDENTITY NOTHING, each refused at start with the statement that fixes it and no
/// slot created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_refuses_a_role_without_replication_and_replica_identity_nothing_before_any_slot() {
    let mut h = Harness::new(
        "runrefuses",
        "CREATE TABLE good (id int PRIMARY KEY);
         CREATE TABLE nothing (id int PRIMARY KEY);
         ALTER TABLE nothing REPLICA IDENTITY NOTHING;
         GRANT SELECT ON ALL TABLES IN SCHEMA public TO pgcdc_norep;",
    )
    .await;
    h.postgres_auth = "  user: pgcdc_norep\n  sslmode: disable\n".into();
    refused_at_start(
        &h,
        "tables:\n  include: [public.good]\n",
        &[
            "lacks the REPLICATION attribute",
            "ALTER ROLE \"pgcdc_norep\" WITH REPLICATION",
        ],
    )
    .await;
    h.postgres_auth = format!("  user: {}\n  sslmode: disable\n", h.stack.pg_user);
    refused_at_start(
        &h,
        "tables:\n  include: [public.good, public.nothing]\n",
        &[
            "table public.nothing has REPLICA IDENTITY NOTHING",
            "ALTER TABLE public.nothing REPLICA IDENTITY DEFAULT",
        ],
    )
    .await;
}

/// One run with `extra` stops at its preflight, permanently, saying each of `says`, with no
/// slot created.
async fn refused_at_start(h: &Harness, extra: &str, says: &[&str]) {
    let e = h
        .run_once_expect_error(extra, Duration::from_secs(60))
        .await;
    let msg = e.to_string();
    assert!(!e.is_transient(), "{msg}");
    assert_eq!(e.code().as_str(), "postgres.preflight", "{msg}");
    for s in says {
        assert!(msg.contains(s), "missing {s:?} in: {msg}");
    }
    assert!(!slot_exists(h).await, "no slot before the checks pass");
}

/// A captured table dropped while pgcdc streams: its last changes arrive, the other tables
/// go on streaming past the publication check (every 10 s), and a restart that still names
/// it in `tables.include` is refused with the table named, nothing acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_dropped_while_captured_delivers_its_last_changes_and_the_rest_streams_on() {
    let h = Harness::new(
        "droplive",
        "CREATE TABLE gone (id int PRIMARY KEY, v text); CREATE TABLE stays (id int PRIMARY KEY);",
    )
    .await;
    let tables = "tables:\n  include: [public.gone, public.stays]\nsnapshot:\n  mode: never\n";
    let run = h.start(tables).await;
    h.sql("INSERT INTO gone VALUES (1, 'first'), (2, 'last'); INSERT INTO stays VALUES (1);")
        .await;
    h.sql("DROP TABLE gone;").await;
    let gone = h.read("gone", 2, Duration::from_secs(60)).await;
    assert_eq!(gone.len(), 2, "{gone:#?}");
    assert_eq!(gone[1].value["after"], json!({"id": 2, "v": "last"}));
    // Past the running connector's publication check.
    tokio::time::sleep(Duration::from_secs(12)).await;
    h.sql("INSERT INTO stays VALUES (2);").await;
    let stays = h.read("stays", 2, Duration::from_secs(60)).await;
    assert_eq!(
        stays
            .iter()
            .map(|r| r.key["id"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        vec![1, 2]
    );
    run.stop().await.unwrap();

    let c = h.stack.pg_connect("postgres").await;
    let confirmed = || async {
        c.query_one(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&h.slot()],
        )
        .await
        .unwrap()
        .get::<_, String>(0)
    };
    let before = confirmed().await;
    let e = h
        .run_once_expect_error(tables, Duration::from_secs(60))
        .await;
    let msg = e.to_string();
    assert!(!e.is_transient(), "{msg}");
    assert!(
        msg.contains("public.gone") && msg.contains("does not exist"),
        "{msg}"
    );
    assert_eq!(
        confirmed().await,
        before,
        "nothing acknowledged by the refused run"
    );
    h.drop_slot().await;
}
