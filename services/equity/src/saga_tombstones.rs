//! Tombstones for saga steps compensated before they were applied.
//!
//! A reserve step that times out is compensated without its reservation id;
//! the release then looks the reservation up by (saga_id, step). When there
//! is none yet, the reserve command may still be in flight, so the release
//! leaves a tombstone and a reserve that lands later is refused with
//! [`COMPENSATED_BEFORE_APPLIED`] instead of holding options (or program
//! capacity) that no saga will ever release.
//!
//! Both sides first take [`lock_step`], a transaction advisory lock on the
//! key, so a reserve and its release racing in two transactions cannot both
//! see "nothing there" and both write.

use sqlx::PgConnection;
use uuid::Uuid;

use crate::saga_operations::SagaStep;

/// The reason code a late forward command is refused with.
pub const COMPENSATED_BEFORE_APPLIED: &str = "compensated_before_applied";

/// Serialises the forward step and its compensation for one (saga_id, step)
/// until the caller's transaction ends.
pub async fn lock_step(connection: &mut PgConnection, step: SagaStep) -> sqlx::Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!("equity-saga-step:{}:{}", step.saga_id, step.step))
        .execute(connection)
        .await?;
    Ok(())
}

/// The company whose compensation left a tombstone on this step, if any,
/// whichever company the caller is confined to: through
/// `equity_saga_step_holders` (migration 20261203000100), since a late
/// command naming another company must still be refused.
pub async fn find(connection: &mut PgConnection, step: SagaStep) -> sqlx::Result<Option<Uuid>> {
    sqlx::query_scalar(
        "SELECT holder_company FROM equity_saga_step_holders($1, $2) WHERE kind = 'tombstone'",
    )
    .bind(step.saga_id)
    .bind(step.step)
    .fetch_optional(connection)
    .await
}

/// Records that `operation` compensated this step before it happened. A
/// repeat keeps the first row.
pub async fn record(
    connection: &mut PgConnection,
    step: SagaStep,
    operation: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO saga_tombstones (saga_id, step, company_id, operation)
         VALUES ($1, $2, $3, $4) ON CONFLICT (saga_id, step) DO NOTHING",
    )
    .bind(step.saga_id)
    .bind(step.step)
    .bind(step.company_id)
    .bind(operation)
    .execute(connection)
    .await?;
    Ok(())
}
