//! A pgoutput (protocol version 1) message decoder. It never panics: malformed or truncated
//! input, and message kinds we did not ask for, are a [`DecodeError`].

use bytes::{Buf, Bytes};

use crate::Lsn;

/// Microseconds between the Unix epoch and PostgreSQL's epoch (2000-01-01 00:00:00 UTC).
pub const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Begin {
        final_lsn: Lsn,
        commit_ts_us: i64,
        xid: u32,
    },
    Commit {
        flags: u8,
        commit_lsn: Lsn,
        end_lsn: Lsn,
        commit_ts_us: i64,
    },
    Origin {
        lsn: Lsn,
        name: String,
    },
    Relation(RelationMsg),
    Type {
        oid: u32,
        namespace: String,
        name: String,
    },
    Insert {
        rel: u32,
        new: Tuple,
    },
    Update {
        rel: u32,
        old: Option<Tuple>,
        key_only: bool,
        new: Tuple,
    },
    Delete {
        rel: u32,
        old: Tuple,
        key_only: bool,
    },
    Truncate {
        options: u8,
        rels: Vec<u32>,
    },
    Message {
        transactional: bool,
        lsn: Lsn,
        prefix: String,
        content: Bytes,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationMsg {
    pub oid: u32,
    pub namespace: String,
    pub name: String,
    pub replica_identity: u8,
    pub columns: Vec<RelationColumn>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationColumn {
    pub key: bool,
    pub name: String,
    pub type_oid: u32,
    pub type_modifier: i32,
}

pub type Tuple = Vec<TupleData>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TupleData {
    Null,
    /// A TOASTed value that did not change; PostgreSQL does not send it.
    UnchangedToast,
    Text(Bytes),
    Binary(Bytes),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("pgoutput message is empty")]
    Empty,
    #[error(
        "pgoutput message {kind:?} is truncated: needed {needed} more bytes at offset {offset}"
    )]
    Truncated {
        kind: char,
        offset: usize,
        needed: usize,
    },
    #[error("pgoutput message {kind:?}: {what}")]
    Malformed { kind: char, what: String },
    #[error("pgoutput message kind {0:?} is not supported (pgcdc asks for protocol version 1 without streaming)")]
    Unsupported(char),
}

struct Reader {
    kind: char,
    buf: Bytes,
    start_len: usize,
}

impl Reader {
    fn offset(&self) -> usize {
        self.start_len - self.buf.remaining()
    }
    fn need(&self, n: usize) -> Result<(), DecodeError> {
        if self.buf.remaining() < n {
            Err(DecodeError::Truncated {
                kind: self.kind,
                offset: self.offset(),
                needed: n - self.buf.remaining(),
            })
        } else {
            Ok(())
        }
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        self.need(1)?;
        Ok(self.buf.get_u8())
    }
    fn i16(&mut self) -> Result<i16, DecodeError> {
        self.need(2)?;
        Ok(self.buf.get_i16())
    }
    fn i32(&mut self) -> Result<i32, DecodeError> {
        self.need(4)?;
        Ok(self.buf.get_i32())
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        self.need(4)?;
        Ok(self.buf.get_u32())
    }
    fn i64(&mut self) -> Result<i64, DecodeError> {
        self.need(8)?;
        Ok(self.buf.get_i64())
    }
    fn lsn(&mut self) -> Result<Lsn, DecodeError> {
        self.need(8)?;
        Ok(Lsn(self.buf.get_u64()))
    }
    fn bytes(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        self.need(n)?;
        Ok(self.buf.split_to(n))
    }
    fn cstr(&mut self) -> Result<String, DecodeError> {
        let nul = self
            .buf
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| DecodeError::Malformed {
                kind: self.kind,
                what: format!("string at offset {} has no terminating NUL", self.offset()),
            })?;
        let s = self.buf.split_to(nul);
        self.buf.advance(1);
        String::from_utf8(s.to_vec()).map_err(|_| DecodeError::Malformed {
            kind: self.kind,
            what: "string is not UTF-8".into(),
        })
    }
    fn malformed(&self, what: impl Into<String>) -> DecodeError {
        DecodeError::Malformed {
            kind: self.kind,
            what: what.into(),
        }
    }
    fn finish(&self) -> Result<(), DecodeError> {
        if self.buf.has_remaining() {
            return Err(self.malformed(format!("{} trailing bytes", self.buf.remaining())));
        }
        Ok(())
    }

    fn tuple(&mut self) -> Result<Tuple, DecodeError> {
        let n = self.i16()?;
        if n < 0 {
            return Err(self.malformed(format!("negative column count {n}")));
        }
        let mut cols = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let c = match self.u8()? {
                b'n' => TupleData::Null,
                b'u' => TupleData::UnchangedToast,
                t @ (b't' | b'b') => {
                    let len = self.i32()?;
                    if len < 0 {
                        return Err(self.malformed(format!("negative value length {len}")));
                    }
                    let v = self.bytes(len as usize)?;
                    if t == b't' {
                        TupleData::Text(v)
                    } else {
                        TupleData::Binary(v)
                    }
                }
                other => {
                    return Err(
                        self.malformed(format!("unknown tuple column kind {:?}", other as char))
                    )
                }
            };
            cols.push(c);
        }
        Ok(cols)
    }
}

/// Decodes one pgoutput message (the payload of an XLogData frame).
pub fn decode(data: Bytes) -> Result<Message, DecodeError> {
    let Some(&kind) = data.first() else {
        return Err(DecodeError::Empty);
    };
    let mut r = Reader {
        kind: kind as char,
        start_len: data.len(),
        buf: data.slice(1..),
    };
    let msg = match kind {
        b'B' => Message::Begin {
            final_lsn: r.lsn()?,
            commit_ts_us: r.i64()?,
            xid: r.u32()?,
        },
        b'C' => Message::Commit {
            flags: r.u8()?,
            commit_lsn: r.lsn()?,
            end_lsn: r.lsn()?,
            commit_ts_us: r.i64()?,
        },
        b'O' => Message::Origin {
            lsn: r.lsn()?,
            name: r.cstr()?,
        },
        b'R' => {
            let oid = r.u32()?;
            let namespace = r.cstr()?;
            let name = r.cstr()?;
            let replica_identity = r.u8()?;
            let n = r.i16()?;
            if n < 0 {
                return Err(r.malformed(format!("negative column count {n}")));
            }
            let mut columns = Vec::with_capacity(n as usize);
            for _ in 0..n {
                columns.push(RelationColumn {
                    key: r.u8()? & 1 == 1,
                    name: r.cstr()?,
                    type_oid: r.u32()?,
                    type_modifier: r.i32()?,
                });
            }
            Message::Relation(RelationMsg {
                oid,
                namespace,
                name,
                replica_identity,
                columns,
            })
        }
        b'Y' => Message::Type {
            oid: r.u32()?,
            namespace: r.cstr()?,
            name: r.cstr()?,
        },
        b'I' => {
            let rel = r.u32()?;
            match r.u8()? {
                b'N' => Message::Insert {
                    rel,
                    new: r.tuple()?,
                },
                t => {
                    return Err(r.malformed(format!(
                        "expected 'N' before the new tuple, got {:?}",
                        t as char
                    )))
                }
            }
        }
        b'U' => {
            let rel = r.u32()?;
            let (old, key_only, marker) = match r.u8()? {
                b'K' => (Some(r.tuple()?), true, r.u8()?),
                b'O' => (Some(r.tuple()?), false, r.u8()?),
                m => (None, false, m),
            };
            if marker != b'N' {
                return Err(r.malformed(format!(
                    "expected 'N' before the new tuple, got {:?}",
                    marker as char
                )));
            }
            Message::Update {
                rel,
                old,
                key_only,
                new: r.tuple()?,
            }
        }
        b'D' => {
            let rel = r.u32()?;
            let key_only = match r.u8()? {
                b'K' => true,
                b'O' => false,
                t => {
                    return Err(r.malformed(format!(
                        "expected 'K' or 'O' before the old tuple, got {:?}",
                        t as char
                    )))
                }
            };
            Message::Delete {
                rel,
                old: r.tuple()?,
                key_only,
            }
        }
        b'T' => {
            let n = r.i32()?;
            if n < 0 {
                return Err(r.malformed(format!("negative relation count {n}")));
            }
            let options = r.u8()?;
            let mut rels = Vec::with_capacity((n as usize).min(1024));
            for _ in 0..n {
                rels.push(r.u32()?);
            }
            Message::Truncate { options, rels }
        }
        b'M' => {
            let flags = r.u8()?;
            let lsn = r.lsn()?;
            let prefix = r.cstr()?;
            let len = r.i32()?;
            if len < 0 {
                return Err(r.malformed(format!("negative content length {len}")));
            }
            Message::Message {
                transactional: flags & 1 == 1,
                lsn,
                prefix,
                content: r.bytes(len as usize)?,
            }
        }
        other => return Err(DecodeError::Unsupported(other as char)),
    };
    r.finish()?;
    Ok(msg)
}

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;
