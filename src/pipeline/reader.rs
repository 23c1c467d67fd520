//! The reader: pgoutput messages of the replication stream become change events for the
//! sink, in transaction order, with the table codecs registered on first sight.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use crate::avro::envelope::{ChangeContext, Origin, SnapshotMark, TableCodec};
use crate::avro::policy::ValuePolicy;
use crate::avro::registry::Registry;
use crate::avro::schema::{envelope_schema, field_names, key_schema, topic_name};
use crate::avro::Registered;
use crate::change::{self, Change};
use crate::config::ConnectorConfig;
use crate::decode::{self, Message, RelationCache};
use crate::error::{Code, Error, Result};
use crate::kafka::sink::{SinkMsg, SinkTx};
use crate::kafka::topics::Topics;
use crate::metrics;
use crate::postgres::snapshot::SnapshotConn;
use crate::postgres::Catalog;
use crate::prefix::WATERMARK as WATERMARK_PREFIX;
use crate::snapshot::incremental::Incremental;
use crate::toast::{HeldEvent, TxnToast};
use crate::Lsn;

pub(super) struct Reader<'a> {
    pub(super) conn: &'a ConnectorConfig,
    pub(super) catalog: Catalog,
    pub(super) registry: Registry,
    pub(super) topics: Topics,
    pub(super) relations: RelationCache,
    /// Codecs of captured tables; a relation without one is not captured.
    pub(super) codecs: HashMap<u32, Arc<TableCodec>>,
    pub(super) txn: Option<change::Transaction>,
    pub(super) last_commit: Lsn,
    pub(super) skip_before: Lsn,
    /// After `pgcdc takeover`: the LSN Debezium stopped at inside the first transaction
    /// to deliver, whose earlier changes it sent (see [`crate::checkpoint::debezium::Seam`]).
    pub(super) seam_within: Option<(Lsn, Option<u32>)>,
    pub(super) tx: SinkTx,
    pub(super) origin: Arc<Origin>,
    pub(super) snap: Incremental,
    pub(super) policy: Arc<ValuePolicy>,
    /// Unchanged TOASTed values of the open transaction; events held for a fetch.
    pub(super) toast: TxnToast,
    /// The connection `toast: fetch` reads rows back on, opened on first use.
    pub(super) toast_conn: Option<SnapshotConn>,
    /// Events counters by (relation, op), kept so the per-event path builds no label
    /// strings; a relation's are dropped when its codec is rebuilt (a rename, say).
    pub(super) event_counters: HashMap<(u32, &'static str), metrics::Counter>,
    /// Transaction metadata events, when `provide_transaction_metadata` is on.
    pub(super) txmeta: Option<crate::avro::txmeta::TxMeta>,
    /// The open transaction as its metadata events count it.
    pub(super) meta_txn: Option<crate::avro::txmeta::OpenTxn>,
    /// Logical decoding message events, when `messages.enabled` is on.
    pub(super) messages: Option<crate::avro::message::MessageCodec>,
    /// Heartbeat records, when `heartbeat.interval` is set.
    pub(super) heartbeat: Option<super::heartbeat::Beat>,
    /// The outbox router, when `outbox.table` or `outbox.message_prefix` is set.
    pub(super) outbox: Option<super::outbox::Outbox>,
    /// Schema change events, when `schema_changes` is on.
    pub(super) schema_changes: Option<crate::avro::schema_change::SchemaChangeCodec>,
}

impl Reader<'_> {
    pub(super) async fn send(&self, m: SinkMsg) -> Result<()> {
        self.tx
            .send(m)
            .await
            .map_err(|_| Error::transient(Code::SinkStopped, "the Kafka sink stopped"))
    }

    pub(super) async fn handle(&mut self, lsn: Lsn, data: Bytes) -> Result<()> {
        let msg = decode::decode(data).map_err(|e| {
            Error::permanent(
                Code::PostgresProtocol,
                format!("connector {}: at LSN {lsn}: {e}", self.conn.name),
            )
            .with_source(e)
        })?;
        match msg {
            Message::Begin {
                final_lsn,
                commit_ts_us,
                xid,
            } => {
                self.toast.begin();
                let commit_unix_us = commit_ts_us + decode::pgoutput::PG_EPOCH_OFFSET_MICROS;
                self.meta_txn = self.txmeta.as_ref().map(|_| crate::avro::txmeta::OpenTxn {
                    id: format!("{xid}:{}", final_lsn.0),
                    ts_ms: commit_unix_us.div_euclid(1000),
                    ..Default::default()
                });
                let skip = final_lsn < self.skip_before;
                let mut txn = change::Transaction::begin(xid, final_lsn, commit_unix_us, skip);
                if !skip {
                    if let Some((within, seam_xid)) = self.seam_within.take() {
                        // The first transaction to deliver is the one Debezium stopped in
                        // when it is that transaction (its xid) and spans where it stopped;
                        // else nothing of it is skipped (duplicates, never a loss).
                        if lsn <= within && within <= final_lsn && seam_xid.is_none_or(|x| x == xid)
                        {
                            tracing::info!(connector = %self.conn.name, xid, commit_lsn = %final_lsn, before = %within,
                                "takeover: Debezium delivered this transaction in part; skipping its changes before {within}");
                            txn.skip_changes_before = within;
                        }
                    }
                }
                self.txn = Some(txn);
            }
            Message::Commit {
                commit_lsn,
                end_lsn,
                commit_ts_us,
                ..
            } => {
                let txn = self
                    .txn
                    .take()
                    .ok_or_else(|| self.protocol("Commit without Begin"))?;
                if !txn.skip {
                    if self.toast.holding() {
                        let held = self.toast.take();
                        self.deliver_held(held, txn.xid).await?;
                    }
                    if let (Some(meta), Some(t)) = (&self.txmeta, self.meta_txn.take()) {
                        if t.begun {
                            self.send(SinkMsg::Record(meta.end(&t)?)).await?;
                        }
                    }
                    self.send(SinkMsg::TxnEnd {
                        commit_lsn,
                        end_lsn,
                        xid: txn.xid,
                        commit_ts_us: commit_ts_us + decode::pgoutput::PG_EPOCH_OFFSET_MICROS,
                    })
                    .await?;
                    metrics::count_connector(&self.conn.name, metrics::ConnectorEvent::Transaction);
                    self.beat(end_lsn).await?;
                }
                self.last_commit = end_lsn;
            }
            Message::Relation(r) => {
                let rel = self.catalog.relation(&r, self.conn).await?;
                let captured = self.catalog.captures(self.conn, &rel).await?;
                // A schema barrier: snapshot reads of this table take its new shape (rebuilt at
                // once: the incremental window looks the table up for every change).
                let name = rel.qualified_name();
                let reshaped = self.snap.table(&name).is_some_and(|t| {
                    let shape = |r: &decode::Relation| -> Vec<(String, u32, i32)> {
                        r.columns
                            .iter()
                            .map(|c| (c.name.clone(), c.type_oid, c.type_modifier))
                            .collect()
                    };
                    shape(&t.st.relation) != shape(&rel)
                });
                if reshaped {
                    self.snap.forget_table(&name);
                    self.snap_table(&name).await?;
                }
                let rel = self.relations.insert(rel);
                if captured {
                    let codec = self.codec(rel).await?;
                    self.codecs.insert(r.oid, Arc::new(codec));
                } else {
                    self.codecs.remove(&r.oid);
                }
            }
            Message::Type { oid, .. } => self.catalog.invalidate_type(oid),
            Message::Origin { lsn, name } => {
                if let Some(t) = self.txn.as_mut() {
                    t.repl_origin = Some(Arc::new(crate::avro::envelope::ReplOrigin { name, lsn }));
                }
            }
            Message::Message {
                transactional,
                lsn: msg_lsn,
                prefix,
                content,
            } => {
                if prefix == WATERMARK_PREFIX && self.txn.as_ref().is_some_and(|t| !t.skip) {
                    self.watermark(&content, lsn).await?;
                } else if prefix == crate::prefix::HEARTBEAT {
                    // pgcdc's own heartbeat action: a position to acknowledge when the
                    // captured tables are idle.
                    if !transactional && self.txn.is_none() && msg_lsn >= self.skip_before {
                        self.send(SinkMsg::Boundary(msg_lsn)).await?;
                        self.beat(msg_lsn).await?;
                    }
                } else if prefix == crate::prefix::DDL {
                    if self.schema_changes.is_some()
                        && transactional
                        && self.txn.as_ref().is_some_and(|t| !t.skip)
                    {
                        self.schema_change(&content, msg_lsn).await?;
                    }
                } else if self.conn.outbox.message_prefix.as_deref() == Some(prefix.as_str()) {
                    let skipped = if transactional {
                        self.txn.as_ref().is_none_or(|t| t.skip)
                    } else {
                        msg_lsn < self.skip_before
                    };
                    if skipped {
                    } else if self.route_message(&content).await? {
                        self.message_boundary(transactional, msg_lsn).await?;
                    } else {
                        self.ensure_message_codec().await?;
                        self.message(transactional, msg_lsn, &prefix, &content)
                            .await?;
                    }
                } else if self.messages.is_some() && self.conn.messages.wants(&prefix) {
                    self.message(transactional, msg_lsn, &prefix, &content)
                        .await?;
                }
            }
            Message::Insert { rel, new } => {
                if self.is_signal(rel) {
                    return self.signal(&new).await;
                }
                let Some((codec, cx)) = self.change(rel, lsn)? else {
                    return Ok(());
                };
                if self.is_outbox(&codec) {
                    let r = codec.rel.clone();
                    if self.route_insert(&r, &new).await? {
                        return Ok(());
                    }
                }
                self.snap.note_change(&codec.rel, cx.xid, &[&new]);
                self.toast.on_insert(&codec.rel, &new);
                let changes = change::insert(new);
                self.send_changes(&codec, changes, cx, rel, lsn).await?;
            }
            Message::Update {
                rel,
                old,
                key_only,
                new,
            } => {
                let Some((codec, cx)) = self.change(rel, lsn)? else {
                    return Ok(());
                };
                if self.is_outbox(&codec) {
                    return Ok(()); // only inserts are routed, as Debezium's router
                }
                match &old {
                    Some(o) => self.snap.note_change(&codec.rel, cx.xid, &[o, &new]),
                    None => self.snap.note_change(&codec.rel, cx.xid, &[&new]),
                }
                let new = self.toast.update(&codec.rel, old.as_ref(), key_only, new);
                let changes =
                    change::update(&codec, old.as_ref(), key_only, new, self.conn.tombstones)?;
                self.send_changes(&codec, changes, cx, rel, lsn).await?;
            }
            Message::Delete { rel, old, key_only } => {
                let Some((codec, cx)) = self.change(rel, lsn)? else {
                    return Ok(());
                };
                if self.is_outbox(&codec) {
                    return Ok(());
                }
                self.snap.note_change(&codec.rel, cx.xid, &[&old]);
                self.toast.on_delete(&codec.rel, &old);
                let changes = change::delete(&codec, &old, key_only, self.conn.tombstones)?;
                self.send_changes(&codec, changes, cx, rel, lsn).await?;
            }
            Message::Truncate { rels, .. } => {
                for rel in rels {
                    let Some((codec, cx)) = self.change(rel, lsn)? else {
                        continue;
                    };
                    if self.is_outbox(&codec) {
                        continue;
                    }
                    self.snap.note_truncate(&codec.rel);
                    self.toast.on_truncate(&codec.rel);
                    self.send_changes(&codec, change::truncate(), cx, rel, lsn)
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// Delivers the events one row change became, in order; the second event of a
    /// primary-key change gets its own position in the transaction.
    async fn send_changes(
        &mut self,
        codec: &Arc<TableCodec>,
        changes: Vec<Change>,
        cx: ChangeContext,
        rel: u32,
        lsn: Lsn,
    ) -> Result<()> {
        let mut cx = Some(cx);
        for c in changes {
            match c {
                Change::Event(e) => {
                    let this_cx = match cx.take() {
                        Some(first) if !e.follows => first,
                        _ => self.next_cx(rel, lsn),
                    };
                    self.deliver(HeldEvent::new(codec, e, this_cx)).await?;
                }
                Change::Tombstone { key } => self.tombstone(codec, key).await?,
            }
        }
        Ok(())
    }

    /// A logical decoding message as an `op: m` event: in its transaction when it is
    /// transactional, else at once, as a boundary of its own (its LSN is the end of its
    /// record, so a restart from there does not decode it again).
    async fn message(
        &mut self,
        transactional: bool,
        msg_lsn: Lsn,
        prefix: &str,
        content: &[u8],
    ) -> Result<()> {
        if transactional && self.txn.as_ref().is_none_or(|t| t.skip) {
            return Ok(());
        }
        if !transactional && msg_lsn < self.skip_before {
            return Ok(()); // delivered before the checkpoint
        }
        let cx = if transactional {
            self.next_cx(0, msg_lsn)
        } else {
            ChangeContext {
                snapshot: SnapshotMark::False,
                xid: 0,
                commit_lsn: msg_lsn,
                commit_ts_us: crate::clock::now_micros(),
                lsn: msg_lsn,
                last_commit_lsn: self.last_commit,
                total_order: 0,
                table_order: 0,
                repl_origin: None,
                source: None,
            }
        };
        let Some(codec) = &self.messages else {
            return Ok(());
        };
        let record = codec.record(prefix, content, transactional, &self.origin, &cx)?;
        self.send(SinkMsg::Record(record)).await?;
        // Outside a transaction (always, with pgoutput's whole-transaction decoding) it
        // is a boundary of its own; inside one it commits with it.
        if !transactional && self.txn.is_none() {
            self.send(SinkMsg::Boundary(msg_lsn)).await?;
        }
        Ok(())
    }

    fn is_outbox(&self, codec: &TableCodec) -> bool {
        self.outbox.is_some()
            && self
                .conn
                .outbox
                .is_table(&codec.rel.schema, &codec.rel.table)
    }

    /// The message codec, registered on first use when `messages` is off (an outbox message
    /// that cannot be routed is sent as a message event).
    async fn ensure_message_codec(&mut self) -> Result<()> {
        if self.messages.is_none() {
            let codec = crate::avro::message::MessageCodec::register(
                &mut self.registry,
                &self.conn.topic_prefix,
            )
            .await?;
            self.topics.ensure(codec.topic(), None, &[]).await?;
            self.messages = Some(codec);
        }
        Ok(())
    }

    /// At a boundary `at` (everything before it handed to the sink, no transaction open):
    /// a heartbeat record if one is due, committed with the checkpoint of `at`.
    pub(super) async fn beat(&mut self, at: Lsn) -> Result<()> {
        let Some(beat) = self.heartbeat.as_mut() else {
            return Ok(());
        };
        if !beat.due() {
            return Ok(());
        }
        let record = beat
            .codec
            .record(crate::clock::now_micros().div_euclid(1000))?;
        self.send(SinkMsg::Record(record)).await?;
        self.send(SinkMsg::Boundary(at)).await?;
        metrics::count_connector(&self.conn.name, metrics::ConnectorEvent::Heartbeat);
        Ok(())
    }

    pub(super) fn protocol(&self, what: &str) -> Error {
        Error::permanent(
            Code::PostgresProtocol,
            format!(
                "connector {}: pgoutput protocol error: {what}",
                self.conn.name
            ),
        )
    }

    /// The codec and position of a change to relation `rel`, or None when the change is not
    /// delivered (table not captured, or transaction before the checkpoint).
    pub(super) fn change(
        &mut self,
        rel: u32,
        lsn: Lsn,
    ) -> Result<Option<(Arc<TableCodec>, ChangeContext)>> {
        if self.relations.get(rel).is_none() {
            return Err(self.protocol(&format!(
                "row change for relation {rel} before its Relation message"
            )));
        }
        let skip = self
            .txn
            .as_ref()
            .map(|t| t.skip || lsn < t.skip_changes_before)
            .ok_or_else(|| self.protocol("row change outside a transaction"))?;
        let Some(codec) = self.codecs.get(&rel).cloned() else {
            return Ok(None);
        };
        if skip {
            return Ok(None);
        }
        Ok(Some((codec, self.next_cx(rel, lsn))))
    }

    pub(super) fn next_cx(&mut self, rel: u32, lsn: Lsn) -> ChangeContext {
        match self.txn.as_mut() {
            Some(t) => t.next_context(rel, lsn, self.last_commit),
            None => change::outside_transaction(lsn, self.last_commit),
        }
    }

    /// Schemas registered and topic created for a captured relation.
    pub(super) async fn codec(&mut self, rel: Arc<decode::Relation>) -> Result<TableCodec> {
        self.event_counters.retain(|(oid, _), _| *oid != rel.oid);
        let prefix = &self.conn.topic_prefix;
        let topic = topic_name(prefix, &rel.schema, &rel.table);
        self.topics.ensure(&topic, None, &[]).await?;
        let key = match key_schema(prefix, &rel)? {
            Some(b) => {
                let id = self
                    .registry
                    .register(&format!("{topic}-key"), &b.json)
                    .await?;
                Some(Registered::new(id, b.schema)?)
            }
            None => {
                tracing::warn!(table = %rel.quoted_name(), "table has no primary key and no key_columns: its events have a null key");
                None
            }
        };
        let subject = format!("{topic}-value");
        if self.outbox.is_some() && self.conn.outbox.is_table(&rel.schema, &rel.table) {
            let payload = rel
                .columns
                .iter()
                .find(|c| c.name == self.conn.outbox.fields.payload);
            let payload_type = match payload {
                Some(c) => self.catalog.composite(c.type_oid).await?,
                None => None,
            };
            if let Some(ob) = self.outbox.as_mut() {
                ob.relation(&self.conn.name, &rel, &self.conn.outbox, payload_type);
            }
        }
        let (rules, mut fields, mut v) = value_schema(self.conn, &rel)?;
        let id = match self.registry.try_register(&subject, &v.json).await? {
            Ok(id) => id,
            Err(reason) => {
                // Subjects registered before pgcdc carried NOT NULL hold optional fields,
                // and a compatibility level (BACKWARD) refuses required ones: keep every
                // field optional, as those subjects are, rather than stop the stream.
                tracing::warn!(connector = %self.conn.name, subject = %subject, reason = %reason,
                    "the subject's compatibility level refuses required (NOT NULL) fields; registering them optional, as before \
                     (to carry NOT NULL, set the subject's compatibility to NONE for one registration, or use a new topic prefix)");
                fields = crate::avro::fields::all_optional(&fields);
                v = envelope_schema(prefix, &rel, &fields, &rules)?;
                self.registry.register(&subject, &v.json).await?
            }
        };
        Ok(TableCodec {
            field_names: field_names(&rel)?,
            fields,
            rules,
            topic: topic.into(),
            key,
            value: Registered::new(id, v.schema)?,
            rel,
            policy: self.policy.clone(),
        })
    }
}

/// A captured table's column rules, field specs and value (envelope) schema, as its codec
/// registers it first: NOT NULL columns required, unless a rule replaces the type.
pub(super) fn value_schema(
    conn: &ConnectorConfig,
    rel: &decode::Relation,
) -> Result<(
    Vec<crate::avro::columns::Rule>,
    Vec<crate::avro::fields::FieldSpec>,
    crate::avro::schema::Built,
)> {
    let rules = crate::avro::columns::rules(conn, rel)?;
    let mut fields = crate::avro::fields::field_specs(rel);
    for (spec, rule) in fields.iter_mut().zip(&rules) {
        if rule.replaces_type() {
            *spec = crate::avro::fields::FieldSpec::optional();
        }
    }
    let v = envelope_schema(&conn.topic_prefix, rel, &fields, &rules)?;
    Ok((rules, fields, v))
}
