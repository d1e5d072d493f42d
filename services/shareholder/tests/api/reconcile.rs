//! Settling a payment whose outcome is unknown (`ResolvePayment`): what the
//! operator records is what a saga retry then gets, and the money moves at
//! most once.

use std::time::Duration;

use qapmap_proto::shareholder::v1 as proto;
use qapmap_shareholder::saga_operations::{SagaPayment, SagaPaymentError};
use tonic::Code;
use uuid::Uuid;

use crate::helpers::{TestApp, bad_field, reason, spawn_app};
use crate::saga_operations::{attempt_started_an_hour_ago, collect, command, key, payments};

fn money_not_moved(app: &TestApp, payment_id: Uuid) -> proto::ResolvePaymentRequest {
    resolve_request(
        app,
        &payment_id.to_string(),
        proto::PaymentResolution::MoneyNotMoved,
        "",
    )
}

fn resolve_request(
    app: &TestApp,
    payment_id: &str,
    resolution: proto::PaymentResolution,
    gateway_reference: &str,
) -> proto::ResolvePaymentRequest {
    proto::ResolvePaymentRequest {
        request_id: format!("resolve-{}", Uuid::now_v7()),
        company_id: app.company_id.to_string(),
        payment_id: payment_id.to_owned(),
        resolution: resolution as i32,
        gateway_reference: gateway_reference.to_owned(),
    }
}

async fn resolve(
    app: &TestApp,
    request: proto::ResolvePaymentRequest,
) -> Result<proto::Payment, tonic::Status> {
    app.client
        .clone()
        .resolve_payment(request)
        .await
        .map(|response| response.into_inner().payment.expect("payment"))
}

/// The only payment's id and status.
async fn the_payment(app: &TestApp) -> (Uuid, String) {
    sqlx::query_as("SELECT id, status FROM payments")
        .fetch_one(&app.pool)
        .await
        .expect("one payment")
}

async fn recorded_events(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM outbox WHERE subject LIKE '%.payment_recorded'")
        .fetch_one(&app.pool)
        .await
        .expect("outbox")
}

/// A saga payment whose gateway call timed out: outcome unknown, one call.
async fn timed_out_payment(app: &TestApp) -> (SagaPayment, Uuid) {
    let payments = payments(app).with_gateway_timeout(Duration::from_millis(100));
    let command = command(app, "sandbox:delay-ms:500").await;
    let error = collect(app, &payments, &command)
        .await
        .expect_err("timed out");
    assert!(matches!(error, SagaPaymentError::OutcomeUnknown(_)));
    let (payment_id, status) = the_payment(app).await;
    assert_eq!(status, "outcome_unknown");
    (command, payment_id)
}

/// Goal: the operator found the money moved. The payment becomes succeeded
/// with the gateway's reference and is announced and audited; the saga's
/// retry gets that result without calling the gateway again; and a second
/// resolution is refused.
#[tokio::test]
async fn money_that_moved_is_recorded_once_and_the_saga_retry_gets_it_without_paying_again() {
    let app = spawn_app().await;
    let (command, payment_id) = timed_out_payment(&app).await;
    let audited = app.count("audit_log").await;

    let request = resolve_request(
        &app,
        &payment_id.to_string(),
        proto::PaymentResolution::MoneyMoved,
        "gw-4711",
    );
    let resolved = resolve(&app, request.clone()).await.expect("resolved");
    let repeated = resolve(&app, request).await.expect("same request again");
    let retry = collect(&app, &payments(&app), &command)
        .await
        .expect("the retry gets the recorded result");

    assert_eq!(resolved.status, proto::PaymentStatus::Succeeded as i32);
    assert_eq!(resolved.gateway_reference, "gw-4711");
    assert_eq!(repeated, resolved);
    assert_eq!(retry.payment_id, payment_id);
    assert_eq!(retry.gateway_reference, "gw-4711");
    assert_eq!(
        app.gateway.calls_for(&key(&command)),
        1,
        "paid at most once"
    );
    assert_eq!(recorded_events(&app).await, 1);
    assert_eq!(app.count("audit_log").await, audited + 1);
    let second = resolve(&app, money_not_moved(&app, payment_id))
        .await
        .expect_err("already settled");
    assert_eq!(reason(&second), "payment_not_outcome_unknown");
    assert_eq!(the_payment(&app).await.1, "succeeded");
}

/// Goal: the operator found that nothing moved. The payment may be tried
/// again, and the saga's retry calls the gateway (once more) and pays.
#[tokio::test]
async fn money_that_did_not_move_is_tried_again_by_the_saga_retry() {
    let app = spawn_app().await;
    // An attempt a crash abandoned an hour ago, for a holder the gateway pays.
    let command = command(&app, "bank:ada").await;
    attempt_started_an_hour_ago(&app, &command, "outcome_unknown").await;
    let (payment_id, _) = the_payment(&app).await;
    let payments = payments(&app);
    let before = collect(&app, &payments, &command)
        .await
        .expect_err("unknown until resolved");
    assert!(matches!(before, SagaPaymentError::OutcomeUnknown(_)));

    let resolved = resolve(&app, money_not_moved(&app, payment_id))
        .await
        .expect("resolved");
    assert_eq!(
        resolved.status,
        proto::PaymentStatus::FailedRetryable as i32
    );
    assert_eq!(
        recorded_events(&app).await,
        0,
        "nothing moved, nothing announced"
    );
    let retry = collect(&app, &payments, &command)
        .await
        .expect("paid on the retry");

    assert_eq!(retry.payment_id, payment_id);
    assert_eq!(app.gateway.calls_for(&key(&command)), 1);
    let (status, attempts): (String, i32) =
        sqlx::query_as("SELECT status, gateway_attempts FROM payments")
            .fetch_one(&app.pool)
            .await
            .expect("row");
    assert_eq!((status.as_str(), attempts), ("succeeded", 2));
    assert_eq!(recorded_events(&app).await, 1);
}

/// Goal: a resolution that is malformed, names no payment of the company,
/// or names a payment that is not unknown is refused with the field or
/// reason at fault, and writes nothing.
#[tokio::test]
async fn bad_resolutions_are_refused_and_write_nothing() {
    let app = spawn_app().await;
    let (_, unknown_id) = timed_out_payment(&app).await;
    let unknown_id = unknown_id.to_string();
    let written = app.written().await;
    let audited = app.count("audit_log").await;

    let cases = [
        (
            resolve_request(&app, &unknown_id, proto::PaymentResolution::Unspecified, ""),
            "resolution",
        ),
        (
            resolve_request(
                &app,
                &unknown_id,
                proto::PaymentResolution::MoneyMoved,
                "  ",
            ),
            "gateway_reference",
        ),
        (
            resolve_request(
                &app,
                &unknown_id,
                proto::PaymentResolution::MoneyNotMoved,
                "gw-1",
            ),
            "gateway_reference",
        ),
        (
            resolve_request(
                &app,
                "not-a-uuid",
                proto::PaymentResolution::MoneyMoved,
                "gw-1",
            ),
            "payment_id",
        ),
    ];
    for (request, field) in cases {
        let status = resolve(&app, request).await.expect_err("refused");
        assert_eq!(bad_field(&status), field);
    }
    let missing = resolve(
        &app,
        resolve_request(
            &app,
            &Uuid::now_v7().to_string(),
            proto::PaymentResolution::MoneyMoved,
            "gw-1",
        ),
    )
    .await
    .expect_err("no such payment");
    assert_eq!(missing.code(), Code::NotFound);
    let mut other_company = resolve_request(
        &app,
        &unknown_id,
        proto::PaymentResolution::MoneyMoved,
        "gw-1",
    );
    other_company.company_id = Uuid::now_v7().to_string();
    let elsewhere = resolve(&app, other_company)
        .await
        .expect_err("another company's payment");
    assert_eq!(elsewhere.code(), Code::NotFound);

    assert_eq!(app.written().await, written);
    assert_eq!(app.count("audit_log").await, audited);
    assert_eq!(the_payment(&app).await.1, "outcome_unknown");
}
