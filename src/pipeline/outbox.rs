//! The outbox router in the reader: an insert into the outbox table, or a logical decoding
//! message with the outbox prefix, becomes a record on its aggregate's topic, in its
//! PostgreSQL transaction's place (so in the same Kafka transaction). What cannot be
//! routed is sent as what it is (a change event, a message event), counted and logged.

use std::collections::HashMap;
use std::sync::Arc;

use crate::avro::outbox::{
    message_key_schema, message_value_schema, route_message, OutboxPlan, Routed,
};
use crate::avro::Registered;
use crate::decode::{Relation, Tuple};
use crate::error::Result;
use crate::kafka::sink::{Record, SinkMsg};
use crate::metrics::{self, ConnectorEvent};
use crate::Lsn;

use super::reader::Reader;

/// Which schemas a routed topic's subjects hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Source {
    Table,
    Message,
}

#[derive(Default)]
pub(super) struct Outbox {
    /// The outbox table's plan (by relation oid), or why its rows cannot be routed.
    plan: Option<(u32, Result<OutboxPlan, String>)>,
    registered: HashMap<(String, Source), Arc<(Registered, Registered)>>,
}

impl Outbox {
    /// A new Relation message of the outbox table.
    pub(super) fn relation(
        &mut self,
        conn: &str,
        rel: &Relation,
        cfg: &crate::config::OutboxConfig,
        payload_type: Option<crate::typemap::Composite>,
    ) {
        let plan = OutboxPlan::of(cfg, rel, payload_type);
        if let Err(why) = &plan {
            tracing::warn!(connector = conn, table = %rel.quoted_name(),
                "outbox table {why}; its inserts are sent as change events until it has the columns");
        }
        self.plan = Some((rel.oid, plan));
        self.registered.retain(|(_, s), _| *s != Source::Table);
    }
}

impl Reader<'_> {
    /// Routes an insert into the outbox table; false when it cannot be routed (the caller
    /// sends it as a change event).
    pub(super) async fn route_insert(&mut self, rel: &Relation, new: &Tuple) -> Result<bool> {
        let Some(ob) = self.outbox.as_ref() else {
            return Ok(false);
        };
        let routed = match &ob.plan {
            Some((oid, Ok(plan))) if *oid == rel.oid => plan.route(new).map(|r| (r, plan.clone())),
            Some((_, Err(why))) => Err(why.clone()),
            _ => Err("has not been announced".to_owned()),
        };
        match routed {
            Ok((r, plan)) => {
                let schemas = || (plan.key_schema(), plan.value_schema());
                self.send_routed(r, Source::Table, schemas).await?;
                Ok(true)
            }
            Err(why) => {
                self.unroutable(&format!(
                    "a row of outbox table {}: {why}",
                    rel.quoted_name()
                ));
                Ok(false)
            }
        }
    }

    /// Routes an outbox message; false when it cannot be routed.
    pub(super) async fn route_message(&mut self, content: &[u8]) -> Result<bool> {
        match route_message(&self.conn.outbox, content) {
            Ok(r) => {
                let schemas = || (message_key_schema(), message_value_schema());
                self.send_routed(r, Source::Message, schemas).await?;
                Ok(true)
            }
            Err(why) => {
                self.unroutable(&format!("an outbox message: {why}"));
                Ok(false)
            }
        }
    }

    fn unroutable(&self, what: &str) {
        metrics::count_connector(&self.conn.name, ConnectorEvent::OutboxUnroutable);
        tracing::warn!(connector = %self.conn.name,
            "{what}; it is sent as it came (change or message event) instead, counted in pgcdc_outbox_unroutable");
    }

    async fn send_routed(
        &mut self,
        r: Routed,
        source: Source,
        schemas: impl FnOnce() -> (serde_json::Value, serde_json::Value),
    ) -> Result<()> {
        let topic = self.conn.outbox.topic_for(&r.aggregate_type);
        let reg = self.routed_schemas(&topic, source, schemas).await?;
        let what = || format!("outbox event for aggregate type {:?}", r.aggregate_type);
        // A null payload is a null value, as Debezium's router (through AvroConverter) sends it.
        let value = match r.value {
            apache_avro::types::Value::Union(0, _) => None,
            v => Some(reg.1.encode(v, &what)?),
        };
        let record = Record {
            topic: topic.into(),
            key: Some(reg.0.encode(r.key, &what)?),
            value,
            headers: r.id.map(|id| vec![("id", id)]).unwrap_or_default(),
        };
        metrics::count_connector(&self.conn.name, ConnectorEvent::Outbox);
        self.send_in_order(record).await
    }

    async fn routed_schemas(
        &mut self,
        topic: &str,
        source: Source,
        schemas: impl FnOnce() -> (serde_json::Value, serde_json::Value),
    ) -> Result<Arc<(Registered, Registered)>> {
        let k = (topic.to_owned(), source);
        if let Some(r) = self.outbox.as_ref().and_then(|o| o.registered.get(&k)) {
            return Ok(r.clone());
        }
        let (key, value) = schemas();
        self.topics.ensure(topic, None, &[]).await?;
        let reg =
            Arc::new(crate::avro::register_topic(&mut self.registry, topic, key, value).await?);
        if let Some(o) = self.outbox.as_mut() {
            o.registered.insert(k, reg.clone());
        }
        Ok(reg)
    }

    /// A boundary after a non-transactional outbox message (its own commit point).
    pub(super) async fn message_boundary(
        &mut self,
        transactional: bool,
        msg_lsn: Lsn,
    ) -> Result<()> {
        if !transactional && self.txn.is_none() {
            self.send(SinkMsg::Boundary(msg_lsn)).await?;
        }
        Ok(())
    }
}
