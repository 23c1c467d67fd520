//! Row images → Avro: each column's value under the table's rules and value policy, as a
//! `Value` record ([`TableCodec::row`], [`TableCodec::key`]) or written straight to Avro
//! bytes ([`TableCodec::write_row`]). The direct writer turns the text of the common scalar
//! types into their encoding without a `Value` per column and its allocations (a profile of
//! the snapshot had `TableCodec::row` at 17% of pgcdc's CPU); every other column takes the
//! `Value` path. Debug builds compare every event's bytes with apache-avro's encoding of
//! the `Value` record ([`crate::avro::Registered::encode_with`]).

use apache_avro::types::Value;
use apache_avro::Schema;

use crate::avro::columns::Rule;
use crate::avro::encode;
use crate::avro::envelope::TableCodec;
use crate::avro::fields::Shape;
use crate::avro::policy::{placeholder_value, Marks, HEADER_LOSSY};
use crate::config::{ToastMode, Unrepresentable};
use crate::decode::{Tuple, TupleData};
use crate::error::{Code, Error, Result};
use crate::typemap::Scalar;

impl TableCodec {
    fn column_error(&self, i: usize, e: impl std::fmt::Display) -> Error {
        Error::permanent(
            Code::Value,
            format!(
                "table {} column {}: {e}",
                self.rel.quoted_name(),
                self.rel
                    .columns
                    .get(i)
                    .map(|c| crate::sql::ident(&c.name))
                    .unwrap_or_else(|| "?".into())
            ),
        )
    }

    fn check_width(&self, t: &Tuple) -> Result<()> {
        if t.len() != self.rel.columns.len() {
            return Err(Error::permanent(Code::Value, format!(
                "table {}: a row has {} columns but the relation announced {}; this is a pgoutput protocol error",
                self.rel.quoted_name(),
                t.len(),
                self.rel.columns.len()
            )));
        }
        Ok(())
    }

    /// One column's value. A value its Avro type cannot hold is null under
    /// `unrepresentable: null` (marked lossy); an unchanged TOASTed value that nobody
    /// completed is the placeholder (marked unavailable), or an error under `toast: fail`.
    fn cell(&self, i: usize, d: &TupleData, marks: &mut Marks) -> Result<Option<Value>> {
        match d {
            TupleData::Null => Ok(None),
            TupleData::Text(b) => match self.rel.columns[i].ty.to_avro(b) {
                Ok(v) => Ok(Some(v)),
                Err(e) if self.policy.unrepresentable == Unrepresentable::Null => {
                    tracing::debug!(table = %self.rel.quoted_name(), column = i, error = %e, "value carried as null");
                    marks.lossy(i);
                    Ok(None)
                }
                Err(e) => Err(self.column_error(
                    i,
                    format!("{e}; pgcdc stops (unrepresentable: fail); set unrepresentable: null to carry it as null with header {HEADER_LOSSY}"),
                )),
            },
            TupleData::Binary(_) => {
                Err(self.column_error(i, "arrived in binary format, which pgcdc does not request"))
            }
            TupleData::UnchangedToast => {
                if self.policy.toast == ToastMode::Fail {
                    return Err(self.column_error(
                        i,
                        format!(
                            "PostgreSQL did not send this unchanged TOASTed value (REPLICA IDENTITY DEFAULT) and \
                             toast: fail stops here; set toast: fetch or placeholder to go on (this WAL is already \
                             written), and run ALTER TABLE {} REPLICA IDENTITY FULL so future updates carry it",
                            self.rel.quoted_name()
                        ),
                    ));
                }
                marks.unavailable(i);
                Ok(placeholder_value(&self.rel.columns[i].ty, &self.policy.placeholder))
            }
        }
    }

    /// One column's converted value in a row image (before its field's union): the rule
    /// applied, a key-only image's missing column and a NULL in a required field marked.
    fn column_value(
        &self,
        i: usize,
        d: &TupleData,
        key_only: bool,
        marks: &mut Marks,
    ) -> Result<Option<Value>> {
        let rule = &self.rules[i];
        let col = &self.rel.columns[i];
        if key_only && !col.identity {
            marks.missing(i);
            return Ok(None);
        }
        if rule.replaces_type() {
            return Ok(match d {
                TupleData::Text(b) => rule.replace(b),
                // Null stays null; a value PostgreSQL did not send is marked, and only
                // a string placeholder can stand in a string field.
                _ => match self.cell(i, d, marks)? {
                    Some(Value::String(p)) if marks.unavailable.contains(&i) => {
                        Some(Value::String(p))
                    }
                    _ => None,
                },
            });
        }
        let v = self.cell(i, d, marks)?.map(|v| rule.truncate(v));
        if v.is_none() && self.fields[i].shape == Shape::Required && !marks.unavailable.contains(&i)
        {
            // NULL in a column that is NOT NULL now (the row was written before
            // SET NOT NULL): the required field cannot hold it.
            if self.policy.unrepresentable == Unrepresentable::Fail {
                return Err(self.column_error(
                    i,
                    format!("is NULL in a row written before the column became NOT NULL, and its field is required; \
                             pgcdc stops (unrepresentable: fail); set unrepresentable: null to carry the column default \
                             or zero with header {HEADER_LOSSY}"),
                ));
            }
            marks.lossy(i);
        }
        Ok(v)
    }

    /// The `Value` record of a row image; `marks` collects the columns that fall under a
    /// policy. A key-only old image (`key_only`: REPLICA IDENTITY DEFAULT or USING INDEX)
    /// carries only the identity columns: the others are marked unavailable, and a required
    /// field among them carries Debezium's fill ([`crate::avro::fields`]).
    pub fn row(&self, t: &Tuple, key_only: bool, marks: &mut Marks) -> Result<Value> {
        self.check_width(t)?;
        let mut fields = Vec::with_capacity(t.len());
        for (i, d) in t.iter().enumerate() {
            if self.rules[i] == Rule::Drop {
                continue;
            }
            let v = self.column_value(i, d, key_only, marks)?;
            fields.push((
                self.field_names[i].clone(),
                self.fields[i].wrap(v, &self.rel.columns[i].ty),
            ));
        }
        Ok(Value::Record(fields))
    }

    /// Appends the Avro body of [`Self::row`]`(t, key_only, marks)` as the envelope's row
    /// record without building it: a column kept as it is whose text is a common scalar
    /// ([`crate::typemap::PgType::scalar_of`]) is written from the text; any other column
    /// goes through [`Self::column_value`] and [`encode::write`] on its own.
    pub(super) fn write_row(
        &self,
        t: &Tuple,
        key_only: bool,
        marks: &mut Marks,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        self.check_width(t)?;
        let (row, ns) = self.row_schema()?;
        let names = self.value.names();
        let Schema::Record(r) = row else {
            return Err(self.misfit("the envelope's row is not a record"));
        };
        let ns = r.name.namespace().or(ns);
        let mut fields = r.fields.iter();
        for (i, d) in t.iter().enumerate() {
            if self.rules[i] == Rule::Drop {
                continue;
            }
            let Some(f) = fields.next() else {
                return Err(self.misfit("the row record has fewer fields than columns"));
            };
            let col = &self.rel.columns[i];
            let spec = &self.fields[i];
            let direct = match d {
                TupleData::Text(b)
                    if self.rules[i] == Rule::Keep && (!key_only || col.identity) =>
                {
                    col.ty.scalar_of(b)
                }
                _ => None,
            };
            if let Some(s) = direct {
                match spec.shape {
                    Shape::Required => {}
                    Shape::Optional => encode::zigzag(1, out),
                    Shape::OptionalWithDefault => encode::zigzag(0, out),
                }
                write_scalar(&s, out);
                continue;
            }
            let v = self.column_value(i, d, key_only, marks)?;
            encode::write(&spec.wrap(v, &col.ty), &f.schema, names, ns, out)
                .map_err(|e| self.misfit(format_args!("{}.{}: {e}", r.name, f.name)))?;
        }
        if fields.next().is_some() {
            return Err(self.misfit("the row record has more fields than columns"));
        }
        Ok(())
    }

    /// A value that does not fit the schema pgcdc built for it: an internal error.
    pub(super) fn misfit(&self, e: impl std::fmt::Display) -> Error {
        crate::avro::misfit(&|| format!("table {}", self.rel.quoted_name()), e)
    }

    /// The key record of a row image, or None for a keyless table. Key fields are
    /// required, so no policy applies: a key value that does not convert is an error.
    pub fn key(&self, t: &Tuple) -> Result<Option<Value>> {
        if self.key.is_none() {
            return Ok(None);
        }
        self.check_width(t)?;
        let mut fields = Vec::new();
        for (i, c) in self.rel.key_columns() {
            let v =
                c.ty.to_avro(self.key_text(t, i)?)
                    .map_err(|e| self.column_error(i, e))?;
            fields.push((self.field_names[i].clone(), v));
        }
        Ok(Some(Value::Record(fields)))
    }

    /// Column `i` of a row image, a key column: its text, or the error that it has none.
    fn key_text<'t>(&self, t: &'t Tuple, i: usize) -> Result<&'t [u8]> {
        match &t[i] {
            TupleData::Text(b) => Ok(b),
            _ => Err(self.column_error(
                i,
                "is a key column but the row carries no value for it (NULL, or the old image lacks it); \
                 give the table a primary key or fix key_columns",
            )),
        }
    }

    /// The key of a row image in the Confluent wire format (None for a keyless table),
    /// written from the text as [`Self::write_row`] writes rows; debug builds compare it
    /// with apache-avro's encoding of [`Self::key`].
    pub fn encode_key(&self, t: &Tuple) -> Result<Option<Vec<u8>>> {
        let Some(ks) = &self.key else {
            return Ok(None);
        };
        let write = |out: &mut Vec<u8>| {
            self.check_width(t)?;
            let Schema::Record(r) = ks.schema() else {
                return Err(self.misfit("the key schema is not a record"));
            };
            let ns = r.name.namespace();
            let mut fields = r.fields.iter();
            for (i, c) in self.rel.key_columns() {
                let Some(f) = fields.next() else {
                    return Err(self.misfit("the key record has fewer fields than key columns"));
                };
                let text = self.key_text(t, i)?;
                match c.ty.scalar_of(text) {
                    Some(s) => write_scalar(&s, out),
                    None => {
                        let v = c.ty.to_avro(text).map_err(|e| self.column_error(i, e))?;
                        encode::write(&v, &f.schema, ks.names(), ns, out)
                            .map_err(|e| self.misfit(format_args!("{}.{}: {e}", r.name, f.name)))?;
                    }
                }
            }
            Ok(())
        };
        let check = || {
            self.key(t)
                .unwrap_or_else(|e| panic!("the key writer accepted a key key() refuses: {e}"))
                .unwrap_or(Value::Null)
        };
        ks.encode_with(write, check).map(Some)
    }
}

/// The Avro encoding of a scalar, as [`encode::write`] writes its `Value`.
fn write_scalar(s: &Scalar<'_>, out: &mut Vec<u8>) {
    match s {
        Scalar::Boolean(b) => out.push(u8::from(*b)),
        Scalar::Int(i) => encode::zigzag(i64::from(*i), out),
        Scalar::Long(i) => encode::zigzag(*i, out),
        Scalar::Float(x) => out.extend_from_slice(&x.to_le_bytes()),
        Scalar::Double(x) => out.extend_from_slice(&x.to_le_bytes()),
        Scalar::Str(t) => encode::bytes(t.as_bytes(), out),
        Scalar::String(t) => encode::bytes(t.as_bytes(), out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{Column, Relation};
    use crate::typemap::PgType;

    /// One column of each shape (required, optional, optional with a default) and of types
    /// on and off the direct path.
    fn codec() -> std::sync::Arc<TableCodec> {
        let col = |name: &str, ty: PgType, not_null: bool, default: Option<&str>| Column {
            not_null,
            default: default.map(String::from),
            ..Column::test(name, ty, false)
        };
        crate::avro::envelope::tests::codec(Relation {
            oid: 7,
            schema: "public".into(),
            table: "w".into(),
            replica_identity: b'f',
            columns: vec![
                Column {
                    not_null: true,
                    ..Column::test("id", PgType::Int8, true)
                },
                col("label", PgType::Text, true, None),
                col("at", PgType::TimestampTz, false, None),
                col("flag", PgType::Bool, false, Some("true")),
                col("x", PgType::Float8, false, None),
                col("day", PgType::Date, false, None),
                col(
                    "amount",
                    PgType::Numeric {
                        precision: 10,
                        scale: 2,
                    },
                    false,
                    None,
                ),
                col("n", PgType::Int4, true, Some("5")),
            ],
        })
    }

    fn tuple(cells: &[Option<&str>]) -> Tuple {
        cells
            .iter()
            .map(|c| match c {
                Some("<toast>") => TupleData::UnchangedToast,
                Some(s) => TupleData::Text(bytes::Bytes::from(s.to_string())),
                None => TupleData::Null,
            })
            .collect()
    }

    /// The direct writer's bytes and marks are those of `row()` encoded by `encode::write`.
    #[test]
    fn write_row_matches_row() {
        let c = codec();
        let (row_schema, ns) = c.row_schema().unwrap();
        let rows = [
            [
                Some("1"),
                Some("a"),
                Some("2025-01-02 03:04:05.123456+00"),
                Some("t"),
                Some("1.5"),
                Some("2024-02-29"),
                Some("12.34"),
                Some("7"),
            ],
            [Some("-9"), Some(""), None, None, None, None, None, None],
            // Values the direct path hands on: NaN float, infinite date (lossy null), an
            // unchanged TOAST value, a NULL in a required column (lossy, fill).
            [
                Some("9223372036854775807"),
                Some("<toast>"),
                Some("infinity"),
                Some("f"),
                Some("NaN"),
                Some("infinity"),
                Some("NaN"),
                None,
            ],
        ];
        for (key_only, cells) in [false, true]
            .into_iter()
            .flat_map(|k| rows.iter().map(move |r| (k, r)))
        {
            let t = tuple(cells);
            let mut want_marks = Marks::default();
            let want = c.row(&t, key_only, &mut want_marks).map(|v| {
                let mut out = Vec::new();
                encode::write(&v, row_schema, c.value.names(), ns, &mut out).unwrap();
                out
            });
            let mut marks = Marks::default();
            let mut out = Vec::new();
            let got = c
                .write_row(&t, key_only, &mut marks, &mut out)
                .map(|()| out);
            assert_eq!(
                got.as_ref().map_err(|e| e.to_string()),
                want.as_ref().map_err(|e| e.to_string()),
                "{cells:?} key_only={key_only}"
            );
            assert_eq!(marks, want_marks, "{cells:?} key_only={key_only}");
        }
    }
}
