//! W3C trace context across gRPC: the server continues the caller's trace
//! (one span per call, with OpenTelemetry `rpc.*` attributes), and clients
//! inject the current span's context into the request metadata.

use opentelemetry::propagation::{Extractor, Injector};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Reads propagation headers from an HTTP/2 request.
struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Writes propagation headers into gRPC metadata.
struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            tonic::metadata::MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(key, value);
        }
    }
}

/// The server span of one gRPC call, child of the caller's span when the
/// request carries `traceparent`. Used with `Server::builder().trace_fn`.
pub fn server_span(request: &http::Request<()>) -> tracing::Span {
    let path = request.uri().path();
    let (service, method) = path
        .trim_start_matches('/')
        .split_once('/')
        .unwrap_or(("", path));
    let span = tracing::info_span!(
        "grpc.request",
        otel.name = %path.trim_start_matches('/'),
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = %service,
        rpc.method = %method,
    );
    // Extracted onto an empty context, not the thread's current one: a call
    // without `traceparent` starts a trace of its own instead of joining
    // whatever span this worker thread happens to have entered.
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract_with_context(
            &opentelemetry::Context::new(),
            &HeaderExtractor(request.headers()),
        )
    });
    let _ = span.set_parent(parent);
    span
}

/// A client interceptor: puts the current span's trace context into the
/// outgoing metadata, so the callee's spans join the caller's trace.
pub fn inject_context(
    mut request: tonic::Request<()>,
) -> Result<tonic::Request<()>, tonic::Status> {
    let context = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut MetadataInjector(request.metadata_mut()));
    });
    Ok(request)
}
