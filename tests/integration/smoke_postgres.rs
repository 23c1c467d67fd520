//! The PostgreSQL of the stack is a real server with logical decoding: a pgoutput slot on a
//! fresh database sees a committed row change.

use crate::common::{unique, Stack};

#[tokio::test]
async fn pgoutput_slot_sees_a_row_change() {
    let stack = Stack::get();
    let db = stack.fresh_database("smoke_pg").await;
    let client = stack.pg_connect(&db).await;

    let wal_level: String = client
        .query_one("SHOW wal_level", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(wal_level, "logical");

    let slot = unique("smoke_slot");
    client
        .batch_execute(
            "CREATE TABLE smoke (id int PRIMARY KEY, note text);
             CREATE PUBLICATION smoke_pub FOR TABLE smoke;",
        )
        .await
        .unwrap();
    client
        .execute(
            "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
            &[&slot],
        )
        .await
        .unwrap();
    client
        .execute("INSERT INTO smoke VALUES (42, 'hello from pgcdc')", &[])
        .await
        .unwrap();

    let rows = client
        .query(
            "SELECT data FROM pg_logical_slot_peek_binary_changes($1, NULL, NULL,
                 'proto_version', '1', 'publication_names', 'smoke_pub')",
            &[&slot],
        )
        .await
        .unwrap();
    let messages: Vec<Vec<u8>> = rows.iter().map(|r| r.get(0)).collect();
    let kinds: Vec<u8> = messages.iter().map(|m| m[0]).collect();
    // Begin, Relation, Insert, Commit: pgoutput's framing of one single-row transaction.
    assert_eq!(kinds, b"BRIC".to_vec(), "unexpected pgoutput message kinds");
    let insert = &messages[2];
    let find = |needle: &[u8]| insert.windows(needle.len()).any(|w| w == needle);
    assert!(find(b"42"), "insert message lacks the key value");
    assert!(
        find(b"hello from pgcdc"),
        "insert message lacks the text value"
    );

    client
        .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
        .await
        .unwrap();
    drop(client);
    let admin = stack.pg_connect("postgres").await;
    admin
        .batch_execute(&format!("DROP DATABASE {db} WITH (FORCE)"))
        .await
        .unwrap();
}
