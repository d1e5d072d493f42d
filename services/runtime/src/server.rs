//! Starting a QapMap process: connect to its infrastructure, bind the gRPC
//! port, serve its services with health and reflection, run its background
//! tasks, and stop gracefully.
//!
//! `main` and the tests start a process the same way:
//! `Infrastructure::connect` → `Application::bind` → `add_service` →
//! `run_until(shutdown)`. Binding happens before serving, so a test that asks
//! for port 0 learns the real port from [`Application::port`].

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Context;
use async_nats::jetstream;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::server::NamedService;
use tonic::service::Routes;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

use crate::auth::layer::{AuthLayer, AuthState};
use crate::auth::rate_limit::RateLimiter;
use crate::auth::verifier::TokenVerifier;
use crate::health::HealthMonitor;
use crate::messaging::{self, Subjects};
use crate::metrics::MessagingMetrics;
use crate::metrics_export::{self, CoreMetrics, GrpcMetrics, GrpcMetricsLayer, MetricSource};
use crate::settings::Settings;

/// The connections a process holds for its whole life.
#[derive(Debug, Clone)]
pub struct Infrastructure {
    pub settings: Settings,
    pub pool: PgPool,
    pub nats: async_nats::Client,
    pub jetstream: jetstream::Context,
    pub subjects: Subjects,
}

impl Infrastructure {
    /// Connects to Postgres (running `migrator`) and NATS, and makes sure the
    /// JetStream streams exist.
    pub async fn connect(settings: Settings, migrator: &Migrator) -> anyhow::Result<Self> {
        let pool = crate::database::connect_and_migrate(&settings, migrator).await?;
        let nats = messaging::connect(&settings).await?;
        let jetstream = jetstream::new(nats.clone());
        let subjects = Subjects::new(settings.nats_namespace.clone());
        messaging::ensure_streams_replicated(&jetstream, &subjects, settings.nats_stream_replicas)
            .await
            .context("setting up JetStream streams")?;
        Ok(Self {
            settings,
            pool,
            nats,
            jetstream,
            subjects,
        })
    }
}

/// Tells background tasks to stop: wait on [`StopSignal::stopped`].
#[derive(Debug, Clone)]
pub struct StopSignal(watch::Receiver<bool>);

impl StopSignal {
    /// A signal not tied to an [`Application`], for running a background
    /// task on its own (tests, tools): send `true` to stop it.
    pub fn pair() -> (watch::Sender<bool>, Self) {
        let (sender, receiver) = watch::channel(false);
        (sender, Self(receiver))
    }

    /// Completes once the process is shutting down.
    pub async fn stopped(&mut self) {
        let _ = self.0.wait_for(|stopped| *stopped).await;
    }

    pub fn is_stopped(&self) -> bool {
        *self.0.borrow()
    }
}

type BackgroundTask = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

/// A bound, not yet serving, gRPC process.
pub struct Application {
    infrastructure: Infrastructure,
    listener: TcpListener,
    address: SocketAddr,
    routes: Routes,
    service_names: Vec<&'static str>,
    background: Vec<(&'static str, BackgroundTask)>,
    stop_sender: watch::Sender<bool>,
    messaging_metrics: Arc<MessagingMetrics>,
    grpc_metrics: Arc<GrpcMetrics>,
    serving: Arc<AtomicBool>,
    metric_sources: Vec<Arc<dyn MetricSource>>,
    metrics_listener: Option<TcpListener>,
    auth: Arc<AuthState>,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("service", &self.infrastructure.settings.service)
            .field("address", &self.address)
            .field("service_names", &self.service_names)
            .finish_non_exhaustive()
    }
}

impl Application {
    /// Binds the configured gRPC address (port 0 picks a free one).
    pub async fn bind(infrastructure: Infrastructure) -> anyhow::Result<Self> {
        let settings = &infrastructure.settings;
        let requested = SocketAddr::new(settings.grpc_host, settings.grpc_port);
        let listener = TcpListener::bind(requested)
            .await
            .with_context(|| format!("binding gRPC address {requested}"))?;
        let address = listener.local_addr()?;
        let metrics_listener = match settings.metrics_port {
            Some(port) => {
                let metrics_address = SocketAddr::new(settings.grpc_host, port);
                let listener = TcpListener::bind(metrics_address)
                    .await
                    .with_context(|| format!("binding the metrics address {metrics_address}"))?;
                Some(listener)
            }
            None => None,
        };
        let verifier =
            TokenVerifier::from_settings(&settings.auth).context("loading the token keys")?;
        let limiter = RateLimiter::new(
            &settings.redis_url,
            &settings.nats_namespace,
            &settings.auth.rate_limits,
        );
        let auth = Arc::new(AuthState::new(
            verifier,
            limiter,
            settings.max_request_bytes,
        ));
        let (stop_sender, _) = watch::channel(false);
        Ok(Self {
            infrastructure,
            listener,
            address,
            routes: Routes::default(),
            service_names: Vec::new(),
            background: Vec::new(),
            stop_sender,
            messaging_metrics: Arc::new(MessagingMetrics::new()),
            grpc_metrics: Arc::new(GrpcMetrics::default()),
            serving: Arc::new(AtomicBool::new(false)),
            metric_sources: Vec::new(),
            metrics_listener,
            auth,
        })
    }

    /// The messaging counters of this process, for its relay and consumers.
    pub fn messaging_metrics(&self) -> Arc<MessagingMetrics> {
        self.messaging_metrics.clone()
    }

    /// The metrics endpoint's port, when `QAPMAP_METRICS_PORT` switched it on.
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics_listener
            .as_ref()
            .and_then(|listener| listener.local_addr().ok())
            .map(|address| address.port())
    }

    /// Adds a process-specific source to the metrics endpoint.
    pub fn add_metric_source(mut self, source: Arc<dyn MetricSource>) -> Self {
        self.metric_sources.push(source);
        self
    }

    pub fn port(&self) -> u16 {
        self.address.port()
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn infrastructure(&self) -> &Infrastructure {
        &self.infrastructure
    }

    /// Serves a tonic service; health reports it by its gRPC name.
    pub fn add_service<S>(mut self, service: S) -> Self
    where
        S: tower_service_bound::GrpcService,
    {
        self.service_names.push(S::NAME);
        self.routes = self.routes.add_service(service);
        self
    }

    /// Runs `task` beside the server until shutdown. A task that returns an
    /// error stops the whole process, so a dead relay is never silent.
    pub fn spawn_background<F, Fut>(mut self, name: &'static str, task: F) -> Self
    where
        F: FnOnce(StopSignal) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let stop = StopSignal(self.stop_sender.subscribe());
        self.background.push((name, Box::pin(task(stop))));
        self
    }

    /// Serves until `shutdown` completes, then stops accepting, lets in-flight
    /// calls finish within the grace period, and returns.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let settings = self.infrastructure.settings.clone();
        let (reporter, health_service) = tonic_health::server::health_reporter();
        // tonic starts the whole server as SERVING; nothing is known until
        // the first probe, so say NOT_SERVING until then.
        reporter
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        let monitor = HealthMonitor {
            reporter,
            pool: self.infrastructure.pool.clone(),
            nats: self.infrastructure.nats.clone(),
            services: self.service_names.clone(),
            interval: settings.health_probe_interval,
            serving: self.serving.clone(),
        };
        let health_task = tokio::spawn(monitor.run(self.stop_sender.subscribe()));
        let audit = crate::audit::AuditApi::new(self.infrastructure.pool.clone()).into_service();
        let mut service_names = self.service_names.clone();
        service_names.push(AUDIT_SERVICE_NAME);
        let reflection = reflection_service(&service_names)?;

        let stop_sender = self.stop_sender.clone();
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_sender.send(true);
        });

        // Logged with the gRPC address, for tools that let the port be picked.
        let metrics_port = self.metrics_port();
        let mut background = tokio::task::JoinSet::new();
        if let Some(listener) = self.metrics_listener {
            let mut sources: Vec<Arc<dyn MetricSource>> = vec![Arc::new(CoreMetrics {
                service: settings.service.as_str(),
                pool: self.infrastructure.pool.clone(),
                messaging: self.messaging_metrics.clone(),
                grpc: self.grpc_metrics.clone(),
                serving: self.serving.clone(),
            })];
            sources.extend(self.metric_sources);
            let stop = StopSignal(self.stop_sender.subscribe());
            background.spawn(async move {
                (
                    "metrics-endpoint",
                    metrics_export::serve(listener, sources, stop).await,
                )
            });
        }
        for (name, task) in self.background {
            background.spawn(async move { (name, task.await) });
        }

        tracing::info!(
            address = %self.address,
            metrics_port,
            service = %settings.service,
            "grpc server listening"
        );
        let mut stop = StopSignal(self.stop_sender.subscribe());
        let server_stop = stop.clone();
        let incoming = TcpIncoming::from(self.listener).with_nodelay(Some(true));
        let server = Server::builder()
            .trace_fn(crate::grpc_tracing::server_span)
            .timeout(settings.request_timeout)
            .layer(GrpcMetricsLayer(self.grpc_metrics.clone()))
            .layer(AuthLayer(self.auth.clone()))
            .add_routes(self.routes)
            .add_service(audit)
            .add_service(health_service)
            .add_service(reflection)
            .serve_with_incoming_shutdown(incoming, async move {
                let mut stop = server_stop;
                stop.stopped().await;
            });

        let grace = settings.shutdown_grace;
        let grace_expired = async move {
            stop.stopped().await;
            tokio::time::sleep(grace).await;
        };

        let outcome = {
            let stopping = self.stop_sender.subscribe();
            // A task that returns before shutdown is a failure; one that
            // returns because we are stopping is not, and must not cut the
            // in-flight calls short.
            let background_failed = async {
                while let Some(joined) = background.join_next().await {
                    match joined {
                        Ok((_, Ok(()))) if *stopping.borrow() => continue,
                        Ok((name, Ok(()))) => {
                            return anyhow::anyhow!("background task {name} ended unexpectedly");
                        }
                        Ok((name, Err(error))) => {
                            return error.context(format!("background task {name} failed"));
                        }
                        Err(join_error) => {
                            return anyhow::anyhow!("background task panicked: {join_error}");
                        }
                    }
                }
                std::future::pending().await
            };
            tokio::select! {
                result = server => result.context("gRPC server failed"),
                _ = grace_expired => {
                    tracing::warn!(grace_ms = grace.as_millis() as u64, "in-flight calls outlived the grace period");
                    Ok(())
                }
                error = background_failed => Err(error),
            }
        };

        let _ = self.stop_sender.send(true);
        let drain = async {
            while background.join_next().await.is_some() {}
            let _ = health_task.await;
        };
        if tokio::time::timeout(grace, drain).await.is_err() {
            tracing::warn!("background tasks did not stop within the grace period");
        }
        tracing::info!(service = %settings.service, "stopped");
        outcome
    }
}

/// The audit service every process serves beside its own.
const AUDIT_SERVICE_NAME: &str = "qapmap.ops.v1.AuditService";

/// Server reflection advertising only what this process serves (the shared
/// descriptor set describes every QapMap service).
fn reflection_service(
    service_names: &[&'static str],
) -> anyhow::Result<
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
> {
    let mut builder = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(qapmap_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .with_service_name("grpc.health.v1.Health")
        .with_service_name("grpc.reflection.v1.ServerReflection");
    for name in service_names {
        builder = builder.with_service_name(*name);
    }
    builder
        .build_v1()
        .context("building the reflection service")
}

/// The bounds a tonic service must meet to be served and named.
mod tower_service_bound {
    use std::convert::Infallible;

    use super::NamedService;

    pub trait GrpcService:
        tower_service::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = Infallible,
            Future: Send + 'static,
        > + NamedService
        + Clone
        + Send
        + Sync
        + 'static
    {
    }

    impl<S> GrpcService for S where
        S: tower_service::Service<
                http::Request<tonic::body::Body>,
                Response = http::Response<tonic::body::Body>,
                Error = Infallible,
                Future: Send + 'static,
            > + NamedService
            + Clone
            + Send
            + Sync
            + 'static
    {
    }
}
