//! Employee self-service: an employee's token reaches only their own awards
//! (GetAward, ListAwards), gets NOT_FOUND for a colleague's as for an award
//! that does not exist, may write nothing, and an exercise saga they started
//! for themselves may reserve only their own award.

use qapmap_proto::equity::v1 as proto;
use qapmap_proto::equity::v1::CancellationBehavior::ReturnToPool;
use qapmap_proto::equity::v1::equity_service_client::EquityServiceClient;
use qapmap_proto::messaging::v1::Initiator;
use qapmap_runtime::auth::client::AuthenticatedChannel;
use qapmap_testkit::auth::employee_token;
use qapmap_testkit::saga_bus::SagaBus;
use tonic::Code;
use uuid::Uuid;

use crate::helpers::TestApp;
use crate::saga_commands::{TRACEPARENT, effects, reserve_options, reserved_options};

async fn grant_to(app: &mut TestApp, plan_id: &str, stakeholder: Uuid) -> proto::Award {
    let mut request = app.grant_request(plan_id, "100000");
    request.stakeholder_id = stakeholder.to_string();
    app.client
        .grant_award(request)
        .await
        .expect("granted")
        .into_inner()
        .award
        .expect("award")
}

fn employee(app: &TestApp, stakeholder: Uuid) -> EquityServiceClient<AuthenticatedChannel> {
    EquityServiceClient::new(
        app.service
            .channel_with_token(&employee_token(app.company_id, stakeholder)),
    )
}

fn get(app: &TestApp, award_id: &str) -> proto::GetAwardRequest {
    proto::GetAwardRequest {
        company_id: app.company_id.to_string(),
        award_id: award_id.to_owned(),
        as_of: None,
    }
}

fn list(app: &TestApp, stakeholder: Option<Uuid>) -> proto::ListAwardsRequest {
    proto::ListAwardsRequest {
        company_id: app.company_id.to_string(),
        stakeholder_id: stakeholder.map(|id| id.to_string()).unwrap_or_default(),
        ..Default::default()
    }
}

fn ids(response: proto::ListAwardsResponse) -> Vec<String> {
    response.awards.into_iter().map(|award| award.id).collect()
}

#[tokio::test]
async fn an_employee_sees_only_their_own_awards() {
    let mut app = TestApp::spawn().await;
    let plan = app.create_plan("10000000", ReturnToPool).await;
    let (own, colleague) = (Uuid::now_v7(), Uuid::now_v7());
    let first = grant_to(&mut app, &plan.id, own).await;
    let theirs = grant_to(&mut app, &plan.id, colleague).await;
    let second = grant_to(&mut app, &plan.id, own).await;
    let mut client = employee(&app, own);

    let read = client
        .get_award(get(&app, &first.id))
        .await
        .expect("own award")
        .into_inner();
    assert_eq!(read.award.expect("award").id, first.id);
    assert!(read.position.is_some());

    let colleagues = client
        .get_award(get(&app, &theirs.id))
        .await
        .expect_err("a colleague's award");
    assert_eq!(colleagues.code(), Code::NotFound, "{colleagues:?}");
    let unknown = Uuid::now_v7().to_string();
    let missing = client
        .get_award(get(&app, &unknown))
        .await
        .expect_err("no such award");
    assert_eq!(
        (
            colleagues.code(),
            colleagues.message().replace(&theirs.id, "ID")
        ),
        (missing.code(), missing.message().replace(&unknown, "ID")),
        "a colleague's award reads exactly as one that does not exist"
    );

    let own_awards = vec![first.id.clone(), second.id.clone()];
    let unfiltered = client.list_awards(list(&app, None)).await.expect("list");
    assert_eq!(
        ids(unfiltered.into_inner()),
        own_awards,
        "forced to their own"
    );
    let filtered = client
        .list_awards(list(&app, Some(own)))
        .await
        .expect("list");
    assert_eq!(ids(filtered.into_inner()), own_awards);
    let by_plan = client
        .list_awards(proto::ListAwardsRequest {
            plan_id: plan.id.clone(),
            ..list(&app, None)
        })
        .await
        .expect("list");
    assert_eq!(ids(by_plan.into_inner()), own_awards);
    let someone_else = client
        .list_awards(list(&app, Some(colleague)))
        .await
        .expect("list");
    assert_eq!(
        someone_else.into_inner(),
        proto::ListAwardsResponse::default(),
        "a filter naming a colleague finds nothing"
    );

    // Staff calls are unchanged.
    let staff = app
        .client
        .list_awards(list(&app, Some(colleague)))
        .await
        .expect("list");
    assert_eq!(ids(staff.into_inner()), vec![theirs.id.clone()]);
    let staff_all = app
        .client
        .list_awards(list(&app, None))
        .await
        .expect("list");
    assert_eq!(ids(staff_all.into_inner()).len(), 3);
}

#[tokio::test]
async fn an_employee_cannot_write_and_nothing_is_written() {
    let mut app = TestApp::spawn().await;
    let plan = app.create_plan("10000000", ReturnToPool).await;
    let own = Uuid::now_v7();
    grant_to(&mut app, &plan.id, own).await;
    let before = (app.written().await, app.count("audit_log").await);

    let mut request = app.grant_request(&plan.id, "1000");
    request.stakeholder_id = own.to_string();
    let refused = employee(&app, own)
        .grant_award(request)
        .await
        .expect_err("employees do not grant");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let plan_read = employee(&app, own)
        .get_equity_plan(proto::GetEquityPlanRequest {
            company_id: app.company_id.to_string(),
            plan_id: plan.id.clone(),
        })
        .await
        .expect_err("not a self-service read");
    assert_eq!(plan_read.code(), Code::PermissionDenied, "{plan_read:?}");
    assert_eq!(
        (app.written().await, app.count("audit_log").await),
        before,
        "nothing written, nothing audited"
    );
}

/// The initiator of a saga an employee started for themselves.
fn employee_initiator(stakeholder: Uuid) -> Initiator {
    Initiator {
        subject: format!("employee-{stakeholder}"),
        request_id: "start-exercise".to_owned(),
        roles: vec!["employee".to_owned()],
        stakeholder_id: stakeholder.to_string(),
    }
}

#[tokio::test]
async fn an_employees_own_exercise_reserves_only_their_own_award() {
    let mut app = TestApp::spawn().await;
    let mut bus = SagaBus::connect(&app.service.namespace, "equity").await;
    let plan = app.create_plan("10000000", ReturnToPool).await;
    let (own, colleague) = (Uuid::now_v7(), Uuid::now_v7());
    let mine = grant_to(&mut app, &plan.id, own).await;
    let theirs = grant_to(&mut app, &plan.id, colleague).await;
    let before = (effects(&app).await, app.count("audit_log").await);

    let mut reaching = reserve_options(&app, Uuid::now_v7(), &theirs.id, "1000");
    reaching.initiator = Some(employee_initiator(own));
    let refused = bus
        .call("reserve_options", &reaching, Some(TRACEPARENT))
        .await;
    assert_eq!(refused.rejected_with(), "not_own_award");
    assert_eq!(
        (effects(&app).await, app.count("audit_log").await),
        before,
        "a refused step reserves and audits nothing"
    );

    let mut own_reserve = reserve_options(&app, Uuid::now_v7(), &mine.id, "1000");
    own_reserve.initiator = Some(employee_initiator(own));
    let reserved = bus
        .call("reserve_options", &own_reserve, Some(TRACEPARENT))
        .await;
    assert!(reserved.succeeded(), "{:?}", reserved.reply);
    assert_eq!(reserved_options(&reserved).stakeholder_id, own.to_string());

    // A saga staff started (no stakeholder on the initiator) is unchanged.
    let staff = bus
        .call(
            "reserve_options",
            &reserve_options(&app, Uuid::now_v7(), &theirs.id, "1000"),
            Some(TRACEPARENT),
        )
        .await;
    assert!(staff.succeeded(), "{:?}", staff.reply);

    // An initiator naming no valid stakeholder is refused, not run unconfined.
    let mut garbled = reserve_options(&app, Uuid::now_v7(), &mine.id, "1000");
    garbled.initiator = Some(Initiator {
        stakeholder_id: "not-a-uuid".to_owned(),
        ..employee_initiator(own)
    });
    let refused = bus
        .call("reserve_options", &garbled, Some(TRACEPARENT))
        .await;
    assert_eq!(refused.rejected_with(), "invalid_command");
}
