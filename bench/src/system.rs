//! gRPC channels to the four processes and the companies the sagas use.

pub(crate) use qapmap_testkit::fixtures::four_year_one_year_cliff;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use qapmap_proto::common::v1::{Date, Decimal, Money};
use qapmap_proto::equity::v1 as equity;
use qapmap_proto::equity::v1::equity_service_client::EquityServiceClient;
use qapmap_proto::ledger::v1 as ledger;
use qapmap_proto::ledger::v1::ledger_service_client::LedgerServiceClient;
use qapmap_proto::saga::v1::saga_service_client::SagaServiceClient;
use qapmap_proto::shareholder::v1 as shareholder;
use qapmap_proto::shareholder::v1::shareholder_service_client::ShareholderServiceClient;
use qapmap_runtime::auth::client::{AuthenticatedChannel, authenticated};
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::config::Config;

/// Channels (HTTP/2 connections) per process: load spreads over them.
const CHANNELS: usize = 4;

pub(crate) fn dec(text: &str) -> Option<Decimal> {
    Some(Decimal {
        value: text.to_owned(),
    })
}

pub(crate) fn usd(amount: &str) -> Option<Money> {
    Some(Money {
        amount: dec(amount),
        currency: "USD".to_owned(),
    })
}

pub(crate) fn date(year: i32, month: i32, day: i32) -> Option<Date> {
    Some(Date { year, month, day })
}

pub(crate) fn request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Channels to the four processes; every call on them carries the bench's
/// token.
#[derive(Debug, Clone)]
pub(crate) struct System {
    equity: Vec<AuthenticatedChannel>,
    shareholder: Vec<AuthenticatedChannel>,
    ledger: Vec<AuthenticatedChannel>,
    orchestrator: Vec<AuthenticatedChannel>,
}

async fn channels(endpoint: &str) -> anyhow::Result<Vec<Channel>> {
    let mut channels = Vec::with_capacity(CHANNELS);
    for _ in 0..CHANNELS {
        let channel = Endpoint::from_shared(endpoint.to_owned())?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .connect()
            .await
            .with_context(|| format!("connect to {endpoint}"))?;
        channels.push(channel);
    }
    Ok(channels)
}

/// Channels to the ledger made on the current runtime (the cap-table reads
/// run on a runtime of their own), carrying the bench's token.
pub(crate) async fn ledger_channels(config: &Config) -> anyhow::Result<Vec<AuthenticatedChannel>> {
    let token = crate::keys::platform_token(&config.key_dir)?;
    let channels = channels(&config.process("ledger").endpoint).await?;
    Ok(channels
        .into_iter()
        .map(|channel| authenticated(channel, &token))
        .collect())
}

/// Waits (at most a minute) until the process reports SERVING (health needs
/// no token), then wraps its channels so each call carries `token`.
async fn serving(
    name: &str,
    channels: Vec<Channel>,
    token: &str,
) -> anyhow::Result<Vec<AuthenticatedChannel>> {
    wait_serving(name, channels[0].clone()).await?;
    Ok(channels
        .into_iter()
        .map(|channel| authenticated(channel, token))
        .collect())
}

/// Waits (at most a minute) until the process reports SERVING.
async fn wait_serving(name: &str, channel: Channel) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut client = HealthClient::new(channel);
    while Instant::now() < deadline {
        let response = client
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await;
        if let Ok(response) = response
            && response.into_inner().status == ServingStatus::Serving as i32
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::bail!("{name} did not report SERVING within a minute")
}

impl System {
    pub(crate) async fn connect(config: &Config) -> anyhow::Result<Self> {
        let token = crate::keys::platform_token(&config.key_dir)?;
        let mut processes = Vec::new();
        for name in ["equity", "shareholder", "ledger", "orchestrator"] {
            let channels = channels(&config.process(name).endpoint).await?;
            processes.push(serving(name, channels, &token).await?);
        }
        let [equity, shareholder, ledger, orchestrator] =
            <[Vec<AuthenticatedChannel>; 4]>::try_from(processes).expect("four processes");
        Ok(Self {
            equity,
            shareholder,
            ledger,
            orchestrator,
        })
    }

    pub(crate) fn equity(&self, index: usize) -> EquityServiceClient<AuthenticatedChannel> {
        EquityServiceClient::new(self.equity[index % CHANNELS].clone())
    }

    pub(crate) fn shareholder(
        &self,
        index: usize,
    ) -> ShareholderServiceClient<AuthenticatedChannel> {
        ShareholderServiceClient::new(self.shareholder[index % CHANNELS].clone())
    }

    pub(crate) fn ledger(&self, index: usize) -> LedgerServiceClient<AuthenticatedChannel> {
        LedgerServiceClient::new(self.ledger[index % CHANNELS].clone())
    }

    pub(crate) fn sagas(&self, index: usize) -> SagaServiceClient<AuthenticatedChannel> {
        SagaServiceClient::new(self.orchestrator[index % CHANNELS].clone())
    }
}

/// A company with one vested grant.
#[derive(Debug, Clone)]
pub(crate) struct Company {
    pub(crate) company_id: String,
    pub(crate) award_id: String,
}

/// A class of 10,000,000 common shares known to equity and the ledger.
pub(crate) async fn share_class(
    system: &System,
    index: usize,
    company_id: &str,
    authorized: &str,
) -> anyhow::Result<String> {
    let class = system
        .equity(index)
        .create_share_class(equity::CreateShareClassRequest {
            request_id: request_id(),
            company_id: company_id.to_owned(),
            name: "Common".to_owned(),
            class_type: equity::ShareClassType::Common as i32,
            authorized_shares: dec(authorized),
            par_value: usd("0.0001"),
            seniority: 1,
            conversion_ratio: dec("1"),
            effective_date: date(2019, 1, 1),
        })
        .await
        .context("CreateShareClass")?
        .into_inner()
        .share_class
        .unwrap_or_default();
    system
        .ledger(index)
        .adjust_authorized_shares(ledger::AdjustAuthorizedSharesRequest {
            request_id: request_id(),
            company_id: company_id.to_owned(),
            share_class_id: class.id.clone(),
            new_authorized_shares: dec(authorized),
            effective_date: date(2019, 1, 1),
        })
        .await
        .context("AdjustAuthorizedShares")?;
    Ok(class.id)
}

/// Class, ledger authorized shares, plan, an employee and a grant of
/// 900,000 options vesting 4y/1y cliff from 2020-01-01: fully vested now.
async fn company(system: &System, index: usize) -> anyhow::Result<Company> {
    let company_id = uuid::Uuid::new_v4().to_string();
    let class_id = share_class(system, index, &company_id, "10000000").await?;
    let stakeholder = system
        .shareholder(index)
        .create_stakeholder(shareholder::CreateStakeholderRequest {
            request_id: request_id(),
            company_id: company_id.clone(),
            stakeholder_type: shareholder::StakeholderType::Individual as i32,
            name: format!("Bench Employee {index}"),
            email: String::new(),
            relationships: vec![shareholder::StakeholderRelationship::Employee as i32],
            employment_start_date: date(2019, 6, 1),
            payment_instruction_ref: "bank:bench-account".to_owned(),
        })
        .await
        .context("CreateStakeholder")?
        .into_inner()
        .stakeholder
        .unwrap_or_default();
    let plan = system
        .equity(index)
        .create_equity_plan(equity::CreateEquityPlanRequest {
            request_id: request_id(),
            company_id: company_id.clone(),
            name: "Bench Plan".to_owned(),
            share_class_id: class_id,
            initial_shares_reserved: dec("1000000"),
            cancellation_behavior: equity::CancellationBehavior::ReturnToPool as i32,
            board_approval_date: date(2019, 1, 1),
        })
        .await
        .context("CreateEquityPlan")?
        .into_inner()
        .plan
        .unwrap_or_default();
    let award = system
        .equity(index)
        .grant_award(equity::GrantAwardRequest {
            request_id: request_id(),
            company_id: company_id.clone(),
            plan_id: plan.id,
            stakeholder_id: stakeholder.id,
            award_type: equity::AwardType::Nso as i32,
            quantity: dec("900000"),
            exercise_price: usd("1.5"),
            grant_date: date(2020, 1, 1),
            expiration_date: date(2030, 1, 1),
            termination_windows: vec![],
            early_exercisable: false,
            vesting_terms: Some(four_year_one_year_cliff()),
            vesting_start_date: date(2020, 1, 1),
        })
        .await
        .context("GrantAward")?
        .into_inner()
        .award
        .unwrap_or_default();
    Ok(Company {
        company_id,
        award_id: award.id,
    })
}

/// `count` companies, set up 8 at a time.
pub(crate) async fn companies(system: &System, count: usize) -> anyhow::Result<Vec<Company>> {
    futures::stream::iter(0..count)
        .map(|index| company(system, index))
        .buffered(8)
        .try_collect()
        .await
}
