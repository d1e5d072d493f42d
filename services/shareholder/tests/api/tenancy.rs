//! Row-level security, the second line of tenant isolation: with data of two
//! companies made through the API, a transaction confined the way the
//! service confines its own (role `qapmap_app`, company in
//! `qapmap.company_id`) sees and writes only its company's rows, even with
//! queries that name no company at all; and the service's reads, commands,
//! payments and saga commands really run confined.

use qapmap_proto::shareholder::v1 as proto;
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{TestApp, money, spawn_app};

/// Every table of this database that holds tenant rows: the shareholder's
/// own and the runtime's.
const TENANT_TABLES: [&str; 5] = [
    "stakeholders",
    "stakeholder_events",
    "payments",
    "idempotent_requests",
    "audit_log",
];

/// Rows of `table`, counted by a transaction confined like the service's:
/// as `qapmap_app`, with `company` in `qapmap.company_id` (none: unset).
/// The query names no company: only the policies filter.
pub(crate) async fn confined_count(pool: &PgPool, company: Option<Uuid>, table: &str) -> i64 {
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
    let count = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
        .fetch_one(&mut *transaction)
        .await
        .expect("confined count");
    transaction.rollback().await.expect("rollback");
    count
}

/// Rows of `table` that belong to `company`, counted by the owner.
async fn owner_count(pool: &PgPool, company: Uuid, table: &str) -> i64 {
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
async fn insert_as_other_company(
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

/// The tables of this database with a NOT NULL company_id and no tenant
/// policy: must be none.
async fn tenant_tables_without_rls(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c
         JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public'
         JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'company_id' AND a.attnotnull
         WHERE c.relkind = 'r'
           AND NOT (c.relrowsecurity AND EXISTS (
               SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid AND p.polname = 'tenant_isolation'))
         ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .expect("tables")
}

/// A stakeholder of the app's current company, updated once (two event
/// rows), who paid once.
async fn populate(app: &TestApp) -> proto::Stakeholder {
    let holder = app.stakeholder_paying_with("bank:ada").await;
    app.client
        .clone()
        .update_stakeholder(proto::UpdateStakeholderRequest {
            request_id: format!("update-{}", Uuid::now_v7()),
            company_id: app.company_id.to_string(),
            stakeholder_id: holder.id.clone(),
            expected_version: holder.version,
            email: Some("ada@example.org".to_owned()),
            ..Default::default()
        })
        .await
        .expect("updated");
    app.client
        .clone()
        .collect_payment(proto::CollectPaymentRequest {
            request_id: format!("pay-{}", Uuid::now_v7()),
            company_id: app.company_id.to_string(),
            stakeholder_id: holder.id.clone(),
            amount: Some(money("10", "USD")),
        })
        .await
        .expect("paid");
    holder
}

#[tokio::test]
async fn a_confined_transaction_sees_and_writes_only_its_own_companys_rows() {
    let mut app = spawn_app().await;
    let company_a = app.company_id;
    let company_b = Uuid::now_v7();
    populate(&app).await;
    app.company_id = company_b;
    populate(&app).await;
    app.company_id = company_a;

    assert_eq!(
        tenant_tables_without_rls(&app.pool).await,
        Vec::<String>::new(),
        "every table with a company_id is under the tenant policy"
    );
    for table in TENANT_TABLES {
        let own = owner_count(&app.pool, company_a, table).await;
        let other = owner_count(&app.pool, company_b, table).await;
        assert!(own > 0 && other > 0, "{table}: both companies have rows");
        assert_eq!(
            confined_count(&app.pool, Some(company_a), table).await,
            own,
            "{table}: confined to A, only A's rows"
        );
        assert_eq!(
            confined_count(&app.pool, Some(company_b), table).await,
            other,
            "{table}: confined to B, only B's rows"
        );
        assert_eq!(
            confined_count(&app.pool, None, table).await,
            0,
            "{table}: no company set, no rows"
        );
        let refusal = insert_as_other_company(&app.pool, company_a, company_b, table).await;
        let database = refusal.as_database_error().expect("a database error");
        assert_eq!(
            database.code().as_deref(),
            Some("42501"),
            "{table}: {refusal}"
        );
        assert!(
            database.message().contains("row-level security"),
            "{table}: {refusal}"
        );
    }
}
