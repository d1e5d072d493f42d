//! Row-level security, the second line of tenant isolation: with data of two
//! companies made through the API, a transaction confined the way the
//! service confines its own (role `qapmap_app`, company in
//! `qapmap.company_id`) sees and writes only its company's rows, even with
//! queries that name no company at all; and the service's reads, commands,
//! payments and saga commands really run confined.

use qapmap_proto::shareholder::v1 as proto;
use qapmap_testkit::saga_bus::SagaBus;
use qapmap_testkit::tenancy::{
    confined_count, insert_as_other_company, owner_count, tenant_tables_without_rls,
};
use sqlx::PgPool;
use tonic::Code;
use uuid::Uuid;

use crate::helpers::{TestApp, money, spawn_app};
use crate::saga_commands::payment_command;

/// Every table of this database that holds tenant rows: the shareholder's
/// own and the runtime's.
const TENANT_TABLES: [&str; 5] = [
    "stakeholders",
    "stakeholder_events",
    "payments",
    "idempotent_requests",
    "audit_log",
];

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

/// Notes, for every row written to `tables`, who wrote it and for which
/// company the writer was confined (`confinement_seen`).
async fn watch_confinement(pool: &PgPool, tables: &[&str]) {
    sqlx::raw_sql(
        "CREATE TABLE confinement_seen (table_name TEXT, role_name TEXT, confined_to TEXT, row_company UUID);
         GRANT INSERT ON confinement_seen TO qapmap_app;
         CREATE FUNCTION note_confinement() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             INSERT INTO confinement_seen
             VALUES (TG_TABLE_NAME, current_user, current_setting('qapmap.company_id', true), NEW.company_id);
             RETURN NEW;
         END $$;",
    )
    .execute(pool)
    .await
    .expect("confinement watch");
    for table in tables {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE TRIGGER note_confinement AFTER INSERT OR UPDATE ON {table}
             FOR EACH ROW EXECUTE FUNCTION note_confinement()"
        )))
        .execute(pool)
        .await
        .expect("trigger");
    }
}

/// (table, role, confined to, row company) of every write seen.
async fn writes_seen(pool: &PgPool) -> Vec<(String, String, Option<String>, Uuid)> {
    sqlx::query_as(
        "SELECT DISTINCT table_name, role_name, confined_to, row_company
         FROM confinement_seen ORDER BY 1, 2, 3, 4",
    )
    .fetch_all(pool)
    .await
    .expect("writes seen")
}

async fn revoke_reads(app: &TestApp, table: &str, revoke: bool) {
    let sql = if revoke {
        format!("REVOKE SELECT ON {table} FROM qapmap_app")
    } else {
        format!("GRANT SELECT ON {table} TO qapmap_app")
    };
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&app.pool)
        .await
        .expect("privilege change");
}

#[tokio::test]
async fn the_service_reads_writes_pays_and_runs_saga_commands_confined_to_the_company() {
    let mut app = spawn_app().await;
    let mut bus = SagaBus::connect(&app.service.namespace, "shareholder").await;
    watch_confinement(&app.pool, &TENANT_TABLES).await;
    let company_a = app.company_id;
    let company_b = Uuid::now_v7();
    let holder_a = populate(&app).await;
    let saga_pay = bus
        .call(
            "collect_payment",
            &payment_command(&app, "option_exercise", &holder_a.id, "5"),
            None,
        )
        .await;
    assert!(saga_pay.succeeded(), "{:?}", saga_pay.reply);
    app.company_id = company_b;
    let holder_b = populate(&app).await;
    app.company_id = company_a;

    // Every write (commands, payments, the saga's payment and its audit
    // record) ran as the application role confined to its row's company.
    let seen = writes_seen(&app.pool).await;
    for (table, role, confined_to, row_company) in &seen {
        assert_eq!(role, "qapmap_app", "{table} written unconfined");
        assert_eq!(
            confined_to.as_deref(),
            Some(row_company.to_string().as_str()),
            "{table} written confined to another company"
        );
    }
    for table in TENANT_TABLES {
        for company in [company_a, company_b] {
            assert!(
                seen.iter()
                    .any(|(name, _, _, row)| name == table && *row == company),
                "{table}: no write of {company} seen"
            );
        }
    }

    // B's stakeholder, asked for as A's, does not exist.
    let foreign = app
        .client
        .clone()
        .get_stakeholder(proto::GetStakeholderRequest {
            company_id: company_a.to_string(),
            stakeholder_id: holder_b.id.clone(),
        })
        .await
        .expect_err("another company's stakeholder");
    assert_eq!(foreign.code(), Code::NotFound);

    // Reads run as the application role: without its right to read they
    // fail, whatever the caller's token may do.
    revoke_reads(&app, "stakeholders", true).await;
    let get = app
        .client
        .clone()
        .get_stakeholder(proto::GetStakeholderRequest {
            company_id: company_a.to_string(),
            stakeholder_id: holder_a.id.clone(),
        })
        .await
        .expect_err("reading stakeholders needs qapmap_app's right");
    assert_eq!(get.code(), Code::Internal, "{get:?}");
    let list = app
        .client
        .clone()
        .list_stakeholders(proto::ListStakeholdersRequest {
            company_id: company_a.to_string(),
            ..Default::default()
        })
        .await
        .expect_err("listing stakeholders needs qapmap_app's right");
    assert_eq!(list.code(), Code::Internal, "{list:?}");
    revoke_reads(&app, "stakeholders", false).await;

    let payment_id = saga_payment_id(&saga_pay);
    revoke_reads(&app, "payments", true).await;
    let get = app
        .client
        .clone()
        .get_payment(proto::GetPaymentRequest {
            company_id: company_a.to_string(),
            payment_id: payment_id.clone(),
        })
        .await
        .expect_err("reading payments needs qapmap_app's right");
    assert_eq!(get.code(), Code::Internal, "{get:?}");
    let list = app
        .client
        .clone()
        .list_payments(proto::ListPaymentsRequest {
            company_id: company_a.to_string(),
            ..Default::default()
        })
        .await
        .expect_err("listing payments needs qapmap_app's right");
    assert_eq!(list.code(), Code::Internal, "{list:?}");
    revoke_reads(&app, "payments", false).await;

    // With the rights back, A reads only A's rows, under A's policy.
    let stakeholders = app
        .client
        .clone()
        .list_stakeholders(proto::ListStakeholdersRequest {
            company_id: company_a.to_string(),
            ..Default::default()
        })
        .await
        .expect("listed")
        .into_inner()
        .stakeholders;
    assert_eq!(
        stakeholders.into_iter().map(|s| s.id).collect::<Vec<_>>(),
        vec![holder_a.id]
    );
    let payments = app
        .client
        .clone()
        .list_payments(proto::ListPaymentsRequest {
            company_id: company_a.to_string(),
            ..Default::default()
        })
        .await
        .expect("listed")
        .into_inner()
        .payments;
    assert_eq!(payments.len(), 2, "the API's and the saga's payment");
    assert!(payments.iter().any(|payment| payment.id == payment_id));
}

fn saga_payment_id(reply: &qapmap_testkit::saga_bus::ReceivedReply) -> String {
    use qapmap_proto::messaging::v1::saga_reply::Result as ReplyResult;
    match &reply.reply.result {
        Some(ReplyResult::Payment(payment)) => payment.payment_id.clone(),
        other => panic!("not a PaymentResult: {other:?}"),
    }
}
