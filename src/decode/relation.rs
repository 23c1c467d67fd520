//! The relation cache: what pgoutput's Relation messages say about each table, joined with
//! what only the catalog knows (primary key, column types behind domains and arrays).
//!
//! A Relation message is a schema barrier: PostgreSQL sends it before the first change of a
//! table in a session and again after the table's definition changed, always before the
//! changes that depend on it. Rows are decoded with the relation in force at that moment.

use std::collections::HashMap;
use std::sync::Arc;

use crate::typemap::PgType;

#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    pub type_oid: u32,
    pub type_modifier: i32,
    pub ty: PgType,
    /// Part of the event key (primary key, or configured key columns).
    pub key: bool,
    /// Flagged as part of the replica identity in the Relation message: the columns an old
    /// key image carries.
    pub identity: bool,
    /// `NOT NULL` in the catalog when the relation was read (false for a table that no
    /// longer exists).
    pub not_null: bool,
    /// A constant column default as PostgreSQL prints a value of the column's type (the
    /// text pgoutput would send), or None (no default, or one computed at insert time such
    /// as `nextval(…)` or `now()`).
    pub default: Option<String>,
}

#[cfg(test)]
impl Column {
    /// A column for unit tests: nullable, no default; `key` makes it part of the event key
    /// and of the replica identity.
    pub(crate) fn test(name: &str, ty: crate::typemap::PgType, key: bool) -> Column {
        let type_oid = match ty {
            crate::typemap::PgType::Int4 => 23,
            _ => 0,
        };
        Column {
            name: name.into(),
            type_oid,
            type_modifier: -1,
            ty,
            key,
            identity: key,
            not_null: false,
            default: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Relation {
    pub oid: u32,
    pub schema: String,
    pub table: String,
    /// `d` default, `n` nothing, `f` full, `i` index.
    pub replica_identity: u8,
    pub columns: Vec<Column>,
}

impl Relation {
    pub fn qualified_name(&self) -> String {
        format!("{}.{}", self.schema, self.table)
    }

    /// The name as SQL needs it, for messages and hints: `public.orders`,
    /// `"Sales & Co"."Order Lines"`.
    pub fn quoted_name(&self) -> String {
        crate::sql::qualified(&self.schema, &self.table)
    }

    /// Whether the event key is exactly the replica identity: old key images (primary-key
    /// changes, deletes) then name every key a change touches.
    pub fn key_is_identity(&self) -> bool {
        matches!(self.replica_identity, b'd' | b'i')
            && self.has_key()
            && self.columns.iter().all(|c| c.key == c.identity)
    }

    pub fn key_columns(&self) -> impl Iterator<Item = (usize, &Column)> {
        self.columns.iter().enumerate().filter(|(_, c)| c.key)
    }

    pub fn has_key(&self) -> bool {
        self.columns.iter().any(|c| c.key)
    }
}

/// Relations by OID, as last announced by the server.
#[derive(Default)]
pub struct RelationCache {
    by_oid: HashMap<u32, Arc<Relation>>,
}

impl RelationCache {
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Relation>> {
        self.by_oid.values()
    }

    pub fn get(&self, oid: u32) -> Option<&Arc<Relation>> {
        self.by_oid.get(&oid)
    }

    pub fn insert(&mut self, rel: Relation) -> Arc<Relation> {
        let rel = Arc::new(rel);
        self.by_oid.insert(rel.oid, rel.clone());
        rel
    }
}
