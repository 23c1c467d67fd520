//! Runs every configured connector, each on its own: a transient error restarts that
//! connector with capped exponential backoff; a permanent one stops only that connector
//! (the others go on, `/healthz` names it) unless `fail_fast: true` stops them all. The
//! process ends when every connector has stopped, with an error when one of them failed.
//! A reload (SIGHUP) stops the connectors whose files are gone, restarts the changed ones,
//! starts the new ones and those that had stopped, and leaves the rest alone.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::config::{ConnectorConfig, DaemonConfig};
use crate::error::{Code, Error, Result};
use crate::metrics::ConnectorEvent;
use crate::{health, metrics, pipeline};

const BACKOFF_START: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A run that lasted this long was healthy: the next failure starts the backoff afresh.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// A connector to run, with a fingerprint of its file's content: a reload restarts a
/// connector whose fingerprint changed.
#[derive(Clone)]
pub struct Planned {
    pub config: ConnectorConfig,
    pub fingerprint: u64,
}

/// Runs `connectors` until `shutdown` (or until each has stopped on its own).
pub async fn run(
    daemon: DaemonConfig,
    connectors: Vec<ConnectorConfig>,
    shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let planned = connectors
        .into_iter()
        .map(|config| Planned {
            config,
            fingerprint: 0,
        })
        .collect();
    run_reloading(daemon, planned, shutdown, None).await
}

struct Live {
    fingerprint: u64,
    generation: u64,
    stop: watch::Sender<bool>,
}

/// [`run`], taking each message of `reload` as the complete new set of connectors.
pub async fn run_reloading(
    daemon: DaemonConfig,
    connectors: Vec<Planned>,
    mut shutdown: watch::Receiver<bool>,
    mut reload: Option<mpsc::Receiver<Vec<Planned>>>,
) -> Result<()> {
    let mut set: JoinSet<(String, u64, Result<()>)> = JoinSet::new();
    let mut live: HashMap<String, Live> = HashMap::new();
    // Connectors to start once their previous run has ended (a changed file).
    let mut queued: HashMap<String, Planned> = HashMap::new();
    // The error of each connector whose last run failed.
    let mut failed: HashMap<String, Error> = HashMap::new();
    let mut generation = 0u64;
    let mut stopping = false;
    // Connectors whose file was removed, until their run has ended.
    let mut removed: Vec<String> = Vec::new();
    let mut start = |p: Planned, set: &mut JoinSet<_>, live: &mut HashMap<String, Live>| {
        generation += 1;
        let gen = generation;
        let (stop, stop_rx) = watch::channel(false);
        let name = p.config.name.clone();
        health::set(&name, health::State::Starting);
        live.insert(
            name.clone(),
            Live {
                fingerprint: p.fingerprint,
                generation: gen,
                stop,
            },
        );
        let d = daemon.clone();
        set.spawn(async move {
            // Its own task, so that a panic is this connector's failure, by name.
            let r = match tokio::spawn(run_one(d, p.config, stop_rx)).await {
                Ok(r) => r,
                Err(e) => {
                    health::set(&name, health::State::Failed(health::Problem::of(&Error::permanent(Code::Internal, format!("task failed: {e}")))));
                    Err(Error::permanent(
                        Code::Internal,
                        format!("connector {name}: internal error, its task failed: {e}; please report it"),
                    ))
                }
            };
            (name, gen, r)
        });
    };
    for p in connectors {
        start(p, &mut set, &mut live);
    }
    loop {
        tokio::select! {
            biased;
            _ = shutdown.changed(), if !stopping => {
                stopping = true;
                queued.clear();
                for l in live.values() {
                    let _ = l.stop.send(true);
                }
            }
            Some(next) = async { reload.as_mut()?.recv().await }, if !stopping => {
                let names: Vec<String> = next.iter().map(|p| p.config.name.clone()).collect();
                for (name, l) in &live {
                    if !names.contains(name) {
                        tracing::info!(connector = %name, "connector file removed; stopping it");
                        queued.remove(name);
                        removed.push(name.clone());
                        let _ = l.stop.send(true);
                    }
                }
                // A failed connector whose file is gone is forgotten.
                failed.retain(|name, _| {
                    let keep = names.contains(name);
                    if !keep {
                        health::remove(name);
                        crate::metrics::remove(name);
                    }
                    keep
                });
                for p in next {
                    let name = p.config.name.clone();
                    removed.retain(|n| n != &name);
                    match live.get(&name) {
                        Some(l) if l.fingerprint == p.fingerprint && !queued.contains_key(&name) => {}
                        Some(l) => {
                            tracing::info!(connector = %name, "connector file changed; restarting it");
                            let _ = l.stop.send(true);
                            queued.insert(name, p);
                        }
                        None => {
                            tracing::info!(connector = %name, was_failed = failed.contains_key(&name), "starting connector on reload");
                            failed.remove(&name);
                            start(p, &mut set, &mut live);
                        }
                    }
                }
            }
            r = set.join_next() => match r {
                None => break,
                Some(Ok((name, gen, result))) => {
                    if live.get(&name).is_some_and(|l| l.generation == gen) {
                        live.remove(&name);
                    }
                    match result {
                        Ok(()) => {
                            failed.remove(&name);
                        }
                        Err(e) => {
                            if daemon.fail_fast && !stopping {
                                tracing::error!(connector = %name, "fail_fast: stopping every connector");
                                stopping = true;
                                queued.clear();
                                for l in live.values() {
                                    let _ = l.stop.send(true);
                                }
                            }
                            failed.insert(name.clone(), e);
                        }
                    }
                    if removed.contains(&name) && !live.contains_key(&name) {
                        removed.retain(|n| n != &name);
                        failed.remove(&name);
                        health::remove(&name);
                        crate::metrics::remove(&name);
                    }
                    if let Some(p) = queued.remove(&name) {
                        if !stopping {
                            failed.remove(&name);
                            start(p, &mut set, &mut live);
                        }
                    }
                    if live.is_empty() && !stopping && !failed.is_empty() {
                        tracing::error!(failed = failed.len(), "every connector has stopped; pgcdc exits");
                    } else if live.is_empty() && !stopping {
                        // initial_only connectors that finished: a normal end.
                        tracing::info!("every connector has finished; pgcdc exits");
                    } else if !failed.is_empty() && !stopping {
                        tracing::warn!(failed = failed.len(), running = live.len(), "the other connectors go on");
                    }
                }
                Some(Err(e)) => {
                    tracing::error!(error = %e, "connector supervisor task failed");
                }
            }
        }
    }
    let mut errors: Vec<(String, Error)> = failed.into_iter().collect();
    errors.sort_by(|a, b| a.0.cmp(&b.0));
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0).1),
        n => {
            let code = errors[0].1.code();
            let text: Vec<String> = errors.iter().map(|(_, e)| e.to_string()).collect();
            Err(Error::permanent(
                code,
                format!("{n} connectors failed: {}", text.join("; ")),
            ))
        }
    }
}

/// Resolves once `stop` is true.
async fn stopped(mut stop: watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

async fn run_one(
    daemon: DaemonConfig,
    conn: ConnectorConfig,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    let mut backoff = BACKOFF_START;
    loop {
        let started = Instant::now();
        let run = pipeline::run(&daemon, &conn, stop.clone());
        tokio::pin!(run);
        let result = tokio::select! {
            biased;
            r = &mut run => r,
            _ = stopped(stop.clone()) => {
                // The pipeline sees the stop too and commits what is whole; one still starting
                // up (a broker that does not answer) gets shutdown_timeout, then is dropped.
                match tokio::time::timeout(daemon.shutdown_timeout, &mut run).await {
                    Ok(r) => r,
                    Err(_) => {
                        tracing::warn!(connector = %conn.name, timeout = ?daemon.shutdown_timeout,
                            "connector did not stop within shutdown_timeout; abandoning it (nothing undelivered was acknowledged)");
                        return Ok(());
                    }
                }
            }
        };
        match result {
            Ok(()) => {
                health::set(&conn.name, health::State::Stopped);
                tracing::info!(connector = %conn.name, "stopped");
                return Ok(());
            }
            Err(e) if e.kind() == crate::error::Kind::Fenced => {
                // High availability: the instance that fenced this one holds the slot now;
                // this one stands by (the next run waits for the slot's release).
                metrics::count_connector(&conn.name, ConnectorEvent::Error);
                health::set(&conn.name, health::State::Standby);
                tracing::warn!(connector = %conn.name, code = %e.code(), error = %e,
                    "another instance of this connector took over; standing by");
                tokio::select! {
                    biased;
                    _ = stop.changed() => return Ok(()),
                    _ = tokio::time::sleep(conn.takeover / 4) => {}
                }
                health::set(&conn.name, health::State::Starting);
            }
            Err(e) if e.is_transient() => {
                metrics::count_connector(&conn.name, ConnectorEvent::Error);
                health::set(
                    &conn.name,
                    health::State::Restarting(health::Problem::of(&e)),
                );
                if started.elapsed() >= HEALTHY_RUN {
                    backoff = BACKOFF_START;
                }
                tracing::warn!(connector = %conn.name, code = %e.code(), error = %e, next_step = e.next_step(), retry_in = ?backoff, "connector failed; restarting from the last checkpoint");
                tokio::select! {
                    biased;
                    _ = stop.changed() => return Ok(()),
                    _ = tokio::time::sleep(backoff) => {}
                }
                metrics::count_connector(&conn.name, ConnectorEvent::Restart);
                health::set(&conn.name, health::State::Starting);
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
            Err(e) => {
                metrics::count_connector(&conn.name, ConnectorEvent::Error);
                health::set(&conn.name, health::State::Failed(health::Problem::of(&e)));
                tracing::error!(connector = %conn.name, code = %e.code(), error = %e, next_step = e.next_step(), "connector stopped");
                return Err(e);
            }
        }
    }
}
