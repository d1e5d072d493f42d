//! All four QapMap binaries as real processes (as in production), each with
//! a database of its own, on one NATS namespace, exporting traces over OTLP
//! to the endpoint the test gives.

use std::collections::HashMap;
use std::time::Duration;

use qapmap_proto::equity::v1 as equity;
use qapmap_proto::equity::v1::equity_service_client::EquityServiceClient;
use qapmap_proto::ledger::v1 as ledger;
use qapmap_proto::ledger::v1::ledger_service_client::LedgerServiceClient;
use qapmap_proto::saga::v1 as saga;
use qapmap_proto::saga::v1::saga_service_client::SagaServiceClient;
use qapmap_proto::shareholder::v1 as shareholder;
use qapmap_proto::shareholder::v1::shareholder_service_client::ShareholderServiceClient;
use qapmap_testkit::database::TestDatabase;
use qapmap_testkit::nats::TestNamespace;
use qapmap_testkit::process::{ServiceProcess, workspace_binary};
use qapmap_testkit::runtime_checks::service_env;
use uuid::Uuid;

use crate::setup::{date, dec, four_year_one_year_cliff, request_id, usd};

/// The set-up's personal data: must never reach a span.
pub(crate) const STAKEHOLDER_NAME: &str = "Ada Tracetest-Lovelace";
pub(crate) const STAKEHOLDER_EMAIL: &str = "ada.tracetest@example.com";

/// Generous: four processes share two cores with the other tests.
const STEP_DEADLINE_MS: &str = "10000";
/// How long a test waits for a saga to finish.
const SAGA_PATIENCE: Duration = Duration::from_secs(60);

pub(crate) struct Processes {
    /// Owns the streams; dropped last.
    _namespace: TestNamespace,
    pub(crate) equity: ServiceProcess,
    pub(crate) shareholder: ServiceProcess,
    pub(crate) ledger: ServiceProcess,
    pub(crate) orchestrator: ServiceProcess,
    orchestrator_env: HashMap<String, String>,
    _databases: Vec<TestDatabase>,
    pub(crate) company_id: Uuid,
}

/// What the set-up created.
#[derive(Debug, Clone)]
pub(crate) struct Company {
    pub(crate) award_id: String,
}

impl Processes {
    /// Starts equity, shareholder, ledger and orchestrator, exporting traces
    /// to `otlp_endpoint`.
    pub(crate) async fn start(otlp_endpoint: &str) -> Self {
        let namespace = TestNamespace::new();
        let (equity_db, shareholder_db, ledger_db, orchestrator_db) = tokio::join!(
            TestDatabase::create("equity"),
            TestDatabase::create("shareholder"),
            TestDatabase::create("ledger"),
            TestDatabase::create("orchestrator"),
        );
        let env = |database: &TestDatabase| {
            let mut env = service_env(&database.url, &namespace);
            env.insert(
                "OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(),
                otlp_endpoint.to_owned(),
            );
            env.insert("OTEL_BSP_SCHEDULE_DELAY".to_owned(), "200".to_owned());
            env.insert("OTEL_TRACES_SAMPLER".to_owned(), "always_on".to_owned());
            env
        };
        let mut orchestrator_env = env(&orchestrator_db);
        orchestrator_env.insert(
            "QAPMAP_SAGA_STEP_DEADLINE_MS".to_owned(),
            STEP_DEADLINE_MS.to_owned(),
        );
        let (equity_env, shareholder_env, ledger_env) =
            (env(&equity_db), env(&shareholder_db), env(&ledger_db));
        let (equity, shareholder, ledger, orchestrator) = tokio::join!(
            spawn("qapmap-equity", &equity_env),
            spawn("qapmap-shareholder", &shareholder_env),
            spawn("qapmap-ledger", &ledger_env),
            spawn("qapmap-orchestrator", &orchestrator_env),
        );
        Self {
            _namespace: namespace,
            equity,
            shareholder,
            ledger,
            orchestrator,
            orchestrator_env,
            _databases: vec![equity_db, shareholder_db, ledger_db, orchestrator_db],
            company_id: Uuid::new_v4(),
        }
    }

    /// SIGKILLs the orchestrator and starts a new one on the same database.
    pub(crate) async fn kill_and_restart_orchestrator(&mut self) {
        self.orchestrator.kill().await;
        assert_eq!(
            self.orchestrator
                .wait_for_exit(Duration::from_secs(5))
                .await,
            None,
            "SIGKILL leaves no exit code"
        );
        self.orchestrator = spawn("qapmap-orchestrator", &self.orchestrator_env).await;
    }

    fn equity_client(
        &self,
    ) -> EquityServiceClient<qapmap_runtime::auth::client::AuthenticatedChannel> {
        EquityServiceClient::new(self.equity.authenticated_channel())
    }

    pub(crate) fn sagas(
        &self,
    ) -> SagaServiceClient<qapmap_runtime::auth::client::AuthenticatedChannel> {
        SagaServiceClient::new(self.orchestrator.authenticated_channel())
    }

    /// As the saga tests' set-up: a class of 10,000,000 shares in equity and
    /// the ledger, a plan, an employee paid as `payment_ref` says, and a grant
    /// of 48,000 options vesting from 2021-01-01 (so all vested today).
    pub(crate) async fn set_up_company(&self, payment_ref: &str) -> Company {
        let company_id = self.company_id.to_string();
        let class = self
            .equity_client()
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
        LedgerServiceClient::new(self.ledger.authenticated_channel())
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
            .equity_client()
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
        let stakeholder = ShareholderServiceClient::new(self.shareholder.authenticated_channel())
            .create_stakeholder(shareholder::CreateStakeholderRequest {
                request_id: request_id(),
                company_id: company_id.clone(),
                stakeholder_type: shareholder::StakeholderType::Individual as i32,
                name: STAKEHOLDER_NAME.to_owned(),
                email: STAKEHOLDER_EMAIL.to_owned(),
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
            .equity_client()
            .grant_award(equity::GrantAwardRequest {
                request_id: request_id(),
                company_id: company_id.clone(),
                plan_id: plan.id.clone(),
                stakeholder_id: stakeholder.id.clone(),
                award_type: equity::AwardType::Nso as i32,
                quantity: dec("48000"),
                exercise_price: usd("1.5"),
                grant_date: date(2021, 1, 1),
                expiration_date: date(2031, 1, 1),
                termination_windows: vec![],
                early_exercisable: false,
                vesting_terms: Some(four_year_one_year_cliff()),
                vesting_start_date: date(2021, 1, 1),
            })
            .await
            .expect("award granted")
            .into_inner()
            .award
            .expect("award");
        Company { award_id: award.id }
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

    pub(crate) async fn get_saga(&self, saga_id: &str) -> saga::Saga {
        self.sagas()
            .get_saga(saga::GetSagaRequest {
                company_id: self.company_id.to_string(),
                saga_id: saga_id.to_owned(),
            })
            .await
            .expect("saga readable")
            .into_inner()
            .saga
            .expect("saga")
    }

    /// Polls the saga until it is completed, compensated or parked.
    pub(crate) async fn finished(&self, saga_id: &str) -> saga::Saga {
        let last = std::cell::RefCell::new(None);
        let done = qapmap_testkit::eventually(SAGA_PATIENCE, || async {
            let saga = self.get_saga(saga_id).await;
            let state = saga::SagaState::try_from(saga.state).expect("a state");
            *last.borrow_mut() = Some(saga);
            matches!(
                state,
                saga::SagaState::Completed | saga::SagaState::Compensated | saga::SagaState::Parked
            )
        })
        .await;
        let saga = last.into_inner().expect("read at least once");
        assert!(done, "saga {saga_id} did not finish: {saga:#?}");
        saga
    }
}

async fn spawn(binary: &str, env: &HashMap<String, String>) -> ServiceProcess {
    let path = workspace_binary(binary);
    ServiceProcess::spawn(path.to_str().expect("utf-8 path"), env).await
}
