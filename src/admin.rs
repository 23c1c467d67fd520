//! Operator commands beside `run`: `pgcdc status` (checkpoint, slot and snapshot progress
//! of each connector, read from Kafka and PostgreSQL, so it works whether the daemon runs or
//! not, with the running daemon's `/healthz` state when it answers) and `pgcdc snapshot`
//! (signals an incremental snapshot).

use std::fmt::Write as _;

use crate::config::{ConnectorConfig, DaemonConfig};
use crate::error::{Code, Error, Result};
use crate::postgres::snapshot::SnapshotConn;
use crate::postgres::Catalog;

/// The status report of one connector, as printed by `pgcdc status`.
pub async fn status(daemon: &DaemonConfig, conn: &ConnectorConfig) -> Result<String> {
    let mut out = String::new();
    let kcfg = daemon.kafka.clone();
    let name = conn.name.clone();
    let ck = tokio::task::spawn_blocking(move || crate::kafka::offsets::read_last(&kcfg, &name))
        .await
        .map_err(|e| {
            Error::permanent(Code::Internal, format!("checkpoint reader failed: {e}"))
                .with_source(e)
        })??;
    let _ = writeln!(out, "connector {}", conn.name);
    match &ck {
        Some(c) => {
            let _ = writeln!(
                out,
                "  checkpoint: lsn {} (last transaction commit {}, xid {})",
                c.lsn,
                c.commit_lsn.as_deref().unwrap_or("-"),
                c.xid.map_or("-".to_string(), |x| x.to_string())
            );
        }
        None => {
            let _ = writeln!(
                out,
                "  checkpoint: none in {} (never started, or reset)",
                daemon.kafka.offsets_topic
            );
        }
    }
    match Catalog::connect(&conn.postgres, conn.numeric_mode, "pgcdc-status").await {
        Ok(cat) => match cat.slot(&conn.slot_name()).await? {
            Some(s) => {
                let _ = writeln!(
                    out,
                    "  slot {}: confirmed_flush {}, {}",
                    conn.slot_name(),
                    s.confirmed_flush.map_or("-".to_string(), |l| l.to_string()),
                    if s.active { "active" } else { "inactive" }
                );
            }
            None => {
                let _ = writeln!(out, "  slot {}: does not exist", conn.slot_name());
            }
        },
        Err(e) => {
            let _ = writeln!(out, "  slot: cannot ask PostgreSQL: {e}");
        }
    }
    let progress = ck
        .and_then(|c| c.snapshot)
        .map(|s| s.progress())
        .unwrap_or_default();
    if progress.is_empty() {
        let _ = writeln!(out, "  snapshot: none recorded");
    }
    for (table, state, rows, estimate) in progress {
        let pct = if estimate > 0 {
            format!(" ({:.1}%)", 100.0 * rows as f64 / estimate as f64)
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "  snapshot {table}: {state}, {rows} rows of ~{estimate}{pct}"
        );
    }
    Ok(out)
}

/// Inserts an `execute-snapshot` signal for `tables` into the connector's signal table,
/// after checking that each table is captured and has a primary key. Returns the signal id.
pub async fn signal_snapshot(conn: &ConnectorConfig, tables: &[String]) -> Result<String> {
    let Some(signal_table) = &conn.signal_table else {
        return Err(Error::permanent(Code::Internal, format!(
            "connector {}: no signal_table is configured; add `signal_table: public.pgcdc_signal` to its file and restart it",
            conn.name
        )));
    };
    let mut cat = Catalog::connect(&conn.postgres, conn.numeric_mode, "pgcdc-snapshot").await?;
    for t in tables {
        let (schema, table) = crate::config::qualified(t)
            .map_err(|m| Error::permanent(Code::Internal, format!("table {t}: {m}")))?;
        if !conn.captures(schema, table) {
            return Err(Error::permanent(
                Code::Internal,
                format!(
                    "table {t}: connector {} does not capture it (see tables.include/exclude)",
                    conn.name
                ),
            ));
        }
        let st = cat.snapshot_table(t, conn).await?;
        if st.pk.is_empty() {
            return Err(Error::permanent(Code::Internal, format!(
                "table {} has no primary key; incremental snapshots need one (ALTER TABLE {} ADD PRIMARY KEY (...))",
                crate::sql::raw_table(t),
                crate::sql::raw_table(t)
            )));
        }
    }
    if !cat.table_exists(signal_table).await? {
        return Err(Error::permanent(Code::Internal, format!(
            "signal table {signal_table} does not exist yet; start the connector once (it creates the table), then signal"
        )));
    }
    let id = format!(
        "pgcdc-{:x}-{:x}",
        std::process::id(),
        crate::clock::now_micros()
    );
    let data = serde_json::json!({"data-collections": tables, "type": "incremental"}).to_string();
    let sc = SnapshotConn::connect(&conn.postgres, "pgcdc-snapshot").await?;
    sc.insert_signal(signal_table, &id, &data).await?;
    Ok(id)
}

/// Installs the DDL capture trigger in the connector's database; returns the database.
pub async fn install_ddl_capture(conn: &ConnectorConfig) -> Result<String> {
    let (client, server) =
        crate::postgres::catalog::connect_client(&conn.postgres, "pgcdc-install-ddl-capture", None)
            .await?;
    crate::postgres::ddl::install(&client, &server).await.map_err(|e| {
        if e.sqlstate() == Some("42501") {
            Error::permanent(
                Code::PostgresSql,
                format!(
                    "{e}; only a superuser may create event triggers: run this as one (postgres.user), or give a DBA the SQL of `pgcdc install-ddl-capture --print {}`",
                    conn.name
                ),
            )
        } else {
            e
        }
    })?;
    Ok(conn.postgres.dbname.clone())
}

/// The running daemon's `/healthz` body, if it answers on `http.listen`.
pub async fn daemon_health(listen: &str) -> Option<serde_json::Value> {
    let addr = listen
        .replace("0.0.0.0:", "127.0.0.1:")
        .replace("[::]:", "[::1]:");
    if addr.ends_with(":0") {
        return None;
    }
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(3))
        .build()
        .ok()?;
    let body = client
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .ok()?
        .bytes()
        .await
        .ok()?;
    serde_json::from_slice(&body).ok()
}

/// `  running: failed (postgres.slot): … ; next: …`, from the daemon's `/healthz`.
pub fn running_state(listen: &str, health: Option<&serde_json::Value>, name: &str) -> String {
    let Some(h) = health else {
        return format!(
            "  daemon: no answer at http://{listen}/healthz (not running here, or another http.listen)"
        );
    };
    let Some(c) = h["connectors"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
    else {
        return format!("  daemon at {listen}: does not run this connector");
    };
    let state = c["state"].as_str().unwrap_or("?");
    match c["error"].as_str() {
        Some(e) => format!(
            "  daemon: {state} ({}): {e}; next: {}",
            c["code"].as_str().unwrap_or("?"),
            c["next_step"].as_str().unwrap_or("-")
        ),
        None => format!("  daemon: {state}"),
    }
}
