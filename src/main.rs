use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tokio::sync::{mpsc, watch};

use pgcdc::config::{connector_files, ConnectorConfig, DaemonConfig, LogFormat};
use pgcdc::error::{Code, Error};
use pgcdc::supervisor::Planned;

#[derive(Parser)]
#[command(
    name = "pgcdc",
    version,
    about = "PostgreSQL row changes into Kafka as Debezium-compatible Avro, exactly once"
)]
struct Cli {
    /// Daemon settings file.
    #[arg(
        long,
        global = true,
        default_value = "config/pgcdc.yaml",
        env = "PGCDC_CONFIG"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run connectors: every *.yaml in connectors/ unless files are named.
    Run {
        #[arg(long, default_value = "connectors")]
        connectors_dir: PathBuf,
        /// Connector files to run instead of the whole folder.
        files: Vec<PathBuf>,
    },
    /// Check config, connectivity, server settings, privileges and replica identity.
    Validate {
        #[arg(long, default_value = "connectors")]
        connectors_dir: PathBuf,
        files: Vec<PathBuf>,
    },
    /// Show each connector's checkpoint, slot and snapshot progress (rows done / estimated).
    Status {
        #[arg(long, default_value = "connectors")]
        connectors_dir: PathBuf,
        files: Vec<PathBuf>,
    },
    /// Start an incremental snapshot of tables while the connector streams (inserts a
    /// signal into the connector's signal_table).
    Snapshot {
        #[arg(long, default_value = "connectors")]
        connectors_dir: PathBuf,
        /// The connector's name.
        connector: String,
        /// Tables as schema.table.
        #[arg(required = true)]
        tables: Vec<String>,
    },
    /// Install the DDL capture event trigger that schema_changes needs, in the connector's
    /// database (PostgreSQL lets only superusers create event triggers), or print its SQL.
    InstallDdlCapture {
        #[arg(long, default_value = "connectors")]
        connectors_dir: PathBuf,
        /// The connector's name.
        connector: String,
        /// Print the SQL instead of running it (for a DBA to run).
        #[arg(long)]
        print: bool,
    },
    /// Continue another tool's stream where it stopped, on its slot, topics and subjects,
    /// with no snapshot (README: Switching from Debezium).
    Takeover {
        #[command(subcommand)]
        from: TakeoverFrom,
    },
    /// Print the events of topics as JSON, one object per line, decoded through the registry.
    Tail {
        /// Topic names, or regular expressions starting with ^.
        #[arg(required = true)]
        topics: Vec<String>,
        /// Start at the end instead of the beginning.
        #[arg(long)]
        from_end: bool,
        /// Stop after this many records.
        #[arg(long)]
        max_records: Option<usize>,
        /// Stop when nothing arrives for this long (e.g. 10s).
        #[arg(long, value_parser = humantime::parse_duration)]
        idle_timeout: Option<Duration>,
    },
}

#[derive(Subcommand)]
enum TakeoverFrom {
    /// From a Debezium PostgreSQL connector: read where it stopped (Kafka Connect's offsets
    /// topic, or --lsn), refuse what is unsafe, print the plan, and write the connector's
    /// first checkpoint there. Stop Debezium first.
    Debezium {
        #[arg(long, default_value = "connectors")]
        connectors_dir: PathBuf,
        /// The pgcdc connector's name: its slot, publication and topic_prefix must be
        /// Debezium's slot.name, publication.name and topic.prefix.
        connector: String,
        /// Kafka Connect's offsets topic (offset.storage.topic); default: the connector's
        /// from_debezium.offsets_topic, else connect-offsets.
        #[arg(long)]
        offsets_topic: Option<String>,
        /// The Debezium connector's name in Kafka Connect (needed when several connectors'
        /// offsets name the same topic prefix).
        #[arg(long)]
        debezium_connector: Option<String>,
        /// Debezium's last committed LSN instead of Connect's offsets (Debezium Server, an
        /// embedded engine): every transaction that committed before it is in Kafka.
        #[arg(long)]
        lsn: Option<String>,
        /// Print what was found and what would happen, and write nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

fn load_connectors(dir: &Path, files: &[PathBuf]) -> Result<Vec<ConnectorConfig>, Error> {
    Ok(load_connector_files(dir, files)?
        .into_iter()
        .map(|(_, c)| c)
        .collect())
}

/// Each connector file (those named, else every `*.yaml` in `dir`) with its connector.
fn load_connector_files(
    dir: &Path,
    files: &[PathBuf],
) -> Result<Vec<(PathBuf, ConnectorConfig)>, Error> {
    let files = if files.is_empty() {
        connector_files(dir)?
    } else {
        files.to_vec()
    };
    if files.is_empty() {
        return Err(pgcdc::config::ConfigError::new(
            dir,
            "(folder)",
            "no connector files (*.yaml); add one or name a file",
        )
        .into());
    }
    let mut out: Vec<(PathBuf, ConnectorConfig)> = Vec::new();
    for f in files {
        let c = ConnectorConfig::load(&f)?;
        if let Some((_, other)) = out.iter().find(|(_, o)| o.name == c.name) {
            return Err(pgcdc::config::ConfigError::new(
                &f,
                "name",
                format!(
                    "{:?} is already used by another connector file; connector names must be unique",
                    other.name
                ),
            )
            .into());
        }
        out.push((f, c));
    }
    Ok(out)
}

fn init_tracing(level: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: log files and journald get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Json => b.json().init(),
        LogFormat::Text => b.init(),
    }
}

/// Tokio worker threads for `run`: one per connector, at most one per core, unless
/// `TOKIO_WORKER_THREADS` says otherwise. A connector's pipeline is a chain of tasks
/// (replication reader, encoder, Kafka sink) that hand every event on, and librdkafka does
/// its I/O and compression on threads of its own; spread over more workers than connectors,
/// the hand-offs cross threads and cost wake-ups. On 2 cores `make bench` (exactly-once)
/// measured 2.08-2.76 µs of CPU per event with one worker against 2.52-3.36 with two, and
/// peak RSS 38-50 MB against 56-61. Connectors added by a reload share the workers started.
fn worker_threads(command: &Command) -> Option<usize> {
    if std::env::var_os("TOKIO_WORKER_THREADS").is_some() {
        return None;
    }
    let Command::Run {
        connectors_dir,
        files,
    } = command
    else {
        return None;
    };
    let connectors = if files.is_empty() {
        connector_files(connectors_dir).map_or(1, |f| f.len())
    } else {
        files.len()
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    Some(connectors.clamp(1, cores))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let daemon = match DaemonConfig::load(&cli.config) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("pgcdc: {e}");
            return ExitCode::from(2);
        }
    };
    init_tracing(&daemon.logging.level, daemon.logging.format);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = worker_threads(&cli.command) {
        builder.worker_threads(n);
    }
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pgcdc: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = rt.block_on(async move {
        let (stop_tx, stop_rx) = watch::channel(false);
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutdown requested");
            let _ = stop_tx.send(true);
        });
        let result = match cli.command {
            Command::Run {
                connectors_dir,
                files,
            } => run(daemon, &connectors_dir, &files, stop_rx).await,
            Command::Validate {
                connectors_dir,
                files,
            } => return validate(&daemon, &connectors_dir, &files).await,
            Command::Status {
                connectors_dir,
                files,
            } => status(&daemon, &connectors_dir, &files).await,
            Command::Snapshot {
                connectors_dir,
                connector,
                tables,
            } => snapshot(&connectors_dir, &connector, &tables).await,
            Command::InstallDdlCapture { print: true, .. } => {
                print!("{}", pgcdc::postgres::ddl::install_sql());
                Ok(())
            }
            Command::InstallDdlCapture {
                connectors_dir,
                connector,
                print: false,
            } => match find_connector(&connectors_dir, &connector) {
                Ok(c) => pgcdc::admin::install_ddl_capture(&c).await.map(|db| {
                    println!("DDL capture installed in database {db}; set schema_changes: true in connector {connector}");
                }),
                Err(e) => Err(e),
            },
            Command::Takeover {
                from:
                    TakeoverFrom::Debezium {
                        connectors_dir,
                        connector,
                        offsets_topic,
                        debezium_connector,
                        lsn,
                        dry_run,
                    },
            } => match find_connector(&connectors_dir, &connector) {
                Ok(c) => {
                    let mut from = c.from_debezium.clone().unwrap_or_default();
                    from.offsets_topic = offsets_topic.unwrap_or(from.offsets_topic);
                    from.connector = debezium_connector.or(from.connector);
                    from.lsn = lsn.or(from.lsn);
                    pgcdc::pipeline::takeover::command(&daemon, &c, &from, dry_run, |plan| {
                        println!("{plan}")
                    })
                    .await
                    .map(|done| println!("{done}"))
                }
                Err(e) => Err(e),
            },
            Command::Tail {
                topics,
                from_end,
                max_records,
                idle_timeout,
            } => {
                let opts = pgcdc::tail::TailOptions {
                    topics,
                    from_beginning: !from_end,
                    max_records,
                    idle_timeout,
                };
                pgcdc::tail::run(&daemon, &opts, stop_rx).await
            }
        };
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("pgcdc: {e}");
                exit_code(&e)
            }
        }
    });
    // Blocking Kafka calls of an abandoned connector must not hold the exit.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    code
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn run(
    daemon: DaemonConfig,
    dir: &Path,
    files: &[PathBuf],
    stop: watch::Receiver<bool>,
) -> Result<(), Error> {
    let connectors = load_planned(dir, files)?;
    let listener = pgcdc::http::bind(&daemon.http.listen).await?;
    tokio::spawn(pgcdc::http::serve(listener, stop.clone()));
    tracing::info!(connectors = connectors.len(), http = %daemon.http.listen, "pgcdc starting");
    let reload = reload_on_sighup(dir, files);
    pgcdc::supervisor::run_reloading(daemon, connectors, stop, reload).await
}

/// The connector files with a fingerprint of each one's text (a changed file restarts its
/// connector on reload).
fn load_planned(dir: &Path, files: &[PathBuf]) -> Result<Vec<Planned>, Error> {
    use std::hash::{Hash, Hasher};
    let mut out = Vec::new();
    for (file, config) in load_connector_files(dir, files)? {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        std::fs::read(&file).unwrap_or_default().hash(&mut h);
        out.push(Planned {
            config,
            fingerprint: h.finish(),
        });
    }
    Ok(out)
}

/// Re-reads the connector files on each SIGHUP. A set that does not load is logged and
/// ignored: the running connectors go on unchanged.
fn reload_on_sighup(dir: &Path, files: &[PathBuf]) -> Option<mpsc::Receiver<Vec<Planned>>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; connector files are read at start only");
                return None;
            }
        };
        let (tx, rx) = mpsc::channel(2);
        let (dir, files) = (dir.to_path_buf(), files.to_vec());
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                match load_planned(&dir, &files) {
                    Ok(p) => {
                        tracing::info!(connectors = p.len(), "SIGHUP: connector files re-read");
                        if tx.send(p).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "SIGHUP: connector files not reloaded; the running connectors go on unchanged")
                    }
                }
            }
        });
        Some(rx)
    }
    #[cfg(not(unix))]
    {
        let _ = (dir, files);
        None
    }
}

async fn status(daemon: &DaemonConfig, dir: &Path, files: &[PathBuf]) -> Result<(), Error> {
    let health = pgcdc::admin::daemon_health(&daemon.http.listen).await;
    for c in load_connectors(dir, files)? {
        print!("{}", pgcdc::admin::status(daemon, &c).await?);
        println!(
            "{}",
            pgcdc::admin::running_state(&daemon.http.listen, health.as_ref(), &c.name)
        );
    }
    Ok(())
}

/// The connector named `name` in `dir`.
fn find_connector(dir: &Path, name: &str) -> Result<ConnectorConfig, Error> {
    let all = load_connectors(dir, &[])?;
    let names: Vec<String> = all.iter().map(|c| c.name.clone()).collect();
    all.into_iter().find(|c| c.name == name).ok_or_else(|| {
        Error::permanent(
            Code::Usage,
            format!(
                "{}: no connector named {name:?} (there are: {}); name one of them",
                dir.display(),
                names.join(", ")
            ),
        )
    })
}

async fn snapshot(dir: &Path, connector: &str, tables: &[String]) -> Result<(), Error> {
    let c = find_connector(dir, connector)?;
    let id = pgcdc::admin::signal_snapshot(&c, tables).await?;
    println!(
        "signal {id}: incremental snapshot of {} requested from connector {connector}; follow it with pgcdc status",
        tables.join(", ")
    );
    Ok(())
}

/// Prints every problem on its own line; exit code 1 if there is any.
/// What `run` would refuse at start, given the checkpoint, the slot claim and the slot
/// (see `pgcdc::pipeline::plan`).
async fn start_problem(
    daemon: &DaemonConfig,
    c: &pgcdc::config::ConnectorConfig,
    cat: &pgcdc::postgres::Catalog,
) -> Option<String> {
    let (kcfg, name) = (daemon.kafka.clone(), c.name.clone());
    let state =
        tokio::task::spawn_blocking(move || pgcdc::kafka::offsets::read_state(&kcfg, &name)).await;
    let (ck, claim) = match state {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Some(e.to_string()),
        Err(e) => return Some(format!("checkpoint reader failed: {e}")),
    };
    let slot = match cat.slot(&c.slot_name()).await {
        Ok(s) => s,
        Err(e) => return Some(e.to_string()),
    };
    match pgcdc::pipeline::plan::plan_start(c, ck.as_ref(), claim.as_ref(), slot.as_ref()) {
        Err(e) if !e.is_transient() => Some(e.to_string()),
        _ => None,
    }
}

/// One convention for every command: 0 ok, 2 a config file that does not parse or validate
/// (daemon or connector), 1 anything else that stops pgcdc.
fn exit_code(e: &pgcdc::error::Error) -> ExitCode {
    match e.code() {
        Code::Config => ExitCode::from(2),
        _ => ExitCode::FAILURE,
    }
}

async fn validate(daemon: &DaemonConfig, dir: &Path, files: &[PathBuf]) -> ExitCode {
    let connectors = match load_connectors(dir, files) {
        Ok(c) => c,
        Err(e) => {
            println!("{e}");
            return exit_code(&e);
        }
    };
    let mut problems: Vec<String> = Vec::new();
    if let Err(e) = pgcdc::kafka::check_config(&daemon.kafka, "validate") {
        problems.push(e.to_string());
    }
    let kafka_ok = match pgcdc::kafka::check_brokers(&daemon.kafka, "validate").await {
        Ok(()) => true,
        Err(e) => {
            problems.push(e.to_string());
            false
        }
    };
    if let Err(e) = pgcdc::avro::registry::check(&daemon.schema_registry).await {
        problems.push(e.to_string());
    }
    for c in &connectors {
        match pgcdc::postgres::Catalog::connect(&c.postgres, c.numeric_mode, "pgcdc-validate").await
        {
            Ok(mut cat) => match cat.preflight(c).await {
                Ok(p) => {
                    match cat.captured_relations(c).await {
                        Ok(tables) => {
                            for n in pgcdc::avro::fields::optional_not_null_notes(&tables) {
                                println!("note: connector {}: {n}", c.name);
                            }
                        }
                        Err(e) => problems.push(format!("connector {}: {e}", c.name)),
                    }
                    for w in p.warnings {
                        println!("warning: connector {}: {w}", c.name);
                    }
                    for n in p.notes {
                        println!("note: connector {}: {n}", c.name);
                    }
                    problems.extend(
                        p.problems
                            .into_iter()
                            .map(|p| format!("connector {}: {p}", c.name)),
                    );
                    if kafka_ok {
                        if let Some(p) = start_problem(daemon, c, &cat).await {
                            problems.push(format!("connector {}: {p}", c.name));
                        }
                    }
                }
                Err(e) => problems.push(format!("connector {}: {e}", c.name)),
            },
            Err(e) => problems.push(format!("connector {}: {e}", c.name)),
        }
    }
    for p in &problems {
        println!("{p}");
    }
    if problems.is_empty() {
        println!("ok: {} connector(s) ready", connectors.len());
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
