//! The W3C trace context of the current span, for storing on rows (saga,
//! outbox) so work resumed later joins the same trace. Empty when tracing
//! export is off.

use std::collections::{BTreeMap, HashMap};

use opentelemetry::trace::TraceContextExt;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// `traceparent` and the trace id of the current span.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceContext {
    pub traceparent: String,
    pub trace_id: String,
}

pub fn current() -> TraceContext {
    let context = tracing::Span::current().context();
    let span = context.span();
    let span_context = span.span_context();
    if !span_context.is_valid() {
        return TraceContext::default();
    }
    let mut carrier = HashMap::new();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut carrier);
    });
    TraceContext {
        traceparent: carrier.remove("traceparent").unwrap_or_default(),
        trace_id: span_context.trace_id().to_string(),
    }
}

/// The span of one consumed message, child of the span that produced it
/// (its `traceparent` header, stored on the outbox row), with OpenTelemetry
/// `messaging.*` attributes.
pub fn message_span(
    consumer: &str,
    subject: &str,
    message_id: &str,
    headers: &BTreeMap<String, String>,
) -> tracing::Span {
    let span = tracing::info_span!(
        "messaging.process",
        otel.name = %format!("process {subject}"),
        otel.kind = "consumer",
        messaging.system = "nats",
        messaging.operation = "process",
        messaging.destination.name = %subject,
        messaging.message.id = %message_id,
        messaging.consumer.group.name = %consumer,
    );
    let carrier: HashMap<String, String> = headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect();
    let parent = extract(&carrier);
    let _ = span.set_parent(parent);
    span
}

/// The context `carrier` names, on an empty base: without a `traceparent` the
/// result has no parent span, whatever span the thread has entered (the
/// propagator's `extract` would fall back to the thread's current context).
fn extract(carrier: &HashMap<String, String>) -> opentelemetry::Context {
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract_with_context(&opentelemetry::Context::new(), carrier)
    })
}

/// The `traceparent` of a span, for a message sent on its behalf.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut carrier)
    });
    carrier.remove("traceparent")
}

/// The span context a stored `traceparent` names, as a parent for new spans.
pub fn parent_from_traceparent(traceparent: &str) -> opentelemetry::Context {
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    extract(&carrier)
}
