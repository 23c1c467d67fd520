use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use super::env::expand;
use super::*;

fn env(k: &str) -> Option<String> {
    match k {
        "PGHOST" => Some("db.internal".into()),
        "PGPORT" => Some("6543".into()),
        _ => None,
    }
}

const CONNECTOR: &str = "
name: orders
postgres:
  host: ${PGHOST}
  port: ${PGPORT}
  user: cdc
  password: ${PGPASSWORD:-hunter2}
  dbname: shop
topic_prefix: shop
tables:
  include: [public.orders]
key_columns:
  public.events: [id]
";

fn connector(text: &str) -> Result<ConnectorConfig, ConfigError> {
    let p = Path::new("connectors/orders.yaml");
    let c: ConnectorConfig = parse_str(p, text, &env)?;
    c.validate(p)?;
    Ok(c)
}

#[test]
fn parses_connector_with_env_and_defaults() {
    let c = connector(CONNECTOR).unwrap();
    assert_eq!(c.postgres.host, "db.internal");
    assert_eq!(c.postgres.port, 6543);
    assert_eq!(c.postgres.password, Some(Secret("hunter2".into())));
    assert_eq!(c.slot_name(), "pgcdc_orders");
    assert_eq!(c.numeric_mode, NumericMode::Precise);
    assert!(c.tombstones);
    assert!(c.captures("public", "orders"));
    assert!(!c.captures("public", "other"));
}

#[test]
fn password_is_not_printed() {
    let c = connector(CONNECTOR).unwrap();
    let dbg = format!("{c:?}");
    assert!(!dbg.contains("hunter2"), "{dbg}");
}

#[test]
fn unknown_key_names_file_and_path() {
    let text = CONNECTOR.replace("  dbname: shop", "  dbname: shop\n  hots: x");
    let e = connector(&text).unwrap_err().to_string();
    assert!(
        e.starts_with("connectors/orders.yaml: postgres.hots: unknown field `hots`"),
        "{e}"
    );
    assert!(e.contains("line 9"), "{e}");
}

#[test]
fn bad_enum_value_lists_allowed() {
    let text = format!("{CONNECTOR}numeric_mode: exact\n");
    let e = connector(&text).unwrap_err().to_string();
    assert!(e.contains("numeric_mode") && e.contains("precise"), "{e}");
}

#[test]
fn missing_env_var_is_reported_at_its_field() {
    let text = CONNECTOR.replace("${PGHOST}", "${NOPE_HOST}");
    let e = connector(&text).unwrap_err();
    assert_eq!(e.field, "postgres.host", "{e}");
    assert!(e.message.contains("NOPE_HOST is not set"), "{e}");
}

#[test]
fn env_in_comments_and_escapes() {
    assert_eq!(expand("a $${LITERAL} b", &env).unwrap(), "a ${LITERAL} b");
    assert_eq!(expand("$5 and ${PGPORT}$", &env).unwrap(), "$5 and 6543$");
    assert_eq!(expand("${UNSET:-d:e}", &env).unwrap(), "d:e");
    assert!(expand("${UNTERMINATED", &env).is_err());
    // Inside quoted strings and in the middle of plain values alike, a value is data.
    let p = Path::new("c.yaml");
    let v = "a \"b\" 'c' #d, e: f";
    let env = |k: &str| (k == "V").then(|| v.to_owned());
    let m: BTreeMap<String, String> = parse_str(
        p,
        "x: \"<${V}>\"\ny: '<${V}>'\nz: ${V} # c\nu: http://${V}/x\n",
        &env,
    )
    .unwrap();
    assert_eq!(m["x"], format!("<{v}>"));
    assert_eq!(m["y"], format!("<{v}>"));
    assert_eq!(m["z"], v);
    assert_eq!(m["u"], format!("http://{v}/x"));
    // In a flow sequence YAML reads `{` as a mapping: the value is quoted there.
    let l: BTreeMap<String, Vec<String>> = parse_str(p, "w: ['${V}', \"${V}\"]\n", &env).unwrap();
    assert_eq!(l["w"], [v, v]);
    // A comment is not a value: its variables need not be set.
    let text = format!("{CONNECTOR}# password: ${{UNSET_IN_COMMENT}}\n");
    connector(&text).unwrap();
}

#[test]
fn env_numbers_and_booleans_follow_the_field() {
    let p = Path::new("c.yaml");
    let env = |k: &str| match k {
        "PORT" => Some("6543".to_owned()),
        "NO" => Some("false".to_owned()),
        "BAD" => Some("65x".to_owned()),
        _ => None,
    };
    let base =
        "name: c\npostgres:\n  host: h\n  port: ${PORT}\n  user: u\n  dbname: d\ntopic_prefix: p\n";
    let c: ConnectorConfig = parse_str(p, &format!("{base}tombstones: ${{NO}}\n"), &env).unwrap();
    assert_eq!(c.postgres.port, 6543);
    assert!(!c.tombstones);
    let e = parse_str::<ConnectorConfig>(p, &base.replace("${PORT}", "${BAD}"), &env).unwrap_err();
    assert_eq!(e.field, "postgres.port");
    assert!(
        e.message.contains("\"65x\"") && e.message.contains("whole number"),
        "{e}"
    );
}

#[test]
fn env_values_are_data_not_yaml() {
    let p = Path::new("c.yaml");
    for pw in [
        "a #b",
        "x: y",
        "it's \"q\"",
        "*star",
        "&amp",
        "- dash",
        "1234",
        "007",
        "{}",
        "true",
        "~",
        "null",
        "",
    ] {
        let env = |k: &str| match k {
            "PW" => Some(pw.to_owned()),
            "PGPORT" => Some("6543".to_owned()),
            _ => None,
        };
        let text = "name: c\npostgres:\n  host: h\n  port: ${PGPORT}\n  user: u\n  dbname: d\n  password: ${PW}\ntopic_prefix: p\n";
        let c: ConnectorConfig = parse_str(p, text, &env).unwrap_or_else(|e| panic!("{pw}: {e}"));
        assert_eq!(c.postgres.password, Some(Secret(pw.into())), "{pw}");
        assert_eq!(c.postgres.port, 6543);
    }
}

#[test]
fn value_policies_parse_with_defaults() {
    let p = Path::new("c.yaml");
    let c: ConnectorConfig = parse_str(p, CONNECTOR, &env).unwrap();
    assert_eq!(c.toast, ToastMode::Fetch);
    assert_eq!(c.unrepresentable, Unrepresentable::Null);
    assert_eq!(
        c.unavailable_value_placeholder,
        DEFAULT_UNAVAILABLE_PLACEHOLDER
    );
    for (yaml, want) in [
        ("null", Unrepresentable::Null),
        ("\"null\"", Unrepresentable::Null),
        ("fail", Unrepresentable::Fail),
    ] {
        let text = format!("{CONNECTOR}unrepresentable: {yaml}\ntoast: placeholder\n");
        let c: ConnectorConfig = parse_str(p, &text, &env).unwrap();
        assert_eq!(c.unrepresentable, want, "{yaml}");
        assert_eq!(c.toast, ToastMode::Placeholder);
    }
    let text = format!("{CONNECTOR}unrepresentable: drop\n");
    let e = parse_str::<ConnectorConfig>(p, &text, &env)
        .unwrap_err()
        .to_string();
    assert!(e.contains("unrepresentable") && e.contains("fail"), "{e}");
    let text = format!("{CONNECTOR}toast: full\n");
    let e = parse_str::<ConnectorConfig>(p, &text, &env)
        .unwrap_err()
        .to_string();
    assert!(e.contains("toast") && e.contains("fetch"), "{e}");
    let text = format!("{CONNECTOR}unavailable_value_placeholder: \"\"\n");
    let c: ConnectorConfig = parse_str(p, &text, &env).unwrap();
    let e = c.validate(p).unwrap_err().to_string();
    assert!(e.contains("unavailable_value_placeholder"), "{e}");
}

#[test]
fn librdkafka_ranges_are_config_errors() {
    let p = Path::new("pgcdc.yaml");
    let base =
        "kafka:\n  bootstrap_servers: k:9092\n  linger: 10h\nschema_registry:\n  url: http://r\n";
    let d: DaemonConfig = parse_str(p, base, &env).unwrap();
    let e = d.validate(p).unwrap_err().to_string();
    assert!(e.contains("kafka.linger") && e.contains("900000"), "{e}");
}

#[test]
fn secrets_in_librdkafka_properties_are_redacted_in_debug() {
    let p = Path::new("pgcdc.yaml");
    let text =
        "kafka:\n  bootstrap_servers: k:9092\n  librdkafka:\n    sasl.password: s3cret-one\n    \
                    ssl.key.password: s3cret-two\n    sasl.username: alice\n\
                    schema_registry:\n  url: http://r\n  username: u\n  password: s3cret-three\n";
    let d: DaemonConfig = parse_str(p, text, &env).unwrap();
    let dbg = format!("{d:?}");
    assert!(!dbg.contains("s3cret"), "{dbg}");
    assert!(
        dbg.contains("alice") && dbg.contains("sasl.password"),
        "{dbg}"
    );
}

#[test]
fn table_names_in_raw_or_quoted_form() {
    assert_eq!(unquote_table("public.orders").unwrap(), "public.orders");
    assert_eq!(
        unquote_table(r#""Sales & Co"."Order Lines""#).unwrap(),
        "Sales & Co.Order Lines"
    );
    assert_eq!(unquote_table(r#"public."a""b""#).unwrap(), "public.a\"b");
    assert!(unquote_table(r#""a.b".c"#).is_err());
    assert!(unquote_table(r#""open.c"#).is_err());
    let p = Path::new("c.yaml");
    let text = "name: n\npostgres: {host: h, user: u, dbname: d}\ntopic_prefix: p\n\
                    tables:\n  include: ['\"Sales & Co\".\"Order Lines\"']\nkey_columns:\n  '\"S\".\"T\"': [id]\n";
    let c: ConnectorConfig = parse_str(p, text, &env).unwrap();
    assert_eq!(
        c.tables.include,
        [TableName::new("Sales & Co", "Order Lines")]
    );
    assert_eq!(c.tables.include[0].to_string(), "Sales & Co.Order Lines");
    assert!(c.captures("Sales & Co", "Order Lines"));
    assert!(c.key_columns.contains_key(&TableName::new("S", "T")));
}

#[test]
fn validate_rejects_bad_names() {
    let e = connector(&CONNECTOR.replace("name: orders", "name: Orders-1")).unwrap_err();
    assert_eq!(e.field, "name");
    let e = connector(&CONNECTOR.replace("[public.orders]", "[orders]")).unwrap_err();
    assert_eq!(e.field, "tables.include[0]");
    assert!(
        e.message.starts_with("\"orders\" must be schema.table"),
        "{}",
        e.message
    );
    let e =
        connector(&CONNECTOR.replace("topic_prefix: shop", "topic_prefix: 'sh op'")).unwrap_err();
    assert_eq!(e.field, "topic_prefix");
}

const DAEMON: &str = "
kafka:
  bootstrap_servers: 127.0.0.1:9092
  linger: 10ms
  transaction:
    max_interval: 1s
schema_registry:
  url: http://127.0.0.1:8081/apis/ccompat/v7
";

fn daemon(text: &str) -> Result<DaemonConfig, ConfigError> {
    let p = Path::new("config/pgcdc.yaml");
    let c: DaemonConfig = parse_str(p, text, &env)?;
    c.validate(p)?;
    Ok(c)
}

#[test]
fn parses_daemon_with_human_durations() {
    let c = daemon(DAEMON).unwrap();
    assert_eq!(c.kafka.linger, Duration::from_millis(10));
    assert_eq!(c.kafka.transaction.max_interval, Duration::from_secs(1));
    assert_eq!(c.kafka.compression, "lz4");
    assert_eq!(c.http.listen, DEFAULT_HTTP_LISTEN);
    // A section given in part keeps the defaults of the fields it leaves out.
    assert_eq!(c.kafka.transaction.max_events, DEFAULT_TXN_MAX_EVENTS);
    assert_eq!(c.kafka.transaction.max_bytes, DEFAULT_TXN_MAX_BYTES);
    assert_eq!(c.kafka.topics.partitions, DEFAULT_PARTITIONS);
    assert_eq!(c.logging.level, DEFAULT_LOG_LEVEL);
    let text = DAEMON.replace("    max_interval: 1s\n", "    max_events: 7\n");
    let c = daemon(&text).unwrap();
    assert_eq!(c.kafka.transaction.max_events, 7);
    assert_eq!(c.kafka.transaction.max_interval, DEFAULT_TXN_MAX_INTERVAL);
    assert_eq!(c.kafka.transaction.idle_wait, Duration::ZERO);
}

#[test]
fn idle_wait_is_at_most_max_interval() {
    let text = DAEMON.replace(
        "    max_interval: 1s\n",
        "    max_interval: 1s\n    idle_wait: 20ms\n",
    );
    assert_eq!(
        daemon(&text).unwrap().kafka.transaction.idle_wait,
        Duration::from_millis(20)
    );
    let text = DAEMON.replace(
        "    max_interval: 1s\n",
        "    max_interval: 1s\n    idle_wait: 2s\n",
    );
    let e = daemon(&text).unwrap_err();
    assert_eq!(e.field, "kafka.transaction.idle_wait");
    assert!(e.to_string().contains("max_interval (1s)"), "{e}");
}

#[test]
fn raw_librdkafka_map_cannot_override_guarantees() {
    let text = DAEMON.replace(
        "  linger: 10ms",
        "  linger: 10ms\n  librdkafka:\n    acks: '1'",
    );
    let e = daemon(&text).unwrap_err();
    assert_eq!(e.field, "kafka.librdkafka.acks");
    let text = DAEMON.replace(
        "  linger: 10ms",
        "  linger: 10ms\n  librdkafka:\n    security.protocol: ssl",
    );
    assert!(daemon(&text).is_ok());
}

#[test]
fn bad_duration_is_reported() {
    let e = daemon(&DAEMON.replace("10ms", "ten")).unwrap_err();
    assert_eq!(e.field, "kafka.linger");
}

#[test]
fn heartbeat_settings_are_checked() {
    let c = connector(&format!("{CONNECTOR}heartbeat:\n  interval: 5s\n")).unwrap();
    assert_eq!(c.heartbeat.interval, Some(Duration::from_secs(5)));
    assert_eq!(c.heartbeat.topic(&c.topic_prefix), "__pgcdc-heartbeat.shop");
    assert!(connector(CONNECTOR).unwrap().heartbeat.interval.is_none());
    let e = connector(&format!("{CONNECTOR}heartbeat:\n  interval: 10ms\n")).unwrap_err();
    assert_eq!(e.field, "heartbeat.interval");
    let e = connector(&format!(
        "{CONNECTOR}heartbeat:\n  interval: 1s\n  action_query: ' '\n"
    ))
    .unwrap_err();
    assert_eq!(e.field, "heartbeat.action_query");
    let e = connector(&format!(
        "{CONNECTOR}heartbeat:\n  interval: 1s\n  topics_prefix: 'a b'\n"
    ))
    .unwrap_err();
    assert_eq!(e.field, "heartbeat.topics_prefix");
}

#[test]
fn a_missing_required_field_is_named_and_the_others_default() {
    for (field, line) in [
        ("name", "name: orders\n"),
        ("topic_prefix", "topic_prefix: shop\n"),
        ("postgres.host", "  host: ${PGHOST}\n"),
        ("postgres.user", "  user: cdc\n"),
        ("postgres.dbname", "  dbname: shop\n"),
    ] {
        let text = CONNECTOR.replace(line, "");
        let e = connector(&text).unwrap_err().to_string();
        assert!(
            e.contains(&format!("connectors/orders.yaml: {field}: is required")),
            "{field}: {e}"
        );
    }
    let c = connector(&CONNECTOR.replace("  port: ${PGPORT}\n", "")).unwrap();
    assert_eq!(c.postgres.port, DEFAULT_PG_PORT);
    assert!(c.publish_via_partition_root);
    assert_eq!(c.skipped_operations, vec![SkippedOp::Truncate]);
    assert_eq!(
        c.unavailable_value_placeholder,
        DEFAULT_UNAVAILABLE_PLACEHOLDER
    );
    assert_eq!(c.toast_hold_bytes, DEFAULT_TOAST_HOLD_BYTES);

    for (field, text) in [
        (
            "kafka.bootstrap_servers",
            DAEMON.replace("  bootstrap_servers: 127.0.0.1:9092\n", ""),
        ),
        (
            "schema_registry.url",
            DAEMON.replace("  url: http://127.0.0.1:8081/apis/ccompat/v7\n", ""),
        ),
    ] {
        let e = daemon(&text).unwrap_err().to_string();
        assert!(
            e.contains(&format!("config/pgcdc.yaml: {field}: is required")),
            "{field}: {e}"
        );
    }
    let d = daemon(DAEMON).unwrap();
    assert!(d.kafka.exactly_once);
    assert_eq!(d.kafka.offsets_topic, DEFAULT_OFFSETS_TOPIC);
    assert_eq!(d.kafka.batch_bytes, DEFAULT_BATCH_BYTES);
    assert_eq!(d.shutdown_timeout, DEFAULT_SHUTDOWN_TIMEOUT);
}

#[test]
fn column_rules_are_checked() {
    let with = |rules: &str| connector(&format!("{CONNECTOR}columns:\n  public.orders:\n{rules}"));
    let c =
        with("    exclude: [ssn]\n    mask_with_chars: {card: 4}\n    hash: {email: s}\n").unwrap();
    let r = &c.columns[&TableName::new("public", "orders")];
    assert!(!r.sends("ssn") && r.sends("card"));
    assert!(
        !format!("{c:?}").contains("email: s\""),
        "the salt is a secret"
    );
    for (rules, field) in [
        (
            "    include: [a]\n    exclude: [b]\n",
            "columns.public.orders.include",
        ),
        (
            "    exclude: [a]\n    mask_with_chars: {a: 3}\n",
            "columns.public.orders.mask_with_chars",
        ),
        (
            "    mask_with_chars: {a: 3}\n    hash: {a: s}\n",
            "columns.public.orders.hash",
        ),
        (
            "    truncate_to_chars: {a: 0}\n",
            "columns.public.orders.truncate_to_chars.a",
        ),
        ("    hash: {a: ''}\n", "columns.public.orders.hash.a"),
    ] {
        assert_eq!(with(rules).unwrap_err().field, field, "{rules}");
    }
}

#[test]
fn the_shipped_example_files_load() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let c = ConnectorConfig::load(&root.join("connectors/example.yaml")).unwrap();
    assert!(c
        .columns
        .contains_key(&TableName::new("public", "customers")));
    DaemonConfig::load(&root.join("config/pgcdc.yaml")).unwrap();
}

#[test]
fn outbox_settings_are_checked() {
    let c = connector(&format!("{CONNECTOR}outbox:\n  table: public.orders\n")).unwrap();
    assert!(c.outbox.is_table("public", "orders"));
    assert_eq!(c.outbox.topic_for("order"), "outbox.event.order");
    let e = connector(&format!("{CONNECTOR}outbox:\n  table: public.other\n")).unwrap_err();
    assert_eq!(e.field, "outbox.table");
    let e = connector(&format!("{CONNECTOR}outbox:\n  topic: ''\n")).unwrap_err();
    assert_eq!(e.field, "outbox.topic");
}

#[test]
fn several_hosts_are_listed_in_libpq_style() {
    let hosts = |host: &str| {
        connector(&format!(
            "name: o\npostgres: {{host: '{host}', port: 6000, user: u, dbname: d, target_session_attrs: read-write}}\ntopic_prefix: p\n"
        ))
    };
    let c = hosts("a, b:5433,[::1]:7000,::2").unwrap();
    assert_eq!(
        c.postgres.target_session_attrs,
        crate::config::TargetSessionAttrs::ReadWrite
    );
    let got: Vec<(String, u16)> = c
        .postgres
        .endpoints()
        .unwrap()
        .into_iter()
        .map(|e| (e.host, e.port))
        .collect();
    assert_eq!(
        got,
        vec![
            ("a".into(), 6000),
            ("b".into(), 5433),
            ("::1".into(), 7000),
            ("::2".into(), 6000)
        ]
    );
    for bad in ["a,,b", "a:0", "a:x", "[::1"] {
        let e = hosts(bad).unwrap_err().to_string();
        assert!(
            e.contains("connectors/orders.yaml") && e.contains("postgres.host"),
            "{bad}: {e}"
        );
    }
}

#[test]
fn an_unterminated_variable_is_refused_without_echoing_the_value() {
    let e = connector(
        "name: o\npostgres: {host: h, user: u, dbname: d, password: 'hunter2${OOPS'}\ntopic_prefix: p\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("connectors/orders.yaml")
            && e.contains("postgres.password")
            && e.contains("closing }"),
        "{e}"
    );
    assert!(!e.contains("hunter2"), "the value leaked: {e}");
}

#[test]
fn memory_bounds_are_bytes_within_what_librdkafka_and_the_largest_record_allow() {
    let d = daemon(DAEMON).unwrap();
    assert_eq!(d.kafka.buffer_bytes, DEFAULT_BUFFER_BYTES);
    assert_eq!(d.kafka.producer_queue_bytes, DEFAULT_PRODUCER_QUEUE_BYTES);
    let with = |extra: &str| daemon(&DAEMON.replace("kafka:\n", &format!("kafka:\n{extra}")));
    let d = with("  buffer_bytes: 8388608\n  producer_queue_bytes: 33554432\n").unwrap();
    assert_eq!(
        (d.kafka.buffer_bytes, d.kafka.producer_queue_bytes),
        (8 << 20, 32 << 20)
    );
    for (extra, field) in [
        ("  buffer_bytes: 1000\n", "kafka.buffer_bytes"),
        (
            "  producer_queue_bytes: 1048576\n",
            "kafka.producer_queue_bytes",
        ),
    ] {
        let e = with(extra).unwrap_err().to_string();
        assert!(
            e.contains(&format!("config/pgcdc.yaml: {field}: must be")),
            "{e}"
        );
    }
    // librdkafka's own key for the queue is refused: pgcdc sets it from the YAML key.
    let e = with("  librdkafka:\n    queue.buffering.max.kbytes: \"1024\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("queue.buffering.max.kbytes"), "{e}");
}

#[test]
fn from_debezium_defaults_to_connects_topic_and_checks_its_lsn() {
    let c = connector(&format!(
        "{CONNECTOR}from_debezium:\n  connector: inventory\n"
    ))
    .unwrap();
    let f = c.from_debezium.unwrap();
    assert_eq!(f.offsets_topic, "connect-offsets");
    assert_eq!(f.connector.as_deref(), Some("inventory"));
    assert!(connector(CONNECTOR).unwrap().from_debezium.is_none());
    let e = connector(&format!("{CONNECTOR}from_debezium:\n  lsn: 16B3748\n"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("orders.yaml") && e.contains("from_debezium.lsn") && e.contains("0/16B3748"),
        "{e}"
    );
    let e = connector(&format!("{CONNECTOR}from_debezium:\n  slot: x\n"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("slot"), "{e}");
}
