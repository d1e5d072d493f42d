//! Termination, expiry and surrender: where cancelled options go, and the
//! pool and award invariants after each.

use qapmap_proto::equity::v1 as proto;
use qapmap_proto::equity::v1::CancellationBehavior::{Retire, ReturnToPool};

use crate::helpers::{
    TestApp, assert_award_invariant, assert_pool_invariant, date, dec, reason, request_id, value,
};

fn terminate(
    app: &TestApp,
    award_id: &str,
    on: Option<qapmap_proto::common::v1::Date>,
) -> proto::RecordAwardTerminationRequest {
    proto::RecordAwardTerminationRequest {
        request_id: request_id(),
        company_id: app.company_id.to_string(),
        award_id: award_id.to_owned(),
        termination_date: on,
        reason: proto::TerminationReason::VoluntaryOther as i32,
    }
}

fn expire(
    app: &TestApp,
    award_id: &str,
    on: Option<qapmap_proto::common::v1::Date>,
) -> proto::RecordAwardExpiryRequest {
    proto::RecordAwardExpiryRequest {
        request_id: request_id(),
        company_id: app.company_id.to_string(),
        award_id: award_id.to_owned(),
        effective_date: on,
    }
}

#[tokio::test]
async fn termination_forfeits_the_unvested_part_and_vested_options_lapse_after_the_window() {
    let mut app = TestApp::spawn().await;
    let plan = app.create_plan("1000000", ReturnToPool).await;
    let award = app.grant(&plan.id, "100000").await;

    let terminated = app
        .client
        .record_award_termination(terminate(&app, &award.id, date(2024, 2, 29)))
        .await
        .expect("terminated");
    let terminated = terminated.into_inner();
    let position = terminated.position.expect("position");
    assert_eq!(value(&position.vested_unexercised), "29167");
    assert_eq!(value(&position.forfeited), "70833");
    assert_eq!(value(&position.unvested), "0");
    assert_eq!(
        position.exercisable_until,
        date(2024, 5, 29),
        "three months after termination"
    );
    assert_award_invariant(&award, &position);
    let pool = app.pool_summary(&plan.id).await;
    assert_eq!(
        (
            value(&pool.returned).as_str(),
            value(&pool.available).as_str()
        ),
        ("70833", "970833")
    );
    assert_pool_invariant(&pool);

    let later = app
        .position(&award.id, date(2030, 1, 1))
        .await
        .position
        .expect("position");
    assert_eq!(
        value(&later.vested),
        "29167",
        "vesting stopped at termination"
    );
    assert_eq!(value(&later.exercisable), "0", "the window has closed");

    let before = app.written().await;
    let early = app
        .client
        .record_award_expiry(expire(&app, &award.id, date(2024, 5, 29)))
        .await
        .expect_err("still open");
    assert_eq!(reason(&early), "award_not_expired");
    let again = app
        .client
        .record_award_termination(terminate(&app, &award.id, date(2024, 3, 1)))
        .await
        .expect_err("twice");
    assert_eq!(reason(&again), "award_not_active");
    assert_eq!(app.written().await, before);

    let expired = app
        .client
        .record_award_expiry(expire(&app, &award.id, date(2024, 5, 30)))
        .await
        .expect("expired")
        .into_inner();
    let closed = expired.award.expect("award");
    assert_eq!(closed.status, proto::AwardStatus::Closed as i32);
    let position = expired.position.expect("position");
    assert_eq!(value(&position.forfeited), "100000");
    assert_award_invariant(&closed, &position);
    let pool = app.pool_summary(&plan.id).await;
    assert_eq!(
        (value(&pool.available).as_str(), value(&pool.live).as_str()),
        ("1000000", "0")
    );
    assert_pool_invariant(&pool);
    let causes: Vec<(i64, String)> = sqlx::query_as(
        "SELECT aggregate_version, event_type FROM equity_events WHERE aggregate_type = 'award' ORDER BY aggregate_version",
    )
    .fetch_all(&app.pool)
    .await
    .expect("events");
    let names: Vec<&str> = causes.iter().map(|(_, name)| name.as_str()).collect();
    assert_eq!(
        names,
        [
            "award_granted",
            "award_terminated",
            "award_quantity_cancelled",
            "award_quantity_cancelled"
        ]
    );
    assert_eq!(
        causes.iter().map(|(v, _)| *v).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
}

#[tokio::test]
async fn a_surrender_returns_options_per_plan_and_never_more_than_is_left() {
    let mut app = TestApp::spawn().await;
    let retiring = app.create_plan("1000", Retire).await;
    let award = app.grant(&retiring.id, "1000").await;
    let company_id = app.company_id.to_string();
    let surrender = |quantity: &str| proto::SurrenderAwardRequest {
        request_id: request_id(),
        company_id: company_id.clone(),
        award_id: award.id.clone(),
        quantity: dec(quantity),
        effective_date: date(2024, 1, 31),
    };

    let done = app
        .client
        .surrender_award(surrender("300"))
        .await
        .expect("surrendered")
        .into_inner();
    let position = done.position.expect("position");
    assert_eq!(value(&position.forfeited), "300");
    assert_eq!(
        value(&position.vested),
        "271",
        "surrendered unvested options come off the end of the schedule"
    );
    assert_award_invariant(&award, &position);
    let pool = app.pool_summary(&retiring.id).await;
    assert_eq!(
        (
            value(&pool.retired).as_str(),
            value(&pool.available).as_str()
        ),
        ("300", "0")
    );
    assert_pool_invariant(&pool);

    let before = app.written().await;
    let status = app
        .client
        .surrender_award(surrender("701"))
        .await
        .expect_err("more than is left");
    assert_eq!(reason(&status), "surrender_exceeds_outstanding");
    assert_eq!(app.written().await, before);
    let cancelled: String = sqlx::query_scalar(
        "SELECT subject FROM outbox WHERE subject LIKE '%award_quantity_cancelled'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("AwardQuantityCancelled enqueued");
    assert!(cancelled.contains(".evt.equity."));
}
