//! The W3C trace context of the current span, for storing on rows (saga,
//! outbox) so work resumed later joins the same trace. Empty when tracing
//! export is off.

use std::collections::HashMap;

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
