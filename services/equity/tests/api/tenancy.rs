//! Row-level security, the second line of tenant isolation: with data of two
//! companies made through the API and the saga bus, a transaction confined
//! the way the service confines its own (role `qapmap_app`, company in
//! `qapmap.company_id`) sees and writes only its company's rows, even with
//! queries that name no company at all; and the service's reads, commands
//! and saga commands really run confined.

use qapmap_proto::equity::v1 as proto;
use qapmap_proto::equity::v1::CancellationBehavior::ReturnToPool;
use qapmap_proto::messaging::v1::saga_command::Command;
use qapmap_testkit::saga_bus::SagaBus;
use qapmap_testkit::tenancy::{
    confined_count, insert_as_other_company, owner_count, tenant_tables_without_rls,
};
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{TestApp, date, dec, request_id, usd};
use crate::saga_commands::{
    BUYBACK, TRACEPARENT, confirm_exercise, envelope, release_options, reserve_options,
    reserved_options,
};

/// Every table of this database that holds tenant rows: equity's own and
/// the runtime's.
const TENANT_TABLES: [&str; 11] = [
    "share_classes",
    "equity_plans",
    "awards",
    "repurchase_programs",
    "option_reservations",
    "repurchase_reservations",
    "saga_step_results",
    "equity_events",
    "saga_tombstones",
    "idempotent_requests",
    "audit_log",
];

/// Gives `table` a row (for the saga tables, a saga step) of the app's
/// current company in every tenant table.
async fn populate(app: &mut TestApp, bus: &mut SagaBus) -> proto::Award {
    let plan = app.create_plan("10000000", ReturnToPool).await;
    let award = app.grant(&plan.id, "100000").await;
    let class = app.create_class("1000000").await;
    let program = app
        .client
        .create_repurchase_program(proto::CreateRepurchaseProgramRequest {
            request_id: request_id(),
            company_id: app.company_id.to_string(),
            share_class_id: class.id.clone(),
            max_shares: dec("1000"),
            max_price_per_share: usd("2.50"),
            start_date: date(2025, 1, 1),
            end_date: date(2025, 12, 31),
        })
        .await
        .expect("program")
        .into_inner()
        .program
        .expect("program");

    // option_reservations, then saga_step_results (a confirm stores its result).
    let exercise = Uuid::now_v7();
    let reserved = bus
        .call(
            "reserve_options",
            &reserve_options(app, exercise, &award.id, "1000"),
            Some(TRACEPARENT),
        )
        .await;
    let reservation_id = reserved_options(&reserved).reservation_id;
    let confirmed = bus
        .call(
            "confirm_exercise",
            &confirm_exercise(app, exercise, &reservation_id),
            Some(TRACEPARENT),
        )
        .await;
    assert!(confirmed.succeeded(), "{:?}", confirmed.reply);
    // saga_tombstones: a release before its reserve.
    let released = bus
        .call(
            "release_option_reservation",
            &release_options(app, Uuid::now_v7(), ""),
            Some(TRACEPARENT),
        )
        .await;
    assert!(released.succeeded(), "{:?}", released.reply);
    // repurchase_reservations.
    let body = Command::ReserveRepurchase(proto::ReserveRepurchaseCommand {
        program_id: program.id.clone(),
        stakeholder_id: Uuid::now_v7().to_string(),
        quantity: dec("10"),
        price_per_share: usd("2.00"),
        repurchase_date: date(2025, 6, 30),
    });
    let repurchase = bus
        .call(
            "reserve_repurchase",
            &envelope(app, BUYBACK, Uuid::now_v7(), 0, false, body),
            Some(TRACEPARENT),
        )
        .await;
    assert!(repurchase.succeeded(), "{:?}", repurchase.reply);
    award
}

#[tokio::test]
async fn a_confined_transaction_sees_and_writes_only_its_own_companys_rows() {
    let mut app = TestApp::spawn().await;
    let mut bus = SagaBus::connect(&app.service.namespace, "equity").await;
    let company_a = app.company_id;
    let company_b = Uuid::now_v7();
    populate(&mut app, &mut bus).await;
    app.company_id = company_b;
    populate(&mut app, &mut bus).await;
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
pub(crate) async fn watch_confinement(pool: &PgPool, tables: &[&str]) {
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

/// (table, role, confined to, row company, rows) of every write seen.
pub(crate) async fn writes_seen(pool: &PgPool) -> Vec<(String, String, Option<String>, Uuid, i64)> {
    sqlx::query_as(
        "SELECT table_name, role_name, confined_to, row_company, count(*)
         FROM confinement_seen GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4",
    )
    .fetch_all(pool)
    .await
    .expect("writes seen")
}

#[tokio::test]
async fn the_service_reads_writes_and_runs_saga_commands_confined_to_the_company() {
    let mut app = TestApp::spawn().await;
    let mut bus = SagaBus::connect(&app.service.namespace, "equity").await;
    watch_confinement(&app.pool, &TENANT_TABLES).await;
    let company_a = app.company_id;
    let company_b = Uuid::now_v7();
    let award_a = populate(&mut app, &mut bus).await;
    app.company_id = company_b;
    let award_b = populate(&mut app, &mut bus).await;
    app.company_id = company_a;

    // Every write, by a gRPC command or a saga command, ran as the
    // application role confined to the company of the row it wrote.
    let seen = writes_seen(&app.pool).await;
    for (table, role, confined_to, row_company, _) in &seen {
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
                    .any(|(name, _, _, row, _)| name == table && *row == company),
                "{table}: no write of {company} seen"
            );
        }
    }

    // The company's own award reads; B's, asked for as A's, does not exist.
    app.position(&award_a.id, None).await;
    let foreign = app
        .client
        .get_award(proto::GetAwardRequest {
            company_id: company_a.to_string(),
            award_id: award_b.id.clone(),
            as_of: None,
        })
        .await
        .expect_err("another company's award");
    assert_eq!(foreign.code(), tonic::Code::NotFound);

    // Reads run as the application role: without its right to read awards
    // they fail, whatever the caller's token may do.
    sqlx::raw_sql("REVOKE SELECT ON awards FROM qapmap_app")
        .execute(&app.pool)
        .await
        .expect("revoke");
    let get = app
        .client
        .get_award(proto::GetAwardRequest {
            company_id: company_a.to_string(),
            award_id: award_a.id.clone(),
            as_of: None,
        })
        .await
        .expect_err("reading awards needs qapmap_app's right");
    assert_eq!(get.code(), tonic::Code::Internal, "{get:?}");
    let list = app
        .client
        .list_awards(proto::ListAwardsRequest {
            company_id: company_a.to_string(),
            ..Default::default()
        })
        .await
        .expect_err("listing awards needs qapmap_app's right");
    assert_eq!(list.code(), tonic::Code::Internal, "{list:?}");
    sqlx::raw_sql("GRANT SELECT ON awards TO qapmap_app")
        .execute(&app.pool)
        .await
        .expect("grant");
    let listed = app
        .client
        .list_awards(proto::ListAwardsRequest {
            company_id: company_a.to_string(),
            ..Default::default()
        })
        .await
        .expect("listed again")
        .into_inner();
    let ids: Vec<String> = listed.awards.into_iter().map(|award| award.id).collect();
    assert_eq!(ids, vec![award_a.id], "only A's award, under A's policy");
}
