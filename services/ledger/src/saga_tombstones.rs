//! Tombstones of saga steps compensated before they were applied.
//!
//! The orchestrator compensates a hold step whose reply it never got, so the
//! compensation may overtake the command itself. Compensating a step that
//! placed nothing records a tombstone for (saga id, step); the late command
//! then finds it and refuses, instead of placing a hold nobody will release.
//! Both sides take a transaction-scoped advisory lock on the step first, so a
//! compensation and its forward command never interleave.

use sqlx::PgConnection;

use crate::saga_operations::SagaStep;

/// Serializes everything done for one (saga id, step) until the caller's
/// transaction ends.
pub async fn lock_step(connection: &mut PgConnection, saga: SagaStep) -> sqlx::Result<()> {
    let key = format!("qapmap-ledger-saga-step:{}:{}", saga.saga_id, saga.step);
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(key)
        .execute(&mut *connection)
        .await?;
    Ok(())
}

/// True when the step was compensated before it was applied. Not filtered
/// by company: a saga id names one saga. Under row-level security (saga
/// commands run confined) only the command's company's tombstones show,
/// which are the only ones its saga can have.
pub async fn exists(connection: &mut PgConnection, saga: SagaStep) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM saga_step_tombstones WHERE saga_id = $1 AND step = $2)",
    )
    .bind(saga.saga_id)
    .bind(saga.step)
    .fetch_one(&mut *connection)
    .await
}

/// Records the tombstone; recording it again changes nothing.
pub async fn record(
    connection: &mut PgConnection,
    company_id: uuid::Uuid,
    saga: SagaStep,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO saga_step_tombstones (saga_id, step, company_id) VALUES ($1, $2, $3)
         ON CONFLICT DO NOTHING",
    )
    .bind(saga.saga_id)
    .bind(saga.step)
    .bind(company_id)
    .execute(&mut *connection)
    .await?;
    Ok(())
}
