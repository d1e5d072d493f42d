//! Share buyback: the happy path, and a holder without enough shares.

use qapmap_proto::equity::v1 as equity;
use qapmap_proto::ledger::v1::SystemAccount;
use qapmap_proto::saga::v1 as saga;
use qapmap_proto::shareholder::v1::{PaymentDirection, PaymentStatus};
use rust_decimal::Decimal;

use crate::helpers::{Company, System, date, dec, number, request_id, usd};

async fn create_program(system: &System, company: &Company) -> String {
    create_program_with_max_price(system, company, "5").await
}

async fn create_program_with_max_price(
    system: &System,
    company: &Company,
    max_price: &str,
) -> String {
    system
        .equity()
        .create_repurchase_program(equity::CreateRepurchaseProgramRequest {
            request_id: request_id(),
            company_id: system.company_id.to_string(),
            share_class_id: company.class_id.clone(),
            max_shares: dec("10000"),
            max_price_per_share: usd(max_price),
            start_date: date(2025, 1, 1),
            end_date: date(2030, 12, 31),
        })
        .await
        .expect("program created")
        .into_inner()
        .program
        .expect("program")
        .id
}

async fn start_buyback(
    system: &System,
    company: &Company,
    program_id: &str,
    quantity: &str,
) -> saga::Saga {
    system
        .sagas()
        .start_buyback(saga::StartBuybackRequest {
            request_id: request_id(),
            company_id: system.company_id.to_string(),
            buyback: Some(saga::BuybackInput {
                program_id: program_id.to_owned(),
                stakeholder_id: company.stakeholder_id.clone(),
                quantity: dec(quantity),
                price_per_share: usd("2"),
                repurchase_date: None,
            }),
        })
        .await
        .expect("buyback started")
        .into_inner()
        .saga
        .expect("saga")
}

async fn program_reserved(system: &System, program_id: &str) -> (Decimal, Decimal) {
    let program = system
        .equity()
        .get_repurchase_program(equity::GetRepurchaseProgramRequest {
            company_id: system.company_id.to_string(),
            program_id: program_id.to_owned(),
        })
        .await
        .expect("program readable")
        .into_inner()
        .program
        .expect("program");
    (
        number(&program.reserved_shares),
        number(&program.repurchased_shares),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_buyback_moves_shares_to_treasury_and_pays_the_holder_once() {
    let system = System::start().await;
    let company = system
        .set_up_company("bank:ada-1", "48000", date(2021, 1, 1))
        .await;
    let exercise = system.start_exercise(&company, "1000").await;
    assert_eq!(
        system.finished(&exercise.id).await.state,
        saga::SagaState::Completed as i32
    );
    let program_id = create_program(&system, &company).await;
    let cash_before = system.company_cash().await;

    let started = start_buyback(&system, &company, &program_id, "400").await;
    let buyback = system.finished(&started.id).await;

    assert_eq!(
        buyback.state,
        saga::SagaState::Completed as i32,
        "{buyback:#?}"
    );
    assert_eq!(
        system.holder_shares(&company).await,
        (Decimal::from(600), Decimal::ZERO)
    );
    assert_eq!(
        system
            .system_shares(&company, SystemAccount::Treasury)
            .await
            .0,
        Decimal::from(400)
    );
    assert_eq!(
        cash_before - system.company_cash().await,
        Decimal::from(800)
    );
    let disbursements: Vec<_> = system
        .payments(&company)
        .await
        .into_iter()
        .filter(|payment| payment.direction == PaymentDirection::Disbursement as i32)
        .collect();
    assert_eq!(disbursements.len(), 1, "paid once");
    assert_eq!(disbursements[0].status, PaymentStatus::Succeeded as i32);
    assert_eq!(
        program_reserved(&system, &program_id).await,
        (Decimal::ZERO, Decimal::from(400))
    );
    system.assert_share_invariant(&company).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_holder_without_enough_shares_compensates_the_program_reservation() {
    let system = System::start().await;
    let company = system
        .set_up_company("bank:ada-1", "48000", date(2021, 1, 1))
        .await;
    let program_id = create_program(&system, &company).await;

    let started = start_buyback(&system, &company, &program_id, "400").await;
    let buyback = system.finished(&started.id).await;

    assert_eq!(
        buyback.state,
        saga::SagaState::Compensated as i32,
        "{buyback:#?}"
    );
    assert_eq!(
        buyback.steps[0].status,
        saga::StepStatus::Compensated as i32
    );
    assert_eq!(buyback.steps[1].status, saga::StepStatus::Failed as i32);
    assert_eq!(
        program_reserved(&system, &program_id).await,
        (Decimal::ZERO, Decimal::ZERO)
    );
    assert!(
        system.payments(&company).await.is_empty(),
        "nobody was paid"
    );
    system.assert_share_invariant(&company).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_price_above_the_programs_maximum_is_refused_at_the_first_step() {
    let system = System::start().await;
    let company = system
        .set_up_company("bank:ada-1", "48000", date(2021, 1, 1))
        .await;
    system.issue_shares(&company, "1000").await;
    let program_id = create_program_with_max_price(&system, &company, "1").await;

    let started = start_buyback(&system, &company, &program_id, "400").await;
    let buyback = system.finished(&started.id).await;

    assert_eq!(
        buyback.state,
        saga::SagaState::Compensated as i32,
        "{buyback:#?}"
    );
    assert_eq!(buyback.steps[0].status, saga::StepStatus::Failed as i32);
    assert!(
        buyback.steps[0].last_error.contains("price"),
        "{:?}",
        buyback.steps[0].last_error
    );
    assert_eq!(
        system.holder_shares(&company).await,
        (Decimal::from(1000), Decimal::ZERO)
    );
    assert_eq!(
        program_reserved(&system, &program_id).await,
        (Decimal::ZERO, Decimal::ZERO)
    );
    assert!(system.payments(&company).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_declined_disbursement_releases_the_hold_and_the_program_capacity() {
    let system = System::start().await;
    let company = system
        .set_up_company("sandbox:decline", "48000", date(2021, 1, 1))
        .await;
    system.issue_shares(&company, "1000").await;
    let program_id = create_program(&system, &company).await;
    let cash_before = system.company_cash().await;

    let started = start_buyback(&system, &company, &program_id, "400").await;
    let buyback = system.finished(&started.id).await;

    assert_eq!(
        buyback.state,
        saga::SagaState::Compensated as i32,
        "{buyback:#?}"
    );
    let statuses: Vec<i32> = buyback.steps.iter().map(|step| step.status).collect();
    assert_eq!(
        statuses,
        [
            saga::StepStatus::Compensated as i32,
            saga::StepStatus::Compensated as i32,
            saga::StepStatus::Failed as i32,
            saga::StepStatus::Skipped as i32,
            saga::StepStatus::Skipped as i32,
        ]
    );
    assert_eq!(
        system.holder_shares(&company).await,
        (Decimal::from(1000), Decimal::ZERO),
        "hold released"
    );
    assert_eq!(
        system
            .system_shares(&company, SystemAccount::Treasury)
            .await
            .0,
        Decimal::ZERO
    );
    assert_eq!(system.company_cash().await, cash_before, "no cash moved");
    assert_eq!(
        program_reserved(&system, &program_id).await,
        (Decimal::ZERO, Decimal::ZERO)
    );
    let payments = system.payments(&company).await;
    assert_eq!(payments.len(), 1);
    assert_eq!(payments[0].status, PaymentStatus::Declined as i32);
    system.assert_share_invariant(&company).await;
}
