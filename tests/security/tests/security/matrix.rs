//! Every RPC of every process, walked from the API's descriptor set: no
//! token, an expired token, a forged signature, another company's admin and
//! a role that may not call it each get the right status, and nothing is
//! written. A positive control proves each request would have reached the
//! handler with the right token, so the refusals are the gate's doing.

use qapmap_runtime::ServiceName;
use qapmap_runtime::auth::policy::SELF_SERVICE;
use qapmap_testkit::auth;
use tonic::Code;
use uuid::Uuid;

use crate::raw::{self, Method};
use crate::services::{self, Process};

async fn expect(
    process: &Process,
    method: &Method,
    token: Option<&str>,
    company: Uuid,
    wanted: Code,
    case: &str,
) {
    let body = raw::body_for(method, &company.to_string());
    let outcome = raw::call(process.service.raw_channel(), token, &method.path, body).await;
    match outcome {
        Err(status) if status.code() == wanted => {}
        Err(status) => panic!(
            "{} ({case}): expected {wanted:?}, got {:?}: {}",
            method.path,
            status.code(),
            status.message()
        ),
        Ok(_) => panic!("{} ({case}): expected {wanted:?}, got OK", method.path),
    }
}

async fn refuses_every_caller_it_must(name: ServiceName) {
    let process = services::start(name).await;
    let company = Uuid::new_v4();
    let other_company = Uuid::new_v4();
    let stakeholder = Uuid::new_v4();
    let methods = raw::methods_of(process.serves);
    assert!(methods.len() >= 5, "{name}: only {} methods", methods.len());
    let before = services::row_counts(&process.service).await;

    let expired = auth::expired_token(company);
    let forged = auth::forged_token(company);
    let other_admin = auth::sign(&auth::claims(
        "admin-of-another-company",
        &[other_company],
        &["admin", "operator"],
    ));
    let company_admin = auth::admin_token(company);
    let scopeless_partner = auth::partner_token(company, &[]);
    let employee = auth::employee_token(company, stakeholder);
    let staff = auth::sign(&auth::claims("staff", &[company], &["admin", "operator"]));

    for method in &methods {
        expect(
            &process,
            method,
            None,
            company,
            Code::Unauthenticated,
            "no token",
        )
        .await;
        expect(
            &process,
            method,
            Some(&expired),
            company,
            Code::Unauthenticated,
            "expired",
        )
        .await;
        expect(
            &process,
            method,
            Some(&forged),
            company,
            Code::Unauthenticated,
            "forged",
        )
        .await;
        if method.company_field.is_some() {
            expect(
                &process,
                method,
                Some(&other_admin),
                company,
                Code::NotFound,
                "another company",
            )
            .await;
        } else {
            // Platform methods (dead letters) span companies: operators only.
            expect(
                &process,
                method,
                Some(&company_admin),
                company,
                Code::PermissionDenied,
                "an admin on a platform method",
            )
            .await;
        }
        expect(
            &process,
            method,
            Some(&scopeless_partner),
            company,
            Code::PermissionDenied,
            "a partner without scope",
        )
        .await;
        if !SELF_SERVICE.contains(&method.path.as_str()) {
            expect(
                &process,
                method,
                Some(&employee),
                company,
                Code::PermissionDenied,
                "an employee",
            )
            .await;
        }

        // The right caller gets past the gate to the handler.
        let body = raw::body_for(method, &company.to_string());
        if let Err(status) = raw::call(
            process.service.raw_channel(),
            Some(&staff),
            &method.path,
            body,
        )
        .await
        {
            let refused_by_gate = matches!(
                status.code(),
                Code::Unauthenticated | Code::PermissionDenied
            ) || (status.code() == Code::NotFound
                && status.message().starts_with("company "));
            assert!(
                !refused_by_gate,
                "{}: the allowed caller was refused: {:?} {}",
                method.path,
                status.code(),
                status.message()
            );
        }
    }

    let after = services::row_counts(&process.service).await;
    assert_eq!(before, after, "{name}: refused calls wrote something");
}

#[tokio::test]
async fn every_equity_rpc_refuses_callers_it_must() {
    refuses_every_caller_it_must(ServiceName::Equity).await;
}

#[tokio::test]
async fn every_shareholder_rpc_refuses_callers_it_must() {
    refuses_every_caller_it_must(ServiceName::Shareholder).await;
}

#[tokio::test]
async fn every_ledger_rpc_refuses_callers_it_must() {
    refuses_every_caller_it_must(ServiceName::Ledger).await;
}

#[tokio::test]
async fn every_orchestrator_rpc_refuses_callers_it_must() {
    refuses_every_caller_it_must(ServiceName::Orchestrator).await;
}

#[tokio::test]
async fn a_token_with_the_wrong_audience_or_an_unknown_role_is_unauthenticated() {
    let process = services::start(ServiceName::Ledger).await;
    let company = Uuid::new_v4();
    let method = raw::methods_of(process.serves)
        .into_iter()
        .find(|method| method.path.ends_with("/GetCapTable"))
        .expect("GetCapTable");
    let mut unknown_role = auth::claims("someone", &[company], &["superuser"]);
    let token = auth::sign(&unknown_role);
    expect(
        &process,
        &method,
        Some(&token),
        company,
        Code::Unauthenticated,
        "unknown role",
    )
    .await;
    unknown_role.roles = vec![];
    let token = auth::sign(&unknown_role);
    expect(
        &process,
        &method,
        Some(&token),
        company,
        Code::Unauthenticated,
        "no role",
    )
    .await;
    expect(
        &process,
        &method,
        Some("not.a.jwt"),
        company,
        Code::Unauthenticated,
        "garbage",
    )
    .await;
}

#[tokio::test]
async fn an_oversized_field_is_refused_by_name_before_any_handler_runs() {
    use qapmap_proto::ledger::v1 as ledger;
    use qapmap_proto::ledger::v1::ledger_service_client::LedgerServiceClient;
    use tonic_types::StatusExt;

    let process = services::start(ServiceName::Ledger).await;
    let company = Uuid::new_v4();
    let before = services::row_counts(&process.service).await;
    let mut client = LedgerServiceClient::new(
        process
            .service
            .channel_with_token(&auth::admin_token(company)),
    );
    let status = client
        .post_entry(ledger::PostEntryRequest {
            request_id: "oversized-memo".to_owned(),
            company_id: company.to_string(),
            memo: "m".repeat(qapmap_runtime::request_limits::MAX_STRING_BYTES + 1),
            ..Default::default()
        })
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let violations = status
        .get_details_bad_request()
        .expect("field details")
        .field_violations;
    assert_eq!(violations[0].field, "memo");

    // A body over the size limit is refused as a whole.
    let status = client
        .post_entry(ledger::PostEntryRequest {
            request_id: "huge".to_owned(),
            company_id: company.to_string(),
            lines: vec![ledger::EntryLine::default(); 200_000],
            ..Default::default()
        })
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(
        before,
        services::row_counts(&process.service).await,
        "nothing written"
    );
}
