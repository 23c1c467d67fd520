//! A connector under test: its own database, slot, publication, topic prefix and offsets
//! topic, config files in a temp folder, and helpers to run pgcdc and read what it wrote.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgcdc::config::{ConnectorConfig, DaemonConfig};
use serde_json::Value as Json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::common::{unique, Stack};

#[derive(Clone)]
pub struct Harness {
    pub stack: Stack,
    pub db: String,
    pub name: String,
    pub prefix: String,
    pub offsets_topic: String,
    pub dir: PathBuf,
    /// The connector's `postgres:` lines for user, password and TLS.
    pub postgres_auth: String,
    /// The daemon's `http.listen`.
    pub http_listen: String,
    /// Drops the database when the last clone of the harness goes.
    pub _cleanup: Arc<DropDatabase>,
}

/// Drops a test's database, and with it the slots left in it, once the test is done with
/// it: an inactive slot holds every WAL segment written after it was made, and one `make
/// test` left ~7 GB of WAL behind its tests' slots on a disk CI shares. A database whose
/// slot is still active stays (`dev/stack prune` drops it at the next `make test`), and so
/// do all of them with `PGCDC_TEST_KEEP_DB=1` (to look at one after a failure).
pub struct DropDatabase {
    admin: String,
    db: String,
}

impl DropDatabase {
    /// A guard for `db` on `stack`'s server (a test's second database, say).
    pub fn on(stack: &Stack, db: &str) -> DropDatabase {
        DropDatabase {
            admin: format!("{} connect_timeout=5", stack.pg_conn_string("postgres")),
            db: db.to_owned(),
        }
    }
}

impl Drop for DropDatabase {
    fn drop(&mut self) {
        if std::env::var_os("PGCDC_TEST_KEEP_DB").is_some() {
            return;
        }
        // psql, not tokio-postgres: Drop cannot wait for a future. `timeout` bounds a
        // server that is stopped (SIGSTOP) or gone: the database is then left to prune.
        let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.db);
        let _ = std::process::Command::new("timeout")
            .args(["10", "psql", "-XAtq", "-d", &self.admin, "-c", &sql])
            .output();
    }
}

/// One record as a consumer sees it, decoded through the registry.
#[derive(Debug, Clone)]
pub struct Record {
    pub offset: i64,
    pub key: Json,
    pub value: Json,
    /// Record headers (name, UTF-8 value), e.g. `pgcdc.unavailable`.
    pub headers: Vec<(String, String)>,
}

impl Record {
    /// The JSON array of column names in header `name`, empty when absent.
    pub fn header_columns(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| serde_json::from_str(v).expect("header is a JSON array of names"))
            .unwrap_or_default()
    }
}

pub struct Running {
    stop: watch::Sender<bool>,
    handle: JoinHandle<pgcdc::error::Result<()>>,
}

impl Running {
    pub async fn stop(self) -> pgcdc::error::Result<()> {
        let _ = self.stop.send(true);
        self.handle.await.expect("pipeline task panicked")
    }

    /// Waits for the connector to stop on its own, which it must do with an error.
    pub async fn expect_error(self, timeout: Duration) -> pgcdc::error::Error {
        tokio::time::timeout(timeout, self.handle)
            .await
            .expect("the connector should stop on its own")
            .expect("pipeline task panicked")
            .expect_err("the connector must fail")
    }
}

impl Harness {
    /// A fresh database with `schema_sql` applied.
    pub async fn new(label: &str, schema_sql: &str) -> Harness {
        Harness::on(Stack::get(), label, schema_sql).await
    }

    /// [`Harness::new`] on another PostgreSQL major of the stack.
    pub async fn on_major(major: u32, label: &str, schema_sql: &str) -> Harness {
        Harness::on(Stack::with_major(major), label, schema_sql).await
    }

    /// [`Harness::new`] on another PostgreSQL server (the failover pair's primary).
    pub async fn on_stack(stack: Stack, label: &str, schema_sql: &str) -> Harness {
        Harness::on(stack, label, schema_sql).await
    }

    /// [`Harness::new`], or [`Harness::on_major`] when a major is given.
    pub async fn for_major(major: Option<u32>, label: &str, schema_sql: &str) -> Harness {
        match major {
            Some(m) => Harness::on_major(m, &format!("{label}{m}"), schema_sql).await,
            None => Harness::new(label, schema_sql).await,
        }
    }

    async fn on(stack: Stack, label: &str, schema_sql: &str) -> Harness {
        // PGCDC_TEST_LOG=info shows the connectors' logs (with --nocapture).
        if let Ok(f) = std::env::var("PGCDC_TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(f))
                .with_test_writer()
                .try_init();
        }
        let db = stack.fresh_database(label).await;
        let client = stack.pg_connect(&db).await;
        client.batch_execute(schema_sql).await.expect("schema SQL");
        let name = unique(label);
        let dir = std::env::temp_dir().join(format!("pgcdc-test-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        let postgres_auth = format!("  user: {}\n  sslmode: disable\n", stack.pg_user);
        let cleanup = Arc::new(DropDatabase::on(&stack, &db));
        Harness {
            prefix: format!("t{}", name.replace('_', "")),
            offsets_topic: format!("{name}.offsets"),
            stack,
            db,
            _cleanup: cleanup,
            name,
            dir,
            postgres_auth,
            http_listen: "127.0.0.1:0".into(),
        }
    }

    pub async fn sql(&self, sql: &str) {
        let c = self.stack.pg_connect(&self.db).await;
        c.batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        self.stack.pg_connect(&self.db).await
    }

    pub fn daemon_yaml(&self) -> String {
        format!(
            "kafka:\n  bootstrap_servers: {}\n  offsets_topic: {}\n  transaction:\n    max_interval: 100ms\n\
             schema_registry:\n  url: {}\nhttp:\n  listen: {}\n",
            self.stack.kafka_bootstrap, self.offsets_topic, self.stack.registry_url, self.http_listen
        )
    }

    /// Connector YAML; `extra` is appended (tables, key_columns, numeric_mode...).
    pub fn connector_yaml(&self, extra: &str) -> String {
        format!(
            "name: {}\npostgres:\n  host: {}\n  port: {}\n  dbname: {}\n{}topic_prefix: {}\n{extra}",
            self.name, self.stack.pg_host, self.stack.pg_port, self.db, self.postgres_auth, self.prefix
        )
    }

    pub fn write_configs(&self, extra: &str) -> (PathBuf, PathBuf) {
        let d = self.dir.join("pgcdc.yaml");
        let c = self.dir.join("connector.yaml");
        std::fs::write(&d, self.daemon_yaml()).unwrap();
        std::fs::write(&c, self.connector_yaml(extra)).unwrap();
        (d, c)
    }

    /// `pgcdc validate` on freshly written configs: its exit code and standard output.
    pub fn validate(&self, extra: &str) -> (Option<i32>, String) {
        let (d, c) = self.write_configs(extra);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgcdc"))
            .arg("--config")
            .arg(&d)
            .arg("validate")
            .arg(&c)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    /// One run of the connector (no restarts) on freshly written configs; it must fail
    /// within `timeout`.
    pub async fn run_once_expect_error(
        &self,
        extra: &str,
        timeout: Duration,
    ) -> pgcdc::error::Error {
        let (daemon, conn) = self.configs(extra);
        let (_stop, rx) = watch::channel(false);
        tokio::time::timeout(timeout, pgcdc::pipeline::run(&daemon, &conn, rx))
            .await
            .expect("the connector should answer in time")
            .expect_err("the connector must fail")
    }

    /// Starts the pgcdc binary on config files, logging to `log` in the test's folder.
    pub fn spawn_daemon(
        &self,
        daemon: &std::path::Path,
        conn: &std::path::Path,
        log: &str,
    ) -> tokio::process::Child {
        let log = std::fs::File::create(self.dir.join(log)).unwrap();
        tokio::process::Command::new(env!("CARGO_BIN_EXE_pgcdc"))
            .arg("--config")
            .arg(daemon)
            .arg("run")
            .arg(conn)
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start pgcdc")
    }

    pub fn configs(&self, extra: &str) -> (DaemonConfig, ConnectorConfig) {
        let (d, c) = self.write_configs(extra);
        (
            DaemonConfig::load(&d).unwrap(),
            ConnectorConfig::load(&c).unwrap(),
        )
    }

    /// Runs the connector in this process until stopped; returns once its slot streams
    /// (after the initial snapshot, if there is one).
    pub async fn start(&self, extra: &str) -> Running {
        self.start_on(extra, &self.slot()).await
    }

    /// [`Harness::start`] for a connector whose `extra` names another slot.
    pub async fn start_on(&self, extra: &str, slot: &str) -> Running {
        let (daemon, conn) = self.configs(extra);
        let (stop, rx) = watch::channel(false);
        let handle = tokio::spawn(pgcdc::supervisor::run(daemon, vec![conn], rx));
        let mut run = Running { stop, handle };
        let streaming = self.wait_named_slot(slot, true, || true);
        tokio::select! {
            _ = streaming => run,
            r = &mut run.handle => panic!("connector {} stopped before streaming: {:?}", self.name, r),
        }
    }

    pub fn slot(&self) -> String {
        format!("pgcdc_{}", self.name)
    }

    /// Waits until the slot is `active` (streaming to some pgcdc) or not; `alive` says
    /// whether the process we wait for still runs.
    pub async fn wait_slot(&self, active: bool, alive: impl FnMut() -> bool) {
        self.wait_named_slot(&self.slot(), active, alive).await
    }

    pub async fn wait_named_slot(&self, slot: &str, active: bool, mut alive: impl FnMut() -> bool) {
        let c = self.stack.pg_connect("postgres").await;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            // Active means streaming: a walsender that holds the slot while it creates it
            // and exports the snapshot is still in `startup`.
            let now_active = c
                .query_opt(
                    "SELECT s.active AND coalesce(r.state IN ('catchup', 'streaming'), false)
                       FROM pg_replication_slots s LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid
                      WHERE s.slot_name = $1",
                    &[&slot],
                )
                .await
                .unwrap()
                .is_some_and(|r| r.get::<_, bool>(0));
            if now_active == active {
                return;
            }
            assert!(
                alive(),
                "connector {} stopped before its slot became active={active}",
                self.name
            );
            assert!(
                Instant::now() < deadline,
                "slot of {} did not become active={active} within 60s",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn topic(&self, table: &str) -> String {
        format!("{}.public.{table}", self.prefix)
    }

    /// Reads a topic with `read_committed` from the beginning until `n` records arrived
    /// (panics after `timeout`), then a little longer to catch any extra record.
    pub async fn read(&self, table: &str, n: usize, timeout: Duration) -> Vec<Record> {
        read_topic(&self.stack, &self.topic(table), n, timeout).await
    }

    pub async fn drop_slot(&self) {
        let c = self.stack.pg_connect("postgres").await;
        let slot = self.slot();
        let _ = c
            .execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active",
                &[&slot],
            )
            .await;
    }
}

pub async fn read_topic(stack: &Stack, topic: &str, n: usize, timeout: Duration) -> Vec<Record> {
    use pgcdc::consume::{Reader, Start};
    let reader = Reader::plain(
        &stack.kafka_bootstrap,
        &stack.registry_url,
        "reader",
        Start::Beginning,
    )
    .unwrap();
    reader.subscribe(&[topic]).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + timeout;
    // After the n-th record, keep reading briefly: a duplicate or extra record must show.
    let mut settle: Option<Instant> = None;
    loop {
        let until = settle.unwrap_or(deadline);
        let left = until.saturating_duration_since(Instant::now());
        let Some(m) = reader
            .next(left)
            .await
            .unwrap_or_else(|e| panic!("consuming {topic}: {e}"))
        else {
            break;
        };
        let d = reader.decode(&m).await.unwrap();
        out.push(Record {
            offset: d.offset,
            key: d.key,
            value: d.value,
            headers: d.headers,
        });
        if out.len() >= n && settle.is_none() {
            settle = Some(Instant::now() + Duration::from_millis(1500));
        }
    }
    assert!(
        out.len() >= n,
        "{topic}: expected {n} records within {timeout:?}, got {}: {out:#?}",
        out.len()
    );
    out
}
