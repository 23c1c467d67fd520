//! Delivering a reader's changes: converted and encoded at once, or held until the commit
//! while unchanged TOASTed values wait to be read back ([`crate::toast`] says when a value
//! read back is exact).

use std::collections::HashMap;
use std::sync::Arc;

use crate::avro::envelope::{Op, TableCodec};
use crate::decode;
use crate::error::Result;
use crate::metrics;
use crate::postgres::snapshot::SnapshotConn;
use crate::postgres::toast::{fetch_rows, FetchedRow};
use crate::toast::{self, Held, HeldEvent};

use super::reader::Reader;
use crate::kafka::sink::{Record, SinkMsg};

/// Keys per query when reading rows back for unchanged TOASTed values.
const TOAST_FETCH_BATCH: usize = 500;

/// What a commit reads back from one table: its codec, the keys, the columns.
type Wanted = (Arc<TableCodec>, Vec<toast::KeyText>, Vec<usize>);

impl Reader<'_> {
    /// The events counter of a table and op, kept per relation.
    fn event_counter(&mut self, codec: &TableCodec, op: Op) -> &metrics::Counter {
        let connector = &self.conn.name;
        self.event_counters
            .entry((codec.rel.oid, op.code()))
            .or_insert_with(|| metrics::events(connector, &codec.rel.qualified_name(), op.code()))
    }

    /// Delivers one change now, or holds it when it waits for a TOAST fetch or follows one
    /// that does (events leave in transaction order).
    pub(super) async fn deliver(&mut self, mut ev: HeldEvent) -> Result<()> {
        if self.skips(&ev.codec, ev.event.op) {
            return Ok(());
        }
        let unchanged: Vec<usize> = ev.event.after.as_ref().map_or_else(Vec::new, |t| {
            t.iter()
                .enumerate()
                .filter(|(_, d)| matches!(d, decode::TupleData::UnchangedToast))
                .map(|(i, _)| i)
                .collect()
        });
        if !unchanged.is_empty() && self.toast.can_fetch(&ev.codec) {
            ev.fetch = ev
                .event
                .after
                .as_ref()
                .and_then(|t| toast::key_text(&ev.codec.rel, t))
                .map(|k| (k, unchanged));
        }
        if ev.fetch.is_some() || self.toast.holding() {
            if let Some(flush) = self.toast.hold(Held::Event(ev)) {
                tracing::warn!(
                    connector = %self.conn.name,
                    limit = self.conn.toast_hold_bytes,
                    "a transaction's events held for TOAST fetches passed toast_hold_bytes; \
                     its unchanged TOASTed values carry the placeholder"
                );
                for h in flush {
                    self.finish(h).await?;
                }
            }
            return Ok(());
        }
        self.finish(Held::Event(ev)).await
    }

    /// Sends an encoded record in its place in the transaction: held behind events waiting
    /// for TOAST fetches when there are any, else at once.
    pub(super) async fn send_in_order(&mut self, record: Record) -> Result<()> {
        if self.toast.holding() {
            if let Some(flush) = self.toast.hold(Held::Record(record)) {
                for h in flush {
                    self.finish(h).await?;
                }
            }
            return Ok(());
        }
        self.send(SinkMsg::Record(record)).await
    }

    /// Encodes and sends one event or tombstone.
    pub(super) async fn finish(&mut self, h: Held) -> Result<()> {
        let ev = match h {
            Held::Event(ev) => ev,
            Held::Tombstone { codec, key } => return self.send_tombstone(&codec, key).await,
            Held::Record(r) => return self.send(SinkMsg::Record(r)).await,
        };
        let op = ev.event.op;
        let enc = ev.event.encode(&ev.codec, &self.origin, &ev.cx)?;
        self.event_counter(&ev.codec, op).inc();
        if let (Some(meta), Some(t)) = (&self.txmeta, self.meta_txn.as_mut()) {
            t.count(&ev.codec.rel);
            if !t.begun {
                t.begun = true;
                let begin = meta.begin(t)?;
                self.send(SinkMsg::Record(begin)).await?;
            }
        }
        self.send(SinkMsg::Record(Record {
            topic: ev.codec.topic.clone(),
            key: enc.key,
            value: Some(enc.value),
            headers: enc.headers,
        }))
        .await
    }

    /// At the commit of transaction `xid`: reads back the rows that held events need, fills
    /// what the proof allows ([`crate::toast`]), and delivers everything in order.
    pub(super) async fn deliver_held(&mut self, mut held: Vec<Held>, xid: u32) -> Result<()> {
        // Per table: the keys to read and the columns wanted.
        let mut wanted: HashMap<u32, Wanted> = HashMap::new();
        for h in &held {
            if let Held::Event(HeldEvent {
                codec,
                fetch: Some((k, cols)),
                ..
            }) = h
            {
                if cols.is_empty() {
                    continue;
                }
                let w = wanted
                    .entry(codec.rel.oid)
                    .or_insert_with(|| (codec.clone(), Vec::new(), Vec::new()));
                if !w.1.contains(k) {
                    w.1.push(k.clone());
                }
                for c in cols {
                    if !w.2.contains(c) {
                        w.2.push(*c);
                    }
                }
            }
        }
        for (oid, (codec, keys, mut cols)) in wanted {
            cols.sort_unstable();
            let rows = self.fetch_rows(&codec, xid, &keys, &cols).await?;
            let mut fetched = 0u64;
            for h in held.iter_mut() {
                let Held::Event(ev) = h else { continue };
                if ev.codec.rel.oid != oid {
                    continue;
                }
                let (Some((k, want)), Some(after)) = (&ev.fetch, ev.event.after.as_mut()) else {
                    continue;
                };
                let Some(row) = rows.get(k).filter(|r| r.xmin == xid) else {
                    continue;
                };
                for &c in want {
                    let Some(pos) = cols.iter().position(|&x| x == c) else {
                        continue;
                    };
                    after[c] = match &row.values[pos] {
                        Some(v) => decode::TupleData::Text(v.clone()),
                        None => decode::TupleData::Null,
                    };
                    fetched += 1;
                }
            }
            if fetched > 0 {
                metrics::count(
                    metrics::TOAST_FETCHED,
                    &self.conn.name,
                    &codec.rel.qualified_name(),
                    fetched,
                );
            }
        }
        for h in held {
            self.finish(h).await?;
        }
        Ok(())
    }

    /// Rows of a table by key, for TOAST completion. A table that can no longer be read as
    /// the stream describes it (dropped, altered, no privilege) completes nothing: its
    /// events keep the placeholder. A lost connection is retried from the checkpoint.
    async fn fetch_rows(
        &mut self,
        codec: &TableCodec,
        xid: u32,
        keys: &[toast::KeyText],
        cols: &[usize],
    ) -> Result<HashMap<toast::KeyText, FetchedRow>> {
        if self.toast_conn.is_none() {
            let app = format!("pgcdc-{}-toast", self.conn.name);
            self.toast_conn = Some(SnapshotConn::connect(&self.conn.postgres, &app).await?);
        }
        let Some(conn) = self.toast_conn.as_ref() else {
            return Ok(HashMap::new());
        };
        let mut out = HashMap::new();
        for batch in keys.chunks(TOAST_FETCH_BATCH) {
            let refs: Vec<&toast::KeyText> = batch.iter().collect();
            match fetch_rows(conn, &codec.rel, xid, &refs, cols).await {
                Ok(Some(rows)) => out.extend(rows),
                Ok(None) => {
                    tracing::warn!(connector = %self.conn.name, table = %codec.rel.quoted_name(), xid,
                        "transaction did not become visible for reading back unchanged TOASTed values; they carry the placeholder");
                }
                Err(e) if e.is_transient() => {
                    self.toast_conn = None;
                    return Err(e);
                }
                Err(e) => {
                    tracing::warn!(connector = %self.conn.name, table = %codec.rel.quoted_name(), error = %e,
                        "cannot read rows back for unchanged TOASTed values; they carry the placeholder");
                }
            }
        }
        Ok(out)
    }

    /// Whether `skipped_operations` names `op`; a skipped event is counted, and a skipped
    /// truncate logged (one line each: it empties the table for every consumer that sees it).
    fn skips(&self, codec: &TableCodec, op: Op) -> bool {
        if !crate::change::skipped(op, &self.conn.skipped_operations) {
            return false;
        }
        let table = codec.rel.quoted_name();
        metrics::count_skipped(&self.conn.name, &table, op.code());
        if op == Op::Truncate {
            tracing::info!(connector = %self.conn.name, table = %table,
                "TRUNCATE not sent: skipped_operations includes t (set skipped_operations: [] to send truncate events)");
        }
        true
    }

    pub(super) async fn tombstone(
        &mut self,
        codec: &Arc<TableCodec>,
        key: apache_avro::types::Value,
    ) -> Result<()> {
        if crate::change::skipped(Op::Delete, &self.conn.skipped_operations) {
            return Ok(());
        }
        if self.toast.holding() {
            if let Some(flush) = self.toast.hold(Held::Tombstone {
                codec: codec.clone(),
                key,
            }) {
                for h in flush {
                    self.finish(h).await?;
                }
            }
            return Ok(());
        }
        self.send_tombstone(codec, key).await
    }

    async fn send_tombstone(
        &self,
        codec: &TableCodec,
        key: apache_avro::types::Value,
    ) -> Result<()> {
        let Some(ks) = &codec.key else { return Ok(()) };
        let key = ks.encode(key, &|| format!("table {}", codec.rel.quoted_name()))?;
        self.send(SinkMsg::Record(Record {
            topic: codec.topic.clone(),
            key: Some(key),
            value: None,
            headers: Vec::new(),
        }))
        .await
    }
}
