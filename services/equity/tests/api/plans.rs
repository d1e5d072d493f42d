//! Equity plans: pools against authorized shares, absolute pool adjustments.

use qapmap_proto::equity::v1 as proto;
use qapmap_proto::equity::v1::CancellationBehavior::ReturnToPool;

use crate::helpers::{TestApp, assert_pool_invariant, bad_field, dec, reason, request_id, value};

#[tokio::test]
async fn a_plan_cannot_reserve_more_than_its_class_authorizes() {
    let mut app = TestApp::spawn().await;
    let class = app.create_class("1000").await;
    app.client
        .create_equity_plan(app.plan_request(&class.id, "700", ReturnToPool))
        .await
        .expect("first plan");
    let before = app.written().await;

    let status = app
        .client
        .create_equity_plan(app.plan_request(&class.id, "301", ReturnToPool))
        .await
        .expect_err("over");
    assert_eq!(reason(&status), "exceeds_authorized_shares");
    let unknown = proto::CreateEquityPlanRequest {
        cancellation_behavior: 9,
        ..app.plan_request(&class.id, "1", ReturnToPool)
    };
    let status = app
        .client
        .create_equity_plan(unknown)
        .await
        .expect_err("unknown enum");
    assert_eq!(bad_field(&status), "cancellation_behavior");
    assert_eq!(app.written().await, before);
}

#[tokio::test]
async fn pool_adjustments_set_new_totals_and_never_go_below_what_is_granted() {
    let mut app = TestApp::spawn().await;
    let plan = app.create_plan("10000000", ReturnToPool).await;
    app.grant(&plan.id, "100000").await;
    let adjust = |new: &str| proto::AdjustPoolRequest {
        request_id: request_id(),
        company_id: app.company_id.to_string(),
        plan_id: plan.id.clone(),
        new_pool_size: dec(new),
        effective_date: None,
        expected_version: 0,
    };

    // The options tutorial: 10,000,000 reserved, then set to 8,000,000.
    let adjusted = app
        .client
        .adjust_pool(adjust("8000000"))
        .await
        .expect("adjusted")
        .into_inner();
    let pool = adjusted.pool.expect("pool");
    assert_eq!(value(&pool.pool_size), "8000000");
    assert_eq!(value(&pool.available), "7900000");
    assert_pool_invariant(&pool);

    let before = app.written().await;
    let status = app
        .client
        .adjust_pool(adjust("99999"))
        .await
        .expect_err("below granted");
    assert_eq!(reason(&status), "pool_below_granted");
    assert_eq!(app.written().await, before);
    let event_count: i64 =
        sqlx::query_scalar("SELECT count(*) FROM equity_events WHERE event_type = 'pool_adjusted'")
            .fetch_one(&app.pool)
            .await
            .expect("count");
    assert_eq!(event_count, 1);
}
