//! Option exercise: the happy path and a failure at each step before the pivot.

use qapmap_proto::ledger::v1::SystemAccount;
use qapmap_proto::saga::v1::{SagaState, StepStatus};
use qapmap_proto::shareholder::v1::{PaymentDirection, PaymentStatus};
use rust_decimal::Decimal;

use crate::helpers::{System, date, number};

fn statuses(saga: &qapmap_proto::saga::v1::Saga) -> Vec<StepStatus> {
    saga.steps
        .iter()
        .map(|step| StepStatus::try_from(step.status).expect("status"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_happy_exercise_turns_options_into_shares_and_collects_the_price_once() {
    // Goal: the whole exercise flow, checked in every service a user would look at.
    let system = System::start().await;
    let company = system
        .set_up_company("bank:ada-1", "48000", date(2021, 1, 1))
        .await;
    let cash_before = system.company_cash().await;

    let started = system.start_exercise(&company, "1000").await;
    let saga = system.finished(&started.id).await;

    assert_eq!(saga.state, SagaState::Completed as i32, "{saga:#?}");
    assert!(
        statuses(&saga)
            .iter()
            .all(|status| *status == StepStatus::Succeeded)
    );
    let position = system.award_position(&company).await;
    assert_eq!(number(&position.exercised), Decimal::from(1000));
    assert_eq!(number(&position.reserved), Decimal::ZERO);
    assert_eq!(
        system.holder_shares(&company).await,
        (Decimal::from(1000), Decimal::ZERO)
    );
    assert_eq!(
        system.company_cash().await - cash_before,
        Decimal::from(1500)
    );
    let payments = system.payments(&company).await;
    assert_eq!(payments.len(), 1, "collected once: {payments:#?}");
    assert_eq!(payments[0].direction, PaymentDirection::Collection as i32);
    assert_eq!(payments[0].status, PaymentStatus::Succeeded as i32);
    assert_eq!(
        number(&payments[0].amount.as_ref().expect("amount").amount),
        Decimal::from(1500)
    );
    let (_, unissued_held) = system
        .system_shares(&company, SystemAccount::AuthorizedUnissued)
        .await;
    assert_eq!(unissued_held, Decimal::ZERO, "the hold was consumed");
    system.assert_share_invariant(&company).await;
    system.assert_pool_invariant(&company).await;

    // The cap table reflects the shares at once, and the options once the
    // equity events have reached the ledger.
    let converged = qapmap_testkit::eventually(std::time::Duration::from_secs(20), || async {
        let table = system.cap_table().await;
        let totals = table.totals.unwrap_or_default();
        number(&totals.outstanding_shares) == Decimal::from(1000)
            && number(&totals.options_outstanding) == Decimal::from(47_000)
    })
    .await;
    assert!(converged, "cap table: {:#?}", system.cap_table().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_declined_payment_compensates_the_hold_and_the_reservation() {
    let system = System::start().await;
    let company = system
        .set_up_company("sandbox:decline", "48000", date(2021, 1, 1))
        .await;

    let started = system.start_exercise(&company, "1000").await;
    let saga = system.finished(&started.id).await;

    assert_eq!(saga.state, SagaState::Compensated as i32, "{saga:#?}");
    assert_eq!(
        statuses(&saga),
        [
            StepStatus::Compensated,
            StepStatus::Compensated,
            StepStatus::Failed,
            StepStatus::Skipped,
            StepStatus::Skipped
        ]
    );
    let position = system.award_position(&company).await;
    assert_eq!(number(&position.exercised), Decimal::ZERO);
    assert_eq!(
        number(&position.reserved),
        Decimal::ZERO,
        "reservation released"
    );
    assert_eq!(
        system.holder_shares(&company).await,
        (Decimal::ZERO, Decimal::ZERO)
    );
    let (_, unissued_held) = system
        .system_shares(&company, SystemAccount::AuthorizedUnissued)
        .await;
    assert_eq!(unissued_held, Decimal::ZERO, "hold released");
    let payments = system.payments(&company).await;
    assert_eq!(payments.len(), 1);
    assert_eq!(payments[0].status, PaymentStatus::Declined as i32);
    system.assert_share_invariant(&company).await;
    system.assert_pool_invariant(&company).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exercising_unvested_options_compensates_at_the_first_step_and_changes_nothing() {
    let system = System::start().await;
    // Vesting starts today: nothing is vested before the one-year cliff.
    let today = qapmap_runtime::date::to_proto(qapmap_runtime::date::today());
    let company = system
        .set_up_company("bank:ada-1", "48000", Some(today))
        .await;

    let started = system.start_exercise(&company, "1000").await;
    let saga = system.finished(&started.id).await;

    assert_eq!(saga.state, SagaState::Compensated as i32, "{saga:#?}");
    assert_eq!(statuses(&saga)[0], StepStatus::Failed);
    assert!(
        saga.steps[1..]
            .iter()
            .all(|step| step.status == StepStatus::Skipped as i32)
    );
    assert!(
        !saga.steps[0].last_error.is_empty(),
        "the reason is recorded"
    );
    assert_eq!(
        number(&system.award_position(&company).await.reserved),
        Decimal::ZERO
    );
    assert!(
        system.payments(&company).await.is_empty(),
        "no payment attempted"
    );
    system.assert_share_invariant(&company).await;
    system.assert_pool_invariant(&company).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_request_id_returns_the_same_saga() {
    let system = System::start().await;
    let company = system
        .set_up_company("bank:ada-1", "48000", date(2021, 1, 1))
        .await;
    let request = qapmap_proto::saga::v1::StartExerciseRequest {
        request_id: crate::helpers::request_id(),
        company_id: system.company_id.to_string(),
        exercise: Some(qapmap_proto::saga::v1::ExerciseInput {
            award_id: company.award_id.clone(),
            quantity: crate::helpers::dec("10"),
            exercise_date: None,
        }),
    };
    let first = system
        .sagas()
        .start_exercise(request.clone())
        .await
        .expect("started")
        .into_inner()
        .saga
        .expect("saga");
    let again = system
        .sagas()
        .start_exercise(request.clone())
        .await
        .expect("repeat")
        .into_inner()
        .saga
        .expect("saga");
    assert_eq!(first.id, again.id);

    let mut different = request;
    different.exercise.as_mut().expect("input").quantity = crate::helpers::dec("11");
    let refused = system
        .sagas()
        .start_exercise(different)
        .await
        .expect_err("a reused id");
    assert_eq!(refused.code(), tonic::Code::AlreadyExists);
    system.finished(&first.id).await;
    assert_eq!(
        system.payments(&company).await.len(),
        1,
        "one saga, one payment"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn too_few_unissued_shares_fail_the_hold_and_release_the_reservation() {
    // Goal: the ledger refuses the hold (issuing would pass authorized); the
    // reservation made before it is released. Method: shrink the ledger's
    // authorized count below the exercise.
    let system = System::start().await;
    let company = system
        .set_up_company("bank:ada-1", "48000", date(2021, 1, 1))
        .await;
    system
        .ledger()
        .adjust_authorized_shares(qapmap_proto::ledger::v1::AdjustAuthorizedSharesRequest {
            request_id: crate::helpers::request_id(),
            company_id: system.company_id.to_string(),
            share_class_id: company.class_id.clone(),
            new_authorized_shares: crate::helpers::dec("500"),
            effective_date: date(2021, 1, 1),
        })
        .await
        .expect("authorized shares lowered");

    let started = system.start_exercise(&company, "1000").await;
    let saga = system.finished(&started.id).await;

    assert_eq!(saga.state, SagaState::Compensated as i32, "{saga:#?}");
    assert_eq!(
        statuses(&saga)[..2],
        [StepStatus::Compensated, StepStatus::Failed]
    );
    assert_eq!(
        number(&system.award_position(&company).await.reserved),
        Decimal::ZERO
    );
    let (unissued, held) = system
        .system_shares(&company, SystemAccount::AuthorizedUnissued)
        .await;
    assert_eq!((unissued, held), (Decimal::from(500), Decimal::ZERO));
    assert!(system.payments(&company).await.is_empty());
}
