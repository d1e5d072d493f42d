//! The saga orchestrator: runs option exercises and share buybacks across
//! the equity, ledger and shareholder services over NATS JetStream. See
//! OVERVIEW.md.
//!
//! - [`definition`]: typed saga definitions (compensatable steps, one pivot,
//!   retriable steps — an ill-formed saga does not compile).
//! - [`sagas`]: the exercise and buyback definitions.
//! - [`context`]: the input and step results a saga carries.
//! - [`machine`]: the pure state machine.
//! - [`store`]: saga and step rows.
//! - [`engine`]: transitions in transactions, with their commands in the outbox.
//! - [`replies`]: the consumer of service replies.
//! - [`grpc`], [`view`]: the `qapmap.saga.v1.SagaService` edge.

pub mod context;
pub mod definition;
pub mod engine;
pub mod grpc;
pub mod machine;
pub mod metrics;
pub mod replies;
pub mod sagas;
pub mod store;
pub mod view;

use std::sync::Arc;
use std::time::Duration;

use qapmap_proto::saga::v1::saga_service_server::SagaServiceServer;
use qapmap_runtime::Settings;
use qapmap_runtime::consumer::{ConsumerConfig, spawn_consumer};
use qapmap_runtime::dead_letter::DeadLetterAdmin;
use qapmap_runtime::messaging::StreamKind;
use qapmap_runtime::relay::spawn_relay_with;
use qapmap_runtime::server::{Application, Infrastructure, StopSignal};
use sqlx::migrate::Migrator;

use crate::definition::Timing;
use crate::engine::Engine;

/// The orchestrator's schema, embedded at compile time.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// How often the timer looks for sagas whose deadline or retry time has come.
const TIMER_INTERVAL: Duration = Duration::from_millis(100);

/// Step timing; `QAPMAP_SAGA_STEP_DEADLINE_MS` shortens deadlines for tests.
fn timing_from_env() -> anyhow::Result<Timing> {
    let mut timing = Timing::default();
    if let Ok(value) = std::env::var("QAPMAP_SAGA_STEP_DEADLINE_MS") {
        let milliseconds: u64 = value.parse().map_err(|_| {
            anyhow::anyhow!(
                "QAPMAP_SAGA_STEP_DEADLINE_MS={value:?} is not a number of milliseconds"
            )
        })?;
        timing.step_deadline = Duration::from_millis(milliseconds);
    }
    Ok(timing)
}

/// Connects, binds, and assembles the orchestrator; run it with
/// [`Application::run_until`].
pub async fn build(settings: Settings) -> anyhow::Result<Application> {
    build_with_timing(settings, timing_from_env()?).await
}

/// [`build`] with explicit step timing (tests use short deadlines).
pub async fn build_with_timing(settings: Settings, timing: Timing) -> anyhow::Result<Application> {
    let infrastructure = Infrastructure::connect(settings, &MIGRATOR).await?;
    let engine = Engine {
        pool: infrastructure.pool.clone(),
        subjects: infrastructure.subjects.clone(),
        timing,
        metrics: Arc::new(metrics::SagaMetrics::new(infrastructure.pool.clone())),
    };
    let replies = ConsumerConfig::new(
        replies::CONSUMER_NAME,
        StreamKind::Replies,
        format!("{}.reply.>", infrastructure.subjects.namespace()),
    )
    .with_backoff(vec![
        Duration::from_millis(200),
        Duration::from_secs(1),
        Duration::from_secs(5),
    ]);
    let dead_letters = DeadLetterAdmin::new(infrastructure.pool.clone()).into_service();
    let application = Application::bind(infrastructure)
        .await?
        .add_service(SagaServiceServer::new(grpc::SagaApi {
            engine: engine.clone(),
        }))
        .add_service(dead_letters)
        .add_metric_source(engine.metrics.clone());
    let metrics = application.messaging_metrics();
    let application = spawn_relay_with(application, metrics.clone());
    let reply_handler = replies::ReplyHandler {
        engine: engine.clone(),
    };
    let application = spawn_consumer(application, replies, reply_handler, metrics)
        .spawn_background("saga-timer", move |stop| run_timer(engine, stop));
    Ok(application)
}

/// Wakes due sagas until shutdown. A database error is logged and retried:
/// the timer must outlive a Postgres restart.
async fn run_timer(engine: Engine, mut stop: StopSignal) -> anyhow::Result<()> {
    while !stop.is_stopped() {
        match engine.wake_due().await {
            Ok(woken) if woken > 0 => continue,
            Ok(_) => {}
            Err(error) => tracing::warn!(error.message = %error, "saga timer pass failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(TIMER_INTERVAL) => {}
            _ = stop.stopped() => {}
        }
    }
    Ok(())
}
