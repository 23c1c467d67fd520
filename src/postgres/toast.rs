//! Reading rows back for unchanged TOASTed values (`toast: fetch`): one query per table and
//! batch of keys, in a repeatable-read transaction that also says whether the transaction
//! that wrote the change is visible to it. Why the values it returns are exact, and when
//! they are used, is in [`crate::toast`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::decode::Relation;
use crate::error::{Code, Error, Result};
use crate::postgres::snapshot::SnapshotConn;
use crate::sql::{sql_ident, sql_literal};

/// The key columns' text, in column order: how a row is named across the stream and the
/// table.
pub type KeyText = Vec<Bytes>;

/// A commit is decoded a moment before its transaction is visible to new snapshots (it
/// leaves the proc array after writing the commit record); wait this long for it.
const VISIBILITY_WAIT: Duration = Duration::from_secs(10);

/// One row as read back: its `xmin` and the requested columns' text (None for NULL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedRow {
    pub xmin: u32,
    pub values: Vec<Option<Bytes>>,
}

/// Rows of `rel` by key text, reading columns `cols` (indices into `rel.columns`), in a
/// snapshot that sees transaction `xid`. Ok(None) when `xid` did not become visible in
/// time (the caller then proves nothing). Keys must not be empty.
pub async fn fetch_rows(
    conn: &SnapshotConn,
    rel: &Relation,
    xid: u32,
    keys: &[&KeyText],
    cols: &[usize],
) -> Result<Option<HashMap<KeyText, FetchedRow>>> {
    let key_cols: Vec<usize> = rel.key_columns().map(|(i, _)| i).collect();
    let sql = fetch_sql(rel, xid, &key_cols, keys, cols)?;
    let deadline = Instant::now() + VISIBILITY_WAIT;
    loop {
        let rows = match conn.rows(&sql).await {
            Ok(r) => r,
            Err(e) => {
                let _ = conn.rows("ROLLBACK").await;
                return Err(e);
            }
        };
        let mut it = rows.into_iter();
        let visible = it
            .next()
            .and_then(|r| r.into_iter().next().flatten())
            .is_some_and(|v| v == "t");
        if !visible {
            if Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        }
        let mut out = HashMap::new();
        for row in it {
            let mut row = row.into_iter();
            let Some(xmin) = row.next().flatten().and_then(|x| x.parse::<u32>().ok()) else {
                continue;
            };
            let mut key = Vec::with_capacity(key_cols.len());
            let mut complete = true;
            for _ in &key_cols {
                match row.next().flatten() {
                    Some(k) => key.push(Bytes::from(k)),
                    None => complete = false,
                }
            }
            let values: Vec<Option<Bytes>> = row.map(|v| v.map(Bytes::from)).collect();
            if complete && values.len() == cols.len() {
                out.insert(key, FetchedRow { xmin, values });
            }
        }
        return Ok(Some(out));
    }
}

/// `BEGIN …; SELECT <xid visible>; SELECT xmin, keys, cols FROM t WHERE keys IN (…); COMMIT`.
/// Keys go in as untyped literals, so PostgreSQL types them as the columns and uses the key's
/// index; the full 64-bit xid is rebuilt from the snapshot's epoch.
fn fetch_sql(
    rel: &Relation,
    xid: u32,
    key_cols: &[usize],
    keys: &[&KeyText],
    cols: &[usize],
) -> Result<String> {
    if key_cols.is_empty() || keys.is_empty() {
        return Err(Error::permanent(
            Code::PostgresSql,
            format!(
                "internal error: a TOAST fetch of table {} without keys",
                rel.quoted_name()
            ),
        ));
    }
    let name = |i: usize| sql_ident(&rel.columns[i].name);
    let lit = |b: &Bytes| sql_literal(&String::from_utf8_lossy(b));
    let key_list: Vec<String> = key_cols.iter().map(|&i| name(i)).collect();
    let select: Vec<String> = key_cols.iter().chain(cols).map(|&i| name(i)).collect();
    let tuples: Vec<String> = keys
        .iter()
        .map(|k| {
            let parts: Vec<String> = k.iter().map(lit).collect();
            if parts.len() == 1 {
                parts.join("")
            } else {
                format!("({})", parts.join(", "))
            }
        })
        .collect();
    let lhs = if key_list.len() == 1 {
        key_list.join("")
    } else {
        format!("({})", key_list.join(", "))
    };
    let epoch = "((txid_snapshot_xmax(s) >> 32) << 32)";
    Ok(format!(
        "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;
         SELECT txid_visible_in_snapshot(CASE WHEN {epoch} + {xid} >= txid_snapshot_xmax(s)
                                              THEN {epoch} + {xid} - 4294967296
                                              ELSE {epoch} + {xid} END, s)
           FROM txid_current_snapshot() AS s;
         SELECT xmin::text, {} FROM {}.{} WHERE {lhs} IN ({});
         COMMIT",
        select.join(", "),
        sql_ident(&rel.schema),
        sql_ident(&rel.table),
        tuples.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::Column;
    use crate::typemap::PgType;

    fn col(name: &str, key: bool) -> Column {
        Column::test(name, PgType::Text, key)
    }

    #[test]
    fn sql_names_keys_and_columns_quoted() {
        let rel = Relation {
            oid: 1,
            schema: "Sales & Co".into(),
            table: "order".into(),
            replica_identity: b'd',
            columns: vec![col("id", true), col("Body", false), col("k2", true)],
        };
        let k1: KeyText = vec![Bytes::from("1"), Bytes::from("it's")];
        let sql = fetch_sql(&rel, 42, &[0, 2], &[&k1], &[1]).unwrap();
        assert!(
            sql.contains(
                r#"SELECT xmin::text, "id", "k2", "Body" FROM "Sales & Co"."order" WHERE ("id", "k2") IN (('1', 'it''s'))"#
            ),
            "{sql}"
        );
        assert!(sql.contains("+ 42 >= txid_snapshot_xmax(s)"), "{sql}");
        let one = Relation {
            columns: vec![col("id", true), col("b", false)],
            ..rel
        };
        let k: KeyText = vec![Bytes::from("7")];
        let sql = fetch_sql(&one, 1, &[0], &[&k, &k], &[1]).unwrap();
        assert!(sql.contains(r#"WHERE "id" IN ('7', '7')"#), "{sql}");
    }
}
