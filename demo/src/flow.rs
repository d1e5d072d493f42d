//! The demo's story: set up a company, vest, check who may see what,
//! exercise, buy back.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use qapmap_proto::common::v1::{Date, Decimal, Money};
use qapmap_proto::equity::v1 as equity;
use qapmap_proto::equity::v1::equity_service_client::EquityServiceClient;
use qapmap_proto::ledger::v1 as ledger;
use qapmap_proto::ledger::v1::ledger_service_client::LedgerServiceClient;
use qapmap_proto::saga::v1 as saga;
use qapmap_proto::saga::v1::saga_service_client::SagaServiceClient;
use qapmap_proto::shareholder::v1 as shareholder;
use qapmap_proto::shareholder::v1::shareholder_service_client::ShareholderServiceClient;
use qapmap_runtime::auth::client::{AuthenticatedChannel, authenticated};
use qapmap_runtime::auth::signing::TokenSigner;

use crate::Endpoints;
use crate::keys;
use crate::print::{self, value};

fn dec(text: &str) -> Option<Decimal> {
    Some(Decimal {
        value: text.to_owned(),
    })
}

fn usd(amount: &str) -> Option<Money> {
    Some(Money {
        amount: dec(amount),
        currency: "USD".to_owned(),
    })
}

fn date(year: i32, month: i32, day: i32) -> Option<Date> {
    Some(Date { year, month, day })
}

/// A fresh id: every run of the demo is a new company.
fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A request id unique to this run and step.
fn request_id(step: &str) -> String {
    format!("demo-{step}-{}", new_id())
}

/// The subject of the demo's admin token.
const ADMIN_SUBJECT: &str = "demo-admin";

struct Clients {
    equity: EquityServiceClient<AuthenticatedChannel>,
    shareholder: ShareholderServiceClient<AuthenticatedChannel>,
    ledger: LedgerServiceClient<AuthenticatedChannel>,
    sagas: SagaServiceClient<AuthenticatedChannel>,
}

impl Clients {
    /// Clients whose every call carries `token`.
    fn new(endpoints: &Endpoints, token: &str) -> Self {
        Self {
            equity: EquityServiceClient::new(authenticated(endpoints.equity.clone(), token)),
            shareholder: ShareholderServiceClient::new(authenticated(
                endpoints.shareholder.clone(),
                token,
            )),
            ledger: LedgerServiceClient::new(authenticated(endpoints.ledger.clone(), token)),
            sagas: SagaServiceClient::new(authenticated(endpoints.orchestrator.clone(), token)),
        }
    }
}

pub(crate) async fn run(endpoints: &Endpoints, signer: &TokenSigner) -> anyhow::Result<()> {
    // Company ids are chosen by the caller, so the admin token can name the
    // one company the demo is about to create, as a company's own admin's
    // token would: nothing else is open to it.
    let company_id = new_id();
    let admin_token = keys::sign(
        signer,
        keys::claims(ADMIN_SUBJECT, vec![company_id.clone()], &["admin"]),
    );
    let mut clients = Clients::new(endpoints, &admin_token);
    println!("\n-- 2. a company ({company_id}) --");
    println!("calling as {ADMIN_SUBJECT}: role admin of this company only, token valid 1 h");
    let mut labels = HashMap::new();
    let founder = stakeholder(
        &mut clients,
        &company_id,
        "Grace Founder",
        shareholder::StakeholderRelationship::Founder,
    )
    .await?;
    labels.insert(founder.clone(), "Grace (founder)".to_owned());
    let employee = stakeholder(
        &mut clients,
        &company_id,
        "Ada Employee",
        shareholder::StakeholderRelationship::Employee,
    )
    .await?;
    labels.insert(employee.clone(), "Ada (employee)".to_owned());
    let class_id = share_class(&mut clients, &company_id).await?;
    issue_founder_shares(&mut clients, &company_id, &class_id, &founder).await?;
    let plan_id = plan(&mut clients, &company_id, &class_id).await?;
    let award_id = grant(&mut clients, &company_id, &plan_id, &employee).await?;
    println!(
        "common class {class_id}: 10,000,000 authorized; founder holds 4,000,000; plan pool 1,000,000"
    );
    println!(
        "grant {award_id}: 48,000 NSO at $1.50, vesting from 2024-01-01 over 4 years, 1-year cliff"
    );

    println!("\n-- 3. vesting --");
    for (year, month, day) in [(2024, 12, 31), (2025, 1, 1), (2025, 6, 1)] {
        let award = clients
            .equity
            .get_award(equity::GetAwardRequest {
                company_id: company_id.clone(),
                award_id: award_id.clone(),
                as_of: date(year, month, day),
            })
            .await?
            .into_inner();
        let position = award.position.unwrap_or_default();
        println!(
            "as of {year}-{month:02}-{day:02}: vested {:>6}  unvested {:>6}",
            value(&position.vested),
            value(&position.unvested)
        );
    }

    let label = |id: &str| labels.get(id).cloned().unwrap_or_else(|| id.to_owned());
    wait_for_options(&mut clients, &company_id).await;
    let before = cap_table(&mut clients, &company_id).await?;
    print::cap_table("-- cap table before --", &before, label);

    access(
        endpoints,
        signer,
        &mut clients,
        &company_id,
        &award_id,
        &employee,
    )
    .await?;

    println!("\n-- 5. sagas --");
    let exercise = clients
        .sagas
        .start_exercise(saga::StartExerciseRequest {
            request_id: request_id("exercise"),
            company_id: company_id.clone(),
            exercise: Some(saga::ExerciseInput {
                award_id: award_id.clone(),
                quantity: dec("10000"),
                exercise_date: None,
            }),
        })
        .await?
        .into_inner()
        .saga
        .unwrap_or_default();
    let exercise = finished(&mut clients, &company_id, &exercise.id).await?;
    let program = clients
        .equity
        .create_repurchase_program(equity::CreateRepurchaseProgramRequest {
            request_id: request_id("program"),
            company_id: company_id.clone(),
            share_class_id: class_id.clone(),
            max_shares: dec("5000"),
            max_price_per_share: usd("3"),
            start_date: date(2026, 1, 1),
            end_date: date(2027, 12, 31),
        })
        .await?
        .into_inner()
        .program
        .unwrap_or_default();
    let buyback = clients
        .sagas
        .start_buyback(saga::StartBuybackRequest {
            request_id: request_id("buyback"),
            company_id: company_id.clone(),
            buyback: Some(saga::BuybackInput {
                program_id: program.id.clone(),
                stakeholder_id: employee.clone(),
                quantity: dec("2000"),
                price_per_share: usd("3"),
                repurchase_date: None,
            }),
        })
        .await?
        .into_inner()
        .saga
        .unwrap_or_default();
    let buyback = finished(&mut clients, &company_id, &buyback.id).await?;
    print::saga_history("exercise of 10,000 options at $1.50", &exercise);
    print::saga_history("buyback of 2,000 shares at $3.00", &buyback);

    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = cap_table(&mut clients, &company_id).await?;
    print::cap_table("-- cap table after --", &after, label);
    let states = [exercise.state, buyback.state];
    anyhow::ensure!(
        states
            .iter()
            .all(|s| *s == saga::SagaState::Completed as i32),
        "a saga did not complete"
    );
    Ok(())
}

/// Section 4: who may call what. Each answer is checked, so the demo fails
/// if a refusal it expects does not happen.
async fn access(
    endpoints: &Endpoints,
    signer: &TokenSigner,
    clients: &mut Clients,
    company_id: &str,
    award_id: &str,
    employee: &str,
) -> anyhow::Result<()> {
    println!("\n-- 4. who may call what --");
    let cap_table_of = |company_id: &str| ledger::GetCapTableRequest {
        company_id: company_id.to_owned(),
        as_of: None,
        page_size: 10,
        page_token: String::new(),
    };

    let mut anonymous = LedgerServiceClient::new(endpoints.ledger.clone());
    let answer = anonymous.get_cap_table(cap_table_of(company_id)).await;
    expect_refused(
        "no token",
        "LedgerService/GetCapTable",
        answer,
        tonic::Code::Unauthenticated,
    )?;

    // Another tenant's data does not even exist for this token.
    let answer = clients.ledger.get_cap_table(cap_table_of(&new_id())).await;
    expect_refused(
        ADMIN_SUBJECT,
        "LedgerService/GetCapTable, another company",
        answer,
        tonic::Code::NotFound,
    )?;

    let subject = "demo-employee-ada";
    let mut claims = keys::claims(subject, vec![company_id.to_owned()], &["employee"]);
    claims.stakeholders = BTreeMap::from([(company_id.to_owned(), employee.to_owned())]);
    let employee_token = keys::sign(signer, claims);
    let mut as_employee = Clients::new(endpoints, &employee_token);
    let award = as_employee
        .equity
        .get_award(equity::GetAwardRequest {
            company_id: company_id.to_owned(),
            award_id: award_id.to_owned(),
            as_of: date(2025, 6, 1),
        })
        .await?
        .into_inner();
    let position = award.position.unwrap_or_default();
    println!(
        "{subject:<20} {:<44} -> OK: vested {} of 48000 as of 2025-06-01",
        "EquityService/GetAward, her own award",
        value(&position.vested)
    );
    let answer = as_employee
        .ledger
        .get_cap_table(cap_table_of(company_id))
        .await;
    expect_refused(
        subject,
        "LedgerService/GetCapTable",
        answer,
        tonic::Code::PermissionDenied,
    )?;
    Ok(())
}

/// Prints a refused call, or fails when the answer is not `expected`.
fn expect_refused<T>(
    who: &str,
    call: &str,
    answer: Result<T, tonic::Status>,
    expected: tonic::Code,
) -> anyhow::Result<()> {
    match answer {
        Err(status) if status.code() == expected => {
            println!("{who:<20} {call:<44} -> {}", print::code(expected));
            Ok(())
        }
        Err(status) => anyhow::bail!(
            "{who} calling {call}: expected {}, got {}: {}",
            print::code(expected),
            print::code(status.code()),
            status.message()
        ),
        Ok(_) => anyhow::bail!(
            "{who} calling {call}: expected {}, but the call was served",
            print::code(expected)
        ),
    }
}

async fn stakeholder(
    clients: &mut Clients,
    company_id: &str,
    name: &str,
    relationship: shareholder::StakeholderRelationship,
) -> anyhow::Result<String> {
    let response = clients
        .shareholder
        .create_stakeholder(shareholder::CreateStakeholderRequest {
            request_id: request_id("stakeholder"),
            company_id: company_id.to_owned(),
            stakeholder_type: shareholder::StakeholderType::Individual as i32,
            name: name.to_owned(),
            email: String::new(),
            relationships: vec![relationship as i32],
            employment_start_date: date(2023, 6, 1),
            payment_instruction_ref: "bank:demo-account".to_owned(),
        })
        .await?
        .into_inner();
    Ok(response.stakeholder.unwrap_or_default().id)
}

async fn share_class(clients: &mut Clients, company_id: &str) -> anyhow::Result<String> {
    let class = clients
        .equity
        .create_share_class(equity::CreateShareClassRequest {
            request_id: request_id("class"),
            company_id: company_id.to_owned(),
            name: "Common".to_owned(),
            class_type: equity::ShareClassType::Common as i32,
            authorized_shares: dec("10000000"),
            par_value: usd("0.0001"),
            seniority: 1,
            conversion_ratio: dec("1"),
            effective_date: date(2023, 1, 1),
        })
        .await?
        .into_inner()
        .share_class
        .unwrap_or_default();
    // The ledger keeps the authorized-unissued account of the class.
    clients
        .ledger
        .adjust_authorized_shares(ledger::AdjustAuthorizedSharesRequest {
            request_id: request_id("authorize"),
            company_id: company_id.to_owned(),
            share_class_id: class.id.clone(),
            new_authorized_shares: dec("10000000"),
            effective_date: date(2023, 1, 1),
        })
        .await?;
    Ok(class.id)
}

async fn issue_founder_shares(
    clients: &mut Clients,
    company_id: &str,
    class_id: &str,
    founder: &str,
) -> anyhow::Result<()> {
    clients
        .ledger
        .issue_shares(ledger::IssueSharesRequest {
            request_id: request_id("founder-issue"),
            company_id: company_id.to_owned(),
            share_class_id: class_id.to_owned(),
            stakeholder_id: founder.to_owned(),
            quantity: dec("4000000"),
            price_per_share: usd("0.0001"),
            effective_date: date(2023, 1, 2),
        })
        .await?;
    Ok(())
}

async fn plan(clients: &mut Clients, company_id: &str, class_id: &str) -> anyhow::Result<String> {
    let plan = clients
        .equity
        .create_equity_plan(equity::CreateEquityPlanRequest {
            request_id: request_id("plan"),
            company_id: company_id.to_owned(),
            name: "2023 Stock Plan".to_owned(),
            share_class_id: class_id.to_owned(),
            initial_shares_reserved: dec("1000000"),
            cancellation_behavior: equity::CancellationBehavior::ReturnToPool as i32,
            board_approval_date: date(2023, 1, 1),
        })
        .await?
        .into_inner()
        .plan
        .unwrap_or_default();
    Ok(plan.id)
}

async fn grant(
    clients: &mut Clients,
    company_id: &str,
    plan_id: &str,
    employee: &str,
) -> anyhow::Result<String> {
    let award = clients
        .equity
        .grant_award(equity::GrantAwardRequest {
            request_id: request_id("grant"),
            company_id: company_id.to_owned(),
            plan_id: plan_id.to_owned(),
            stakeholder_id: employee.to_owned(),
            award_type: equity::AwardType::Nso as i32,
            quantity: dec("48000"),
            exercise_price: usd("1.5"),
            grant_date: date(2024, 1, 1),
            expiration_date: date(2034, 1, 1),
            termination_windows: vec![],
            early_exercisable: false,
            vesting_terms: Some(crate::flow::four_year_one_year_cliff()),
            vesting_start_date: date(2024, 1, 1),
        })
        .await?
        .into_inner()
        .award
        .unwrap_or_default();
    Ok(award.id)
}

async fn cap_table(
    clients: &mut Clients,
    company_id: &str,
) -> anyhow::Result<ledger::GetCapTableResponse> {
    Ok(clients
        .ledger
        .get_cap_table(ledger::GetCapTableRequest {
            company_id: company_id.to_owned(),
            as_of: None,
            page_size: 100,
            page_token: String::new(),
        })
        .await?
        .into_inner())
}

/// The options columns follow equity's events through NATS: wait briefly
/// until the grant shows, so the "before" table tells the whole story.
async fn wait_for_options(clients: &mut Clients, company_id: &str) {
    for _ in 0..50 {
        if let Ok(table) = cap_table(clients, company_id).await
            && table.totals.as_ref().is_some_and(|t| {
                value(&t.options_outstanding) != "0" && t.options_outstanding.is_some()
            })
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn finished(
    clients: &mut Clients,
    company_id: &str,
    saga_id: &str,
) -> anyhow::Result<saga::Saga> {
    for _ in 0..600 {
        let saga = clients
            .sagas
            .get_saga(saga::GetSagaRequest {
                company_id: company_id.to_owned(),
                saga_id: saga_id.to_owned(),
            })
            .await?
            .into_inner()
            .saga
            .unwrap_or_default();
        let done = [
            saga::SagaState::Completed,
            saga::SagaState::Compensated,
            saga::SagaState::Parked,
        ]
        .iter()
        .any(|state| *state as i32 == saga.state);
        if done {
            return Ok(saga);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("saga {saga_id} did not finish within a minute")
}

/// OCF's 4-year, 1-year-cliff terms: 12/48 at the cliff, then 1/48 monthly.
pub(crate) fn four_year_one_year_cliff() -> equity::VestingTerms {
    use equity::vesting_condition::Amount;
    use equity::vesting_trigger::Trigger;
    let relative = |length, occurrences, to: &str| {
        Trigger::Relative(equity::RelativeTrigger {
            period: Some(equity::VestingPeriod {
                length,
                period_type: equity::PeriodType::Months as i32,
                occurrences,
                day_of_month: equity::VestingDayOfMonth::VestingStartDayOrLastDayOfMonth as i32,
                day_of_month_number: 0,
                cliff_installment: 0,
            }),
            relative_to_condition_id: to.to_owned(),
        })
    };
    let portion = |numerator: &str| {
        Amount::Portion(equity::VestingPortion {
            numerator: dec(numerator),
            denominator: dec("48"),
            remainder: false,
        })
    };
    let condition = |id: &str, amount, trigger, next: &[&str]| equity::VestingCondition {
        id: id.to_owned(),
        description: String::new(),
        amount: Some(amount),
        trigger: Some(equity::VestingTrigger {
            trigger: Some(trigger),
        }),
        next_condition_ids: next.iter().map(|n| (*n).to_owned()).collect(),
    };
    equity::VestingTerms {
        id: "4y-1y-cliff".into(),
        name: "Four Year / One Year Cliff".into(),
        description: String::new(),
        allocation_type: equity::AllocationType::CumulativeRounding as i32,
        conditions: vec![
            condition(
                "start",
                Amount::Quantity(Decimal { value: "0".into() }),
                Trigger::VestingStart(equity::VestingStartTrigger {}),
                &["cliff"],
            ),
            condition(
                "cliff",
                portion("12"),
                relative(12, 1, "start"),
                &["monthly"],
            ),
            condition("monthly", portion("1"), relative(1, 36, "cliff"), &[]),
        ],
    }
}
