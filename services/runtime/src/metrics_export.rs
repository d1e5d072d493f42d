//! Metrics for SREs, in the Prometheus text format on `GET /metrics` at
//! `QAPMAP_METRICS_PORT` (off when unset).
//!
//! Why Prometheus rather than OTLP metrics: the alert rules in `deploy/` are
//! Prometheus rules, a pull endpoint needs no collector to be useful, and a
//! dead scraper can never slow a request. Traces still go over OTLP.
//!
//! What every process exports: gRPC requests by method and status with a
//! latency histogram, whether health is SERVING, the outbox backlog and its
//! oldest row's age, messages published / handled / dead-lettered, and dead
//! letters waiting. A process adds its own with [`MetricSource`] (the
//! orchestrator: sagas by outcome, in flight, step latency).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::metrics::MessagingMetrics;
use crate::server::StopSignal;

/// Upper bounds, in seconds, of the latency histograms.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];
/// Longest a scrape request may take to arrive.
const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest scrape request read.
const REQUEST_SIZE_MAX: usize = 8 * 1024;

/// Something that appends metric families to a scrape.
pub trait MetricSource: Send + Sync + 'static {
    fn render<'a>(&'a self, out: &'a mut String) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>>;
}

/// A latency histogram with fixed buckets.
#[derive(Debug, Default, Clone)]
pub struct Histogram {
    buckets: [u64; LATENCY_BUCKETS.len()],
    count: u64,
    sum_seconds: f64,
}

impl Histogram {
    pub fn observe(&mut self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        for (bucket, bound) in self.buckets.iter_mut().zip(LATENCY_BUCKETS) {
            if seconds <= bound {
                *bucket += 1;
            }
        }
        self.count += 1;
        self.sum_seconds += seconds;
    }

    /// Writes `<name>_bucket`, `_sum` and `_count` lines with `labels`.
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let separator = if labels.is_empty() { "" } else { "," };
        for (bucket, bound) in self.buckets.iter().zip(LATENCY_BUCKETS) {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{separator}le=\"{bound}\"}} {bucket}"
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{separator}le=\"+Inf\"}} {}",
            self.count
        );
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum_seconds);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

/// gRPC calls by method and status, and their latency by method.
#[derive(Debug, Default)]
pub struct GrpcMetrics {
    calls: Mutex<BTreeMap<(String, String), u64>>,
    latency: Mutex<BTreeMap<String, Histogram>>,
}

impl GrpcMetrics {
    fn record(&self, method: &str, code: &str, elapsed: Duration) {
        if let Ok(mut calls) = self.calls.lock() {
            *calls
                .entry((method.to_owned(), code.to_owned()))
                .or_default() += 1;
        }
        if let Ok(mut latency) = self.latency.lock() {
            latency
                .entry(method.to_owned())
                .or_default()
                .observe(elapsed);
        }
    }

    fn render(&self, out: &mut String, service: &str) {
        out.push_str("# TYPE qapmap_grpc_requests_total counter\n");
        if let Ok(calls) = self.calls.lock() {
            for ((method, code), count) in calls.iter() {
                let _ = writeln!(
                    out,
                    "qapmap_grpc_requests_total{{service=\"{service}\",method=\"{method}\",code=\"{code}\"}} {count}"
                );
            }
        }
        out.push_str("# TYPE qapmap_grpc_request_duration_seconds histogram\n");
        if let Ok(latency) = self.latency.lock() {
            for (method, histogram) in latency.iter() {
                let labels = format!("service=\"{service}\",method=\"{method}\"");
                histogram.render(out, "qapmap_grpc_request_duration_seconds", &labels);
            }
        }
    }
}

/// A tower layer counting every gRPC call. The status is the `grpc-status`
/// response header (trailers-only errors) or OK when the call answered with
/// a body, which is how tonic answers unary calls.
#[derive(Debug, Clone)]
pub struct GrpcMetricsLayer(pub Arc<GrpcMetrics>);

impl<S> tower_layer::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetricsService {
            inner,
            metrics: self.0.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct GrpcMetricsService<S> {
    inner: S,
    metrics: Arc<GrpcMetrics>,
}

impl<S, B, R> tower_service::Service<http::Request<B>> for GrpcMetricsService<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = request.uri().path().trim_start_matches('/').to_owned();
        let started = Instant::now();
        let metrics = self.metrics.clone();
        let response = self.inner.call(request);
        Box::pin(async move {
            let result = response.await;
            let code = match &result {
                Ok(response) => response
                    .headers()
                    .get("grpc-status")
                    .and_then(|value| value.to_str().ok())
                    .unwrap_or("0")
                    .to_owned(),
                Err(_) => "transport_error".to_owned(),
            };
            metrics.record(&method, &code, started.elapsed());
            result
        })
    }
}

/// The metrics every process has.
#[derive(Debug, Clone)]
pub struct CoreMetrics {
    pub service: &'static str,
    pub pool: PgPool,
    pub messaging: Arc<MessagingMetrics>,
    pub grpc: Arc<GrpcMetrics>,
    pub serving: Arc<AtomicBool>,
}

impl MetricSource for CoreMetrics {
    fn render<'a>(&'a self, out: &'a mut String) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            let service = self.service;
            let serving = u8::from(self.serving.load(Ordering::Relaxed));
            let _ = writeln!(
                out,
                "# TYPE qapmap_grpc_health_serving gauge\nqapmap_grpc_health_serving{{service=\"{service}\"}} {serving}"
            );
            self.grpc.render(out, service);
            let counters = [
                (
                    "qapmap_messages_published_total",
                    self.messaging.published_total(),
                ),
                (
                    "qapmap_message_publish_failures_total",
                    self.messaging.publish_failures_total(),
                ),
                (
                    "qapmap_messages_handled_total",
                    self.messaging.handled_total(),
                ),
                (
                    "qapmap_messages_duplicate_total",
                    self.messaging.redelivered_duplicates_total(),
                ),
                (
                    "qapmap_messages_ignored_total",
                    self.messaging.ignored_total(),
                ),
                (
                    "qapmap_messages_dead_lettered_total",
                    self.messaging.dead_lettered_total(),
                ),
                (
                    "qapmap_consumer_pulls_cut_total",
                    self.messaging.pulls_cut_total(),
                ),
                (
                    "qapmap_relay_mark_commits_total",
                    self.messaging.relay_mark_commits_total(),
                ),
                (
                    "qapmap_marks_in_consumer_batches_total",
                    self.messaging.marks_in_consumer_batches_total(),
                ),
                (
                    "qapmap_consumer_whole_batches_total",
                    self.messaging.whole_batches_total(),
                ),
                (
                    "qapmap_messages_in_whole_batches_total",
                    self.messaging.messages_in_whole_batches_total(),
                ),
                (
                    "qapmap_messages_held_behind_retry_total",
                    self.messaging.held_behind_retry_total(),
                ),
            ];
            for (name, value) in counters {
                let _ = writeln!(
                    out,
                    "# TYPE {name} counter\n{name}{{service=\"{service}\"}} {value}"
                );
            }
            // Database-backed gauges: absent from the scrape when Postgres is down.
            if let Ok(backlog) = MessagingMetrics::outbox_backlog(&self.pool).await {
                let age = backlog.oldest_age.map_or(0.0, |age| age.as_secs_f64());
                let _ = writeln!(
                    out,
                    "# TYPE qapmap_outbox_backlog gauge\nqapmap_outbox_backlog{{service=\"{service}\"}} {}",
                    backlog.unpublished_rows
                );
                let _ = writeln!(
                    out,
                    "# TYPE qapmap_outbox_oldest_age_seconds gauge\nqapmap_outbox_oldest_age_seconds{{service=\"{service}\"}} {age}"
                );
            }
            if let Ok(pending) = MessagingMetrics::pending_dead_letters(&self.pool).await {
                let _ = writeln!(
                    out,
                    "# TYPE qapmap_dead_letters gauge\nqapmap_dead_letters{{service=\"{service}\"}} {pending}"
                );
            }
        })
    }
}

/// Serves `GET /metrics` on `listener` until `stop`.
pub async fn serve(
    listener: TcpListener,
    sources: Vec<Arc<dyn MetricSource>>,
    mut stop: StopSignal,
) -> anyhow::Result<()> {
    let sources = Arc::new(sources);
    loop {
        let (mut socket, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(error.message = %error, "metrics accept failed");
                    continue;
                }
            },
            _ = stop.stopped() => return Ok(()),
        };
        let sources = sources.clone();
        tokio::spawn(async move {
            let mut request = vec![0_u8; REQUEST_SIZE_MAX];
            let read = tokio::time::timeout(REQUEST_READ_TIMEOUT, socket.read(&mut request)).await;
            let Ok(Ok(length)) = read else { return };
            let head = String::from_utf8_lossy(&request[..length]);
            let response = if head.starts_with("GET /metrics") {
                let mut body = String::new();
                for source in sources.iter() {
                    source.render(&mut body).await;
                }
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                )
            } else {
                "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    .to_owned()
            };
            let _ = socket.write_all(response.as_bytes()).await;
            let _ = socket.shutdown().await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_counts_each_observation_in_every_bucket_at_or_above_it() {
        let mut histogram = Histogram::default();
        histogram.observe(Duration::from_millis(3));
        histogram.observe(Duration::from_secs(10));
        let mut out = String::new();
        histogram.render(&mut out, "x", "m=\"a\"");
        assert!(out.contains("x_bucket{m=\"a\",le=\"0.0025\"} 0"), "{out}");
        assert!(out.contains("x_bucket{m=\"a\",le=\"0.005\"} 1"), "{out}");
        assert!(out.contains("x_bucket{m=\"a\",le=\"5\"} 1"), "{out}");
        assert!(out.contains("x_bucket{m=\"a\",le=\"+Inf\"} 2"), "{out}");
        assert!(out.contains("x_count{m=\"a\"} 2"), "{out}");
    }
}
