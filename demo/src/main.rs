//! The demo `scripts/run.sh` runs once the four processes are up: it talks
//! to each over gRPC, as a partner's SDK would, and prints what happened.
//!
//! Endpoints come from `QAPMAP_DEMO_<SERVICE>_URL`, defaulting to the
//! services' default ports on localhost.

use std::time::Duration;

use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// A process the demo talks to.
#[derive(Debug)]
struct Endpoint {
    name: &'static str,
    grpc_service: &'static str,
    url: String,
}

fn endpoints() -> Vec<Endpoint> {
    let url = |variable: &str, port: u16| {
        std::env::var(variable).unwrap_or_else(|_| format!("http://127.0.0.1:{port}"))
    };
    vec![
        Endpoint {
            name: "equity",
            grpc_service: "qapmap.equity.v1.EquityService",
            url: url("QAPMAP_DEMO_EQUITY_URL", 50051),
        },
        Endpoint {
            name: "shareholder",
            grpc_service: "qapmap.shareholder.v1.ShareholderService",
            url: url("QAPMAP_DEMO_SHAREHOLDER_URL", 50052),
        },
        Endpoint {
            name: "ledger",
            grpc_service: "qapmap.ledger.v1.LedgerService",
            url: url("QAPMAP_DEMO_LEDGER_URL", 50053),
        },
        Endpoint {
            name: "orchestrator",
            grpc_service: "qapmap.saga.v1.SagaService",
            url: url("QAPMAP_DEMO_ORCHESTRATOR_URL", 50054),
        },
    ]
}

async fn health(channel: Channel, service: &str) -> anyhow::Result<ServingStatus> {
    let mut client = HealthClient::new(channel);
    let request = HealthCheckRequest {
        service: service.to_owned(),
    };
    let response = client.check(request).await?.into_inner();
    Ok(ServingStatus::try_from(response.status)?)
}

/// The overall status once it is SERVING, or whatever it is after 30 s.
async fn wait_for_serving(channel: Channel) -> anyhow::Result<ServingStatus> {
    let mut status = health(channel.clone(), "").await?;
    for _ in 0..150 {
        if status == ServingStatus::Serving {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        status = health(channel.clone(), "").await?;
    }
    Ok(status)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    println!("== QapMap demo ==");
    println!("-- 1. every process answers grpc.health.v1 --");
    let mut all_serving = true;
    for endpoint in endpoints() {
        let channel = Channel::from_shared(endpoint.url.clone())?
            .connect_timeout(Duration::from_secs(2))
            .connect()
            .await?;
        let overall = wait_for_serving(channel.clone()).await?;
        // A service not registered yet answers NOT_FOUND: report it honestly.
        let own = match health(channel, endpoint.grpc_service).await {
            Ok(status) => format!("{status:?}"),
            Err(_) => "not served by this build".to_owned(),
        };
        all_serving &= overall == ServingStatus::Serving;
        println!(
            "{:<13} {:<28} overall={:?}  {}={}",
            endpoint.name, endpoint.url, overall, endpoint.grpc_service, own
        );
    }
    if !all_serving {
        anyhow::bail!("a process is not SERVING");
    }
    println!("demo finished: every process is SERVING");
    Ok(())
}
