//! Confining a transaction to one company: the second line of tenant
//! isolation behind the `company_id` filter every query already has.
//!
//! A confined transaction runs as the application role `qapmap_app` with
//! `qapmap.company_id` set; the row-level security policies (migration
//! 0004, `qapmap_enable_tenant_rls`) then show and accept only that
//! company's rows. Both settings are transaction-local, so a pooled
//! connection never carries them into its next use. [`begin`] and
//! [`begin_read_only`] confine in the same round trip as `BEGIN`.

use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use uuid::Uuid;

/// The role row-level security applies to.
pub const APPLICATION_ROLE: &str = "qapmap_app";

/// The statements that confine the current transaction, to send with its
/// `BEGIN` (or before a statement of one implicit transaction). A `Uuid`
/// prints as hex digits and hyphens only, so it is safe inside the literal.
pub fn confine_statements(company_id: Uuid) -> String {
    format!("SET LOCAL ROLE {APPLICATION_ROLE}; SET LOCAL qapmap.company_id = '{company_id}'")
}

/// Confines the rest of an open transaction to `company_id`.
pub async fn confine(transaction: &mut PgConnection, company_id: Uuid) -> sqlx::Result<()> {
    sqlx::query("SELECT set_config('role', 'qapmap_app', true), set_config('qapmap.company_id', $1::text, true)")
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
    let statement = format!("BEGIN; {}", confine_statements(company_id));
    pool.begin_with(sqlx::AssertSqlSafe(statement)).await
}

/// A new read-only transaction confined to `company_id`. Ending it by drop
/// is fine: nothing was written.
pub async fn begin_read_only(
    pool: &PgPool,
    company_id: Uuid,
) -> sqlx::Result<Transaction<'static, Postgres>> {
    let statement = format!("BEGIN READ ONLY; {}", confine_statements(company_id));
    pool.begin_with(sqlx::AssertSqlSafe(statement)).await
}
