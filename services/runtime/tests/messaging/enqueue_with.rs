//! A message enqueued together with the caller's own write, in one
//! statement: both rows land, or neither.

use qapmap_runtime::outbox::{self, OutboxMessage};
use uuid::Uuid;

use crate::support::Harness;

const WRITE: &str = "side AS (INSERT INTO side_writes (id, payload, note) VALUES ($1, $4, $7))";

fn message(harness: &Harness) -> OutboxMessage {
    OutboxMessage {
        message_id: Uuid::now_v7(),
        company_id: None,
        subject: harness.subjects.event("test", "happened"),
        payload: b"the payload".to_vec(),
        headers: Default::default(),
        partition_key: "key".to_owned(),
    }
}

#[tokio::test]
async fn the_write_and_the_message_land_together_or_not_at_all() {
    let harness = Harness::start().await;
    sqlx::raw_sql(
        "CREATE TABLE side_writes (id UUID PRIMARY KEY, payload BYTEA NOT NULL, note TEXT NOT NULL)",
    )
    .execute(&harness.pool)
    .await
    .expect("side table");

    let first = message(&harness);
    let mut transaction = harness.pool.begin().await.expect("begin");
    outbox::enqueue_with(&mut transaction, &first, WRITE, |query| query.bind("first"))
        .await
        .expect("enqueued with the write");
    transaction.commit().await.expect("commit");
    let side: (Vec<u8>, String) =
        sqlx::query_as("SELECT payload, note FROM side_writes WHERE id = $1")
            .bind(first.message_id)
            .fetch_one(&harness.pool)
            .await
            .expect("the side row");
    assert_eq!(side, (first.payload.clone(), "first".to_owned()));
    let queued: Vec<u8> = sqlx::query_scalar("SELECT payload FROM outbox WHERE message_id = $1")
        .bind(first.message_id)
        .fetch_one(&harness.pool)
        .await
        .expect("the outbox row");
    assert_eq!(queued, first.payload);

    // The side write fails (its id is taken): the message is not queued.
    let second = OutboxMessage {
        message_id: Uuid::now_v7(),
        ..message(&harness)
    };
    sqlx::query("INSERT INTO side_writes VALUES ($1, '', 'taken')")
        .bind(second.message_id)
        .execute(&harness.pool)
        .await
        .expect("take the id");
    let mut transaction = harness.pool.begin().await.expect("begin");
    let failed = outbox::enqueue_with(&mut transaction, &second, WRITE, |query| {
        query.bind("second")
    })
    .await;
    assert!(failed.is_err(), "the duplicate side write fails");
    drop(transaction);
    assert_eq!(
        harness.count("SELECT count(*) FROM outbox").await,
        1,
        "only the first message is queued"
    );
}
