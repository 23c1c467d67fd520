//! pgcdc against the stack's SASL_SSL listener (SCRAM-SHA-512, TLS, the standard authorizer
//! with `allow.everyone.if.no.acl.found=false`), as the SCRAM user `pgcdc_app` with only the
//! ACLs README's "Secured Kafka" lists. Each ACL left out gives one line naming it, and
//! nothing is acknowledged: the slot is not created before the offsets topic takes writes.

use std::time::Duration;

use crate::common::{dev_stack_args, stack_port};
use crate::harness::Harness;

const PRINCIPAL: &str = "User:pgcdc_app";

/// Exactly `acls` (TYPE:NAME:PATTERN:OPERATION) for the test principal.
fn set_acls(acls: &[String]) {
    let mut args = vec!["kafka-admin", "acl", "set", PRINCIPAL];
    args.extend(acls.iter().map(String::as_str));
    dev_stack_args(&args);
}

async fn slot_exists(h: &Harness) -> bool {
    let n: i64 = h
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1",
            &[&h.slot()],
        )
        .await
        .unwrap()
        .get(0);
    n > 0
}

#[tokio::test]
async fn only_the_listed_acls_are_needed_and_each_missing_one_is_named() {
    let h = Harness::new(
        "secure",
        "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a');",
    )
    .await;
    let (mut daemon, conn) = h.configs("tables:\n  include: [public.t]\n");
    daemon.kafka.bootstrap_servers = format!("127.0.0.1:{}", stack_port("kafka-secure"));
    for (k, v) in [
        ("security.protocol", "SASL_SSL".to_owned()),
        ("sasl.mechanisms", "SCRAM-SHA-512".to_owned()),
        ("sasl.username", "pgcdc_app".to_owned()),
        ("sasl.password", "app-secret".to_owned()),
        (
            "ssl.ca.location",
            format!("{}/.stack/tls/root.crt", env!("CARGO_MANIFEST_DIR")),
        ),
    ] {
        daemon.kafka.librdkafka.insert(k.to_owned(), v);
    }
    let (name, offsets, prefix) = (&h.name, &h.offsets_topic, &h.prefix);
    let table_topic = h.topic("t");
    // README's list, for this connector.
    let acl = |s: &str| s.to_owned();
    let txn_write = format!("transactional_id:pgcdc-{name}:literal:write");
    let txn_describe = format!("transactional_id:pgcdc-{name}:literal:describe");
    let offsets_read = format!("topic:{offsets}:literal:read");
    let offsets_write = format!("topic:{offsets}:literal:write");
    let offsets_create = format!("topic:{offsets}:literal:create");
    let topics_write = format!("topic:{prefix}.:prefixed:write");
    let topics_create = format!("topic:{prefix}.:prefixed:create");
    let group_describe = format!("group:pgcdc-checkpoint-reader-{name}:literal:describe");
    let all = [
        &txn_write,
        &txn_describe,
        &offsets_read,
        &offsets_write,
        &offsets_create,
        &topics_write,
        &topics_create,
        &group_describe,
    ]
    .map(|s| acl(s));
    let run_without_in = |missing: &str, exactly_once: bool| {
        let acls: Vec<String> = all.iter().filter(|a| *a != missing).cloned().collect();
        set_acls(&acls);
        let (mut daemon, conn) = (daemon.clone(), conn.clone());
        daemon.kafka.exactly_once = exactly_once;
        async move {
            let (_stop, rx) = tokio::sync::watch::channel(false);
            let e = tokio::time::timeout(
                Duration::from_secs(90),
                pgcdc::pipeline::run(&daemon, &conn, rx),
            )
            .await
            .expect("the connector should stop within 90 s")
            .expect_err("the connector must fail without the ACL");
            assert!(!e.is_transient(), "{e} must be permanent");
            assert_eq!(e.code(), pgcdc::error::Code::KafkaAuthorization, "{e}");
            assert!(!e.to_string().contains('\n'), "one line: {e}");
            e.to_string()
        }
    };
    let run_without = |missing: &str| run_without_in(missing, true);

    // In the order pgcdc needs them; the first three stop before a slot exists. The claim
    // of the transactional id and the offsets topic's creation run together (a refused
    // claim is the error said): without Create first, while the topic does not exist yet
    // (the run without the claim creates it).
    let m = run_without(&offsets_create).await;
    assert!(
        m.contains(&format!("grant {PRINCIPAL} Create on Topic {offsets}")),
        "{m}"
    );
    let m = run_without(&txn_write).await;
    assert!(
        m.contains(&format!(
            "grant {PRINCIPAL} Write and Describe on TransactionalId pgcdc-{name}"
        )),
        "{m}"
    );
    let m = run_without(&offsets_write).await;
    assert!(
        m.contains(&format!(
            "grant {PRINCIPAL} Write on each Topic of the transaction ({offsets})"
        )),
        "{m}"
    );
    assert!(
        !slot_exists(&h).await,
        "no slot before the claim can be written"
    );

    let m = run_without(&topics_create).await;
    assert!(
        m.contains(&format!("grant {PRINCIPAL} Create on Topic {table_topic}")),
        "{m}"
    );
    let m = run_without(&topics_write).await;
    assert!(
        m.contains(&format!("grant {PRINCIPAL} Write on Topic {table_topic}"))
            || m.contains(&format!(
                "grant {PRINCIPAL} Write on each Topic of the transaction ({table_topic}"
            )),
        "{m}"
    );
    // Without transactions the refusal comes in the delivery reports: the same kind, the
    // same line.
    let m = run_without_in(&topics_write, false).await;
    assert!(
        m.contains(&format!("grant {PRINCIPAL} Write on Topic {table_topic}")),
        "{m}"
    );
    // The offsets topic holds the slot claim now: reading it needs Read and the group.
    let m = run_without(&offsets_read).await;
    assert!(
        m.contains(&format!(
            "grant {PRINCIPAL} Read and Describe on Topic {offsets}"
        )),
        "{m}"
    );
    let m = run_without(&group_describe).await;
    assert!(
        m.contains(&format!(
            "grant {PRINCIPAL} Describe on Group pgcdc-checkpoint-reader-{name}"
        )),
        "{m}"
    );

    // The topics exist now: without any Create ACL pgcdc snapshots and streams.
    set_acls(
        &[
            &txn_write,
            &txn_describe,
            &offsets_read,
            &offsets_write,
            &topics_write,
            &group_describe,
        ]
        .map(|s| acl(s)),
    );
    let (stop, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move { pgcdc::pipeline::run(&daemon, &conn, rx).await });
    h.wait_slot(true, || !task.is_finished()).await;
    h.sql("INSERT INTO t VALUES (2, 'b')").await;
    let records = h.read("t", 2, Duration::from_secs(60)).await;
    let mut ids: Vec<i64> = records
        .iter()
        .map(|r| r.value["after"]["id"].as_i64().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, [1, 2], "each row once: {records:?}");
    stop.send(true).unwrap();
    task.await.unwrap().unwrap();
    set_acls(&[]);
}
