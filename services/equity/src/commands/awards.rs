//! Granting awards and reading them with their vesting and counts. A grant
//! locks its plan's row, so two grants racing for the last options run one
//! after the other and the second sees what the first took.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use qapmap_proto::equity::v1 as proto;
use qapmap_proto::messaging::v1::domain_event::Event;
use qapmap_runtime::auth::AuthorizedCall;
use qapmap_runtime::decimal::Money;
use qapmap_runtime::idempotency::RequestKey;
use qapmap_runtime::messaging::Subjects;
use qapmap_runtime::pagination::PageRequest;
use qapmap_runtime::{ApiError, date, ids};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{CommandError, Equity, Started, finish, method, plans, start};
use crate::convert;
use crate::domain::{Award, AwardStatus, AwardType};
use crate::events::{self, EventContext};
use crate::store::{self, AwardFilter};

pub(crate) const AGGREGATE: &str = "award";

/// A grant request, parsed.
struct NewAward {
    company_id: Uuid,
    plan_id: Uuid,
    award: Award,
}

fn parse_grant(request: &proto::GrantAwardRequest) -> Result<NewAward, ApiError> {
    let company_id = ids::parse("company_id", &request.company_id)?;
    let plan_id = ids::parse("plan_id", &request.plan_id)?;
    let stakeholder_id = ids::parse("stakeholder_id", &request.stakeholder_id)?;
    let award_type = convert::award_type(request.award_type)?;
    let quantity = convert::quantity("quantity", request.quantity.as_ref())?;
    let exercise_price = match (award_type, request.exercise_price.as_ref()) {
        (AwardType::Rsu, Some(_)) => {
            return Err(ApiError::invalid(
                "exercise_price",
                "must be empty for RSUs",
            ));
        }
        (AwardType::Rsu, None) => None,
        (_, price) => Some(Money::required("exercise_price", price)?),
    };
    let grant_date = date::effective_or_today("grant_date", request.grant_date.as_ref())?;
    let expiration_date = date::optional("expiration_date", request.expiration_date.as_ref())?;
    if expiration_date.is_some_and(|expiry| expiry < grant_date) {
        return Err(ApiError::invalid("expiration_date", "is before grant_date"));
    }
    let vesting_terms = request
        .vesting_terms
        .as_ref()
        .map(convert::vesting_terms)
        .transpose()?;
    let vesting_start = date::optional("vesting_start_date", request.vesting_start_date.as_ref())?
        .unwrap_or(grant_date);
    let award = Award {
        id: ids::new_id(),
        company_id,
        plan_id,
        stakeholder_id,
        award_type,
        quantity: quantity.value(),
        exercise_price,
        grant_date,
        expiration_date,
        vesting_start,
        early_exercisable: request.early_exercisable,
        vesting_terms,
        termination_windows: convert::termination_windows(&request.termination_windows)?,
        vesting_events: BTreeMap::new(),
        accelerations: Vec::new(),
        exercised: Default::default(),
        reserved: Default::default(),
        cancelled_vested: Default::default(),
        cancelled_unvested: Default::default(),
        termination: None,
        status: AwardStatus::Active,
        version: 1,
    };
    Ok(NewAward {
        company_id,
        plan_id,
        award,
    })
}

pub async fn grant(
    equity: &Equity,
    request: proto::GrantAwardRequest,
) -> Result<proto::GrantAwardResponse, CommandError> {
    let NewAward {
        company_id,
        plan_id,
        award,
    } = parse_grant(&request)?;
    let key = RequestKey::new(
        company_id,
        &request.request_id,
        method!("GrantAward"),
        &request,
    )?;
    let mut transaction = match start(equity, &key).await? {
        Started::Repeat(response) => return Ok(response),
        Started::Fresh(transaction) => transaction,
    };
    let plan = plans::load(&mut transaction, company_id, plan_id, true).await?;
    super::not_before(
        award.grant_date,
        plan.board_approval_date,
        "plan's board approval",
    )?;
    if award.quantity > plan.available() {
        return Err(CommandError::refused(
            "pool_exhausted",
            format!(
                "the pool has {} options available",
                plan.available().normalize()
            ),
        ));
    }
    store::insert_award(&mut transaction, &award).await?;
    store::add_to_plan_counters(
        &mut transaction,
        plan_id,
        award.quantity,
        0.into(),
        0.into(),
        0.into(),
    )
    .await?;
    let granted = convert::award_to_proto(&award);
    let event = Event::AwardGranted(proto::AwardGranted {
        award: Some(granted.clone()),
        share_class_id: plan.share_class_id.to_string(),
    });
    let context = award_context(&award, award.grant_date, &request.request_id);
    events::record(&mut transaction, &equity.subjects, &context, event).await?;
    finish(
        transaction,
        &key,
        proto::GrantAwardResponse {
            award: Some(granted),
        },
    )
    .await
}

/// The event context of the award's current version.
pub(crate) fn award_context(award: &Award, effective_date: NaiveDate, cause: &str) -> EventContext {
    EventContext {
        company_id: award.company_id,
        aggregate_type: AGGREGATE,
        aggregate_id: award.id,
        aggregate_version: award.version,
        effective_date,
        cause: cause.to_owned(),
    }
}

/// Bumps the award's version and records `event` at it.
pub(crate) async fn record_award_event(
    connection: &mut PgConnection,
    subjects: &Subjects,
    award: &mut Award,
    effective_date: NaiveDate,
    cause: &str,
    event: Event,
) -> sqlx::Result<()> {
    award.version += 1;
    events::record(
        connection,
        subjects,
        &award_context(award, effective_date, cause),
        event,
    )
    .await
}

/// One award with its position on `as_of`. `caller` is the call's
/// authorization: an employee (self-service) sees only their own awards,
/// anyone else's is NOT_FOUND as if it did not exist.
pub async fn get(
    equity: &Equity,
    caller: &AuthorizedCall,
    request: proto::GetAwardRequest,
) -> Result<proto::GetAwardResponse, CommandError> {
    let company_id = ids::parse("company_id", &request.company_id)?;
    let id = ids::parse("award_id", &request.award_id)?;
    let as_of = date::effective_or_today("as_of", request.as_of.as_ref())?;
    let mut connection = super::read(equity, company_id).await?;
    let award = load(&mut connection, company_id, id, false).await?;
    connection.commit().await?;
    caller.require_own("award", id, award.stakeholder_id)?;
    Ok(proto::GetAwardResponse {
        award: Some(convert::award_to_proto(&award)),
        position: Some(convert::position_to_proto(&award.position(as_of))),
        tranches: award
            .tranches()
            .iter()
            .map(convert::tranche_to_proto)
            .collect(),
    })
}

/// A page of the company's awards. An employee's list is forced to their
/// own stakeholder: a filter naming someone else finds nothing.
pub async fn list(
    equity: &Equity,
    caller: &AuthorizedCall,
    request: proto::ListAwardsRequest,
) -> Result<proto::ListAwardsResponse, CommandError> {
    let company_id = ids::parse("company_id", &request.company_id)?;
    let mut filter = AwardFilter {
        plan_id: ids::optional("plan_id", &request.plan_id)?,
        stakeholder_id: ids::optional("stakeholder_id", &request.stakeholder_id)?,
    };
    let page = PageRequest::parse(request.page_size, &request.page_token)?;
    let after = page
        .after
        .as_deref()
        .map(|key| ids::parse("page_token", key))
        .transpose()?;
    if let Some(own) = caller.self_service() {
        if filter.stakeholder_id.is_some_and(|asked| asked != own) {
            return Ok(proto::ListAwardsResponse::default());
        }
        filter.stakeholder_id = Some(own);
    }
    let mut connection = super::read(equity, company_id).await?;
    let mut awards = store::awards_page(
        &mut connection,
        company_id,
        filter,
        after,
        page.fetch_limit(),
    )
    .await?;
    connection.commit().await?;
    let next_page_token = page.finish(&mut awards, |award| award.id.to_string());
    Ok(proto::ListAwardsResponse {
        awards: awards.iter().map(convert::award_to_proto).collect(),
        next_page_token,
    })
}

pub(crate) async fn load(
    connection: &mut PgConnection,
    company_id: Uuid,
    id: Uuid,
    lock: bool,
) -> Result<Award, CommandError> {
    store::award(connection, company_id, id, lock)
        .await?
        .ok_or(CommandError::NotFound {
            resource: "award",
            id,
        })
}
