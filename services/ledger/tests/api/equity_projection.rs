//! Equity events feed options and pools, once per event id.

use uuid::Uuid;

use crate::helpers::{TestLedger, date, row, value};
use crate::ocf_tutorial::{COMMON, HOLDER, apply, event, granted, plan_created};

#[tokio::test]
async fn an_equity_event_applied_twice_counts_once_and_moves_the_projection_version() {
    let ledger = TestLedger::start().await;
    let company = ledger.company_id;
    apply(
        &ledger,
        &event(company, date(2023, 1, 1), plan_created("1000")),
    )
    .await;
    let grant = event(company, date(2023, 2, 1), granted("100"));
    apply(&ledger, &grant).await;
    apply(&ledger, &grant).await;

    let table = ledger.cap_table(None).await;
    assert_eq!(
        value(
            &row(&table, HOLDER, COMMON)
                .expect("holder")
                .options_outstanding
        ),
        "100"
    );
    assert_eq!(
        value(&table.totals.as_ref().expect("totals").pool_available),
        "900"
    );
    assert_eq!(table.projection_version, 2);
    let before_grant = ledger.cap_table(Some(date(2023, 1, 31))).await;
    assert!(row(&before_grant, HOLDER, COMMON).is_none());

    let orphan = event(company, date(2023, 2, 1), crate::ocf_tutorial::granted("1"));
    let mut other = orphan.clone();
    other.company_id = Uuid::now_v7().to_string();
    let mut tx = ledger.pool.begin().await.expect("begin");
    let error = qapmap_ledger::apply_equity_event(&mut tx, &other)
        .await
        .expect_err("plan unknown to that company");
    assert!(matches!(
        error,
        qapmap_ledger::equity_projection::ProjectionError::UnknownPlan(_)
    ));
}

#[tokio::test]
async fn the_projection_version_goes_on_from_the_changes_counted_before_its_own_row() {
    // A company whose projection changed 5 times before `projection_versions`
    // existed (the count the `ledgers` row kept): its next change is version 6,
    // in today's table (memory) and in a past date's (Postgres) alike.
    let ledger = TestLedger::start().await;
    let company = ledger.company_id;
    sqlx::query("INSERT INTO ledgers (company_id, projection_version) VALUES ($1, 5)")
        .bind(company)
        .execute(&ledger.pool)
        .await
        .expect("a ledgers row from the previous release");
    assert_eq!(ledger.cap_table(None).await.projection_version, 5);

    apply(
        &ledger,
        &event(company, date(2023, 1, 1), plan_created("1000")),
    )
    .await;

    assert_eq!(
        ledger
            .cap_table(Some(date(2024, 1, 1)))
            .await
            .projection_version,
        6
    );
    // Today's table was loaded at version 5: the change's NOTIFY drops it
    // (the event was applied outside the service, so only the notification
    // tells it).
    let current = qapmap_testkit::eventually(std::time::Duration::from_secs(10), || async {
        ledger.cap_table(None).await.projection_version == 6
    })
    .await;
    assert!(current, "today's table shows version 6");
}
