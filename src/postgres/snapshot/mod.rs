//! Reading rows already in the tables: snapshot connections, primary-key chunks, `COPY`
//! text parsing, and the watermarks of incremental snapshots.
//!
//! - An initial snapshot reads inside the snapshot the slot exported when it was created
//!   (`SET TRANSACTION SNAPSHOT`), on several connections at once, so snapshot plus stream
//!   is exactly the database's history
//!   (<https://www.postgresql.org/docs/current/protocol-replication.html>, `EXPORT_SNAPSHOT`).
//! - Chunks are primary-key ranges `(after, until]`, cut at about every `chunk_rows`-th key
//!   ([`sql`]: exactly, or from a page sample of a large table); keys travel as the text
//!   PostgreSQL prints for them and go back in as `CAST('…' AS type)`, so no key type needs
//!   special handling.
//! - Rows come out of `COPY (SELECT …) TO STDOUT` in text format: the same type output
//!   functions and session settings as pgoutput's text tuples, so one decoder serves both.
//! - Incremental snapshots bracket each chunk read with two transactional logical messages
//!   (`pg_logical_emit_message`), DBLog's low and high watermarks.

use bytes::{Bytes, BytesMut};
use futures_util::{pin_mut, TryStreamExt};
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::config::PostgresConfig;
use crate::decode::{Tuple, TupleData};
use crate::error::{Code, Error, Result};
use crate::postgres::catalog::{connect_client, pg_err, SnapshotTable};
use crate::postgres::SESSION_OPTIONS;
use crate::sql::{sql_ident, sql_literal};
use crate::Lsn;

mod sql;
pub use sql::{boundaries_sql, select_sql};

/// A primary-key value: the text of each key column, in index order.
pub type Key = Vec<String>;

/// The keys `k` with `after < k <= until`; an open end is unbounded.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyRange {
    pub after: Option<Key>,
    pub until: Option<Key>,
}

impl KeyRange {
    pub const ALL: KeyRange = KeyRange {
        after: None,
        until: None,
    };
}

/// A transaction snapshot (`txid_current_snapshot()`), with 32-bit xids as pgoutput sends
/// them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxSnapshot {
    pub xmin: u32,
    pub xmax: u32,
    pub xip: Vec<u32>,
}

impl TxSnapshot {
    /// Parses `xmin:xmax:xip,xip,...` (epoch-extended xids).
    pub fn parse(s: &str) -> Option<TxSnapshot> {
        let mut parts = s.split(':');
        let xid = |v: &str| v.parse::<u64>().ok().map(|x| x as u32);
        let xmin = xid(parts.next()?)?;
        let xmax = xid(parts.next()?)?;
        let xip = match parts.next() {
            Some("") | None => Vec::new(),
            Some(list) => list.split(',').map(xid).collect::<Option<Vec<_>>>()?,
        };
        Some(TxSnapshot { xmin, xmax, xip })
    }

    /// Whether the effects of transaction `xid` are invisible in this snapshot (running
    /// when it was taken, or started after).
    pub fn misses(&self, xid: u32) -> bool {
        self.xip.contains(&xid) || xid.wrapping_sub(self.xmax) as i32 >= 0
    }

    /// Whether `xid` is older than every transaction this snapshot could miss.
    pub fn settled(&self, xid: u32) -> bool {
        (xid.wrapping_sub(self.xmin) as i32) < 0
    }
}

/// One connection that reads snapshot rows.
pub struct SnapshotConn {
    client: Client,
    server: String,
}

impl SnapshotConn {
    pub async fn connect(cfg: &PostgresConfig, application_name: &str) -> Result<Self> {
        let options = format!("{SESSION_OPTIONS} -c standard_conforming_strings=on");
        let (client, server) = connect_client(cfg, application_name, Some(&options)).await?;
        Ok(SnapshotConn { client, server })
    }

    fn err(&self, e: tokio_postgres::Error) -> Error {
        pg_err(&self.server, e)
    }

    pub(crate) async fn rows(&self, sql: &str) -> Result<Vec<Vec<Option<String>>>> {
        let msgs = self
            .client
            .simple_query(sql)
            .await
            .map_err(|e| self.err(e))?;
        Ok(msgs
            .into_iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(r) => {
                    Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
                }
                _ => None,
            })
            .collect())
    }

    /// Opens a read-only repeatable-read transaction on the exported snapshot `name`.
    pub async fn begin_in(&self, name: &str) -> Result<()> {
        self.client
            .batch_execute(&format!(
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT {}",
                sql_literal(name)
            ))
            .await
            .map_err(|e| {
                Error::transient(
                    Code::Snapshot,
                    format!(
                    "{}: the exported snapshot {name} is gone (its replication connection closed?)",
                    self.err(e)
                ),
                )
            })
    }

    /// Opens a read-only repeatable-read transaction and exports its snapshot (for
    /// `initial_only`, which has no slot).
    pub async fn begin_and_export(&self) -> Result<String> {
        self.client
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(|e| self.err(e))?;
        self.rows("SELECT pg_export_snapshot()")
            .await?
            .first()
            .and_then(|r| r.first().cloned().flatten())
            .ok_or_else(|| {
                Error::permanent(Code::Snapshot, "pg_export_snapshot() returned nothing")
            })
    }

    /// The oldest transaction still running in this transaction's snapshot (Debezium's
    /// `txId` of snapshot rows).
    pub async fn snapshot_xmin(&self) -> Result<u32> {
        self.rows("SELECT txid_snapshot_xmin(txid_current_snapshot()) % 4294967296")
            .await?
            .first()
            .and_then(|r| r.first().cloned().flatten())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| {
                Error::permanent(Code::Snapshot, "txid_current_snapshot() returned nothing")
            })
    }

    pub async fn commit(&self) -> Result<()> {
        self.client
            .batch_execute("COMMIT")
            .await
            .map_err(|e| self.err(e))
    }

    /// The chunk boundaries of a table: about every `every`-th primary key, in key order.
    pub async fn boundaries(&self, t: &SnapshotTable, every: u64) -> Result<Vec<Key>> {
        if t.pk.is_empty() {
            return Ok(Vec::new());
        }
        let rows = self.rows(&boundaries_sql(t, every)).await?;
        rows.into_iter()
            .map(|r| {
                r.into_iter()
                    .map(|v| {
                        v.ok_or_else(|| {
                            Error::permanent(
                                Code::Snapshot,
                                format!(
                                    "table {}: a primary-key column is NULL",
                                    t.relation.quoted_name()
                                ),
                            )
                        })
                    })
                    .collect()
            })
            .collect()
    }

    /// The rows of `range` (at most `limit`, in key order when limited) as text tuples in
    /// the relation's column order.
    pub async fn read(
        &self,
        t: &SnapshotTable,
        range: &KeyRange,
        limit: Option<u64>,
    ) -> Result<Vec<Tuple>> {
        let sql = select_sql(t, range, limit);
        let stream = self.client.copy_out(&sql).await.map_err(|e| self.err(e))?;
        pin_mut!(stream);
        let width = t.relation.columns.len();
        let mut rows = Vec::new();
        let mut buf = BytesMut::new();
        let unexpected = |m: String| {
            Error::permanent(
                Code::Snapshot,
                format!(
                    "table {}: unexpected COPY output: {m}",
                    t.relation.quoted_name()
                ),
            )
            .with_source(m)
        };
        while let Some(chunk) = stream.try_next().await.map_err(|e| self.err(e))? {
            // PostgreSQL sends each row in a CopyData message of its own: parse it where it
            // is, without copying it into `buf` (a copy and an allocation per row).
            if let (true, Some((b'\n', line))) = (buf.is_empty(), chunk.split_last()) {
                if !line.contains(&b'\n') {
                    let line = chunk.slice(..line.len());
                    rows.push(parse_copy_line(line, width).map_err(unexpected)?);
                    continue;
                }
            }
            buf.extend_from_slice(&chunk);
            while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
                let line = buf.split_to(nl + 1).freeze();
                rows.push(parse_copy_line(line.slice(..nl), width).map_err(unexpected)?);
            }
        }
        if !buf.is_empty() {
            return Err(Error::permanent(
                Code::Snapshot,
                format!(
                    "table {}: COPY output ended inside a row",
                    t.relation.quoted_name()
                ),
            ));
        }
        Ok(rows)
    }

    /// Like [`read`](Self::read), inside a repeatable-read transaction whose snapshot is
    /// returned too: which transactions the rows do not reflect.
    pub async fn read_with_snapshot(
        &self,
        t: &SnapshotTable,
        range: &KeyRange,
        limit: Option<u64>,
    ) -> Result<(Vec<Tuple>, TxSnapshot)> {
        self.client
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(|e| self.err(e))?;
        let snap = self
            .rows("SELECT txid_current_snapshot()::text")
            .await?
            .first()
            .and_then(|r| r.first().cloned().flatten())
            .and_then(|s| TxSnapshot::parse(&s))
            .ok_or_else(|| {
                Error::permanent(
                    Code::Snapshot,
                    "txid_current_snapshot() returned nothing usable",
                )
            })?;
        let rows = self.read(t, range, limit).await;
        let end = self.commit().await;
        let rows = rows?;
        end?;
        Ok((rows, snap))
    }

    /// Writes a watermark into the WAL inside its own transaction; returns its LSN.
    pub async fn watermark(&self, content: &str) -> Result<Lsn> {
        let rows = self
            .rows(&format!(
                "SELECT pg_logical_emit_message(true, {}, {})",
                sql_literal(crate::prefix::WATERMARK),
                sql_literal(content)
            ))
            .await?;
        rows.first()
            .and_then(|r| r.first().cloned().flatten())
            .and_then(|l| l.parse().ok())
            .ok_or_else(|| {
                Error::permanent(Code::Snapshot, "pg_logical_emit_message returned no LSN")
            })
    }

    /// Inserts a signal row (Debezium's `execute-snapshot`).
    pub async fn insert_signal(
        &self,
        signal_table: &crate::config::TableName,
        id: &str,
        data: &str,
    ) -> Result<()> {
        let (schema, table) = (signal_table.schema(), signal_table.table());
        self.client
            .batch_execute(&format!(
                "INSERT INTO {}.{} (id, type, data) VALUES ({}, 'execute-snapshot', {})",
                sql_ident(schema),
                sql_ident(table),
                sql_literal(id),
                sql_literal(data)
            ))
            .await
            .map_err(|e| self.err(e))
    }
}

/// The primary key of a row, as text in index order (None when the table has none, or a
/// key column is NULL or not sent).
pub fn key_of(t: &SnapshotTable, positions: &[usize], row: &Tuple) -> Option<Key> {
    if t.pk.is_empty() {
        return None;
    }
    positions
        .iter()
        .map(|&i| match row.get(i) {
            Some(TupleData::Text(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        })
        .collect()
}

/// Positions of the primary-key columns in the relation's columns.
pub fn pk_positions(t: &SnapshotTable) -> Result<Vec<usize>> {
    t.pk.iter()
        .map(|(name, _)| {
            t.relation
                .columns
                .iter()
                .position(|c| &c.name == name)
                .ok_or_else(|| {
                    Error::permanent(
                        Code::Snapshot,
                        format!(
                            "table {}: primary-key column {} is not published",
                            t.relation.quoted_name(),
                            crate::sql::ident(name)
                        ),
                    )
                })
        })
        .collect()
}

/// One line of `COPY ... TO STDOUT` text format (without its newline) → a tuple.
pub fn parse_copy_line(line: Bytes, width: usize) -> std::result::Result<Tuple, String> {
    let mut out = Vec::with_capacity(width);
    let mut start = 0;
    loop {
        let end = line[start..]
            .iter()
            .position(|&b| b == b'\t')
            .map_or(line.len(), |p| start + p);
        let field = line.slice(start..end);
        out.push(if &field[..] == b"\\N" {
            TupleData::Null
        } else if field.contains(&b'\\') {
            TupleData::Text(unescape(&field)?)
        } else {
            TupleData::Text(field)
        });
        if end == line.len() {
            break;
        }
        start = end + 1;
    }
    if out.len() != width {
        return Err(format!("a row has {} fields, expected {width}", out.len()));
    }
    Ok(out)
}

fn unescape(f: &[u8]) -> std::result::Result<Bytes, String> {
    let mut out = Vec::with_capacity(f.len());
    let mut i = 0;
    while i < f.len() {
        let b = f[i];
        if b != b'\\' {
            out.push(b);
            i += 1;
            continue;
        }
        let Some(&c) = f.get(i + 1) else {
            return Err("a field ends with a lone backslash".into());
        };
        i += 2;
        match c {
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'0'..=b'7' => {
                let mut v = u32::from(c - b'0');
                let mut n = 1;
                while n < 3 && i < f.len() && (b'0'..=b'7').contains(&f[i]) {
                    v = v * 8 + u32::from(f[i] - b'0');
                    i += 1;
                    n += 1;
                }
                out.push((v & 0xff) as u8);
            }
            b'x' if f.get(i).is_some_and(u8::is_ascii_hexdigit) => {
                let mut v = 0u32;
                let mut n = 0;
                while n < 2 && i < f.len() && f[i].is_ascii_hexdigit() {
                    v = v * 16 + char::from(f[i]).to_digit(16).unwrap_or(0);
                    i += 1;
                    n += 1;
                }
                out.push(v as u8);
            }
            other => out.push(other),
        }
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> TupleData {
        TupleData::Text(Bytes::from(s.to_string()))
    }

    #[test]
    fn snapshots_say_which_transactions_they_miss() {
        let s = TxSnapshot::parse("4294967396:4294967405:4294967400,4294967402").unwrap();
        assert_eq!(s.xmin, 100);
        assert_eq!(s.xmax, 109);
        assert!(s.misses(104) && s.misses(106) && s.misses(109) && s.misses(200));
        assert!(!s.misses(103) && !s.misses(99));
        assert!(s.settled(99) && !s.settled(100));
        assert_eq!(TxSnapshot::parse("5:5:").unwrap().xip, Vec::<u32>::new());
        assert!(TxSnapshot::parse("x").is_none());
    }

    #[test]
    fn copy_lines_unescape() {
        let row =
            parse_copy_line(Bytes::from_static(b"1\t\\N\ta\\tb\\nc\\\\d\t\\101\\x42"), 4).unwrap();
        assert_eq!(
            row,
            vec![text("1"), TupleData::Null, text("a\tb\nc\\d"), text("AB"),]
        );
        // An empty string is not NULL.
        assert_eq!(
            parse_copy_line(Bytes::from_static(b"\t"), 2).unwrap(),
            vec![text(""), text("")]
        );
        assert!(parse_copy_line(Bytes::from_static(b"1\t2"), 3).is_err());
        assert!(parse_copy_line(Bytes::from_static(b"1\\"), 1).is_err());
    }

    /// `CopyAttributeOutText`: backslash, and \b \f \n \r \t \v as escapes; any other byte
    /// as is (text never holds NUL).
    fn copy_out(field: &[u8], out: &mut Vec<u8>) {
        for &b in field {
            match b {
                b'\\' => out.extend_from_slice(b"\\\\"),
                8 => out.extend_from_slice(b"\\b"),
                12 => out.extend_from_slice(b"\\f"),
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                b'\t' => out.extend_from_slice(b"\\t"),
                11 => out.extend_from_slice(b"\\v"),
                b => out.push(b),
            }
        }
    }

    proptest::proptest! {
        /// Issue 14.3: rows as `COPY ... TO STDOUT` prints them parse back to their fields;
        /// any line is a tuple or an error, never a panic.
        #[test]
        fn copy_rows_parse_back(
            fields in proptest::collection::vec(
                proptest::option::of(proptest::collection::vec(1u8..=255, 0..24)),
                1..6,
            ),
            junk in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
        ) {
            let mut line = Vec::new();
            for (i, f) in fields.iter().enumerate() {
                if i > 0 {
                    line.push(b'\t');
                }
                match f {
                    None => line.extend_from_slice(b"\\N"),
                    Some(f) => copy_out(f, &mut line),
                }
            }
            let want: Tuple = fields
                .iter()
                .map(|f| match f {
                    None => TupleData::Null,
                    Some(f) => TupleData::Text(Bytes::from(f.clone())),
                })
                .collect();
            proptest::prop_assert_eq!(parse_copy_line(Bytes::from(line), fields.len()), Ok(want));
            let _ = parse_copy_line(Bytes::from(junk), 3);
        }
    }
}
