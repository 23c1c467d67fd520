//! Runs every configured connector, restarts one after a transient error with capped
//! exponential backoff, and stops everything at the first permanent error.

use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::{ConnectorConfig, DaemonConfig};
use crate::error::{Code, Error, Result};
use crate::metrics::ConnectorEvent;
use crate::{health, metrics, pipeline};

const BACKOFF_START: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A run that lasted this long was healthy: the next failure starts the backoff afresh.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

pub async fn run(
    daemon: DaemonConfig,
    connectors: Vec<ConnectorConfig>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut set = JoinSet::new();
    for c in connectors {
        health::set(&c.name, health::State::Starting);
        set.spawn(run_one(daemon.clone(), c, stop_rx.clone()));
    }
    let mut first_err = None;
    loop {
        tokio::select! {
            biased;
            _ = shutdown.changed(), if !*stop_tx.borrow() => {
                let _ = stop_tx.send(true);
            }
            r = set.join_next() => match r {
                None => break,
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(e))) => {
                    if first_err.is_none() {
                        first_err = Some(e);
                    }
                    let _ = stop_tx.send(true);
                }
                Some(Err(e)) => {
                    if first_err.is_none() {
                        first_err = Some(Error::permanent(Code::Internal, format!("connector task failed: {e}")));
                    }
                    let _ = stop_tx.send(true);
                }
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
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
