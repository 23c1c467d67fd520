//! An ordinary (non-replication) connection for everything that is plain SQL: preflight
//! checks, the publication, slot state, and catalog look-ups for types and primary keys.

use std::collections::HashMap;

use tokio_postgres::Client;

use crate::config::{ConnectorConfig, NumericMode, PostgresConfig, SslMode};
use crate::decode::pgoutput::RelationMsg;
use crate::decode::{Column, Relation};
use crate::error::{Error, Result};
use crate::postgres::replication::{classify_sqlstate, quote_ident};
use crate::postgres::tls;
use crate::typemap::{PgType, TypeInfo};
use crate::Lsn;

pub struct Catalog {
    client: Client,
    server: String,
    numeric_mode: NumericMode,
    types: HashMap<(u32, i32), PgType>,
}

#[derive(Debug, Clone)]
pub struct SlotInfo {
    pub plugin: Option<String>,
    pub database: Option<String>,
    pub confirmed_flush: Option<Lsn>,
    pub active: bool,
    pub active_pid: Option<i32>,
}

/// Reading a catalog row: a column of another type than the query promises is an error
/// naming the column, never a panic (`Row::get` panics).
trait Col {
    fn col<'a, T: tokio_postgres::types::FromSql<'a>>(&'a self, i: usize) -> Result<T>;
}

impl Col for tokio_postgres::Row {
    fn col<'a, T: tokio_postgres::types::FromSql<'a>>(&'a self, i: usize) -> Result<T> {
        self.try_get(i).map_err(|e| {
            let name = self.columns().get(i).map_or("?", |c| c.name());
            Error::permanent(format!(
                "internal error: catalog query column {i} ({name}): {e}; please report it"
            ))
        })
    }
}

pub(crate) fn pg_err(server: &str, e: tokio_postgres::Error) -> Error {
    match e.as_db_error() {
        Some(db) => {
            let hint = db
                .hint()
                .map(|h| format!("; hint: {h}"))
                .unwrap_or_default();
            classify_sqlstate(
                db.code().code(),
                format!(
                    "PostgreSQL {server}: {}{hint} [SQLSTATE {}]",
                    db.message(),
                    db.code().code()
                ),
            )
        }
        None => {
            let text = error_chain(&e);
            if text.contains("password missing") {
                Error::permanent(format!(
                    "PostgreSQL {server} asks for a password; set postgres.password in the connector file"
                ))
            } else if text.contains("server does not support TLS") {
                Error::permanent(format!(
                    "PostgreSQL {server} does not accept TLS but postgres.sslmode requires it; enable ssl on the server or lower sslmode"
                ))
            } else {
                Error::transient(format!("PostgreSQL {server}: {text}"))
            }
        }
    }
}

/// An error's text followed by its causes, `: `-separated.
fn error_chain(e: &tokio_postgres::Error) -> String {
    let mut text = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(cause) = src {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        src = cause.source();
    }
    text
}

/// An ordinary connection; `options` are startup options (`-c name=value ...`). Returns the
/// client and the server's `host:port` for messages.
pub(crate) async fn connect_client(
    cfg: &PostgresConfig,
    application_name: &str,
    options: Option<&str>,
) -> Result<(Client, String)> {
    let server = format!("{}:{}", cfg.host, cfg.port);
    let mut pc = tokio_postgres::Config::new();
    pc.host(&cfg.host)
        .port(cfg.port)
        .user(&cfg.user)
        .dbname(&cfg.dbname)
        .application_name(application_name);
    if let Some(o) = options {
        pc.options(o);
    }
    if let Some(p) = cfg.password.as_ref().filter(|p| !p.0.is_empty()) {
        pc.password(&p.0);
    }
    pc.ssl_mode(match cfg.sslmode {
        SslMode::Disable => tokio_postgres::config::SslMode::Disable,
        SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
        _ => tokio_postgres::config::SslMode::Require,
    });
    let tls = postgres_native_tls::MakeTlsConnector::new(tls::connector(cfg)?);
    let (client, conn) = match pc.connect(tls).await {
        Ok(c) => c,
        Err(e) if e.to_string().contains("TLS handshake") => {
            return Err(tls::handshake_failed(cfg, &server, &error_chain(&e)).await)
        }
        Err(e) => return Err(pg_err(&server, e)),
    };
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "postgres connection closed");
        }
    });
    Ok((client, server))
}

impl Catalog {
    pub async fn connect(
        cfg: &PostgresConfig,
        numeric_mode: NumericMode,
        application_name: &str,
    ) -> Result<Self> {
        // pgoutput's text formats, so that defaults cast here print as values arrive.
        let (client, server) = connect_client(
            cfg,
            application_name,
            Some(crate::postgres::replication::SESSION_OPTIONS),
        )
        .await?;
        Ok(Catalog {
            client,
            server,
            numeric_mode,
            types: HashMap::new(),
        })
    }

    fn err(&self, e: tokio_postgres::Error) -> Error {
        pg_err(&self.server, e)
    }

    async fn show(&self, setting: &str) -> Result<String> {
        let row = self
            .client
            .query_one(&format!("SHOW {setting}"), &[])
            .await
            .map_err(|e| self.err(e))?;
        row.col(0)
    }

    pub async fn server_version_num(&self) -> Result<i32> {
        let row = self
            .client
            .query_one("SELECT current_setting('server_version_num')::int", &[])
            .await
            .map_err(|e| self.err(e))?;
        row.col(0)
    }

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
                quote_ident(&conn.postgres.user)
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
                    quote_ident(&conn.postgres.dbname),
                    quote_ident(&conn.postgres.user)
                ));
            }
        }
        for name in &conn.tables.include {
            if !tables.iter().any(|t| &t.name == name) {
                let quoted = crate::config::qualified(name)
                    .map(|(s, t)| crate::postgres::quote_qualified(s, t))
                    .unwrap_or_else(|_| name.clone());
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
            let (managed, missing) = self.publication_gaps(conn).await?;
            if !missing.is_empty() && !managed {
                problems.push(format!(
                    "publication {} does not publish {}, so its changes would never be streamed; run ALTER PUBLICATION {} ADD TABLE {}",
                    quote_ident(&conn.publication_name()),
                    missing.join(", "),
                    quote_ident(&conn.publication_name()),
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

    /// For `validate`: per captured table, the NOT NULL columns whose fields stay optional
    /// because a value policy may need null for them ([`crate::avro::fields`]).
    pub async fn schema_notes(&mut self, conn: &ConnectorConfig) -> Result<Vec<String>> {
        let mut notes = Vec::new();
        for t in self.captured_tables(conn).await? {
            let Ok(st) = self.snapshot_table(&t.name, conn).await else {
                continue;
            };
            let rel = &st.relation;
            let optional: Vec<String> = crate::avro::fields::field_specs(rel)
                .iter()
                .zip(&rel.columns)
                .filter(|(s, c)| c.not_null && s.shape != crate::avro::fields::Shape::Required)
                .map(|(_, c)| crate::postgres::quote_ident(&c.name))
                .collect();
            if !optional.is_empty() {
                notes.push(format!(
                    "table {}: NOT NULL columns {} are optional fields: their types can hold values a policy \
                     turns into null (±infinity, NaN, arrays of another shape, or unsent TOASTed values without \
                     a placeholder form); README \"Events\" lists the types",
                    t.quoted,
                    optional.join(", ")
                ));
            }
        }
        Ok(notes)
    }

    async fn publication_all_tables(&self, name: &str) -> Result<bool> {
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
    async fn column_facts(&self, tables: &[TableInfo]) -> Result<Vec<ColumnFacts>> {
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

    async fn captured_tables(&self, conn: &ConnectorConfig) -> Result<Vec<TableInfo>> {
        let rows = self
            .client
            .query(
                "SELECT n.nspname, c.relname, c.relreplident::text,
                        EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary),
                        pg_has_role(c.relowner, 'USAGE'),
                        format('%I.%I', n.nspname, c.relname)
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
            format!("CREATE PUBLICATION {} FOR ALL TABLES", quote_ident(&name))
        } else {
            let tables = self.captured_tables(conn).await?;
            if tables.is_empty() {
                return Err(Error::permanent(format!(
                    "connector {}: no existing table matches tables.include/exclude; nothing to publish",
                    conn.name
                )));
            }
            let list: Vec<&str> = tables.iter().map(|t| t.quoted.as_str()).collect();
            format!(
                "CREATE PUBLICATION {} FOR TABLE {}",
                quote_ident(&name),
                list.join(", ")
            )
        };
        tracing::info!(publication = %name, "creating publication");
        // The comment marks the publication as pgcdc's: tables are added to it as the
        // connector's table filter grows. A publication someone else made is never altered.
        let sql = format!(
            "{sql}; COMMENT ON PUBLICATION {} IS {}",
            quote_ident(&name),
            crate::postgres::replication::quote_literal(&managed_comment(&conn.name))
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
        let Some(row) = self
            .client
            .query_opt(
                "SELECT puballtables, coalesce(obj_description(oid, 'pg_publication'), '')
                   FROM pg_publication WHERE pubname = $1",
                &[&name],
            )
            .await
            .map_err(|e| self.err(e))?
        else {
            return Ok((true, Vec::new()));
        };
        let (all, comment): (bool, String) = (row.col(0)?, row.col(1)?);
        let managed = comment == managed_comment(&conn.name);
        if all {
            return Ok((managed, Vec::new()));
        }
        let published: Vec<String> = self
            .client
            .query(
                "SELECT format('%I.%I', schemaname, tablename) FROM pg_publication_tables WHERE pubname = $1",
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

    /// Makes every captured table part of the publication before anything is read: adds
    /// the missing ones to a publication pgcdc manages, and refuses (with the statement to
    /// run) for one it does not.
    pub async fn cover_tables(&self, conn: &ConnectorConfig) -> Result<()> {
        let (managed, missing) = self.publication_gaps(conn).await?;
        if missing.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "ALTER PUBLICATION {} ADD TABLE {}",
            quote_ident(&conn.publication_name()),
            missing.join(", ")
        );
        if !managed {
            return Err(Error::permanent(format!(
                "connector {}: publication {} does not publish {} (captured by tables.include), so its changes would \
                 never be streamed; run {sql}, or remove the table from tables.include",
                conn.name,
                crate::postgres::quote_ident(&conn.publication_name()),
                missing.join(", ")
            )));
        }
        tracing::warn!(connector = %conn.name, tables = %missing.join(", "), "adding tables to the publication; rows already in them arrive only through an incremental snapshot (pgcdc snapshot)");
        self.client
            .batch_execute(&sql)
            .await
            .map_err(|e| self.err(e))
    }

    pub async fn slot(&self, name: &str) -> Result<Option<SlotInfo>> {
        let row = self
            .client
            .query_opt(
                "SELECT plugin::text, database::text, confirmed_flush_lsn::text, active, active_pid
                   FROM pg_replication_slots WHERE slot_name = $1",
                &[&name],
            )
            .await
            .map_err(|e| self.err(e))?;
        row.map(|r| {
            Ok(SlotInfo {
                plugin: r.col(0)?,
                database: r.col(1)?,
                confirmed_flush: r.col::<Option<String>>(2)?.and_then(|s| s.parse().ok()),
                active: r.col(3)?,
                active_pid: r.col(4)?,
            })
        })
        .transpose()
    }

    async fn type_info(&self, oid: u32) -> Result<(TypeInfo, u32, u32, i32)> {
        let row = self
            .client
            .query_opt(
                "SELECT t.typname::text, n.nspname::text, t.typtype::text, t.typcategory::text,
                        t.typbasetype, t.typelem, t.typtypmod, t.typdelim::text,
                        COALESCE((SELECT array_agg(e.enumlabel::text ORDER BY e.enumsortorder)
                                    FROM pg_enum e WHERE e.enumtypid = t.oid), '{}')
                   FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
                  WHERE t.oid = $1",
                &[&oid],
            )
            .await
            .map_err(|e| self.err(e))?
            .ok_or_else(|| {
                Error::permanent(format!(
                    "PostgreSQL {}: type OID {oid} not found in pg_type",
                    self.server
                ))
            })?;
        let byte = |s: String| s.bytes().next().unwrap_or(b' ');
        Ok((
            TypeInfo {
                name: row.col(0)?,
                schema: row.col(1)?,
                typtype: byte(row.col(2)?),
                category: byte(row.col(3)?),
                delim: byte(row.col(7)?),
                enum_labels: row.col(8)?,
            },
            row.col(4)?,
            row.col(5)?,
            row.col(6)?,
        ))
    }

    /// The [`PgType`] of a column type, resolving domains to their base type and arrays to
    /// their element type.
    pub async fn resolve_type(&mut self, oid: u32, typmod: i32) -> Result<PgType> {
        if let Some(t) = self.types.get(&(oid, typmod)) {
            return Ok(t.clone());
        }
        let mut chain = Vec::new();
        let (mut cur, mut cur_mod) = (oid, typmod);
        let resolved = loop {
            if chain.len() > 32 {
                return Err(Error::permanent(format!(
                    "type OID {oid}: domain or array nesting too deep"
                )));
            }
            let (info, base, elem, domain_typmod) = self.type_info(cur).await?;
            match info.typtype {
                b'd' => {
                    // A domain keeps its base type's modifier unless the column sets one.
                    cur_mod = if domain_typmod >= 0 {
                        domain_typmod
                    } else {
                        cur_mod
                    };
                    cur = base;
                    chain.push(cur);
                }
                _ if info.category == b'A' && elem != 0 => {
                    let elem_ty = Box::pin(self.resolve_type(elem, cur_mod)).await?;
                    break PgType::Array {
                        elem: Box::new(elem_ty),
                        delim: info.delim,
                    };
                }
                _ => break PgType::scalar(&info, cur_mod, self.numeric_mode),
            }
        };
        self.types.insert((oid, typmod), resolved.clone());
        Ok(resolved)
    }

    /// Forgets cached types (after a Type message or ALTER TYPE ... ADD VALUE).
    pub fn invalidate_type(&mut self, oid: u32) {
        self.types.retain(|(o, _), _| *o != oid);
    }

    /// A Relation message joined with the catalog: column types and the key columns.
    ///
    /// The key comes from the message where it can: under REPLICA IDENTITY DEFAULT the
    /// flagged columns are the primary key as it was at the message's LSN, so a connector
    /// that replays WAL written before the key changed (or before the table was dropped)
    /// keys those events as they were. The catalog supplies the primary key where the
    /// message cannot (FULL flags every column, USING INDEX flags the index, NOTHING none;
    /// a snapshot builds its message from the catalog), then the connector's `key_columns`.
    pub async fn relation(
        &mut self,
        msg: &RelationMsg,
        conn: &ConnectorConfig,
    ) -> Result<Relation> {
        let flagged: Vec<String> = msg
            .columns
            .iter()
            .filter(|c| c.key)
            .map(|c| c.name.clone())
            .collect();
        let mut key = if msg.replica_identity == b'd' && !flagged.is_empty() {
            flagged
        } else {
            let pk_rows = self
                .client
                .query(
                    "SELECT a.attname::text FROM pg_index i
                       JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
                      WHERE i.indrelid = $1 AND i.indisprimary",
                    &[&msg.oid],
                )
                .await
                .map_err(|e| self.err(e))?;
            pk_rows
                .iter()
                .map(|r| r.col(0))
                .collect::<Result<Vec<String>>>()?
        };
        let qualified = format!("{}.{}", msg.namespace, msg.name);
        if key.is_empty() {
            if let Some(cols) = conn.key_columns.get(&qualified) {
                for c in cols {
                    if !msg.columns.iter().any(|mc| &mc.name == c) {
                        return Err(Error::permanent(format!(
                            "key_columns.{qualified}: table {} has no column {}; fix the connector file",
                            crate::postgres::quote_qualified(&msg.namespace, &msg.name),
                            crate::postgres::quote_ident(c)
                        )));
                    }
                }
                key = cols.clone();
            }
        }
        // What the message lacks: declared array dimensions, NOT NULL and constant defaults
        // (a dropped table has none of them: one dimension, nullable, no default).
        let facts: HashMap<String, ColumnMeta> = self
            .client
            .query(
                "SELECT a.attname::text, a.attndims::int, a.attnotnull,
                        CASE WHEN a.attgenerated = '' THEN pg_get_expr(d.adbin, d.adrelid) END,
                        format_type(a.atttypid, a.atttypmod)
                   FROM pg_attribute a
                   LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                  WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped",
                &[&msg.oid],
            )
            .await
            .map_err(|e| self.err(e))?
            .iter()
            .map(|r| {
                Ok((
                    r.col(0)?,
                    ColumnMeta {
                        dims: r.col(1)?,
                        not_null: r.col(2)?,
                        default_expr: r.col(3)?,
                        sql_type: r.col(4)?,
                    },
                ))
            })
            .collect::<Result<_>>()?;
        let mut columns = Vec::with_capacity(msg.columns.len());
        for c in &msg.columns {
            let mut ty = self.resolve_type(c.type_oid, c.type_modifier).await?;
            let fact = facts.get(&c.name);
            if let (Some(&n), PgType::Array { delim, .. }) =
                (fact.map(|f| &f.dims).filter(|n| **n > 1), &ty)
            {
                let delim = *delim;
                for _ in 1..n.min(6) {
                    ty = PgType::Array {
                        elem: Box::new(ty),
                        delim,
                    };
                }
            }
            columns.push(Column {
                name: c.name.clone(),
                type_oid: c.type_oid,
                type_modifier: c.type_modifier,
                ty,
                key: key.contains(&c.name),
                identity: c.key,
                not_null: fact.is_some_and(|f| f.not_null),
                default: match fact {
                    Some(f) => self.constant_default(f).await,
                    None => None,
                },
            });
        }
        Ok(Relation {
            oid: msg.oid,
            schema: msg.namespace.clone(),
            table: msg.name.clone(),
            replica_identity: msg.replica_identity,
            columns,
        })
    }
}

/// What the catalog says about a column beyond the Relation message.
struct ColumnMeta {
    dims: i32,
    not_null: bool,
    /// `pg_get_expr` of the default (None for none and for generated columns).
    default_expr: Option<String>,
    /// `format_type`: the column's type as SQL spells it.
    sql_type: String,
}

impl Catalog {
    /// A constant default in the column type's text form: the literal of the default
    /// expression (`'pending'::text`, `1.5`, `true`) cast to the column type by the server,
    /// which prints it as pgoutput would. Expressions that compute a value (`nextval(…)`,
    /// `now()`, operators) are not evaluated and have no constant default.
    async fn constant_default(&self, f: &ColumnMeta) -> Option<String> {
        let literal = literal_of(f.default_expr.as_deref()?)?;
        // format('%s', …) prints with the type's output function, as pgoutput does (a cast
        // to text need not: boolean's gives `true`, its output `t`).
        let sql = format!("SELECT format('%s', CAST($1::text AS {}))", f.sql_type);
        match self.client.query_one(&sql, &[&literal]).await {
            Ok(row) => row.col(0).ok().flatten(),
            Err(e) => {
                tracing::debug!(error = %e, "column default not carried: the server did not cast its literal");
                None
            }
        }
    }
}

/// The literal of a constant default expression as `pg_get_expr` prints it: a quoted
/// string or a number or boolean, in parentheses or not, followed by casts. None for
/// anything else (function calls, operators, `NULL`).
pub(crate) fn literal_of(expr: &str) -> Option<String> {
    let mut s = expr.trim();
    while let Some(inner) = s.strip_prefix('(').and_then(|r| r.strip_suffix(')')) {
        s = inner.trim();
    }
    let (literal, rest) = if let Some(body) = s.strip_prefix('\'') {
        let mut out = String::new();
        let mut chars = body.char_indices().peekable();
        let mut end = None;
        while let Some((i, ch)) = chars.next() {
            if ch == '\'' {
                if matches!(chars.peek(), Some((_, '\''))) {
                    chars.next();
                    out.push('\'');
                } else {
                    end = Some(i + 1);
                    break;
                }
            } else {
                out.push(ch);
            }
        }
        (out, &body[end?..])
    } else {
        let end = s.find("::").unwrap_or(s.len());
        let word = &s[..end];
        let numeric = !word.is_empty()
            && word
                .trim_start_matches('-')
                .chars()
                .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'))
            && word
                .trim_start_matches('-')
                .starts_with(|c: char| c.is_ascii_digit());
        if !(numeric || word == "true" || word == "false") {
            return None;
        }
        (word.to_owned(), &s[end..])
    };
    // Only casts may follow: `::text`, `::character varying`, `::"Mood"`, `::text[]`.
    let casts_only = rest.split("::").skip(1).all(|t| {
        !t.is_empty()
            && t.chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '_' | ' ' | '.' | '"' | '[' | ']'))
    });
    (rest.is_empty() || (rest.starts_with("::") && casts_only)).then_some(literal)
}

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
    /// Captured tables, as `schema.table`, in name order.
    pub async fn captured_table_names(&self, conn: &ConnectorConfig) -> Result<Vec<String>> {
        Ok(self
            .captured_tables(conn)
            .await?
            .into_iter()
            .map(|t| t.name)
            .collect())
    }

    /// The relation of `schema.table` as pgoutput would announce it (columns in attnum
    /// order, no dropped or generated columns), its primary key and its size estimate.
    pub async fn snapshot_table(
        &mut self,
        qualified: &str,
        conn: &ConnectorConfig,
    ) -> Result<SnapshotTable> {
        let (schema, table) = crate::config::qualified(qualified)
            .map_err(|m| Error::permanent(format!("table {qualified}: {m}")))?;
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
                Error::permanent(format!(
                    "PostgreSQL {}: table {} does not exist; check the table name",
                    self.server,
                    crate::postgres::quote_qualified(schema, table)
                ))
            })?;
        let oid: u32 = row.col(0)?;
        let ident: String = row.col(1)?;
        let reltuples: f64 = row.col(2)?;
        let cols = self
            .client
            .query(
                "SELECT attname::text, atttypid, atttypmod FROM pg_attribute
                  WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped AND attgenerated = ''
                  ORDER BY attnum",
                &[&oid],
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

    pub async fn table_exists(&self, qualified: &str) -> Result<bool> {
        let (schema, table) = crate::config::qualified(qualified)
            .map_err(|m| Error::permanent(format!("table {qualified}: {m}")))?;
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
        let (schema, table) = crate::config::qualified(name)
            .map_err(|m| Error::permanent(format!("signal_table: {m}")))?;
        let quoted = format!("{}.{}", quote_ident(schema), quote_ident(table));
        self.client
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {quoted} (id varchar(64) PRIMARY KEY, type varchar(32) NOT NULL, data varchar(2048))"
            ))
            .await
            .map_err(|e| {
                Error::permanent(format!(
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
                    quote_ident(&pubname)
                ))
                .await
                .map_err(|e| self.err(e))?;
        }
        Ok(())
    }
}

fn managed_comment(connector: &str) -> String {
    format!("managed by pgcdc connector {connector}")
}

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

struct ColumnFacts {
    quoted: String,
    replica_identity: u8,
    out_of_line: Vec<String>,
    unconstrained_numeric: Vec<String>,
}

struct TableInfo {
    name: String,
    quoted: String,
    replica_identity: u8,
    has_pk: bool,
    owned: bool,
}

#[cfg(test)]
mod tests {
    use super::literal_of;

    #[test]
    fn constant_defaults_are_literals_with_casts() {
        let ok = |e: &str, want: &str| assert_eq!(literal_of(e).as_deref(), Some(want), "{e}");
        ok("'pending'::text", "pending");
        ok("'EUR'::bpchar", "EUR");
        ok("'it''s'::character varying", "it's");
        ok("true", "true");
        ok("1", "1");
        ok("1.5", "1.5");
        ok("'-3'::integer", "-3");
        ok("(-3)", "-3");
        ok("'{}'::jsonb", "{}");
        ok("'2024-01-01'::date", "2024-01-01");
        ok("'happy'::\"Mood\"", "happy");
        ok("'{a,b}'::text[]", "{a,b}");
        for e in [
            "nextval('orders_id_seq'::regclass)",
            "now()",
            "CURRENT_TIMESTAMP",
            "NULL::text",
            "(1 + 2)",
            "'a'::text || 'b'::text",
            "gen_random_uuid()",
            "lower('A'::text)",
        ] {
            assert_eq!(literal_of(e), None, "{e}");
        }
    }
}
