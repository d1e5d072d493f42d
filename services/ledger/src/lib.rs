//! The ledger service. See OVERVIEW.md for its mental model.
//!
//! Layout:
//! - [`accounts`]: company × unit × owner, with current balances and holds.
//! - [`journal`]: the append-only double-entry journal; posting checks every invariant.
//! - [`holds`]: reserving shares for pending flows.
//! - [`commands`]: issue, transfer, cancel, retire, adjust authorized, reverse.
//! - [`saga_operations`]: the orchestrator's steps, idempotent by (saga id, step).
//! - [`equity_projection`]: options and pools from the equity service's events.
//! - [`cap_table`]: the cap table as of a date, and its Redis cache.
//! - [`statement`]: a stakeholder's lines with running balances.
//! - `grpc`: the `LedgerService` edge.

pub mod accounts;
pub mod cap_table;
pub mod commands;
pub mod convert;
pub mod equity_projection;
pub mod events;
mod grpc;
pub mod holds;
pub mod journal;
pub mod saga_operations;
pub mod statement;

use qapmap_proto::ledger::v1::ledger_service_server::LedgerServiceServer;
use qapmap_runtime::Settings;
use qapmap_runtime::server::{Application, Infrastructure};
use sqlx::migrate::Migrator;

pub use equity_projection::apply_equity_event;

/// The service's schema, embedded at compile time.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Connects to the service's infrastructure and binds its gRPC port; the
/// caller runs it with [`Application::run_until`].
pub async fn build(settings: Settings) -> anyhow::Result<Application> {
    let cache_prefix = format!("qapmap:{}", settings.nats_namespace);
    let cache = cap_table::cache::CapTableCache::new(&settings.redis_url, &cache_prefix);
    let infrastructure = Infrastructure::connect(settings, &MIGRATOR).await?;
    let api = grpc::LedgerApi {
        pool: infrastructure.pool.clone(),
        subjects: infrastructure.subjects.clone(),
        cache,
    };
    let application = Application::bind(infrastructure)
        .await?
        .add_service(LedgerServiceServer::new(api));
    Ok(application)
}
