//! The SQL text of snapshot reads: chunk boundaries and the `COPY` of a key range. Keys
//! travel as the text PostgreSQL prints for them and go back in as `CAST('…' AS type)`.

use super::{Key, KeyRange};
use crate::postgres::catalog::SnapshotTable;
use crate::sql::{sql_ident, sql_literal};

/// Sampled keys per chunk when boundaries come from a sample: chunk sizes then vary by about
/// a third (`TABLESAMPLE SYSTEM` picks whole pages).
const SAMPLED_PER_CHUNK: u64 = 500;

/// The query for [`SnapshotConn::boundaries`]. A table the planner estimates at ten chunks or
/// more, cut into chunks of 2,000 rows or more, is cut at every `SAMPLED_PER_CHUNK`-th key of
/// a `TABLESAMPLE SYSTEM` sample of `SAMPLED_PER_CHUNK / every` of its pages, so that the
/// first rows flow at once: every key in order took 140 ms for 1M rows (~15 s for 100M),
/// the 5% sample 14 ms. Any increasing keys cut the table correctly; the sample only makes
/// the chunks uneven. Other tables: every `every`-th key, exactly.
pub fn boundaries_sql(t: &SnapshotTable, every: u64) -> String {
    let cols = pk_list(t);
    let tbl = table_ident(t);
    let fraction = SAMPLED_PER_CHUNK as f64 / every.max(1) as f64;
    let large = t.estimate.is_some_and(|n| n >= every.saturating_mul(10));
    let (from, every) = if large && fraction <= 0.25 {
        (
            format!("{tbl} TABLESAMPLE SYSTEM ({:.4})", fraction * 100.0),
            SAMPLED_PER_CHUNK,
        )
    } else {
        (tbl, every)
    };
    format!(
        "SELECT {cols} FROM (SELECT {cols}, row_number() OVER (ORDER BY {cols}) AS pgcdc_rn FROM {from}) s \
          WHERE pgcdc_rn % {every} = 0 ORDER BY pgcdc_rn"
    )
}

fn table_ident(t: &SnapshotTable) -> String {
    format!(
        "{}.{}",
        sql_ident(&t.relation.schema),
        sql_ident(&t.relation.table)
    )
}

fn pk_list(t: &SnapshotTable) -> String {
    t.pk.iter()
        .map(|(c, _)| sql_ident(c))
        .collect::<Vec<_>>()
        .join(", ")
}

fn key_literal(t: &SnapshotTable, k: &Key) -> String {
    let vals: Vec<String> =
        t.pk.iter()
            .zip(k)
            .map(|((_, ty), v)| format!("CAST({} AS {ty})", sql_literal(v)))
            .collect();
    format!("({})", vals.join(", "))
}

/// The `COPY` statement that reads `range` of `t`.
pub fn select_sql(t: &SnapshotTable, range: &KeyRange, limit: Option<u64>) -> String {
    let cols: Vec<String> = t
        .relation
        .columns
        .iter()
        .map(|c| sql_ident(&c.name))
        .collect();
    let cols = cols.join(", ");
    let tbl = table_ident(t);
    if t.pk.is_empty() {
        return format!("COPY {tbl} ({cols}) TO STDOUT");
    }
    let pk = pk_list(t);
    let mut conds = Vec::new();
    if let Some(a) = &range.after {
        conds.push(format!("({pk}) > {}", key_literal(t, a)));
    }
    if let Some(u) = &range.until {
        conds.push(format!("({pk}) <= {}", key_literal(t, u)));
    }
    let mut sql = format!("COPY (SELECT {cols} FROM {tbl}");
    if !conds.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conds.join(" AND "));
    }
    if let Some(n) = limit {
        sql.push_str(&format!(" ORDER BY {pk} LIMIT {n}"));
    }
    sql.push_str(") TO STDOUT");
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Large tables are cut from a page sample, small ones and small chunks exactly.
    #[test]
    fn boundaries_sample_only_large_tables_in_large_chunks() {
        use crate::decode::{Column, Relation};
        let table = |estimate| SnapshotTable {
            relation: Relation {
                oid: 7,
                schema: "public".into(),
                table: "t".into(),
                replica_identity: b'd',
                columns: vec![Column::test("id", crate::typemap::PgType::Int8, true)],
            },
            pk: vec![("id".into(), "bigint".into())],
            estimate,
        };
        let sampled = boundaries_sql(&table(Some(1_000_000)), 10_000);
        assert!(
            sampled.contains(r#"FROM "public"."t" TABLESAMPLE SYSTEM (5.0000)) s"#)
                && sampled.contains("pgcdc_rn % 500 = 0"),
            "{sampled}"
        );
        for (estimate, every) in [
            (None, 10_000),
            (Some(99_999), 10_000),
            (Some(1_000_000), 1_000),
        ] {
            let exact = boundaries_sql(&table(estimate), every);
            assert!(
                !exact.contains("TABLESAMPLE")
                    && exact.contains(&format!("pgcdc_rn % {every} = 0")),
                "{estimate:?} {every}: {exact}"
            );
        }
    }
}
