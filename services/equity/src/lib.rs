//! The equity service. See OVERVIEW.md for its mental model.
//!
//! Layout:
//! - [`vesting`]: the pure OCF vesting engine.
//! - [`domain`]: awards, positions and the contract's enums in plain Rust.
//! - [`convert`]: proto <-> domain at the gRPC edge.
//! - [`store`]: rows and queries.
//! - [`events`]: the event log and the outbox.
//! - [`commands`]: one module per aggregate; [`grpc`] serves them.
//! - [`saga_operations`]: reservations the orchestrator's sagas take;
//!   [`saga_tombstones`]: compensations that came before their step.
//! - [`saga_commands`]: the NATS consumer that runs them for the orchestrator.

pub mod commands;
pub mod convert;
pub mod domain;
pub mod events;
pub mod grpc;
pub mod saga_commands;
pub mod saga_operations;
pub mod saga_tombstones;
pub mod store;
pub mod vesting;

use qapmap_proto::equity::v1::equity_service_server::EquityServiceServer;
use qapmap_runtime::Settings;
use qapmap_runtime::consumer::spawn_consumer;
use qapmap_runtime::dead_letter::DeadLetterAdmin;
use qapmap_runtime::relay::spawn_relay_with;
use qapmap_runtime::server::{Application, Infrastructure};
use sqlx::migrate::Migrator;

use crate::commands::Equity;
use crate::grpc::EquityApi;

/// The service's schema, embedded at compile time.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Connects to the service's infrastructure and binds its gRPC port; the
/// caller runs it with [`Application::run_until`]. Besides the gRPC services
/// it runs the outbox relay (which publishes the events the ledger's cap
/// table consumes, and the saga replies) and the saga commands consumer.
pub async fn build(settings: Settings) -> anyhow::Result<Application> {
    let infrastructure = Infrastructure::connect(settings, &MIGRATOR).await?;
    let equity = Equity {
        pool: infrastructure.pool.clone(),
        subjects: infrastructure.subjects.clone(),
    };
    let commands = saga_commands::consumer_config(&infrastructure.subjects);
    let command_handler = saga_commands::CommandHandler::new(infrastructure.subjects.clone());
    let dead_letters = DeadLetterAdmin::new(infrastructure.pool.clone()).into_service();
    let application = Application::bind(infrastructure)
        .await?
        .add_service(EquityServiceServer::new(EquityApi::new(equity)))
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
