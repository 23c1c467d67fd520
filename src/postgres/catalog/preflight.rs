//! Preflight: what must hold before a connector runs (`wal_level`, privileges, replica
//! identity, the publication), and what `pgcdc validate` notes.

use crate::config::{ConnectorConfig, NumericMode};
use crate::error::Result;
use crate::sql::sql_ident;

use super::*;

/// The result of [`Catalog::preflight`].
#[derive(Debug, Default)]
pub struct Preflight {
    /// The connector cannot run until these are fixed.
    pub problems: Vec<String>,
    /// It can run, but these will cause trouble.
    pub warnings: Vec<String>,
    /// Facts worth knowing (`pgcdc validate` prints them).
    pub notes: Vec<String>,
}

pub(super) struct ColumnFacts {
    pub(super) quoted: String,
    pub(super) replica_identity: u8,
    pub(super) out_of_line: Vec<String>,
    pub(super) unconstrained_numeric: Vec<String>,
}

pub(super) struct TableInfo {
    pub(super) name: String,
    /// A partitioned table (its partitions are not listed separately).
    pub(super) partitioned: bool,
    pub(super) quoted: String,
    pub(super) replica_identity: u8,
    pub(super) has_pk: bool,
    pub(super) owned: bool,
}

impl Catalog {
    /// Everything that would stop a connector (problems) or that will bite later (warnings),
    /// one line each: server settings, privileges, tables and their replica identity.
    pub async fn preflight(&self, conn: &ConnectorConfig) -> Result<Preflight> {
        let s = &self.server;
        let mut problems = Vec::new();
        let mut warnings = Vec::new();
        let version = self.server_version_num().await?;
        if version < 130_000 {
            problems.push(format!(
                "PostgreSQL {s} is version {version}; pgcdc needs 13 or newer"
            ));
        }
        if conn.publish_generated_columns && version < 180_000 {
            problems.push(format!(
                "PostgreSQL {s} is version {version}; publish_generated_columns needs 18 or newer; remove it (generated columns are then not sent)"
            ));
        }
        if conn.slot_failover && version < 170_000 {
            problems.push(format!(
                "PostgreSQL {s} is version {version}; slot_failover needs 17 or newer (failover slots); remove slot_failover"
            ));
        } else if conn.slot_failover && self.show("synchronized_standby_slots").await?.is_empty() {
            warnings.push(format!(
                "slot_failover: PostgreSQL {s} names no standby in synchronized_standby_slots, so the failover slot \
                 may confirm changes a standby has not received yet; list the standbys' physical slots there"
            ));
        }
        let wal_level = self.show("wal_level").await?;
        if wal_level != "logical" {
            problems.push(format!(
                "PostgreSQL {s}: wal_level is {wal_level}; set wal_level = logical in postgresql.conf and restart the server"
            ));
        }
        let row = self
            .client
            .query_one("SELECT rolreplication OR rolsuper, rolsuper FROM pg_roles WHERE rolname = current_user", &[])
            .await
            .map_err(|e| self.err(e))?;
        let (can_replicate, superuser): (bool, bool) = (row.col(0)?, row.col(1)?);
        if !can_replicate {
            problems.push(format!(
                "PostgreSQL {s}: user {:?} lacks the REPLICATION attribute; run ALTER ROLE {} WITH REPLICATION",
                conn.postgres.user,
                sql_ident(&conn.postgres.user)
            ));
        }
        let max_slots = self.show("max_replication_slots").await?;
        if max_slots == "0" {
            problems.push(format!(
                "PostgreSQL {s}: max_replication_slots is 0; raise it and restart the server"
            ));
        }

        let tables = self.captured_tables(conn).await?;
        let publication_exists = self.publication_exists(&conn.publication_name()).await?;
        if !publication_exists {
            let can_create: bool = self
                .client
                .query_one(
                    "SELECT has_database_privilege(current_database(), 'CREATE')",
                    &[],
                )
                .await
                .map_err(|e| self.err(e))?
                .col(0)?;
            let all_tables = conn.tables.include.is_empty() && conn.tables.exclude.is_empty();
            if all_tables && !superuser {
                problems.push(format!(
                    "user {:?} may not create publication {} FOR ALL TABLES (PostgreSQL requires a superuser); \
                     list the tables in tables.include, or have a superuser create the publication",
                    conn.postgres.user,
                    conn.publication_name()
                ));
            } else if !can_create {
                problems.push(format!(
                    "user {:?} may not create publication {} in database {}; run GRANT CREATE ON DATABASE {} TO {}, or create the publication as its owner",
                    conn.postgres.user,
                    conn.publication_name(),
                    conn.postgres.dbname,
                    sql_ident(&conn.postgres.dbname),
                    sql_ident(&conn.postgres.user)
                ));
            }
        }
        for name in &conn.tables.include {
            if !tables.iter().any(|t| t.name == name.to_string()) {
                let quoted = name.quoted();
                problems.push(format!(
                    "table {quoted} (tables.include) does not exist in database {}; create it or remove it from tables.include",
                    conn.postgres.dbname
                ));
            }
        }
        if tables.is_empty() {
            let all_tables = if publication_exists {
                self.publication_all_tables(&conn.publication_name())
                    .await?
            } else {
                conn.tables.include.is_empty()
            };
            if all_tables {
                warnings.push(format!(
                    "database {} has no table to capture yet; the connector captures tables as they are created \
                     (its publication is FOR ALL TABLES)",
                    conn.postgres.dbname
                ));
            } else {
                problems.push(format!(
                    "database {} has no table for connector {} to capture; create the tables in tables.include first",
                    conn.postgres.dbname, conn.name
                ));
            }
        }
        for t in &tables {
            match t.replica_identity {
                b'n' => problems.push(format!(
                    "table {} has REPLICA IDENTITY NOTHING, so its updates and deletes cannot be captured; run ALTER TABLE {} REPLICA IDENTITY DEFAULT",
                    t.quoted, t.quoted
                )),
                b'd' if !t.has_pk => warnings.push(format!(
                    "table {} has no primary key, so PostgreSQL rejects its UPDATE and DELETE while it is published \
                     (inserts still work); add a primary key or run ALTER TABLE {} REPLICA IDENTITY FULL",
                    t.quoted, t.quoted
                )),
                _ => {}
            }
            // CREATE PUBLICATION ... FOR TABLE needs ownership; once it exists, SELECT is enough.
            if !superuser && !t.owned && !publication_exists {
                problems.push(format!(
                    "table {}: user {:?} does not own it, so cannot add it to publication {}; create the publication as the owner or a superuser",
                    t.quoted,
                    conn.postgres.user,
                    conn.publication_name()
                ));
            }
        }
        let mut notes = Vec::new();
        if publication_exists {
            if let Some(fix) = self.partition_root_mismatch(conn).await? {
                if fix.managed {
                    notes.push(format!(
                        "publication {} (managed by pgcdc) gets {} at start",
                        conn.publication_name(),
                        fix.set
                    ));
                } else {
                    problems.push(fix.problem);
                }
            }
            let (managed, missing) = self.publication_gaps(conn).await?;
            if !missing.is_empty() && !managed {
                problems.push(format!(
                    "publication {} does not publish {}, so its changes would never be streamed; run ALTER PUBLICATION {} ADD TABLE {}",
                    sql_ident(&conn.publication_name()),
                    missing.join(", "),
                    sql_ident(&conn.publication_name()),
                    missing.join(", ")
                ));
            } else if !missing.is_empty() {
                notes.push(format!(
                    "publication {} (managed by pgcdc) gets {} added at start",
                    conn.publication_name(),
                    missing.join(", ")
                ));
            }
        }
        for c in self.column_facts(&tables).await? {
            if !c.out_of_line.is_empty() && c.replica_identity != b'f' {
                notes.push(format!(
                    "table {}: columns {} can be stored out of line (TOAST); an update that leaves them unchanged \
                     does not carry them under REPLICA IDENTITY {}, so pgcdc completes them (toast: {}) or sends \
                     the placeholder. To have PostgreSQL send them, run ALTER TABLE {} REPLICA IDENTITY FULL",
                    c.quoted,
                    c.out_of_line.join(", "),
                    if c.replica_identity == b'i' { "USING INDEX" } else { "DEFAULT" },
                    match conn.toast {
                        crate::config::ToastMode::Fetch => "fetch",
                        crate::config::ToastMode::Placeholder => "placeholder",
                        crate::config::ToastMode::Fail => "fail",
                    },
                    c.quoted
                ));
            }
            if !c.unconstrained_numeric.is_empty() && conn.numeric_mode == NumericMode::Precise {
                warnings.push(format!(
                    "table {}: numeric columns {} have no precision and scale; under numeric_mode: precise a NaN or \
                     ±Infinity in them cannot be carried (it becomes null with header pgcdc.lossy, or stops under \
                     unrepresentable: fail). Set numeric_mode: string before the first start to carry every value \
                     exactly (changing it later changes the registered schema)",
                    c.quoted,
                    c.unconstrained_numeric.join(", ")
                ));
            }
        }
        problems.extend(self.column_rule_problems(conn).await?);
        if conn.schema_changes {
            if version < 140_000 {
                problems.push(format!(
                    "schema_changes: PostgreSQL {s} is version {version}; DDL capture needs 14 or newer (logical decoding messages in pgoutput); remove schema_changes"
                ));
            } else if !crate::postgres::ddl::installed(&self.client)
                .await
                .map_err(|e| self.err(e))?
            {
                problems.push(format!(
                    "schema_changes: database {} has no DDL capture trigger; run `pgcdc install-ddl-capture {}` as a superuser (or leave out schema_changes)",
                    conn.postgres.dbname, conn.name
                ));
            }
        }
        if let Some(slot) = self.slot(&conn.slot_name()).await? {
            if slot.plugin.as_deref() != Some("pgoutput") {
                problems.push(format!(
                    "replication slot {} uses plugin {:?}, not pgoutput; drop it (SELECT pg_drop_replication_slot('{}')) or set slot to another name",
                    conn.slot_name(),
                    slot.plugin.unwrap_or_default(),
                    conn.slot_name()
                ));
            }
            if slot.database.as_deref() != Some(conn.postgres.dbname.as_str()) {
                problems.push(format!(
                    "replication slot {} belongs to database {:?}, not {}; set slot to another name",
                    conn.slot_name(),
                    slot.database.unwrap_or_default(),
                    conn.postgres.dbname
                ));
            }
        }
        Ok(Preflight {
            problems,
            warnings,
            notes,
        })
    }

    /// For `validate`: each captured table (as SQL names it) with its relation as a
    /// snapshot would read it; tables that cannot be read are left out (preflight names them).
    pub async fn captured_relations(
        &mut self,
        conn: &ConnectorConfig,
    ) -> Result<Vec<(String, crate::decode::Relation)>> {
        let mut out = Vec::new();
        for t in self.captured_tables(conn).await? {
            if let Ok(st) = self.snapshot_table(&t.name, conn).await {
                out.push((t.quoted, st.relation));
            }
        }
        Ok(out)
    }

    pub(super) async fn publication_all_tables(&self, name: &str) -> Result<bool> {
        let row = self
            .client
            .query_opt(
                "SELECT puballtables FROM pg_publication WHERE pubname = $1",
                &[&name],
            )
            .await
            .map_err(|e| self.err(e))?;
        match row {
            Some(r) => r.col(0),
            None => Ok(false),
        }
    }

    /// Per captured table: the columns that can be stored out of line and the unconstrained
    /// numeric columns (names quoted as SQL needs them).
    /// `columns.<table>` rules that name a column the table lacks, or a key column.
    async fn column_rule_problems(&self, conn: &ConnectorConfig) -> Result<Vec<String>> {
        let mut problems = Vec::new();
        for (t, rules) in &conn.columns {
            let rows = self
                .client
                .query(
                    "SELECT a.attname::text, coalesce(a.attnum = ANY(i.indkey), false)
                       FROM pg_attribute a
                       LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary
                      WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped",
                    &[&t.quoted()],
                )
                .await
                .map_err(|e| self.err(e))?;
            if rows.is_empty() {
                problems.push(format!(
                    "columns.{t}: there is no table {}; fix the name in the connector file",
                    t.quoted()
                ));
                continue;
            }
            let cols = rows
                .iter()
                .map(|r| Ok((r.col::<String>(0)?, r.col::<bool>(1)?)))
                .collect::<Result<Vec<_>>>()?;
            let key: Vec<&str> = match conn.key_columns.get(t) {
                Some(k) if !cols.iter().any(|(_, pk)| *pk) => {
                    k.iter().map(String::as_str).collect()
                }
                _ => cols
                    .iter()
                    .filter(|(_, pk)| *pk)
                    .map(|(c, _)| c.as_str())
                    .collect(),
            };
            for (field, c) in rules.named() {
                if !cols.iter().any(|(name, _)| name == c) {
                    problems.push(format!(
                        "columns.{t}.{field}: table {} has no column {}; fix the connector file",
                        t.quoted(),
                        crate::sql::ident(c)
                    ));
                } else if key.contains(&c) && field != "include" {
                    problems.push(format!(
                        "columns.{t}.{field}: column {} is part of the event key, which is sent whole; take it out of the column rules",
                        crate::sql::ident(c)
                    ));
                }
            }
            if !rules.include.is_empty() {
                if let Some(k) = key.iter().find(|k| !rules.sends(k)) {
                    problems.push(format!(
                        "columns.{t}.include: leaves out key column {}, which every event carries; add it",
                        crate::sql::ident(k)
                    ));
                }
            }
        }
        if let Some(t) = &conn.outbox.table {
            let rows = self
                .client
                .query(
                    "SELECT a.attname::text FROM pg_attribute a
                      WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped",
                    &[&t.quoted()],
                )
                .await
                .map_err(|e| self.err(e))?;
            let cols = rows
                .iter()
                .map(|r| r.col::<String>(0))
                .collect::<Result<Vec<_>>>()?;
            let f = &conn.outbox.fields;
            for (field, c) in [
                ("id", &f.id),
                ("aggregate_type", &f.aggregate_type),
                ("aggregate_id", &f.aggregate_id),
                ("payload", &f.payload),
            ] {
                if !cols.contains(c) {
                    problems.push(format!(
                        "outbox.fields.{field}: outbox table {} has no column {}; create it or name the column that holds it",
                        t.quoted(),
                        crate::sql::ident(c)
                    ));
                }
            }
        }
        Ok(problems)
    }

    pub(super) async fn column_facts(&self, tables: &[TableInfo]) -> Result<Vec<ColumnFacts>> {
        if tables.is_empty() {
            return Ok(Vec::new());
        }
        let names: Vec<&str> = tables.iter().map(|t| t.quoted.as_str()).collect();
        let rows = self
            .client
            .query(
                "SELECT format('%I.%I', n.nspname, c.relname), c.relreplident::text,
                        coalesce(array_agg(format('%I', a.attname) ORDER BY a.attnum)
                                   FILTER (WHERE a.attstorage <> 'p'), '{}'),
                        coalesce(array_agg(format('%I', a.attname) ORDER BY a.attnum)
                                   FILTER (WHERE a.atttypid IN ('numeric'::regtype, 'numeric[]'::regtype)
                                             AND a.atttypmod = -1), '{}')
                   FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                   JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                  WHERE format('%I.%I', n.nspname, c.relname) = ANY($1)
                  GROUP BY 1, 2 ORDER BY 1",
                &[&names],
            )
            .await
            .map_err(|e| self.err(e))?;
        rows.iter()
            .map(|r| {
                Ok(ColumnFacts {
                    quoted: r.col(0)?,
                    replica_identity: r.col::<String>(1)?.bytes().next().unwrap_or(b'd'),
                    out_of_line: r.col(2)?,
                    unconstrained_numeric: r.col(3)?,
                })
            })
            .collect()
    }

    pub(super) async fn captured_tables(&self, conn: &ConnectorConfig) -> Result<Vec<TableInfo>> {
        let rows = self
            .client
            .query(
                "SELECT n.nspname, c.relname, c.relreplident::text,
                        EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary),
                        pg_has_role(c.relowner, 'USAGE'),
                        format('%I.%I', n.nspname, c.relname),
                        c.relkind = 'p'
                   FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
                    AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                    AND n.nspname NOT LIKE 'pg\\_%'
                  ORDER BY 1, 2",
                &[],
            )
            .await
            .map_err(|e| self.err(e))?;
        let all = rows
            .iter()
            .map(|r| {
                let ident: String = r.col(2)?;
                Ok(TableInfo {
                    partitioned: r.col(6)?,
                    name: format!("{}.{}", r.col::<String>(0)?, r.col::<String>(1)?),
                    replica_identity: ident.bytes().next().unwrap_or(b'd'),
                    has_pk: r.col(3)?,
                    owned: r.col(4)?,
                    quoted: r.col(5)?,
                })
            })
            .collect::<Result<Vec<TableInfo>>>()?;
        Ok(all
            .into_iter()
            .filter(|t| {
                let (s, n) = t.name.split_once('.').unwrap_or(("", ""));
                conn.captures(s, n)
            })
            .collect())
    }
}
