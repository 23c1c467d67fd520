//! `snapshot.mode: initial_only`: the tables are snapshotted into Kafka, and the connector
//! stops without streaming.

use tokio::sync::watch;

use crate::checkpoint::Checkpoint;
use crate::error::{Code, Error, Result};
use crate::kafka::sink::{Sink, SinkRx};
use crate::postgres::snapshot::SnapshotConn;
use crate::snapshot::initial::{self, SnapTable};
use crate::Lsn;

use super::reader::Reader;
use super::sink_stopped;

/// `snapshot.mode: initial_only`: snapshot the tables, then stop. No slot: the snapshot is
/// exported by an ordinary transaction. After a crash, the ranges not yet committed are read
/// page by page (there is no stream to reconcile them with).
pub(super) async fn initial_only(
    mut reader: Reader<'_>,
    sink: Sink,
    rx: SinkRx,
    ck: Option<Checkpoint>,
    app: &str,
    mut shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let conn = reader.conn;
    crate::health::set(&conn.name, crate::health::State::Running);
    let mut exporter = None;
    let name: String;
    let (mut sink_task, work) = match ck {
        None => {
            let ex = SnapshotConn::connect(&conn.postgres, app).await?;
            name = ex.begin_and_export().await?;
            let tables = reader.snapshot_tables().await?;
            let plan = initial::plan(
                &conn.postgres,
                app,
                &name,
                Lsn::ZERO,
                conn.snapshot.chunk_rows,
                tables,
            )
            .await?;
            let task = tokio::spawn(sink.starting_at(Lsn::ZERO, plan.state()).run(rx));
            let work = initial::run(
                &conn.postgres,
                app,
                &name,
                conn.snapshot.workers,
                plan,
                reader.origin.clone(),
                reader.tx.clone(),
            );
            exporter = Some(ex);
            (
                task,
                futures_util::future::Either::Left(async move { work.await.map(|_| ()) }),
            )
        }
        Some(c) => {
            let state = c.snapshot.clone().unwrap_or_default().resume();
            if state.pending.is_empty() {
                tracing::info!(connector = %conn.name, "snapshot.mode initial_only: the snapshot is complete; nothing to do");
                return Ok(());
            }
            let mut tables = Vec::new();
            for w in &state.pending {
                if !tables.iter().any(|t: &SnapTable| t.name() == w.table) {
                    tables.push(reader.snap_table(&w.table).await?);
                }
            }
            let task = tokio::spawn(sink.starting_at(c.position()?, state.clone()).run(rx));
            let (pg, origin, tx) = (&conn.postgres, reader.origin.clone(), reader.tx.clone());
            let rows = conn.snapshot.chunk_rows;
            (
                task,
                futures_util::future::Either::Right(async move {
                    initial::run_paged(pg, app, rows, state, &tables, origin, tx).await
                }),
            )
        }
    };
    let finished = tokio::select! {
        biased;
        _ = shutdown.changed() => false,
        r = &mut sink_task => return Err(sink_stopped(r)),
        r = work => { r?; true }
    };
    drop(reader);
    let r = sink_task.await.map_err(|e| {
        Error::permanent(Code::Internal, format!("the Kafka sink failed: {e}")).with_source(e)
    })?;
    if let Some(ex) = exporter {
        let _ = ex.commit().await;
    }
    r?;
    if finished {
        tracing::info!(connector = %conn.name, "snapshot.mode initial_only: snapshot complete; not streaming");
    }
    Ok(())
}
