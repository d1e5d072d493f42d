//! Equity plans and their option pools. Pool sizes are absolute totals, as
//! OCF's StockPlanPoolAdjustment; every plan's pool counts against its
//! class's authorized shares.

use qapmap_proto::equity::v1 as proto;
use qapmap_proto::messaging::v1::domain_event::Event;
use qapmap_runtime::decimal;
use qapmap_runtime::idempotency::RequestKey;
use qapmap_runtime::pagination::PageRequest;
use qapmap_runtime::{date, ids};
use rust_decimal::Decimal;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{CommandError, Equity, Started, check_version, finish, method, start};
use crate::convert;
use crate::events::{self, EventContext};
use crate::store::{self, PlanRow};

const AGGREGATE: &str = "equity_plan";

pub async fn create(
    equity: &Equity,
    request: proto::CreateEquityPlanRequest,
) -> Result<proto::CreateEquityPlanResponse, CommandError> {
    let company_id = ids::parse("company_id", &request.company_id)?;
    let key = RequestKey::new(
        company_id,
        &request.request_id,
        method!("CreateEquityPlan"),
        &request,
    )?;
    let name = convert::name("name", &request.name)?;
    let share_class_id = ids::parse("share_class_id", &request.share_class_id)?;
    let reserved = convert::quantity(
        "initial_shares_reserved",
        request.initial_shares_reserved.as_ref(),
    )?;
    let behavior = convert::cancellation_behavior(request.cancellation_behavior)?;
    let approval =
        date::effective_or_today("board_approval_date", request.board_approval_date.as_ref())?;

    let mut transaction = match start(equity, &key).await? {
        Started::Repeat(response) => return Ok(response),
        Started::Fresh(transaction) => transaction,
    };
    ensure_within_authorized(
        &mut transaction,
        company_id,
        share_class_id,
        reserved.value(),
    )
    .await?;
    let id = ids::new_id();
    let inserted = sqlx::query(
        "INSERT INTO equity_plans (company_id, id, name, share_class_id, pool_size, cancellation_behavior,
             board_approval_date, version)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 1) ON CONFLICT (company_id, name) DO NOTHING",
    )
    .bind(company_id)
    .bind(id)
    .bind(&name)
    .bind(share_class_id)
    .bind(reserved.value())
    .bind(behavior.as_str())
    .bind(approval)
    .execute(&mut *transaction)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(CommandError::Duplicate(format!(
            "an equity plan named {name:?} exists"
        )));
    }
    let plan = load(&mut transaction, company_id, id, false).await?;
    let event = Event::EquityPlanCreated(proto::EquityPlanCreated {
        plan: Some(plan.to_proto()?),
    });
    let context = context(company_id, id, 1, approval, &request.request_id);
    events::record(&mut transaction, &equity.subjects, &context, event).await?;
    let response = proto::CreateEquityPlanResponse {
        plan: Some(plan.to_proto()?),
    };
    finish(transaction, &key, response).await
}

/// Locks the class and refuses a pool change that would reserve more than
/// the class authorizes. `added` is the change in reserved shares.
async fn ensure_within_authorized(
    connection: &mut PgConnection,
    company_id: Uuid,
    share_class_id: Uuid,
    added: Decimal,
) -> Result<(), CommandError> {
    let class = store::share_class(connection, company_id, share_class_id, true)
        .await?
        .ok_or(CommandError::NotFound {
            resource: "share class",
            id: share_class_id,
        })?;
    let reserved = store::reserved_for_plans(connection, company_id, share_class_id).await?;
    if reserved + added > class.authorized_shares {
        return Err(CommandError::refused(
            "exceeds_authorized_shares",
            format!(
                "the class authorizes {} shares and plans already reserve {reserved}",
                class.authorized_shares.normalize()
            ),
        ));
    }
    Ok(())
}

pub async fn adjust_pool(
    equity: &Equity,
    request: proto::AdjustPoolRequest,
) -> Result<proto::AdjustPoolResponse, CommandError> {
    let company_id = ids::parse("company_id", &request.company_id)?;
    let key = RequestKey::new(
        company_id,
        &request.request_id,
        method!("AdjustPool"),
        &request,
    )?;
    let id = ids::parse("plan_id", &request.plan_id)?;
    let new_size = decimal::non_negative("new_pool_size", request.new_pool_size.as_ref())?;
    let effective_date =
        date::effective_or_today("effective_date", request.effective_date.as_ref())?;

    let mut transaction = match start(equity, &key).await? {
        Started::Repeat(response) => return Ok(response),
        Started::Fresh(transaction) => transaction,
    };
    let plan = load(&mut transaction, company_id, id, true).await?;
    check_version(request.expected_version, plan.version)?;
    super::not_before(
        effective_date,
        plan.board_approval_date,
        "plan's board approval",
    )?;
    let consumed = plan.granted - plan.returned;
    if new_size < consumed {
        return Err(CommandError::refused(
            "pool_below_granted",
            format!(
                "{} options are granted from this pool",
                consumed.normalize()
            ),
        ));
    }
    ensure_within_authorized(
        &mut transaction,
        company_id,
        plan.share_class_id,
        new_size - plan.pool_size,
    )
    .await?;
    let version = plan.version + 1;
    sqlx::query("UPDATE equity_plans SET pool_size = $2, version = $3 WHERE id = $1")
        .bind(id)
        .bind(new_size)
        .bind(version)
        .execute(&mut *transaction)
        .await?;
    let event = Event::PoolAdjusted(proto::PoolAdjusted {
        plan_id: id.to_string(),
        new_pool_size: Some(decimal::to_proto(new_size)),
        share_class_id: plan.share_class_id.to_string(),
        previous_pool_size: Some(decimal::to_proto(plan.pool_size)),
    });
    let context = context(company_id, id, version, effective_date, &request.request_id);
    events::record(&mut transaction, &equity.subjects, &context, event).await?;
    let plan = load(&mut transaction, company_id, id, false).await?;
    let response = proto::AdjustPoolResponse {
        plan: Some(plan.to_proto()?),
        pool: Some(plan.pool_summary()),
    };
    finish(transaction, &key, response).await
}

pub async fn get(
    equity: &Equity,
    request: proto::GetEquityPlanRequest,
) -> Result<proto::GetEquityPlanResponse, CommandError> {
    let company_id = ids::parse("company_id", &request.company_id)?;
    let id = ids::parse("plan_id", &request.plan_id)?;
    let mut connection = super::read(equity, company_id).await?;
    let plan = load(&mut connection, company_id, id, false).await?;
    connection.commit().await?;
    Ok(proto::GetEquityPlanResponse {
        plan: Some(plan.to_proto()?),
        pool: Some(plan.pool_summary()),
    })
}

pub async fn list(
    equity: &Equity,
    request: proto::ListEquityPlansRequest,
) -> Result<proto::ListEquityPlansResponse, CommandError> {
    let company_id = ids::parse("company_id", &request.company_id)?;
    let page = PageRequest::parse(request.page_size, &request.page_token)?;
    let after = page
        .after
        .as_deref()
        .map(|key| ids::parse("page_token", key))
        .transpose()?;
    let mut connection = super::read(equity, company_id).await?;
    let mut rows =
        store::plans_page(&mut connection, company_id, after, page.fetch_limit()).await?;
    connection.commit().await?;
    let next_page_token = page.finish(&mut rows, |row| row.id.to_string());
    let plans = rows
        .iter()
        .map(PlanRow::to_proto)
        .collect::<Result<_, _>>()?;
    Ok(proto::ListEquityPlansResponse {
        plans,
        next_page_token,
    })
}

pub(crate) async fn load(
    connection: &mut PgConnection,
    company_id: Uuid,
    id: Uuid,
    lock: bool,
) -> Result<PlanRow, CommandError> {
    store::plan(connection, company_id, id, lock)
        .await?
        .ok_or(CommandError::NotFound {
            resource: "equity plan",
            id,
        })
}

fn context(
    company_id: Uuid,
    id: Uuid,
    version: i64,
    effective_date: chrono::NaiveDate,
    cause: &str,
) -> EventContext {
    EventContext {
        company_id,
        aggregate_type: AGGREGATE,
        aggregate_id: id,
        aggregate_version: version,
        effective_date,
        cause: cause.to_owned(),
    }
}
