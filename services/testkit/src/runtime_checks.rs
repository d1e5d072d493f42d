//! The runtime behaviour every QapMap binary must show, checked against the
//! real binary, real Postgres and real NATS. Each service crate calls these
//! from its own `tests/runtime.rs` (only a crate's own tests can find its
//! binary).

use std::collections::HashMap;
use std::time::Duration;

use tokio_stream::StreamExt;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

use crate::database::TestDatabase;
use crate::nats::TestNamespace;
use crate::private::PrivatePostgres;
use crate::process::ServiceProcess;

/// Environment for a binary against `database_url` and `namespace`.
pub fn service_env(database_url: &str, namespace: &TestNamespace) -> HashMap<String, String> {
    HashMap::from([
        ("QAPMAP_DATABASE_URL".to_owned(), database_url.to_owned()),
        ("QAPMAP_NATS_URL".to_owned(), namespace.url.clone()),
        ("QAPMAP_NATS_NAMESPACE".to_owned(), namespace.name.clone()),
        (
            "QAPMAP_HEALTH_PROBE_INTERVAL_MS".to_owned(),
            "200".to_owned(),
        ),
        ("QAPMAP_SHUTDOWN_GRACE_MS".to_owned(), "10000".to_owned()),
    ])
}

/// The overall (`""`) health status, or `None` if the call failed.
pub async fn overall_health(process: &ServiceProcess) -> Option<ServingStatus> {
    let mut client = HealthClient::new(process.channel());
    let request = HealthCheckRequest {
        service: String::new(),
    };
    let response = client.check(request).await.ok()?.into_inner();
    ServingStatus::try_from(response.status).ok()
}

/// Waits up to `timeout` for the overall health to become `wanted`.
pub async fn wait_for_health(
    process: &ServiceProcess,
    wanted: ServingStatus,
    timeout: Duration,
) -> bool {
    crate::eventually(timeout, || async {
        overall_health(process).await == Some(wanted)
    })
    .await
}

fn list_services_request() -> ServerReflectionRequest {
    ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    }
}

fn service_names(response: MessageResponse) -> Vec<String> {
    match response {
        MessageResponse::ListServicesResponse(list) => list
            .service
            .into_iter()
            .map(|service| service.name)
            .collect(),
        other => panic!("expected a service list, got {other:?}"),
    }
}

/// Starts `binary`, and checks: it reports SERVING; reflection lists exactly
/// health, reflection and `own_services`; on SIGTERM it keeps serving a call
/// already in flight (a reflection stream), answers on it, and exits 0 only
/// after that call completes.
pub async fn check_health_reflection_and_graceful_shutdown(binary: &str, own_services: &[&str]) {
    let database = TestDatabase::create("runtime").await;
    let namespace = TestNamespace::new();
    let mut env = service_env(&database.url, &namespace);
    let metrics_port = crate::free_port();
    env.insert("QAPMAP_METRICS_PORT".to_owned(), metrics_port.to_string());
    let mut process = ServiceProcess::spawn(binary, &env).await;

    assert!(
        wait_for_health(&process, ServingStatus::Serving, Duration::from_secs(20)).await,
        "{binary} never reported SERVING; output:\n{}",
        process.output_text()
    );
    check_metrics(metrics_port).await;

    // Open a reflection stream: this call stays in flight across SIGTERM.
    let (requests, receiver) = tokio::sync::mpsc::channel(4);
    let mut client = ServerReflectionClient::new(process.channel());
    requests.send(list_services_request()).await.expect("send");
    let mut responses = client
        .server_reflection_info(tokio_stream::wrappers::ReceiverStream::new(receiver))
        .await
        .expect("open reflection stream")
        .into_inner();
    let first = responses
        .next()
        .await
        .expect("a response")
        .expect("ok response");
    let mut listed = service_names(first.message_response.expect("message"));
    listed.sort();
    let mut expected: Vec<String> = own_services.iter().map(|s| (*s).to_owned()).collect();
    expected.push("grpc.health.v1.Health".to_owned());
    expected.push("qapmap.ops.v1.AuditService".to_owned());
    expected.push("grpc.reflection.v1.ServerReflection".to_owned());
    expected.sort();
    assert_eq!(
        listed, expected,
        "reflection must list exactly this process's services"
    );

    process.terminate();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        process.wait_for_exit(Duration::from_millis(10)).await,
        None,
        "the process must not exit while a call is in flight"
    );
    requests
        .send(list_services_request())
        .await
        .expect("send after SIGTERM");
    let second = responses
        .next()
        .await
        .expect("a response after SIGTERM")
        .expect("the in-flight call is still served after SIGTERM");
    assert!(second.message_response.is_some());
    drop(requests);
    assert!(responses.next().await.is_none(), "the stream ends cleanly");

    let code = process.wait_for_exit(Duration::from_secs(15)).await;
    assert_eq!(
        code,
        Some(0),
        "exit code after SIGTERM; output:\n{}",
        process.output_text()
    );
}

/// The scrape shows health SERVING and counts the health checks just made.
async fn check_metrics(port: u16) {
    let scrape = scrape_metrics(port).await;
    assert!(
        scrape
            .lines()
            .any(|line| line.starts_with("qapmap_grpc_health_serving{") && line.ends_with(" 1")),
        "health gauge missing or not 1:\n{scrape}"
    );
    assert!(
        scrape.contains("method=\"grpc.health.v1.Health/Check\",code=\"0\"}"),
        "health checks are counted:\n{scrape}"
    );
    assert!(
        scrape.contains("qapmap_outbox_backlog{"),
        "outbox backlog gauge:\n{scrape}"
    );
}

/// `GET /metrics` over a plain TCP connection.
pub async fn scrape_metrics(port: u16) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("metrics port open");
    socket
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .expect("send scrape");
    let mut response = String::new();
    socket
        .read_to_string(&mut response)
        .await
        .expect("read scrape");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

/// Starts `binary` on a private Postgres, stops that Postgres, and checks
/// health goes NOT_SERVING, then SERVING again once Postgres is back.
pub async fn check_not_serving_while_database_is_down(binary: &str) {
    let postgres = PrivatePostgres::start();
    let database = TestDatabase::create_on(&postgres.admin_url(), "health").await;
    let namespace = TestNamespace::new();
    let process = ServiceProcess::spawn(binary, &service_env(&database.url, &namespace)).await;
    let timeout = Duration::from_secs(20);

    assert!(
        wait_for_health(&process, ServingStatus::Serving, timeout).await,
        "SERVING at start"
    );
    postgres.stop();
    assert!(
        wait_for_health(&process, ServingStatus::NotServing, timeout).await,
        "NOT_SERVING while the database is down; output:\n{}",
        process.output_text()
    );
    postgres.resume();
    assert!(
        wait_for_health(&process, ServingStatus::Serving, timeout).await,
        "SERVING again once the database is back; output:\n{}",
        process.output_text()
    );
}
