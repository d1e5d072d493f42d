//! Employees exercising for themselves, across all four services: their own
//! award goes through and every service records them as the initiator; a
//! colleague's award is refused at the first step and nothing moves; their
//! sagas are invisible to other employees and to other companies.

use qapmap_proto::ledger::v1 as ledger;
use qapmap_proto::ledger::v1::ledger_service_client::LedgerServiceClient;
use qapmap_proto::ops::v1 as ops;
use qapmap_proto::ops::v1::audit_service_client::AuditServiceClient;
use qapmap_proto::saga::v1::{self as saga, SagaState, StepStatus};
use qapmap_runtime::auth::client::AuthenticatedChannel as Channel;
use qapmap_testkit::auth::{admin_token, employee_token};
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::helpers::{Company, System, date, dec, number, request_id};

async fn start_exercise_as(
    system: &System,
    token: &str,
    company: &Company,
    quantity: &str,
) -> saga::Saga {
    system
        .sagas_as(token)
        .start_exercise(saga::StartExerciseRequest {
            request_id: request_id(),
            company_id: system.company_id.to_string(),
            exercise: Some(saga::ExerciseInput {
                award_id: company.award_id.clone(),
                quantity: dec(quantity),
                exercise_date: None,
            }),
        })
        .await
        .expect("an employee may start an exercise")
        .into_inner()
        .saga
        .expect("saga")
}

/// (subject, method) of a company's audit records on one process.
async fn audit_trail(channel: Channel, company: Uuid) -> Vec<(String, String)> {
    let mut records = AuditServiceClient::new(channel)
        .list_audit_records(ops::ListAuditRecordsRequest {
            company_id: company.to_string(),
            page_size: 500,
            ..Default::default()
        })
        .await
        .expect("audit trail")
        .into_inner()
        .records;
    records.reverse();
    records
        .into_iter()
        .map(|record| (record.subject, record.method))
        .collect()
}

fn by(subject: &str, trail: &[(String, String)]) -> Vec<String> {
    trail
        .iter()
        .filter(|(who, _)| who == subject)
        .map(|(_, method)| method.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_employee_exercises_their_own_award_and_every_service_records_them() {
    let system = System::start().await;
    let company = system
        .set_up_company("bank:ada-1", "48000", date(2021, 1, 1))
        .await;
    let ada = Uuid::parse_str(&company.stakeholder_id).expect("stakeholder id");
    let as_ada = employee_token(system.company_id, ada);

    let started = start_exercise_as(&system, &as_ada, &company, "1000").await;
    let finished = system.finished(&started.id).await;
    assert_eq!(finished.state, SagaState::Completed as i32, "{finished:#?}");
    assert_eq!(
        system.holder_shares(&company).await,
        (Decimal::from(1000), Decimal::ZERO)
    );

    // She follows her saga, and sees her shares, with her own token.
    let hers = system
        .sagas_as(&as_ada)
        .get_saga(saga::GetSagaRequest {
            company_id: system.company_id.to_string(),
            saga_id: started.id.clone(),
        })
        .await
        .expect("her own saga")
        .into_inner()
        .saga
        .expect("saga");
    assert_eq!(hers.state, SagaState::Completed as i32);
    let ledger_service = system.ledger.as_ref().expect("the ledger is running");
    let balance = LedgerServiceClient::new(ledger_service.channel_with_token(&as_ada))
        .get_balance(ledger::GetBalanceRequest {
            company_id: system.company_id.to_string(),
            account: Some(ledger::AccountRef {
                owner: Some(ledger::account_ref::Owner::StakeholderId(
                    company.stakeholder_id.clone(),
                )),
                unit: Some(ledger::account_ref::Unit::ShareClassId(
                    company.class_id.clone(),
                )),
            }),
            as_of: None,
        })
        .await
        .expect("her balance")
        .into_inner();
    assert_eq!(number(&balance.balance), Decimal::from(1000));

    // Every service records her as the one who acted: the start in the
    // orchestrator, each step in the service that applied it.
    let subject = format!("employee-{ada}");
    let admin = admin_token(system.company_id);
    let orchestrator_trail = audit_trail(
        system.orchestrator.channel_with_token(&admin),
        system.company_id,
    )
    .await;
    assert_eq!(
        by(&subject, &orchestrator_trail),
        ["/qapmap.saga.v1.SagaService/StartExercise"]
    );
    let ledger_trail =
        audit_trail(ledger_service.channel_with_token(&admin), system.company_id).await;
    assert_eq!(
        by(&subject, &ledger_trail),
        ["saga:hold_unissued_shares", "saga:post_exercise"]
    );
    let equity_trail =
        audit_trail(system.equity.channel_with_token(&admin), system.company_id).await;
    assert_eq!(
        by(&subject, &equity_trail),
        ["saga:reserve_options", "saga:confirm_exercise"]
    );

    // Another employee of the company, and another company's admin asking
    // under their own company, do not find it.
    let bob = employee_token(system.company_id, Uuid::new_v4());
    let status = system
        .sagas_as(&bob)
        .get_saga(saga::GetSagaRequest {
            company_id: system.company_id.to_string(),
            saga_id: started.id.clone(),
        })
        .await
        .expect_err("not his saga");
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
    let listed = system
        .sagas_as(&bob)
        .list_sagas(saga::ListSagasRequest {
            company_id: system.company_id.to_string(),
            page_size: 50,
            ..Default::default()
        })
        .await
        .expect("his (empty) list")
        .into_inner()
        .sagas;
    assert!(listed.is_empty(), "{listed:#?}");
    let other_company = Uuid::new_v4();
    let status = system
        .sagas_as(&admin_token(other_company))
        .get_saga(saga::GetSagaRequest {
            company_id: other_company.to_string(),
            saga_id: started.id.clone(),
        })
        .await
        .expect_err("another company's saga");
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_employee_exercising_a_colleagues_award_is_refused_and_nothing_moves() {
    let system = System::start().await;
    let company = system
        .set_up_company("bank:ada-1", "48000", date(2021, 1, 1))
        .await;
    let bob = employee_token(system.company_id, Uuid::new_v4());

    // Bob names Ada's award: the policy lets employees start exercises, the
    // reservation step sees the award is not his.
    let started = start_exercise_as(&system, &bob, &company, "1000").await;
    let finished = system.finished(&started.id).await;
    assert_eq!(
        finished.state,
        SagaState::Compensated as i32,
        "{finished:#?}"
    );
    assert_eq!(
        finished.steps[0].status,
        StepStatus::Failed as i32,
        "refused at the reservation: {finished:#?}"
    );

    let position = system.award_position(&company).await;
    assert_eq!(number(&position.exercised), Decimal::ZERO);
    assert_eq!(number(&position.reserved), Decimal::ZERO);
    assert_eq!(
        system.holder_shares(&company).await,
        (Decimal::ZERO, Decimal::ZERO),
        "no shares issued"
    );
    assert!(
        system.payments(&company).await.is_empty(),
        "nothing collected"
    );
    system.assert_share_invariant(&company).await;
    system.assert_pool_invariant(&company).await;
}
