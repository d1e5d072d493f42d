//! Share classes: creation, idempotency, bad input, authorized-shares adjustments.

use qapmap_proto::equity::v1 as proto;
use tonic::Code;

use crate::helpers::{TestApp, bad_field, dec, reason, request_id, value};

#[tokio::test]
async fn a_share_class_is_recorded_once_with_its_event_and_a_repeat_returns_it() {
    let mut app = TestApp::spawn().await;
    let request = app.class_request("1000000");

    let first = app
        .client
        .create_share_class(request.clone())
        .await
        .expect("created")
        .into_inner();
    let repeat = app
        .client
        .create_share_class(request.clone())
        .await
        .expect("repeated")
        .into_inner();

    let class = first.share_class.expect("class");
    assert_eq!(repeat.share_class.expect("class").id, class.id);
    assert_eq!(value(&class.authorized_shares), "1000000");
    assert_eq!(class.version, 1);
    assert_eq!(app.count("share_classes").await, 1);
    assert_eq!(app.count("equity_events").await, 1);
    let subject: String = sqlx::query_scalar("SELECT subject FROM outbox")
        .fetch_one(&app.pool)
        .await
        .expect("one outbox row");
    assert!(
        subject.ends_with(".evt.equity.share_class_created"),
        "{subject}"
    );

    let mut changed = request;
    changed.authorized_shares = dec("5");
    let status = app
        .client
        .create_share_class(changed)
        .await
        .expect_err("same id, other payload");
    assert_eq!(status.code(), Code::AlreadyExists);
    assert_eq!(app.count("share_classes").await, 1);
}

#[tokio::test]
async fn bad_share_class_input_names_the_field_and_writes_nothing() {
    let mut app = TestApp::spawn().await;
    let base = app.class_request("1000");
    let cases: Vec<(&str, proto::CreateShareClassRequest)> = vec![
        (
            "authorized_shares",
            proto::CreateShareClassRequest {
                authorized_shares: dec("0"),
                ..base.clone()
            },
        ),
        (
            "authorized_shares",
            proto::CreateShareClassRequest {
                authorized_shares: dec("-5"),
                ..base.clone()
            },
        ),
        (
            "authorized_shares",
            proto::CreateShareClassRequest {
                authorized_shares: dec("1.00000000001"),
                ..base.clone()
            },
        ),
        (
            "class_type",
            proto::CreateShareClassRequest {
                class_type: 42,
                ..base.clone()
            },
        ),
        (
            "class_type",
            proto::CreateShareClassRequest {
                class_type: 0,
                ..base.clone()
            },
        ),
        (
            "par_value.currency",
            proto::CreateShareClassRequest {
                par_value: Some(qapmap_proto::common::v1::Money {
                    amount: dec("1"),
                    currency: "XYZ".into(),
                }),
                ..base.clone()
            },
        ),
        (
            "company_id",
            proto::CreateShareClassRequest {
                company_id: "not-a-uuid".into(),
                ..base.clone()
            },
        ),
    ];
    for (field, request) in cases {
        let status = app
            .client
            .create_share_class(request)
            .await
            .expect_err(field);
        assert_eq!(bad_field(&status), field);
    }
    assert_eq!(app.written().await, [0; 6]);
}

#[tokio::test]
async fn authorized_shares_adjust_with_versions_and_never_below_what_plans_reserve() {
    let mut app = TestApp::spawn().await;
    let class = app.create_class("1000").await;
    let plan = app.plan_request(&class.id, "600", proto::CancellationBehavior::ReturnToPool);
    app.client.create_equity_plan(plan).await.expect("plan");
    let adjust = |new: &str, expected_version| proto::AdjustAuthorizedSharesRequest {
        request_id: request_id(),
        company_id: app.company_id.to_string(),
        share_class_id: class.id.clone(),
        new_authorized_shares: dec(new),
        effective_date: None,
        expected_version,
    };
    let before = app.written().await;

    let stale = app
        .client
        .adjust_authorized_shares(adjust("2000", 7))
        .await
        .expect_err("stale");
    assert_eq!(stale.code(), Code::Aborted);
    let below = app
        .client
        .adjust_authorized_shares(adjust("599", 1))
        .await
        .expect_err("below reserves");
    assert_eq!(reason(&below), "authorized_below_plan_reserves");
    assert_eq!(app.written().await, before, "refusals write nothing");

    let adjusted = app
        .client
        .adjust_authorized_shares(adjust("2000", 1))
        .await
        .expect("adjusted")
        .into_inner();
    let adjusted = adjusted.share_class.expect("class");
    assert_eq!(
        (
            value(&adjusted.authorized_shares).as_str(),
            adjusted.version
        ),
        ("2000", 2)
    );
    let versions: Vec<i64> = sqlx::query_scalar(
        "SELECT aggregate_version FROM equity_events WHERE aggregate_id = $1::text::uuid ORDER BY aggregate_version",
    )
    .bind(&class.id)
    .fetch_all(&app.pool)
    .await
    .expect("events");
    assert_eq!(versions, [1, 2]);
}

#[tokio::test]
async fn another_companys_share_class_is_not_found() {
    let mut app = TestApp::spawn().await;
    let class = app.create_class("1000").await;
    let request = proto::GetShareClassRequest {
        company_id: uuid::Uuid::new_v4().to_string(),
        share_class_id: class.id.clone(),
    };
    let status = app
        .client
        .get_share_class(request)
        .await
        .expect_err("other tenant");
    assert_eq!(status.code(), Code::NotFound);
    let own = proto::GetShareClassRequest {
        company_id: app.company_id.to_string(),
        share_class_id: class.id,
    };
    assert!(app.client.get_share_class(own).await.is_ok());
}
