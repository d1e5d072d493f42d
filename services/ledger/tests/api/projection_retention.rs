//! The projection's record of applied equity events is pruned once no copy
//! of an event can arrive, and kept until then.

use std::time::Duration;

use qapmap_ledger::projection_retention::{self, APPLIED_EVENT_RETENTION};
use uuid::Uuid;

use crate::helpers::TestLedger;
use crate::ocf_tutorial::{apply, event, plan_created};

/// A record of `event_id` applied `days_ago`.
async fn applied(ledger: &TestLedger, event_id: &str, days_ago: i32) {
    sqlx::query(
        "INSERT INTO applied_equity_events (company_id, event_id, applied_at)
         VALUES ($1, $2, now() - make_interval(days => $3))",
    )
    .bind(ledger.company_id)
    .bind(event_id)
    .bind(days_ago)
    .execute(&ledger.pool)
    .await
    .expect("applied event record");
}

async fn applied_ids(ledger: &TestLedger) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT event_id FROM applied_equity_events WHERE company_id = $1 ORDER BY event_id",
    )
    .bind(ledger.company_id)
    .fetch_all(&ledger.pool)
    .await
    .expect("applied events")
}

/// Goal: a prune deletes the records older than its retention and nothing
/// younger, so an event applied within the window still counts once; a
/// second prune finds nothing. Method: a 10-day retention over records of
/// 20, 11 and 9 days and today, all younger than the 30 days the running
/// ledger's own pruner uses, so it cannot race this one.
#[tokio::test]
async fn a_prune_deletes_only_records_past_the_retention() {
    assert_eq!(APPLIED_EVENT_RETENTION, Duration::from_secs(30 * 24 * 3600));
    let ledger = TestLedger::start().await;
    applied(&ledger, "a-20-days", 20).await;
    applied(&ledger, "b-11-days", 11).await;
    applied(&ledger, "c-9-days", 9).await;
    let today = event(
        ledger.company_id,
        crate::helpers::date(2024, 1, 1),
        plan_created("10"),
    );
    apply(&ledger, &today).await;
    let ten_days = Duration::from_secs(10 * 24 * 3600);

    let pruned = projection_retention::prune(&ledger.pool, ten_days)
        .await
        .expect("prune");

    assert_eq!(pruned, 2);
    let mut kept = vec!["c-9-days".to_owned(), today.event_id.clone()];
    kept.sort();
    assert_eq!(applied_ids(&ledger).await, kept);
    assert_eq!(
        projection_retention::prune(&ledger.pool, ten_days)
            .await
            .expect("second prune"),
        0
    );
}

/// Goal: a running ledger prunes on its own from its start, so the record
/// does not grow without end. Method: old records written under a running
/// ledger; a replica starting on the same database prunes them.
#[tokio::test]
async fn a_starting_ledger_prunes_old_records() {
    let ledger = TestLedger::start().await;
    let old = Uuid::now_v7().to_string();
    applied(&ledger, &old, 45).await;
    applied(&ledger, "recent", 1).await;

    let _replica = ledger.replica().await;
    let pruned = qapmap_testkit::eventually(Duration::from_secs(30), || async {
        applied_ids(&ledger).await == ["recent"]
    })
    .await;
    assert!(
        pruned,
        "the old record was pruned: {:?}",
        applied_ids(&ledger).await
    );
}
