//! What the snapshots read from the catalog: captured tables, their keys and size estimates.

use crate::config::ConnectorConfig;
use crate::decode::pgoutput::RelationMsg;
use crate::decode::Relation;
use crate::error::{Code, Error, Result};

use super::*;

/// What a snapshot needs to know about a table besides its relation.
#[derive(Debug, Clone)]
pub struct SnapshotTable {
    pub relation: Relation,
    /// Primary-key columns in index order with their SQL type (`format_type`), the order
    /// chunks are cut in; empty for a table without a primary key.
    pub pk: Vec<(String, String)>,
    /// `pg_class.reltuples`, or None when the table was never analyzed.
    pub estimate: Option<u64>,
}

impl Catalog {
    /// The tables a snapshot reads, as `schema.table`, in name order: the captured tables,
    /// where with `publish_via_partition_root: false` a partitioned table stands for its
    /// leaf partitions (the stream names them, so their rows go to their own topics).
    pub async fn captured_table_names(&self, conn: &ConnectorConfig) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for t in self.captured_tables(conn).await? {
            if !t.partitioned || conn.publish_via_partition_root {
                out.push(t.name);
                continue;
            }
            let leaves = self
                .client
                .query(
                    "SELECT n.nspname || '.' || c.relname
                       FROM pg_partition_tree($1::text::regclass) p
                       JOIN pg_class c ON c.oid = p.relid
                       JOIN pg_namespace n ON n.oid = c.relnamespace
                      WHERE p.isleaf
                      ORDER BY 1",
                    &[&t.quoted],
                )
                .await
                .map_err(|e| self.err(e))?;
            for r in &leaves {
                out.push(r.col(0)?);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Whether the stream's relation `rel` is captured: by its own name, or, with
    /// `publish_via_partition_root: false` (pgoutput then names the partitions), as a
    /// partition of a captured partitioned table.
    pub async fn captures(&self, conn: &ConnectorConfig, rel: &Relation) -> Result<bool> {
        if conn.captures(&rel.schema, &rel.table) {
            return Ok(true);
        }
        if conn.publish_via_partition_root {
            return Ok(false);
        }
        let root = self
            .client
            .query_opt(
                "SELECT n.nspname, c.relname
                   FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE c.oid = pg_partition_root($1::oid::regclass) AND c.oid <> $1::oid",
                &[&rel.oid],
            )
            .await
            .map_err(|e| self.err(e))?;
        match root {
            Some(r) => Ok(conn.captures(&r.col::<String>(0)?, &r.col::<String>(1)?)),
            None => Ok(false),
        }
    }

    /// The relation of `schema.table` as pgoutput would announce it (columns in attnum
    /// order, no dropped or generated columns), its primary key and its size estimate.
    pub async fn snapshot_table(
        &mut self,
        qualified: &str,
        conn: &ConnectorConfig,
    ) -> Result<SnapshotTable> {
        let (schema, table) = crate::config::qualified(qualified)
            .map_err(|m| Error::permanent(Code::Snapshot, format!("table {qualified}: {m}")))?;
        let row = self
            .client
            .query_opt(
                "SELECT c.oid, c.relreplident::text, c.reltuples::float8
                   FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')",
                &[&schema, &table],
            )
            .await
            .map_err(|e| self.err(e))?
            .ok_or_else(|| {
                Error::permanent(
                    Code::Snapshot,
                    format!(
                        "PostgreSQL {}: table {} does not exist; check the table name",
                        self.server,
                        crate::sql::qualified(schema, table)
                    ),
                )
            })?;
        let oid: u32 = row.col(0)?;
        let ident: String = row.col(1)?;
        let reltuples: f64 = row.col(2)?;
        let cols = self
            .client
            .query(
                // Stored generated columns are published (and so snapshotted) only with
                // publish_generated_columns (PostgreSQL 18).
                "SELECT attname::text, atttypid, atttypmod FROM pg_attribute
                  WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped
                    AND (attgenerated = '' OR ($2 AND attgenerated = 's'))
                  ORDER BY attnum",
                &[&oid, &conn.publish_generated_columns],
            )
            .await
            .map_err(|e| self.err(e))?;
        let msg = RelationMsg {
            oid,
            namespace: schema.to_string(),
            name: table.to_string(),
            replica_identity: ident.bytes().next().unwrap_or(b'd'),
            columns: cols
                .iter()
                .map(|r| {
                    Ok(crate::decode::pgoutput::RelationColumn {
                        key: false,
                        name: r.col(0)?,
                        type_oid: r.col(1)?,
                        type_modifier: r.col(2)?,
                    })
                })
                .collect::<Result<_>>()?,
        };
        let relation = self.relation(&msg, conn).await?;
        let pk = self
            .client
            .query(
                "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod)
                   FROM pg_index i
                   CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
                   JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                  WHERE i.indrelid = $1 AND i.indisprimary
                  ORDER BY k.ord",
                &[&oid],
            )
            .await
            .map_err(|e| self.err(e))?
            .iter()
            .map(|r| Ok((r.col(0)?, r.col(1)?)))
            .collect::<Result<_>>()?;
        Ok(SnapshotTable {
            relation,
            pk,
            estimate: (reltuples >= 0.0).then_some(reltuples as u64),
        })
    }
}
