//! One saga, one trace: every step, in every process, under the saga's root
//! span, also across compensation and an orchestrator restart; and a dead
//! collector never stops a saga.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use qapmap_proto::saga::v1 as saga;

use crate::receiver::{ReceivedSpan, Receiver, Trace};
use crate::system::{Processes, STAKEHOLDER_EMAIL, STAKEHOLDER_NAME};

/// How long spans may take to arrive after the saga finished (batches leave
/// every 200 ms in these tests).
const EXPORT_PATIENCE: Duration = Duration::from_secs(30);

/// The exercise saga's steps: index, name, the service that handles it.
const EXERCISE_STEPS: [(usize, &str, &str); 5] = [
    (0, "reserve_options", "equity"),
    (1, "hold_unissued_shares", "ledger"),
    (2, "collect_payment", "shareholder"),
    (3, "post_exercise", "ledger"),
    (4, "confirm_exercise", "equity"),
];

const ALL_SERVICES: [&str; 4] = ["equity", "ledger", "orchestrator", "shareholder"];

fn step_service(step: usize) -> &'static str {
    EXERCISE_STEPS[step].2
}

/// True when the trace holds a span for each of `steps` (as `compensation`
/// or not) and the handling of its command in the step's service.
fn steps_handled(trace: &Trace, steps: &[usize], compensation: bool) -> bool {
    let spans = trace.step_spans(compensation);
    steps.iter().all(|&step| {
        spans.iter().any(|span| {
            span.attribute("saga.step") == Some(step.to_string().as_str())
                && !trace
                    .handled_under(step_service(step), &span.span_id)
                    .is_empty()
        })
    })
}

/// Waits until the trace holds what `complete` asks, and returns it.
async fn wait_for_trace(
    receiver: &Receiver,
    trace_id: &str,
    complete: impl Fn(&Trace) -> bool,
) -> Trace {
    qapmap_testkit::eventually(EXPORT_PATIENCE, || async {
        complete(&Trace::of(trace_id, receiver.spans()))
    })
    .await;
    Trace::of(trace_id, receiver.spans())
}

/// One line per span, for assertion messages.
fn summary(trace: &Trace) -> String {
    let mut spans: Vec<&ReceivedSpan> = trace.spans.iter().collect();
    spans.sort_by_key(|span| span.start);
    spans
        .iter()
        .map(|span| {
            format!(
                "{:<12} {} <- {:<16} {} {:?}",
                span.service, span.span_id, span.parent_span_id, span.name, span.attributes
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn step_number(span: &ReceivedSpan) -> usize {
    span.attribute("saga.step")
        .and_then(|step| step.parse().ok())
        .expect("a step span has a numeric saga.step")
}

/// Checks a step span's attributes and that it hangs under the saga span.
fn assert_step_span(
    span: &ReceivedSpan,
    saga: &saga::Saga,
    company_id: &str,
    root_span_id: &str,
    trace: &Trace,
) {
    let step = step_number(span);
    let (_, name, _) = EXERCISE_STEPS[step];
    let context = summary(trace);
    assert_eq!(span.service, "orchestrator", "{context}");
    assert_eq!(
        span.attribute("saga.id"),
        Some(saga.id.as_str()),
        "{context}"
    );
    assert_eq!(
        span.attribute("saga.type"),
        Some("option_exercise"),
        "{context}"
    );
    assert_eq!(span.attribute("company.id"), Some(company_id), "{context}");
    assert_eq!(span.attribute("saga.step.name"), Some(name), "{context}");
    assert_eq!(
        span.parent_span_id, root_span_id,
        "step {step} hangs under the saga span\n{context}"
    );
}

/// No span, attribute, event or resource carries the set-up's personal data.
fn assert_no_personal_data(receiver: &Receiver, processes: &Processes) {
    let exported = receiver.everything_received();
    for personal in [STAKEHOLDER_NAME, STAKEHOLDER_EMAIL] {
        assert!(
            !exported.contains(personal),
            "{personal:?} was exported in a span"
        );
        for (service, process) in [
            ("equity", &processes.equity),
            ("shareholder", &processes.shareholder),
            ("ledger", &processes.ledger),
            ("orchestrator", &processes.orchestrator),
        ] {
            assert!(
                !process.output_text().contains(personal),
                "{personal:?} was logged by {service}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_exercise_saga_is_one_trace_across_all_four_services() {
    // Goal: SREs open a saga's trace id (from GetSaga) and see every step in
    // every process. Method: all four binaries export to a real OTLP
    // receiver; run one exercise; read the spans it received.
    let receiver = Receiver::start().await;
    let processes = Processes::start(&receiver.endpoint()).await;
    let company = processes.set_up_company("bank:ada-1").await;
    let began = Instant::now();
    let started = processes.start_exercise(&company, "1000").await;
    let finished = processes.finished(&started.id).await;
    assert_eq!(
        finished.state,
        saga::SagaState::Completed as i32,
        "{finished:#?}"
    );
    eprintln!(
        "exercise saga with a live collector finished in {:?}",
        began.elapsed()
    );
    let trace_id = finished.trace_id.clone();
    assert_eq!(trace_id.len(), 32, "GetSaga returns the W3C trace id");
    assert_eq!(trace_id, started.trace_id, "the trace id never changes");

    let trace = wait_for_trace(&receiver, &trace_id, |trace| {
        trace.services().len() == ALL_SERVICES.len()
            && steps_handled(trace, &[0, 1, 2, 3, 4], false)
            && trace.step_spans(false).iter().all(|step| {
                !trace
                    .handled_under("orchestrator", &step.span_id)
                    .is_empty()
            })
    })
    .await;
    let context = summary(&trace);
    assert_eq!(
        trace.services().into_iter().collect::<Vec<_>>(),
        ALL_SERVICES,
        "one trace id covers all four services\n{context}"
    );

    // The saga's root span: under the StartExercise call, with the saga's ids.
    let root = trace.saga_span().expect("the saga span was exported");
    assert_eq!(root.service, "orchestrator");
    assert_eq!(root.attribute("saga.id"), Some(finished.id.as_str()));
    assert_eq!(root.attribute("saga.type"), Some("option_exercise"));
    let company_id = processes.company_id.to_string();
    assert_eq!(root.attribute("company.id"), Some(company_id.as_str()));
    let call = trace
        .spans
        .iter()
        .find(|span| span.span_id == root.parent_span_id)
        .expect("the saga span hangs under its gRPC call");
    assert_eq!(call.attribute("rpc.system"), Some("grpc"), "{context}");
    assert_eq!(
        call.attribute("rpc.service"),
        Some("qapmap.saga.v1.SagaService")
    );
    assert_eq!(call.attribute("rpc.method"), Some("StartExercise"));
    assert!(
        !trace
            .spans
            .iter()
            .any(|span| span.attribute("rpc.method") == Some("GetSaga")),
        "a call without traceparent (the test's GetSaga polls) starts its own trace\n{context}"
    );

    // Five step spans under the root, in step order, each handled by its
    // service under the step, and its reply handled by the orchestrator.
    let steps = trace.step_spans(false);
    assert_eq!(
        steps
            .iter()
            .map(|span| step_number(span))
            .collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4],
        "one step span per step, in step order by start time\n{context}"
    );
    assert!(
        trace.step_spans(true).is_empty(),
        "no compensation\n{context}"
    );
    for step in &steps {
        assert_step_span(step, &finished, &company_id, &root.span_id, &trace);
        let service = step_service(step_number(step));
        let handled = trace.handled_under(service, &step.span_id);
        assert!(
            !handled.is_empty(),
            "{service} handled step {} under its span\n{context}",
            step_number(step)
        );
        for span in handled {
            assert_eq!(span.attribute("messaging.system"), Some("nats"));
            assert_eq!(span.kind, 5, "SPAN_KIND_CONSUMER");
        }
        assert!(
            !trace
                .handled_under("orchestrator", &step.span_id)
                .is_empty(),
            "the reply to step {} joined the step's trace\n{context}",
            step_number(step)
        );
    }

    assert_no_personal_data(&receiver, &processes);

    // Logs carry the trace and span ids of the span they were written in.
    let logged = [
        &processes.equity,
        &processes.shareholder,
        &processes.ledger,
        &processes.orchestrator,
    ]
    .iter()
    .flat_map(|process| {
        process
            .output_text()
            .lines()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    })
    .filter_map(|line| serde_json::from_str::<serde_json::Value>(&line).ok())
    .filter(|line| line["trace_id"].as_str() == Some(trace_id.as_str()))
    .collect::<Vec<_>>();
    assert!(
        !logged.is_empty(),
        "some log line was written inside the saga's trace"
    );
    for line in &logged {
        let span_id = line["span_id"].as_str().expect("a span_id beside trace_id");
        assert!(
            trace.spans.iter().any(|span| span.span_id == span_id),
            "a logged span id is a span of the trace: {line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_declined_payment_shows_its_compensations_in_the_sagas_trace() {
    // Goal: a failed saga's trace shows how it was undone. Method: the
    // sandbox declines this holder's payment (step 2), so steps 1 and 0 are
    // compensated, in that order.
    let receiver = Receiver::start().await;
    let processes = Processes::start(&receiver.endpoint()).await;
    let company = processes.set_up_company("sandbox:decline").await;
    let started = processes.start_exercise(&company, "1000").await;
    let finished = processes.finished(&started.id).await;
    assert_eq!(
        finished.state,
        saga::SagaState::Compensated as i32,
        "{finished:#?}"
    );

    let trace = wait_for_trace(&receiver, &finished.trace_id, |trace| {
        steps_handled(trace, &[0, 1], true) && steps_handled(trace, &[0, 1, 2], false)
    })
    .await;
    let context = summary(&trace);
    let root = trace.saga_span().expect("the saga span was exported");
    let company_id = processes.company_id.to_string();

    let forward = trace.step_spans(false);
    assert_eq!(
        forward
            .iter()
            .map(|span| step_number(span))
            .collect::<Vec<_>>(),
        vec![0, 1, 2],
        "the steps up to the declined payment\n{context}"
    );
    let compensations = trace.step_spans(true);
    assert_eq!(
        compensations
            .iter()
            .map(|span| step_number(span))
            .collect::<Vec<_>>(),
        vec![1, 0],
        "steps 1 then 0 compensated\n{context}"
    );
    let payment = forward[2];
    for compensation in &compensations {
        assert_step_span(compensation, &finished, &company_id, &root.span_id, &trace);
        assert_eq!(compensation.attribute("saga.compensation"), Some("true"));
        assert!(
            compensation.name.contains("compensate"),
            "{}",
            compensation.name
        );
        assert!(
            compensation.start >= payment.start,
            "compensation follows the payment\n{context}"
        );
        let service = step_service(step_number(compensation));
        assert!(
            !trace
                .handled_under(service, &compensation.span_id)
                .is_empty(),
            "{service} handled the compensation under its span\n{context}"
        );
    }
    assert_no_personal_data(&receiver, &processes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn steps_after_an_orchestrator_restart_join_the_same_trace() {
    // Goal: the saga row stores the root span's context, so a new
    // orchestrator continues the trace. Method: SIGKILL the orchestrator
    // while the (delayed) payment is in flight, once the payment step's span
    // was exported (3 s of delay leave room for that on a busy machine); the
    // steps after it come from the new process.
    let receiver = Receiver::start().await;
    let mut processes = Processes::start(&receiver.endpoint()).await;
    let company = processes.set_up_company("sandbox:delay-ms:3000").await;
    let started = processes.start_exercise(&company, "1000").await;
    let trace_id = started.trace_id.clone();
    let at_pivot = qapmap_testkit::eventually(Duration::from_secs(30), || async {
        let saga = processes.get_saga(&started.id).await;
        saga.steps[2].status == saga::StepStatus::Running as i32
    })
    .await;
    assert!(at_pivot, "the saga reached the payment step");
    let before = wait_for_trace(&receiver, &trace_id, |trace| {
        steps_handled(trace, &[0, 1], false)
            && trace
                .step_spans(false)
                .iter()
                .any(|span| step_number(span) == 2)
    })
    .await;
    let context = summary(&before);
    let steps_before = before.step_spans(false);
    assert_eq!(
        steps_before
            .iter()
            .map(|span| step_number(span))
            .collect::<Vec<_>>(),
        vec![0, 1, 2],
        "{context}"
    );
    let root_span_id = steps_before[0].parent_span_id.clone();
    assert!(!root_span_id.is_empty(), "steps hang under the saga span");
    let still_in_flight = processes.get_saga(&started.id).await;
    assert_eq!(
        still_in_flight.steps[2].status,
        saga::StepStatus::Running as i32,
        "the kill lands while the payment is in flight"
    );

    let killed_at = u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_nanos(),
    )
    .expect("fits");
    processes.kill_and_restart_orchestrator().await;

    let finished = processes.finished(&started.id).await;
    assert_eq!(
        finished.state,
        saga::SagaState::Completed as i32,
        "{finished:#?}"
    );
    assert_eq!(finished.trace_id, trace_id);
    let trace = wait_for_trace(&receiver, &trace_id, |trace| {
        steps_handled(trace, &[3, 4], false)
    })
    .await;
    let context = summary(&trace);
    let company_id = processes.company_id.to_string();
    for step in [3, 4] {
        let span = trace
            .step_spans(false)
            .into_iter()
            .find(|span| step_number(span) == step)
            .unwrap_or_else(|| panic!("step {step} joined the trace\n{context}"));
        assert!(
            span.start > killed_at,
            "step {step} was sent by the restarted orchestrator\n{context}"
        );
        assert_step_span(span, &finished, &company_id, &root_span_id, &trace);
        assert!(
            !trace
                .handled_under(step_service(step), &span.span_id)
                .is_empty(),
            "step {step}'s handling hangs under it\n{context}"
        );
    }
    assert!(
        trace
            .handled_under("orchestrator", &steps_before[2].span_id)
            .iter()
            .any(|span| span.start > killed_at),
        "the new orchestrator handled the payment's reply under the payment step\n{context}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_saga_completes_when_nothing_listens_on_the_otlp_endpoint() {
    // Goal: a dead collector never breaks a request. Method: point every
    // process at a loopback port where nothing listens; the saga completes
    // within the usual patience.
    let dead_endpoint = format!("http://127.0.0.1:{}", qapmap_testkit::free_port());
    let processes = Processes::start(&dead_endpoint).await;
    let company = processes.set_up_company("bank:ada-1").await;
    let began = Instant::now();
    let started = processes.start_exercise(&company, "1000").await;
    let finished = processes.finished(&started.id).await;
    assert_eq!(
        finished.state,
        saga::SagaState::Completed as i32,
        "{finished:#?}"
    );
    assert_eq!(finished.trace_id.len(), 32, "the saga still has a trace id");
    eprintln!(
        "exercise saga with a dead collector finished in {:?}",
        began.elapsed()
    );
}
