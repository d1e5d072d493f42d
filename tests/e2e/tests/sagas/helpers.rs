//! A whole QapMap system for one test: equity, shareholder and ledger served
//! in-process on loopback gRPC, and the orchestrator in-process or as a real
//! process (when a test must SIGKILL it), all on one NATS namespace with a
//! database each. Plus the company set-up and the checks tests share.

pub(crate) use qapmap_testkit::fixtures::four_year_one_year_cliff;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use qapmap_orchestrator::definition::Timing;
use qapmap_proto::common::v1::{Date, Decimal, Money};
use qapmap_proto::equity::v1 as equity;
use qapmap_proto::equity::v1::equity_service_client::EquityServiceClient;
use qapmap_proto::ledger::v1 as ledger;
use qapmap_proto::ledger::v1::ledger_service_client::LedgerServiceClient;
use qapmap_proto::saga::v1 as saga;
use qapmap_proto::saga::v1::saga_service_client::SagaServiceClient;
use qapmap_proto::shareholder::v1 as shareholder;
use qapmap_proto::shareholder::v1::shareholder_service_client::ShareholderServiceClient;
use qapmap_runtime::ServiceName;
use qapmap_runtime::auth::client::AuthenticatedChannel as Channel;
use qapmap_shareholder::payment::{PaymentGateway, SandboxGateway, SandboxSettings};
use qapmap_testkit::database::TestDatabase;
use qapmap_testkit::in_process::RunningService;
use qapmap_testkit::nats::TestNamespace;
use qapmap_testkit::process::{ServiceProcess, workspace_binary};
use qapmap_testkit::runtime_checks::service_env;
use rust_decimal::Decimal as Dec;
use uuid::Uuid;

/// Step deadline of in-process orchestrators: generous, so a loaded CI
/// machine does not turn slowness into compensations.
pub(crate) const TEST_STEP_DEADLINE: Duration = Duration::from_secs(15);
/// Step deadline for tests where a service is down on purpose: short, so the
/// saga compensates within the test's patience.
pub(crate) const SHORT_STEP_DEADLINE: Duration = Duration::from_secs(3);
/// How long a test waits for a saga to finish.
pub(crate) const SAGA_PATIENCE: Duration = Duration::from_secs(180);

pub(crate) fn dec(value: &str) -> Option<Decimal> {
    Some(Decimal {
        value: value.to_owned(),
    })
}

pub(crate) fn usd(amount: &str) -> Option<Money> {
    Some(Money {
        amount: dec(amount),
        currency: "USD".to_owned(),
    })
}

pub(crate) fn date(year: i32, month: i32, day: i32) -> Option<Date> {
    Some(Date { year, month, day })
}

/// A decimal from the wire, for arithmetic in assertions.
pub(crate) fn number(value: &Option<Decimal>) -> Dec {
    value
        .as_ref()
        .map_or(Dec::ZERO, |d| Dec::from_str(&d.value).expect("a decimal"))
}

pub(crate) fn request_id() -> String {
    Uuid::new_v4().to_string()
}

/// The orchestrator, in-process or as a process of its own.
pub(crate) enum Orchestrator {
    InProcess(RunningService),
    Process {
        process: ServiceProcess,
        database: TestDatabase,
    },
}

impl Orchestrator {
    fn channel(&self) -> Channel {
        match self {
            Self::InProcess(service) => service.channel(),
            Self::Process { process, .. } => process.authenticated_channel(),
        }
    }

    pub(crate) fn channel_with_token(&self, token: &str) -> Channel {
        match self {
            Self::InProcess(service) => service.channel_with_token(token),
            Self::Process { process, .. } => {
                qapmap_runtime::auth::client::authenticated(process.channel(), token)
            }
        }
    }
}

pub(crate) struct System {
    /// Owns the streams; the services hold shared copies.
    pub(crate) namespace: TestNamespace,
    pub(crate) equity: RunningService,
    pub(crate) shareholder: RunningService,
    /// `None` while a test has it stopped.
    pub(crate) ledger: Option<RunningService>,
    pub(crate) orchestrator: Orchestrator,
    pub(crate) company_id: Uuid,
}

/// What one company's set-up created.
#[derive(Debug, Clone)]
pub(crate) struct Company {
    pub(crate) class_id: String,
    pub(crate) plan_id: String,
    pub(crate) stakeholder_id: String,
    pub(crate) award_id: String,
}

impl System {
    /// Everything in-process.
    pub(crate) async fn start() -> Self {
        Self::start_with_deadline(TEST_STEP_DEADLINE).await
    }

    /// Everything in-process, with this step deadline.
    pub(crate) async fn start_with_deadline(step_deadline: Duration) -> Self {
        let namespace = TestNamespace::new();
        let timing = Timing {
            step_deadline,
            max_compensation_attempts: 50,
            ..Timing::default()
        };
        let orchestrator = in_process_orchestrator(&namespace, timing).await;
        Self::with_orchestrator(namespace, orchestrator).await
    }

    /// The orchestrator as a real process (`target/<profile>/qapmap-orchestrator`).
    pub(crate) async fn start_with_orchestrator_process() -> Self {
        let namespace = TestNamespace::new();
        let database = TestDatabase::create("orchestrator").await;
        let process = spawn_orchestrator(&database, &namespace).await;
        Self::with_orchestrator(namespace, Orchestrator::Process { process, database }).await
    }

    /// Everything in-process, for sagas whose payment's outcome becomes
    /// unknown: the orchestrator gives the pivot `max_pivot_attempts`
    /// deadlines of `step_deadline` before it parks the saga, and the
    /// shareholder gives the gateway `gateway_timeout`. Also returns the
    /// sandbox gateway, to count its calls.
    pub(crate) async fn start_with_payment_limits(
        step_deadline: Duration,
        max_pivot_attempts: u32,
        gateway_timeout: Duration,
    ) -> (Self, Arc<SandboxGateway>) {
        let namespace = TestNamespace::new();
        let timing = Timing {
            step_deadline,
            max_pivot_attempts,
            max_compensation_attempts: 50,
            ..Timing::default()
        };
        let orchestrator = in_process_orchestrator(&namespace, timing).await;
        let gateway = Arc::new(SandboxGateway::new(SandboxSettings::default()));
        let service_gateway: Arc<dyn PaymentGateway> = gateway.clone();
        let shareholder = start_service(ServiceName::Shareholder, &namespace, move |settings| {
            qapmap_shareholder::build_with_gateway_timeout(
                settings,
                service_gateway,
                gateway_timeout,
            )
        })
        .await;
        let system = Self::with_services(namespace, orchestrator, shareholder).await;
        (system, gateway)
    }

    async fn with_orchestrator(namespace: TestNamespace, orchestrator: Orchestrator) -> Self {
        let shareholder = start_service(
            ServiceName::Shareholder,
            &namespace,
            qapmap_shareholder::build,
        )
        .await;
        Self::with_services(namespace, orchestrator, shareholder).await
    }

    async fn with_services(
        namespace: TestNamespace,
        orchestrator: Orchestrator,
        shareholder: RunningService,
    ) -> Self {
        let equity = start_service(ServiceName::Equity, &namespace, qapmap_equity::build).await;
        let ledger = start_service(ServiceName::Ledger, &namespace, qapmap_ledger::build).await;
        Self {
            namespace,
            equity,
            shareholder,
            ledger: Some(ledger),
            orchestrator,
            company_id: Uuid::new_v4(),
        }
    }

    pub(crate) fn equity(&self) -> EquityServiceClient<Channel> {
        EquityServiceClient::new(self.equity.channel())
    }

    pub(crate) fn shareholder(&self) -> ShareholderServiceClient<Channel> {
        ShareholderServiceClient::new(self.shareholder.channel())
    }

    pub(crate) fn ledger(&self) -> LedgerServiceClient<Channel> {
        LedgerServiceClient::new(
            self.ledger
                .as_ref()
                .expect("the ledger is running")
                .channel(),
        )
    }

    pub(crate) fn sagas(&self) -> SagaServiceClient<Channel> {
        SagaServiceClient::new(self.orchestrator.channel())
    }

    /// The saga API as the holder of `token` (an employee, another company's admin).
    pub(crate) fn sagas_as(&self, token: &str) -> SagaServiceClient<Channel> {
        SagaServiceClient::new(self.orchestrator.channel_with_token(token))
    }

    /// A second orchestrator on the same database and namespace (a replica).
    pub(crate) async fn start_second_orchestrator(&self) -> RunningService {
        let Orchestrator::InProcess(first) = &self.orchestrator else {
            panic!("the first orchestrator is not in-process in this system");
        };
        let timing = Timing {
            step_deadline: TEST_STEP_DEADLINE,
            max_compensation_attempts: 50,
            ..Timing::default()
        };
        RunningService::start_with(
            ServiceName::Orchestrator,
            first.database.share(),
            self.namespace.share(),
            move |settings| qapmap_orchestrator::build_with_timing(settings, timing),
        )
        .await
    }

    /// Issues `quantity` shares of the class to the company's stakeholder directly in the ledger.
    pub(crate) async fn issue_shares(&self, company: &Company, quantity: &str) {
        self.ledger()
            .issue_shares(ledger::IssueSharesRequest {
                request_id: request_id(),
                company_id: self.company_id.to_string(),
                share_class_id: company.class_id.clone(),
                stakeholder_id: company.stakeholder_id.clone(),
                quantity: dec(quantity),
                price_per_share: None,
                effective_date: date(2022, 1, 1),
            })
            .await
            .expect("shares issued");
    }

    /// Stops the ledger, keeping its data, to be resumed with [`Self::resume_ledger`].
    pub(crate) async fn stop_ledger(&mut self) -> TestDatabase {
        let ledger = self.ledger.take().expect("the ledger is running");
        ledger.stop_keeping_data().await.0
    }

    pub(crate) async fn resume_ledger(&mut self, database: TestDatabase) {
        let ledger = RunningService::start_with(
            ServiceName::Ledger,
            database,
            self.namespace.share(),
            qapmap_ledger::build,
        )
        .await;
        self.ledger = Some(ledger);
    }

    /// Kills the orchestrator process (SIGKILL) and starts a new one on the same database.
    pub(crate) async fn kill_and_restart_orchestrator(&mut self) {
        let Orchestrator::Process { process, database } = &mut self.orchestrator else {
            panic!("the orchestrator is not a process in this system");
        };
        process.kill().await;
        assert_eq!(
            process.wait_for_exit(Duration::from_secs(5)).await,
            None,
            "SIGKILL leaves no exit code"
        );
        *process = spawn_orchestrator(database, &self.namespace).await;
    }

    /// A class of 10,000,000 authorized shares known to equity and the
    /// ledger, a plan with a 1,000,000 pool, an employee paid through the
    /// sandbox as `payment_ref` says, and a grant of `granted` options at
    /// $1.50 vesting over 4 years with a 1-year cliff from `vesting_start`.
    pub(crate) async fn set_up_company(
        &self,
        payment_ref: &str,
        granted: &str,
        vesting_start: Option<Date>,
    ) -> Company {
        let company_id = self.company_id.to_string();
        let class = self
            .equity()
            .create_share_class(equity::CreateShareClassRequest {
                request_id: request_id(),
                company_id: company_id.clone(),
                name: "Common".to_owned(),
                class_type: equity::ShareClassType::Common as i32,
                authorized_shares: dec("10000000"),
                par_value: usd("0.0001"),
                seniority: 1,
                conversion_ratio: dec("1"),
                effective_date: date(2020, 1, 1),
            })
            .await
            .expect("share class created")
            .into_inner()
            .share_class
            .expect("share class");
        self.ledger()
            .adjust_authorized_shares(ledger::AdjustAuthorizedSharesRequest {
                request_id: request_id(),
                company_id: company_id.clone(),
                share_class_id: class.id.clone(),
                new_authorized_shares: dec("10000000"),
                effective_date: date(2020, 1, 1),
            })
            .await
            .expect("authorized shares reach the ledger");
        let plan = self
            .equity()
            .create_equity_plan(equity::CreateEquityPlanRequest {
                request_id: request_id(),
                company_id: company_id.clone(),
                name: "2020 Plan".to_owned(),
                share_class_id: class.id.clone(),
                initial_shares_reserved: dec("1000000"),
                cancellation_behavior: equity::CancellationBehavior::ReturnToPool as i32,
                board_approval_date: date(2020, 1, 1),
            })
            .await
            .expect("plan created")
            .into_inner()
            .plan
            .expect("plan");
        let stakeholder = self
            .shareholder()
            .create_stakeholder(shareholder::CreateStakeholderRequest {
                request_id: request_id(),
                company_id: company_id.clone(),
                stakeholder_type: shareholder::StakeholderType::Individual as i32,
                name: "Ada Employee".to_owned(),
                email: "ada@example.com".to_owned(),
                relationships: vec![shareholder::StakeholderRelationship::Employee as i32],
                employment_start_date: date(2020, 6, 1),
                payment_instruction_ref: payment_ref.to_owned(),
            })
            .await
            .expect("stakeholder created")
            .into_inner()
            .stakeholder
            .expect("stakeholder");
        let award = self
            .equity()
            .grant_award(equity::GrantAwardRequest {
                request_id: request_id(),
                company_id: company_id.clone(),
                plan_id: plan.id.clone(),
                stakeholder_id: stakeholder.id.clone(),
                award_type: equity::AwardType::Nso as i32,
                quantity: dec(granted),
                exercise_price: usd("1.5"),
                grant_date: date(2021, 1, 1),
                expiration_date: date(2031, 1, 1),
                termination_windows: vec![],
                early_exercisable: false,
                vesting_terms: Some(four_year_one_year_cliff()),
                vesting_start_date: vesting_start,
            })
            .await
            .expect("award granted")
            .into_inner()
            .award
            .expect("award");
        Company {
            class_id: class.id,
            plan_id: plan.id,
            stakeholder_id: stakeholder.id,
            award_id: award.id,
        }
    }

    pub(crate) async fn start_exercise(&self, company: &Company, quantity: &str) -> saga::Saga {
        self.sagas()
            .start_exercise(saga::StartExerciseRequest {
                request_id: request_id(),
                company_id: self.company_id.to_string(),
                exercise: Some(saga::ExerciseInput {
                    award_id: company.award_id.clone(),
                    quantity: dec(quantity),
                    exercise_date: None,
                }),
            })
            .await
            .expect("exercise started")
            .into_inner()
            .saga
            .expect("saga")
    }

    /// Polls the saga until it is completed, compensated or parked.
    pub(crate) async fn finished(&self, saga_id: &str) -> saga::Saga {
        let deadline = tokio::time::Instant::now() + SAGA_PATIENCE;
        loop {
            let response = self
                .sagas()
                .get_saga(saga::GetSagaRequest {
                    company_id: self.company_id.to_string(),
                    saga_id: saga_id.to_owned(),
                })
                .await;
            // UNAVAILABLE means "retry later" (a pool busy with a hundred
            // pollers on two cores): a patient client does just that.
            if let Err(status) = &response
                && status.code() == tonic::Code::Unavailable
                && tokio::time::Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            let saga = response
                .expect("saga readable")
                .into_inner()
                .saga
                .expect("saga");
            let state = saga::SagaState::try_from(saga.state).expect("a state");
            if matches!(
                state,
                saga::SagaState::Completed | saga::SagaState::Compensated | saga::SagaState::Parked
            ) {
                return saga;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "saga {saga_id} still {state:?}: {saga:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The award's counts as of today.
    pub(crate) async fn award_position(&self, company: &Company) -> equity::AwardPosition {
        self.equity()
            .get_award(equity::GetAwardRequest {
                company_id: self.company_id.to_string(),
                award_id: company.award_id.clone(),
                as_of: None,
            })
            .await
            .expect("award readable")
            .into_inner()
            .position
            .expect("position")
    }

    /// (balance, held) of a stakeholder's shares of the company's class.
    pub(crate) async fn holder_shares(&self, company: &Company) -> (Dec, Dec) {
        let account = ledger::AccountRef {
            owner: Some(ledger::account_ref::Owner::StakeholderId(
                company.stakeholder_id.clone(),
            )),
            unit: Some(ledger::account_ref::Unit::ShareClassId(
                company.class_id.clone(),
            )),
        };
        self.balance(account).await
    }

    /// (balance, held) of a system account of the class.
    pub(crate) async fn system_shares(
        &self,
        company: &Company,
        system: ledger::SystemAccount,
    ) -> (Dec, Dec) {
        let account = ledger::AccountRef {
            owner: Some(ledger::account_ref::Owner::System(system as i32)),
            unit: Some(ledger::account_ref::Unit::ShareClassId(
                company.class_id.clone(),
            )),
        };
        self.balance(account).await
    }

    pub(crate) async fn company_cash(&self) -> Dec {
        let account = ledger::AccountRef {
            owner: Some(ledger::account_ref::Owner::System(
                ledger::SystemAccount::CompanyCash as i32,
            )),
            unit: Some(ledger::account_ref::Unit::Currency("USD".to_owned())),
        };
        self.balance(account).await.0
    }

    async fn balance(&self, account: ledger::AccountRef) -> (Dec, Dec) {
        let response = self
            .ledger()
            .get_balance(ledger::GetBalanceRequest {
                company_id: self.company_id.to_string(),
                account: Some(account),
                as_of: None,
            })
            .await
            .expect("balance readable")
            .into_inner();
        (number(&response.balance), number(&response.held))
    }

    /// Every payment with the stakeholder.
    pub(crate) async fn payments(&self, company: &Company) -> Vec<shareholder::Payment> {
        self.shareholder()
            .list_payments(shareholder::ListPaymentsRequest {
                company_id: self.company_id.to_string(),
                stakeholder_id: company.stakeholder_id.clone(),
                page_size: 500,
                page_token: String::new(),
            })
            .await
            .expect("payments readable")
            .into_inner()
            .payments
    }

    pub(crate) async fn cap_table(&self) -> ledger::GetCapTableResponse {
        self.ledger()
            .get_cap_table(ledger::GetCapTableRequest {
                company_id: self.company_id.to_string(),
                as_of: None,
                page_size: 500,
                page_token: String::new(),
            })
            .await
            .expect("cap table readable")
            .into_inner()
    }

    /// DESIGN.md: pool available + outstanding + exercised - returned = pool size.
    pub(crate) async fn assert_pool_invariant(&self, company: &Company) {
        let pool = self
            .equity()
            .get_equity_plan(equity::GetEquityPlanRequest {
                company_id: self.company_id.to_string(),
                plan_id: company.plan_id.clone(),
            })
            .await
            .expect("plan readable")
            .into_inner()
            .pool
            .expect("pool summary");
        assert_eq!(
            number(&pool.available) + number(&pool.outstanding) + number(&pool.exercised)
                - number(&pool.returned),
            number(&pool.pool_size),
            "pool invariant: {pool:#?}"
        );
    }

    /// DESIGN.md: unissued + holders + treasury + retired = authorized.
    pub(crate) async fn assert_share_invariant(&self, company: &Company) {
        let (unissued, _) = self
            .system_shares(company, ledger::SystemAccount::AuthorizedUnissued)
            .await;
        let (treasury, _) = self
            .system_shares(company, ledger::SystemAccount::Treasury)
            .await;
        let (retired, _) = self
            .system_shares(company, ledger::SystemAccount::Retired)
            .await;
        let (holder, _) = self.holder_shares(company).await;
        assert_eq!(
            unissued + holder + treasury + retired,
            Dec::from(10_000_000),
            "shares add up to authorized"
        );
        for balance in [unissued, treasury, retired, holder] {
            assert!(balance >= Dec::ZERO, "no balance below zero");
        }
    }
}

async fn start_service<F, Fut>(
    service: ServiceName,
    namespace: &TestNamespace,
    build: F,
) -> RunningService
where
    F: FnOnce(qapmap_runtime::Settings) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<qapmap_runtime::server::Application>>,
{
    RunningService::start_with(
        service,
        TestDatabase::create(service.as_str()).await,
        namespace.share(),
        build,
    )
    .await
}

async fn in_process_orchestrator(namespace: &TestNamespace, timing: Timing) -> Orchestrator {
    let service = RunningService::start_with(
        ServiceName::Orchestrator,
        TestDatabase::create("orchestrator").await,
        namespace.share(),
        move |settings| qapmap_orchestrator::build_with_timing(settings, timing),
    )
    .await;
    Orchestrator::InProcess(service)
}

async fn spawn_orchestrator(database: &TestDatabase, namespace: &TestNamespace) -> ServiceProcess {
    let mut env = service_env(&database.url, namespace);
    env.insert(
        "QAPMAP_SAGA_STEP_DEADLINE_MS".to_owned(),
        TEST_STEP_DEADLINE.as_millis().to_string(),
    );
    let binary = workspace_binary("qapmap-orchestrator");
    ServiceProcess::spawn(binary.to_str().expect("utf-8 path"), &env).await
}
