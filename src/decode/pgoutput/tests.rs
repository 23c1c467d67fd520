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
