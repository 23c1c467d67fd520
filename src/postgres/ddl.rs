//! DDL capture (`schema_changes: true`): a `ddl_command_end` event trigger that writes each
//! DDL as a transactional logical decoding message (prefix [`crate::prefix::DDL`]), so the DDL
//! arrives in the WAL stream inline, in order, in its own transaction. The pattern of
//! xataio/pgstream and supabase/etl. `pgcdc install-ddl-capture` installs it (a superuser
//! must: PostgreSQL lets only superusers create event triggers).

use tokio_postgres::Client;

use crate::error::Result;
use crate::prefix::DDL;

/// The event trigger's name.
pub const TRIGGER: &str = "pgcdc_ddl_capture";

/// The SQL that installs (or replaces) the function and the event trigger. The message is
/// `{"tag": …, "ddl": …, "xid": …, "tables": [{"oid": …, "schema": …, "table": …}]}`: the
/// command tag, the statement text, the DDL's transaction id (64-bit, so pgcdc can wait
/// until the committed DDL is visible before it reads the catalog), and the tables
/// (ordinary and partitioned) the DDL created or altered.
pub fn install_sql() -> String {
    format!(
        r#"CREATE OR REPLACE FUNCTION public.pgcdc_ddl_capture() RETURNS event_trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $fn$
DECLARE
  tables jsonb;
BEGIN
  SELECT coalesce(jsonb_agg(DISTINCT jsonb_build_object(
           'oid', c.oid::int8, 'schema', n.nspname, 'table', c.relname)), '[]'::jsonb)
    INTO tables
    FROM pg_event_trigger_ddl_commands() d
    JOIN pg_class c ON d.classid = 'pg_class'::regclass AND c.oid = d.objid
    JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE c.relkind IN ('r', 'p');
  PERFORM pg_logical_emit_message(true, '{DDL}',
    jsonb_build_object('tag', tg_tag, 'ddl', current_query(),
      'xid', pg_current_xact_id()::text, 'tables', tables)::text);
END
$fn$;
DROP EVENT TRIGGER IF EXISTS {TRIGGER};
CREATE EVENT TRIGGER {TRIGGER} ON ddl_command_end
  WHEN TAG IN ('CREATE TABLE', 'ALTER TABLE', 'CREATE TABLE AS', 'SELECT INTO')
  EXECUTE FUNCTION public.pgcdc_ddl_capture();
"#
    )
}

/// Whether the event trigger is installed and enabled in the connected database.
pub async fn installed(client: &Client) -> std::result::Result<bool, tokio_postgres::Error> {
    let row = client
        .query_opt(
            "SELECT evtenabled <> 'D' FROM pg_event_trigger WHERE evtname = $1",
            &[&TRIGGER],
        )
        .await?;
    Ok(row.is_some_and(|r| r.try_get::<_, bool>(0).unwrap_or(false)))
}

/// One DDL message.
#[derive(Debug, serde::Deserialize)]
pub struct DdlMessage {
    pub tag: String,
    pub ddl: String,
    /// The DDL's transaction (`pg_current_xact_id()`); absent from a trigger installed by
    /// an earlier pgcdc.
    #[serde(default)]
    pub xid: Option<String>,
    #[serde(default)]
    pub tables: Vec<DdlTable>,
}

#[derive(Debug, serde::Deserialize)]
pub struct DdlTable {
    pub oid: u32,
    pub schema: String,
    pub table: String,
}

impl DdlMessage {
    pub fn parse(content: &[u8]) -> std::result::Result<Self, String> {
        serde_json::from_slice(content).map_err(|e| format!("not a pgcdc DDL message: {e}"))
    }
}

/// Installs the capture with `client` (a superuser's connection).
pub async fn install(client: &Client, server: &str) -> Result<()> {
    client
        .batch_execute(&install_sql())
        .await
        .map_err(|e| crate::postgres::catalog::pg_err(server, e))
}
