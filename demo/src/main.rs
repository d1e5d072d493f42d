//! The demo `scripts/run.sh` runs once the four processes are up. It talks to
//! them over gRPC, as a partner's SDK would, with a bearer token it signs
//! itself, and prints what happened:
//! 1. every process answers health (open to anyone);
//! 2. a company with a common class, a plan and an employee whose grant
//!    vests over 4 years with a 1-year cliff, set up by an admin of that
//!    company;
//! 3. the grant's vesting as of a date past the cliff;
//! 4. who may call what: no token, another company, an employee's own award
//!    and the cap table they may not see;
//! 5. an option exercise and a share buyback, each a saga across services;
//! 6. the cap table before and after, and both sagas' step histories.
//!
//! Subcommands:
//! - `qapmap-demo` (or `run`): the demo. Its signing key comes from
//!   `QAPMAP_DEMO_KEY_DIR`; endpoints from `QAPMAP_DEMO_<SERVICE>_URL`,
//!   defaulting to the services' default ports on localhost.
//! - `qapmap-demo keys KEY_DIR [JWKS_DIR]`: makes the demo's Ed25519 key
//!   (kept if already there) and writes the JWKS the services verify with;
//!   run before the services start (see `keys`).
//! - `qapmap-demo token`: prints a platform token (admin and operator of
//!   every company, valid an hour) signed with that key, for grpcurl.

mod flow;
mod keys;
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

const USAGE: &str = "usage: qapmap-demo [run] | keys KEY_DIR [JWKS_DIR] | token";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] | ["run"] => demo().await,
        ["keys", key_dir] => keys::write(key_dir.as_ref(), None),
        ["keys", key_dir, jwks_dir] => keys::write(key_dir.as_ref(), Some(jwks_dir.as_ref())),
        ["token"] => {
            // Platform staff: every company, for exploring with grpcurl.
            let claims = keys::claims(
                "qapmap-demo-cli",
                vec!["*".to_owned()],
                &["admin", "operator"],
            );
            println!("{}", keys::sign(&keys::load()?, claims));
            Ok(())
        }
        _ => anyhow::bail!(USAGE),
    }
}

async fn demo() -> anyhow::Result<()> {
    let signer = keys::load()?;
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
    flow::run(&endpoints, &signer).await?;
    println!("\ndemo finished");
    Ok(())
}
