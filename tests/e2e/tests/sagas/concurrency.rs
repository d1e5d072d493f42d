//! Many exercises racing for one grant.

use futures::future::join_all;
use qapmap_proto::saga::v1 as saga;
use qapmap_proto::shareholder::v1::PaymentStatus;
use rust_decimal::Decimal;

use crate::helpers::{System, date, number};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_concurrent_exercises_never_exceed_what_is_vested() {
    // Goal: 100 exercises of 1,000 each against 48,000 vested options (100,000
    // asked): completed ones sum to at most the vested amount, the others
    // compensate, and every invariant holds afterwards.
    let system = System::start().await;
    let company = system
        .set_up_company("bank:ada-1", "48000", date(2021, 1, 1))
        .await;
    let vested = number(&system.award_position(&company).await.vested);
    assert_eq!(vested, Decimal::from(48_000), "fully vested by today");

    let started = join_all((0..100).map(|_| system.start_exercise(&company, "1000"))).await;
    let finished = join_all(started.iter().map(|saga| system.finished(&saga.id))).await;

    let completed = finished
        .iter()
        .filter(|s| s.state == saga::SagaState::Completed as i32)
        .count();
    let compensated = finished
        .iter()
        .filter(|s| s.state == saga::SagaState::Compensated as i32)
        .count();
    assert_eq!(
        completed + compensated,
        100,
        "every saga ends completed or compensated"
    );
    let exercised_total = Decimal::from(completed) * Decimal::from(1000);
    assert!(
        exercised_total <= vested,
        "{completed} completed exceed the vested amount"
    );
    assert!(completed > 0, "some exercises succeed");

    let position = system.award_position(&company).await;
    assert_eq!(
        number(&position.exercised),
        exercised_total,
        "shares issued equal options consumed"
    );
    assert_eq!(number(&position.reserved), Decimal::ZERO);
    assert_eq!(
        system.holder_shares(&company).await,
        (exercised_total, Decimal::ZERO)
    );
    let collected = system
        .payments(&company)
        .await
        .into_iter()
        .filter(|payment| payment.status == PaymentStatus::Succeeded as i32)
        .count();
    assert_eq!(collected, completed, "one payment per completed exercise");
    system.assert_share_invariant(&company).await;
    system.assert_pool_invariant(&company).await;
}
