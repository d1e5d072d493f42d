//! Employee self-service: an employee's token reads only their own
//! stakeholder record (a colleague's is NOT_FOUND, as one that does not
//! exist), writes nothing, and a saga they started for themselves pays only
//! for them.

use qapmap_proto::messaging::v1::Initiator;
use qapmap_proto::shareholder::v1 as proto;
use qapmap_proto::shareholder::v1::shareholder_service_client::ShareholderServiceClient;
use qapmap_runtime::auth::client::AuthenticatedChannel;
use qapmap_testkit::auth::employee_token;
use qapmap_testkit::saga_bus::SagaBus;
use tonic::Code;
use uuid::Uuid;

use crate::helpers::{TestApp, spawn_app};
use crate::saga_commands::payment_command;

fn employee(app: &TestApp, stakeholder: &str) -> ShareholderServiceClient<AuthenticatedChannel> {
    let stakeholder = stakeholder.parse().expect("uuid");
    ShareholderServiceClient::new(
        app.service
            .channel_with_token(&employee_token(app.company_id, stakeholder)),
    )
}

fn get(app: &TestApp, stakeholder_id: &str) -> proto::GetStakeholderRequest {
    proto::GetStakeholderRequest {
        company_id: app.company_id.to_string(),
        stakeholder_id: stakeholder_id.to_owned(),
    }
}

#[tokio::test]
async fn an_employee_reads_only_their_own_stakeholder_record() {
    let app = spawn_app().await;
    let own = app.stakeholder_paying_with("bank:own").await;
    let colleague = app.stakeholder_paying_with("bank:colleague").await;
    let mut client = employee(&app, &own.id);

    let read = client
        .get_stakeholder(get(&app, &own.id))
        .await
        .expect("own record")
        .into_inner()
        .stakeholder
        .expect("stakeholder");
    assert_eq!(read, own);

    let colleagues = client
        .get_stakeholder(get(&app, &colleague.id))
        .await
        .expect_err("a colleague's record");
    let unknown = Uuid::now_v7().to_string();
    let missing = client
        .get_stakeholder(get(&app, &unknown))
        .await
        .expect_err("no such stakeholder");
    assert_eq!(colleagues.code(), Code::NotFound, "{colleagues:?}");
    assert_eq!(
        (
            colleagues.code(),
            colleagues.message().replace(&colleague.id, "ID")
        ),
        (missing.code(), missing.message().replace(&unknown, "ID")),
        "a colleague's record reads exactly as one that does not exist"
    );

    // Staff calls are unchanged.
    assert_eq!(app.get(&colleague.id).await, colleague);
}

#[tokio::test]
async fn an_employee_cannot_write_or_list_and_nothing_is_written() {
    let app = spawn_app().await;
    let own = app.stakeholder_paying_with("bank:own").await;
    let before = (app.written().await, app.count("audit_log").await);
    let mut client = employee(&app, &own.id);

    let created = client
        .create_stakeholder(app.new_stakeholder("employee-create"))
        .await
        .expect_err("employees do not create stakeholders");
    assert_eq!(created.code(), Code::PermissionDenied, "{created:?}");
    let updated = client
        .update_stakeholder(proto::UpdateStakeholderRequest {
            request_id: "employee-update".to_owned(),
            company_id: app.company_id.to_string(),
            stakeholder_id: own.id.clone(),
            expected_version: own.version,
            payment_instruction_ref: Some("bank:elsewhere".to_owned()),
            ..Default::default()
        })
        .await
        .expect_err("not even their own record");
    assert_eq!(updated.code(), Code::PermissionDenied, "{updated:?}");
    let listed = client
        .list_stakeholders(proto::ListStakeholdersRequest {
            company_id: app.company_id.to_string(),
            ..Default::default()
        })
        .await
        .expect_err("the register is not self-service");
    assert_eq!(listed.code(), Code::PermissionDenied, "{listed:?}");
    assert_eq!(
        (app.written().await, app.count("audit_log").await),
        before,
        "nothing written, nothing audited"
    );
}

#[tokio::test]
async fn an_employees_own_saga_pays_only_for_them() {
    let app = spawn_app().await;
    let mut bus = SagaBus::connect(&app.service.namespace, "shareholder").await;
    let own = app.stakeholder_paying_with("bank:own").await;
    let colleague = app.stakeholder_paying_with("bank:colleague").await;
    let initiator = Initiator {
        subject: format!("employee-{}", own.id),
        request_id: "start-exercise".to_owned(),
        roles: vec!["employee".to_owned()],
        stakeholder_id: own.id.clone(),
    };
    let before = (app.count("payments").await, app.gateway.total_calls());

    let mut reaching = payment_command(&app, "option_exercise", &colleague.id, "10");
    reaching.initiator = Some(initiator.clone());
    let refused = bus.call("collect_payment", &reaching, None).await;
    assert_eq!(refused.rejected_with(), "not_own_stakeholder");
    assert_eq!(
        (app.count("payments").await, app.gateway.total_calls()),
        before,
        "no payment, no gateway call"
    );

    let mut own_payment = payment_command(&app, "option_exercise", &own.id, "10");
    own_payment.initiator = Some(initiator);
    let paid = bus.call("collect_payment", &own_payment, None).await;
    assert!(paid.succeeded(), "{:?}", paid.reply);
}
