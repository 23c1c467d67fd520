//! Snapshot progress as the checkpoint records it: the chunks an initial snapshot has
//! committed, the key ranges an incremental snapshot has left, and rows per finished table.
//!
//! One state, one writer: whoever reads the chunks (the initial snapshot's workers, under
//! one lock; the reader for watermark chunks; `initial_only`'s paged reads) applies each
//! chunk to it and hands the sink the state after the chunk together with the chunk's rows
//! ([`SnapshotState::advance`]). The sink records the last state it was handed in each
//! checkpoint, so progress and rows commit in the same Kafka transaction.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::postgres::snapshot::{Key, KeyRange};

/// Snapshot progress as stored in the checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotState {
    /// Present while an initial snapshot is running inside its exported snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial: Option<Vec<TableProgress>>,
    /// Ranges still to read with watermarks, first one next.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<TableWork>,
    /// Rows delivered by the last finished snapshot of each table.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub finished: BTreeMap<String, Finished>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Initial,
    Incremental,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finished {
    pub kind: Kind,
    pub rows: u64,
}

/// An initial snapshot's progress on one table: committed chunks as merged runs of chunk
/// indices with their key ranges, in chunk order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableProgress {
    pub table: String,
    pub chunks: usize,
    pub done: Vec<DoneRun>,
    pub rows: u64,
    pub estimate: u64,
}

/// Chunks `from..to` are committed; together they cover `range`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DoneRun {
    pub from: usize,
    pub to: usize,
    pub range: KeyRange,
}

/// A range of one table still to read with watermarks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableWork {
    pub table: String,
    pub kind: Kind,
    pub range: KeyRange,
    pub rows: u64,
    pub estimate: u64,
}

impl TableProgress {
    pub fn is_done(&self) -> bool {
        matches!(self.done.as_slice(), [r] if r.from == 0 && r.to == self.chunks)
    }

    /// Records chunk `idx` (covering `range`, `rows` rows) as committed.
    pub fn complete(&mut self, idx: usize, range: KeyRange, rows: u64) {
        self.rows += rows;
        let pos = self.done.partition_point(|r| r.from < idx);
        self.done.insert(
            pos,
            DoneRun {
                from: idx,
                to: idx + 1,
                range,
            },
        );
        // Merge with the neighbours this chunk touches.
        let mut i = pos.saturating_sub(1);
        while i + 1 < self.done.len() {
            if self.done[i].to == self.done[i + 1].from {
                let next = self.done.remove(i + 1);
                self.done[i].to = next.to;
                self.done[i].range.until = next.range.until;
            } else if i > pos {
                break;
            } else {
                i += 1;
            }
        }
    }

    /// Whether chunk `idx` is committed.
    pub fn has(&self, idx: usize) -> bool {
        self.done.iter().any(|r| r.from <= idx && idx < r.to)
    }

    /// The key ranges not yet committed, in key order.
    pub fn remaining(&self) -> Vec<KeyRange> {
        let mut out = Vec::new();
        let mut after: Option<Key> = None;
        let mut at = 0;
        for r in &self.done {
            if r.from > at {
                out.push(KeyRange {
                    after: after.clone(),
                    until: r.range.after.clone(),
                });
            }
            after = r.range.until.clone();
            at = r.to;
        }
        if at < self.chunks || self.chunks == 0 {
            out.push(KeyRange { after, until: None });
        }
        out
    }
}

/// What a committed chunk changes in the state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkDone {
    /// Chunk `idx` of the initial snapshot's table number `table`.
    Initial {
        table: usize,
        idx: usize,
        range: KeyRange,
        rows: u64,
    },
    /// The first pending range was read up to and including `last` (None: nothing left);
    /// `finished` when the range is exhausted.
    Work {
        last: Option<Key>,
        rows: u64,
        finished: bool,
    },
}

/// A chunk's progress applied: the state to hand the sink with the chunk's rows.
#[derive(Debug)]
pub struct Advanced {
    pub state: Box<SnapshotState>,
    /// The table whose snapshot this chunk finished, if one did.
    pub finished: Option<String>,
}

impl SnapshotState {
    /// Applies `done` and returns a copy of the state after it, for the sink.
    pub fn advance(&mut self, done: &ChunkDone) -> Advanced {
        let finished = self.apply(done);
        Advanced {
            state: Box::new(self.clone()),
            finished,
        }
    }

    /// Applies a chunk's progress. Returns the table whose snapshot just finished, if one did.
    pub fn apply(&mut self, done: &ChunkDone) -> Option<String> {
        match done {
            ChunkDone::Initial {
                table,
                idx,
                range,
                rows,
            } => {
                let tables = self.initial.as_mut()?;
                let t = tables.get_mut(*table)?;
                t.complete(*idx, range.clone(), *rows);
                let finished = t.is_done().then(|| t.table.clone());
                if let Some(name) = &finished {
                    let rows = t.rows;
                    self.finished.insert(
                        name.clone(),
                        Finished {
                            kind: Kind::Initial,
                            rows,
                        },
                    );
                }
                if tables.iter().all(TableProgress::is_done) {
                    self.initial = None;
                }
                finished
            }
            ChunkDone::Work {
                last,
                rows,
                finished,
            } => {
                let w = self.pending.first_mut()?;
                w.rows += rows;
                if let Some(k) = last {
                    w.range.after = Some(k.clone());
                }
                if !finished {
                    return None;
                }
                let w = self.pending.remove(0);
                // A table finished in several ranges sums their rows.
                let more: u64 = w.rows;
                let still = self.pending.iter().any(|p| p.table == w.table);
                let entry = self.finished.entry(w.table.clone()).or_insert(Finished {
                    kind: w.kind,
                    rows: 0,
                });
                if entry.kind != w.kind {
                    *entry = Finished {
                        kind: w.kind,
                        rows: 0,
                    };
                }
                entry.rows += more;
                if still {
                    None
                } else {
                    Some(w.table)
                }
            }
        }
    }

    /// Adds ranges to read with watermarks.
    pub fn add(&mut self, work: Vec<TableWork>) {
        for w in work {
            if w.kind == Kind::Incremental {
                self.finished.remove(&w.table);
            }
            self.pending.push(w);
        }
    }

    /// After a restart: an initial snapshot that was cut short continues with watermarks
    /// (its exported snapshot is gone); what it had committed stays committed.
    pub fn resume(mut self) -> SnapshotState {
        if let Some(tables) = self.initial.take() {
            let mut work = Vec::new();
            for t in tables {
                if t.is_done() {
                    self.finished.insert(
                        t.table.clone(),
                        Finished {
                            kind: Kind::Initial,
                            rows: t.rows,
                        },
                    );
                    continue;
                }
                let ranges = t.remaining();
                let n = ranges.len();
                for (i, range) in ranges.into_iter().enumerate() {
                    work.push(TableWork {
                        table: t.table.clone(),
                        kind: Kind::Initial,
                        range,
                        // The table's count so far rides on its first remaining range.
                        rows: if i == 0 { t.rows } else { 0 },
                        estimate: if i + 1 == n { t.estimate } else { 0 },
                    });
                }
            }
            work.append(&mut self.pending);
            self.pending = work;
        }
        self
    }

    /// Rows done and estimated per table, for logs and `pgcdc status`.
    pub fn progress(&self) -> Vec<(String, &'static str, u64, u64)> {
        let mut out: Vec<(String, &'static str, u64, u64)> = Vec::new();
        for t in self.initial.iter().flatten() {
            let state = if t.is_done() { "done" } else { "running" };
            out.push((t.table.clone(), state, t.rows, t.estimate.max(t.rows)));
        }
        for w in &self.pending {
            match out.iter_mut().find(|o| o.0 == w.table) {
                Some(o) => {
                    o.2 += w.rows;
                    o.3 = o.3.max(w.estimate).max(o.2);
                }
                None => out.push((w.table.clone(), "running", w.rows, w.estimate.max(w.rows))),
            }
        }
        for (t, f) in &self.finished {
            if !out.iter().any(|o| &o.0 == t) {
                out.push((t.clone(), "done", f.rows, f.rows));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(s: &str) -> Option<Key> {
        Some(vec![s.to_string()])
    }

    fn range(a: Option<Key>, b: Option<Key>) -> KeyRange {
        KeyRange { after: a, until: b }
    }

    #[test]
    fn chunks_merge_and_leave_gaps() {
        // Boundaries 10, 20, 30 → chunks (-,10] (10,20] (20,30] (30,+).
        let mut t = TableProgress {
            table: "public.t".into(),
            chunks: 4,
            done: vec![],
            rows: 0,
            estimate: 40,
        };
        assert_eq!(t.remaining(), vec![KeyRange::ALL]);
        t.complete(2, range(k("20"), k("30")), 10);
        t.complete(0, range(None, k("10")), 10);
        assert_eq!(t.done.len(), 2);
        assert_eq!(
            t.remaining(),
            vec![range(k("10"), k("20")), range(k("30"), None)]
        );
        t.complete(1, range(k("10"), k("20")), 10);
        assert_eq!(t.done.len(), 1);
        assert_eq!(t.remaining(), vec![range(k("30"), None)]);
        assert!(!t.is_done());
        t.complete(3, range(k("30"), None), 10);
        assert!(t.is_done());
        assert!(t.remaining().is_empty());
        assert_eq!(t.rows, 40);
    }

    #[test]
    fn resume_turns_initial_progress_into_watermark_work() {
        let mut t = TableProgress {
            table: "public.t".into(),
            chunks: 3,
            done: vec![],
            rows: 0,
            estimate: 30,
        };
        t.complete(1, range(k("10"), k("20")), 10);
        let done = TableProgress {
            table: "public.u".into(),
            chunks: 1,
            done: vec![DoneRun {
                from: 0,
                to: 1,
                range: KeyRange::ALL,
            }],
            rows: 5,
            estimate: 5,
        };
        let s = SnapshotState {
            initial: Some(vec![t, done]),
            ..Default::default()
        }
        .resume();
        assert!(s.initial.is_none());
        assert_eq!(s.finished["public.u"].rows, 5);
        let ranges: Vec<_> = s.pending.iter().map(|w| w.range.clone()).collect();
        assert_eq!(ranges, vec![range(None, k("10")), range(k("20"), None)]);
        assert_eq!(s.progress()[0], ("public.t".into(), "running", 10, 30));
        // Round trip through the checkpoint's JSON.
        let j = serde_json::to_value(&s).unwrap();
        assert_eq!(serde_json::from_value::<SnapshotState>(j).unwrap(), s);
    }
}
