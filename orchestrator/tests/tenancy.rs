//! Tenant isolation in the orchestrator, over real gRPC and Postgres:
//! row-level security on its tables, employees seeing only the sagas they
//! started for themselves, and the initiator carried in every command (also
//! when built later from the saga row). No other service runs: the sagas
//! wait at their first step, which is all these checks need.

use prost::Message;
use qapmap_proto::common::v1::Decimal;
use qapmap_proto::messaging::v1::{Initiator, SagaCommand};
use qapmap_proto::saga::v1 as api;
use qapmap_proto::saga::v1::saga_service_client::SagaServiceClient;
use qapmap_runtime::ServiceName;
use qapmap_runtime::auth::client::AuthenticatedChannel;
use qapmap_testkit::auth::{PLATFORM_SUBJECT, admin_token, employee_token};
use qapmap_testkit::in_process::RunningService;
use qapmap_testkit::tenancy::visible_rows;
use sqlx::{PgPool, Row};
use uuid::Uuid;

type Client = SagaServiceClient<AuthenticatedChannel>;

async fn orchestrator() -> (RunningService, PgPool) {
    let service =
        RunningService::start(ServiceName::Orchestrator, qapmap_orchestrator::build).await;
    let pool = service.database_pool().await;
    (service, pool)
}

fn exercise_request(company: Uuid, request_id: &str) -> api::StartExerciseRequest {
    api::StartExerciseRequest {
        request_id: request_id.to_owned(),
        company_id: company.to_string(),
        exercise: Some(api::ExerciseInput {
            award_id: Uuid::now_v7().to_string(),
            quantity: Some(Decimal {
                value: "10".to_owned(),
            }),
            exercise_date: None,
        }),
    }
}

async fn start_exercise(client: &Client, company: Uuid) -> api::Saga {
    client
        .clone()
        .start_exercise(exercise_request(company, &Uuid::now_v7().to_string()))
        .await
        .expect("exercise started")
        .into_inner()
        .saga
        .expect("saga")
}

async fn get_saga(
    client: &Client,
    company: Uuid,
    saga_id: &str,
) -> Result<api::Saga, tonic::Status> {
    let response = client
        .clone()
        .get_saga(api::GetSagaRequest {
            company_id: company.to_string(),
            saga_id: saga_id.to_owned(),
        })
        .await?;
    Ok(response.into_inner().saga.expect("saga"))
}

async fn listed_ids(client: &Client, company: Uuid) -> Vec<String> {
    let mut ids: Vec<String> = client
        .clone()
        .list_sagas(api::ListSagasRequest {
            company_id: company.to_string(),
            page_size: 500,
            ..Default::default()
        })
        .await
        .expect("sagas listed")
        .into_inner()
        .sagas
        .into_iter()
        .map(|saga| saga.id)
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confined_transaction_sees_and_writes_only_its_companys_sagas_and_steps() {
    let (service, pool) = orchestrator().await;
    let client = SagaServiceClient::new(service.channel());
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    start_exercise(&client, a).await;
    start_exercise(&client, a).await;
    let saga_of_b = start_exercise(&client, b).await;

    for table in ["sagas", "saga_steps"] {
        let owner_sees: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(DISTINCT company_id) FROM {table} WHERE company_id IN ($1, $2)"
        )))
        .bind(a)
        .bind(b)
        .fetch_one(&pool)
        .await
        .expect("owner count");
        assert_eq!(owner_sees, 2, "{table}: both companies have rows");
        let (all, own) = visible_rows(&pool, table, Some(a)).await;
        assert!(own > 0, "{table}: A sees its rows");
        assert_eq!(all, own, "{table}: A sees only its rows");
        assert_eq!(
            visible_rows(&pool, table, None).await,
            (0, 0),
            "{table}: no company, no rows"
        );
    }

    // Writing a row of B while confined to A fails, whatever the table.
    let inserts = [
        "INSERT INTO sagas (id, company_id, saga_type, state, request_id, request, context,
                            cursor_step, awaiting)
         VALUES (gen_random_uuid(), $1, 'option_exercise', 'running', 'rls-probe', '',
                 '{}'::jsonb, 0, 'nothing')",
        "INSERT INTO saga_steps (saga_id, company_id, step_index, name, service, kind, status)
         VALUES ($2, $1, 99, 'probe', 'equity', 'pivot', 'pending')",
    ];
    for insert in inserts {
        let mut transaction = pool.begin().await.expect("begin");
        qapmap_runtime::tenancy::confine(&mut transaction, a)
            .await
            .expect("confine");
        let error = sqlx::query(insert)
            .bind(b)
            .bind(Uuid::parse_str(&saga_of_b.id).expect("saga id"))
            .execute(&mut *transaction)
            .await
            .expect_err("a row of another company is refused");
        assert!(
            error.to_string().contains("row-level security"),
            "{insert}: {error}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_employee_reads_only_the_sagas_they_started_for_themselves() {
    let (service, pool) = orchestrator().await;
    let (company, other_company) = (Uuid::now_v7(), Uuid::now_v7());
    let (ada, bob) = (Uuid::now_v7(), Uuid::now_v7());
    let as_ada = SagaServiceClient::new(service.channel_with_token(&employee_token(company, ada)));
    let as_bob = SagaServiceClient::new(service.channel_with_token(&employee_token(company, bob)));
    let as_admin = SagaServiceClient::new(service.channel_with_token(&admin_token(company)));
    let as_other_admin =
        SagaServiceClient::new(service.channel_with_token(&admin_token(other_company)));

    let adas = start_exercise(&as_ada, company).await;
    let bobs = start_exercise(&as_bob, company).await;
    let admins = start_exercise(&as_admin, company).await;

    // Her own saga, and nobody else's: the others are as unknown as a
    // missing one, in GetSaga and in ListSagas.
    assert_eq!(
        get_saga(&as_ada, company, &adas.id)
            .await
            .expect("own saga")
            .id,
        adas.id
    );
    for foreign in [&bobs.id, &admins.id] {
        let status = get_saga(&as_ada, company, foreign)
            .await
            .expect_err("not hers");
        assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
    }
    assert_eq!(listed_ids(&as_ada, company).await, vec![adas.id.clone()]);
    let mut everyone = vec![adas.id.clone(), bobs.id.clone(), admins.id.clone()];
    everyone.sort();
    assert_eq!(listed_ids(&as_admin, company).await, everyone);

    // Another company's admin, asking under their own company: not found.
    let status = get_saga(&as_other_admin, other_company, &adas.id)
        .await
        .expect_err("another company's saga");
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
    assert!(listed_ids(&as_other_admin, other_company).await.is_empty());

    // Bob repeating Ada's request byte for byte does not get her saga.
    let repeat = sqlx::query_scalar::<_, Vec<u8>>("SELECT request FROM sagas WHERE id = $1")
        .bind(Uuid::parse_str(&adas.id).expect("id"))
        .fetch_one(&pool)
        .await
        .expect("stored request");
    let repeat = api::StartExerciseRequest::decode(repeat.as_slice()).expect("request decodes");
    let status = as_bob
        .clone()
        .start_exercise(repeat.clone())
        .await
        .expect_err("someone else's request id");
    assert_eq!(status.code(), tonic::Code::AlreadyExists, "{status:?}");
    // Ada repeating it gets her saga back.
    let again = as_ada
        .clone()
        .start_exercise(repeat)
        .await
        .expect("a repeat")
        .into_inner()
        .saga
        .expect("saga");
    assert_eq!(again.id, adas.id);

    // The row says who started each saga.
    let row = sqlx::query(
        "SELECT initiator, initiator_roles, initiator_stakeholder_id FROM sagas WHERE id = $1",
    )
    .bind(Uuid::parse_str(&adas.id).expect("id"))
    .fetch_one(&pool)
    .await
    .expect("saga row");
    assert_eq!(row.get::<String, _>(0), format!("employee-{ada}"));
    assert_eq!(row.get::<String, _>(1), "employee");
    assert_eq!(row.get::<Option<Uuid>, _>(2), Some(ada));
    let admin_row: Option<Uuid> =
        sqlx::query_scalar("SELECT initiator_stakeholder_id FROM sagas WHERE id = $1")
            .bind(Uuid::parse_str(&admins.id).expect("id"))
            .fetch_one(&pool)
            .await
            .expect("saga row");
    assert_eq!(
        admin_row, None,
        "an admin acts for the company, not for a stakeholder"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_carries_the_initiator_also_when_built_from_the_saga_row() {
    let (service, pool) = orchestrator().await;
    let company = Uuid::now_v7();
    let ada = Uuid::now_v7();
    let as_ada = SagaServiceClient::new(service.channel_with_token(&employee_token(company, ada)));
    let request_id = Uuid::now_v7().to_string();
    let saga = as_ada
        .clone()
        .start_exercise(exercise_request(company, &request_id))
        .await
        .expect("exercise started")
        .into_inner()
        .saga
        .expect("saga");

    // An operator aborts it: the compensation is built from the saga row,
    // in another call, by another caller, and still names Ada.
    let operator = SagaServiceClient::new(service.channel());
    let aborted = operator
        .clone()
        .abort_saga(api::AbortSagaRequest {
            request_id: "abort-1".to_owned(),
            company_id: company.to_string(),
            saga_id: saga.id.clone(),
            reason: "test".to_owned(),
        })
        .await
        .expect("aborted")
        .into_inner()
        .saga
        .expect("saga");
    assert_eq!(
        aborted.state,
        api::SagaState::Compensating as i32,
        "{aborted:#?}"
    );

    let payloads: Vec<(String, Vec<u8>)> =
        sqlx::query_as("SELECT subject, payload FROM outbox WHERE partition_key = $1 ORDER BY id")
            .bind(&saga.id)
            .fetch_all(&pool)
            .await
            .expect("outbox rows");
    let commands: Vec<SagaCommand> = payloads
        .iter()
        .map(|(_, payload)| SagaCommand::decode(payload.as_slice()).expect("a SagaCommand"))
        .collect();
    assert_eq!(
        commands.len(),
        2,
        "reserve, then its compensation: {payloads:?}"
    );
    assert!(commands[1].compensation);
    let expected = Initiator {
        subject: format!("employee-{ada}"),
        request_id,
        roles: vec!["employee".to_owned()],
        stakeholder_id: ada.to_string(),
    };
    for command in &commands {
        assert_eq!(command.initiator.as_ref(), Some(&expected), "{command:#?}");
    }

    // Both calls are in the audit trail, each under its own caller, with
    // the command it sent.
    let audit: Vec<(String, String, String, Vec<Uuid>)> = sqlx::query_as(
        "SELECT subject, roles, method, event_ids FROM audit_log WHERE company_id = $1 ORDER BY audit_id",
    )
    .bind(company)
    .fetch_all(&pool)
    .await
    .expect("audit rows");
    assert_eq!(audit.len(), 2, "{audit:#?}");
    assert_eq!(audit[0].0, format!("employee-{ada}"));
    assert_eq!(audit[0].1, "employee");
    assert_eq!(audit[0].2, "/qapmap.saga.v1.SagaService/StartExercise");
    assert_eq!(audit[1].0, PLATFORM_SUBJECT);
    assert_eq!(audit[1].2, "/qapmap.saga.v1.SagaService/AbortSaga");
    let request_ids: Vec<String> = sqlx::query_scalar(
        "SELECT request_id FROM audit_log WHERE company_id = $1 ORDER BY audit_id",
    )
    .bind(company)
    .fetch_all(&pool)
    .await
    .expect("audit rows");
    assert_eq!(request_ids, [expected.request_id.as_str(), "abort-1"]);
    for (_, _, _, event_ids) in &audit {
        assert_eq!(event_ids.len(), 1, "each call sent one command: {audit:#?}");
    }
}
