//! Two orchestrator replicas at once.

use futures::future::join_all;
use qapmap_proto::saga::v1 as saga;
use qapmap_proto::saga::v1::saga_service_client::SagaServiceClient;
use qapmap_proto::shareholder::v1::PaymentStatus;
use rust_decimal::Decimal;

use crate::helpers::{System, date, dec, number, request_id};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_orchestrators_run_sagas_without_executing_a_step_twice() {
    // Goal: sagas started on either of two orchestrators on one database
    // all finish, no step's effect happens twice (one payment per completed
    // saga, shares issued equal options exercised), and the invariants hold.
    let system = System::start().await;
    let second = system.start_second_orchestrator().await;
    let company = system
        .set_up_company("bank:ada-1", "48000", date(2021, 1, 1))
        .await;
    let clients = [system.sagas(), SagaServiceClient::new(second.channel())];

    let starts = (0..40).map(|index| {
        let mut client = clients[index % 2].clone();
        let request = saga::StartExerciseRequest {
            request_id: request_id(),
            company_id: system.company_id.to_string(),
            exercise: Some(saga::ExerciseInput {
                award_id: company.award_id.clone(),
                quantity: dec("100"),
                exercise_date: None,
            }),
        };
        async move {
            client
                .start_exercise(request)
                .await
                .expect("started")
                .into_inner()
                .saga
                .expect("saga")
        }
    });
    let started = join_all(starts).await;
    let finished = join_all(started.iter().map(|saga| system.finished(&saga.id))).await;

    // "Each step ran once" is judged by its effects: a step re-sent after a
    // missed deadline (a loaded machine) is still applied once.
    let completed = finished
        .iter()
        .filter(|saga| saga.state == saga::SagaState::Completed as i32)
        .count();
    let compensated = finished
        .iter()
        .filter(|saga| saga.state == saga::SagaState::Compensated as i32)
        .count();
    assert_eq!(
        completed + compensated,
        40,
        "every saga finished: {finished:#?}"
    );
    assert!(completed > 0, "sagas complete on two orchestrators");
    let collected = system
        .payments(&company)
        .await
        .into_iter()
        .filter(|payment| payment.status == PaymentStatus::Succeeded as i32)
        .count();
    assert_eq!(collected, completed, "one payment per completed saga");
    let issued = Decimal::from(completed) * Decimal::from(100);
    assert_eq!(
        number(&system.award_position(&company).await.exercised),
        issued
    );
    assert_eq!(
        number(&system.award_position(&company).await.reserved),
        Decimal::ZERO
    );
    assert_eq!(
        system.holder_shares(&company).await,
        (issued, Decimal::ZERO)
    );
    system.assert_share_invariant(&company).await;
    system.assert_pool_invariant(&company).await;
}
