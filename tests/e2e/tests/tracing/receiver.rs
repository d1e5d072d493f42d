//! A real OTLP/gRPC trace receiver, served by tonic from the OpenTelemetry
//! proto definitions (`opentelemetry-proto`'s `TraceService`), that keeps
//! every span exported to it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use tokio::sync::oneshot;
use tonic::{Request, Response, Status};

#[derive(Debug, Clone, Default)]
struct Collector {
    requests: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        self.requests
            .lock()
            .expect("lock")
            .push(request.into_inner());
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// The receiver, serving on 127.0.0.1 until dropped.
#[derive(Debug)]
pub(crate) struct Receiver {
    pub(crate) port: u16,
    collector: Collector,
    _stop: oneshot::Sender<()>,
}

impl Receiver {
    pub(crate) async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the OTLP receiver");
        let port = listener.local_addr().expect("local address").port();
        let collector = Collector::default();
        let (stop, stopped) = oneshot::channel::<()>();
        let service = TraceServiceServer::new(collector.clone());
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    async {
                        let _ = stopped.await;
                    },
                )
                .await;
        });
        Self {
            port,
            collector,
            _stop: stop,
        }
    }

    /// `http://127.0.0.1:<port>`, for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub(crate) fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every span received so far.
    pub(crate) fn spans(&self) -> Vec<ReceivedSpan> {
        let requests = self.collector.requests.lock().expect("lock");
        let mut spans = Vec::new();
        for request in requests.iter() {
            for resource_spans in &request.resource_spans {
                let resource = resource_spans
                    .resource
                    .as_ref()
                    .map(|resource| attributes(&resource.attributes))
                    .unwrap_or_default();
                let service = resource.get("service.name").cloned().unwrap_or_default();
                for scope_spans in &resource_spans.scope_spans {
                    for span in &scope_spans.spans {
                        spans.push(ReceivedSpan {
                            service: service.clone(),
                            trace_id: hex(&span.trace_id),
                            span_id: hex(&span.span_id),
                            parent_span_id: hex(&span.parent_span_id),
                            name: span.name.clone(),
                            kind: span.kind,
                            start: span.start_time_unix_nano,
                            attributes: attributes(&span.attributes),
                        });
                    }
                }
            }
        }
        spans
    }

    /// Every received export request, printed in full: what a leak check
    /// searches (span names, attributes, events, links, resources).
    pub(crate) fn everything_received(&self) -> String {
        format!("{:?}", self.collector.requests.lock().expect("lock"))
    }
}

/// One received span, its ids in hex as Jaeger shows them.
#[derive(Debug, Clone)]
pub(crate) struct ReceivedSpan {
    pub(crate) service: String,
    pub(crate) trace_id: String,
    pub(crate) span_id: String,
    /// Empty for a root span.
    pub(crate) parent_span_id: String,
    pub(crate) name: String,
    pub(crate) kind: i32,
    pub(crate) start: u64,
    pub(crate) attributes: BTreeMap<String, String>,
}

impl ReceivedSpan {
    pub(crate) fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// The spans of one trace, by span id.
#[derive(Debug)]
pub(crate) struct Trace {
    pub(crate) spans: Vec<ReceivedSpan>,
    by_id: HashMap<String, usize>,
}

impl Trace {
    pub(crate) fn of(trace_id: &str, spans: Vec<ReceivedSpan>) -> Self {
        let spans: Vec<_> = spans
            .into_iter()
            .filter(|span| span.trace_id == trace_id)
            .collect();
        let by_id = spans
            .iter()
            .enumerate()
            .map(|(index, span)| (span.span_id.clone(), index))
            .collect();
        Self { spans, by_id }
    }

    /// True when `span` is `ancestor` or hangs (transitively) under it.
    pub(crate) fn descends_from(&self, span: &ReceivedSpan, ancestor: &str) -> bool {
        let mut current = span;
        for _ in 0..=self.spans.len() {
            if current.span_id == ancestor || current.parent_span_id == ancestor {
                return true;
            }
            match self.by_id.get(&current.parent_span_id) {
                Some(&index) => current = &self.spans[index],
                None => return false,
            }
        }
        false
    }

    pub(crate) fn services(&self) -> std::collections::BTreeSet<&str> {
        self.spans
            .iter()
            .map(|span| span.service.as_str())
            .collect()
    }

    /// The orchestrator's step spans (`saga.step.name` set; services' spans
    /// carry `saga.step` too), compensations or not, by start time.
    pub(crate) fn step_spans(&self, compensation: bool) -> Vec<&ReceivedSpan> {
        let wanted = compensation.to_string();
        let mut steps: Vec<_> = self
            .spans
            .iter()
            .filter(|span| {
                span.attribute("saga.step.name").is_some()
                    && span.attribute("saga.compensation") == Some(wanted.as_str())
            })
            .collect();
        steps.sort_by_key(|span| span.start);
        steps
    }

    /// The saga's root span: `saga.type` set, no `saga.step`.
    pub(crate) fn saga_span(&self) -> Option<&ReceivedSpan> {
        self.spans.iter().find(|span| {
            span.service == "orchestrator"
                && span.attribute("saga.type").is_some()
                && span.attribute("saga.step").is_none()
        })
    }

    /// Spans of consumed messages (`messaging.*`) of `service` under `ancestor`.
    pub(crate) fn handled_under(&self, service: &str, ancestor: &str) -> Vec<&ReceivedSpan> {
        self.spans
            .iter()
            .filter(|span| {
                span.service == service
                    && span.attribute("messaging.system").is_some()
                    && span.span_id != ancestor
                    && self.descends_from(span, ancestor)
            })
            .collect()
    }
}

fn attributes(attributes: &[KeyValue]) -> BTreeMap<String, String> {
    attributes
        .iter()
        .map(|attribute| {
            let value = match attribute.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Value::StringValue(value)) => value.clone(),
                Some(Value::BoolValue(value)) => value.to_string(),
                Some(Value::IntValue(value)) => value.to_string(),
                Some(Value::DoubleValue(value)) => value.to_string(),
                Some(other) => format!("{other:?}"),
                None => String::new(),
            };
            (attribute.key.clone(), value)
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut out, byte| {
        let _ = write!(out, "{byte:02x}");
        out
    })
}
