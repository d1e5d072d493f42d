//! The shareholder service. See OVERVIEW.md for its mental model.
//!
//! Layout:
//! - [`stakeholder`]: the stakeholder register (domain, rules, SQL).
//! - [`payment`]: payments through a gateway, at most once per key.
//! - [`saga_operations`]: the saga pivot steps (collect, disburse).
//! - [`saga_commands`]: the NATS consumer that runs them for the orchestrator.
//! - [`grpc`]: the `ShareholderService` edge; [`convert`]: proto <-> domain.
//! - [`events`]: domain events to the outbox.

pub mod convert;
pub mod events;
pub mod grpc;
pub mod payment;
pub mod saga_commands;
pub mod saga_operations;
pub mod stakeholder;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use qapmap_proto::shareholder::v1::shareholder_service_server::ShareholderServiceServer;
use qapmap_runtime::Settings;
use qapmap_runtime::consumer::spawn_consumer;
use qapmap_runtime::dead_letter::DeadLetterAdmin;
use qapmap_runtime::relay::spawn_relay_with;
use qapmap_runtime::server::{Application, Infrastructure};
use sqlx::migrate::Migrator;

use crate::payment::executor::DEFAULT_GATEWAY_TIMEOUT;
use crate::payment::{PaymentGateway, Payments, SandboxGateway, SandboxSettings};

/// The service's schema, embedded at compile time.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Connects to the service's infrastructure and binds its gRPC port, with
/// the sandbox gateway configured by `QAPMAP_SANDBOX_*`; the caller runs it
/// with [`Application::run_until`]. Besides the gRPC services it runs the
/// outbox relay and the saga commands consumer.
pub async fn build(settings: Settings) -> anyhow::Result<Application> {
    let sandbox = SandboxSettings::from_env().context("reading the sandbox gateway settings")?;
    build_with_gateway(settings, Arc::new(SandboxGateway::new(sandbox))).await
}

/// Like [`build`], with the given payment gateway (tests pass a sandbox they
/// keep a handle on, to count its calls).
pub async fn build_with_gateway(
    settings: Settings,
    gateway: Arc<dyn PaymentGateway>,
) -> anyhow::Result<Application> {
    build_with_gateway_timeout(settings, gateway, DEFAULT_GATEWAY_TIMEOUT).await
}

/// Like [`build_with_gateway`], declaring a payment's outcome unknown when
/// the gateway has not answered within `gateway_timeout` (at most the
/// default: the saga consumer's ack wait is sized for it). Tests use a
/// short one.
pub async fn build_with_gateway_timeout(
    settings: Settings,
    gateway: Arc<dyn PaymentGateway>,
    gateway_timeout: Duration,
) -> anyhow::Result<Application> {
    anyhow::ensure!(
        !gateway_timeout.is_zero() && gateway_timeout <= DEFAULT_GATEWAY_TIMEOUT,
        "the gateway timeout must be positive and at most {DEFAULT_GATEWAY_TIMEOUT:?}"
    );
    let infrastructure = Infrastructure::connect(settings, &MIGRATOR).await?;
    let payments = Payments::new(
        infrastructure.pool.clone(),
        gateway,
        infrastructure.subjects.clone(),
    )
    .with_gateway_timeout(gateway_timeout);
    let commands = saga_commands::consumer_config(&infrastructure.subjects);
    let command_handler =
        saga_commands::CommandHandler::new(payments.clone(), infrastructure.subjects.clone());
    let api = grpc::ShareholderApi::new(
        infrastructure.pool.clone(),
        infrastructure.subjects.clone(),
        payments,
    );
    let dead_letters = DeadLetterAdmin::new(infrastructure.pool.clone()).into_service();
    let application = Application::bind(infrastructure)
        .await?
        .add_service(ShareholderServiceServer::new(api))
        .add_service(dead_letters);
    // One set of counters for the relay and the consumer, exported at /metrics.
    let metrics = application.messaging_metrics();
    let application = spawn_relay_with(application, metrics.clone());
    Ok(spawn_consumer(
        application,
        commands,
        command_handler,
        metrics,
    ))
}
