//! Cross-tenant reads of every resource type: company A's share class,
//! plan, award, repurchase program, stakeholder, payment, journal entry,
//! hold, balance, statement, cap table, saga and audit records, asked for by
//! company B's admin under B's id, answer NOT_FOUND or nothing at all, and
//! B's lists stay empty. (Asking under A's id is refused by the gate; the
//! matrix covers that for every RPC.)

use qapmap_proto::common::v1::{Date, Decimal, Money};
use qapmap_proto::equity::v1 as equity;
use qapmap_proto::equity::v1::equity_service_client::EquityServiceClient;
use qapmap_proto::ledger::v1 as ledger;
use qapmap_proto::ledger::v1::ledger_service_client::LedgerServiceClient;
use qapmap_proto::ops::v1 as ops;
use qapmap_proto::ops::v1::audit_service_client::AuditServiceClient;
use qapmap_proto::saga::v1 as saga;
use qapmap_proto::saga::v1::saga_service_client::SagaServiceClient;
use qapmap_proto::shareholder::v1 as shareholder;
use qapmap_proto::shareholder::v1::shareholder_service_client::ShareholderServiceClient;
use qapmap_runtime::ServiceName;
use qapmap_runtime::auth::client::AuthenticatedChannel;
use qapmap_testkit::auth;
use qapmap_testkit::database::TestDatabase;
use qapmap_testkit::fixtures::four_year_one_year_cliff;
use qapmap_testkit::in_process::RunningService;
use qapmap_testkit::nats::TestNamespace;
use tonic::Code;
use uuid::Uuid;

fn dec(value: &str) -> Option<Decimal> {
    Some(Decimal {
        value: value.to_owned(),
    })
}

fn usd(value: &str) -> Option<Money> {
    Some(Money {
        amount: dec(value),
        currency: "USD".to_owned(),
    })
}

fn date(year: i32, month: i32, day: i32) -> Option<Date> {
    Some(Date { year, month, day })
}

fn request_id() -> String {
    Uuid::new_v4().to_string()
}

struct Clients {
    equity: EquityServiceClient<AuthenticatedChannel>,
    shareholder: ShareholderServiceClient<AuthenticatedChannel>,
    ledger: LedgerServiceClient<AuthenticatedChannel>,
    sagas: SagaServiceClient<AuthenticatedChannel>,
    equity_audit: AuditServiceClient<AuthenticatedChannel>,
}

struct System {
    equity: RunningService,
    shareholder: RunningService,
    ledger: RunningService,
    orchestrator: RunningService,
}

impl System {
    async fn start() -> Self {
        let namespace = TestNamespace::new();
        let start = |name: ServiceName| {
            let namespace = namespace.share();
            async move {
                let database = TestDatabase::create(name.as_str()).await;
                match name {
                    ServiceName::Equity => {
                        RunningService::start_with(name, database, namespace, qapmap_equity::build)
                            .await
                    }
                    ServiceName::Shareholder => {
                        RunningService::start_with(
                            name,
                            database,
                            namespace,
                            qapmap_shareholder::build,
                        )
                        .await
                    }
                    ServiceName::Ledger => {
                        RunningService::start_with(name, database, namespace, qapmap_ledger::build)
                            .await
                    }
                    ServiceName::Orchestrator => {
                        RunningService::start_with(
                            name,
                            database,
                            namespace,
                            qapmap_orchestrator::build,
                        )
                        .await
                    }
                }
            }
        };
        Self {
            equity: start(ServiceName::Equity).await,
            shareholder: start(ServiceName::Shareholder).await,
            ledger: start(ServiceName::Ledger).await,
            orchestrator: start(ServiceName::Orchestrator).await,
        }
    }

    fn clients(&self, token: &str) -> Clients {
        Clients {
            equity: EquityServiceClient::new(self.equity.channel_with_token(token)),
            shareholder: ShareholderServiceClient::new(self.shareholder.channel_with_token(token)),
            ledger: LedgerServiceClient::new(self.ledger.channel_with_token(token)),
            sagas: SagaServiceClient::new(self.orchestrator.channel_with_token(token)),
            equity_audit: AuditServiceClient::new(self.equity.channel_with_token(token)),
        }
    }
}

/// The ids of one resource of each type in a company.
struct Resources {
    class_id: String,
    plan_id: String,
    award_id: String,
    program_id: String,
    stakeholder_id: String,
    payment_id: String,
    entry_id: String,
    saga_id: String,
}

async fn create_everything(clients: &mut Clients, company: Uuid) -> Resources {
    let company_id = company.to_string();
    let class = clients
        .equity
        .create_share_class(equity::CreateShareClassRequest {
            request_id: request_id(),
            company_id: company_id.clone(),
            name: "Common".to_owned(),
            class_type: equity::ShareClassType::Common as i32,
            authorized_shares: dec("1000000"),
            par_value: usd("0.0001"),
            seniority: 1,
            conversion_ratio: dec("1"),
            effective_date: date(2020, 1, 1),
        })
        .await
        .expect("share class")
        .into_inner()
        .share_class
        .expect("share class");
    let plan = clients
        .equity
        .create_equity_plan(equity::CreateEquityPlanRequest {
            request_id: request_id(),
            company_id: company_id.clone(),
            name: "Plan".to_owned(),
            share_class_id: class.id.clone(),
            initial_shares_reserved: dec("100000"),
            cancellation_behavior: equity::CancellationBehavior::ReturnToPool as i32,
            board_approval_date: date(2020, 1, 1),
        })
        .await
        .expect("plan")
        .into_inner()
        .plan
        .expect("plan");
    let stakeholder = clients
        .shareholder
        .create_stakeholder(shareholder::CreateStakeholderRequest {
            request_id: request_id(),
            company_id: company_id.clone(),
            stakeholder_type: shareholder::StakeholderType::Individual as i32,
            name: "Ada".to_owned(),
            email: "ada@example.com".to_owned(),
            relationships: vec![shareholder::StakeholderRelationship::Employee as i32],
            employment_start_date: date(2020, 6, 1),
            payment_instruction_ref: "bank:ada".to_owned(),
        })
        .await
        .expect("stakeholder")
        .into_inner()
        .stakeholder
        .expect("stakeholder");
    let award = clients
        .equity
        .grant_award(equity::GrantAwardRequest {
            request_id: request_id(),
            company_id: company_id.clone(),
            plan_id: plan.id.clone(),
            stakeholder_id: stakeholder.id.clone(),
            award_type: equity::AwardType::Nso as i32,
            quantity: dec("4800"),
            exercise_price: usd("1.5"),
            grant_date: date(2021, 1, 1),
            expiration_date: date(2031, 1, 1),
            vesting_terms: Some(four_year_one_year_cliff()),
            vesting_start_date: date(2021, 1, 1),
            ..Default::default()
        })
        .await
        .expect("award")
        .into_inner()
        .award
        .expect("award");
    let program = clients
        .equity
        .create_repurchase_program(equity::CreateRepurchaseProgramRequest {
            request_id: request_id(),
            company_id: company_id.clone(),
            share_class_id: class.id.clone(),
            max_shares: dec("1000"),
            max_price_per_share: usd("2"),
            start_date: date(2020, 1, 1),
            end_date: date(2040, 1, 1),
        })
        .await
        .expect("program")
        .into_inner()
        .program
        .expect("program");
    let payment = clients
        .shareholder
        .collect_payment(shareholder::CollectPaymentRequest {
            request_id: request_id(),
            company_id: company_id.clone(),
            stakeholder_id: stakeholder.id.clone(),
            amount: usd("10"),
        })
        .await
        .expect("payment")
        .into_inner()
        .payment
        .expect("payment");
    clients
        .ledger
        .adjust_authorized_shares(ledger::AdjustAuthorizedSharesRequest {
            request_id: request_id(),
            company_id: company_id.clone(),
            share_class_id: class.id.clone(),
            new_authorized_shares: dec("1000000"),
            effective_date: date(2020, 1, 1),
        })
        .await
        .expect("authorized shares");
    let entry = clients
        .ledger
        .issue_shares(ledger::IssueSharesRequest {
            request_id: request_id(),
            company_id: company_id.clone(),
            share_class_id: class.id.clone(),
            stakeholder_id: stakeholder.id.clone(),
            quantity: dec("100"),
            price_per_share: None,
            effective_date: date(2022, 1, 1),
        })
        .await
        .expect("issued")
        .into_inner()
        .entry
        .expect("entry");
    clients
        .ledger
        .place_hold(ledger::PlaceHoldRequest {
            request_id: request_id(),
            company_id: company_id.clone(),
            account: Some(holder_account(&stakeholder.id, &class.id)),
            quantity: dec("10"),
        })
        .await
        .expect("hold");
    let saga = clients
        .sagas
        .start_exercise(saga::StartExerciseRequest {
            request_id: request_id(),
            company_id: company_id.clone(),
            exercise: Some(saga::ExerciseInput {
                award_id: award.id.clone(),
                quantity: dec("10"),
                exercise_date: None,
            }),
        })
        .await
        .expect("saga")
        .into_inner()
        .saga
        .expect("saga");
    Resources {
        class_id: class.id,
        plan_id: plan.id,
        award_id: award.id,
        program_id: program.id,
        stakeholder_id: stakeholder.id,
        payment_id: payment.id,
        entry_id: entry.id,
        saga_id: saga.id,
    }
}

fn holder_account(stakeholder_id: &str, class_id: &str) -> ledger::AccountRef {
    ledger::AccountRef {
        owner: Some(ledger::account_ref::Owner::StakeholderId(
            stakeholder_id.to_owned(),
        )),
        unit: Some(ledger::account_ref::Unit::ShareClassId(class_id.to_owned())),
    }
}

fn assert_not_found<T: std::fmt::Debug>(
    what: &str,
    outcome: Result<tonic::Response<T>, tonic::Status>,
) {
    match outcome {
        Err(status) => assert_eq!(status.code(), Code::NotFound, "{what}: {status:?}"),
        Ok(response) => panic!("{what}: another company's read answered {response:?}"),
    }
}

#[tokio::test]
async fn another_companys_admin_sees_none_of_a_companys_resources() {
    let system = System::start().await;
    let company_a = Uuid::new_v4();
    let company_b = Uuid::new_v4();
    let mut a = system.clients(&auth::admin_token(company_a));
    let resources = create_everything(&mut a, company_a).await;
    let mut b = system.clients(&auth::admin_token(company_b));
    let b_id = company_b.to_string();

    // A's ids under B's company.
    assert_not_found(
        "share class",
        b.equity
            .get_share_class(equity::GetShareClassRequest {
                company_id: b_id.clone(),
                share_class_id: resources.class_id.clone(),
            })
            .await,
    );
    assert_not_found(
        "plan",
        b.equity
            .get_equity_plan(equity::GetEquityPlanRequest {
                company_id: b_id.clone(),
                plan_id: resources.plan_id.clone(),
            })
            .await,
    );
    assert_not_found(
        "award",
        b.equity
            .get_award(equity::GetAwardRequest {
                company_id: b_id.clone(),
                award_id: resources.award_id.clone(),
                ..Default::default()
            })
            .await,
    );
    assert_not_found(
        "program",
        b.equity
            .get_repurchase_program(equity::GetRepurchaseProgramRequest {
                company_id: b_id.clone(),
                program_id: resources.program_id.clone(),
            })
            .await,
    );
    assert_not_found(
        "stakeholder",
        b.shareholder
            .get_stakeholder(shareholder::GetStakeholderRequest {
                company_id: b_id.clone(),
                stakeholder_id: resources.stakeholder_id.clone(),
            })
            .await,
    );
    assert_not_found(
        "payment",
        b.shareholder
            .get_payment(shareholder::GetPaymentRequest {
                company_id: b_id.clone(),
                payment_id: resources.payment_id.clone(),
            })
            .await,
    );
    assert_not_found(
        "entry",
        b.ledger
            .get_entry(ledger::GetEntryRequest {
                company_id: b_id.clone(),
                entry_id: resources.entry_id.clone(),
            })
            .await,
    );
    assert_not_found(
        "saga",
        b.sagas
            .get_saga(saga::GetSagaRequest {
                company_id: b_id.clone(),
                saga_id: resources.saga_id.clone(),
            })
            .await,
    );

    // Balances and statements of A's holder under B: nothing held.
    match b
        .ledger
        .get_balance(ledger::GetBalanceRequest {
            company_id: b_id.clone(),
            account: Some(holder_account(
                &resources.stakeholder_id,
                &resources.class_id,
            )),
            as_of: None,
        })
        .await
    {
        Err(status) => assert_eq!(status.code(), Code::NotFound, "{status:?}"),
        Ok(response) => {
            let balance = response.into_inner();
            let text = format!("{balance:?}");
            assert!(
                !text.contains("\"100\"") && !text.contains("\"90\""),
                "A's balance leaked: {text}"
            );
        }
    }
    match b
        .ledger
        .get_statement(ledger::GetStatementRequest {
            company_id: b_id.clone(),
            stakeholder_id: resources.stakeholder_id.clone(),
            ..Default::default()
        })
        .await
    {
        Err(status) => assert_eq!(status.code(), Code::NotFound, "{status:?}"),
        Ok(response) => assert!(
            response.into_inner().lines.is_empty(),
            "A's statement leaked"
        ),
    }

    // B's lists are empty.
    let listed = b
        .equity
        .list_share_classes(equity::ListShareClassesRequest {
            company_id: b_id.clone(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert!(listed.share_classes.is_empty());
    let listed = b
        .equity
        .list_equity_plans(equity::ListEquityPlansRequest {
            company_id: b_id.clone(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert!(listed.plans.is_empty());
    let listed = b
        .equity
        .list_awards(equity::ListAwardsRequest {
            company_id: b_id.clone(),
            stakeholder_id: resources.stakeholder_id.clone(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert!(listed.awards.is_empty());
    let listed = b
        .shareholder
        .list_stakeholders(shareholder::ListStakeholdersRequest {
            company_id: b_id.clone(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert!(listed.stakeholders.is_empty());
    let listed = b
        .shareholder
        .list_payments(shareholder::ListPaymentsRequest {
            company_id: b_id.clone(),
            stakeholder_id: resources.stakeholder_id.clone(),
            ..Default::default()
        })
        .await;
    match listed {
        Ok(listed) => assert!(listed.into_inner().payments.is_empty()),
        Err(status) => assert_eq!(status.code(), Code::NotFound, "{status:?}"),
    }
    let listed = b
        .ledger
        .list_entries(ledger::ListEntriesRequest {
            company_id: b_id.clone(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert!(listed.entries.is_empty());
    let table = b
        .ledger
        .get_cap_table(ledger::GetCapTableRequest {
            company_id: b_id.clone(),
            ..Default::default()
        })
        .await
        .expect("cap table")
        .into_inner();
    assert!(
        table.rows.is_empty(),
        "A's holders in B's cap table: {:?}",
        table.rows
    );
    let listed = b
        .sagas
        .list_sagas(saga::ListSagasRequest {
            company_id: b_id.clone(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert!(listed.sagas.is_empty());
    let listed = b
        .equity_audit
        .list_audit_records(ops::ListAuditRecordsRequest {
            company_id: b_id.clone(),
            ..Default::default()
        })
        .await
        .expect("audit")
        .into_inner();
    assert!(listed.records.is_empty());

    // A still sees its own: the reads above were not empty for lack of data.
    let a_id = company_a.to_string();
    let own = a
        .equity
        .list_share_classes(equity::ListShareClassesRequest {
            company_id: a_id.clone(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(own.share_classes.len(), 1);
    let own = a
        .ledger
        .get_cap_table(ledger::GetCapTableRequest {
            company_id: a_id.clone(),
            ..Default::default()
        })
        .await
        .expect("cap table")
        .into_inner();
    assert!(!own.rows.is_empty());
    let own = a
        .equity_audit
        .list_audit_records(ops::ListAuditRecordsRequest {
            company_id: a_id,
            ..Default::default()
        })
        .await
        .expect("audit")
        .into_inner();
    assert!(
        own.records.len() >= 4,
        "A's commands are audited: {}",
        own.records.len()
    );
}
