//! Signals and the incremental snapshot's watermarks, as the reader meets them in the
//! stream: a signal row asks for tables, a watermark message opens or closes a chunk's window.

use std::sync::Arc;

use crate::avro::envelope::SnapshotMark;
use crate::decode;
use crate::error::{Code, Error, Result};
use crate::kafka::sink::SinkMsg;
use crate::metrics;
use crate::snapshot::incremental::{self, Watermark};
use crate::snapshot::initial::{self, SnapTable};
use crate::Lsn;

use super::reader::Reader;

impl Reader<'_> {
    pub(super) fn is_signal(&self, rel: u32) -> bool {
        // Per insert: compare the parts, no formatting.
        let Some(signal) = &self.conn.signal_table else {
            return false;
        };
        self.relations
            .get(rel)
            .is_some_and(|r| signal.is(&r.schema, &r.table))
    }

    /// A row inserted into the signal table: Debezium's `execute-snapshot` starts an
    /// incremental snapshot of the named tables. A bad signal is logged and ignored: the
    /// stream must not stop for it (`pgcdc snapshot` checks tables before signalling).
    pub(super) async fn signal(&mut self, row: &decode::Tuple) -> Result<()> {
        if self.txn.as_ref().is_none_or(|t| t.skip) {
            return Ok(());
        }
        let Some(rel) = self.conn.signal_table.clone() else {
            return Ok(());
        };
        let cols = self
            .relations
            .iter()
            .find(|r| rel.is(&r.schema, &r.table))
            .map(|r| r.columns.iter().map(|c| c.name.clone()).collect::<Vec<_>>())
            .unwrap_or_default();
        let text = |name: &str| {
            cols.iter()
                .position(|c| c == name)
                .and_then(|i| match row.get(i) {
                    Some(decode::TupleData::Text(b)) => {
                        Some(String::from_utf8_lossy(b).into_owned())
                    }
                    _ => None,
                })
        };
        let id = text("id").unwrap_or_default();
        let kind = text("type").unwrap_or_default();
        let tables = match incremental::parse_signal(&kind, text("data").as_deref()) {
            Ok(Some(t)) => t,
            Ok(None) => {
                tracing::info!(connector = %self.conn.name, signal = %id, kind = %kind, "ignoring signal of a type pgcdc does not act on");
                return Ok(());
            }
            Err(e) => {
                metrics::count_connector(&self.conn.name, metrics::ConnectorEvent::SignalError);
                tracing::error!(connector = %self.conn.name, signal = %id, table = %rel, "signal ignored: {e}");
                return Ok(());
            }
        };
        let mut work = Vec::new();
        for t in tables {
            let (schema, table) = match crate::config::qualified(&t) {
                Ok(st) => st,
                Err(e) => {
                    metrics::count_connector(&self.conn.name, metrics::ConnectorEvent::SignalError);
                    tracing::error!(connector = %self.conn.name, signal = %id, "signal ignored for {t:?}: {e}");
                    continue;
                }
            };
            if self.conn.outbox.is_table(schema, table) {
                metrics::count_connector(&self.conn.name, metrics::ConnectorEvent::SignalError);
                tracing::error!(connector = %self.conn.name, signal = %id, table = %t, "signal ignored: the outbox table's rows are routed as they are inserted, not snapshotted");
                continue;
            }
            if !self.conn.captures(schema, table) {
                metrics::count_connector(&self.conn.name, metrics::ConnectorEvent::SignalError);
                tracing::error!(connector = %self.conn.name, signal = %id, table = %t, "signal ignored: the connector does not capture this table");
                continue;
            }
            let st = match self.snap_table(&t).await {
                Ok(st) => st,
                Err(e) if !e.is_transient() => {
                    metrics::count_connector(&self.conn.name, metrics::ConnectorEvent::SignalError);
                    tracing::error!(connector = %self.conn.name, signal = %id, table = %t, error = %e, "signal ignored");
                    continue;
                }
                Err(e) => return Err(e),
            };
            if st.st.pk.is_empty() {
                metrics::count_connector(&self.conn.name, metrics::ConnectorEvent::SignalError);
                tracing::error!(connector = %self.conn.name, signal = %id, table = %t, "signal ignored: incremental snapshots need a primary key; add one");
                continue;
            }
            tracing::info!(connector = %self.conn.name, signal = %id, table = %t, "incremental snapshot requested");
            work.push(incremental::whole_table(&t, st.st.estimate.unwrap_or(0)));
        }
        if work.is_empty() {
            return Ok(());
        }
        let state = self.snap.add(work);
        self.send(SinkMsg::Progress(state)).await?;
        self.next_chunk().await
    }

    /// Asks the driver for the next chunk when none is in flight.
    pub(super) async fn next_chunk(&mut self) -> Result<()> {
        let Some(w) = self.snap.next_work().cloned() else {
            return Ok(());
        };
        if !self.snap.has_messages() {
            return Err(Error::permanent(Code::Snapshot, format!(
                "connector {}: table {} has snapshot work left (an interrupted initial snapshot or a signal), \
                 and finishing it consistently needs logical decoding messages, which pgoutput sends from \
                 PostgreSQL 14 on; upgrade, or delete the checkpoint to snapshot again from scratch",
                self.conn.name, crate::sql::raw_table(&w.table)
            )));
        }
        let t = self.snap_table(&w.table).await?;
        if t.st.pk.is_empty() {
            return Err(Error::permanent(Code::Snapshot, format!(
                "connector {}: the initial snapshot of table {} was interrupted, and a table without a primary \
                 key cannot be finished consistently while streaming; add a primary key, or delete the checkpoint \
                 to snapshot again from scratch",
                self.conn.name, crate::sql::raw_table(&w.table)
            )));
        }
        self.snap
            .request(t, &w, self.conn.snapshot.incremental_chunk_rows)
    }

    /// A watermark of ours in the stream: opens the chunk's window, or closes it and emits
    /// what of the chunk the stream did not overtake.
    pub(super) async fn watermark(&mut self, content: &[u8], lsn: Lsn) -> Result<()> {
        let Ok(w) = serde_json::from_slice::<Watermark>(content) else {
            return Ok(());
        };
        if w.connector != self.conn.name {
            return Ok(());
        }
        let Some(c) = self.snap.watermark(&w)? else {
            return Ok(());
        };
        let mark = if c.initial {
            SnapshotMark::True
        } else {
            SnapshotMark::Incremental
        };
        let at = self.txn.as_ref().map_or(
            initial::Position {
                lsn,
                xid: 0,
                ts_us: 0,
            },
            |x| initial::Position {
                lsn,
                xid: x.xid,
                ts_us: x.commit_ts_us,
            },
        );
        let records = initial::encode_reads(&c.table, &c.rows, &self.origin, at, |_, _| mark)?;
        metrics::count_snapshot_rows(
            &self.conn.name,
            &c.table.codec.rel.qualified_name(),
            records.len() as u64,
        );
        self.send(SinkMsg::Chunk {
            records,
            progress: c.progress,
            permit: None,
        })
        .await?;
        if c.finished {
            tracing::info!(connector = %self.conn.name, table = %c.table.name(), "incremental snapshot of table read (commits with this transaction)");
        }
        self.next_chunk().await
    }

    /// The snapshot view of a captured table (its codec registered), cached.
    pub(super) async fn snap_table(&mut self, name: &str) -> Result<SnapTable> {
        if let Some(t) = self.snap.table(name) {
            return Ok(t.clone());
        }
        let st = self.catalog.snapshot_table(name, self.conn).await?;
        self.keep_snap_table(name, st).await
    }

    /// [`Self::snap_table`] of a table read from the catalog: its codec registered, cached.
    async fn keep_snap_table(
        &mut self,
        name: &str,
        st: crate::postgres::catalog::SnapshotTable,
    ) -> Result<SnapTable> {
        let codec = Arc::new(self.codec(Arc::new(st.relation.clone())).await?);
        let t = SnapTable::new(st, codec)?;
        self.snap.keep_table(name, t.clone());
        Ok(t)
    }

    /// Every captured table, for an initial snapshot.
    pub(super) async fn snapshot_tables(&mut self) -> Result<Vec<SnapTable>> {
        let names: Vec<String> = self
            .catalog
            .captured_table_names(self.conn)
            .await?
            .into_iter()
            // The outbox table's rows are routed as they are inserted, never snapshotted.
            .filter(|n| {
                !crate::config::qualified(n).is_ok_and(|(s, t)| self.conn.outbox.is_table(s, t))
            })
            .collect();
        let mut tables = Vec::with_capacity(names.len());
        for n in &names {
            tables.push(self.catalog.snapshot_table(n, self.conn).await?);
        }
        // Their topics in one request; each table's codec then finds its topic there.
        let topics: Vec<String> = tables
            .iter()
            .map(|st| {
                let rel = &st.relation;
                crate::avro::schema::topic_name(&self.conn.topic_prefix, &rel.schema, &rel.table)
            })
            .collect();
        self.topics.ensure_all(&topics).await?;
        let mut out = Vec::with_capacity(names.len());
        for (n, st) in names.iter().zip(tables) {
            out.push(self.keep_snap_table(n, st).await?);
        }
        Ok(out)
    }
}
