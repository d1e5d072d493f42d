//! The audit trail of the shareholder service: one record per command that
//! happened, naming the caller (or a saga's initiator), the method, the
//! request id and the events it produced; none for a refused command;
//! readable through `qapmap.ops.v1.AuditService` by the company's admin
//! only.

use qapmap_proto::messaging::v1::Initiator;
use qapmap_proto::ops::v1 as ops;
use qapmap_proto::ops::v1::audit_service_client::AuditServiceClient;
use qapmap_proto::shareholder::v1 as proto;
use qapmap_proto::shareholder::v1::shareholder_service_client::ShareholderServiceClient;
use qapmap_testkit::auth::{admin_token, employee_token};
use qapmap_testkit::saga_bus::SagaBus;
use sqlx::PgPool;
use tonic::Code;
use uuid::Uuid;

use crate::helpers::{date, reason, spawn_app};
use crate::saga_commands::payment_command;

/// One audit row, as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
struct AuditRow {
    subject: String,
    roles: String,
    method: String,
    request_id: String,
    event_ids: Vec<Uuid>,
}

/// The company's audit rows with `request_id` (event ids sorted).
async fn audit_rows(pool: &PgPool, company: Uuid, request_id: &str) -> Vec<AuditRow> {
    let mut rows: Vec<AuditRow> = sqlx::query_as(
        "SELECT subject, roles, method, request_id, event_ids FROM audit_log
         WHERE company_id = $1 AND request_id = $2 ORDER BY audit_id",
    )
    .bind(company)
    .bind(request_id)
    .fetch_all(pool)
    .await
    .expect("audit rows");
    for row in &mut rows {
        row.event_ids.sort();
    }
    rows
}

/// The last outbox row id, to tell which messages a call added.
async fn outbox_mark(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT coalesce(max(id), 0) FROM outbox")
        .fetch_one(pool)
        .await
        .expect("outbox mark")
}

/// The message ids of the company's events (not replies) enqueued after `mark`.
async fn events_since(pool: &PgPool, company: Uuid, mark: i64) -> Vec<Uuid> {
    sqlx::query_scalar(
        "SELECT message_id FROM outbox
         WHERE company_id = $1 AND id > $2 AND subject LIKE '%.evt.%' ORDER BY message_id",
    )
    .bind(company)
    .bind(mark)
    .fetch_all(pool)
    .await
    .expect("events")
}

#[tokio::test]
async fn a_command_is_audited_once_with_its_caller_and_events_and_a_refusal_not_at_all() {
    let app = spawn_app().await;
    let company = app.company_id;
    let mut admin =
        ShareholderServiceClient::new(app.service.channel_with_token(&admin_token(company)));

    let mark = outbox_mark(&app.pool).await;
    let request = app.new_stakeholder("audited-create");
    let created = admin
        .create_stakeholder(request.clone())
        .await
        .expect("created by the company's admin")
        .into_inner()
        .stakeholder
        .expect("stakeholder");
    let events = events_since(&app.pool, company, mark).await;
    assert!(!events.is_empty(), "the creation announced itself");
    assert_eq!(
        audit_rows(&app.pool, company, &request.request_id).await,
        vec![AuditRow {
            subject: format!("admin-of-{company}"),
            roles: "admin".to_owned(),
            method: "/qapmap.shareholder.v1.ShareholderService/CreateStakeholder".to_owned(),
            request_id: request.request_id.clone(),
            event_ids: events.clone(),
        }]
    );

    // A repeat returns the first response and is not a second command; a
    // refusal writes nothing, the audit record included.
    let audited = app.count("audit_log").await;
    admin
        .create_stakeholder(request.clone())
        .await
        .expect("repeat");
    let refused = admin
        .record_termination(proto::RecordTerminationRequest {
            request_id: "terminate-too-early".to_owned(),
            company_id: company.to_string(),
            stakeholder_id: created.id.clone(),
            expected_version: created.version,
            termination_date: Some(date(2020, 1, 1)),
            termination_reason: proto::TerminationReason::VoluntaryOther as i32,
        })
        .await
        .expect_err("before the employment started");
    reason(&refused);
    assert_eq!(app.count("audit_log").await, audited);

    // The company's admin reads the trail; another company's admin and an
    // employee do not.
    let list = ops::ListAuditRecordsRequest {
        company_id: company.to_string(),
        ..Default::default()
    };
    let records = AuditServiceClient::new(app.service.channel_with_token(&admin_token(company)))
        .list_audit_records(list.clone())
        .await
        .expect("the admin's trail")
        .into_inner()
        .records;
    let record = records
        .iter()
        .find(|record| record.request_id == request.request_id)
        .expect("the creation's record");
    assert_eq!(record.subject, format!("admin-of-{company}"));
    assert_eq!(record.roles, vec!["admin".to_owned()]);
    assert_eq!(
        record.method,
        "/qapmap.shareholder.v1.ShareholderService/CreateStakeholder"
    );
    let mut listed_events = record.event_ids.clone();
    listed_events.sort();
    assert_eq!(
        listed_events,
        events.iter().map(Uuid::to_string).collect::<Vec<_>>()
    );
    let stranger =
        AuditServiceClient::new(app.service.channel_with_token(&admin_token(Uuid::now_v7())))
            .list_audit_records(list.clone())
            .await
            .expect_err("another company's admin");
    assert_eq!(stranger.code(), Code::NotFound, "{stranger:?}");
    let employee = AuditServiceClient::new(
        app.service
            .channel_with_token(&employee_token(company, created.id.parse().expect("uuid"))),
    )
    .list_audit_records(list)
    .await
    .expect_err("an employee");
    assert_eq!(employee.code(), Code::PermissionDenied, "{employee:?}");
}

#[tokio::test]
async fn a_saga_payment_is_audited_once_under_its_initiator_with_its_outcome() {
    let app = spawn_app().await;
    let mut bus = SagaBus::connect(&app.service.namespace, "shareholder").await;
    let company = app.company_id;
    let holder = app.stakeholder_paying_with("bank:ada").await;
    let mut command = payment_command(&app, "option_exercise", &holder.id, "25");
    command.initiator = Some(Initiator {
        subject: format!("employee-{}", holder.id),
        request_id: "start-exercise".to_owned(),
        roles: vec!["employee".to_owned()],
        stakeholder_id: holder.id.clone(),
    });
    let request_id = format!("{}/{}", command.saga_id, command.step);

    let mark = outbox_mark(&app.pool).await;
    let paid = bus.call("collect_payment", &command, None).await;
    assert!(paid.succeeded(), "{:?}", paid.reply);
    let events = events_since(&app.pool, company, mark).await;
    assert_eq!(events.len(), 1, "PaymentRecorded");
    let expected = vec![AuditRow {
        subject: format!("employee-{}", holder.id),
        roles: "employee".to_owned(),
        method: "saga:collect_payment".to_owned(),
        request_id: request_id.clone(),
        event_ids: events,
    }];
    assert_eq!(audit_rows(&app.pool, company, &request_id).await, expected);

    // The orchestrator re-sends after a deadline: the first result, no
    // second payment, no second record.
    let again = bus.call("collect_payment", &command, None).await;
    assert!(again.succeeded(), "{:?}", again.reply);
    assert_eq!(audit_rows(&app.pool, company, &request_id).await, expected);

    // A refused one (no payment instruction) records nothing.
    let audited = app.count("audit_log").await;
    let mut no_instruction = app.new_stakeholder("no-instruction");
    no_instruction.payment_instruction_ref = String::new();
    let silent = app.create(no_instruction).await;
    let audited_after_create = app.count("audit_log").await;
    assert_eq!(audited_after_create, audited + 1, "the creation's record");
    let refused = bus
        .call(
            "collect_payment",
            &payment_command(&app, "option_exercise", &silent.id, "25"),
            None,
        )
        .await;
    assert_eq!(refused.rejected_with(), "payment_instruction_missing");
    assert_eq!(app.count("audit_log").await, audited_after_create);
}

#[tokio::test]
async fn an_api_payment_is_audited_once_with_its_caller_and_its_outcome_event() {
    let app = spawn_app().await;
    let company = app.company_id;
    let mut admin =
        ShareholderServiceClient::new(app.service.channel_with_token(&admin_token(company)));
    let holder = app.stakeholder_paying_with("bank:ada").await;
    let request = proto::CollectPaymentRequest {
        request_id: "collect-audited".to_owned(),
        company_id: company.to_string(),
        stakeholder_id: holder.id.clone(),
        amount: Some(crate::helpers::money("25", "USD")),
    };

    let mark = outbox_mark(&app.pool).await;
    admin
        .collect_payment(request.clone())
        .await
        .expect("collected");
    let events = events_since(&app.pool, company, mark).await;
    assert_eq!(events.len(), 1, "PaymentRecorded");
    let expected = vec![AuditRow {
        subject: format!("admin-of-{company}"),
        roles: "admin".to_owned(),
        method: "/qapmap.shareholder.v1.ShareholderService/CollectPayment".to_owned(),
        request_id: request.request_id.clone(),
        event_ids: events,
    }];
    assert_eq!(
        audit_rows(&app.pool, company, &request.request_id).await,
        expected
    );

    // A repeat returns the first result: no second payment, no second record.
    admin
        .collect_payment(request.clone())
        .await
        .expect("repeat");
    assert_eq!(
        audit_rows(&app.pool, company, &request.request_id).await,
        expected
    );
}
