//! Property tests (issue 14.3): the decoder on arbitrary bytes and on corrupted valid
//! messages never panics, and every message pgcdc can receive survives encode → decode.
//! `PROPTEST_CASES` sets the number of cases (`make fuzz` runs them for minutes).

use bytes::{BufMut, BytesMut};
use proptest::prelude::*;

use super::*;

/// The wire form of `m`, as the walsender writes it (protocol version 1).
fn encode(m: &Message) -> Bytes {
    fn cstr(b: &mut BytesMut, s: &str) {
        b.put_slice(s.as_bytes());
        b.put_u8(0);
    }
    fn tuple(b: &mut BytesMut, t: &Tuple) {
        b.put_i16(t.len() as i16);
        for c in t {
            match c {
                TupleData::Null => b.put_u8(b'n'),
                TupleData::UnchangedToast => b.put_u8(b'u'),
                TupleData::Text(v) | TupleData::Binary(v) => {
                    b.put_u8(if matches!(c, TupleData::Text(_)) {
                        b't'
                    } else {
                        b'b'
                    });
                    b.put_i32(v.len() as i32);
                    b.put_slice(v);
                }
            }
        }
    }
    let mut b = BytesMut::new();
    match m {
        Message::Begin {
            final_lsn,
            commit_ts_us,
            xid,
        } => {
            b.put_u8(b'B');
            b.put_u64(final_lsn.0);
            b.put_i64(*commit_ts_us);
            b.put_u32(*xid);
        }
        Message::Commit {
            flags,
            commit_lsn,
            end_lsn,
            commit_ts_us,
        } => {
            b.put_u8(b'C');
            b.put_u8(*flags);
            b.put_u64(commit_lsn.0);
            b.put_u64(end_lsn.0);
            b.put_i64(*commit_ts_us);
        }
        Message::Origin { lsn, name } => {
            b.put_u8(b'O');
            b.put_u64(lsn.0);
            cstr(&mut b, name);
        }
        Message::Relation(r) => {
            b.put_u8(b'R');
            b.put_u32(r.oid);
            cstr(&mut b, &r.namespace);
            cstr(&mut b, &r.name);
            b.put_u8(r.replica_identity);
            b.put_i16(r.columns.len() as i16);
            for c in &r.columns {
                b.put_u8(u8::from(c.key));
                cstr(&mut b, &c.name);
                b.put_u32(c.type_oid);
                b.put_i32(c.type_modifier);
            }
        }
        Message::Type {
            oid,
            namespace,
            name,
        } => {
            b.put_u8(b'Y');
            b.put_u32(*oid);
            cstr(&mut b, namespace);
            cstr(&mut b, name);
        }
        Message::Insert { rel, new } => {
            b.put_u8(b'I');
            b.put_u32(*rel);
            b.put_u8(b'N');
            tuple(&mut b, new);
        }
        Message::Update {
            rel,
            old,
            key_only,
            new,
        } => {
            b.put_u8(b'U');
            b.put_u32(*rel);
            if let Some(old) = old {
                b.put_u8(if *key_only { b'K' } else { b'O' });
                tuple(&mut b, old);
            }
            b.put_u8(b'N');
            tuple(&mut b, new);
        }
        Message::Delete { rel, old, key_only } => {
            b.put_u8(b'D');
            b.put_u32(*rel);
            b.put_u8(if *key_only { b'K' } else { b'O' });
            tuple(&mut b, old);
        }
        Message::Truncate { options, rels } => {
            b.put_u8(b'T');
            b.put_i32(rels.len() as i32);
            b.put_u8(*options);
            for r in rels {
                b.put_u32(*r);
            }
        }
        Message::Message {
            transactional,
            lsn,
            prefix,
            content,
        } => {
            b.put_u8(b'M');
            b.put_u8(u8::from(*transactional));
            b.put_u64(lsn.0);
            cstr(&mut b, prefix);
            b.put_i32(content.len() as i32);
            b.put_slice(content);
        }
    }
    b.freeze()
}

/// A string PostgreSQL could send as a NUL-terminated name or prefix: any UTF-8 without NUL.
fn name() -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<char>().prop_filter("no NUL", |c| *c != '\0'), 0..12)
        .prop_map(|v| v.into_iter().collect())
}

fn tuple() -> impl Strategy<Value = Tuple> {
    let bytes = || proptest::collection::vec(any::<u8>(), 0..40).prop_map(Bytes::from);
    proptest::collection::vec(
        prop_oneof![
            Just(TupleData::Null),
            Just(TupleData::UnchangedToast),
            bytes().prop_map(TupleData::Text),
            bytes().prop_map(TupleData::Binary),
        ],
        0..8,
    )
}

fn lsn() -> impl Strategy<Value = Lsn> {
    any::<u64>().prop_map(Lsn)
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (lsn(), any::<i64>(), any::<u32>()).prop_map(|(final_lsn, commit_ts_us, xid)| {
            Message::Begin {
                final_lsn,
                commit_ts_us,
                xid,
            }
        }),
        (any::<u8>(), lsn(), lsn(), any::<i64>()).prop_map(
            |(flags, commit_lsn, end_lsn, commit_ts_us)| Message::Commit {
                flags,
                commit_lsn,
                end_lsn,
                commit_ts_us,
            }
        ),
        (lsn(), name()).prop_map(|(lsn, name)| Message::Origin { lsn, name }),
        (
            any::<u32>(),
            name(),
            name(),
            any::<u8>(),
            proptest::collection::vec((any::<bool>(), name(), any::<u32>(), any::<i32>()), 0..6)
        )
            .prop_map(|(oid, namespace, name, replica_identity, cols)| {
                Message::Relation(RelationMsg {
                    oid,
                    namespace,
                    name,
                    replica_identity,
                    columns: cols
                        .into_iter()
                        .map(|(key, name, type_oid, type_modifier)| RelationColumn {
                            key,
                            name,
                            type_oid,
                            type_modifier,
                        })
                        .collect(),
                })
            }),
        (any::<u32>(), name(), name()).prop_map(|(oid, namespace, name)| Message::Type {
            oid,
            namespace,
            name
        }),
        (any::<u32>(), tuple()).prop_map(|(rel, new)| Message::Insert { rel, new }),
        (
            any::<u32>(),
            proptest::option::of(tuple()),
            any::<bool>(),
            tuple()
        )
            .prop_map(|(rel, old, key_only, new)| Message::Update {
                rel,
                key_only: key_only && old.is_some(),
                old,
                new,
            }),
        (any::<u32>(), tuple(), any::<bool>())
            .prop_map(|(rel, old, key_only)| { Message::Delete { rel, old, key_only } }),
        (any::<u8>(), proptest::collection::vec(any::<u32>(), 0..6))
            .prop_map(|(options, rels)| Message::Truncate { options, rels }),
        (
            any::<bool>(),
            lsn(),
            name(),
            proptest::collection::vec(any::<u8>(), 0..40)
        )
            .prop_map(|(transactional, lsn, prefix, content)| Message::Message {
                transactional,
                lsn,
                prefix,
                content: Bytes::from(content),
            }),
    ]
}

/// One corruption of a valid message: a byte changed, a run cut out, bytes inserted, or the
/// tail cut off.
#[derive(Debug, Clone)]
enum Mutation {
    Set(usize, u8),
    Remove(usize, usize),
    Insert(usize, Vec<u8>),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, v)| Mutation::Set(i, v)),
        (any::<usize>(), 1usize..8).prop_map(|(i, n)| Mutation::Remove(i, n)),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(i, v)| Mutation::Insert(i, v)),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn mutate(mut m: Vec<u8>, how: &[Mutation]) -> Vec<u8> {
    for mu in how {
        let len = m.len().max(1);
        match mu {
            Mutation::Set(i, v) if !m.is_empty() => m[i % len] = *v,
            Mutation::Remove(i, n) if !m.is_empty() => {
                let at = i % len;
                let end = (at + n).min(m.len());
                m.drain(at..end);
            }
            Mutation::Insert(i, v) => {
                let at = i % (m.len() + 1);
                m.splice(at..at, v.iter().copied());
            }
            Mutation::Truncate(i) => m.truncate(i % len),
            _ => {}
        }
    }
    m
}

proptest! {
    #[test]
    fn valid_messages_decode_to_themselves(m in message()) {
        let wire = encode(&m);
        prop_assert_eq!(decode(wire.clone()), Ok(m));
        // Every strict prefix is an error (never a panic, never a shorter message).
        for cut in 0..wire.len() {
            prop_assert!(decode(wire.slice(..cut)).is_err(), "prefix of {} bytes decoded", cut);
        }
    }

    #[test]
    fn corrupted_messages_are_errors_or_messages_never_panics(
        m in message(),
        how in proptest::collection::vec(mutation(), 1..4),
    ) {
        let bytes = Bytes::from(mutate(encode(&m).to_vec(), &how));
        if let Ok(other) = decode(bytes) {
            // Whatever decoded is a well-formed message: it survives encode → decode.
            prop_assert_eq!(decode(encode(&other)), Ok(other));
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(kind in prop::sample::select(b"BCORYIUDTMSAX".to_vec()),
                                   rest in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut b = vec![kind];
        b.extend(rest);
        let _ = decode(Bytes::from(b));
    }
}
