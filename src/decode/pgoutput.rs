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
mod tests {
    use super::*;
    use bytes::{BufMut, BytesMut};

    fn cstr(b: &mut BytesMut, s: &str) {
        b.put_slice(s.as_bytes());
        b.put_u8(0);
    }

    fn text_col(b: &mut BytesMut, v: &str) {
        b.put_u8(b't');
        b.put_i32(v.len() as i32);
        b.put_slice(v.as_bytes());
    }

    fn begin() -> Bytes {
        let mut b = BytesMut::new();
        b.put_u8(b'B');
        b.put_u64(0x16_B374_D848);
        b.put_i64(721_234_567_890_123);
        b.put_u32(7_654_321);
        b.freeze()
    }

    fn relation() -> Bytes {
        let mut b = BytesMut::new();
        b.put_u8(b'R');
        b.put_u32(16_385);
        cstr(&mut b, "public");
        cstr(&mut b, "orders");
        b.put_u8(b'd');
        b.put_i16(2);
        b.put_u8(1);
        cstr(&mut b, "id");
        b.put_u32(23);
        b.put_i32(-1);
        b.put_u8(0);
        cstr(&mut b, "total");
        b.put_u32(1700);
        b.put_i32(((10 << 16) | 2) + 4);
        b.freeze()
    }

    fn update_with_old_key() -> Bytes {
        let mut b = BytesMut::new();
        b.put_u8(b'U');
        b.put_u32(16_385);
        b.put_u8(b'K');
        b.put_i16(2);
        text_col(&mut b, "1");
        b.put_u8(b'n');
        b.put_u8(b'N');
        b.put_i16(2);
        text_col(&mut b, "2");
        b.put_u8(b'u');
        b.freeze()
    }

    #[test]
    fn decodes_begin() {
        assert_eq!(
            decode(begin()).unwrap(),
            Message::Begin {
                final_lsn: Lsn(0x16_B374_D848),
                commit_ts_us: 721_234_567_890_123,
                xid: 7_654_321
            }
        );
    }

    #[test]
    fn decodes_commit() {
        let mut b = BytesMut::new();
        b.put_u8(b'C');
        b.put_u8(0);
        b.put_u64(100);
        b.put_u64(180);
        b.put_i64(5);
        assert_eq!(
            decode(b.freeze()).unwrap(),
            Message::Commit {
                flags: 0,
                commit_lsn: Lsn(100),
                end_lsn: Lsn(180),
                commit_ts_us: 5
            }
        );
    }

    #[test]
    fn decodes_relation() {
        let Message::Relation(r) = decode(relation()).unwrap() else {
            panic!("not a relation")
        };
        assert_eq!(r.oid, 16_385);
        assert_eq!(
            (r.namespace.as_str(), r.name.as_str()),
            ("public", "orders")
        );
        assert_eq!(r.replica_identity, b'd');
        assert_eq!(r.columns.len(), 2);
        assert!(r.columns[0].key && !r.columns[1].key);
        assert_eq!(r.columns[1].type_oid, 1700);
    }

    #[test]
    fn decodes_insert_with_all_column_kinds() {
        let mut b = BytesMut::new();
        b.put_u8(b'I');
        b.put_u32(9);
        b.put_u8(b'N');
        b.put_i16(4);
        text_col(&mut b, "héllo");
        b.put_u8(b'n');
        b.put_u8(b'u');
        b.put_u8(b'b');
        b.put_i32(2);
        b.put_slice(&[0xde, 0xad]);
        assert_eq!(
            decode(b.freeze()).unwrap(),
            Message::Insert {
                rel: 9,
                new: vec![
                    TupleData::Text(Bytes::from("héllo")),
                    TupleData::Null,
                    TupleData::UnchangedToast,
                    TupleData::Binary(Bytes::from_static(&[0xde, 0xad])),
                ]
            }
        );
    }

    #[test]
    fn decodes_update_with_key_and_without_old() {
        let Message::Update {
            rel,
            old,
            key_only,
            new,
        } = decode(update_with_old_key()).unwrap()
        else {
            panic!("not an update")
        };
        assert_eq!(rel, 16_385);
        assert!(key_only);
        assert_eq!(old.unwrap()[0], TupleData::Text(Bytes::from("1")));
        assert_eq!(new[1], TupleData::UnchangedToast);

        let mut b = BytesMut::new();
        b.put_u8(b'U');
        b.put_u32(1);
        b.put_u8(b'N');
        b.put_i16(1);
        text_col(&mut b, "x");
        assert!(matches!(
            decode(b.freeze()).unwrap(),
            Message::Update { old: None, .. }
        ));
    }

    #[test]
    fn decodes_delete_truncate_type_origin_message() {
        let mut b = BytesMut::new();
        b.put_u8(b'D');
        b.put_u32(3);
        b.put_u8(b'O');
        b.put_i16(1);
        text_col(&mut b, "7");
        assert_eq!(
            decode(b.freeze()).unwrap(),
            Message::Delete {
                rel: 3,
                old: vec![TupleData::Text(Bytes::from("7"))],
                key_only: false
            }
        );

        let mut b = BytesMut::new();
        b.put_u8(b'T');
        b.put_i32(2);
        b.put_u8(3);
        b.put_u32(10);
        b.put_u32(11);
        assert_eq!(
            decode(b.freeze()).unwrap(),
            Message::Truncate {
                options: 3,
                rels: vec![10, 11]
            }
        );

        let mut b = BytesMut::new();
        b.put_u8(b'Y');
        b.put_u32(77);
        cstr(&mut b, "public");
        cstr(&mut b, "mood");
        assert_eq!(
            decode(b.freeze()).unwrap(),
            Message::Type {
                oid: 77,
                namespace: "public".into(),
                name: "mood".into()
            }
        );

        let mut b = BytesMut::new();
        b.put_u8(b'O');
        b.put_u64(42);
        cstr(&mut b, "node_a");
        assert_eq!(
            decode(b.freeze()).unwrap(),
            Message::Origin {
                lsn: Lsn(42),
                name: "node_a".into()
            }
        );

        let mut b = BytesMut::new();
        b.put_u8(b'M');
        b.put_u8(1);
        b.put_u64(99);
        cstr(&mut b, "pgcdc");
        b.put_i32(3);
        b.put_slice(b"abc");
        assert_eq!(
            decode(b.freeze()).unwrap(),
            Message::Message {
                transactional: true,
                lsn: Lsn(99),
                prefix: "pgcdc".into(),
                content: Bytes::from("abc")
            }
        );
    }

    /// Every prefix of every valid fixture is an error, never a panic; so is every single-byte
    /// corruption (which may also decode to some other valid message).
    #[test]
    fn malformed_input_never_panics() {
        for fixture in [begin(), relation(), update_with_old_key()] {
            for cut in 0..fixture.len() {
                assert!(
                    decode(fixture.slice(..cut)).is_err(),
                    "prefix of {cut} bytes decoded"
                );
            }
            for i in 0..fixture.len() {
                for v in [0u8, 0xff, b'N', b't', 0x80] {
                    let mut m = fixture.to_vec();
                    m[i] = v;
                    let _ = decode(Bytes::from(m));
                }
            }
            let mut extra = fixture.to_vec();
            extra.push(0);
            assert!(
                decode(Bytes::from(extra)).is_err(),
                "trailing byte accepted"
            );
        }
        assert_eq!(decode(Bytes::new()), Err(DecodeError::Empty));
        assert_eq!(
            decode(Bytes::from_static(b"S")),
            Err(DecodeError::Unsupported('S'))
        );
    }

    #[test]
    fn huge_lengths_are_errors_not_allocations() {
        let mut b = BytesMut::new();
        b.put_u8(b'I');
        b.put_u32(1);
        b.put_u8(b'N');
        b.put_i16(1);
        b.put_u8(b't');
        b.put_i32(i32::MAX);
        assert!(matches!(
            decode(b.freeze()),
            Err(DecodeError::Truncated { .. })
        ));
        let mut b = BytesMut::new();
        b.put_u8(b'T');
        b.put_i32(i32::MAX);
        b.put_u8(0);
        assert!(matches!(
            decode(b.freeze()),
            Err(DecodeError::Truncated { .. })
        ));
    }
}
