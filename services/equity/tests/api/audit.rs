//! The audit trail of the equity service: one record per command that
//! happened, naming the caller (or a saga's initiator), the method, the
//! request id and the events it produced; none for a refused command;
//! readable through `qapmap.ops.v1.AuditService` by the company's admin
//! only.

use qapmap_proto::equity::v1::CancellationBehavior::ReturnToPool;
use qapmap_proto::equity::v1::equity_service_client::EquityServiceClient;
use qapmap_proto::messaging::v1::Initiator;
use qapmap_proto::ops::v1 as ops;
use qapmap_proto::ops::v1::audit_service_client::AuditServiceClient;
use qapmap_testkit::auth::{admin_token, employee_token};
use qapmap_testkit::saga_bus::SagaBus;
use sqlx::PgPool;
use tonic::Code;
use uuid::Uuid;

use crate::helpers::{TestApp, reason};
use crate::saga_commands::{TRACEPARENT, release_options, reserve_options, reserved_options};

/// One audit row, as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub(crate) struct AuditRow {
    pub(crate) subject: String,
    pub(crate) roles: String,
    pub(crate) method: String,
    pub(crate) request_id: String,
    pub(crate) event_ids: Vec<Uuid>,
}

/// The company's audit rows with `request_id` (event ids sorted).
pub(crate) async fn audit_rows(pool: &PgPool, company: Uuid, request_id: &str) -> Vec<AuditRow> {
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
pub(crate) async fn outbox_mark(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT coalesce(max(id), 0) FROM outbox")
        .fetch_one(pool)
        .await
        .expect("outbox mark")
}

/// The message ids of the company's events (not replies) enqueued after `mark`.
pub(crate) async fn events_since(pool: &PgPool, company: Uuid, mark: i64) -> Vec<Uuid> {
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
    let mut app = TestApp::spawn().await;
    let plan = app.create_plan("150000", ReturnToPool).await;
    let company = app.company_id;
    let mut admin = EquityServiceClient::new(app.service.channel_with_token(&admin_token(company)));

    let mark = outbox_mark(&app.pool).await;
    let request = app.grant_request(&plan.id, "100000");
    admin
        .grant_award(request.clone())
        .await
        .expect("granted by the company's admin");
    let events = events_since(&app.pool, company, mark).await;
    assert!(!events.is_empty(), "the grant announced itself");
    let rows = audit_rows(&app.pool, company, &request.request_id).await;
    assert_eq!(
        rows,
        vec![AuditRow {
            subject: format!("admin-of-{company}"),
            roles: "admin".to_owned(),
            method: "/qapmap.equity.v1.EquityService/GrantAward".to_owned(),
            request_id: request.request_id.clone(),
            event_ids: events.clone(),
        }]
    );

    // A repeat returns the first response and is not a second command.
    let audited = app.count("audit_log").await;
    admin.grant_award(request.clone()).await.expect("repeat");
    // A refusal writes nothing, the audit record included.
    let refused = admin
        .grant_award(app.grant_request(&plan.id, "60000"))
        .await
        .expect_err("more than the pool holds");
    assert_eq!(reason(&refused), "pool_exhausted");
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
        .expect("the grant's record");
    assert_eq!(record.subject, format!("admin-of-{company}"));
    assert_eq!(record.roles, vec!["admin".to_owned()]);
    assert_eq!(record.method, "/qapmap.equity.v1.EquityService/GrantAward");
    assert_eq!(record.company_id, company.to_string());
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
            .channel_with_token(&employee_token(company, Uuid::now_v7())),
    )
    .list_audit_records(list)
    .await
    .expect_err("an employee");
    assert_eq!(employee.code(), Code::PermissionDenied, "{employee:?}");
}

#[tokio::test]
async fn saga_commands_are_audited_under_their_initiator() {
    let mut app = TestApp::spawn().await;
    let mut bus = SagaBus::connect(&app.service.namespace, "equity").await;
    let plan = app.create_plan("10000000", ReturnToPool).await;
    let award = app.grant(&plan.id, "100000").await;
    let company = app.company_id;
    let saga = Uuid::now_v7();

    let mark = outbox_mark(&app.pool).await;
    let mut reserve = reserve_options(&app, saga, &award.id, "1000");
    reserve.initiator = Some(Initiator {
        subject: format!("admin-of-{company}"),
        request_id: "start-exercise-1".to_owned(),
        roles: vec!["admin".to_owned()],
        stakeholder_id: String::new(),
    });
    let reserved = bus
        .call("reserve_options", &reserve, Some(TRACEPARENT))
        .await;
    let reservation_id = reserved_options(&reserved).reservation_id;
    let events = events_since(&app.pool, company, mark).await;
    assert_eq!(events.len(), 1, "OptionsReserved");
    assert_eq!(
        audit_rows(&app.pool, company, &format!("{saga}/0")).await,
        vec![AuditRow {
            subject: format!("admin-of-{company}"),
            roles: "admin".to_owned(),
            method: "saga:reserve_options".to_owned(),
            request_id: format!("{saga}/0"),
            event_ids: events,
        }]
    );

    // A refused step writes no record.
    let audited = app.count("audit_log").await;
    let refused = bus
        .call(
            "reserve_options",
            &reserve_options(&app, Uuid::now_v7(), &award.id, "99999"),
            Some(TRACEPARENT),
        )
        .await;
    assert_eq!(refused.rejected_with(), "insufficient_vested_options");
    assert_eq!(app.count("audit_log").await, audited);

    // A compensation, sent with no initiator: the orchestrator's own.
    let mark = outbox_mark(&app.pool).await;
    let released = bus
        .call(
            "release_option_reservation",
            &release_options(&app, saga, &reservation_id),
            Some(TRACEPARENT),
        )
        .await;
    assert!(released.succeeded(), "{:?}", released.reply);
    let rows = audit_rows(&app.pool, company, &format!("{saga}/0/compensation")).await;
    assert_eq!(
        rows,
        vec![AuditRow {
            subject: "orchestrator".to_owned(),
            roles: String::new(),
            method: "saga:release_option_reservation".to_owned(),
            request_id: format!("{saga}/0/compensation"),
            event_ids: events_since(&app.pool, company, mark).await,
        }]
    );
    assert_eq!(rows[0].event_ids.len(), 1, "OptionReservationReleased");
}
