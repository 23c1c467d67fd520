//! Schema change events in the reader: a DDL message of the capture trigger
//! ([`crate::postgres::ddl`]) registers the new schemas of each captured table it touched,
//! before the first row of the new shape, and becomes one event on
//! `<topic_prefix>.schema_changes` in the DDL's transaction. A shape the subject's
//! compatibility refuses stops the connector at the DDL, naming it.
//!
//! The schemas are built from the catalog as it is when the reader meets the DDL, once the
//! DDL's transaction is visible there (the walsender can send a commit before it is); when
//! pgcdc is behind, a later DDL may already show there. The Relation message PostgreSQL
//! sends before the next row registers exactly that row's shape either way.

use std::sync::Arc;

use crate::avro::schema_change::TableChange;
use crate::error::{Code, Error, Result};
use crate::postgres::ddl::DdlMessage;
use crate::Lsn;

use super::reader::Reader;

impl Reader<'_> {
    pub(super) async fn schema_change(&mut self, content: &[u8], lsn: Lsn) -> Result<()> {
        let msg = match DdlMessage::parse(content) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(connector = %self.conn.name, lsn = %lsn, "DDL message ignored: {e}");
                return Ok(());
            }
        };
        if let Some(xid) = &msg.xid {
            if !self
                .catalog
                .wait_visible(xid, std::time::Duration::from_secs(30))
                .await?
            {
                tracing::warn!(connector = %self.conn.name, lsn = %lsn, xid = %xid,
                    "the DDL's transaction was not visible after 30 s; reading the catalog as it is");
            }
        }
        let mut changes = Vec::new();
        for t in &msg.tables {
            if !self.conn.captures(&t.schema, &t.table)
                || self.conn.outbox.is_table(&t.schema, &t.table)
            {
                continue;
            }
            let qualified = format!("{}.{}", t.schema, t.table);
            let st = match self.catalog.snapshot_table(&qualified, self.conn).await {
                Ok(st) if st.relation.oid == t.oid => st,
                // Dropped or replaced since: its Relation message registers what its rows need.
                Ok(_) => continue,
                Err(e) if !e.is_transient() => {
                    tracing::warn!(connector = %self.conn.name, table = %qualified, error = %e,
                        "table of a DDL not readable now; its schemas are registered at its next Relation message");
                    continue;
                }
                Err(e) => return Err(e),
            };
            let codec = match self.codec(Arc::new(st.relation)).await {
                Ok(c) => c,
                Err(e) if e.code() == Code::RegistryRefused => {
                    return Err(Error::permanent(
                        Code::RegistryRefused,
                        format!(
                            "connector {}: the DDL at LSN {lsn} ({}: {}) gives table {qualified} a shape its subject refuses: {e}",
                            self.conn.name,
                            msg.tag,
                            msg.ddl.trim()
                        ),
                    )
                    .with_next_step(format!(
                        "let the subject take the new shape (PUT /config/{}-value with a compatibility that allows it), or undo the DDL, then start the connector again",
                        crate::avro::schema::topic_name(&self.conn.topic_prefix, &t.schema, &t.table)
                    )));
                }
                Err(e) => return Err(e),
            };
            let subject = format!("{}-value", codec.topic);
            let version = self.registry.version(&subject, codec.value.id).await?;
            changes.push(TableChange {
                id: crate::sql::qualified(&t.schema, &t.table),
                topic: codec.topic.to_string(),
                key_schema_id: codec.key.as_ref().map(|k| k.id),
                value_schema_id: codec.value.id,
                value_schema_version: version,
            });
            tracing::info!(connector = %self.conn.name, table = %qualified, lsn = %lsn, value_schema_id = codec.value.id, "schemas registered at a DDL");
        }
        if self.schema_changes.is_none() || changes.is_empty() {
            return Ok(()); // no captured table touched
        }
        let cx = self.next_cx(0, lsn);
        let Some(events) = &self.schema_changes else {
            return Ok(());
        };
        let record = events.record(&self.origin, &cx, &msg.tag, &msg.ddl, &changes)?;
        self.send_in_order(record).await
    }
}
