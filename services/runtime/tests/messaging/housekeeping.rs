//! Housekeeping: published outbox rows, old inbox rows and long-resolved
//! dead letters are pruned, and nothing that may still be needed is.

use std::time::Duration;

use qapmap_runtime::relay::Pruned;
use uuid::Uuid;

use crate::support::{Harness, Running};

const CONSUMER: &str = "commands";

/// An inbox row for `message_id`, handled `days_ago`.
async fn inbox_row(harness: &Harness, message_id: &str, days_ago: i32) {
    sqlx::query(
        "INSERT INTO inbox (consumer, message_id, subject, handled_at)
         VALUES ($1, $2, 'test.cmd.test.do_it', now() - make_interval(days => $3))",
    )
    .bind(CONSUMER)
    .bind(message_id)
    .bind(days_ago)
    .execute(&harness.pool)
    .await
    .expect("inbox row");
}

async fn dead_letter(harness: &Harness, message_id: &str, status: &str) {
    dead_letter_resolved(harness, message_id, status, 0).await;
}

/// A dead letter in `status`; one not pending was resolved `days_ago`.
async fn dead_letter_resolved(harness: &Harness, message_id: &str, status: &str, days_ago: i32) {
    sqlx::query(
        "INSERT INTO dead_letters (id, consumer, subject, message_id, payload, last_error, delivery_count,
                                   status, dead_at, resolved_at)
         VALUES ($1, $2, 'test.cmd.test.do_it', $3, '\\x00', 'gave up', 5, $4,
                 now() - make_interval(days => $5 + 1),
                 CASE WHEN $4 <> 'pending' THEN now() - make_interval(days => $5) END)",
    )
    .bind(Uuid::now_v7())
    .bind(CONSUMER)
    .bind(message_id)
    .bind(status)
    .bind(days_ago)
    .execute(&harness.pool)
    .await
    .expect("dead letter");
}

async fn dead_letter_ids(harness: &Harness) -> Vec<String> {
    sqlx::query_scalar("SELECT message_id FROM dead_letters ORDER BY message_id")
        .fetch_all(&harness.pool)
        .await
        .expect("dead letters")
}

/// An outbox row made `days_ago`, published then too unless `published` is false.
async fn outbox_row(harness: &Harness, days_ago: i32, published: bool) -> Uuid {
    let message_id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO outbox (message_id, subject, payload, partition_key, created_at, published_at)
         VALUES ($1, 'test.evt.test.done', '\\x00', 'key',
                 now() - make_interval(days => $2),
                 CASE WHEN $3 THEN now() - make_interval(days => $2) END)",
    )
    .bind(message_id)
    .bind(days_ago)
    .bind(published)
    .execute(&harness.pool)
    .await
    .expect("outbox row");
    message_id
}

async fn inbox_ids(harness: &Harness) -> Vec<String> {
    sqlx::query_scalar("SELECT message_id FROM inbox ORDER BY message_id")
        .fetch_all(&harness.pool)
        .await
        .expect("inbox")
}

async fn outbox_ids(harness: &Harness) -> Vec<Uuid> {
    sqlx::query_scalar("SELECT message_id FROM outbox ORDER BY message_id")
        .fetch_all(&harness.pool)
        .await
        .expect("outbox")
}

/// Goal: a prune deletes exactly the rows no message can need again:
/// inbox rows past the 30-day retention, unless a pending dead letter
/// still carries their id (its replay would be applied twice); published
/// outbox rows past a day. A row that was never published stays, however
/// old.
#[tokio::test]
async fn a_prune_deletes_only_rows_no_message_can_need_again() {
    let harness = Harness::start().await;
    inbox_row(&harness, "a-old", 31).await;
    inbox_row(&harness, "b-old-replayed", 31).await;
    dead_letter(&harness, "b-old-replayed", "replayed").await;
    inbox_row(&harness, "c-old-dead-letter-pending", 45).await;
    dead_letter(&harness, "c-old-dead-letter-pending", "pending").await;
    inbox_row(&harness, "d-week", 8).await;
    inbox_row(&harness, "e-today", 0).await;
    let published_long_ago = outbox_row(&harness, 2, true).await;
    let never_published = outbox_row(&harness, 40, false).await;
    let published_today = outbox_row(&harness, 0, true).await;

    let pruned = harness.relay().prune().await.expect("prune");

    assert_eq!(
        pruned,
        Pruned {
            outbox: 1,
            inbox: 2,
            dead_letters: 0,
        }
    );
    assert_eq!(
        inbox_ids(&harness).await,
        ["c-old-dead-letter-pending", "d-week", "e-today"]
    );
    let mut kept = vec![never_published, published_today];
    kept.sort();
    assert_eq!(outbox_ids(&harness).await, kept);
    assert!(!kept.contains(&published_long_ago));

    let again = harness.relay().prune().await.expect("second prune");
    assert_eq!(again, Pruned::default(), "nothing more to prune");
}

/// Goal: a running relay prunes on its own, from its first round on, so a
/// service's inbox does not grow without end.
#[tokio::test]
async fn a_running_relay_prunes_old_inbox_rows() {
    let harness = Harness::start().await;
    inbox_row(&harness, "old", 40).await;
    inbox_row(&harness, "recent", 1).await;

    let relay = harness.relay();
    let relay = Running::spawn(move |stop| relay.run(stop));
    let pruned = qapmap_testkit::eventually(Duration::from_secs(30), || async {
        inbox_ids(&harness).await == ["recent"]
    })
    .await;
    relay.stop().await;
    assert!(
        pruned,
        "the old inbox row was pruned: {:?}",
        inbox_ids(&harness).await
    );
}

/// Goal: a dead letter an operator resolved (replayed or discarded) over 90
/// days ago is pruned; one resolved more recently stays, and so does every
/// pending one, however old: it still waits for an operator, and its inbox
/// row (if any) with it.
#[tokio::test]
async fn a_prune_deletes_only_dead_letters_resolved_long_ago() {
    let harness = Harness::start().await;
    dead_letter_resolved(&harness, "a-replayed-long-ago", "replayed", 91).await;
    dead_letter_resolved(&harness, "b-discarded-long-ago", "discarded", 120).await;
    dead_letter_resolved(&harness, "c-discarded-last-month", "discarded", 30).await;
    dead_letter_resolved(&harness, "d-pending-for-a-year", "pending", 365).await;
    inbox_row(&harness, "d-pending-for-a-year", 365).await;

    let pruned = harness.relay().prune().await.expect("prune");

    assert_eq!(
        pruned,
        Pruned {
            outbox: 0,
            inbox: 0,
            dead_letters: 2,
        }
    );
    assert_eq!(
        dead_letter_ids(&harness).await,
        ["c-discarded-last-month", "d-pending-for-a-year"]
    );
    assert_eq!(inbox_ids(&harness).await, ["d-pending-for-a-year"]);
    assert_eq!(
        harness.relay().prune().await.expect("second prune"),
        Pruned::default()
    );
}
