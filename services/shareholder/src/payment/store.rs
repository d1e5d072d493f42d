//! SQL for the `payments` table, scoped by `company_id` in every query.

use std::time::Duration;

use chrono::{DateTime, Utc};
use qapmap_runtime::decimal::{Currency, Money};
use rust_decimal::Decimal;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgExecutor, Row};
use uuid::Uuid;

use super::model::{Direction, Payment, PaymentAmount, PaymentStatus};

const COLUMNS: &str = "id, company_id, stakeholder_id, direction, amount, currency, status, \
    decline_reason, gateway_reference, idempotency_key, gateway_attempts, created_at";

/// Inserts a pending payment; `false` when its key already exists (a
/// concurrent repeat won the race).
pub async fn insert_pending(
    connection: &mut PgConnection,
    payment: &Payment,
) -> sqlx::Result<bool> {
    assert_eq!(
        payment.status,
        PaymentStatus::Pending,
        "only attempts are inserted"
    );
    let inserted = sqlx::query(
        "INSERT INTO payments (id, company_id, idempotency_key, stakeholder_id, direction, amount,
             currency, status, gateway_attempts, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8, $9)
         ON CONFLICT (company_id, idempotency_key) DO NOTHING",
    )
    .bind(payment.id)
    .bind(payment.company_id)
    .bind(&payment.idempotency_key)
    .bind(payment.stakeholder_id)
    .bind(payment.direction.as_db())
    .bind(payment.amount.amount())
    .bind(payment.amount.currency().as_str())
    .bind(payment.gateway_attempts)
    .bind(payment.recorded_at)
    .execute(connection)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// The payment with this key, locked, and whether its current attempt began
/// longer than `stale_after` ago.
pub async fn find_by_key_for_update(
    connection: &mut PgConnection,
    company_id: Uuid,
    idempotency_key: &str,
    stale_after: Duration,
) -> sqlx::Result<Option<(Payment, bool)>> {
    let sql = format!(
        "SELECT {COLUMNS}, attempt_started_at < now() - make_interval(secs => $3) AS stale
         FROM payments WHERE company_id = $1 AND idempotency_key = $2 FOR UPDATE"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(company_id)
        .bind(idempotency_key)
        .bind(stale_after.as_secs_f64())
        .try_map(|row: PgRow| Ok((from_row(&row)?, row.try_get::<bool, _>("stale")?)))
        .fetch_optional(connection)
        .await
}

/// Starts another attempt of a payment whose last one failed transiently.
pub async fn start_retry(connection: &mut PgConnection, payment_id: Uuid) -> sqlx::Result<()> {
    let updated = sqlx::query(
        "UPDATE payments SET status = 'pending', gateway_attempts = gateway_attempts + 1,
             attempt_started_at = now(), updated_at = now()
         WHERE id = $1 AND status = 'failed_retryable'",
    )
    .bind(payment_id)
    .execute(connection)
    .await?;
    assert_eq!(updated.rows_affected(), 1, "the caller holds the row lock");
    Ok(())
}

/// Records the outcome of the pending attempt; `false` if the payment was no
/// longer pending (another process declared its outcome unknown meanwhile).
pub async fn record_outcome<'e>(
    executor: impl PgExecutor<'e>,
    payment_id: Uuid,
    status: &PaymentStatus,
) -> sqlx::Result<bool> {
    let (decline_reason, gateway_reference) = match status {
        PaymentStatus::Declined { reason } => (Some(reason.as_str()), None),
        PaymentStatus::Succeeded { gateway_reference } => (None, Some(gateway_reference.as_str())),
        _ => (None, None),
    };
    let updated = sqlx::query(
        "UPDATE payments SET status = $2, decline_reason = $3, gateway_reference = $4,
             updated_at = now()
         WHERE id = $1 AND status = 'pending'",
    )
    .bind(payment_id)
    .bind(status.as_db())
    .bind(decline_reason)
    .bind(gateway_reference)
    .execute(executor)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// Settles a payment whose outcome was unknown (see [`super::reconcile`]).
/// False when it is not (or no longer) `outcome_unknown`.
pub async fn resolve_unknown<'e>(
    executor: impl PgExecutor<'e>,
    payment_id: Uuid,
    status: &PaymentStatus,
) -> sqlx::Result<bool> {
    let gateway_reference = match status {
        PaymentStatus::Succeeded { gateway_reference } => Some(gateway_reference.as_str()),
        _ => None,
    };
    let updated = sqlx::query(
        "UPDATE payments SET status = $2, gateway_reference = $3, updated_at = now()
         WHERE id = $1 AND status = 'outcome_unknown'",
    )
    .bind(payment_id)
    .bind(status.as_db())
    .bind(gateway_reference)
    .execute(executor)
    .await?;
    Ok(updated.rows_affected() == 1)
}

pub async fn find<'e>(
    executor: impl PgExecutor<'e>,
    company_id: Uuid,
    id: Uuid,
) -> sqlx::Result<Option<Payment>> {
    let sql = format!("SELECT {COLUMNS} FROM payments WHERE company_id = $1 AND id = $2");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(company_id)
        .bind(id)
        .try_map(|row: PgRow| from_row(&row))
        .fetch_optional(executor)
        .await
}

/// Up to `limit` payments after `after`, oldest first.
pub async fn list<'e>(
    executor: impl PgExecutor<'e>,
    company_id: Uuid,
    stakeholder_id: Option<Uuid>,
    after: Option<Uuid>,
    limit: i64,
) -> sqlx::Result<Vec<Payment>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM payments
         WHERE company_id = $1 AND ($2::uuid IS NULL OR stakeholder_id = $2)
           AND ($3::uuid IS NULL OR id > $3)
         ORDER BY id LIMIT $4"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(company_id)
        .bind(stakeholder_id)
        .bind(after)
        .bind(limit)
        .try_map(|row: PgRow| from_row(&row))
        .fetch_all(executor)
        .await
}

fn from_row(row: &PgRow) -> sqlx::Result<Payment> {
    let corrupt = |column: &str| sqlx::Error::ColumnDecode {
        index: column.to_owned(),
        source: format!("stored {column} does not parse").into(),
    };
    let currency: String = row.try_get("currency")?;
    let money = Money {
        amount: row.try_get::<Decimal, _>("amount")?,
        currency: Currency::parse("currency", &currency).map_err(|_| corrupt("currency"))?,
    };
    let status: String = row.try_get("status")?;
    let status = match status.as_str() {
        "pending" => PaymentStatus::Pending,
        "succeeded" => PaymentStatus::Succeeded {
            gateway_reference: row.try_get("gateway_reference")?,
        },
        "declined" => PaymentStatus::Declined {
            reason: row.try_get("decline_reason")?,
        },
        "failed_retryable" => PaymentStatus::FailedRetryable,
        "outcome_unknown" => PaymentStatus::OutcomeUnknown,
        _ => return Err(corrupt("status")),
    };
    let direction: String = row.try_get("direction")?;
    let created_at: DateTime<Utc> = row.try_get("created_at")?;
    Ok(Payment {
        id: row.try_get("id")?,
        company_id: row.try_get("company_id")?,
        stakeholder_id: row.try_get("stakeholder_id")?,
        direction: Direction::from_db(&direction).ok_or_else(|| corrupt("direction"))?,
        amount: PaymentAmount::new(money).map_err(|_| corrupt("amount"))?,
        status,
        idempotency_key: row.try_get("idempotency_key")?,
        gateway_attempts: row.try_get("gateway_attempts")?,
        recorded_at: created_at,
    })
}
