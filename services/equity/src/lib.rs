//! The equity service. See OVERVIEW.md for its mental model.
//!
//! Layout:
//! - [`vesting`]: the pure OCF vesting engine.
//! - [`domain`]: awards, positions and the contract's enums in plain Rust.
//! - [`convert`]: proto <-> domain at the gRPC edge.
//! - [`store`]: rows and queries.
//! - [`events`]: the event log and the outbox.
//! - [`commands`]: one module per aggregate; [`grpc`] serves them.
//! - [`saga_operations`]: reservations the orchestrator's sagas take.

pub mod commands;
pub mod convert;
pub mod domain;
pub mod events;
pub mod grpc;
pub mod saga_operations;
pub mod store;
pub mod vesting;

use qapmap_proto::equity::v1::equity_service_server::EquityServiceServer;
use qapmap_runtime::Settings;
use qapmap_runtime::server::{Application, Infrastructure};
use sqlx::migrate::Migrator;

use crate::commands::Equity;
use crate::grpc::EquityApi;

/// The service's schema, embedded at compile time.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Connects to the service's infrastructure and binds its gRPC port; the
/// caller runs it with [`Application::run_until`].
pub async fn build(settings: Settings) -> anyhow::Result<Application> {
    let infrastructure = Infrastructure::connect(settings, &MIGRATOR).await?;
    let equity = Equity {
        pool: infrastructure.pool.clone(),
        subjects: infrastructure.subjects.clone(),
    };
    let application = Application::bind(infrastructure)
        .await?
        .add_service(EquityServiceServer::new(EquityApi::new(equity)));
    Ok(application)
}
