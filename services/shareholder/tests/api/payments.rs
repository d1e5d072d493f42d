//! Collections and disbursements through the sandbox gateway over gRPC: at
//! most once per request id, declines recorded, bad input refused.

use qapmap_proto::shareholder::v1 as proto;
use qapmap_shareholder::payment::SandboxSettings;
use tonic::Code;
use uuid::Uuid;

use crate::helpers::{TestApp, bad_field, money, reason, spawn_app, spawn_app_with};

fn collect(
    app: &TestApp,
    request_id: &str,
    stakeholder_id: &str,
    amount: &str,
) -> proto::CollectPaymentRequest {
    proto::CollectPaymentRequest {
        request_id: request_id.to_owned(),
        company_id: app.company_id.to_string(),
        stakeholder_id: stakeholder_id.to_owned(),
        amount: Some(money(amount, "USD")),
    }
}

async fn payment_rows(app: &TestApp) -> i64 {
    app.count("payments").await
}

#[tokio::test]
async fn a_collection_succeeds_once_and_a_repeat_returns_the_first_result() {
    let app = spawn_app().await;
    let holder = app.stakeholder_paying_with("bank:ada").await;
    let request = collect(&app, "exercise-1", &holder.id, "1250.50");

    let first = app
        .client
        .clone()
        .collect_payment(request.clone())
        .await
        .expect("paid")
        .into_inner();
    let repeat = app
        .client
        .clone()
        .collect_payment(request)
        .await
        .expect("repeat")
        .into_inner();
    let payment = first.payment.clone().expect("payment");
    let fetched = app
        .client
        .clone()
        .get_payment(proto::GetPaymentRequest {
            company_id: app.company_id.to_string(),
            payment_id: payment.id.clone(),
        })
        .await
        .expect("found")
        .into_inner()
        .payment;

    assert_eq!(first, repeat);
    assert_eq!(payment.status, proto::PaymentStatus::Succeeded as i32);
    assert_eq!(
        payment.direction,
        proto::PaymentDirection::Collection as i32
    );
    assert_eq!(payment.amount, Some(money("1250.5", "USD")));
    assert!(payment.gateway_reference.starts_with("sandbox-"));
    assert_eq!(fetched, Some(payment));
    assert_eq!(app.gateway.calls_for("request:exercise-1"), 1);
    assert_eq!(payment_rows(&app).await, 1);
    let subjects: Vec<String> = sqlx::query_scalar("SELECT subject FROM outbox ORDER BY id")
        .fetch_all(&app.pool)
        .await
        .expect("outbox");
    assert!(
        subjects[1].ends_with(".evt.shareholder.payment_recorded"),
        "{subjects:?}"
    );
}

#[tokio::test]
async fn a_payment_declined_by_sandbox_configuration_is_recorded_and_returned_on_repeat() {
    let app = spawn_app_with(SandboxSettings {
        decline_all: true,
        ..SandboxSettings::default()
    })
    .await;
    let holder = app.stakeholder_paying_with("bank:ada").await;
    let request = proto::DisbursePaymentRequest {
        request_id: "buyback-1".to_owned(),
        company_id: app.company_id.to_string(),
        stakeholder_id: holder.id.clone(),
        amount: Some(money("900", "EUR")),
    };

    let first = app
        .client
        .clone()
        .disburse_payment(request.clone())
        .await
        .expect("answered")
        .into_inner();
    let repeat = app
        .client
        .clone()
        .disburse_payment(request)
        .await
        .expect("answered")
        .into_inner();
    let payment = first.payment.clone().expect("payment");

    assert_eq!(first, repeat);
    assert_eq!(payment.status, proto::PaymentStatus::Declined as i32);
    assert!(!payment.decline_reason.is_empty());
    assert_eq!(payment.gateway_reference, "");
    assert_eq!(app.gateway.calls_for("request:buyback-1"), 1);
    let status: String = sqlx::query_scalar("SELECT status FROM payments")
        .fetch_one(&app.pool)
        .await
        .expect("one payment row");
    assert_eq!(status, "declined");
}

#[tokio::test]
async fn twenty_concurrent_repeats_make_one_gateway_call_and_get_the_same_result() {
    // Method: a slow gateway (300 ms) keeps the first attempt in flight while
    // the other 19 arrive; they must wait for it, not call again.
    let app = spawn_app().await;
    let holder = app.stakeholder_paying_with("sandbox:delay-ms:300").await;
    let request = collect(&app, "exercise-race", &holder.id, "42");

    let calls = (0..20).map(|_| {
        let mut client = app.client.clone();
        let request = request.clone();
        tokio::spawn(async move {
            client
                .collect_payment(request)
                .await
                .map(|r| r.into_inner())
        })
    });
    let mut responses = Vec::new();
    for call in calls.collect::<Vec<_>>() {
        responses.push(call.await.expect("task").expect("every repeat answered"));
    }

    assert!(responses.iter().all(|response| *response == responses[0]));
    let payment = responses[0].payment.clone().expect("payment");
    assert_eq!(payment.status, proto::PaymentStatus::Succeeded as i32);
    assert_eq!(payment.gateway_attempts, 1);
    assert_eq!(app.gateway.calls_for("request:exercise-race"), 1);
    assert_eq!(payment_rows(&app).await, 1);
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM idempotent_requests WHERE request_id = 'exercise-race'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("count");
    assert_eq!(stored, 1);
}

#[tokio::test]
async fn a_transient_failure_is_unavailable_and_a_retry_with_the_same_key_pays_once() {
    let app = spawn_app().await;
    let holder = app
        .stakeholder_paying_with("sandbox:fail-transient:2")
        .await;
    let request = collect(&app, "exercise-flaky", &holder.id, "10");

    for attempt in 1..=2 {
        let status = app
            .client
            .clone()
            .collect_payment(request.clone())
            .await
            .expect_err("transient");
        assert_eq!(status.code(), Code::Unavailable, "attempt {attempt}");
    }
    let paid = app
        .client
        .clone()
        .collect_payment(request.clone())
        .await
        .expect("third try")
        .into_inner();
    let repeat = app
        .client
        .clone()
        .collect_payment(request)
        .await
        .expect("repeat")
        .into_inner();

    let payment = paid.payment.clone().expect("payment");
    assert_eq!(payment.status, proto::PaymentStatus::Succeeded as i32);
    assert_eq!(payment.gateway_attempts, 3);
    assert_eq!(paid, repeat);
    assert_eq!(app.gateway.calls_for("request:exercise-flaky"), 3);
    assert_eq!(payment_rows(&app).await, 1);
}

#[tokio::test]
async fn payments_are_refused_for_unknown_stakeholders_and_missing_instructions() {
    let app = spawn_app().await;
    let without_instruction = app.stakeholder_paying_with("").await;
    let before = app.written().await;

    let unknown = app
        .client
        .clone()
        .collect_payment(collect(&app, "p1", &Uuid::now_v7().to_string(), "5"))
        .await
        .expect_err("unknown stakeholder");
    let missing = app
        .client
        .clone()
        .collect_payment(collect(&app, "p2", &without_instruction.id, "5"))
        .await
        .expect_err("no instruction");

    assert_eq!(unknown.code(), Code::NotFound);
    assert_eq!(reason(&missing), "payment_instruction_missing");
    assert_eq!(app.written().await, before);
    assert_eq!(app.gateway.total_calls(), 0);
}

#[tokio::test]
async fn every_bad_payment_input_names_its_field_and_writes_nothing() {
    let app = spawn_app().await;
    let holder = app.stakeholder_paying_with("bank:ada").await;
    let before = app.written().await;
    type Edit = fn(&mut proto::CollectPaymentRequest);
    let cases: [(&str, Edit); 9] = [
        ("request_id", |r| r.request_id = "has space".to_owned()),
        ("company_id", |r| r.company_id.clear()),
        ("stakeholder_id", |r| r.stakeholder_id = "42".to_owned()),
        ("amount", |r| r.amount = None),
        ("amount.amount", |r| r.amount = Some(money("0", "USD"))),
        ("amount.amount", |r| r.amount = Some(money("-3", "USD"))),
        ("amount.amount", |r| {
            r.amount = Some(money("1.00000000001", "USD"))
        }),
        ("amount.currency", |r| r.amount = Some(money("1", "usd"))),
        ("amount.currency", |r| r.amount = Some(money("1", "XYZ"))),
    ];
    for (field, edit) in cases {
        let mut request = collect(&app, "bad", &holder.id, "1");
        edit(&mut request);
        let status = app
            .client
            .clone()
            .collect_payment(request)
            .await
            .expect_err(field);
        assert_eq!(bad_field(&status), field);
    }

    assert_eq!(app.written().await, before);
    assert_eq!(app.gateway.total_calls(), 0);
}

#[tokio::test]
async fn payments_list_per_stakeholder_and_a_reused_request_id_is_refused() {
    let app = spawn_app().await;
    let ada = app.stakeholder_paying_with("bank:ada").await;
    let bob = app.stakeholder_paying_with("bank:bob").await;
    app.client
        .clone()
        .collect_payment(collect(&app, "a1", &ada.id, "1"))
        .await
        .expect("paid");
    app.client
        .clone()
        .collect_payment(collect(&app, "b1", &bob.id, "2"))
        .await
        .expect("paid");

    let reused = app
        .client
        .clone()
        .collect_payment(collect(&app, "a1", &ada.id, "999"))
        .await
        .expect_err("same id, other amount");
    let listed = app
        .client
        .clone()
        .list_payments(proto::ListPaymentsRequest {
            company_id: app.company_id.to_string(),
            stakeholder_id: bob.id.clone(),
            page_size: 10,
            page_token: String::new(),
        })
        .await
        .expect("listed")
        .into_inner();

    assert_eq!(reused.code(), Code::AlreadyExists);
    assert_eq!(listed.payments.len(), 1);
    assert_eq!(listed.payments[0].stakeholder_id, bob.id);
    assert_eq!(payment_rows(&app).await, 2);
    assert_eq!(app.gateway.total_calls(), 2);
}
