//! The publication pgcdc manages (and the signal table): created, checked, extended.

use crate::config::{ConnectorConfig, TableName};
use crate::error::{Code, Error, Result};
use crate::sql::{sql_ident, sql_literal};

use super::*;

/// A publication whose `publish_via_partition_root` differs from the connector's.
pub(super) struct RootFix {
    pub(super) managed: bool,
    /// `publish_via_partition_root = true`
    pub(super) set: String,
    pub(super) alter: String,
    /// The one-line problem for a publication pgcdc does not manage.
    pub(super) problem: String,
}

pub(super) fn managed_comment(connector: &str) -> String {
    format!("managed by pgcdc connector {connector}")
}

/// What pgcdc reads of the connector's publication.
pub(super) struct PublicationInfo {
    all_tables: bool,
    via_root: bool,
    /// `publish_generated_columns = stored` (PostgreSQL 18).
    generated: bool,
    /// It carries pgcdc's comment for this connector.
    managed: bool,
}

impl Catalog {
    /// The connector's publication, if it exists.
    async fn publication_info(&self, conn: &ConnectorConfig) -> Result<Option<PublicationInfo>> {
        let row = self
            .client
            .query_opt(
                "SELECT puballtables, pubviaroot, coalesce(obj_description(oid, 'pg_publication'), ''),
                        coalesce(to_jsonb(p) ->> 'pubgencols', '') = 's'
                   FROM pg_publication p WHERE pubname = $1",
                &[&conn.publication_name()],
            )
            .await
            .map_err(|e| self.err(e))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let comment: String = row.col(2)?;
        Ok(Some(PublicationInfo {
            all_tables: row.col(0)?,
            via_root: row.col(1)?,
            generated: row.col(3)?,
            managed: comment == managed_comment(&conn.name),
        }))
    }

    pub async fn publication_exists(&self, name: &str) -> Result<bool> {
        let row = self
            .client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)",
                &[&name],
            )
            .await
            .map_err(|e| self.err(e))?;
        row.col(0)
    }

    /// Creates the connector's publication when missing: `FOR ALL TABLES` when no table
    /// filter is set, else for the captured tables. An existing publication is left as it is
    /// (events are filtered by the connector's table filter anyway).
    pub async fn ensure_publication(&self, conn: &ConnectorConfig) -> Result<()> {
        let name = conn.publication_name();
        if self.publication_exists(&name).await? {
            return Ok(());
        }
        let sql = if conn.tables.include.is_empty() && conn.tables.exclude.is_empty() {
            format!("CREATE PUBLICATION {} FOR ALL TABLES", sql_ident(&name))
        } else {
            let tables = self.captured_tables(conn).await?;
            if tables.is_empty() {
                return Err(Error::permanent(Code::Preflight, format!(
                    "connector {}: no existing table matches tables.include/exclude; nothing to publish",
                    conn.name
                )));
            }
            let list: Vec<&str> = tables.iter().map(|t| t.quoted.as_str()).collect();
            format!(
                "CREATE PUBLICATION {} FOR TABLE {}",
                sql_ident(&name),
                list.join(", ")
            )
        };
        let sql = format!(
            "{sql} WITH (publish_via_partition_root = {}{})",
            conn.publish_via_partition_root,
            if conn.publish_generated_columns {
                ", publish_generated_columns = stored"
            } else {
                ""
            }
        );
        tracing::info!(publication = %name, "creating publication");
        // The comment marks the publication as pgcdc's: tables are added to it as the
        // connector's table filter grows. A publication someone else made is never altered.
        let sql = format!(
            "{sql}; COMMENT ON PUBLICATION {} IS {}",
            sql_ident(&name),
            sql_literal(&managed_comment(&conn.name))
        );
        self.client
            .batch_execute(&sql)
            .await
            .map_err(|e| self.err(e))
    }

    /// Captured tables the publication does not publish (none for FOR ALL TABLES), and
    /// whether pgcdc manages the publication. A table missing there would be snapshotted
    /// but never streamed.
    pub async fn publication_gaps(&self, conn: &ConnectorConfig) -> Result<(bool, Vec<String>)> {
        let name = conn.publication_name();
        let Some(PublicationInfo {
            all_tables: all,
            managed,
            ..
        }) = self.publication_info(conn).await?
        else {
            return Ok((true, Vec::new()));
        };
        if all {
            return Ok((managed, Vec::new()));
        }
        let published: Vec<String> = self
            .client
            .query(
                // A partition counts for its partitioned root (a publication without
                // publish_via_partition_root lists the partitions, not the root).
                "SELECT DISTINCT format('%I.%I', n.nspname, r.relname)
                   FROM pg_publication_tables t
                   CROSS JOIN LATERAL (SELECT format('%I.%I', t.schemaname, t.tablename)::regclass AS rel) x
                   JOIN pg_class r ON r.oid = coalesce(pg_partition_root(x.rel), x.rel)
                   JOIN pg_namespace n ON n.oid = r.relnamespace
                  WHERE t.pubname = $1",
                &[&name],
            )
            .await
            .map_err(|e| self.err(e))?
            .iter()
            .map(|r| r.col(0))
            .collect::<Result<_>>()?;
        let missing = self
            .captured_tables(conn)
            .await?
            .into_iter()
            .filter(|t| !published.contains(&t.quoted))
            .map(|t| t.quoted)
            .collect();
        Ok((managed, missing))
    }

    /// When captured tables are partitioned and the publication's
    /// `publish_via_partition_root` is not the connector's: what to run, and whether pgcdc
    /// manages the publication (then it runs it at start).
    pub(super) async fn partition_root_mismatch(
        &self,
        conn: &ConnectorConfig,
    ) -> Result<Option<RootFix>> {
        let name = conn.publication_name();
        let Some(info) = self.publication_info(conn).await? else {
            return Ok(None);
        };
        if info.via_root == conn.publish_via_partition_root {
            return Ok(None);
        }
        let partitioned: Vec<String> = self
            .captured_tables(conn)
            .await?
            .into_iter()
            .filter(|t| t.partitioned)
            .map(|t| t.quoted)
            .collect();
        if partitioned.is_empty() {
            return Ok(None);
        }
        let set = format!(
            "publish_via_partition_root = {}",
            conn.publish_via_partition_root
        );
        let alter = format!("ALTER PUBLICATION {} SET ({set})", crate::sql::ident(&name));
        let problem = if conn.publish_via_partition_root {
            format!(
                "publication {} publishes the partitions of {} under their own names (publish_via_partition_root = false), \
                 so each partition would get its own topic; run {alter}, or set publish_via_partition_root: false",
                crate::sql::ident(&name),
                partitioned.join(", ")
            )
        } else {
            format!(
                "publication {} publishes {} as the partitioned table (publish_via_partition_root = true) but the \
                 connector sets publish_via_partition_root: false; run {alter}, or remove the setting",
                crate::sql::ident(&name),
                partitioned.join(", ")
            )
        };
        Ok(Some(RootFix {
            managed: info.managed,
            set,
            alter,
            problem,
        }))
    }

    /// Makes every captured table part of the publication before anything is read: adds
    /// the missing ones to a publication pgcdc manages, and refuses (with the statement to
    /// run) for one it does not.
    pub async fn cover_tables(&self, conn: &ConnectorConfig) -> Result<()> {
        if conn.publish_generated_columns {
            if let Some(info) = self.publication_info(conn).await?.filter(|i| !i.generated) {
                let alter = format!(
                    "ALTER PUBLICATION {} SET (publish_generated_columns = stored)",
                    crate::sql::ident(&conn.publication_name())
                );
                if !info.managed {
                    return Err(Error::permanent(Code::Preflight, format!(
                        "connector {}: publication {} does not publish generated columns but publish_generated_columns is set; run {alter}, or remove the setting",
                        conn.name,
                        crate::sql::ident(&conn.publication_name())
                    )));
                }
                tracing::warn!(connector = %conn.name, publication = %conn.publication_name(), "setting publish_generated_columns = stored on the publication");
                self.client
                    .batch_execute(&alter)
                    .await
                    .map_err(|e| self.err(e))?;
            }
        }
        if let Some(fix) = self.partition_root_mismatch(conn).await? {
            if !fix.managed {
                return Err(Error::permanent(
                    Code::Preflight,
                    format!("connector {}: {}", conn.name, fix.problem),
                ));
            }
            tracing::warn!(connector = %conn.name, publication = %conn.publication_name(), "setting {} on the publication", fix.set);
            self.client
                .batch_execute(&fix.alter)
                .await
                .map_err(|e| self.err(e))?;
        }
        let (managed, missing) = self.publication_gaps(conn).await?;
        if missing.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "ALTER PUBLICATION {} ADD TABLE {}",
            sql_ident(&conn.publication_name()),
            missing.join(", ")
        );
        if !managed {
            return Err(Error::permanent(Code::Preflight, format!(
                "connector {}: publication {} does not publish {} (captured by tables.include), so its changes would \
                 never be streamed; run {sql}, or remove the table from tables.include",
                conn.name,
                crate::sql::ident(&conn.publication_name()),
                missing.join(", ")
            )));
        }
        tracing::warn!(connector = %conn.name, tables = %missing.join(", "), "adding tables to the publication; rows already in them arrive only through an incremental snapshot (pgcdc snapshot)");
        self.client
            .batch_execute(&sql)
            .await
            .map_err(|e| self.err(e))
    }

    pub async fn table_exists(&self, name: &TableName) -> Result<bool> {
        let (schema, table) = (name.schema(), name.table());
        let row = self
            .client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                                 WHERE n.nspname = $1 AND c.relname = $2)",
                &[&schema, &table],
            )
            .await
            .map_err(|e| self.err(e))?;
        row.col(0)
    }

    /// Creates the signal table when missing (Debezium's layout: id, type, data) and adds it
    /// to the connector's publication when the publication lists tables.
    pub async fn ensure_signal_table(&self, conn: &ConnectorConfig) -> Result<()> {
        let Some(name) = &conn.signal_table else {
            return Ok(());
        };
        let (schema, table) = (name.schema(), name.table());
        let quoted = format!("{}.{}", sql_ident(schema), sql_ident(table));
        self.client
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {quoted} (id varchar(64) PRIMARY KEY, type varchar(32) NOT NULL, data varchar(2048))"
            ))
            .await
            .map_err(|e| {
                Error::permanent(Code::Preflight, format!(
                    "connector {}: cannot create signal table {name}: {}; create it yourself (id varchar(64) PRIMARY KEY, type varchar(32) NOT NULL, data varchar(2048)) or grant CREATE on schema {schema}",
                    conn.name,
                    self.err(e)
                ))
            })?;
        let pubname = conn.publication_name();
        let row = self
            .client
            .query_one(
                "SELECT p.puballtables,
                        EXISTS (SELECT 1 FROM pg_publication_tables t
                                 WHERE t.pubname = p.pubname AND t.schemaname = $2 AND t.tablename = $3)
                   FROM pg_publication p WHERE p.pubname = $1",
                &[&pubname, &schema, &table],
            )
            .await
            .map_err(|e| self.err(e))?;
        let (all, listed): (bool, bool) = (row.col(0)?, row.col(1)?);
        if !all && !listed {
            self.client
                .batch_execute(&format!(
                    "ALTER PUBLICATION {} ADD TABLE {quoted}",
                    sql_ident(&pubname)
                ))
                .await
                .map_err(|e| self.err(e))?;
        }
        Ok(())
    }
}
