//! The saga pivot steps, called directly as the NATS command handler does:
//! keyed by (saga id, step), so a redelivered command never pays twice.

use std::time::Duration;

use qapmap_runtime::decimal::{Currency, Money};
use qapmap_runtime::tenancy;
use qapmap_shareholder::payment::{Direction, PaymentAmount, Payments};
use qapmap_shareholder::saga_operations::{
    PaymentReceipt, SagaPayment, SagaPaymentError, collect_payment_for_saga,
    disburse_payment_for_saga,
};
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::helpers::{TestApp, spawn_app};

pub(crate) fn payments(app: &TestApp) -> Payments {
    Payments::new(
        app.pool.clone(),
        app.gateway.clone(),
        app.service.namespace.subjects(),
    )
}

pub(crate) async fn command(app: &TestApp, instruction: &str) -> SagaPayment {
    let holder = app.stakeholder_paying_with(instruction).await;
    let money = Money {
        amount: Decimal::new(12_345, 2),
        currency: Currency::parse("currency", "USD").expect("USD"),
    };
    SagaPayment {
        company_id: app.company_id,
        saga_id: Uuid::now_v7(),
        step: 3,
        stakeholder_id: holder.id.parse().expect("uuid"),
        amount: PaymentAmount::new(money).expect("positive"),
        audit: None,
    }
}

/// A pivot as the command handler runs it: in a transaction confined to the
/// company, committed after (with nothing else in it here).
async fn pivot(
    app: &TestApp,
    payments: &Payments,
    command: &SagaPayment,
    direction: Direction,
) -> Result<PaymentReceipt, SagaPaymentError> {
    let mut transaction = tenancy::begin(&app.pool, command.company_id)
        .await
        .expect("begin");
    let result = match direction {
        Direction::Collection => {
            collect_payment_for_saga(payments, command, &mut transaction).await
        }
        Direction::Disbursement => {
            disburse_payment_for_saga(payments, command, &mut transaction).await
        }
    };
    transaction.commit().await.expect("commit");
    result
}

pub(crate) async fn collect(
    app: &TestApp,
    payments: &Payments,
    command: &SagaPayment,
) -> Result<PaymentReceipt, SagaPaymentError> {
    pivot(app, payments, command, Direction::Collection).await
}

async fn disburse(
    app: &TestApp,
    payments: &Payments,
    command: &SagaPayment,
) -> Result<PaymentReceipt, SagaPaymentError> {
    pivot(app, payments, command, Direction::Disbursement).await
}

/// What a process left behind an hour ago for `command`'s collection: an
/// attempt in `status` (`pending` when it died mid-call).
pub(crate) async fn attempt_started_an_hour_ago(
    app: &TestApp,
    command: &SagaPayment,
    status: &str,
) {
    sqlx::query(
        "INSERT INTO payments (id, company_id, idempotency_key, stakeholder_id, direction, amount,
             currency, status, gateway_attempts, attempt_started_at)
         VALUES ($1, $2, $3, $4, 'collection', 123.45, 'USD', $5, 1,
                 now() - interval '1 hour')",
    )
    .bind(Uuid::now_v7())
    .bind(command.company_id)
    .bind(key(command))
    .bind(command.stakeholder_id)
    .bind(status)
    .execute(&app.pool)
    .await
    .expect("an earlier attempt");
}

pub(crate) fn key(command: &SagaPayment) -> String {
    format!("saga:{}:{}", command.saga_id, command.step)
}

#[tokio::test]
async fn a_redelivered_collect_command_never_pays_twice() {
    let app = spawn_app().await;
    let payments = payments(&app);
    let command = command(&app, "bank:ada").await;

    let first = collect(&app, &payments, &command).await.expect("paid");
    let redelivered = collect(&app, &payments, &command)
        .await
        .expect("same result");

    assert_eq!(first, redelivered);
    assert_eq!(app.gateway.calls_for(&key(&command)), 1);
    assert_eq!(app.count("payments").await, 1);
}

#[tokio::test]
async fn a_declined_disbursement_is_payment_declined_and_stays_declined() {
    let app = spawn_app().await;
    let payments = payments(&app);
    let command = command(&app, "sandbox:decline").await;

    let first = disburse(&app, &payments, &command)
        .await
        .expect_err("declined");
    let redelivered = disburse(&app, &payments, &command)
        .await
        .expect_err("declined");

    assert_eq!(first.reason_code(), "payment_declined");
    assert!(!first.is_retriable());
    assert!(matches!(redelivered, SagaPaymentError::Declined { .. }));
    assert_eq!(app.gateway.calls_for(&key(&command)), 1);
}

#[tokio::test]
async fn a_transient_failure_is_retriable_and_the_redelivery_pays() {
    let app = spawn_app().await;
    let payments = payments(&app);
    let command = command(&app, "sandbox:fail-transient:1").await;

    let failure = collect(&app, &payments, &command)
        .await
        .expect_err("transient");
    let retried = collect(&app, &payments, &command).await;

    assert!(failure.is_retriable());
    assert_eq!(failure.reason_code(), "payment_gateway_unavailable");
    assert!(retried.is_ok(), "{retried:?}");
    assert_eq!(app.gateway.calls_for(&key(&command)), 2);
    assert_eq!(app.count("payments").await, 1);
}

#[tokio::test]
async fn a_gateway_timeout_leaves_the_outcome_unknown_and_it_is_never_retried() {
    let app = spawn_app().await;
    let payments = payments(&app).with_gateway_timeout(Duration::from_millis(100));
    let command = command(&app, "sandbox:delay-ms:500").await;

    let timed_out = collect(&app, &payments, &command)
        .await
        .expect_err("timeout");
    let redelivered = collect(&app, &payments, &command)
        .await
        .expect_err("still unknown");

    assert_eq!(timed_out.reason_code(), "payment_outcome_unknown");
    assert!(!timed_out.is_retriable());
    assert!(matches!(redelivered, SagaPaymentError::OutcomeUnknown(_)));
    assert_eq!(app.gateway.calls_for(&key(&command)), 1);
}

#[tokio::test]
async fn an_attempt_abandoned_by_a_crash_is_detected_and_not_paid_again() {
    // Method: write what a process leaves behind when it dies between
    // recording the attempt and recording the outcome.
    let app = spawn_app().await;
    let payments = payments(&app).with_gateway_timeout(Duration::from_millis(100));
    let command = command(&app, "bank:ada").await;
    attempt_started_an_hour_ago(&app, &command, "pending").await;

    let error = collect(&app, &payments, &command)
        .await
        .expect_err("unknown");

    assert_eq!(error.reason_code(), "payment_outcome_unknown");
    assert_eq!(app.gateway.total_calls(), 0);
    let status: String = sqlx::query_scalar("SELECT status FROM payments")
        .fetch_one(&app.pool)
        .await
        .expect("row");
    assert_eq!(status, "outcome_unknown");
}

#[tokio::test]
async fn an_outcome_rolled_back_with_its_command_is_never_paid_again() {
    // The outcome rides on the command's transaction: when that transaction
    // is lost after the gateway approved (a crash before its commit), the
    // attempt is left as a crash mid-call leaves it.
    let app = spawn_app().await;
    let payments = payments(&app).with_gateway_timeout(Duration::from_millis(100));
    let command = command(&app, "bank:ada").await;
    let mut transaction = tenancy::begin(&app.pool, command.company_id)
        .await
        .expect("begin");
    collect_payment_for_saga(&payments, &command, &mut transaction)
        .await
        .expect("approved");
    drop(transaction);

    let status: String = sqlx::query_scalar("SELECT status FROM payments")
        .fetch_one(&app.pool)
        .await
        .expect("row");
    assert_eq!(
        status, "pending",
        "the claim committed, the outcome did not"
    );
    // Once the attempt is past the gateway timeout, a redelivery finds it
    // abandoned.
    sqlx::query("UPDATE payments SET attempt_started_at = now() - interval '1 hour'")
        .execute(&app.pool)
        .await
        .expect("age the attempt");
    let redelivered = collect(&app, &payments, &command)
        .await
        .expect_err("unknown");

    assert_eq!(redelivered.reason_code(), "payment_outcome_unknown");
    assert_eq!(app.gateway.calls_for(&key(&command)), 1);
    let events: i64 =
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE subject LIKE '%.payment_recorded'")
            .fetch_one(&app.pool)
            .await
            .expect("outbox");
    assert_eq!(events, 0, "no outcome was announced");
}
