//! Starting the service in process with a sandbox gateway the test keeps a
//! handle on, and the checks the tests share.

use std::sync::Arc;

use qapmap_proto::common::v1 as common;
use qapmap_proto::shareholder::v1 as proto;
use qapmap_proto::shareholder::v1::shareholder_service_client::ShareholderServiceClient;
use qapmap_runtime::ServiceName;
use qapmap_runtime::auth::client::AuthenticatedChannel as Channel;
use qapmap_shareholder::payment::{SandboxGateway, SandboxSettings};
use qapmap_testkit::in_process::RunningService;
use sqlx::PgPool;
use tonic_types::StatusExt;
use uuid::Uuid;

pub(crate) struct TestApp {
    pub(crate) service: RunningService,
    pub(crate) client: ShareholderServiceClient<Channel>,
    pub(crate) gateway: Arc<SandboxGateway>,
    pub(crate) pool: PgPool,
    /// Every test acts for a fresh company of its own.
    pub(crate) company_id: Uuid,
}

pub(crate) async fn spawn_app() -> TestApp {
    spawn_app_with(SandboxSettings::default()).await
}

pub(crate) async fn spawn_app_with(sandbox: SandboxSettings) -> TestApp {
    let gateway = Arc::new(SandboxGateway::new(sandbox));
    let service_gateway = gateway.clone();
    let service = RunningService::start(ServiceName::Shareholder, move |settings| {
        qapmap_shareholder::build_with_gateway(settings, service_gateway)
    })
    .await;
    let client = ShareholderServiceClient::new(service.channel());
    let pool = service.database_pool().await;
    TestApp {
        service,
        client,
        gateway,
        pool,
        company_id: Uuid::now_v7(),
    }
}

impl TestApp {
    /// A valid request for an employee who started on 2023-01-15.
    pub(crate) fn new_stakeholder(&self, request_id: &str) -> proto::CreateStakeholderRequest {
        proto::CreateStakeholderRequest {
            request_id: request_id.to_owned(),
            company_id: self.company_id.to_string(),
            stakeholder_type: proto::StakeholderType::Individual as i32,
            name: "Ada Lovelace".to_owned(),
            email: "ada@example.com".to_owned(),
            relationships: vec![proto::StakeholderRelationship::Employee as i32],
            employment_start_date: Some(date(2023, 1, 15)),
            payment_instruction_ref: "bank:ada".to_owned(),
        }
    }

    pub(crate) async fn create(
        &self,
        request: proto::CreateStakeholderRequest,
    ) -> proto::Stakeholder {
        self.client
            .clone()
            .create_stakeholder(request)
            .await
            .expect("stakeholder created")
            .into_inner()
            .stakeholder
            .expect("stakeholder in response")
    }

    /// An employee whose payment instruction is `instruction`.
    pub(crate) async fn stakeholder_paying_with(&self, instruction: &str) -> proto::Stakeholder {
        let mut request = self.new_stakeholder(&format!("create-{}", Uuid::now_v7()));
        request.payment_instruction_ref = instruction.to_owned();
        self.create(request).await
    }

    pub(crate) async fn get(&self, stakeholder_id: &str) -> proto::Stakeholder {
        self.client
            .clone()
            .get_stakeholder(proto::GetStakeholderRequest {
                company_id: self.company_id.to_string(),
                stakeholder_id: stakeholder_id.to_owned(),
            })
            .await
            .expect("stakeholder found")
            .into_inner()
            .stakeholder
            .expect("stakeholder in response")
    }

    /// Rows in one of the service's tables (all companies: each test has its
    /// own database).
    pub(crate) async fn count(&self, table: &str) -> i64 {
        let sql = format!("SELECT count(*) FROM {table}");
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(&self.pool)
            .await
            .expect("count rows")
    }

    /// Row counts of every table a command may write.
    pub(crate) async fn written(&self) -> [i64; 5] {
        [
            self.count("stakeholders").await,
            self.count("stakeholder_events").await,
            self.count("payments").await,
            self.count("outbox").await,
            self.count("idempotent_requests").await,
        ]
    }
}

pub(crate) fn date(year: i32, month: i32, day: i32) -> common::Date {
    common::Date { year, month, day }
}

pub(crate) fn money(amount: &str, currency: &str) -> common::Money {
    common::Money {
        amount: Some(common::Decimal {
            value: amount.to_owned(),
        }),
        currency: currency.to_owned(),
    }
}

/// The field named by an INVALID_ARGUMENT's BadRequest detail.
pub(crate) fn bad_field(status: &tonic::Status) -> String {
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    let details = status.get_error_details();
    let bad_request = details.bad_request().expect("a BadRequest detail");
    bad_request.field_violations[0].field.clone()
}

/// The reason code of a FAILED_PRECONDITION.
pub(crate) fn reason(status: &tonic::Status) -> String {
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    status
        .get_error_details()
        .error_info()
        .expect("an ErrorInfo detail")
        .reason
        .clone()
}
