//! The ledger service. See OVERVIEW.md for its mental model.
//!
//! Layout:
//! - [`accounts`]: company × unit × owner, with current balances and holds.
//! - [`journal`]: the append-only double-entry journal; posting checks every invariant.
//! - [`holds`]: reserving shares for pending flows.
//! - [`commands`]: issue, transfer, cancel, retire, adjust authorized, reverse.
//! - [`saga_operations`]: the orchestrator's steps, idempotent by (saga id, step).
//! - [`equity_projection`]: options and pools from the equity service's events.
//! - [`projection_retention`]: how long the projection remembers applied events.
//! - [`cap_table`]: the cap table as of a date, kept in memory (dropped on
//!   change notifications) and in Redis.
//! - [`statement`]: a stakeholder's lines with running balances.
//! - [`saga_tombstones`]: saga steps compensated before they were applied.
//! - [`consumers`]: the saga-command and equity-event consumers on JetStream.
//! - `grpc`: the `LedgerService` edge.

pub mod accounts;
pub mod cap_table;
pub mod commands;
pub mod consumers;
pub mod convert;
pub mod equity_projection;
pub mod events;
mod grpc;
pub mod holds;
pub mod journal;
pub mod projection_retention;
pub mod saga_operations;
pub mod saga_tombstones;
pub mod statement;

use std::sync::Arc;

use qapmap_runtime::Settings;
use qapmap_runtime::consumer::spawn_consumer;
use qapmap_runtime::dead_letter::DeadLetterAdmin;
use qapmap_runtime::relay::spawn_relay_with;
use qapmap_runtime::server::{Application, Infrastructure};
use sqlx::migrate::Migrator;

pub use equity_projection::apply_equity_event;

/// The service's schema, embedded at compile time.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Connects to the service's infrastructure, binds its gRPC port, and starts
/// the outbox relay and the consumers; the caller runs it with
/// [`Application::run_until`].
pub async fn build(settings: Settings) -> anyhow::Result<Application> {
    let cache_prefix = format!("qapmap:{}", settings.nats_namespace);
    let cache = cap_table::cache::CapTableCache::new(&settings.redis_url, &cache_prefix);
    let infrastructure = Infrastructure::connect(settings, &MIGRATOR).await?;
    let subjects = infrastructure.subjects.clone();
    let tables = cap_table::current::CurrentTables::default();
    let other_dates = Arc::new(cap_table::metrics::OtherDateMetrics::default());
    let api = grpc::LedgerApi {
        pool: infrastructure.pool.clone(),
        subjects: subjects.clone(),
        cache,
        tables: tables.clone(),
        other_dates: other_dates.clone(),
    };
    let listener_pool = infrastructure.pool.clone();
    let retention_pool = infrastructure.pool.clone();
    let dead_letters = DeadLetterAdmin::new(infrastructure.pool.clone()).into_service();
    let application = Application::bind(infrastructure)
        .await?
        .add_service(grpc::LedgerRoutes::new(api))
        .add_service(dead_letters)
        .add_metric_source(other_dates);
    // One set of counters for the relay and both consumers, exported at /metrics.
    let metrics = application.messaging_metrics();
    let application = spawn_relay_with(application, metrics.clone());
    let application = application.spawn_background("cap-table-listener", move |stop| async move {
        tables.listen(&listener_pool, stop).await;
        Ok(())
    });
    let application = application.spawn_background("projection-retention", move |stop| {
        projection_retention::run(retention_pool, stop)
    });
    let application = spawn_consumer(
        application,
        consumers::saga_commands::config(&subjects),
        consumers::saga_commands::SagaCommandHandler {
            subjects: subjects.clone(),
        },
        metrics.clone(),
    );
    let application = spawn_consumer(
        application,
        consumers::equity_events::config(&subjects),
        consumers::equity_events::EquityEventHandler,
        metrics,
    );
    Ok(application)
}
