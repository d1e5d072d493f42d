//! Row-level security checks shared by the services' tenancy tests: counts
//! and writes made the way a service confines itself (role `qapmap_app`,
//! company in `qapmap.company_id`), and the catalogue check that every
//! tenant table carries the policy.

use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

/// A transaction confined like the service's: as `qapmap_app`, with
/// `company` in `qapmap.company_id` (none: unset). Dropped, it rolls back.
async fn confined(pool: &PgPool, company: Option<Uuid>) -> Transaction<'static, Postgres> {
    let mut transaction = pool.begin().await.expect("begin");
    sqlx::query("SET LOCAL ROLE qapmap_app")
        .execute(&mut *transaction)
        .await
        .expect("set role");
    if let Some(company) = company {
        sqlx::query("SELECT set_config('qapmap.company_id', $1, true)")
            .bind(company.to_string())
            .execute(&mut *transaction)
            .await
            .expect("set company");
    }
    transaction
}

/// Rows of `table`, counted by a [`confined`] transaction. The query names
/// no company: only the policies filter.
pub async fn confined_count(pool: &PgPool, company: Option<Uuid>, table: &str) -> i64 {
    let mut transaction = confined(pool, company).await;
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
        .fetch_one(&mut *transaction)
        .await
        .expect("confined count")
}

/// (rows visible, of which `company`'s) in `table` to a [`confined`]
/// transaction, with no WHERE clause; `company` None sets no company.
pub async fn visible_rows(pool: &PgPool, table: &str, company: Option<Uuid>) -> (i64, i64) {
    let mut transaction = confined(pool, company).await;
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT count(*), count(*) FILTER (WHERE company_id = $1) FROM {table}"
    )))
    .bind(company.unwrap_or_default())
    .fetch_one(&mut *transaction)
    .await
    .expect("count")
}

/// Rows of `table` that belong to `company`, counted by the owner.
pub async fn owner_count(pool: &PgPool, company: Uuid, table: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {table} WHERE company_id = $1"
    )))
    .bind(company)
    .fetch_one(pool)
    .await
    .expect("owner count")
}

/// Copies one of `scope`'s rows of `table` as a row of `intruder`, inside a
/// transaction confined to `scope`; returns the database's refusal.
pub async fn insert_as_other_company(
    pool: &PgPool,
    scope: Uuid,
    intruder: Uuid,
    table: &str,
) -> sqlx::Error {
    let mut transaction = pool.begin().await.expect("begin");
    sqlx::query(
        "SELECT set_config('role', 'qapmap_app', true), set_config('qapmap.company_id', $1, true)",
    )
    .bind(scope.to_string())
    .execute(&mut *transaction)
    .await
    .expect("confine");
    // Row-level security checks the new row before any unique key, so the
    // copy's duplicate ids do not matter: only its company does.
    let result = sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {table}
         SELECT (jsonb_populate_record(NULL::{table},
                 to_jsonb(existing) || jsonb_build_object('company_id', $1::text))).*
         FROM {table} AS existing LIMIT 1"
    )))
    .bind(intruder.to_string())
    .execute(&mut *transaction)
    .await;
    transaction.rollback().await.expect("rollback");
    result.expect_err("an insert of another company's row is refused")
}

/// The tables of this database with a NOT NULL company_id and no row-level
/// security, or a policy that reads the company per row instead of once per
/// statement (runtime migration 0005): must be none.
pub async fn tenant_tables_without_rls(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c
         JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public'
         JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'company_id' AND a.attnotnull
         WHERE c.relkind = 'r'
           AND NOT (c.relrowsecurity AND EXISTS (
               SELECT 1 FROM pg_policy p
               WHERE p.polrelid = c.oid AND p.polname = 'tenant_isolation'
                 AND pg_get_expr(p.polqual, p.polrelid) LIKE '%( SELECT qapmap_current_company()%'
                 AND pg_get_expr(p.polwithcheck, p.polrelid) LIKE '%( SELECT qapmap_current_company()%'))
         ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .expect("tables")
}
