//! Grants against the pool, bad grant input, vesting queries, vesting events
//! and acceleration.

use qapmap_proto::equity::v1 as proto;
use qapmap_proto::equity::v1::CancellationBehavior::ReturnToPool;

use crate::helpers::{
    TestApp, assert_award_invariant, assert_pool_invariant, bad_field, date, dec, reason,
    request_id, usd, value,
};

#[tokio::test]
async fn a_grant_takes_from_the_pool_and_one_over_the_pool_is_refused() {
    let mut app = TestApp::spawn().await;
    let plan = app.create_plan("1000", ReturnToPool).await;
    let award = app.grant(&plan.id, "600").await;
    assert_eq!(value(&award.quantity), "600");

    let before = app.written().await;
    let status = app
        .client
        .grant_award(app.grant_request(&plan.id, "401"))
        .await
        .expect_err("over the pool");
    assert_eq!(reason(&status), "pool_exhausted");
    assert_eq!(app.written().await, before);

    let pool = app.pool_summary(&plan.id).await;
    assert_eq!(
        (
            value(&pool.available).as_str(),
            value(&pool.outstanding).as_str()
        ),
        ("400", "600")
    );
    assert_pool_invariant(&pool);
    let subject: String =
        sqlx::query_scalar("SELECT subject FROM outbox WHERE subject LIKE '%award_granted'")
            .fetch_one(&app.pool)
            .await
            .expect("AwardGranted enqueued");
    assert!(subject.contains(".evt.equity."));
}

#[tokio::test]
async fn two_grants_racing_for_the_last_options_never_overdraw_the_pool() {
    let mut app = TestApp::spawn().await;
    let plan = app.create_plan("1000", ReturnToPool).await;
    app.grant(&plan.id, "400").await;
    let racers: Vec<_> = (0..4)
        .map(|_| {
            let mut client = app.client.clone();
            let request = app.grant_request(&plan.id, "600");
            tokio::spawn(async move { client.grant_award(request).await })
        })
        .collect();
    let mut granted = 0;
    for racer in racers {
        match racer.await.expect("task") {
            Ok(_) => granted += 1,
            Err(status) => assert_eq!(reason(&status), "pool_exhausted"),
        }
    }
    assert_eq!(granted, 1, "only one grant fits");
    assert_eq!(app.count("awards").await, 2);
    let pool = app.pool_summary(&plan.id).await;
    assert_eq!(value(&pool.available), "0");
    assert_pool_invariant(&pool);
}

#[tokio::test]
async fn bad_grant_input_names_the_field_and_writes_nothing() {
    let mut app = TestApp::spawn().await;
    let plan = app.create_plan("1000", ReturnToPool).await;
    let base = app.grant_request(&plan.id, "100");
    let mut long_cliff = base.clone();
    if let Some(proto::vesting_trigger::Trigger::Relative(relative)) =
        long_cliff.vesting_terms.as_mut().unwrap().conditions[2]
            .trigger
            .as_mut()
            .and_then(|t| t.trigger.as_mut())
    {
        relative.period.as_mut().unwrap().cliff_installment = 37;
    }
    let cases: Vec<(&str, proto::GrantAwardRequest)> = vec![
        (
            "quantity",
            proto::GrantAwardRequest {
                quantity: dec("0"),
                ..base.clone()
            },
        ),
        (
            "quantity",
            proto::GrantAwardRequest {
                quantity: dec("-1"),
                ..base.clone()
            },
        ),
        (
            "quantity",
            proto::GrantAwardRequest {
                quantity: dec("1.12345678901"),
                ..base.clone()
            },
        ),
        (
            "award_type",
            proto::GrantAwardRequest {
                award_type: 17,
                ..base.clone()
            },
        ),
        (
            "expiration_date",
            proto::GrantAwardRequest {
                expiration_date: date(2022, 12, 30),
                ..base.clone()
            },
        ),
        (
            "exercise_price.currency",
            proto::GrantAwardRequest {
                exercise_price: Some(qapmap_proto::common::v1::Money {
                    amount: dec("0.1"),
                    currency: "DOLLARS".into(),
                }),
                ..base.clone()
            },
        ),
        (
            "exercise_price.amount",
            proto::GrantAwardRequest {
                exercise_price: usd("0.00000000001"),
                ..base.clone()
            },
        ),
        (
            "vesting_terms.conditions[2].trigger.relative.period.cliff_installment",
            long_cliff,
        ),
        (
            "termination_windows[0].reason",
            proto::GrantAwardRequest {
                termination_windows: vec![proto::TerminationWindow {
                    reason: 99,
                    period: 3,
                    period_type: 2,
                }],
                ..base.clone()
            },
        ),
    ];
    let before = app.written().await;
    for (field, request) in cases {
        let status = app.client.grant_award(request).await.expect_err(field);
        assert_eq!(bad_field(&status), field);
    }
    assert_eq!(app.written().await, before);
    let missing_plan = proto::GrantAwardRequest {
        plan_id: uuid::Uuid::new_v4().to_string(),
        ..base
    };
    let status = app
        .client
        .grant_award(missing_plan)
        .await
        .expect_err("unknown plan");
    assert_eq!(status.code(), tonic::Code::NotFound);
    assert_eq!(app.written().await, before);
}

#[tokio::test]
async fn an_award_reports_the_options_tutorial_schedule_as_of_any_date() {
    let mut app = TestApp::spawn().await;
    let plan = app.create_plan("10000000", ReturnToPool).await;
    let award = app.grant(&plan.id, "100000").await;
    let expected = [
        (date(2023, 12, 30), "0"),
        (date(2023, 12, 31), "25000"),
        (date(2024, 1, 31), "27083"),
        (date(2024, 2, 29), "29167"),
        (date(2026, 12, 31), "100000"),
    ];
    for (as_of, vested) in expected {
        let response = app.position(&award.id, as_of).await;
        let position = response.position.expect("position");
        assert_eq!(value(&position.vested), vested, "{as_of:?}");
        assert_eq!(value(&position.exercisable), vested);
        assert_award_invariant(&award, &position);
        assert_eq!(response.tranches.len(), 37);
    }
}

#[tokio::test]
async fn a_recorded_vesting_event_vests_its_portion_and_acceleration_vests_early() {
    let mut app = TestApp::spawn().await;
    let plan = app.create_plan("10000", ReturnToPool).await;
    use proto::vesting_condition::Amount;
    use proto::vesting_trigger::Trigger;
    let milestone = proto::VestingTerms {
        id: "milestone".into(),
        name: "Milestone".into(),
        description: String::new(),
        allocation_type: proto::AllocationType::CumulativeRoundDown as i32,
        conditions: vec![
            proto::VestingCondition {
                id: "start".into(),
                description: String::new(),
                amount: Some(Amount::Quantity(qapmap_proto::common::v1::Decimal {
                    value: "0".into(),
                })),
                trigger: Some(proto::VestingTrigger {
                    trigger: Some(Trigger::VestingStart(proto::VestingStartTrigger {})),
                }),
                next_condition_ids: vec!["launch".into()],
            },
            proto::VestingCondition {
                id: "launch".into(),
                description: "product launch".into(),
                amount: Some(Amount::Portion(proto::VestingPortion {
                    numerator: dec("1"),
                    denominator: dec("2"),
                    remainder: false,
                })),
                trigger: Some(proto::VestingTrigger {
                    trigger: Some(Trigger::Event(proto::EventTrigger {})),
                }),
                next_condition_ids: vec![],
            },
        ],
    };
    let grant = proto::GrantAwardRequest {
        vesting_terms: Some(milestone),
        ..app.grant_request(&plan.id, "1000")
    };
    let award = app
        .client
        .grant_award(grant)
        .await
        .expect("granted")
        .into_inner()
        .award
        .expect("award");
    let event = |condition: &str| proto::RecordVestingEventRequest {
        request_id: request_id(),
        company_id: app.company_id.to_string(),
        award_id: award.id.clone(),
        condition_id: condition.into(),
        effective_date: date(2023, 6, 1),
    };

    let status = app
        .client
        .record_vesting_event(event("start"))
        .await
        .expect_err("not an event condition");
    assert_eq!(bad_field(&status), "condition_id");
    let recorded = app
        .client
        .record_vesting_event(event("launch"))
        .await
        .expect("recorded")
        .into_inner();
    assert_eq!(value(&recorded.position.expect("position").vested), "500");
    let again = app
        .client
        .record_vesting_event(event("launch"))
        .await
        .expect_err("twice");
    assert_eq!(reason(&again), "vesting_event_already_recorded");

    let accelerate = |quantity: &str| proto::AccelerateVestingRequest {
        request_id: request_id(),
        company_id: app.company_id.to_string(),
        award_id: award.id.clone(),
        quantity: dec(quantity),
        effective_date: date(2023, 7, 1),
        reason: "change of control".into(),
    };
    let too_much = app
        .client
        .accelerate_vesting(accelerate("501"))
        .await
        .expect_err("more than unvested");
    assert_eq!(reason(&too_much), "acceleration_exceeds_unvested");
    let accelerated = app
        .client
        .accelerate_vesting(accelerate("500"))
        .await
        .expect("accelerated")
        .into_inner();
    let position = accelerated.position.expect("position");
    assert_eq!(
        (
            value(&position.vested).as_str(),
            value(&position.unvested).as_str()
        ),
        ("1000", "0")
    );
    assert_eq!(
        accelerated.award.expect("award").version,
        3,
        "granted, event, acceleration"
    );
}
