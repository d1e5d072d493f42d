//! The steps of the exercise and buyback sagas that equity performs
//! (DESIGN.md, Sagas), as plain functions on the caller's transaction. The
//! orchestrator's command handler calls them and commits; so each step's
//! effect, its idempotency record and its events commit together.
//!
//! Each is idempotent by (company, saga_id, step): a repeat returns the first
//! result and changes nothing. A business refusal is a [`SagaError::Rejected`]
//! with a stable snake_case reason; the caller rolls back, so a refused step
//! writes nothing and a repeat is judged afresh.
//!
//! A release (the compensation of a reserve, sent with the reserve's step)
//! may come without the reservation id when the reserve timed out: it finds
//! the reservation by (saga_id, step), and when there is none it leaves a
//! tombstone ([`crate::saga_tombstones`]) so that a reserve landing later is
//! refused with `compensated_before_applied`. A resource of another company
//! is refused as `not_found`.

use chrono::NaiveDate;
use qapmap_proto::equity::v1 as proto;
use qapmap_proto::messaging::v1::domain_event::Event;
use qapmap_runtime::decimal::{self, Currency, Money};
use qapmap_runtime::messaging::Subjects;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::commands::{CommandError, awards, plans};
use crate::domain::{AwardStatus, AwardType};
use crate::events::{self, EventContext};
use crate::saga_tombstones::{self, COMPENSATED_BEFORE_APPLIED};
use crate::store::{self, ProgramRow};

/// Identifies one step of one saga, for one company.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SagaStep {
    pub company_id: Uuid,
    pub saga_id: Uuid,
    pub step: i32,
}

/// Why a saga step did not happen.
#[derive(Debug, thiserror::Error)]
pub enum SagaError {
    /// A business rule refused it; retrying will not help. `reason` is the
    /// SagaReply reason code.
    #[error("{reason}: {description}")]
    Rejected {
        reason: &'static str,
        description: String,
    },
    /// The database failed; the step may be retried.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl SagaError {
    fn rejected(reason: &'static str, description: impl Into<String>) -> Self {
        Self::Rejected {
            reason,
            description: description.into(),
        }
    }

    /// The reason code of a rejection.
    pub fn reason_code(&self) -> Option<&'static str> {
        match self {
            Self::Rejected { reason, .. } => Some(reason),
            Self::Database(_) => None,
        }
    }
}

impl From<CommandError> for SagaError {
    fn from(error: CommandError) -> Self {
        match error {
            CommandError::NotFound { resource, id } => {
                Self::rejected("not_found", format!("{resource} {id} not found"))
            }
            CommandError::Refused {
                reason,
                description,
            } => Self::rejected(reason, description),
            CommandError::Database(database) => Self::Database(database),
            other => Self::rejected("invalid_step", other.to_string()),
        }
    }
}

/// Options held for an exercise, and what the next steps need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionReservation {
    pub reservation_id: Uuid,
    pub award_id: Uuid,
    pub quantity: Decimal,
    pub share_class_id: Uuid,
    pub stakeholder_id: Uuid,
    pub exercise_price: Money,
}

impl OptionReservation {
    pub fn to_proto(&self) -> proto::ReserveOptionsResult {
        proto::ReserveOptionsResult {
            reservation_id: self.reservation_id.to_string(),
            share_class_id: self.share_class_id.to_string(),
            stakeholder_id: self.stakeholder_id.to_string(),
            exercise_price: Some(self.exercise_price.to_proto()),
        }
    }
}

/// What a release or confirm step did; stored as the step's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepOutcome {
    /// None when a release found nothing to release (it left a tombstone).
    pub reservation_id: Option<Uuid>,
    pub quantity: Decimal,
    /// "released", "confirmed", or [`NOTHING_TO_RELEASE`].
    pub status: String,
}

/// The status of a release whose reserve never happened.
pub const NOTHING_TO_RELEASE: &str = "nothing_to_release";

impl StepOutcome {
    fn of(reservation_id: Uuid, quantity: Decimal, status: &str) -> Self {
        Self {
            reservation_id: Some(reservation_id),
            quantity,
            status: status.to_owned(),
        }
    }
}

/// The reason code of an employee's saga reaching for someone else's award
/// (or shares).
pub const NOT_OWN_AWARD: &str = "not_own_award";

/// Refuses a step of an employee's own saga (`owner`: their stakeholder id)
/// that concerns another stakeholder's records.
fn refuse_unless_own(owner: Option<Uuid>, stakeholder_id: Uuid) -> Result<(), SagaError> {
    match owner {
        Some(own) if own != stakeholder_id => Err(SagaError::rejected(
            NOT_OWN_AWARD,
            "the saga's initiator may only act on their own awards and shares",
        )),
        _ => Ok(()),
    }
}

/// Refuses a forward step whose compensation already ran (see the module docs).
async fn refuse_if_compensated(
    connection: &mut PgConnection,
    step: SagaStep,
) -> Result<(), SagaError> {
    if saga_tombstones::find(connection, step).await?.is_some() {
        return Err(compensated_before_applied());
    }
    Ok(())
}

fn compensated_before_applied() -> SagaError {
    SagaError::rejected(
        COMPENSATED_BEFORE_APPLIED,
        "this saga step was compensated before it was applied",
    )
}

/// The release of a step that never happened: a tombstone, and success (the
/// compensation's goal, nothing held, is reached).
async fn nothing_to_release(
    connection: &mut PgConnection,
    step: SagaStep,
    operation: &str,
) -> Result<StepOutcome, SagaError> {
    saga_tombstones::record(connection, step, operation).await?;
    Ok(StepOutcome {
        reservation_id: None,
        quantity: Decimal::ZERO,
        status: NOTHING_TO_RELEASE.to_owned(),
    })
}

/// The id of the reservation `table` holds for (saga_id, step): None when
/// there is none, `not_found` when it belongs to another company. Looked up
/// past the row-level security of a confined transaction (through
/// `equity_saga_step_holders`), so another company's reservation is refused
/// rather than taken for "nothing to release".
async fn reservation_of_step(
    connection: &mut PgConnection,
    table: ReservationTable,
    step: SagaStep,
) -> Result<Option<Uuid>, SagaError> {
    let kind = match table {
        ReservationTable::Options => "option_reservation",
        ReservationTable::Repurchases => "repurchase_reservation",
    };
    let found: Option<(Uuid, Uuid)> = sqlx::query_as(
        "SELECT holder_id, holder_company FROM equity_saga_step_holders($1, $2) WHERE kind = $3",
    )
    .bind(step.saga_id)
    .bind(step.step)
    .bind(kind)
    .fetch_optional(&mut *connection)
    .await?;
    match found {
        Some((id, company_id)) if company_id == step.company_id => Ok(Some(id)),
        Some(_) => Err(SagaError::rejected(
            "not_found",
            "the reservation of this saga step belongs to another company",
        )),
        None => Ok(None),
    }
}

#[derive(Debug, Clone, Copy)]
enum ReservationTable {
    Options,
    Repurchases,
}

#[derive(Debug, sqlx::FromRow)]
struct OptionReservationRow {
    id: Uuid,
    award_id: Uuid,
    quantity: Decimal,
    status: String,
    exercise_date: NaiveDate,
}

/// Exercise step 1: holds `quantity` options of the award when vested −
/// exercised − reserved covers it, the award has not expired and the date is
/// inside the post-termination window. With `owner` (an employee's own
/// saga), only an award of that stakeholder ([`NOT_OWN_AWARD`] otherwise).
pub async fn reserve_options(
    connection: &mut PgConnection,
    subjects: &Subjects,
    step: SagaStep,
    award_id: Uuid,
    quantity: Decimal,
    exercise_date: NaiveDate,
    owner: Option<Uuid>,
) -> Result<OptionReservation, SagaError> {
    saga_tombstones::lock_step(connection, step).await?;
    if let Some(existing) = option_reservation_by_step_unless_compensated(connection, step).await? {
        if existing.award_id != award_id || existing.quantity != quantity {
            return Err(SagaError::rejected(
                "saga_step_conflict",
                "this saga step reserved something else",
            ));
        }
        let result =
            option_result(connection, step.company_id, existing.id, award_id, quantity).await?;
        refuse_unless_own(owner, result.stakeholder_id)?;
        return Ok(result);
    }
    if quantity <= Decimal::ZERO {
        return Err(SagaError::rejected(
            "invalid_quantity",
            "the quantity must be above 0",
        ));
    }
    let mut award = awards::load(connection, step.company_id, award_id, true).await?;
    refuse_unless_own(owner, award.stakeholder_id)?;
    check_exercisable(&award, quantity, exercise_date)?;
    let loaded_version = award.version;
    let reservation_id = Uuid::now_v7();
    award.reserved += quantity;
    sqlx::query(
        "INSERT INTO option_reservations (company_id, id, award_id, saga_id, step, quantity, exercise_date, status)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'reserved')",
    )
    .bind(step.company_id)
    .bind(reservation_id)
    .bind(award_id)
    .bind(step.saga_id)
    .bind(step.step)
    .bind(quantity)
    .bind(exercise_date)
    .execute(&mut *connection)
    .await?;
    let event = Event::OptionsReserved(proto::OptionsReserved {
        award_id: award_id.to_string(),
        reservation_id: reservation_id.to_string(),
        quantity: Some(decimal::to_proto(quantity)),
    });
    awards::record_award_event(
        connection,
        subjects,
        &mut award,
        exercise_date,
        &cause(step),
        event,
    )
    .await?;
    store::update_award(connection, &award, loaded_version).await?;
    award_option_result(connection, &award, reservation_id, quantity).await
}

fn check_exercisable(
    award: &crate::domain::Award,
    quantity: Decimal,
    on: NaiveDate,
) -> Result<(), SagaError> {
    if award.award_type == AwardType::Rsu {
        return Err(SagaError::rejected(
            "award_not_exercisable",
            "RSUs are not exercised",
        ));
    }
    if on < award.grant_date {
        return Err(SagaError::rejected(
            "dated_before_grant",
            "the exercise is dated before the grant",
        ));
    }
    if award.is_expired_on(on) || award.status == AwardStatus::Closed {
        let reason = match award.termination {
            Some(_) if award.expiration_date.is_none_or(|expiry| on <= expiry) => {
                "outside_exercise_window"
            }
            _ => "award_expired",
        };
        return Err(SagaError::rejected(
            reason,
            format!("exercisable until {:?}", award.exercisable_until()),
        ));
    }
    let exercisable = award.position(on).exercisable;
    if quantity > exercisable {
        return Err(SagaError::rejected(
            "insufficient_vested_options",
            format!(
                "{} options are exercisable on {on}",
                exercisable.normalize()
            ),
        ));
    }
    Ok(())
}

/// The reservation a reserve step made before, if any, after refusing a
/// step compensated before it was applied: one round trip for both reads
/// (after [`saga_tombstones::lock_step`], in a statement of their own, so
/// they see what a compensation holding the lock committed).
async fn option_reservation_by_step_unless_compensated(
    connection: &mut PgConnection,
    step: SagaStep,
) -> Result<Option<OptionReservationRow>, SagaError> {
    #[derive(sqlx::FromRow)]
    struct Found {
        tombstone: Option<Uuid>,
        id: Option<Uuid>,
        award_id: Option<Uuid>,
        quantity: Option<Decimal>,
        status: Option<String>,
        exercise_date: Option<NaiveDate>,
    }
    let found: Found = sqlx::query_as(
        "SELECT (SELECT holder_company FROM equity_saga_step_holders($2, $3)
                 WHERE kind = 'tombstone') AS tombstone,
                r.id, r.award_id, r.quantity, r.status, r.exercise_date
         FROM (SELECT 1) AS one
         LEFT JOIN option_reservations r
                ON r.company_id = $1 AND r.saga_id = $2 AND r.step = $3",
    )
    .bind(step.company_id)
    .bind(step.saga_id)
    .bind(step.step)
    .fetch_one(&mut *connection)
    .await?;
    if found.tombstone.is_some() {
        return Err(compensated_before_applied());
    }
    Ok(match found {
        Found {
            id: Some(id),
            award_id: Some(award_id),
            quantity: Some(quantity),
            status: Some(status),
            exercise_date: Some(exercise_date),
            ..
        } => Some(OptionReservationRow {
            id,
            award_id,
            quantity,
            status,
            exercise_date,
        }),
        _ => None,
    })
}

async fn option_result(
    connection: &mut PgConnection,
    company_id: Uuid,
    reservation_id: Uuid,
    award_id: Uuid,
    quantity: Decimal,
) -> Result<OptionReservation, SagaError> {
    let award = awards::load(connection, company_id, award_id, false).await?;
    award_option_result(connection, &award, reservation_id, quantity).await
}

/// [`option_result`] for an award in hand (the one the reserve just wrote).
async fn award_option_result(
    connection: &mut PgConnection,
    award: &crate::domain::Award,
    reservation_id: Uuid,
    quantity: Decimal,
) -> Result<OptionReservation, SagaError> {
    let plan = plans::load(connection, award.company_id, award.plan_id, false).await?;
    let exercise_price = award.exercise_price.unwrap_or(Money {
        amount: Decimal::ZERO,
        currency: Currency::parse("currency", "USD")
            .map_err(|_| SagaError::rejected("invalid_step", "currency"))?,
    });
    Ok(OptionReservation {
        reservation_id,
        award_id: award.id,
        quantity,
        share_class_id: plan.share_class_id,
        stakeholder_id: award.stakeholder_id,
        exercise_price,
    })
}

/// Exercise compensation of step 1 (`step` is the reserve's): gives the
/// options back to the holder. Without `reservation_id` it releases the
/// reservation of (saga_id, step), or leaves a tombstone when there is none.
pub async fn release_option_reservation(
    connection: &mut PgConnection,
    subjects: &Subjects,
    step: SagaStep,
    reservation_id: Option<Uuid>,
) -> Result<StepOutcome, SagaError> {
    const OPERATION: &str = "release_option_reservation";
    saga_tombstones::lock_step(connection, step).await?;
    if let Some(outcome) = stored_outcome(connection, step).await? {
        return Ok(outcome);
    }
    let reservation_id = match reservation_id {
        Some(id) => id,
        None => match reservation_of_step(connection, ReservationTable::Options, step).await? {
            Some(id) => id,
            None => return nothing_to_release(connection, step, OPERATION).await,
        },
    };
    let reservation = lock_option_reservation(connection, step.company_id, reservation_id).await?;
    if reservation.status == "confirmed" {
        return Err(SagaError::rejected(
            "reservation_already_confirmed",
            "the exercise was confirmed",
        ));
    }
    if reservation.status == "reserved" {
        let mut award =
            awards::load(connection, step.company_id, reservation.award_id, true).await?;
        let loaded_version = award.version;
        award.reserved -= reservation.quantity;
        set_option_reservation_status(connection, reservation_id, "released").await?;
        let event = Event::OptionReservationReleased(proto::OptionReservationReleased {
            award_id: award.id.to_string(),
            reservation_id: reservation_id.to_string(),
            quantity: Some(decimal::to_proto(reservation.quantity)),
        });
        awards::record_award_event(
            connection,
            subjects,
            &mut award,
            chrono::Utc::now().date_naive(),
            &cause(step),
            event,
        )
        .await?;
        store::update_award(connection, &award, loaded_version).await?;
    }
    let outcome = StepOutcome::of(reservation_id, reservation.quantity, "released");
    store_outcome(connection, step, OPERATION, &outcome).await?;
    Ok(outcome)
}

/// Exercise step 5: the reserved options become exercised (the ledger has
/// issued the shares); emits OptionsExercised.
pub async fn confirm_exercise(
    connection: &mut PgConnection,
    subjects: &Subjects,
    step: SagaStep,
    reservation_id: Uuid,
) -> Result<StepOutcome, SagaError> {
    let reservation =
        match lock_option_reservation_unless_done(connection, step, reservation_id).await? {
            StepState::Done(outcome) => return Ok(outcome),
            StepState::ToDo(reservation) => reservation,
        };
    if reservation.status == "released" {
        return Err(SagaError::rejected(
            "reservation_released",
            "the reservation was released",
        ));
    }
    let outcome = StepOutcome::of(reservation_id, reservation.quantity, "confirmed");
    let plan_id = if reservation.status == "reserved" {
        Some(exercise_reserved(connection, subjects, step, &reservation).await?)
    } else {
        None
    };
    store_confirmed_exercise(connection, step, plan_id, &reservation, &outcome).await?;
    Ok(outcome)
}

/// A step that ran before (its stored outcome; nothing is to change), or
/// what it is to act on.
enum StepState<T> {
    Done(StepOutcome),
    ToDo(T),
}

/// The step's stored outcome, or else the reservation, locked: one round
/// trip (the stored outcome is read with the lock; the reservation is
/// locked on a repeat too, which changes nothing). Without the
/// reservation, the stored outcome alone is looked up.
async fn lock_option_reservation_unless_done(
    connection: &mut PgConnection,
    step: SagaStep,
    id: Uuid,
) -> Result<StepState<OptionReservationRow>, SagaError> {
    #[derive(sqlx::FromRow)]
    struct Locked {
        stored: Option<String>,
        #[sqlx(flatten)]
        reservation: OptionReservationRow,
    }
    let locked: Option<Locked> = sqlx::query_as(
        "SELECT (SELECT result::text FROM saga_step_results
                 WHERE company_id = $1 AND saga_id = $3 AND step = $4) AS stored,
                id, award_id, quantity, status, exercise_date
         FROM option_reservations WHERE company_id = $1 AND id = $2 FOR UPDATE",
    )
    .bind(step.company_id)
    .bind(id)
    .bind(step.saga_id)
    .bind(step.step)
    .fetch_optional(&mut *connection)
    .await?;
    match locked {
        Some(Locked {
            stored: Some(text), ..
        }) => Ok(StepState::Done(decode_outcome(&text)?)),
        Some(Locked { reservation, .. }) => Ok(StepState::ToDo(reservation)),
        None => match stored_outcome(connection, step).await? {
            Some(outcome) => Ok(StepState::Done(outcome)),
            None => Err(SagaError::rejected(
                "not_found",
                format!("reservation {id} not found"),
            )),
        },
    }
}

/// The confirm's writes after the award's: the plan's exercised count (when
/// the options were exercised now), the reservation's status and the
/// step's outcome, in one statement.
async fn store_confirmed_exercise(
    connection: &mut PgConnection,
    step: SagaStep,
    exercised_in_plan: Option<Uuid>,
    reservation: &OptionReservationRow,
    outcome: &StepOutcome,
) -> Result<(), SagaError> {
    let text = serde_json::to_string(outcome)
        .map_err(|error| SagaError::Database(sqlx::Error::Encode(error.into())))?;
    sqlx::query(
        "WITH plan AS (
             UPDATE equity_plans SET exercised = exercised + $7 WHERE id = $6
         ), reservation AS (
             UPDATE option_reservations SET status = 'confirmed' WHERE id = $5
         )
         INSERT INTO saga_step_results (company_id, saga_id, step, operation, result)
         VALUES ($1, $2, $3, 'confirm_exercise', $4::text::jsonb)",
    )
    .bind(step.company_id)
    .bind(step.saga_id)
    .bind(step.step)
    .bind(text)
    .bind(reservation.id)
    .bind(exercised_in_plan)
    .bind(reservation.quantity)
    .execute(connection)
    .await?;
    Ok(())
}

/// Moves the reservation's options from reserved to exercised on the award
/// (and its event); returns the plan, whose exercised count the caller
/// raises ([`store_confirmed_exercise`]).
async fn exercise_reserved(
    connection: &mut PgConnection,
    subjects: &Subjects,
    step: SagaStep,
    reservation: &OptionReservationRow,
) -> Result<Uuid, SagaError> {
    let mut award = awards::load(connection, step.company_id, reservation.award_id, true).await?;
    let plan = plans::load(connection, step.company_id, award.plan_id, true).await?;
    let exercise_date = reservation.exercise_date;
    let loaded_version = award.version;
    award.reserved -= reservation.quantity;
    award.exercised += reservation.quantity;
    let position = award.position(exercise_date);
    if award.status == AwardStatus::Terminated
        && position.vested_unexercised.is_zero()
        && award.reserved.is_zero()
    {
        award.status = AwardStatus::Closed;
    }
    let event = Event::OptionsExercised(proto::OptionsExercised {
        award_id: award.id.to_string(),
        plan_id: plan.id.to_string(),
        stakeholder_id: award.stakeholder_id.to_string(),
        share_class_id: plan.share_class_id.to_string(),
        quantity: Some(decimal::to_proto(reservation.quantity)),
        reservation_id: reservation.id.to_string(),
        exercise_price: award.exercise_price.map(Money::to_proto),
    });
    awards::record_award_event(
        connection,
        subjects,
        &mut award,
        exercise_date,
        &cause(step),
        event,
    )
    .await?;
    store::update_award(connection, &award, loaded_version).await?;
    Ok(plan.id)
}

async fn lock_option_reservation(
    connection: &mut PgConnection,
    company_id: Uuid,
    id: Uuid,
) -> Result<OptionReservationRow, SagaError> {
    sqlx::query_as(
        "SELECT id, award_id, quantity, status, exercise_date FROM option_reservations
         WHERE company_id = $1 AND id = $2 FOR UPDATE",
    )
    .bind(company_id)
    .bind(id)
    .fetch_optional(connection)
    .await?
    .ok_or_else(|| SagaError::rejected("not_found", format!("reservation {id} not found")))
}

async fn set_option_reservation_status(
    connection: &mut PgConnection,
    id: Uuid,
    status: &str,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE option_reservations SET status = $2 WHERE id = $1")
        .bind(id)
        .bind(status)
        .execute(connection)
        .await?;
    Ok(())
}

async fn stored_outcome(
    connection: &mut PgConnection,
    step: SagaStep,
) -> Result<Option<StepOutcome>, SagaError> {
    let stored: Option<String> = sqlx::query_scalar(
        "SELECT result::text FROM saga_step_results WHERE company_id = $1 AND saga_id = $2 AND step = $3",
    )
    .bind(step.company_id)
    .bind(step.saga_id)
    .bind(step.step)
    .fetch_optional(connection)
    .await?;
    stored.map(|text| decode_outcome(&text)).transpose()
}

fn decode_outcome(text: &str) -> Result<StepOutcome, SagaError> {
    serde_json::from_str(text)
        .map_err(|error| SagaError::Database(sqlx::Error::Decode(error.into())))
}

async fn store_outcome(
    connection: &mut PgConnection,
    step: SagaStep,
    operation: &str,
    outcome: &StepOutcome,
) -> Result<(), SagaError> {
    let text = serde_json::to_string(outcome)
        .map_err(|error| SagaError::Database(sqlx::Error::Encode(error.into())))?;
    sqlx::query(
        "INSERT INTO saga_step_results (company_id, saga_id, step, operation, result)
         VALUES ($1, $2, $3, $4, $5::text::jsonb)",
    )
    .bind(step.company_id)
    .bind(step.saga_id)
    .bind(step.step)
    .bind(operation)
    .bind(text)
    .execute(connection)
    .await?;
    Ok(())
}

fn cause(step: SagaStep) -> String {
    format!("saga:{}:{}", step.saga_id, step.step)
}

/// Capacity held on a repurchase program for one buyback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepurchaseReservation {
    pub reservation_id: Uuid,
    pub program_id: Uuid,
    pub share_class_id: Uuid,
    pub quantity: Decimal,
}

impl RepurchaseReservation {
    pub fn to_proto(&self) -> proto::ReserveRepurchaseResult {
        proto::ReserveRepurchaseResult {
            reservation_id: self.reservation_id.to_string(),
            share_class_id: self.share_class_id.to_string(),
        }
    }
}

/// What a buyback asks of a program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RepurchaseRequest {
    pub program_id: Uuid,
    pub stakeholder_id: Uuid,
    pub quantity: Decimal,
    pub price_per_share: Money,
    pub repurchase_date: NaiveDate,
}

/// Buyback step 1: holds capacity when the date is in the program's window,
/// the price is at most its maximum, and the cap is not exhausted. With
/// `owner` (an employee's own saga), only for that stakeholder's shares.
pub async fn reserve_repurchase(
    connection: &mut PgConnection,
    subjects: &Subjects,
    step: SagaStep,
    request: RepurchaseRequest,
    owner: Option<Uuid>,
) -> Result<RepurchaseReservation, SagaError> {
    refuse_unless_own(owner, request.stakeholder_id)?;
    saga_tombstones::lock_step(connection, step).await?;
    refuse_if_compensated(connection, step).await?;
    let existing: Option<(Uuid, Uuid, Decimal)> = sqlx::query_as(
        "SELECT id, program_id, quantity FROM repurchase_reservations WHERE company_id = $1 AND saga_id = $2 AND step = $3",
    )
    .bind(step.company_id)
    .bind(step.saga_id)
    .bind(step.step)
    .fetch_optional(&mut *connection)
    .await?;
    if let Some((reservation_id, program_id, quantity)) = existing {
        if program_id != request.program_id || quantity != request.quantity {
            return Err(SagaError::rejected(
                "saga_step_conflict",
                "this saga step reserved something else",
            ));
        }
        let program = lock_program(connection, step.company_id, program_id, false).await?;
        return Ok(RepurchaseReservation {
            reservation_id,
            program_id,
            share_class_id: program.share_class_id,
            quantity,
        });
    }
    let program = lock_program(connection, step.company_id, request.program_id, true).await?;
    check_program_capacity(&program, &request)?;
    let reservation_id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO repurchase_reservations (company_id, id, program_id, stakeholder_id, saga_id, step, quantity,
             price_per_share, repurchase_date, status)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'reserved')",
    )
    .bind(step.company_id)
    .bind(reservation_id)
    .bind(program.id)
    .bind(request.stakeholder_id)
    .bind(step.saga_id)
    .bind(step.step)
    .bind(request.quantity)
    .bind(request.price_per_share.amount)
    .bind(request.repurchase_date)
    .execute(&mut *connection)
    .await?;
    let event = Event::RepurchaseCapacityReserved(proto::RepurchaseCapacityReserved {
        program_id: program.id.to_string(),
        reservation_id: reservation_id.to_string(),
        stakeholder_id: request.stakeholder_id.to_string(),
        quantity: Some(decimal::to_proto(request.quantity)),
    });
    change_program(
        connection,
        subjects,
        step,
        &program,
        request.quantity,
        Decimal::ZERO,
        request.repurchase_date,
        event,
    )
    .await?;
    Ok(RepurchaseReservation {
        reservation_id,
        program_id: program.id,
        share_class_id: program.share_class_id,
        quantity: request.quantity,
    })
}

fn check_program_capacity(
    program: &ProgramRow,
    request: &RepurchaseRequest,
) -> Result<(), SagaError> {
    if request.quantity <= Decimal::ZERO {
        return Err(SagaError::rejected(
            "invalid_quantity",
            "the quantity must be above 0",
        ));
    }
    if request.repurchase_date < program.start_date || request.repurchase_date > program.end_date {
        return Err(SagaError::rejected(
            "outside_program_window",
            format!(
                "the program runs from {} to {}",
                program.start_date, program.end_date
            ),
        ));
    }
    let max_price = program.max_price()?;
    if request.price_per_share.currency != max_price.currency {
        return Err(SagaError::rejected(
            "currency_mismatch",
            format!("the program pays in {}", max_price.currency),
        ));
    }
    if request.price_per_share.amount > max_price.amount {
        return Err(SagaError::rejected(
            "price_above_program_maximum",
            format!("the program pays at most {}", max_price.amount.normalize()),
        ));
    }
    let left = program.max_shares - program.reserved_shares - program.repurchased_shares;
    if request.quantity > left {
        return Err(SagaError::rejected(
            "program_exhausted",
            format!("{} shares are left in the program", left.normalize()),
        ));
    }
    Ok(())
}

async fn lock_program(
    connection: &mut PgConnection,
    company_id: Uuid,
    id: Uuid,
    lock: bool,
) -> Result<ProgramRow, SagaError> {
    store::program(connection, company_id, id, lock)
        .await?
        .ok_or_else(|| {
            SagaError::rejected("not_found", format!("repurchase program {id} not found"))
        })
}

/// Adds to the program's reserved and repurchased counts, bumps its version
/// and records `event` at the new version.
#[allow(clippy::too_many_arguments)]
async fn change_program(
    connection: &mut PgConnection,
    subjects: &Subjects,
    step: SagaStep,
    program: &ProgramRow,
    reserved_change: Decimal,
    repurchased_change: Decimal,
    effective_date: NaiveDate,
    event: Event,
) -> Result<(), SagaError> {
    let version = program.version + 1;
    sqlx::query(
        "UPDATE repurchase_programs SET reserved_shares = reserved_shares + $2,
             repurchased_shares = repurchased_shares + $3, version = $4 WHERE id = $1",
    )
    .bind(program.id)
    .bind(reserved_change)
    .bind(repurchased_change)
    .bind(version)
    .execute(&mut *connection)
    .await?;
    let context = EventContext {
        company_id: step.company_id,
        aggregate_type: crate::commands::programs::AGGREGATE,
        aggregate_id: program.id,
        aggregate_version: version,
        effective_date,
        cause: cause(step),
    };
    events::record(connection, subjects, &context, event).await?;
    Ok(())
}

#[derive(Debug, sqlx::FromRow)]
struct RepurchaseReservationRow {
    program_id: Uuid,
    stakeholder_id: Uuid,
    quantity: Decimal,
    price_per_share: Decimal,
    repurchase_date: NaiveDate,
    status: String,
}

async fn lock_repurchase_reservation(
    connection: &mut PgConnection,
    company_id: Uuid,
    id: Uuid,
) -> Result<RepurchaseReservationRow, SagaError> {
    sqlx::query_as(
        "SELECT program_id, stakeholder_id, quantity, price_per_share, repurchase_date, status
         FROM repurchase_reservations WHERE company_id = $1 AND id = $2 FOR UPDATE",
    )
    .bind(company_id)
    .bind(id)
    .fetch_optional(connection)
    .await?
    .ok_or_else(|| SagaError::rejected("not_found", format!("reservation {id} not found")))
}

/// Buyback compensation of step 1 (`step` is the reserve's): frees the
/// program's capacity. Without `reservation_id`, as
/// [`release_option_reservation`].
pub async fn release_repurchase_reservation(
    connection: &mut PgConnection,
    subjects: &Subjects,
    step: SagaStep,
    reservation_id: Option<Uuid>,
) -> Result<StepOutcome, SagaError> {
    const OPERATION: &str = "release_repurchase_reservation";
    saga_tombstones::lock_step(connection, step).await?;
    if let Some(outcome) = stored_outcome(connection, step).await? {
        return Ok(outcome);
    }
    let reservation_id = match reservation_id {
        Some(id) => id,
        None => match reservation_of_step(connection, ReservationTable::Repurchases, step).await? {
            Some(id) => id,
            None => return nothing_to_release(connection, step, OPERATION).await,
        },
    };
    let reservation =
        lock_repurchase_reservation(connection, step.company_id, reservation_id).await?;
    if reservation.status == "confirmed" {
        return Err(SagaError::rejected(
            "reservation_already_confirmed",
            "the repurchase was confirmed",
        ));
    }
    if reservation.status == "reserved" {
        let program =
            lock_program(connection, step.company_id, reservation.program_id, true).await?;
        sqlx::query("UPDATE repurchase_reservations SET status = 'released' WHERE id = $1")
            .bind(reservation_id)
            .execute(&mut *connection)
            .await?;
        let event = Event::RepurchaseReservationReleased(proto::RepurchaseReservationReleased {
            program_id: program.id.to_string(),
            reservation_id: reservation_id.to_string(),
            quantity: Some(decimal::to_proto(reservation.quantity)),
        });
        change_program(
            connection,
            subjects,
            step,
            &program,
            -reservation.quantity,
            Decimal::ZERO,
            reservation.repurchase_date,
            event,
        )
        .await?;
    }
    let outcome = StepOutcome::of(reservation_id, reservation.quantity, "released");
    store_outcome(connection, step, OPERATION, &outcome).await?;
    Ok(outcome)
}

/// Buyback step 5: the reserved capacity becomes repurchased shares; emits
/// SharesRepurchased.
pub async fn confirm_repurchase(
    connection: &mut PgConnection,
    subjects: &Subjects,
    step: SagaStep,
    reservation_id: Uuid,
) -> Result<StepOutcome, SagaError> {
    if let Some(outcome) = stored_outcome(connection, step).await? {
        return Ok(outcome);
    }
    let reservation =
        lock_repurchase_reservation(connection, step.company_id, reservation_id).await?;
    if reservation.status == "released" {
        return Err(SagaError::rejected(
            "reservation_released",
            "the reservation was released",
        ));
    }
    if reservation.status == "reserved" {
        let program =
            lock_program(connection, step.company_id, reservation.program_id, true).await?;
        sqlx::query("UPDATE repurchase_reservations SET status = 'confirmed' WHERE id = $1")
            .bind(reservation_id)
            .execute(&mut *connection)
            .await?;
        let price = Money {
            amount: reservation.price_per_share,
            currency: program.max_price()?.currency,
        };
        let event = Event::SharesRepurchased(proto::SharesRepurchased {
            program_id: program.id.to_string(),
            stakeholder_id: reservation.stakeholder_id.to_string(),
            share_class_id: program.share_class_id.to_string(),
            quantity: Some(decimal::to_proto(reservation.quantity)),
            reservation_id: reservation_id.to_string(),
            price_per_share: Some(price.to_proto()),
        });
        let quantity = reservation.quantity;
        change_program(
            connection,
            subjects,
            step,
            &program,
            -quantity,
            quantity,
            reservation.repurchase_date,
            event,
        )
        .await?;
    }
    let outcome = StepOutcome::of(reservation_id, reservation.quantity, "confirmed");
    store_outcome(connection, step, "confirm_repurchase", &outcome).await?;
    Ok(outcome)
}
