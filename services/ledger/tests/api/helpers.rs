//! A running ledger with a client, a company of its own, and shortcuts.

use qapmap_proto::common::v1 as common;
use qapmap_proto::ledger::v1 as proto;
use qapmap_proto::ledger::v1::ledger_service_client::LedgerServiceClient;
use qapmap_runtime::ServiceName;
use qapmap_runtime::auth::client::AuthenticatedChannel as Channel;
use qapmap_testkit::database::TestDatabase;
use qapmap_testkit::in_process::RunningService;
use qapmap_testkit::nats::TestNamespace;
use sqlx::PgPool;
use uuid::Uuid;

pub(crate) struct TestLedger {
    pub(crate) service: RunningService,
    pub(crate) client: LedgerServiceClient<Channel>,
    pub(crate) pool: PgPool,
    pub(crate) company_id: Uuid,
}

impl TestLedger {
    pub(crate) async fn start() -> Self {
        let service = RunningService::start(ServiceName::Ledger, qapmap_ledger::build).await;
        Self::around(service).await
    }

    /// A ledger whose cap-table cache is the Redis at `redis_url`.
    pub(crate) async fn start_with_redis(redis_url: String) -> Self {
        let database = TestDatabase::create("ledger").await;
        let service = RunningService::start_with(
            ServiceName::Ledger,
            database,
            TestNamespace::new(),
            move |mut settings| {
                settings.redis_url = redis_url;
                qapmap_ledger::build(settings)
            },
        )
        .await;
        Self::around(service).await
    }

    /// A second process on this ledger's database and namespace (a replica),
    /// serving the same company.
    pub(crate) async fn replica(&self) -> Self {
        let service = RunningService::start_with(
            ServiceName::Ledger,
            self.service.database.share(),
            self.service.namespace.share(),
            qapmap_ledger::build,
        )
        .await;
        Self {
            company_id: self.company_id,
            ..Self::around(service).await
        }
    }

    /// One page of the cap table.
    pub(crate) async fn cap_table_page(
        &self,
        as_of: Option<common::Date>,
        page_size: i32,
        page_token: String,
    ) -> Result<proto::GetCapTableResponse, tonic::Status> {
        let request = proto::GetCapTableRequest {
            company_id: self.company_id.to_string(),
            as_of,
            page_size,
            page_token,
        };
        Ok(self
            .client
            .clone()
            .get_cap_table(request)
            .await?
            .into_inner())
    }

    pub(crate) async fn around(service: RunningService) -> Self {
        let client = LedgerServiceClient::new(service.channel());
        let pool = service.database_pool().await;
        Self {
            service,
            client,
            pool,
            company_id: Uuid::now_v7(),
        }
    }

    pub(crate) async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(&self.pool)
            .await
            .expect("count rows")
    }

    pub(crate) async fn authorize(
        &self,
        class: Uuid,
        shares: &str,
        on: common::Date,
    ) -> proto::JournalEntry {
        let request = proto::AdjustAuthorizedSharesRequest {
            request_id: Uuid::now_v7().to_string(),
            company_id: self.company_id.to_string(),
            share_class_id: class.to_string(),
            new_authorized_shares: Some(dec(shares)),
            effective_date: Some(on),
        };
        let response = self
            .client
            .clone()
            .adjust_authorized_shares(request)
            .await
            .expect("authorize");
        response.into_inner().entry.expect("entry")
    }

    pub(crate) async fn issue(
        &self,
        class: Uuid,
        holder: Uuid,
        quantity: &str,
        on: common::Date,
    ) -> Result<proto::JournalEntry, tonic::Status> {
        let request = proto::IssueSharesRequest {
            request_id: Uuid::now_v7().to_string(),
            company_id: self.company_id.to_string(),
            share_class_id: class.to_string(),
            stakeholder_id: holder.to_string(),
            quantity: Some(dec(quantity)),
            price_per_share: None,
            effective_date: Some(on),
        };
        let response = self.client.clone().issue_shares(request).await?;
        Ok(response.into_inner().entry.expect("entry"))
    }

    pub(crate) async fn cap_table(
        &self,
        as_of: Option<common::Date>,
    ) -> proto::GetCapTableResponse {
        let request = proto::GetCapTableRequest {
            company_id: self.company_id.to_string(),
            as_of,
            page_size: 500,
            page_token: String::new(),
        };
        self.client
            .clone()
            .get_cap_table(request)
            .await
            .expect("cap table")
            .into_inner()
    }

    pub(crate) async fn balance(&self, holder: Uuid, class: Uuid) -> String {
        let request = proto::GetBalanceRequest {
            company_id: self.company_id.to_string(),
            account: Some(stakeholder_account(holder, class)),
            as_of: None,
        };
        let response = self
            .client
            .clone()
            .get_balance(request)
            .await
            .expect("balance")
            .into_inner();
        response.balance.expect("balance").value
    }
}

pub(crate) fn stakeholder_account(holder: Uuid, class: Uuid) -> proto::AccountRef {
    proto::AccountRef {
        owner: Some(proto::account_ref::Owner::StakeholderId(holder.to_string())),
        unit: Some(proto::account_ref::Unit::ShareClassId(class.to_string())),
    }
}

pub(crate) fn dec(value: &str) -> common::Decimal {
    common::Decimal {
        value: value.to_owned(),
    }
}

pub(crate) fn date(year: i32, month: i32, day: i32) -> common::Date {
    common::Date { year, month, day }
}

/// The reason code of a FAILED_PRECONDITION.
pub(crate) fn reason(status: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    status
        .get_error_details()
        .error_info()
        .expect("error info")
        .reason
        .clone()
}

/// The row of `holder` in `class`, if any.
pub(crate) fn row(
    table: &proto::GetCapTableResponse,
    holder: Uuid,
    class: Uuid,
) -> Option<&proto::CapTableRow> {
    table.rows.iter().find(|row| {
        row.stakeholder_id == holder.to_string() && row.share_class_id == class.to_string()
    })
}

pub(crate) fn value(decimal: &Option<common::Decimal>) -> &str {
    &decimal.as_ref().expect("decimal").value
}
