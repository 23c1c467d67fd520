//! Unchanged TOASTed values: PostgreSQL does not send them, pgcdc completes them exactly or
//! says it could not.
//!
//! An UPDATE that leaves an out-of-line (TOASTed) value untouched writes no new copy of it
//! to the WAL, and pgoutput sends the column as "unchanged" (`u`) unless the table has
//! REPLICA IDENTITY FULL. pgcdc fills such a column, in this order:
//!
//! 1. From the old image, when it is a full one (REPLICA IDENTITY FULL). A key-only old
//!    image (a primary-key change, REPLICA IDENTITY USING INDEX) is never read as values.
//! 2. From earlier in the same transaction: the newest value this transaction sent for the
//!    same row (tracked by key, carried across key changes).
//! 3. `toast: fetch`: from the table, when pgcdc can prove the row version it reads holds
//!    the value at this change; else the placeholder ([`crate::avro::policy`]).
//!
//! ## Why a fetched value is exact
//!
//! Let change `e` of transaction `X` update row `R` to key `k`, with column `c` unchanged.
//! Then `c` at `e` equals `c` of `R`'s version before `e` and after `e` (`u` means the new
//! version reuses the old version's TOAST pointer; a value copied from elsewhere is
//! re-toasted and sent in full). pgcdc reads the row with key `k` after `X` committed, in a
//! snapshot that sees `X`, and uses `c` only when:
//!
//! - the row's `xmin` is `X`'s xid: the version read was written by `X` itself (not by a
//!   subtransaction, whose xid differs, nor by any later transaction; a later delete leaves
//!   no row). So it is the last version of a row that `X` wrote with key `k`;
//! - every later change of `X` that names key `k` (as new or old key) is an update of the
//!   same row that keeps its key and leaves `c` unchanged (`u`). Any other change naming `k`
//!   (a delete, a key change to or from `k`, an insert, a truncate, an update that sets `c`)
//!   disqualifies `c` for `e`. Rows only get or lose key `k` through changes that name it,
//!   and with key and replica identity the same columns (checked: `key_is_identity`),
//!   every such change shows it. So the version read is `R`'s, reached from `e` through
//!   updates that kept `c`: its `c` is `c` at `e`.
//!
//! Changes of aborted subtransactions are neither decoded nor visible, so they change
//! neither side of the argument. A replay after a crash that finds a newer version sees
//! another `xmin` and falls back to the placeholder. This relies on the publication
//! publishing every update and delete of the table without a row filter (pgcdc's own
//! publications do).
//!
//! The proof needs the rest of `X`, so from the first change that needs a fetch on, the
//! transaction's events are held until its commit, bounded by `toast_hold_bytes`; past the
//! bound, what is held goes out with the placeholder and the rest of the transaction gets
//! it too.

use std::collections::HashMap;
use std::sync::Arc;

use apache_avro::types::Value;

use crate::avro::envelope::{ChangeContext, TableCodec};
use crate::change::Event;
use crate::config::ToastMode;
use crate::decode::{Relation, Tuple, TupleData};
pub use crate::postgres::toast::KeyText;

/// A row image this large (in text bytes) may hold out-of-line values, so later updates in
/// the same transaction may need them; smaller rows are not remembered. Only completeness
/// depends on this (a value not remembered is fetched or gets the placeholder), never
/// correctness.
const REMEMBER_ROW_BYTES: usize = 512;

/// The key columns' text of a row image, None when one is missing (NULL or not sent).
pub fn key_text(rel: &Relation, t: &Tuple) -> Option<KeyText> {
    let mut out = Vec::new();
    for (i, _) in rel.key_columns() {
        match t.get(i) {
            Some(TupleData::Text(b)) => out.push(b.clone()),
            _ => return None,
        }
    }
    (!out.is_empty()).then_some(out)
}

fn tuple_bytes(t: &Tuple) -> usize {
    t.iter()
        .map(|d| match d {
            TupleData::Text(b) | TupleData::Binary(b) => b.len() + 16,
            _ => 16,
        })
        .sum()
}

/// An event on its way to the sink, held until its transaction's commit when it waits for
/// (or follows one that waits for) a fetch. `u` cells left in the event's `after` at
/// delivery get the placeholder.
pub struct HeldEvent {
    pub codec: Arc<TableCodec>,
    pub event: Event,
    pub cx: ChangeContext,
    /// Key text of the row and the `u` columns a fetch may still complete.
    pub fetch: Option<(KeyText, Vec<usize>)>,
}

impl HeldEvent {
    pub fn new(codec: &Arc<TableCodec>, event: Event, cx: ChangeContext) -> Self {
        HeldEvent {
            codec: codec.clone(),
            event,
            cx,
            fetch: None,
        }
    }
}

// Events are the common case and tombstones rare: boxing events would cost an allocation
// per change.
#[allow(clippy::large_enum_variant)]
pub enum Held {
    Event(HeldEvent),
    Tombstone {
        codec: Arc<TableCodec>,
        key: Value,
    },
    /// A record already encoded (an outbox event), kept in its place.
    Record(crate::kafka::sink::Record),
}

impl Held {
    fn bytes(&self) -> usize {
        match self {
            Held::Event(e) => e.event.after.as_ref().map_or(0, tuple_bytes) + 256,
            Held::Tombstone { .. } => 64,
            Held::Record(r) => {
                r.key.as_ref().map_or(0, Vec::len) + r.value.as_ref().map_or(0, Vec::len) + 64
            }
        }
    }
}

/// One transaction's view of unchanged TOASTed values.
pub struct TxnToast {
    mode: ToastMode,
    limit: u64,
    /// The newest complete-as-far-as-known row image per (relation, key).
    known: HashMap<(u32, KeyText), Tuple>,
    known_bytes: u64,
    held: Vec<Held>,
    held_bytes: u64,
    /// Held events with fetch candidates, by (relation, key).
    watch: HashMap<(u32, KeyText), Vec<usize>>,
    /// The hold limit was passed: no more holding in this transaction.
    overflowed: bool,
}

impl TxnToast {
    pub fn new(mode: ToastMode, limit: u64) -> Self {
        TxnToast {
            mode,
            limit,
            known: HashMap::new(),
            known_bytes: 0,
            held: Vec::new(),
            held_bytes: 0,
            watch: HashMap::new(),
            overflowed: false,
        }
    }

    /// A new transaction: nothing known, nothing held.
    pub fn begin(&mut self) {
        self.known.clear();
        self.known_bytes = 0;
        self.held.clear();
        self.held_bytes = 0;
        self.watch.clear();
        self.overflowed = false;
    }

    pub fn holding(&self) -> bool {
        !self.held.is_empty()
    }

    /// Whether an event of `codec`'s table with `u` cells left may wait for a fetch.
    pub fn can_fetch(&self, codec: &TableCodec) -> bool {
        self.mode == ToastMode::Fetch
            && !self.overflowed
            && codec.key.is_some()
            && codec.rel.key_is_identity()
    }

    fn disqualify(&mut self, rel: u32, key: &KeyText, keeps: Option<&Tuple>) {
        if self.watch.is_empty() {
            return;
        }
        let Some(idx) = self.watch.get(&(rel, key.clone())) else {
            return;
        };
        for &i in idx {
            if let Some(Held::Event(HeldEvent {
                fetch: Some((_, cols)),
                ..
            })) = self.held.get_mut(i)
            {
                match keeps {
                    // A later same-key update: columns it sets are no longer provable.
                    Some(new) => {
                        cols.retain(|&c| matches!(new.get(c), Some(TupleData::UnchangedToast)))
                    }
                    None => cols.clear(),
                }
            }
        }
    }

    fn remember(&mut self, rel: u32, key: KeyText, t: &Tuple, had_unchanged: bool) {
        let size = tuple_bytes(t);
        if !had_unchanged && size < REMEMBER_ROW_BYTES {
            self.known.remove(&(rel, key));
            return;
        }
        if self.known_bytes + size as u64 > self.limit / 2 {
            self.known.remove(&(rel, key));
            return;
        }
        self.known_bytes += size as u64;
        self.known.insert((rel, key), t.clone());
    }

    /// An insert: a row that later changes of this transaction may refer to.
    pub fn on_insert(&mut self, rel: &Relation, new: &Tuple) {
        // A new key has nothing remembered (a delete or key change forgot it), and a small
        // row is not remembered: with nothing held, the common case costs nothing.
        if rel.replica_identity == b'f'
            || (self.watch.is_empty() && tuple_bytes(new) < REMEMBER_ROW_BYTES)
        {
            return;
        }
        if let Some(k) = key_text(rel, new) {
            self.disqualify(rel.oid, &k, None);
            self.remember(rel.oid, k, new, false);
        }
    }

    /// A delete: its key no longer names the row.
    pub fn on_delete(&mut self, rel: &Relation, old: &Tuple) {
        if let Some(k) = key_text(rel, old) {
            self.disqualify(rel.oid, &k, None);
            self.known.remove(&(rel.oid, k));
        }
    }

    pub fn on_truncate(&mut self, rel: &Relation) {
        for ((r, _), idx) in &self.watch {
            if *r != rel.oid {
                continue;
            }
            for &i in idx {
                if let Some(Held::Event(HeldEvent {
                    fetch: Some((_, cols)),
                    ..
                })) = self.held.get_mut(i)
                {
                    cols.clear();
                }
            }
        }
        self.known.retain(|(r, _), _| *r != rel.oid);
    }

    /// [`Self::on_update`] taking the image by value: an update with nothing unchanged, in
    /// a transaction with nothing remembered or held, passes through without a copy.
    pub fn update(
        &mut self,
        rel: &Relation,
        old: Option<&Tuple>,
        key_only: bool,
        new: Tuple,
    ) -> Tuple {
        let quiet = self.watch.is_empty() && self.known.is_empty();
        if quiet
            && tuple_bytes(&new) < REMEMBER_ROW_BYTES
            && !new.iter().any(|d| matches!(d, TupleData::UnchangedToast))
        {
            return new;
        }
        self.on_update(rel, old, key_only, &new)
    }

    /// An update: the new image with `u` cells completed from a full old image or from
    /// earlier in the transaction where possible. Later-event rules for held fetches apply.
    pub fn on_update(
        &mut self,
        rel: &Relation,
        old: Option<&Tuple>,
        key_only: bool,
        new: &Tuple,
    ) -> Tuple {
        let has_unchanged = new.iter().any(|d| matches!(d, TupleData::UnchangedToast));
        let full_old = old.filter(|_| !key_only && rel.replica_identity == b'f');
        if rel.replica_identity == b'f' {
            // Every value is in the old image; nothing to remember or prove.
            return match full_old {
                Some(o) if has_unchanged => complete(new, o),
                _ => new.clone(),
            };
        }
        let new_k = key_text(rel, new);
        let old_k = old.and_then(|o| key_text(rel, o));
        let same_key = old_k.is_none() || old_k == new_k;
        match (&new_k, same_key) {
            (Some(k), true) => self.disqualify(rel.oid, k, Some(new)),
            _ => {
                for k in [&old_k, &new_k].into_iter().flatten() {
                    self.disqualify(rel.oid, k, None);
                }
            }
        }
        // The row's key before this change names what is known of it.
        let before_k = old_k.clone().or_else(|| new_k.clone());
        let known = before_k.and_then(|k| self.known.remove(&(rel.oid, k)));
        let resolved = match (&known, has_unchanged) {
            (Some(kn), true) => complete(new, kn),
            _ => new.clone(),
        };
        if let Some(k) = new_k {
            self.remember(rel.oid, k, &resolved, has_unchanged);
        }
        resolved
    }

    /// Holds an event until the commit. Past the hold limit, returns everything held (their
    /// fetches given up) to be delivered now, and holds nothing more in this transaction.
    pub fn hold(&mut self, h: Held) -> Option<Vec<Held>> {
        self.held_bytes += h.bytes() as u64;
        if let Held::Event(HeldEvent {
            codec,
            fetch: Some((k, _)),
            ..
        }) = &h
        {
            self.watch
                .entry((codec.rel.oid, k.clone()))
                .or_default()
                .push(self.held.len());
        }
        self.held.push(h);
        if self.held_bytes > self.limit {
            self.overflowed = true;
            let mut out = self.take();
            for h in &mut out {
                if let Held::Event(e) = h {
                    e.fetch = None;
                }
            }
            return Some(out);
        }
        None
    }

    /// Everything held, in order, to be completed and delivered at the commit.
    pub fn take(&mut self) -> Vec<Held> {
        self.watch.clear();
        self.held_bytes = 0;
        std::mem::take(&mut self.held)
    }
}

/// `new` with each `u` cell taken from `from` where `from` has a value (or NULL) there.
fn complete(new: &Tuple, from: &Tuple) -> Tuple {
    new.iter()
        .enumerate()
        .map(|(i, d)| match (d, from.get(i)) {
            (TupleData::UnchangedToast, Some(f @ (TupleData::Text(_) | TupleData::Null))) => {
                f.clone()
            }
            _ => d.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::Column;
    use crate::typemap::PgType;
    use bytes::Bytes;

    fn rel(identity: u8) -> Relation {
        let col = |n: &str, key: bool| Column::test(n, PgType::Text, key);
        Relation {
            oid: 9,
            schema: "public".into(),
            table: "t".into(),
            replica_identity: identity,
            columns: vec![col("id", true), col("body", false), col("n", false)],
        }
    }

    fn t(id: &str, body: Option<&str>, n: &str) -> Tuple {
        vec![
            TupleData::Text(Bytes::from(id.to_owned())),
            match body {
                Some(b) => TupleData::Text(Bytes::from(b.to_owned())),
                None => TupleData::UnchangedToast,
            },
            TupleData::Text(Bytes::from(n.to_owned())),
        ]
    }

    fn big(c: char) -> String {
        std::iter::repeat_n(c, 600).collect()
    }

    #[test]
    fn unchanged_value_comes_from_earlier_in_the_transaction_and_follows_key_changes() {
        let r = rel(b'd');
        let mut x = TxnToast::new(ToastMode::Fetch, 1 << 30);
        x.on_insert(&r, &t("1", Some(&big('a')), "0"));
        let u = x.on_update(&r, None, false, &t("1", None, "1"));
        assert_eq!(u[1], TupleData::Text(Bytes::from(big('a'))));
        // A key change carries the value to the new key; the key-only old image is not read.
        let old_key = vec![
            TupleData::Text(Bytes::from("1")),
            TupleData::Null,
            TupleData::Null,
        ];
        let moved = x.on_update(&r, Some(&old_key), true, &t("2", None, "2"));
        assert_eq!(moved[1], TupleData::Text(Bytes::from(big('a'))));
        assert!(!x.known.contains_key(&(9, vec![Bytes::from("1")])));
        // Unknown rows stay unchanged: never filled from a key-only image.
        let other = x.on_update(
            &r,
            Some(&vec![
                TupleData::Text(Bytes::from("5")),
                TupleData::Null,
                TupleData::Null,
            ]),
            true,
            &t("6", None, "0"),
        );
        assert_eq!(other[1], TupleData::UnchangedToast);
    }

    #[test]
    fn full_identity_fills_from_the_old_image() {
        let r = rel(b'f');
        let mut x = TxnToast::new(ToastMode::Fetch, 1 << 30);
        let old = t("1", Some("v"), "0");
        let u = x.on_update(&r, Some(&old), false, &t("1", None, "1"));
        assert_eq!(u[1], TupleData::Text(Bytes::from("v")));
    }

    fn held(x: &mut TxnToast, key: &str) {
        // A stand-in event: only its fetch candidates matter to these rules.
        x.held.push(Held::Tombstone {
            codec: dummy_codec(),
            key: Value::Null,
        });
        let i = x.held.len() - 1;
        x.held[i] = Held::Event(HeldEvent {
            fetch: Some((vec![Bytes::from(key.to_owned())], vec![1])),
            ..HeldEvent::new(&dummy_codec(), update(None), context())
        });
        x.watch
            .entry((9, vec![Bytes::from(key.to_owned())]))
            .or_default()
            .push(i);
    }

    fn update(after: Option<Tuple>) -> Event {
        Event {
            op: crate::avro::envelope::Op::Update,
            key: None,
            before: None,
            after,
            marks: Default::default(),
            follows: false,
        }
    }

    fn context() -> ChangeContext {
        crate::change::Transaction::begin(1, crate::Lsn::ZERO, 0, false).next_context(
            9,
            crate::Lsn::ZERO,
            crate::Lsn::ZERO,
        )
    }

    fn candidates(x: &TxnToast, i: usize) -> Vec<usize> {
        match &x.held[i] {
            Held::Event(HeldEvent {
                fetch: Some((_, c)),
                ..
            }) => c.clone(),
            _ => vec![],
        }
    }

    fn dummy_codec() -> Arc<TableCodec> {
        crate::avro::envelope::tests::codec(rel(b'd'))
    }

    #[test]
    fn later_changes_of_the_same_key_decide_what_a_fetch_may_prove() {
        let r = rel(b'd');
        let mut x = TxnToast::new(ToastMode::Fetch, 1 << 30);
        held(&mut x, "1");
        // Same key, value still unchanged: the candidate stays.
        x.on_update(&r, None, false, &t("1", None, "2"));
        assert_eq!(candidates(&x, 0), vec![1]);
        // Another key: no effect.
        x.on_update(&r, None, false, &t("3", Some("w"), "2"));
        assert_eq!(candidates(&x, 0), vec![1]);
        // Same key, value set: the fetched value would be the new one, not the one at the event.
        x.on_update(&r, None, false, &t("1", Some("w"), "3"));
        assert!(candidates(&x, 0).is_empty());

        for later in ["delete", "key change away", "key change into", "truncate"] {
            let mut x = TxnToast::new(ToastMode::Fetch, 1 << 30);
            held(&mut x, "1");
            let key_of = |k: &str| {
                vec![
                    TupleData::Text(Bytes::from(k.to_owned())),
                    TupleData::Null,
                    TupleData::Null,
                ]
            };
            match later {
                "delete" => x.on_delete(&r, &key_of("1")),
                "key change away" => {
                    x.on_update(&r, Some(&key_of("1")), true, &t("2", None, "0"));
                }
                "key change into" => {
                    x.on_update(&r, Some(&key_of("7")), true, &t("1", None, "0"));
                }
                _ => x.on_truncate(&r),
            }
            assert!(candidates(&x, 0).is_empty(), "{later}");
        }
    }

    #[test]
    fn holding_past_the_limit_gives_up_fetches() {
        let mut x = TxnToast::new(ToastMode::Fetch, 500);
        held(&mut x, "1");
        let out = x
            .hold(Held::Event(HeldEvent::new(
                &dummy_codec(),
                update(Some(t("2", Some(&big('b')), "0"))),
                context(),
            )))
            .expect("over the limit");
        assert_eq!(out.len(), 2);
        assert!(out
            .iter()
            .all(|h| matches!(h, Held::Event(HeldEvent { fetch: None, .. }))));
        assert!(!x.holding());
        assert!(!x.can_fetch(&dummy_codec()));
    }
}
