//! The demo `scripts/run.sh` runs once the four processes are up. It talks to
//! them over gRPC, as a partner's SDK would, and prints what happened:
//! 1. every process answers health;
//! 2. a company with a common class, a plan and an employee whose grant
//!    vests over 4 years with a 1-year cliff;
//! 3. the grant's vesting as of a date past the cliff;
//! 4. an option exercise and a share buyback, each a saga across services;
//! 5. the cap table before and after, and both sagas' step histories.
//!
//! Endpoints come from `QAPMAP_DEMO_<SERVICE>_URL`, defaulting to the
//! services' default ports on localhost.

mod flow;
mod print;

use std::time::Duration;

use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// The channels to the four processes.
#[derive(Debug, Clone)]
pub(crate) struct Endpoints {
    pub(crate) equity: Channel,
    pub(crate) shareholder: Channel,
    pub(crate) ledger: Channel,
    pub(crate) orchestrator: Channel,
}

async fn connect(variable: &str, port: u16) -> anyhow::Result<Channel> {
    let url = std::env::var(variable).unwrap_or_else(|_| format!("http://127.0.0.1:{port}"));
    let channel = Channel::from_shared(url)?
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await?;
    Ok(channel)
}

/// The overall status once it is SERVING, or whatever it is after 30 s.
async fn wait_for_serving(channel: Channel) -> anyhow::Result<ServingStatus> {
    let mut client = HealthClient::new(channel);
    for _ in 0..150 {
        let request = HealthCheckRequest {
            service: String::new(),
        };
        let status = ServingStatus::try_from(client.check(request).await?.into_inner().status)?;
        if status == ServingStatus::Serving {
            return Ok(status);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(ServingStatus::NotServing)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    println!("== QapMap demo ==");
    let endpoints = Endpoints {
        equity: connect("QAPMAP_DEMO_EQUITY_URL", 50051).await?,
        shareholder: connect("QAPMAP_DEMO_SHAREHOLDER_URL", 50052).await?,
        ledger: connect("QAPMAP_DEMO_LEDGER_URL", 50053).await?,
        orchestrator: connect("QAPMAP_DEMO_ORCHESTRATOR_URL", 50054).await?,
    };
    println!("\n-- 1. health --");
    for (name, channel) in [
        ("equity", &endpoints.equity),
        ("shareholder", &endpoints.shareholder),
        ("ledger", &endpoints.ledger),
        ("orchestrator", &endpoints.orchestrator),
    ] {
        let status = wait_for_serving(channel.clone()).await?;
        println!("{name:<13} {status:?}");
        anyhow::ensure!(status == ServingStatus::Serving, "{name} is not SERVING");
    }
    flow::run(&endpoints).await?;
    println!("\ndemo finished");
    Ok(())
}
