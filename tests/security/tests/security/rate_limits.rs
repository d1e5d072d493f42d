//! Rate limits per subject and per company, kept in Redis: they trip with
//! RESOURCE_EXHAUSTED and a retry delay, recover after it, and step aside
//! (requests pass) while Redis is down.

use std::time::Duration;

use qapmap_proto::equity::v1 as equity;
use qapmap_proto::equity::v1::equity_service_client::EquityServiceClient;
use qapmap_runtime::ServiceName;
use qapmap_runtime::settings::RateLimitSettings;
use qapmap_testkit::auth;
use qapmap_testkit::in_process::RunningService;
use qapmap_testkit::private::PrivateRedis;
use tonic::Code;
use tonic_types::StatusExt;
use uuid::Uuid;

async fn start_equity(limits: RateLimitSettings, redis_url: Option<String>) -> RunningService {
    RunningService::start(ServiceName::Equity, move |mut settings| {
        settings.auth.rate_limits = limits;
        if let Some(url) = redis_url {
            settings.redis_url = url;
        }
        qapmap_equity::build(settings)
    })
    .await
}

async fn list_share_classes(
    service: &RunningService,
    token: &str,
    company: Uuid,
) -> Result<(), tonic::Status> {
    EquityServiceClient::new(service.channel_with_token(token))
        .list_share_classes(equity::ListShareClassesRequest {
            company_id: company.to_string(),
            ..Default::default()
        })
        .await
        .map(|_| ())
}

#[tokio::test]
async fn a_subject_over_its_limit_is_told_when_to_retry_and_then_recovers() {
    let limits = RateLimitSettings {
        subject_per_second: 2,
        subject_burst: 3,
        company_per_second: 0,
        company_burst: 0,
    };
    let service = start_equity(limits, None).await;
    let company = Uuid::new_v4();
    let token = auth::admin_token(company);

    let mut allowed = 0;
    let mut limited = None;
    for _ in 0..10 {
        match list_share_classes(&service, &token, company).await {
            Ok(()) => allowed += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                limited = Some(status);
                break;
            }
        }
    }
    let limited = limited.expect("the limit trips within 10 quick calls");
    assert!((3..=4).contains(&allowed), "a burst of 3 allowed {allowed}");
    let retry = limited
        .get_details_retry_info()
        .and_then(|info| info.retry_delay)
        .expect("RetryInfo with a delay");
    assert!(
        retry > Duration::ZERO && retry <= Duration::from_secs(1),
        "{retry:?}"
    );

    // Another subject is not affected by this one's bucket.
    let colleague = auth::sign(&auth::claims("another-admin", &[company], &["admin"]));
    list_share_classes(&service, &colleague, company)
        .await
        .expect("another subject passes");

    tokio::time::sleep(retry + Duration::from_millis(50)).await;
    list_share_classes(&service, &token, company)
        .await
        .expect("the subject recovers after the retry delay");
}

#[tokio::test]
async fn a_company_limit_holds_across_subjects() {
    let limits = RateLimitSettings {
        subject_per_second: 0,
        subject_burst: 0,
        company_per_second: 1,
        company_burst: 4,
    };
    let service = start_equity(limits, None).await;
    let company = Uuid::new_v4();
    let mut outcomes = Vec::new();
    for index in 0..8 {
        let token = auth::sign(&auth::claims(
            &format!("admin-{index}"),
            &[company],
            &["admin"],
        ));
        outcomes.push(
            list_share_classes(&service, &token, company)
                .await
                .map_err(|s| s.code()),
        );
    }
    let limited = outcomes
        .iter()
        .filter(|outcome| **outcome == Err(Code::ResourceExhausted))
        .count();
    assert!(
        limited >= 3,
        "eight subjects of one company share its bucket: {outcomes:?}"
    );

    // Another company has its own bucket.
    let elsewhere = Uuid::new_v4();
    list_share_classes(&service, &auth::admin_token(elsewhere), elsewhere)
        .await
        .expect("another company passes");
}

#[tokio::test]
async fn requests_pass_while_redis_is_down() {
    let mut redis = PrivateRedis::start();
    let limits = RateLimitSettings {
        subject_per_second: 1,
        subject_burst: 1,
        company_per_second: 1,
        company_burst: 1,
    };
    let service = start_equity(limits, Some(redis.url())).await;
    let company = Uuid::new_v4();
    let token = auth::admin_token(company);
    list_share_classes(&service, &token, company)
        .await
        .expect("first call");
    let second = list_share_classes(&service, &token, company).await;
    assert_eq!(
        second.map_err(|status| status.code()),
        Err(Code::ResourceExhausted),
        "the limit works while Redis is up"
    );

    redis.stop();
    for _ in 0..5 {
        list_share_classes(&service, &token, company)
            .await
            .expect("calls pass while Redis is down");
    }
}
