//! Faults mid-saga: a service down past a step's deadline, and the
//! orchestrator killed with SIGKILL and restarted.

use std::time::Duration;

use qapmap_proto::ledger::v1::SystemAccount;
use qapmap_proto::saga::v1 as saga;
use rust_decimal::Decimal;

use crate::helpers::{SHORT_STEP_DEADLINE, System, date, number};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_service_down_past_the_deadline_makes_the_exercise_compensate_and_undo_everything() {
    // Goal: the ledger is down when the saga reaches its hold step; the step
    // misses its deadline, the saga compensates it (its command may land
    // later) and the reservation, and when the ledger returns every effect
    // is undone. Method: stop the ledger in-process, keep its database.
    let mut system = System::start_with_deadline(SHORT_STEP_DEADLINE).await;
    let company = system
        .set_up_company("bank:ada-1", "48000", date(2021, 1, 1))
        .await;
    let ledger_database = system.stop_ledger().await;

    let started = system.start_exercise(&company, "1000").await;
    let compensating = qapmap_testkit::eventually(Duration::from_secs(30), || async {
        let saga = system
            .sagas()
            .get_saga(saga::GetSagaRequest {
                company_id: system.company_id.to_string(),
                saga_id: started.id.clone(),
            })
            .await
            .expect("readable")
            .into_inner()
            .saga
            .expect("saga");
        saga.state == saga::SagaState::Compensating as i32
    })
    .await;
    assert!(
        compensating,
        "the hold step missed its deadline and compensation began"
    );
    system.resume_ledger(ledger_database).await;

    let finished = system.finished(&started.id).await;
    assert_eq!(
        finished.state,
        saga::SagaState::Compensated as i32,
        "{finished:#?}"
    );
    assert_eq!(finished.steps[1].last_error, "deadline exceeded");
    assert_eq!(
        number(&system.award_position(&company).await.reserved),
        Decimal::ZERO
    );
    // The late hold command may have landed before its release: either way
    // nothing stays held and nothing was issued.
    let (unissued, held) = system
        .system_shares(&company, SystemAccount::AuthorizedUnissued)
        .await;
    assert_eq!((unissued, held), (Decimal::from(10_000_000), Decimal::ZERO));
    assert!(system.payments(&company).await.is_empty());
    system.assert_share_invariant(&company).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_orchestrator_killed_mid_saga_resumes_and_completes_after_restart() {
    // Goal: SIGKILL the orchestrator while the payment (the pivot) is in
    // flight; a new process on the same database finishes the saga, and the
    // holder paid exactly once. The sandbox delays this holder's payments so
    // the kill lands mid-saga.
    let mut system = System::start_with_orchestrator_process().await;
    let company = system
        .set_up_company("sandbox:delay-ms:1500", "48000", date(2021, 1, 1))
        .await;
    let started = system.start_exercise(&company, "1000").await;
    let at_pivot = qapmap_testkit::eventually(Duration::from_secs(30), || async {
        let saga = system
            .sagas()
            .get_saga(saga::GetSagaRequest {
                company_id: system.company_id.to_string(),
                saga_id: started.id.clone(),
            })
            .await
            .expect("readable")
            .into_inner()
            .saga
            .expect("saga");
        saga.steps[2].status == saga::StepStatus::Running as i32
    })
    .await;
    assert!(at_pivot, "the saga reached the payment step");

    system.kill_and_restart_orchestrator().await;

    let finished = system.finished(&started.id).await;
    assert_eq!(
        finished.state,
        saga::SagaState::Completed as i32,
        "{finished:#?}"
    );
    assert_eq!(
        system.payments(&company).await.len(),
        1,
        "paid exactly once"
    );
    assert_eq!(system.holder_shares(&company).await.0, Decimal::from(1000));
    assert_eq!(
        number(&system.award_position(&company).await.exercised),
        Decimal::from(1000)
    );
    system.assert_share_invariant(&company).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_operator_aborts_a_saga_before_its_pivot_and_it_compensates() {
    // Goal: AbortSaga on a saga stuck before its pivot undoes its steps, and
    // ListSagas finds it by state. Method: the ledger is down, so the saga
    // waits at its hold step; abort it, then bring the ledger back.
    let mut system = System::start().await;
    let company = system
        .set_up_company("bank:ada-1", "48000", date(2021, 1, 1))
        .await;
    let ledger_database = system.stop_ledger().await;
    let started = system.start_exercise(&company, "1000").await;
    let waiting_at_hold = qapmap_testkit::eventually(Duration::from_secs(30), || async {
        let saga = get(&system, &started.id).await;
        saga.steps[1].status == saga::StepStatus::Running as i32
    })
    .await;
    assert!(waiting_at_hold, "the saga reached its hold step");

    let aborted = system
        .sagas()
        .abort_saga(saga::AbortSagaRequest {
            request_id: crate::helpers::request_id(),
            company_id: system.company_id.to_string(),
            saga_id: started.id.clone(),
            reason: "holder changed their mind".to_owned(),
        })
        .await
        .expect("abort accepted")
        .into_inner()
        .saga
        .expect("saga");
    assert_eq!(aborted.state, saga::SagaState::Compensating as i32);
    system.resume_ledger(ledger_database).await;

    let finished = system.finished(&started.id).await;
    assert_eq!(
        finished.state,
        saga::SagaState::Compensated as i32,
        "{finished:#?}"
    );
    assert!(finished.state_reason.contains("holder changed their mind"));
    assert_eq!(
        number(&system.award_position(&company).await.reserved),
        Decimal::ZERO
    );
    let (_, held) = system
        .system_shares(&company, SystemAccount::AuthorizedUnissued)
        .await;
    assert_eq!(held, Decimal::ZERO, "a late hold was released too");
    let listed = system
        .sagas()
        .list_sagas(saga::ListSagasRequest {
            company_id: system.company_id.to_string(),
            state: saga::SagaState::Compensated as i32,
            saga_type: saga::SagaType::OptionExercise as i32,
            page_size: 10,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(
        listed
            .sagas
            .iter()
            .map(|s| s.id.as_str())
            .collect::<Vec<_>>(),
        [started.id.as_str()]
    );

    let refused = system
        .sagas()
        .abort_saga(saga::AbortSagaRequest {
            request_id: crate::helpers::request_id(),
            company_id: system.company_id.to_string(),
            saga_id: started.id.clone(),
            reason: String::new(),
        })
        .await
        .expect_err("a finished saga cannot be aborted");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
}

async fn get(system: &System, saga_id: &str) -> saga::Saga {
    system
        .sagas()
        .get_saga(saga::GetSagaRequest {
            company_id: system.company_id.to_string(),
            saga_id: saga_id.to_owned(),
        })
        .await
        .expect("readable")
        .into_inner()
        .saga
        .expect("saga")
}
