//! Shared helpers: where the stack is, unique names, waiting with deadlines.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};

/// Endpoints of the local stack, from the environment or `.stack/env` written by `dev/stack`.
#[derive(Clone)]
pub struct Stack {
    pub pg_host: String,
    pub pg_port: u16,
    pub pg_user: String,
    pub kafka_bootstrap: String,
    pub registry_url: String,
    /// The same registry behind nginx asking for basic authentication, and its credentials.
    pub registry_auth: (String, String, String),
}

impl Stack {
    pub fn get() -> Stack {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".stack/env");
        let mut file_vars = HashMap::new();
        if let Ok(text) = std::fs::read_to_string(&path) {
            for line in text.lines() {
                if let Some((k, v)) = line.trim().trim_start_matches("export ").split_once('=') {
                    file_vars.insert(k.to_owned(), v.to_owned());
                }
            }
        }
        let var = |k: &str| {
            std::env::var(k)
                .ok()
                .or_else(|| file_vars.get(k).cloned())
                .unwrap_or_else(|| {
                    panic!(
                        "{k} is not set and {} does not define it; run `make stack` first",
                        path.display()
                    )
                })
        };
        Stack {
            pg_host: var("PGHOST"),
            pg_port: var("PGPORT").parse().expect("PGPORT is a port number"),
            pg_user: var("PGUSER"),
            kafka_bootstrap: var("KAFKA_BOOTSTRAP"),
            registry_url: var("SCHEMA_REGISTRY_URL"),
            registry_auth: (
                var("SCHEMA_REGISTRY_AUTH_URL"),
                var("SCHEMA_REGISTRY_AUTH_USER"),
                var("SCHEMA_REGISTRY_AUTH_PASSWORD"),
            ),
        }
    }

    /// The same stack with PostgreSQL `major` instead, which `make test` starts beside the
    /// default one (`PG_MAJOR=<major> dev/stack pg`).
    pub fn with_major(major: u32) -> Stack {
        let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(format!(".stack/ports/postgres-{major}"));
        let port = std::fs::read_to_string(&file).unwrap_or_else(|e| {
            panic!(
                "PostgreSQL {major} is not in the stack ({}: {e}); run `PG_MAJOR={major} dev/stack pg` (make test does)",
                file.display()
            )
        });
        Stack {
            pg_port: port.trim().parse().expect("a port number"),
            ..Stack::get()
        }
    }

    pub fn pg_conn_string(&self, dbname: &str) -> String {
        format!(
            "host={} port={} user={} dbname={dbname}",
            self.pg_host, self.pg_port, self.pg_user
        )
    }

    pub async fn pg_connect(&self, dbname: &str) -> tokio_postgres::Client {
        let (client, conn) =
            tokio_postgres::connect(&self.pg_conn_string(dbname), tokio_postgres::NoTls)
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "connect to PostgreSQL {}:{} db {dbname}: {e}",
                        self.pg_host, self.pg_port
                    )
                });
        tokio::spawn(async move {
            let _ = conn.await;
        });
        client
    }

    /// A fresh database named after `prefix`, dropped first if a previous run left it.
    pub async fn fresh_database(&self, prefix: &str) -> String {
        let name = unique(prefix);
        let admin = self.pg_connect("postgres").await;
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await
            .unwrap();
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        name
    }
}

/// A name unique to this process and call: tests run in parallel and against one stack.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() % 100_000_000)
        .unwrap_or(0);
    format!("{prefix}_{}_{t}_{n}", std::process::id())
}

/// GET `url` and its JSON body (the registry's REST API, in tests).
pub async fn get_json(url: &str) -> serde_json::Value {
    reqwest::get(url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: not JSON: {e}"))
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `dev/stack <cmd>` (the failover pair, the scratch server) with PostgreSQL 17.
pub fn dev_stack(cmd: &str) {
    dev_stack_args(&[cmd]);
}

/// `dev/stack <args>`, e.g. `scratch-up frozen`.
pub fn dev_stack_args(args: &[&str]) {
    let cmd = args.join(" ");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new(root.join("dev/stack"))
        .args(args)
        .env("PG_MAJOR", "17")
        .output()
        .expect("run dev/stack");
    assert!(
        out.status.success(),
        "dev/stack {cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The port `dev/stack` chose for `name` (.stack/ports/<name>).
pub fn stack_port(name: &str) -> u16 {
    let f = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!(".stack/ports/{name}"));
    std::fs::read_to_string(&f)
        .unwrap_or_else(|e| panic!("{}: {e}", f.display()))
        .trim()
        .parse()
        .expect("a port number")
}

/// Tests that run a Kafka Connect worker take turns: each JVM takes up to 768 MB of heap and
/// seconds of both cores to start.
pub async fn one_jvm() -> tokio::sync::MutexGuard<'static, ()> {
    static JVM: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    JVM.lock().await
}
