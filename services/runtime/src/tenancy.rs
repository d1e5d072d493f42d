//! Confining a transaction to one company: the second line of tenant
//! isolation behind the `company_id` filter every query already has.
//!
//! [`confine`] switches the rest of the transaction to the application role
//! `qapmap_app` and sets `qapmap.company_id`; the row-level security
//! policies (migration 0004, `qapmap_enable_tenant_rls`) then show and
//! accept only that company's rows. Both settings are transaction-local, so
//! a pooled connection never carries them into its next use.

use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use uuid::Uuid;

/// The role row-level security applies to.
pub const APPLICATION_ROLE: &str = "qapmap_app";

/// The statement that confines a transaction; `$1` is the company id. Other
/// statements may fold it in to save a round trip (see `idempotency::begin`).
pub const CONFINE_SQL: &str = "SELECT set_config('role', 'qapmap_app', true), set_config('qapmap.company_id', $1::text, true)";

/// Confines the rest of `transaction` to `company_id`.
pub async fn confine(transaction: &mut PgConnection, company_id: Uuid) -> sqlx::Result<()> {
    sqlx::query(CONFINE_SQL)
        .bind(company_id)
        .execute(&mut *transaction)
        .await?;
    Ok(())
}

/// A new transaction confined to `company_id`, for reads and writes made on
/// behalf of one company.
pub async fn begin(
    pool: &PgPool,
    company_id: Uuid,
) -> sqlx::Result<Transaction<'static, Postgres>> {
    let mut transaction = pool.begin().await?;
    confine(&mut transaction, company_id).await?;
    Ok(transaction)
}
