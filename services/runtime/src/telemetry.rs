//! Logs and traces.
//!
//! Logs are JSON lines on stdout, filtered by `RUST_LOG` (default `info`).
//! A line logged inside a span that belongs to an exported trace carries the
//! top-level fields `trace_id` and `span_id` (hex, as Jaeger shows them), so
//! logs and traces join both ways.
//!
//! Traces go to an OTLP collector when the standard variables ask for it:
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is
//! set and `OTEL_SDK_DISABLED` is not `true`. The SDK reads the other
//! `OTEL_*` variables itself:
//! - sampling: `OTEL_TRACES_SAMPLER` (`always_on`, `always_off`,
//!   `traceidratio`, `parentbased_always_on` (the default),
//!   `parentbased_always_off`, `parentbased_traceidratio`) and
//!   `OTEL_TRACES_SAMPLER_ARG` (the ratio), read by the tracer provider's
//!   default configuration;
//! - the exporter: `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT`
//!   (default 10 s per export), compression;
//! - the batch span processor: `OTEL_BSP_MAX_QUEUE_SIZE` (default 2048 spans),
//!   `OTEL_BSP_SCHEDULE_DELAY` (default 5000 ms), `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`
//!   (default 512), `OTEL_BSP_EXPORT_TIMEOUT`.
//!
//! A dead or slow collector never slows a request: ending a span only
//! `try_send`s it into the processor's bounded queue; export happens on the
//! processor's own thread. When the queue is full the span is dropped and the
//! SDK counts it (`dropped_spans_count`): the first drop and, at shutdown, the
//! total are reported through the SDK's internal log.

use std::fmt;
use std::sync::{Arc, OnceLock};

use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Subscriber;
use tracing::dispatcher::{Dispatch, WeakDispatch};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::fmt::format::{Format, Json, JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// Keeps the trace pipeline alive; flushes pending spans when dropped.
#[derive(Debug)]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown()
        {
            eprintln!("flushing traces failed: {error}");
        }
    }
}

/// Installs the global subscriber for `service_name`. Call once, first thing in `main`.
pub fn init(service_name: &'static str) -> anyhow::Result<TelemetryGuard> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let provider = if otlp_requested() {
        Some(otlp_provider(service_name)?)
    } else {
        None
    };
    let json_logs = json_logs(provider.is_some());
    let otel_layer = provider
        .as_ref()
        .map(|provider| tracing_opentelemetry::layer().with_tracer(provider.tracer(service_name)));
    if let Some(provider) = &provider {
        opentelemetry::global::set_tracer_provider(provider.clone());
    }

    tracing_subscriber::registry()
        .with(filter)
        .with(json_logs)
        .with(otel_layer)
        .try_init()?;
    Ok(TelemetryGuard { provider })
}

fn otlp_requested() -> bool {
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    let endpoint_set = [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|name| std::env::var(name).is_ok_and(|v| !v.is_empty()));
    endpoint_set && !disabled
}

fn otlp_provider(service_name: &'static str) -> anyhow::Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()?;
    // The standard OTEL_SERVICE_NAME wins (deployments name their pods);
    // otherwise the process's own name.
    let name = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|name| !name.trim().is_empty())
        .unwrap_or_else(|| service_name.to_owned());
    let resource = Resource::builder().with_service_name(name).build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// The JSON log layer: one object per line on stdout. With `with_ids` (when
/// traces are exported) a line logged inside a span of a valid OpenTelemetry
/// trace also carries top-level `trace_id` and `span_id`.
pub fn json_logs<S>(with_ids: bool) -> impl Layer<S>
where
    S: Subscriber + for<'lookup> LookupSpan<'lookup>,
{
    json_logs_to(with_ids, std::io::stdout)
}

fn json_logs_to<S, W>(with_ids: bool, writer: W) -> impl Layer<S>
where
    S: Subscriber + for<'lookup> LookupSpan<'lookup>,
    W: for<'writer> tracing_subscriber::fmt::MakeWriter<'writer> + Send + Sync + 'static,
{
    let dispatch = Arc::new(OnceLock::new());
    let format = JsonWithTraceIds {
        json: tracing_subscriber::fmt::format()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_target(true),
        dispatch: with_ids.then(|| dispatch.clone()),
    };
    tracing_subscriber::fmt::layer()
        .fmt_fields(JsonFields::new())
        .event_format(format)
        .with_writer(writer)
        .and_then(CaptureDispatch(dispatch))
}

/// The JSON line format plus the OpenTelemetry ids of the event's span.
///
/// The OpenTelemetry layer keeps a span's context in private span data,
/// reachable only through its `Dispatch`; while an event is being formatted
/// that dispatch is not the thread's default (re-entrance guard), so the
/// subscriber's dispatch is captured when it is registered.
#[derive(Debug)]
struct JsonWithTraceIds {
    json: Format<Json>,
    /// `None` when traces are not exported: plain JSON, no span lookup.
    dispatch: Option<Arc<OnceLock<WeakDispatch>>>,
}

/// Remembers the subscriber this layer is registered in.
#[derive(Debug)]
struct CaptureDispatch(Arc<OnceLock<WeakDispatch>>);

impl<S: Subscriber> Layer<S> for CaptureDispatch {
    fn on_register_dispatch(&self, subscriber: &Dispatch) {
        let _ = self.0.set(subscriber.downgrade());
    }
}

impl<S, N> FormatEvent<S, N> for JsonWithTraceIds
where
    S: Subscriber + for<'lookup> LookupSpan<'lookup>,
    N: for<'writer> FormatFields<'writer> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        let ids = self
            .dispatch
            .as_ref()
            .and_then(|dispatch| dispatch.get()?.upgrade())
            .and_then(|dispatch| trace_ids(ctx, &dispatch));
        let Some((trace_id, span_id)) = ids else {
            return self.json.format_event(ctx, writer, event);
        };
        let mut line = String::with_capacity(256);
        self.json.format_event(ctx, Writer::new(&mut line), event)?;
        // The JSON formatter writes one object and a newline: add the ids as
        // its last members.
        match line.trim_end().strip_suffix('}') {
            Some(body) => {
                let separator = if body.trim_end().ends_with('{') {
                    ""
                } else {
                    ","
                };
                writeln!(
                    writer,
                    "{body}{separator}\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\"}}"
                )
            }
            None => writer.write_str(&line),
        }
    }
}

/// The trace and span id (hex) of the event's span, if it belongs to a
/// valid OpenTelemetry trace.
fn trace_ids<S, N>(ctx: &FmtContext<'_, S, N>, dispatch: &Dispatch) -> Option<(String, String)>
where
    S: Subscriber + for<'lookup> LookupSpan<'lookup>,
    N: for<'writer> FormatFields<'writer> + 'static,
{
    let span = ctx.parent_span()?;
    let context = tracing_opentelemetry::get_otel_context(&span.id(), dispatch)?;
    let otel_span = context.span();
    let span_context = otel_span.span_context();
    span_context.is_valid().then(|| {
        (
            span_context.trace_id().to_string(),
            span_context.span_id().to_string(),
        )
    })
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    use tracing_subscriber::layer::SubscriberExt;

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Lines {
        fn json(&self) -> Vec<serde_json::Value> {
            let bytes = self.0.lock().expect("lock").clone();
            String::from_utf8(bytes)
                .expect("utf-8")
                .lines()
                .map(|line| serde_json::from_str(line).expect("each line is one JSON object"))
                .collect()
        }
    }

    /// Logs one line outside any span and one inside a span; returns the
    /// lines and the span's (trace id, span id) as OpenTelemetry knows them.
    fn log_with(with_ids: bool, otel: bool) -> (Vec<serde_json::Value>, (String, String)) {
        let lines = Lines::default();
        let writer = lines.clone();
        let provider = SdkTracerProvider::builder().build();
        let otel_layer =
            otel.then(|| tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        let subscriber = tracing_subscriber::registry()
            .with(super::json_logs_to(with_ids, move || writer.clone()))
            .with(otel_layer);
        let ids = tracing::subscriber::with_default(subscriber, || {
            tracing::info!(answer = 42, "outside");
            let span = tracing::info_span!("work", company.id = "c-1");
            let _entered = span.enter();
            tracing::info!(answer = 43, "inside");
            let context = span.context();
            let otel_span = context.span();
            let span_context = otel_span.span_context();
            (
                span_context.trace_id().to_string(),
                span_context.span_id().to_string(),
            )
        });
        (lines.json(), ids)
    }

    #[test]
    fn a_line_inside_a_traced_span_carries_its_trace_and_span_id() {
        let (lines, (trace_id, span_id)) = log_with(true, true);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!(lines[0]["message"], "outside");
        assert!(lines[0].get("trace_id").is_none(), "{:?}", lines[0]);
        assert_eq!(lines[1]["message"], "inside");
        assert_eq!(lines[1]["answer"], 43);
        assert_eq!(lines[1]["span"]["name"], "work");
        assert_eq!(lines[1]["trace_id"].as_str(), Some(trace_id.as_str()));
        assert_eq!(lines[1]["span_id"].as_str(), Some(span_id.as_str()));
        assert_eq!(trace_id.len(), 32);
        assert_eq!(span_id.len(), 16);
        assert_ne!(trace_id, "0".repeat(32));
    }

    #[test]
    fn without_export_lines_are_plain_json() {
        for (with_ids, otel) in [(false, false), (false, true), (true, false)] {
            let (lines, _) = log_with(with_ids, otel);
            assert_eq!(lines.len(), 2, "{lines:?}");
            assert_eq!(lines[1]["message"], "inside");
            assert_eq!(lines[1]["span"]["name"], "work");
            assert!(lines[1].get("trace_id").is_none(), "{:?}", lines[1]);
            assert!(lines[1].get("span_id").is_none(), "{:?}", lines[1]);
        }
    }
}
