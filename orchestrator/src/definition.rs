//! Typed saga definitions.
//!
//! A definition is its compensatable steps, then exactly one pivot, then its
//! retriable steps. The shape is the guarantee: a compensatable step can only
//! be placed before the pivot, and a pivot or retriable step has no field to
//! hold a compensation, so an ill-formed saga does not compile.

use std::time::Duration;

use qapmap_proto::messaging::v1::saga_command::Command;
use qapmap_proto::messaging::v1::saga_reply::Result as ReplyResult;

use crate::context::{ContextError, SagaContext};

/// Builds a step's command from what the saga knows so far.
pub type BuildCommand = fn(&SagaContext) -> Result<Command, ContextError>;
/// Records a step's result in the saga's context.
pub type AbsorbResult = fn(&mut SagaContext, Option<&ReplyResult>);

/// One command sent to one service.
#[derive(Debug, Clone, Copy)]
pub struct Action {
    /// The subject's last token: `qapmap.cmd.<service>.<command>`.
    pub command: &'static str,
    pub build: BuildCommand,
}

/// Where a step runs and what it is called.
#[derive(Debug, Clone, Copy)]
pub struct StepInfo {
    pub name: &'static str,
    pub service: &'static str,
    pub action: Action,
    pub absorb: AbsorbResult,
}

/// Undone by its compensation when a later step before the pivot fails.
#[derive(Debug, Clone, Copy)]
pub struct CompensatableStep {
    pub info: StepInfo,
    pub compensation: Action,
}

/// The point of no return: once it succeeds, the saga only moves forward.
#[derive(Debug, Clone, Copy)]
pub struct PivotStep {
    pub info: StepInfo,
}

/// After the pivot: retried until it succeeds, never compensated.
#[derive(Debug, Clone, Copy)]
pub struct RetriableStep {
    pub info: StepInfo,
}

/// What kind a step is, for the step log and the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    Compensatable,
    Pivot,
    Retriable,
}

impl StepKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Compensatable => "compensatable",
            Self::Pivot => "pivot",
            Self::Retriable => "retriable",
        }
    }
}

/// A saga type: its steps in order, and the deadline each action gets.
#[derive(Debug)]
pub struct SagaDefinition {
    /// `option_exercise` or `share_buyback`; also the reply subject's token.
    pub saga_type: &'static str,
    pub compensatable: &'static [CompensatableStep],
    pub pivot: PivotStep,
    pub retriable: &'static [RetriableStep],
}

/// A step seen through its position in the saga.
#[derive(Debug, Clone, Copy)]
pub struct StepView {
    pub index: usize,
    pub kind: StepKind,
    pub info: StepInfo,
    pub compensation: Option<Action>,
}

impl SagaDefinition {
    pub fn step_count(&self) -> usize {
        self.compensatable.len() + 1 + self.retriable.len()
    }

    /// The pivot's index: steps before it compensate, steps after it retry.
    pub fn pivot_index(&self) -> usize {
        self.compensatable.len()
    }

    pub fn step(&self, index: usize) -> Option<StepView> {
        let pivot = self.pivot_index();
        if index < pivot {
            let step = &self.compensatable[index];
            return Some(StepView {
                index,
                kind: StepKind::Compensatable,
                info: step.info,
                compensation: Some(step.compensation),
            });
        }
        if index == pivot {
            return Some(StepView {
                index,
                kind: StepKind::Pivot,
                info: self.pivot.info,
                compensation: None,
            });
        }
        self.retriable.get(index - pivot - 1).map(|step| StepView {
            index,
            kind: StepKind::Retriable,
            info: step.info,
            compensation: None,
        })
    }

    pub fn steps(&self) -> impl Iterator<Item = StepView> + '_ {
        (0..self.step_count()).filter_map(|index| self.step(index))
    }
}

/// Timing of actions: deadlines and retry backoff.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// How long a step or compensation may take before it counts as timed out.
    pub step_deadline: Duration,
    /// First retry delay; doubles per attempt, with jitter.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Attempts at the pivot (its outcome unknown) before the saga parks.
    pub max_pivot_attempts: u32,
    /// Attempts at one compensation before the saga parks.
    pub max_compensation_attempts: u32,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            step_deadline: Duration::from_secs(10),
            backoff_base: Duration::from_millis(200),
            backoff_max: Duration::from_secs(30),
            max_pivot_attempts: 20,
            max_compensation_attempts: 20,
        }
    }
}

impl Timing {
    /// Exponential backoff with full jitter in [delay/2, delay].
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(16);
        let delay = self
            .backoff_base
            .saturating_mul(1 << exponent)
            .min(self.backoff_max);
        let half = delay / 2;
        let jitter_ms = rand::random_range(0..=half.as_millis().max(1) as u64);
        half + Duration::from_millis(jitter_ms)
    }
}
