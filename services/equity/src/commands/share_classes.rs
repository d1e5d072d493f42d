//! Share classes and their authorized shares.

use qapmap_proto::equity::v1 as proto;
use qapmap_proto::messaging::v1::domain_event::Event;
use qapmap_runtime::decimal::{self, Money};
use qapmap_runtime::idempotency::RequestKey;
use qapmap_runtime::pagination::PageRequest;
use qapmap_runtime::{ApiError, date, ids};
use rust_decimal::Decimal;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{CommandError, Equity, Started, check_version, finish, method, start};
use crate::convert;
use crate::events::{self, EventContext};
use crate::store::{self, ShareClassRow};

const AGGREGATE: &str = "share_class";

pub async fn create(
    equity: &Equity,
    request: proto::CreateShareClassRequest,
) -> Result<proto::CreateShareClassResponse, CommandError> {
    let company_id = ids::parse("company_id", &request.company_id)?;
    let key = RequestKey::new(
        company_id,
        &request.request_id,
        method!("CreateShareClass"),
        &request,
    )?;
    let name = convert::name("name", &request.name)?;
    let class_type = convert::share_class_type(request.class_type)?;
    let authorized = convert::quantity("authorized_shares", request.authorized_shares.as_ref())?;
    let par_value = Money::required("par_value", request.par_value.as_ref())?;
    let conversion_ratio =
        decimal::optional("conversion_ratio", request.conversion_ratio.as_ref())?
            .unwrap_or(Decimal::ONE);
    if conversion_ratio <= Decimal::ZERO {
        return Err(ApiError::invalid("conversion_ratio", "must be above 0").into());
    }
    let effective_date =
        date::effective_or_today("effective_date", request.effective_date.as_ref())?;

    let mut transaction = match start(equity, &key).await? {
        Started::Repeat(response) => return Ok(response),
        Started::Fresh(transaction) => transaction,
    };
    let id = ids::new_id();
    let inserted = sqlx::query(
        "INSERT INTO share_classes (company_id, id, name, class_type, authorized_shares, par_value, par_currency,
             seniority, conversion_ratio, effective_date, version)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 1) ON CONFLICT (company_id, name) DO NOTHING",
    )
    .bind(company_id)
    .bind(id)
    .bind(&name)
    .bind(class_type.as_str())
    .bind(authorized.value())
    .bind(par_value.amount)
    .bind(par_value.currency.to_string())
    .bind(request.seniority)
    .bind(conversion_ratio)
    .bind(effective_date)
    .execute(&mut *transaction)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(CommandError::Duplicate(format!(
            "a share class named {name:?} exists"
        )));
    }
    let share_class = load(&mut transaction, company_id, id).await?.to_proto()?;
    let context = context(company_id, id, 1, effective_date, &request.request_id);
    let event = Event::ShareClassCreated(proto::ShareClassCreated {
        share_class: Some(share_class.clone()),
    });
    events::record(&mut transaction, &equity.subjects, &context, event).await?;
    finish(
        transaction,
        &key,
        proto::CreateShareClassResponse {
            share_class: Some(share_class),
        },
    )
    .await
}

pub async fn adjust_authorized(
    equity: &Equity,
    request: proto::AdjustAuthorizedSharesRequest,
) -> Result<proto::AdjustAuthorizedSharesResponse, CommandError> {
    let company_id = ids::parse("company_id", &request.company_id)?;
    let key = RequestKey::new(
        company_id,
        &request.request_id,
        method!("AdjustAuthorizedShares"),
        &request,
    )?;
    let id = ids::parse("share_class_id", &request.share_class_id)?;
    let authorized = convert::quantity(
        "new_authorized_shares",
        request.new_authorized_shares.as_ref(),
    )?;
    let effective_date =
        date::effective_or_today("effective_date", request.effective_date.as_ref())?;

    let mut transaction = match start(equity, &key).await? {
        Started::Repeat(response) => return Ok(response),
        Started::Fresh(transaction) => transaction,
    };
    let current = store::share_class(&mut transaction, company_id, id, true)
        .await?
        .ok_or(CommandError::NotFound {
            resource: "share class",
            id,
        })?;
    check_version(request.expected_version, current.version)?;
    let reserved = store::reserved_for_plans(&mut transaction, company_id, id).await?;
    if authorized.value() < reserved {
        return Err(CommandError::refused(
            "authorized_below_plan_reserves",
            format!("equity plans reserve {reserved} shares of this class"),
        ));
    }
    let version = current.version + 1;
    sqlx::query("UPDATE share_classes SET authorized_shares = $3, version = $4 WHERE company_id = $1 AND id = $2")
        .bind(company_id)
        .bind(id)
        .bind(authorized.value())
        .bind(version)
        .execute(&mut *transaction)
        .await?;
    let context = context(company_id, id, version, effective_date, &request.request_id);
    let event = Event::AuthorizedSharesAdjusted(proto::AuthorizedSharesAdjusted {
        share_class_id: id.to_string(),
        new_authorized_shares: Some(decimal::to_proto(authorized.value())),
    });
    events::record(&mut transaction, &equity.subjects, &context, event).await?;
    let share_class = load(&mut transaction, company_id, id).await?.to_proto()?;
    finish(
        transaction,
        &key,
        proto::AdjustAuthorizedSharesResponse {
            share_class: Some(share_class),
        },
    )
    .await
}

pub async fn get(
    equity: &Equity,
    request: proto::GetShareClassRequest,
) -> Result<proto::GetShareClassResponse, CommandError> {
    let company_id = ids::parse("company_id", &request.company_id)?;
    let id = ids::parse("share_class_id", &request.share_class_id)?;
    let mut connection = super::read(equity, company_id).await?;
    let share_class = load(&mut connection, company_id, id).await?.to_proto()?;
    connection.commit().await?;
    Ok(proto::GetShareClassResponse {
        share_class: Some(share_class),
    })
}

pub async fn list(
    equity: &Equity,
    request: proto::ListShareClassesRequest,
) -> Result<proto::ListShareClassesResponse, CommandError> {
    let company_id = ids::parse("company_id", &request.company_id)?;
    let page = PageRequest::parse(request.page_size, &request.page_token)?;
    let after = page
        .after
        .as_deref()
        .map(|key| ids::parse("page_token", key))
        .transpose()?;
    let mut connection = super::read(equity, company_id).await?;
    let mut rows =
        store::share_classes_page(&mut connection, company_id, after, page.fetch_limit()).await?;
    connection.commit().await?;
    let next_page_token = page.finish(&mut rows, |row| row.id.to_string());
    let share_classes = rows
        .iter()
        .map(ShareClassRow::to_proto)
        .collect::<Result<_, _>>()?;
    Ok(proto::ListShareClassesResponse {
        share_classes,
        next_page_token,
    })
}

async fn load(
    connection: &mut PgConnection,
    company_id: Uuid,
    id: Uuid,
) -> Result<ShareClassRow, CommandError> {
    store::share_class(connection, company_id, id, false)
        .await?
        .ok_or(CommandError::NotFound {
            resource: "share class",
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
