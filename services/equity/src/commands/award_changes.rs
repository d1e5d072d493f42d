//! What happens to an award after its grant: surrender, termination,
//! vesting events, acceleration and expiry. Each locks the award and then its
//! plan (always in that order), decides with pure domain logic, and records
//! one event per change, bumping the award's version for each.

use chrono::NaiveDate;
use qapmap_proto::equity::v1 as proto;
use qapmap_proto::messaging::v1::domain_event::Event;
use qapmap_runtime::decimal;
use qapmap_runtime::idempotency::RequestKey;
use qapmap_runtime::{ApiError, date, ids};
use rust_decimal::Decimal;
use uuid::Uuid;

use super::awards::{self, record_award_event};
use super::{CommandError, Equity, Started, finish, method, plans, split_cancelled, start};
use crate::convert;
use crate::domain::{Award, AwardStatus, Position};
use crate::store::{self, PlanRow};
use crate::vesting::{Acceleration, Trigger};

/// What a change decided: its events, and how much it cancelled.
struct Decision {
    events: Vec<Event>,
    cancelled: Decimal,
}

/// The award and plan a change works on, with the position on its date.
struct Target<'a> {
    award: &'a mut Award,
    plan: &'a PlanRow,
    position: Position,
    on: NaiveDate,
}

/// Identifies the award a request changes.
struct ChangeRequest<'a> {
    key: RequestKey,
    company_id: Uuid,
    award_id: Uuid,
    on: NaiveDate,
    cause: &'a str,
}

/// Runs one change in its own transaction and answers with the award and
/// its position on the change's date.
async fn run<R, D, B>(
    equity: &Equity,
    change: ChangeRequest<'_>,
    decide: D,
    respond: B,
) -> Result<R, CommandError>
where
    R: prost::Message + Default,
    D: FnOnce(Target<'_>) -> Result<Decision, CommandError>,
    B: FnOnce(proto::Award, proto::AwardPosition) -> R,
{
    let mut transaction = match start(equity, &change.key).await? {
        Started::Repeat(response) => return Ok(response),
        Started::Fresh(transaction) => transaction,
    };
    let mut award =
        awards::load(&mut transaction, change.company_id, change.award_id, true).await?;
    let plan = plans::load(&mut transaction, change.company_id, award.plan_id, true).await?;
    super::not_before(change.on, award.grant_date, "award's grant date")?;
    let loaded_version = award.version;
    let position = award.position(change.on);
    let target = Target {
        award: &mut award,
        plan: &plan,
        position,
        on: change.on,
    };
    let decision = decide(target)?;
    for event in decision.events {
        record_award_event(
            &mut transaction,
            &equity.subjects,
            &mut award,
            change.on,
            change.cause,
            event,
        )
        .await?;
    }
    store::update_award(&mut transaction, &award, loaded_version).await?;
    let (returned, retired) = split_cancelled(plan.behavior()?, decision.cancelled);
    store::add_to_plan_counters(
        &mut transaction,
        plan.id,
        Decimal::ZERO,
        Decimal::ZERO,
        returned,
        retired,
    )
    .await?;
    let position = convert::position_to_proto(&award.position(change.on));
    let response = respond(convert::award_to_proto(&award), position);
    finish(transaction, &change.key, response).await
}

/// The AwardQuantityCancelled event of `quantity` leaving for `cause`.
pub(crate) fn cancelled_event(
    award: &Award,
    plan: &PlanRow,
    quantity: Decimal,
    cause: &str,
) -> Result<Event, CommandError> {
    Ok(Event::AwardQuantityCancelled(
        proto::AwardQuantityCancelled {
            award_id: award.id.to_string(),
            plan_id: plan.id.to_string(),
            stakeholder_id: award.stakeholder_id.to_string(),
            quantity: Some(decimal::to_proto(quantity)),
            returned_to_pool: plan.behavior()? == crate::domain::CancellationBehavior::ReturnToPool,
            cause: cause.to_owned(),
            share_class_id: plan.share_class_id.to_string(),
        },
    ))
}

/// Closes an award once nothing is left to vest, exercise or confirm.
fn close_if_spent(award: &mut Award, on: NaiveDate) {
    let position = award.position(on);
    if position.unvested.is_zero()
        && position.vested_unexercised.is_zero()
        && award.reserved.is_zero()
    {
        award.status = AwardStatus::Closed;
    }
}

fn change_request<'a, M: prost::Message>(
    company: &str,
    request_id: &'a str,
    award_id: &str,
    on: Option<&qapmap_proto::common::v1::Date>,
    on_field: &str,
    method: &'static str,
    request: &M,
) -> Result<ChangeRequest<'a>, ApiError> {
    let company_id = ids::parse("company_id", company)?;
    Ok(ChangeRequest {
        key: RequestKey::new(company_id, request_id, method, request)?,
        company_id,
        award_id: ids::parse("award_id", award_id)?,
        on: date::effective_or_today(on_field, on)?,
        cause: request_id,
    })
}

pub async fn surrender(
    equity: &Equity,
    request: proto::SurrenderAwardRequest,
) -> Result<proto::SurrenderAwardResponse, CommandError> {
    let change = change_request(
        &request.company_id,
        &request.request_id,
        &request.award_id,
        request.effective_date.as_ref(),
        "effective_date",
        method!("SurrenderAward"),
        &request,
    )?;
    let quantity = convert::quantity("quantity", request.quantity.as_ref())?.value();
    let decide = |target: Target<'_>| {
        let Target {
            award,
            plan,
            position,
            on,
        } = target;
        let surrenderable = position.unvested + position.vested_unexercised - award.reserved;
        if award.status == AwardStatus::Closed || quantity > surrenderable {
            return Err(CommandError::refused(
                "surrender_exceeds_outstanding",
                format!(
                    "{} options may be surrendered",
                    surrenderable.max(Decimal::ZERO).normalize()
                ),
            ));
        }
        // Unvested options go first: the holder keeps what they have earned longest.
        let from_unvested = quantity.min(position.unvested);
        award.cancelled_unvested += from_unvested;
        award.cancelled_vested += quantity - from_unvested;
        close_if_spent(award, on);
        let event = cancelled_event(award, plan, quantity, "surrendered")?;
        Ok(Decision {
            events: vec![event],
            cancelled: quantity,
        })
    };
    run(equity, change, decide, |award, position| {
        proto::SurrenderAwardResponse {
            award: Some(award),
            position: Some(position),
        }
    })
    .await
}

pub async fn terminate(
    equity: &Equity,
    request: proto::RecordAwardTerminationRequest,
) -> Result<proto::RecordAwardTerminationResponse, CommandError> {
    let change = change_request(
        &request.company_id,
        &request.request_id,
        &request.award_id,
        request.termination_date.as_ref(),
        "termination_date",
        method!("RecordAwardTermination"),
        &request,
    )?;
    if request.termination_date.is_none() {
        return Err(ApiError::invalid("termination_date", "is required").into());
    }
    let reason = convert::termination_reason("reason", request.reason)?;
    let decide = |target: Target<'_>| {
        let Target {
            award,
            plan,
            position,
            on,
        } = target;
        if award.status != AwardStatus::Active {
            return Err(CommandError::refused(
                "award_not_active",
                "the award is already terminated or closed",
            ));
        }
        let forfeited = position.unvested;
        award.cancelled_unvested += forfeited;
        award.termination = Some((on, reason));
        award.status = AwardStatus::Terminated;
        close_if_spent(award, on);
        let mut events = vec![Event::AwardTerminated(proto::AwardTerminated {
            award_id: award.id.to_string(),
            termination_date: Some(date::to_proto(on)),
            reason: convert::termination_reason_to_proto(reason) as i32,
            exercisable_until: convert::optional_date(award.exercisable_until()),
        })];
        if forfeited > Decimal::ZERO {
            events.push(cancelled_event(
                award,
                plan,
                forfeited,
                "forfeited_at_termination",
            )?);
        }
        Ok(Decision {
            events,
            cancelled: forfeited,
        })
    };
    run(equity, change, decide, |award, position| {
        proto::RecordAwardTerminationResponse {
            award: Some(award),
            position: Some(position),
        }
    })
    .await
}

pub async fn record_vesting_event(
    equity: &Equity,
    request: proto::RecordVestingEventRequest,
) -> Result<proto::RecordVestingEventResponse, CommandError> {
    let change = change_request(
        &request.company_id,
        &request.request_id,
        &request.award_id,
        request.effective_date.as_ref(),
        "effective_date",
        method!("RecordVestingEvent"),
        &request,
    )?;
    if request.condition_id.is_empty() {
        return Err(ApiError::invalid("condition_id", "is required").into());
    }
    let condition_id = request.condition_id.clone();
    let decide = |target: Target<'_>| {
        let Target { award, on, .. } = target;
        let is_event = award.vesting_terms.as_ref().is_some_and(|terms| {
            terms
                .conditions
                .iter()
                .any(|c| c.id == condition_id && c.trigger == Trigger::Event)
        });
        if !is_event {
            return Err(ApiError::invalid(
                "condition_id",
                "is not an EVENT condition of the award's vesting terms",
            )
            .into());
        }
        if award.status != AwardStatus::Active {
            return Err(CommandError::refused(
                "award_not_active",
                "vesting has stopped for this award",
            ));
        }
        if award.vesting_events.contains_key(&condition_id) {
            return Err(CommandError::refused(
                "vesting_event_already_recorded",
                "this vesting event was already recorded",
            ));
        }
        award.vesting_events.insert(condition_id.clone(), on);
        let event = Event::VestingEventRecorded(proto::VestingEventRecorded {
            award_id: award.id.to_string(),
            condition_id: condition_id.clone(),
        });
        Ok(Decision {
            events: vec![event],
            cancelled: Decimal::ZERO,
        })
    };
    run(equity, change, decide, |award, position| {
        proto::RecordVestingEventResponse {
            award: Some(award),
            position: Some(position),
        }
    })
    .await
}

pub async fn accelerate(
    equity: &Equity,
    request: proto::AccelerateVestingRequest,
) -> Result<proto::AccelerateVestingResponse, CommandError> {
    let change = change_request(
        &request.company_id,
        &request.request_id,
        &request.award_id,
        request.effective_date.as_ref(),
        "effective_date",
        method!("AccelerateVesting"),
        &request,
    )?;
    let quantity = convert::quantity("quantity", request.quantity.as_ref())?.value();
    let reason = request.reason.clone();
    let decide = |target: Target<'_>| {
        let Target {
            award,
            position,
            on,
            ..
        } = target;
        if award.status != AwardStatus::Active {
            return Err(CommandError::refused(
                "award_not_active",
                "vesting has stopped for this award",
            ));
        }
        if quantity > position.unvested {
            return Err(CommandError::refused(
                "acceleration_exceeds_unvested",
                format!("{} options are unvested", position.unvested.normalize()),
            ));
        }
        award
            .accelerations
            .push(Acceleration { date: on, quantity });
        let event = Event::VestingAccelerated(proto::VestingAccelerated {
            award_id: award.id.to_string(),
            quantity: Some(decimal::to_proto(quantity)),
            reason: reason.clone(),
        });
        Ok(Decision {
            events: vec![event],
            cancelled: Decimal::ZERO,
        })
    };
    run(equity, change, decide, |award, position| {
        proto::AccelerateVestingResponse {
            award: Some(award),
            position: Some(position),
        }
    })
    .await
}

pub async fn record_expiry(
    equity: &Equity,
    request: proto::RecordAwardExpiryRequest,
) -> Result<proto::RecordAwardExpiryResponse, CommandError> {
    let change = change_request(
        &request.company_id,
        &request.request_id,
        &request.award_id,
        request.effective_date.as_ref(),
        "effective_date",
        method!("RecordAwardExpiry"),
        &request,
    )?;
    let decide = |target: Target<'_>| {
        let Target {
            award,
            plan,
            position,
            on,
        } = target;
        if award.status == AwardStatus::Closed || !award.is_expired_on(on) {
            return Err(CommandError::refused(
                "award_not_expired",
                format!(
                    "the award is exercisable until {:?}",
                    award.exercisable_until()
                ),
            ));
        }
        // Options reserved by a running exercise stay until the saga ends.
        let lapsed_vested = position.vested_unexercised - award.reserved;
        let lapsed_unvested = position.unvested;
        award.cancelled_vested += lapsed_vested;
        award.cancelled_unvested += lapsed_unvested;
        close_if_spent(award, on);
        let lapsed = lapsed_vested + lapsed_unvested;
        let events = if lapsed > Decimal::ZERO {
            vec![cancelled_event(award, plan, lapsed, "expired")?]
        } else {
            Vec::new()
        };
        Ok(Decision {
            events,
            cancelled: lapsed,
        })
    };
    run(equity, change, decide, |award, position| {
        proto::RecordAwardExpiryResponse {
            award: Some(award),
            position: Some(position),
        }
    })
    .await
}
