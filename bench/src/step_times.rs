//! Where a saga's latency goes: each step's time, from its command being
//! sent (`started_at`, stamped in the transaction that enqueues it) to its
//! reply being applied (`finished_at`), as the orchestrator recorded them.
//! The rest of a saga's latency is before its first step (the start call)
//! and after its last (none: the last reply ends the saga). Printed for the
//! open loop: per step over all sagas, and for the slowest 1%, so a tail
//! can be told from a step that is slow every time.

use std::time::{Duration, SystemTime};

use qapmap_proto::saga::v1 as saga;

use crate::sagas::Phase;
use crate::stats::{Latencies, ms};

/// One step's time in one saga.
#[derive(Debug, Clone)]
pub(crate) struct StepTime {
    pub(crate) name: String,
    pub(crate) took: Duration,
}

/// The times of the steps that ran forward (a compensated step's second
/// leg is not told apart, so a saga with compensations is left out by the
/// caller, which only reads completed sagas).
pub(crate) fn of(saga: &saga::Saga) -> Vec<StepTime> {
    saga.steps
        .iter()
        .filter_map(|step| {
            let started = crate::sagas::wall(step.started_at.as_ref())?;
            let finished = crate::sagas::wall(step.finished_at.as_ref())?;
            Some(StepTime {
                name: step.name.clone(),
                took: finished.duration_since(started).unwrap_or_default(),
            })
        })
        .collect()
}

/// The breakdown's lines for a phase's completed sagas.
pub(crate) fn lines(phase: &Phase) -> Vec<String> {
    let sagas: Vec<Timed<'_>> = phase
        .completed_with_steps()
        .map(|(start, end, steps)| (end.duration_since(start).unwrap_or_default(), steps))
        .collect();
    let Some((_, first)) = sagas.first() else {
        return Vec::new();
    };
    let names: Vec<&str> = first.iter().map(|step| step.name.as_str()).collect();
    let mut lines = vec![format!(
        "  step times (command sent -> reply applied, as the orchestrator stamped them), {} sagas:",
        sagas.len()
    )];
    for (index, name) in names.iter().enumerate() {
        let mut took = Latencies::default();
        for (_, steps) in &sagas {
            if let Some(step) = steps.get(index) {
                took.record(step.took);
            }
        }
        lines.push(format!("    {index} {name:<12} {}", took.summary().line()));
    }
    let mut totals = Latencies::default();
    sagas.iter().for_each(|(total, _)| totals.record(*total));
    let p99 = totals.summary().p99;
    let slowest: Vec<&Timed<'_>> = sagas.iter().filter(|(total, _)| *total >= p99).collect();
    let mean = |value: &dyn Fn(&Timed<'_>) -> Duration| {
        let sum: Duration = slowest.iter().map(|saga| value(saga)).sum();
        sum / u32::try_from(slowest.len().max(1)).unwrap_or(u32::MAX)
    };
    let mut parts: Vec<String> = names
        .iter()
        .enumerate()
        .map(|(index, name)| {
            let took = mean(&|(_, steps)| steps.get(index).map_or(Duration::ZERO, |s| s.took));
            format!("{name} {}", ms(took))
        })
        .collect();
    let outside =
        mean(&|(total, steps)| total.saturating_sub(steps.iter().map(|step| step.took).sum()));
    parts.push(format!("outside the steps {}", ms(outside)));
    lines.push(format!(
        "  the slowest 1% ({} sagas at or above p99 {}), mean: total {}; {}",
        slowest.len(),
        ms(p99),
        ms(mean(&|(total, _)| *total)),
        parts.join(", ")
    ));
    lines
}

/// A completed saga's latency and its steps' times.
type Timed<'a> = (Duration, &'a [StepTime]);

/// Start and end of a completed saga, for [`Phase::completed_with_steps`].
pub(crate) type Span<'a> = (SystemTime, SystemTime, &'a [StepTime]);
