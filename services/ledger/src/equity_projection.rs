//! The equity service's facts that the cap table needs: pools and options
//! (or RSUs) outstanding per holder, by effective date. Fed by the equity
//! service's domain events; each event is applied once (by event id).

use chrono::NaiveDate;
use qapmap_proto::equity::v1 as equity;
use qapmap_proto::messaging::v1::{DomainEvent, domain_event::Event};
use qapmap_runtime::{date, decimal, ids};
use rust_decimal::Decimal;
use sqlx::PgConnection;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error("event field {field} is invalid: {why}")]
    Invalid { field: String, why: String },
    /// The plan's creation has not arrived yet; redeliver later.
    #[error("plan {0} is not known yet")]
    UnknownPlan(Uuid),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl From<qapmap_runtime::ApiError> for ProjectionError {
    fn from(error: qapmap_runtime::ApiError) -> Self {
        match error {
            qapmap_runtime::ApiError::InvalidArgument { field, description } => Self::Invalid {
                field,
                why: description,
            },
            other => Self::Invalid {
                field: String::new(),
                why: other.to_string(),
            },
        }
    }
}

/// What applying an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The projection changed (its version was bumped).
    Changed,
    /// The event was seen before, or carries nothing the cap table uses.
    Unchanged,
}

/// One change to options outstanding and pool available.
struct Movement {
    plan_id: Uuid,
    share_class_id: Uuid,
    stakeholder_id: Option<Uuid>,
    outstanding_delta: Decimal,
    pool_available_delta: Decimal,
}

/// Whether the projection uses this kind of event: those
/// [`apply_equity_event`] applies. Every other kind leaves it unchanged, so
/// its consumer need not open a transaction for one.
pub fn projects(event: Option<&Event>) -> bool {
    matches!(
        event,
        Some(
            Event::EquityPlanCreated(_)
                | Event::PoolAdjusted(_)
                | Event::AwardGranted(_)
                | Event::AwardQuantityCancelled(_)
                | Event::OptionsExercised(_)
        )
    )
}

/// Applies an equity domain event in the caller's transaction. Every event
/// lands as a movement (a change of options outstanding and pool
/// available), so events that overtake one another, once their plan is
/// known, give the same sums: a pool adjustment moves by its own
/// `new − previous`, not towards an absolute size.
pub async fn apply_equity_event(
    tx: &mut PgConnection,
    event: &DomainEvent,
) -> Result<Applied, ProjectionError> {
    let company_id = ids::parse("company_id", &event.company_id)?;
    if event.event_id.is_empty() {
        return Err(ProjectionError::Invalid {
            field: "event_id".into(),
            why: "is required".into(),
        });
    }
    let effective_date = date::effective_or_today("effective_date", event.effective_date.as_ref())?;
    if !projects(event.event.as_ref()) {
        return Ok(Applied::Unchanged);
    }
    let inserted = sqlx::query(
        "INSERT INTO applied_equity_events (company_id, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(company_id)
    .bind(&event.event_id)
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 0 {
        return Ok(Applied::Unchanged);
    }
    let movement = match &event.event {
        Some(Event::EquityPlanCreated(created)) => plan_created(tx, company_id, created).await?,
        Some(Event::PoolAdjusted(adjusted)) => pool_adjusted(tx, company_id, adjusted).await?,
        Some(Event::AwardGranted(granted)) => award_granted(tx, company_id, granted).await?,
        Some(Event::AwardQuantityCancelled(cancelled)) => {
            award_cancelled(tx, company_id, cancelled).await?
        }
        Some(Event::OptionsExercised(exercised)) => {
            options_exercised(tx, company_id, exercised).await?
        }
        // The kinds `projects` rejects returned above.
        _ => return Ok(Applied::Unchanged),
    };
    record(tx, company_id, &event.event_id, effective_date, movement).await?;
    Ok(Applied::Changed)
}

async fn plan_created(
    tx: &mut PgConnection,
    company_id: Uuid,
    created: &equity::EquityPlanCreated,
) -> Result<Movement, ProjectionError> {
    let plan = created
        .plan
        .as_ref()
        .ok_or_else(|| invalid("equity_plan_created.plan"))?;
    let plan_id = ids::parse("equity_plan_created.plan.id", &plan.id)?;
    let share_class_id = ids::parse(
        "equity_plan_created.plan.share_class_id",
        &plan.share_class_id,
    )?;
    let pool_size = decimal::non_negative(
        "equity_plan_created.plan.pool_size",
        plan.pool_size.as_ref(),
    )?;
    sqlx::query(
        "INSERT INTO equity_plans (company_id, plan_id, share_class_id, pool_size) VALUES ($1, $2, $3, $4)",
    )
    .bind(company_id)
    .bind(plan_id)
    .bind(share_class_id)
    .bind(pool_size)
    .execute(&mut *tx)
    .await?;
    Ok(Movement {
        plan_id,
        share_class_id,
        stakeholder_id: None,
        outstanding_delta: Decimal::ZERO,
        pool_available_delta: pool_size,
    })
}

async fn pool_adjusted(
    tx: &mut PgConnection,
    company_id: Uuid,
    adjusted: &equity::PoolAdjusted,
) -> Result<Movement, ProjectionError> {
    let plan_id = ids::parse("pool_adjusted.plan_id", &adjusted.plan_id)?;
    let new_size = decimal::non_negative(
        "pool_adjusted.new_pool_size",
        adjusted.new_pool_size.as_ref(),
    )?;
    let (share_class_id, stored_size) = plan(tx, company_id, plan_id).await?;
    // Events from before `previous_pool_size` existed can only move to the
    // stored size.
    let previous_size = match adjusted.previous_pool_size.as_ref() {
        Some(previous) => {
            decimal::non_negative("pool_adjusted.previous_pool_size", Some(previous))?
        }
        None => stored_size,
    };
    let change = new_size - previous_size;
    sqlx::query(
        "UPDATE equity_plans SET pool_size = pool_size + $3 WHERE company_id = $1 AND plan_id = $2",
    )
    .bind(company_id)
    .bind(plan_id)
    .bind(change)
    .execute(&mut *tx)
    .await?;
    Ok(Movement {
        plan_id,
        share_class_id,
        stakeholder_id: None,
        outstanding_delta: Decimal::ZERO,
        pool_available_delta: change,
    })
}

async fn award_granted(
    tx: &mut PgConnection,
    company_id: Uuid,
    granted: &equity::AwardGranted,
) -> Result<Movement, ProjectionError> {
    let award = granted
        .award
        .as_ref()
        .ok_or_else(|| invalid("award_granted.award"))?;
    let plan_id = ids::parse("award_granted.award.plan_id", &award.plan_id)?;
    let stakeholder_id = ids::parse("award_granted.award.stakeholder_id", &award.stakeholder_id)?;
    let quantity = decimal::positive("award_granted.award.quantity", award.quantity.as_ref())?;
    let (share_class_id, _) = plan(tx, company_id, plan_id).await?;
    Ok(holder_movement(
        plan_id,
        share_class_id,
        stakeholder_id,
        -quantity,
        -quantity,
    ))
}

async fn award_cancelled(
    tx: &mut PgConnection,
    company_id: Uuid,
    cancelled: &equity::AwardQuantityCancelled,
) -> Result<Movement, ProjectionError> {
    let plan_id = ids::parse("award_quantity_cancelled.plan_id", &cancelled.plan_id)?;
    let stakeholder_id = ids::parse(
        "award_quantity_cancelled.stakeholder_id",
        &cancelled.stakeholder_id,
    )?;
    let quantity = decimal::positive(
        "award_quantity_cancelled.quantity",
        cancelled.quantity.as_ref(),
    )?;
    let (share_class_id, _) = plan(tx, company_id, plan_id).await?;
    let returned = if cancelled.returned_to_pool {
        quantity
    } else {
        Decimal::ZERO
    };
    Ok(holder_movement(
        plan_id,
        share_class_id,
        stakeholder_id,
        quantity,
        returned,
    ))
}

async fn options_exercised(
    tx: &mut PgConnection,
    company_id: Uuid,
    exercised: &equity::OptionsExercised,
) -> Result<Movement, ProjectionError> {
    let plan_id = ids::parse("options_exercised.plan_id", &exercised.plan_id)?;
    let stakeholder_id = ids::parse(
        "options_exercised.stakeholder_id",
        &exercised.stakeholder_id,
    )?;
    let quantity = decimal::positive("options_exercised.quantity", exercised.quantity.as_ref())?;
    let (share_class_id, _) = plan(tx, company_id, plan_id).await?;
    // Exercised options become shares (posted by the ledger); they never return to the pool.
    Ok(holder_movement(
        plan_id,
        share_class_id,
        stakeholder_id,
        quantity,
        Decimal::ZERO,
    ))
}

/// A holder's options change: `leaving` leaves outstanding (negative: joins),
/// `to_pool` goes back to the pool available.
fn holder_movement(
    plan_id: Uuid,
    share_class_id: Uuid,
    stakeholder_id: Uuid,
    leaving: Decimal,
    to_pool: Decimal,
) -> Movement {
    Movement {
        plan_id,
        share_class_id,
        stakeholder_id: Some(stakeholder_id),
        outstanding_delta: -leaving,
        pool_available_delta: to_pool,
    }
}

/// The plan's share class and current pool size, locked for this transaction.
async fn plan(
    tx: &mut PgConnection,
    company_id: Uuid,
    plan_id: Uuid,
) -> Result<(Uuid, Decimal), ProjectionError> {
    sqlx::query_as("SELECT share_class_id, pool_size FROM equity_plans WHERE company_id = $1 AND plan_id = $2 FOR UPDATE")
        .bind(company_id)
        .bind(plan_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(ProjectionError::UnknownPlan(plan_id))
}

async fn record(
    tx: &mut PgConnection,
    company_id: Uuid,
    event_id: &str,
    effective_date: NaiveDate,
    movement: Movement,
) -> sqlx::Result<()> {
    // A new projection version makes every cached cap table of the company
    // unreachable; one statement with the movement.
    sqlx::query(
        "WITH movement AS (
             INSERT INTO option_movements (company_id, event_id, plan_id, share_class_id, stakeholder_id,
                                           effective_date, outstanding_delta, pool_available_delta)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         )
         INSERT INTO projection_versions (company_id, version) VALUES ($1, 1)
         ON CONFLICT (company_id) DO UPDATE SET version = projection_versions.version + 1",
    )
    .bind(company_id)
    .bind(event_id)
    .bind(movement.plan_id)
    .bind(movement.share_class_id)
    .bind(movement.stakeholder_id)
    .bind(effective_date)
    .bind(movement.outstanding_delta)
    .bind(movement.pool_available_delta)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

fn invalid(field: &str) -> ProjectionError {
    ProjectionError::Invalid {
        field: field.to_owned(),
        why: "is required".to_owned(),
    }
}
