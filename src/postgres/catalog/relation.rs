//! Relations and types as the stream needs them: a pgoutput Relation message completed
//! from the catalog (types, NOT NULL, constant defaults).

use std::collections::HashMap;

use crate::config::{ConnectorConfig, TableName};
use crate::decode::pgoutput::RelationMsg;
use crate::decode::{Column, Relation};
use crate::error::{Code, Error, Result};
use crate::typemap::{PgType, TypeInfo};

use super::*;

/// What the catalog says about a column beyond the Relation message.
pub(super) struct ColumnMeta {
    pub(super) dims: i32,
    pub(super) not_null: bool,
    /// `pg_get_expr` of the default (None for none and for generated columns).
    pub(super) default_expr: Option<String>,
    /// `format_type`: the column's type as SQL spells it.
    pub(super) sql_type: String,
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

impl Catalog {
    pub(super) async fn type_info(&self, oid: u32) -> Result<(TypeInfo, u32, u32, i32)> {
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
                Error::permanent(
                    Code::PostgresSql,
                    format!(
                        "PostgreSQL {}: type OID {oid} not found in pg_type",
                        self.server
                    ),
                )
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
                return Err(Error::permanent(
                    Code::PostgresSql,
                    format!("type OID {oid}: domain or array nesting too deep"),
                ));
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

    /// The attributes of composite type `oid` with their types, and its schema and name;
    /// None when the type is not a composite.
    pub async fn composite(&mut self, oid: u32) -> Result<Option<crate::typemap::Composite>> {
        let (info, ..) = self.type_info(oid).await?;
        if info.typtype != b'c' {
            return Ok(None);
        }
        let rows = self
            .client
            .query(
                "SELECT a.attname::text, a.atttypid, a.atttypmod
                   FROM pg_type t JOIN pg_attribute a ON a.attrelid = t.typrelid
                  WHERE t.oid = $1 AND a.attnum > 0 AND NOT a.attisdropped
                  ORDER BY a.attnum",
                &[&oid],
            )
            .await
            .map_err(|e| self.err(e))?;
        let mut fields = Vec::with_capacity(rows.len());
        for r in &rows {
            let (name, ty_oid, typmod): (String, u32, i32) = (r.col(0)?, r.col(1)?, r.col(2)?);
            fields.push((name, self.resolve_type(ty_oid, typmod).await?));
        }
        Ok(Some(crate::typemap::Composite {
            schema: info.schema,
            name: info.name,
            fields,
        }))
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
            let name = TableName::new(&msg.namespace, &msg.name);
            if let Some(cols) = conn.key_columns.get(&name) {
                for c in cols {
                    if !msg.columns.iter().any(|mc| &mc.name == c) {
                        return Err(Error::permanent(Code::PostgresSql, format!(
                            "key_columns.{qualified}: table {} has no column {}; fix the connector file",
                            crate::sql::qualified(&msg.namespace, &msg.name),
                            crate::sql::ident(c)
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

    /// A constant default in the column type's text form: the literal of the default
    /// expression (`'pending'::text`, `1.5`, `true`) cast to the column type by the server,
    /// which prints it as pgoutput would. Expressions that compute a value (`nextval(…)`,
    /// `now()`, operators) are not evaluated and have no constant default.
    pub(super) async fn constant_default(&self, f: &ColumnMeta) -> Option<String> {
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
