//! Repurchase programs: a board-approved cap on shares and price, and a
//! date window. Sagas reserve and confirm capacity (see `saga_operations`).

use qapmap_proto::equity::v1 as proto;
use qapmap_proto::messaging::v1::domain_event::Event;
use qapmap_runtime::decimal::Money;
use qapmap_runtime::idempotency::RequestKey;
use qapmap_runtime::{ApiError, date, ids};

use super::{CommandError, Equity, Started, finish, method, start};
use crate::convert;
use crate::events::{self, EventContext};
use crate::store;

pub(crate) const AGGREGATE: &str = "repurchase_program";

pub async fn create(
    equity: &Equity,
    request: proto::CreateRepurchaseProgramRequest,
) -> Result<proto::CreateRepurchaseProgramResponse, CommandError> {
    let company_id = ids::parse("company_id", &request.company_id)?;
    let key = RequestKey::new(
        company_id,
        &request.request_id,
        method!("CreateRepurchaseProgram"),
        &request,
    )?;
    let share_class_id = ids::parse("share_class_id", &request.share_class_id)?;
    let max_shares = convert::quantity("max_shares", request.max_shares.as_ref())?;
    let max_price = Money::required("max_price_per_share", request.max_price_per_share.as_ref())?;
    let start_date = date::required("start_date", request.start_date.as_ref())?;
    let end_date = date::required("end_date", request.end_date.as_ref())?;
    if end_date < start_date {
        return Err(ApiError::invalid("end_date", "is before start_date").into());
    }

    let mut transaction = match start(equity, &key).await? {
        Started::Repeat(response) => return Ok(response),
        Started::Fresh(transaction) => transaction,
    };
    store::share_class(&mut transaction, company_id, share_class_id, false)
        .await?
        .ok_or(CommandError::NotFound {
            resource: "share class",
            id: share_class_id,
        })?;
    let id = ids::new_id();
    sqlx::query(
        "INSERT INTO repurchase_programs (company_id, id, share_class_id, max_shares, max_price_per_share,
             price_currency, start_date, end_date, version)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1)",
    )
    .bind(company_id)
    .bind(id)
    .bind(share_class_id)
    .bind(max_shares.value())
    .bind(max_price.amount)
    .bind(max_price.currency.to_string())
    .bind(start_date)
    .bind(end_date)
    .execute(&mut *transaction)
    .await?;
    let program = load(&mut transaction, company_id, id).await?;
    let context = EventContext {
        company_id,
        aggregate_type: AGGREGATE,
        aggregate_id: id,
        aggregate_version: 1,
        effective_date: start_date,
        cause: request.request_id.clone(),
    };
    let event = Event::RepurchaseProgramCreated(proto::RepurchaseProgramCreated {
        program: Some(program.clone()),
    });
    events::record(&mut transaction, &equity.subjects, &context, event).await?;
    finish(
        transaction,
        &key,
        proto::CreateRepurchaseProgramResponse {
            program: Some(program),
        },
    )
    .await
}

pub async fn get(
    equity: &Equity,
    request: proto::GetRepurchaseProgramRequest,
) -> Result<proto::GetRepurchaseProgramResponse, CommandError> {
    let company_id = ids::parse("company_id", &request.company_id)?;
    let id = ids::parse("program_id", &request.program_id)?;
    let mut connection = super::read(equity, company_id).await?;
    let program = load(&mut connection, company_id, id).await?;
    connection.commit().await?;
    Ok(proto::GetRepurchaseProgramResponse {
        program: Some(program),
    })
}

async fn load(
    connection: &mut sqlx::PgConnection,
    company_id: uuid::Uuid,
    id: uuid::Uuid,
) -> Result<proto::RepurchaseProgram, CommandError> {
    let row = store::program(connection, company_id, id, false)
        .await?
        .ok_or(CommandError::NotFound {
            resource: "repurchase program",
            id,
        })?;
    Ok(row.to_proto()?)
}
