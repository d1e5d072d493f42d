//! The stakeholder register: create, get, list, update with a version,
//! termination, status and relationship changes.

use qapmap_proto::shareholder::v1 as proto;
use tonic::Code;
use uuid::Uuid;

use crate::helpers::{bad_field, date, reason, spawn_app};

#[tokio::test]
async fn a_created_stakeholder_is_active_at_version_1_and_a_repeat_writes_nothing() {
    // Goal: creation stores the stakeholder, its first event-log row and an
    // outbox event; the same request again returns the same answer.
    let app = spawn_app().await;
    let request = app.new_stakeholder("create-1");

    let created = app.create(request.clone()).await;
    let repeated = app.create(request.clone()).await;

    assert_eq!(created, repeated);
    assert_eq!(created.version, 1);
    assert_eq!(created.status, proto::StakeholderStatus::Active as i32);
    assert_eq!(created.name, "Ada Lovelace");
    assert_eq!(app.get(&created.id).await, created);
    assert_eq!(app.written().await, [1, 1, 0, 1, 1]);
    let subject: String = sqlx::query_scalar("SELECT subject FROM outbox")
        .fetch_one(&app.pool)
        .await
        .expect("outbox row");
    assert!(
        subject.ends_with(".evt.shareholder.stakeholder_created"),
        "{subject}"
    );

    let mut different = request;
    different.name = "Someone Else".to_owned();
    let status = app
        .client
        .clone()
        .create_stakeholder(different)
        .await
        .expect_err("reused id");
    assert_eq!(status.code(), Code::AlreadyExists);
    assert_eq!(app.written().await, [1, 1, 0, 1, 1]);
}

#[tokio::test]
async fn a_stale_expected_version_is_aborted_and_the_row_is_unchanged() {
    let app = spawn_app().await;
    let created = app.create(app.new_stakeholder("create")).await;
    let update = |request_id: &str, version: i64, name: &str| proto::UpdateStakeholderRequest {
        request_id: request_id.to_owned(),
        company_id: app.company_id.to_string(),
        stakeholder_id: created.id.clone(),
        expected_version: version,
        name: Some(name.to_owned()),
        email: None,
        payment_instruction_ref: Some(String::new()),
    };

    let updated = app
        .client
        .clone()
        .update_stakeholder(update("u1", 1, "Ada King"))
        .await
        .expect("fresh version accepted")
        .into_inner()
        .stakeholder
        .expect("stakeholder");
    let before = app.written().await;
    let stale = app
        .client
        .clone()
        .update_stakeholder(update("u2", 1, "Stale Name"))
        .await
        .expect_err("stale version");

    assert_eq!(updated.version, 2);
    assert_eq!(updated.name, "Ada King");
    assert_eq!(updated.email, "ada@example.com", "left out, so unchanged");
    assert_eq!(updated.payment_instruction_ref, "", "empty clears it");
    assert_eq!(stale.code(), Code::Aborted);
    assert_eq!(app.get(&created.id).await, updated);
    assert_eq!(app.written().await, before);
    assert_eq!(
        before,
        [1, 2, 0, 1, 2],
        "contact changes are logged, not published"
    );
}

#[tokio::test]
async fn a_termination_is_recorded_once_and_never_before_employment_start() {
    let app = spawn_app().await;
    let created = app.create(app.new_stakeholder("create")).await;
    let terminate = |request_id: &str, version: i64, day: proto::TerminationReason, on| {
        proto::RecordTerminationRequest {
            request_id: request_id.to_owned(),
            company_id: app.company_id.to_string(),
            stakeholder_id: created.id.clone(),
            termination_date: Some(on),
            termination_reason: day as i32,
            expected_version: version,
        }
    };
    let reason_code = proto::TerminationReason::VoluntaryOther;

    let too_early = app
        .client
        .clone()
        .record_termination(terminate("t0", 1, reason_code, date(2022, 12, 31)))
        .await
        .expect_err("before the start date");
    assert_eq!(reason(&too_early), "termination_before_employment_start");
    assert_eq!(app.written().await, [1, 1, 0, 1, 1]);

    let terminated = app
        .client
        .clone()
        .record_termination(terminate("t1", 1, reason_code, date(2024, 6, 30)))
        .await
        .expect("terminated")
        .into_inner()
        .stakeholder
        .expect("stakeholder");
    assert_eq!(terminated.version, 2);
    assert_eq!(
        terminated.status,
        proto::StakeholderStatus::TerminationVoluntaryOther as i32
    );
    assert_eq!(terminated.termination_date, Some(date(2024, 6, 30)));
    assert_eq!(terminated.termination_reason, reason_code as i32);
    let effective: chrono::NaiveDate =
        sqlx::query_scalar("SELECT effective_date FROM stakeholder_events WHERE version = 2")
            .fetch_one(&app.pool)
            .await
            .expect("event row");
    assert_eq!(effective.to_string(), "2024-06-30");
    assert_eq!(app.written().await, [1, 2, 0, 2, 2]);

    let again = app
        .client
        .clone()
        .record_termination(terminate("t2", 2, reason_code, date(2024, 7, 1)))
        .await
        .expect_err("already terminated");
    assert_eq!(reason(&again), "stakeholder_already_terminated");
    let reactivate = app
        .client
        .clone()
        .change_stakeholder_status(proto::ChangeStakeholderStatusRequest {
            request_id: "s1".to_owned(),
            company_id: app.company_id.to_string(),
            stakeholder_id: created.id.clone(),
            new_status: proto::StakeholderStatus::Active as i32,
            effective_date: None,
            expected_version: 2,
        })
        .await
        .expect_err("terminated stakeholders keep their status");
    assert_eq!(reason(&reactivate), "stakeholder_terminated");
    assert_eq!(app.written().await, [1, 2, 0, 2, 2]);
}

#[tokio::test]
async fn status_and_relationship_changes_bump_the_version_and_are_published() {
    let app = spawn_app().await;
    let created = app.create(app.new_stakeholder("create")).await;

    let on_leave = app
        .client
        .clone()
        .change_stakeholder_status(proto::ChangeStakeholderStatusRequest {
            request_id: "status".to_owned(),
            company_id: app.company_id.to_string(),
            stakeholder_id: created.id.clone(),
            new_status: proto::StakeholderStatus::LeaveOfAbsence as i32,
            effective_date: Some(date(2024, 2, 1)),
            expected_version: 1,
        })
        .await
        .expect("status changed")
        .into_inner()
        .stakeholder
        .expect("stakeholder");
    let relationships = vec![
        proto::StakeholderRelationship::Investor as i32,
        proto::StakeholderRelationship::ExEmployee as i32,
        proto::StakeholderRelationship::Investor as i32,
    ];
    let changed = app
        .client
        .clone()
        .change_stakeholder_relationship(proto::ChangeStakeholderRelationshipRequest {
            request_id: "relationships".to_owned(),
            company_id: app.company_id.to_string(),
            stakeholder_id: created.id.clone(),
            new_relationships: relationships,
            effective_date: None,
            expected_version: 2,
        })
        .await
        .expect("relationships changed")
        .into_inner()
        .stakeholder
        .expect("stakeholder");

    assert_eq!(
        on_leave.status,
        proto::StakeholderStatus::LeaveOfAbsence as i32
    );
    assert_eq!(on_leave.version, 2);
    assert_eq!(changed.version, 3);
    assert_eq!(
        changed.relationships,
        [
            proto::StakeholderRelationship::ExEmployee as i32,
            proto::StakeholderRelationship::Investor as i32
        ]
    );
    let event_types: Vec<String> =
        sqlx::query_scalar("SELECT event_type FROM stakeholder_events ORDER BY version")
            .fetch_all(&app.pool)
            .await
            .expect("event log");
    assert_eq!(
        event_types,
        [
            "stakeholder_created",
            "stakeholder_status_changed",
            "stakeholder_relationships_changed"
        ]
    );
    assert_eq!(app.count("outbox").await, 3);
}

#[tokio::test]
async fn lists_page_in_creation_order_and_filter_by_relationship_and_status() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for index in 0..5 {
        let mut request = app.new_stakeholder(&format!("create-{index}"));
        if index >= 3 {
            request.relationships = vec![proto::StakeholderRelationship::Investor as i32];
        }
        ids.push(app.create(request).await.id);
    }
    app.client
        .clone()
        .record_termination(proto::RecordTerminationRequest {
            request_id: "terminate".to_owned(),
            company_id: app.company_id.to_string(),
            stakeholder_id: ids[1].clone(),
            termination_date: Some(date(2024, 1, 31)),
            termination_reason: proto::TerminationReason::InvoluntaryOther as i32,
            expected_version: 1,
        })
        .await
        .expect("terminated");
    let list = |relationship: i32, status: i32, page_token: String, company: String| {
        let mut client = app.client.clone();
        async move {
            client
                .list_stakeholders(proto::ListStakeholdersRequest {
                    company_id: company,
                    relationship,
                    status,
                    page_size: 2,
                    page_token,
                })
                .await
                .expect("listed")
                .into_inner()
        }
    };
    let company = app.company_id.to_string();

    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = list(0, 0, token, company.clone()).await;
        pages += 1;
        seen.extend(page.stakeholders.into_iter().map(|s| s.id));
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    let investors = list(
        proto::StakeholderRelationship::Investor as i32,
        0,
        String::new(),
        company.clone(),
    )
    .await;
    let terminated_status = proto::StakeholderStatus::TerminationInvoluntaryOther as i32;
    let terminated = list(0, terminated_status, String::new(), company.clone()).await;
    let other_company = list(0, 0, String::new(), Uuid::now_v7().to_string()).await;

    assert_eq!(seen, ids);
    assert_eq!(pages, 3);
    let investor_ids: Vec<_> = investors
        .stakeholders
        .iter()
        .map(|s| s.id.clone())
        .collect();
    assert_eq!(investor_ids, ids[3..]);
    assert_eq!(terminated.stakeholders.len(), 1);
    assert_eq!(terminated.stakeholders[0].id, ids[1]);
    assert!(other_company.stakeholders.is_empty());
}

#[tokio::test]
async fn another_companys_stakeholder_is_not_found() {
    let app = spawn_app().await;
    let created = app.create(app.new_stakeholder("create")).await;
    let foreign_company = Uuid::now_v7().to_string();

    let get = app
        .client
        .clone()
        .get_stakeholder(proto::GetStakeholderRequest {
            company_id: foreign_company.clone(),
            stakeholder_id: created.id.clone(),
        })
        .await
        .expect_err("not visible");
    let update = app
        .client
        .clone()
        .update_stakeholder(proto::UpdateStakeholderRequest {
            request_id: "u".to_owned(),
            company_id: foreign_company,
            stakeholder_id: created.id.clone(),
            expected_version: 1,
            name: Some("Mallory".to_owned()),
            email: None,
            payment_instruction_ref: None,
        })
        .await
        .expect_err("not visible");

    assert_eq!(get.code(), Code::NotFound);
    assert_eq!(update.code(), Code::NotFound);
    assert_eq!(app.get(&created.id).await, created);
    assert_eq!(app.written().await, [1, 1, 0, 1, 1]);
}

#[tokio::test]
async fn every_bad_input_names_its_field_and_writes_nothing() {
    let app = spawn_app().await;
    type Edit = fn(&mut proto::CreateStakeholderRequest);
    let cases: [(&str, Edit); 10] = [
        ("request_id", |r| r.request_id.clear()),
        ("company_id", |r| r.company_id = "not-a-uuid".to_owned()),
        ("stakeholder_type", |r| r.stakeholder_type = 0),
        ("stakeholder_type", |r| r.stakeholder_type = 99),
        ("name", |r| r.name = "   ".to_owned()),
        ("email", |r| r.email = "ada-at-example.com".to_owned()),
        ("relationships[1]", |r| r.relationships.push(0)),
        ("employment_start_date", |r| {
            r.employment_start_date = Some(date(2023, 2, 30))
        }),
        ("payment_instruction_ref", |r| {
            r.payment_instruction_ref = "has space".to_owned()
        }),
        ("relationships[0]", |r| r.relationships = vec![77]),
    ];
    for (field, edit) in cases {
        let mut request = app.new_stakeholder("bad");
        edit(&mut request);
        let status = app
            .client
            .clone()
            .create_stakeholder(request)
            .await
            .expect_err(field);
        assert_eq!(bad_field(&status), field);
    }
    assert_eq!(app.written().await, [0, 0, 0, 0, 0]);

    let created = app.create(app.new_stakeholder("create")).await;
    let base = proto::ChangeStakeholderStatusRequest {
        request_id: "status".to_owned(),
        company_id: app.company_id.to_string(),
        stakeholder_id: created.id.clone(),
        new_status: proto::StakeholderStatus::TerminationVoluntaryOther as i32,
        effective_date: None,
        expected_version: 1,
    };
    let status = app
        .client
        .clone()
        .change_stakeholder_status(base.clone())
        .await
        .expect_err("termination status");
    assert_eq!(bad_field(&status), "new_status");
    let no_version = proto::ChangeStakeholderStatusRequest {
        new_status: proto::StakeholderStatus::Active as i32,
        expected_version: 0,
        ..base
    };
    let status = app
        .client
        .clone()
        .change_stakeholder_status(no_version)
        .await
        .expect_err("no version");
    assert_eq!(bad_field(&status), "expected_version");
    let no_relationships = proto::ChangeStakeholderRelationshipRequest {
        request_id: "rel".to_owned(),
        company_id: app.company_id.to_string(),
        stakeholder_id: created.id.clone(),
        new_relationships: vec![],
        effective_date: None,
        expected_version: 1,
    };
    let status = app
        .client
        .clone()
        .change_stakeholder_relationship(no_relationships)
        .await
        .expect_err("empty set");
    assert_eq!(bad_field(&status), "new_relationships");
    let no_reason = proto::RecordTerminationRequest {
        request_id: "term".to_owned(),
        company_id: app.company_id.to_string(),
        stakeholder_id: created.id.clone(),
        termination_date: Some(date(2024, 1, 1)),
        termination_reason: 0,
        expected_version: 1,
    };
    let status = app
        .client
        .clone()
        .record_termination(no_reason)
        .await
        .expect_err("no reason");
    assert_eq!(bad_field(&status), "termination_reason");
    let bad_token = proto::ListStakeholdersRequest {
        company_id: app.company_id.to_string(),
        page_token: "forged".to_owned(),
        ..Default::default()
    };
    let status = app
        .client
        .clone()
        .list_stakeholders(bad_token)
        .await
        .expect_err("forged token");
    assert_eq!(bad_field(&status), "page_token");
    assert_eq!(app.written().await, [1, 1, 0, 1, 1]);
}
