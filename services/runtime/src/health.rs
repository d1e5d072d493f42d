//! `grpc.health.v1` that tells the truth: a process reports SERVING only
//! while its own Postgres and NATS answer, so Kubernetes stops routing to a
//! replica that could only fail.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::watch;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::{database, messaging};

/// What the monitor probes, and the names it reports for.
#[derive(Debug, Clone)]
pub struct HealthMonitor {
    pub reporter: HealthReporter,
    pub pool: PgPool,
    pub nats: async_nats::Client,
    /// Fully qualified gRPC service names, e.g. `qapmap.equity.v1.EquityService`.
    /// The empty name (the whole server) is always reported too.
    pub services: Vec<&'static str>,
    pub interval: Duration,
    /// Mirrors the overall status for the metrics endpoint.
    pub serving: Arc<AtomicBool>,
}

impl HealthMonitor {
    /// Probes until `stop` turns true, then reports NOT_SERVING for good so
    /// load balancers drain this replica during shutdown.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let probe_timeout = self.interval.max(Duration::from_millis(500));
        let mut last: Option<ServingStatus> = None;
        loop {
            let status = self.probe(probe_timeout).await;
            if last != Some(status) {
                tracing::info!(status = ?status, "health changed");
                self.report(status).await;
                last = Some(status);
            }
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = stop.wait_for(|stopped| *stopped) => break,
            }
        }
        self.report(ServingStatus::NotServing).await;
    }

    async fn probe(&self, timeout: Duration) -> ServingStatus {
        let (database_up, nats_up) = tokio::join!(
            database::is_reachable(&self.pool, timeout),
            messaging::is_reachable(&self.nats, timeout),
        );
        if !database_up {
            tracing::warn!("health probe: database unreachable");
        }
        if !nats_up {
            tracing::warn!("health probe: NATS unreachable");
        }
        if database_up && nats_up {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        }
    }

    async fn report(&self, status: ServingStatus) {
        self.serving
            .store(status == ServingStatus::Serving, Ordering::Relaxed);
        self.reporter.set_service_status("", status).await;
        for service in &self.services {
            self.reporter.set_service_status(service, status).await;
        }
    }
}
