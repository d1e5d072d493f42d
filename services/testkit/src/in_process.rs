//! A QapMap service started inside the test process, on a real loopback
//! port, with its own throwaway database and NATS namespace. Faster than a
//! spawned binary; use [`crate::process`] when a test must signal or kill it.

use std::time::Duration;

use qapmap_runtime::auth::client::{AuthenticatedChannel, authenticated};
use qapmap_runtime::server::Application;
use qapmap_runtime::{ServiceName, Settings};
use tokio::sync::oneshot;
use tonic::transport::Channel;

use crate::database::TestDatabase;
use crate::nats::TestNamespace;

/// Settings for `service` against `database_url` and `namespace`, on port 0.
pub fn settings(service: ServiceName, database_url: &str, namespace: &TestNamespace) -> Settings {
    let redis_url = std::env::var("QAPMAP_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let variables = [
        ("QAPMAP_DATABASE_URL", database_url.to_owned()),
        ("QAPMAP_GRPC_HOST", "127.0.0.1".to_owned()),
        ("QAPMAP_GRPC_PORT", "0".to_owned()),
        ("QAPMAP_NATS_URL", namespace.url.clone()),
        ("QAPMAP_NATS_NAMESPACE", namespace.name.clone()),
        ("QAPMAP_REDIS_URL", redis_url),
        ("QAPMAP_HEALTH_PROBE_INTERVAL_MS", "200".to_owned()),
        ("QAPMAP_SHUTDOWN_GRACE_MS", "2000".to_owned()),
        (
            "QAPMAP_JWT_JWKS_FILE",
            crate::auth::jwks_path().display().to_string(),
        ),
        // Tests call fast; the rate-limit test lowers these itself.
        ("QAPMAP_RATE_LIMIT_SUBJECT_PER_SECOND", "100000".to_owned()),
        ("QAPMAP_RATE_LIMIT_SUBJECT_BURST", "100000".to_owned()),
        ("QAPMAP_RATE_LIMIT_COMPANY_PER_SECOND", "100000".to_owned()),
        ("QAPMAP_RATE_LIMIT_COMPANY_BURST", "100000".to_owned()),
    ];
    Settings::from_lookup(service, |name| {
        variables
            .iter()
            .find(|(variable, _)| *variable == name)
            .map(|(_, value)| value.clone())
    })
    .expect("valid test settings")
}

/// A service running in this process; stopped (gracefully) on drop.
#[derive(Debug)]
pub struct RunningService {
    pub port: u16,
    /// The `/metrics` port, when the settings asked for one (`Some(0)`: any free port).
    pub metrics_port: Option<u16>,
    /// The service's own database (dropped with this value).
    pub database: TestDatabase,
    pub namespace: TestNamespace,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl RunningService {
    /// Creates a database and namespace, builds the service with `build`, and serves it.
    pub async fn start<F, Fut>(service: ServiceName, build: F) -> Self
    where
        F: FnOnce(Settings) -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<Application>>,
    {
        let database = TestDatabase::create(service.as_str()).await;
        let namespace = TestNamespace::new();
        Self::start_with(service, database, namespace, build).await
    }

    /// Serves the service against a database and namespace the test made.
    pub async fn start_with<F, Fut>(
        service: ServiceName,
        database: TestDatabase,
        namespace: TestNamespace,
        build: F,
    ) -> Self
    where
        F: FnOnce(Settings) -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<Application>>,
    {
        let application = build(settings(service, &database.url, &namespace))
            .await
            .expect("service starts");
        let port = application.port();
        let metrics_port = application.metrics_port();
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(application.run_until(async {
            let _ = stopped.await;
        }));
        Self {
            port,
            metrics_port,
            database,
            namespace,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// A channel to the service over loopback whose calls carry the
    /// platform token (every company, admin and operator).
    pub fn channel(&self) -> AuthenticatedChannel {
        crate::auth::platform_channel(self.raw_channel())
    }

    /// A channel without a token, for the tests that bring their own.
    pub fn raw_channel(&self) -> Channel {
        Channel::from_shared(format!("http://127.0.0.1:{}", self.port))
            .expect("valid uri")
            .connect_timeout(Duration::from_secs(5))
            .connect_lazy()
    }

    /// A channel whose calls carry `token`.
    pub fn channel_with_token(&self, token: &str) -> AuthenticatedChannel {
        authenticated(self.raw_channel(), token)
    }

    /// A pool on the service's database, to check what was (not) written.
    pub async fn database_pool(&self) -> sqlx::PgPool {
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect(&self.database.url)
            .await
            .expect("connect to the service database")
    }

    /// Stops the service and waits for it to finish.
    pub async fn stop(mut self) {
        self.shutdown().await;
    }

    /// Stops the service and hands back its database and namespace, so the
    /// test can start it again on the same data (a restart).
    pub async fn stop_keeping_data(mut self) -> (TestDatabase, TestNamespace) {
        self.shutdown().await;
        let database = std::mem::replace(&mut self.database, TestDatabase::placeholder());
        let namespace = self.namespace.share();
        (database, namespace)
    }

    async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }
}

impl Drop for RunningService {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
