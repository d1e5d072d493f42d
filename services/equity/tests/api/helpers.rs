//! Starts the equity service with its own database and offers the requests
//! and checks the feature modules share.

use qapmap_equity::commands::Equity;
use qapmap_proto::common::v1::{Date, Decimal, Money};
use qapmap_proto::equity::v1 as proto;
use qapmap_proto::equity::v1::equity_service_client::EquityServiceClient;
use qapmap_runtime::ServiceName;
use qapmap_runtime::auth::client::AuthenticatedChannel as Channel;
use qapmap_runtime::messaging::Subjects;
pub(crate) use qapmap_testkit::fixtures::four_year_one_year_cliff;
use qapmap_testkit::in_process::RunningService;
use sqlx::PgPool;
use tonic_types::StatusExt;
use uuid::Uuid;

pub(crate) struct TestApp {
    pub(crate) service: RunningService,
    pub(crate) client: EquityServiceClient<Channel>,
    pub(crate) pool: PgPool,
    pub(crate) company_id: Uuid,
}

pub(crate) fn dec(value: &str) -> Option<Decimal> {
    Some(Decimal {
        value: value.to_owned(),
    })
}

pub(crate) fn date(year: i32, month: i32, day: i32) -> Option<Date> {
    Some(Date { year, month, day })
}

pub(crate) fn usd(amount: &str) -> Option<Money> {
    Some(Money {
        amount: dec(amount),
        currency: "USD".to_owned(),
    })
}

pub(crate) fn value(decimal: &Option<Decimal>) -> String {
    decimal
        .as_ref()
        .map(|d| d.value.clone())
        .unwrap_or_default()
}

pub(crate) fn request_id() -> String {
    Uuid::new_v4().to_string()
}

/// The field a BadRequest detail names.
pub(crate) fn bad_field(status: &tonic::Status) -> String {
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    let details = status.get_error_details();
    details
        .bad_request()
        .expect("a BadRequest detail")
        .field_violations[0]
        .field
        .clone()
}

/// The ErrorInfo reason of a FAILED_PRECONDITION.
pub(crate) fn reason(status: &tonic::Status) -> String {
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    status
        .get_error_details()
        .error_info()
        .expect("ErrorInfo")
        .reason
        .clone()
}

impl TestApp {
    pub(crate) async fn spawn() -> Self {
        let service = RunningService::start(ServiceName::Equity, qapmap_equity::build).await;
        let client = EquityServiceClient::new(service.channel());
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(8)
            .connect(&service.database.url)
            .await
            .expect("connect to the service database");
        Self {
            service,
            client,
            pool,
            company_id: Uuid::new_v4(),
        }
    }

    /// The command context the saga operations and this test share.
    pub(crate) fn equity(&self) -> Equity {
        Equity {
            pool: self.pool.clone(),
            subjects: Subjects::new(self.service.namespace.name.clone()),
        }
    }

    pub(crate) fn class_request(&self, authorized: &str) -> proto::CreateShareClassRequest {
        proto::CreateShareClassRequest {
            request_id: request_id(),
            company_id: self.company_id.to_string(),
            name: format!("Common {}", request_id()),
            class_type: proto::ShareClassType::Common as i32,
            authorized_shares: dec(authorized),
            par_value: usd("0.0001"),
            seniority: 1,
            conversion_ratio: dec("1"),
            effective_date: date(2020, 1, 1),
        }
    }

    pub(crate) async fn create_class(&mut self, authorized: &str) -> proto::ShareClass {
        let request = self.class_request(authorized);
        let response = self
            .client
            .create_share_class(request)
            .await
            .expect("class created");
        response.into_inner().share_class.expect("share class")
    }

    pub(crate) fn plan_request(
        &self,
        class_id: &str,
        pool: &str,
        behavior: proto::CancellationBehavior,
    ) -> proto::CreateEquityPlanRequest {
        proto::CreateEquityPlanRequest {
            request_id: request_id(),
            company_id: self.company_id.to_string(),
            name: format!("Plan {}", request_id()),
            share_class_id: class_id.to_owned(),
            initial_shares_reserved: dec(pool),
            cancellation_behavior: behavior as i32,
            board_approval_date: date(2020, 1, 1),
        }
    }

    /// A class of 10,000,000 authorized shares and a plan reserving `pool`.
    pub(crate) async fn create_plan(
        &mut self,
        pool: &str,
        behavior: proto::CancellationBehavior,
    ) -> proto::EquityPlan {
        let class = self.create_class("10000000").await;
        let request = self.plan_request(&class.id, pool, behavior);
        let response = self
            .client
            .create_equity_plan(request)
            .await
            .expect("plan created");
        response.into_inner().plan.expect("plan")
    }

    /// The options tutorial's grant: an ISO at $0.10, granted and vesting
    /// from 2022-12-31, expiring after ten years, 3 months to exercise after
    /// a voluntary termination.
    pub(crate) fn grant_request(&self, plan_id: &str, quantity: &str) -> proto::GrantAwardRequest {
        proto::GrantAwardRequest {
            request_id: request_id(),
            company_id: self.company_id.to_string(),
            plan_id: plan_id.to_owned(),
            stakeholder_id: Uuid::new_v4().to_string(),
            award_type: proto::AwardType::Iso as i32,
            quantity: dec(quantity),
            exercise_price: usd("0.10"),
            grant_date: date(2022, 12, 31),
            expiration_date: date(2032, 12, 30),
            termination_windows: vec![proto::TerminationWindow {
                reason: proto::TerminationReason::VoluntaryOther as i32,
                period: 3,
                period_type: proto::PeriodType::Months as i32,
            }],
            early_exercisable: false,
            vesting_terms: Some(four_year_one_year_cliff()),
            vesting_start_date: date(2022, 12, 31),
        }
    }

    pub(crate) async fn grant(&mut self, plan_id: &str, quantity: &str) -> proto::Award {
        let request = self.grant_request(plan_id, quantity);
        let response = self
            .client
            .grant_award(request)
            .await
            .expect("award granted");
        response.into_inner().award.expect("award")
    }

    pub(crate) async fn pool_summary(&mut self, plan_id: &str) -> proto::PoolSummary {
        let request = proto::GetEquityPlanRequest {
            company_id: self.company_id.to_string(),
            plan_id: plan_id.to_owned(),
        };
        self.client
            .get_equity_plan(request)
            .await
            .expect("plan")
            .into_inner()
            .pool
            .expect("pool")
    }

    pub(crate) async fn position(
        &mut self,
        award_id: &str,
        as_of: Option<Date>,
    ) -> proto::GetAwardResponse {
        let request = proto::GetAwardRequest {
            company_id: self.company_id.to_string(),
            award_id: award_id.to_owned(),
            as_of,
        };
        self.client
            .get_award(request)
            .await
            .expect("award")
            .into_inner()
    }

    /// Rows in `table` (a name from this crate's migrations or the runtime's).
    pub(crate) async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(&self.pool)
            .await
            .expect("count rows")
    }

    /// Rows in every table a command may write, to prove a refusal wrote nothing.
    pub(crate) async fn written(&self) -> [i64; 6] {
        [
            self.count("share_classes").await,
            self.count("equity_plans").await,
            self.count("awards").await,
            self.count("equity_events").await,
            self.count("outbox").await,
            self.count("idempotent_requests").await,
        ]
    }
}

/// Checks pool_size = available + outstanding + exercised - returned, and
/// live = outstanding - returned - retired.
pub(crate) fn assert_pool_invariant(pool: &proto::PoolSummary) {
    let number = |d: &Option<Decimal>| value(d).parse::<rust_decimal::Decimal>().expect("decimal");
    assert_eq!(
        number(&pool.available) + number(&pool.outstanding) + number(&pool.exercised)
            - number(&pool.returned),
        number(&pool.pool_size),
        "{pool:?}"
    );
    assert_eq!(
        number(&pool.live),
        number(&pool.outstanding) - number(&pool.returned) - number(&pool.retired)
    );
}

/// Checks quantity = vested_unexercised + unvested + exercised + forfeited.
pub(crate) fn assert_award_invariant(award: &proto::Award, position: &proto::AwardPosition) {
    let number = |d: &Option<Decimal>| value(d).parse::<rust_decimal::Decimal>().expect("decimal");
    assert_eq!(
        number(&position.vested_unexercised)
            + number(&position.unvested)
            + number(&position.exercised)
            + number(&position.forfeited),
        number(&award.quantity),
        "{position:?}"
    );
}
