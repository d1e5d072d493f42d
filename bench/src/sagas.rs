//! Exercise sagas under a closed loop (fixed in-flight count) and an open
//! loop (fixed arrival rate).
//!
//! Latency is start -> completed: from the client's clock just before
//! StartExercise (open loop: the arrival's scheduled time, so a late start
//! counts against the system) to the saga's `updated_at` stamped by the
//! orchestrator when it committed the final state (same host, same clock).
//! Completion is observed with GetSaga: closed-loop workers poll their own
//! saga first at 3/4 of the running mean latency, then every 1/8 of the
//! longer of that mean and its own wait so far (5-500 ms); the
//! open loop does not poll during arrivals and resolves every saga afterwards.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use qapmap_proto::saga::v1 as saga;
use qapmap_proto::saga::v1::saga_service_client::SagaServiceClient;
use qapmap_runtime::auth::client::AuthenticatedChannel;

use crate::stats::Latencies;
use crate::system::{Company, System, dec, request_id};

/// Options each saga exercises.
const QUANTITY: &str = "1";

#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    /// The terminal state, or RUNNING when it never finished.
    pub(crate) state: saga::SagaState,
    pub(crate) start_wall: SystemTime,
    /// `updated_at` of the terminal state.
    pub(crate) end_wall: Option<SystemTime>,
    /// Closed loop: start until the client saw the terminal state.
    pub(crate) observed: Option<Duration>,
    pub(crate) reason: String,
    /// Each step's time, as the orchestrator stamped it.
    pub(crate) steps: Vec<crate::step_times::StepTime>,
}

#[derive(Debug, Default)]
pub(crate) struct Phase {
    pub(crate) window_start: Option<SystemTime>,
    pub(crate) window: Duration,
    pub(crate) outcomes: Vec<Outcome>,
    pub(crate) start_errors: u64,
    pub(crate) poll_errors: u64,
    pub(crate) polls: u64,
    /// Wall time from the phase's start until every saga was resolved.
    pub(crate) elapsed: Duration,
    pub(crate) first_error: Option<String>,
}

impl Phase {
    fn completed(&self) -> impl Iterator<Item = &Outcome> {
        self.outcomes
            .iter()
            .filter(|o| o.state == saga::SagaState::Completed)
    }

    /// Sagas that completed inside the window.
    pub(crate) fn completed_in_window(&self) -> usize {
        let Some(start) = self.window_start else {
            return 0;
        };
        let end = start + self.window;
        self.completed()
            .filter(|o| o.end_wall.is_some_and(|e| e >= start && e <= end))
            .count()
    }

    pub(crate) fn throughput(&self) -> f64 {
        self.completed_in_window() as f64 / self.window.as_secs_f64()
    }

    /// Start -> completed (server-stamped) of every completed saga.
    pub(crate) fn latencies(&self) -> Latencies {
        let mut latencies = Latencies::default();
        for outcome in self.completed() {
            if let Some(end) = outcome.end_wall {
                latencies.record(end.duration_since(outcome.start_wall).unwrap_or_default());
            }
        }
        latencies
    }

    /// Start, end and step times of every completed saga.
    pub(crate) fn completed_with_steps(&self) -> impl Iterator<Item = crate::step_times::Span<'_>> {
        self.completed().filter_map(|outcome| {
            Some((
                outcome.start_wall,
                outcome.end_wall?,
                outcome.steps.as_slice(),
            ))
        })
    }

    pub(crate) fn observed(&self) -> Latencies {
        let mut latencies = Latencies::default();
        for outcome in self.completed() {
            if let Some(observed) = outcome.observed {
                latencies.record(observed);
            }
        }
        latencies
    }

    pub(crate) fn count(&self, state: saga::SagaState) -> usize {
        self.outcomes.iter().filter(|o| o.state == state).count()
    }

    /// Sagas that did not complete, plus calls that failed.
    pub(crate) fn failures(&self) -> u64 {
        (self.outcomes.len() - self.count(saga::SagaState::Completed)) as u64
            + self.start_errors
            + self.poll_errors
    }

    pub(crate) fn finished(&self) -> usize {
        self.outcomes
            .iter()
            .filter(|o| o.state != saga::SagaState::Running)
            .count()
    }

    pub(crate) fn errors_line(&self) -> String {
        let mut line = format!(
            "completed {}  compensated {}  parked {}  unfinished {}  start errors {}  poll errors {}",
            self.count(saga::SagaState::Completed),
            self.count(saga::SagaState::Compensated),
            self.count(saga::SagaState::Parked),
            self.outcomes.len() - self.finished(),
            self.start_errors,
            self.poll_errors
        );
        if let Some(reason) = self
            .outcomes
            .iter()
            .find(|o| o.state != saga::SagaState::Completed)
            .map(|o| o.reason.as_str())
            .filter(|r| !r.is_empty())
            .or(self.first_error.as_deref())
        {
            line.push_str(&format!("  (first: {})", truncate(reason)));
        }
        line
    }
}

fn truncate(text: &str) -> String {
    text.chars().take(200).collect()
}

pub(crate) fn wall(timestamp: Option<&prost_types::Timestamp>) -> Option<SystemTime> {
    let timestamp = timestamp?;
    Some(
        UNIX_EPOCH
            + Duration::new(
                u64::try_from(timestamp.seconds).ok()?,
                u32::try_from(timestamp.nanos).ok()?,
            ),
    )
}

fn terminal(state: i32) -> Option<saga::SagaState> {
    match saga::SagaState::try_from(state) {
        Ok(
            state @ (saga::SagaState::Completed
            | saga::SagaState::Compensated
            | saga::SagaState::Parked),
        ) => Some(state),
        _ => None,
    }
}

async fn start(
    client: &mut SagaServiceClient<AuthenticatedChannel>,
    company: &Company,
) -> anyhow::Result<String> {
    let response = client
        .start_exercise(saga::StartExerciseRequest {
            request_id: request_id(),
            company_id: company.company_id.clone(),
            exercise: Some(saga::ExerciseInput {
                award_id: company.award_id.clone(),
                quantity: dec(QUANTITY),
                exercise_date: None,
            }),
        })
        .await?;
    Ok(response.into_inner().saga.unwrap_or_default().id)
}

/// Running mean (µs) of the latency closed-loop workers observed, kept
/// across runs, to pace their polls.
static MEAN_LATENCY_MICROS: AtomicU64 = AtomicU64::new(100_000);

#[derive(Debug, Clone, Copy)]
enum Pace {
    Fixed(Duration),
    Adaptive(Duration),
}

/// Polls GetSaga until a terminal state or `deadline`; returns the saga
/// (terminal or last seen) and the number of polls.
async fn await_end(
    client: &mut SagaServiceClient<AuthenticatedChannel>,
    company_id: &str,
    saga_id: &str,
    first_delay: Duration,
    pace: Pace,
    deadline: Instant,
) -> (anyhow::Result<saga::Saga>, u64) {
    let began = Instant::now();
    tokio::time::sleep(first_delay).await;
    let mut polls = 0;
    loop {
        polls += 1;
        let result = client
            .get_saga(saga::GetSagaRequest {
                company_id: company_id.to_owned(),
                saga_id: saga_id.to_owned(),
            })
            .await;
        let saga = match result {
            Ok(response) => response.into_inner().saga.unwrap_or_default(),
            Err(status) => return (Err(status.into()), polls),
        };
        if terminal(saga.state).is_some() || Instant::now() >= deadline {
            return (Ok(saga), polls);
        }
        let interval = match pace {
            Pace::Fixed(interval) => interval,
            // An eighth of the longer of the mean latency and this saga's wait so far.
            Pace::Adaptive(mean) => (mean.max(began.elapsed() + first_delay) / 8)
                .clamp(Duration::from_millis(5), Duration::from_millis(500)),
        };
        tokio::time::sleep(interval).await;
    }
}

fn outcome_of(saga: &saga::Saga, start_wall: SystemTime, observed: Option<Duration>) -> Outcome {
    let state = terminal(saga.state).unwrap_or(saga::SagaState::Running);
    Outcome {
        state,
        start_wall,
        end_wall: terminal(saga.state).and(wall(saga.updated_at.as_ref())),
        observed: terminal(saga.state).and(observed),
        reason: saga.state_reason.clone(),
        steps: crate::step_times::of(saga),
    }
}

/// `concurrency` workers, each starting a saga, waiting for its end, and
/// starting the next, for `duration`. Worker w exercises the grants of
/// companies w, w + concurrency, ... so no two in-flight sagas share a grant
/// while there are at least as many companies as workers.
pub(crate) async fn closed_loop(
    system: &System,
    companies: &[Company],
    concurrency: usize,
    duration: Duration,
    patience: Duration,
) -> Phase {
    let began = Instant::now();
    let window_start = SystemTime::now();
    let deadline = began + duration;
    let mut workers = Vec::new();
    for worker in 0..concurrency {
        let mine: Vec<Company> = companies
            .iter()
            .skip(worker % companies.len())
            .step_by(concurrency)
            .cloned()
            .collect();
        let mut client = system.sagas(worker);
        workers.push(tokio::spawn(async move {
            let mut phase = Phase::default();
            for iteration in 0..1_000_000usize {
                if Instant::now() >= deadline {
                    break;
                }
                let company = &mine[iteration % mine.len()];
                let start_wall = SystemTime::now();
                let started = Instant::now();
                let saga_id = match start(&mut client, company).await {
                    Ok(id) => id,
                    Err(error) => {
                        phase.start_errors += 1;
                        phase.first_error.get_or_insert(format!("{error:#}"));
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let mean_now = Duration::from_micros(MEAN_LATENCY_MICROS.load(Ordering::Relaxed));
                let first = mean_now.mul_f64(0.75).saturating_sub(started.elapsed());
                let (result, polls) = await_end(
                    &mut client,
                    &company.company_id,
                    &saga_id,
                    first,
                    Pace::Adaptive(mean_now),
                    started + patience,
                )
                .await;
                phase.polls += polls;
                let observed = started.elapsed();
                match result {
                    Ok(saga) => {
                        let outcome = outcome_of(&saga, start_wall, Some(observed));
                        if outcome.state == saga::SagaState::Completed {
                            let old = MEAN_LATENCY_MICROS.load(Ordering::Relaxed);
                            let new = old - old / 8
                                + u64::try_from(observed.as_micros()).unwrap_or(0) / 8;
                            MEAN_LATENCY_MICROS.store(new, Ordering::Relaxed);
                        }
                        phase.outcomes.push(outcome);
                    }
                    Err(error) => {
                        phase.poll_errors += 1;
                        phase.first_error.get_or_insert(format!("{error:#}"));
                    }
                }
            }
            phase
        }));
    }
    let mut phase = Phase {
        window_start: Some(window_start),
        window: duration,
        ..Phase::default()
    };
    for worker in workers {
        match worker.await {
            Ok(part) => merge(&mut phase, part),
            Err(error) => {
                phase.start_errors += 1;
                phase.first_error.get_or_insert(format!("worker: {error}"));
            }
        }
    }
    phase.elapsed = began.elapsed();
    phase
}

fn merge(into: &mut Phase, part: Phase) {
    into.outcomes.extend(part.outcomes);
    into.start_errors += part.start_errors;
    into.poll_errors += part.poll_errors;
    into.polls += part.polls;
    if into.first_error.is_none() {
        into.first_error = part.first_error;
    }
}

/// Sagas started at `rate` per second for `duration` (each at its
/// scheduled time, whatever the earlier ones are doing), then each resolved
/// with GetSaga (8 at a time, every 100 ms while running).
pub(crate) async fn open_loop(
    system: &System,
    companies: &[Company],
    rate: f64,
    duration: Duration,
    patience: Duration,
) -> Phase {
    let arrivals = ((rate * duration.as_secs_f64()).round() as usize).max(1);
    let began = Instant::now();
    let wall_start = SystemTime::now();
    let mut handles = Vec::with_capacity(arrivals);
    for index in 0..arrivals {
        let offset = Duration::from_secs_f64(index as f64 / rate);
        tokio::time::sleep_until((began + offset).into()).await;
        let company = companies[index % companies.len()].clone();
        let mut client = system.sagas(index);
        handles.push(tokio::spawn(async move {
            let result = start(&mut client, &company).await;
            (company, wall_start + offset, result)
        }));
    }
    let mut phase = Phase {
        window_start: Some(wall_start),
        window: duration,
        ..Phase::default()
    };
    let mut started = Vec::with_capacity(arrivals);
    for handle in handles {
        match handle.await {
            Ok((company, start_wall, Ok(saga_id))) => started.push((company, start_wall, saga_id)),
            Ok((_, _, Err(error))) => {
                phase.start_errors += 1;
                phase.first_error.get_or_insert(format!("{error:#}"));
            }
            Err(error) => {
                phase.start_errors += 1;
                phase.first_error.get_or_insert(format!("task: {error}"));
            }
        }
    }
    let deadline = Instant::now() + patience;
    let resolved: Vec<(anyhow::Result<Outcome>, u64)> = futures::stream::iter(started)
        .enumerate()
        .map(|(index, (company, start_wall, saga_id))| {
            let mut client = system.sagas(index);
            async move {
                let (result, polls) = await_end(
                    &mut client,
                    &company.company_id,
                    &saga_id,
                    Duration::ZERO,
                    Pace::Fixed(Duration::from_millis(100)),
                    deadline,
                )
                .await;
                (
                    result.map(|saga| outcome_of(&saga, start_wall, None)),
                    polls,
                )
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    for (result, polls) in resolved {
        phase.polls += polls;
        match result {
            Ok(outcome) => phase.outcomes.push(outcome),
            Err(error) => {
                phase.poll_errors += 1;
                phase.first_error.get_or_insert(format!("{error:#}"));
            }
        }
    }
    phase.elapsed = began.elapsed();
    phase
}

/// One saga per company (8 companies at a time), to check the set-up and
/// warm every path.
pub(crate) async fn warm_up(system: &System, companies: &[Company], patience: Duration) -> Phase {
    let began = Instant::now();
    let results: Vec<(anyhow::Result<Outcome>, u64)> =
        futures::stream::iter(companies.iter().enumerate())
            .map(|(index, company)| {
                let mut client = system.sagas(index);
                async move {
                    let start_wall = SystemTime::now();
                    let started = Instant::now();
                    let saga_id = match start(&mut client, company).await {
                        Ok(id) => id,
                        Err(error) => return (Err(error), 0),
                    };
                    let (result, polls) = await_end(
                        &mut client,
                        &company.company_id,
                        &saga_id,
                        Duration::ZERO,
                        Pace::Fixed(Duration::from_millis(20)),
                        started + patience,
                    )
                    .await;
                    let observed = started.elapsed();
                    (
                        result.map(|saga| outcome_of(&saga, start_wall, Some(observed))),
                        polls,
                    )
                }
            })
            .buffer_unordered(8)
            .collect()
            .await;
    let mut phase = Phase::default();
    for (result, polls) in results {
        phase.polls += polls;
        match result {
            Ok(outcome) => phase.outcomes.push(outcome),
            Err(error) => {
                phase.start_errors += 1;
                phase.first_error.get_or_insert(format!("{error:#}"));
            }
        }
    }
    phase.elapsed = began.elapsed();
    phase
}

/// Commits one GetSaga costs: `calls` polls of a finished saga.
pub(crate) async fn poll_many(
    system: &System,
    company: &Company,
    saga_id: &str,
    calls: usize,
) -> anyhow::Result<()> {
    let mut client = system.sagas(0);
    for _ in 0..calls {
        client
            .get_saga(saga::GetSagaRequest {
                company_id: company.company_id.clone(),
                saga_id: saga_id.to_owned(),
            })
            .await?;
    }
    Ok(())
}

/// Starts one saga and waits for it, for calibration.
pub(crate) async fn one(
    system: &System,
    company: &Company,
    patience: Duration,
) -> anyhow::Result<String> {
    let mut client = system.sagas(0);
    let saga_id = start(&mut client, company).await?;
    let (result, _) = await_end(
        &mut client,
        &company.company_id,
        &saga_id,
        Duration::ZERO,
        Pace::Fixed(Duration::from_millis(20)),
        Instant::now() + patience,
    )
    .await;
    let saga = result?;
    anyhow::ensure!(
        terminal(saga.state) == Some(saga::SagaState::Completed),
        "calibration saga ended {:?}: {}",
        saga::SagaState::try_from(saga.state),
        saga.state_reason
    );
    Ok(saga_id)
}
