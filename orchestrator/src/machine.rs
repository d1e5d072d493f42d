//! The saga state machine, pure: given a saga and what happened (a reply, a
//! deadline, an operator's call), it changes the saga and says which command
//! to send. Persistence and sending live in [`crate::engine`].

use chrono::{DateTime, Utc};
use qapmap_proto::messaging::v1::saga_reply::Result as ReplyResult;

use crate::context::SagaContext;
use crate::definition::{SagaDefinition, StepKind, Timing};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SagaState {
    Running,
    Compensating,
    Completed,
    Compensated,
    Parked,
}

impl SagaState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Compensating => "compensating",
            Self::Completed => "completed",
            Self::Compensated => "compensated",
            Self::Parked => "parked",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::Running,
            Self::Compensating,
            Self::Completed,
            Self::Compensated,
            Self::Parked,
        ]
        .into_iter()
        .find(|state| state.as_str() == text)
    }

    pub fn is_finished(self) -> bool {
        matches!(self, Self::Completed | Self::Compensated)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepStatus {
    Pending,
    Running,
    Succeeded,
    Failed,
    Compensating,
    Compensated,
    Skipped,
}

impl StepStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Compensating => "compensating",
            Self::Compensated => "compensated",
            Self::Skipped => "skipped",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::Pending,
            Self::Running,
            Self::Succeeded,
            Self::Failed,
            Self::Compensating,
            Self::Compensated,
            Self::Skipped,
        ]
        .into_iter()
        .find(|status| status.as_str() == text)
    }
}

/// What the current action waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Awaiting {
    /// A reply; `due_at` is its deadline.
    Reply,
    /// A retry, at `due_at`.
    Retry,
    /// Nothing: the saga finished or is parked.
    Nothing,
}

impl Awaiting {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reply => "reply",
            Self::Retry => "retry",
            Self::Nothing => "nothing",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Reply, Self::Retry, Self::Nothing]
            .into_iter()
            .find(|awaiting| awaiting.as_str() == text)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepRecord {
    pub status: StepStatus,
    pub attempts: u32,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub last_error: String,
}

impl StepRecord {
    fn pending() -> Self {
        Self {
            status: StepStatus::Pending,
            attempts: 0,
            started_at: None,
            finished_at: None,
            last_error: String::new(),
        }
    }
}

/// A saga in memory.
#[derive(Debug, Clone)]
pub struct Saga {
    pub definition: &'static SagaDefinition,
    pub state: SagaState,
    pub state_reason: String,
    pub context: SagaContext,
    /// The step being run (Running) or compensated (Compensating).
    pub cursor: usize,
    /// Attempts at the current action.
    pub attempts: u32,
    pub awaiting: Awaiting,
    /// When the current action is due: the reply's deadline or the
    /// retry's time; None when nothing is awaited.
    pub due_at: Option<DateTime<Utc>>,
    pub steps: Vec<StepRecord>,
}

/// Something that happened to a saga.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    Replied {
        step: usize,
        compensation: bool,
        outcome: Outcome<'a>,
    },
    /// The timer looked at the saga (its action may not be due yet).
    Woke,
    /// An operator aborts a saga that has not reached its pivot.
    Abort { reason: &'a str },
    /// An operator retries a parked saga.
    Retry,
}

#[derive(Debug, Clone, Copy)]
pub enum Outcome<'a> {
    Succeeded(Option<&'a ReplyResult>),
    Rejected { reason: &'a str },
}

/// A command to send: the action of `step`, or its compensation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Send {
    pub step: usize,
    pub compensation: bool,
}

/// An operator call that does not fit the saga's state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the saga has passed its pivot and can no longer be aborted")]
    PastPivot,
    #[error("the saga is {0}, not in a state this call applies to")]
    WrongState(&'static str),
}

impl Saga {
    /// A new saga, about to send its first step.
    pub fn start(
        definition: &'static SagaDefinition,
        context: SagaContext,
        now: DateTime<Utc>,
        timing: &Timing,
    ) -> (Self, Send) {
        let mut saga = Self {
            definition,
            state: SagaState::Running,
            state_reason: String::new(),
            context,
            cursor: 0,
            attempts: 0,
            awaiting: Awaiting::Nothing,
            due_at: None,
            steps: (0..definition.step_count())
                .map(|_| StepRecord::pending())
                .collect(),
        };
        let send = saga.send_step(0, now, timing);
        (saga, send)
    }

    fn kind(&self, step: usize) -> StepKind {
        self.definition
            .step(step)
            .map_or(StepKind::Retriable, |view| view.kind)
    }

    /// Applies `event`; returns the command to send, if any. Replies that do
    /// not match the action awaited (late duplicates) change nothing.
    pub fn apply(
        &mut self,
        event: Event<'_>,
        now: DateTime<Utc>,
        timing: &Timing,
    ) -> Result<Option<Send>, Refusal> {
        match event {
            Event::Replied {
                step,
                compensation,
                outcome,
            } => Ok(self.on_reply(step, compensation, outcome, now, timing)),
            Event::Woke => Ok(self.on_wake(now, timing)),
            Event::Abort { reason } => self.on_abort(reason, now, timing),
            Event::Retry => self.on_retry(now, timing),
        }
    }

    fn on_reply(
        &mut self,
        step: usize,
        compensation: bool,
        outcome: Outcome<'_>,
        now: DateTime<Utc>,
        timing: &Timing,
    ) -> Option<Send> {
        let expected_state = if compensation {
            SagaState::Compensating
        } else {
            SagaState::Running
        };
        if self.state != expected_state || self.cursor != step || self.awaiting != Awaiting::Reply {
            return None;
        }
        match (compensation, outcome) {
            (false, Outcome::Succeeded(result)) => self.step_succeeded(result, now, timing),
            (false, Outcome::Rejected { reason }) => self.step_rejected(reason, now, timing),
            (true, Outcome::Succeeded(_)) => self.compensation_succeeded(now, timing),
            (true, Outcome::Rejected { reason }) => self.compensation_rejected(reason, now, timing),
        }
    }

    fn step_succeeded(
        &mut self,
        result: Option<&ReplyResult>,
        now: DateTime<Utc>,
        timing: &Timing,
    ) -> Option<Send> {
        if let Some(view) = self.definition.step(self.cursor) {
            (view.info.absorb)(&mut self.context, result);
        }
        self.finish_step(StepStatus::Succeeded, "", now);
        let next = self.cursor + 1;
        if next < self.steps.len() {
            return Some(self.send_step(next, now, timing));
        }
        self.settle(SagaState::Completed, "");
        None
    }

    fn step_rejected(&mut self, reason: &str, now: DateTime<Utc>, timing: &Timing) -> Option<Send> {
        if self.kind(self.cursor) == StepKind::Retriable {
            // After the pivot nothing is undone: try again later.
            return self.schedule_retry(reason, now, timing);
        }
        self.finish_step(StepStatus::Failed, reason, now);
        self.state_reason = reason.to_owned();
        // A refused step wrote nothing: undo the steps before it.
        match self.cursor.checked_sub(1) {
            Some(previous) => Some(self.send_compensation(previous, now, timing)),
            None => {
                self.settle(SagaState::Compensated, reason);
                None
            }
        }
    }

    fn compensation_succeeded(&mut self, now: DateTime<Utc>, timing: &Timing) -> Option<Send> {
        let step = &mut self.steps[self.cursor];
        step.status = StepStatus::Compensated;
        step.finished_at = Some(now);
        match self.cursor.checked_sub(1) {
            Some(previous) => Some(self.send_compensation(previous, now, timing)),
            None => {
                let reason = self.state_reason.clone();
                self.settle(SagaState::Compensated, &reason);
                None
            }
        }
    }

    fn compensation_rejected(
        &mut self,
        reason: &str,
        now: DateTime<Utc>,
        timing: &Timing,
    ) -> Option<Send> {
        if self.attempts >= timing.max_compensation_attempts {
            self.park(format!(
                "compensation of step {} keeps failing: {reason}",
                self.cursor
            ));
            return None;
        }
        self.schedule_retry(reason, now, timing)
    }

    fn on_wake(&mut self, now: DateTime<Utc>, timing: &Timing) -> Option<Send> {
        if self.due_at.is_none_or(|due_at| due_at > now) {
            return None;
        }
        match (self.state, self.awaiting) {
            (SagaState::Running, Awaiting::Reply) => self.step_timed_out(now, timing),
            (SagaState::Running, Awaiting::Retry) => Some(self.resend(false, now, timing)),
            (SagaState::Compensating, Awaiting::Reply) => {
                self.compensation_rejected("deadline exceeded", now, timing)
            }
            (SagaState::Compensating, Awaiting::Retry) => Some(self.resend(true, now, timing)),
            _ => None,
        }
    }

    fn step_timed_out(&mut self, now: DateTime<Utc>, timing: &Timing) -> Option<Send> {
        match self.kind(self.cursor) {
            StepKind::Compensatable => {
                // Its command may still land: compensate it too.
                self.finish_step(StepStatus::Failed, "deadline exceeded", now);
                self.state_reason = format!(
                    "step {} missed its deadline",
                    self.definition
                        .step(self.cursor)
                        .map_or("?", |v| v.info.name)
                );
                Some(self.send_compensation(self.cursor, now, timing))
            }
            StepKind::Pivot if self.attempts >= timing.max_pivot_attempts => {
                self.steps[self.cursor].last_error = "deadline exceeded".to_owned();
                self.park(format!(
                    "no answer from the pivot after {} attempts; its outcome is unknown",
                    self.attempts
                ));
                None
            }
            // The pivot's outcome is unknown, and steps after it never undo:
            // ask again (commands are idempotent by saga id and step).
            StepKind::Pivot | StepKind::Retriable => {
                self.steps[self.cursor].last_error = "deadline exceeded".to_owned();
                Some(self.resend(false, now, timing))
            }
        }
    }

    fn on_abort(
        &mut self,
        reason: &str,
        now: DateTime<Utc>,
        timing: &Timing,
    ) -> Result<Option<Send>, Refusal> {
        if self.state != SagaState::Running {
            return Err(Refusal::WrongState(self.state.as_str()));
        }
        if self.cursor >= self.definition.pivot_index() {
            return Err(Refusal::PastPivot);
        }
        let reason = format!("aborted: {reason}");
        self.finish_step(StepStatus::Failed, &reason, now);
        self.state_reason = reason;
        // The aborted step's command may still land: compensate it too.
        Ok(Some(self.send_compensation(self.cursor, now, timing)))
    }

    fn on_retry(&mut self, now: DateTime<Utc>, timing: &Timing) -> Result<Option<Send>, Refusal> {
        if self.state != SagaState::Parked {
            return Err(Refusal::WrongState(self.state.as_str()));
        }
        let compensating = self.steps[self.cursor].status == StepStatus::Compensating;
        self.state = if compensating {
            SagaState::Compensating
        } else {
            SagaState::Running
        };
        self.attempts = 0;
        Ok(Some(self.resend(compensating, now, timing)))
    }

    fn send_step(&mut self, step: usize, now: DateTime<Utc>, timing: &Timing) -> Send {
        self.cursor = step;
        self.attempts = 0;
        let record = &mut self.steps[step];
        record.status = StepStatus::Running;
        record.started_at = Some(now);
        self.resend(false, now, timing)
    }

    fn send_compensation(&mut self, step: usize, now: DateTime<Utc>, timing: &Timing) -> Send {
        self.state = SagaState::Compensating;
        self.cursor = step;
        self.attempts = 0;
        self.steps[step].status = StepStatus::Compensating;
        self.resend(true, now, timing)
    }

    fn resend(&mut self, compensation: bool, now: DateTime<Utc>, timing: &Timing) -> Send {
        self.attempts += 1;
        if !compensation {
            self.steps[self.cursor].attempts += 1;
        }
        self.awaiting = Awaiting::Reply;
        self.due_at = Some(now + timing.step_deadline);
        Send {
            step: self.cursor,
            compensation,
        }
    }

    fn schedule_retry(
        &mut self,
        reason: &str,
        now: DateTime<Utc>,
        timing: &Timing,
    ) -> Option<Send> {
        self.steps[self.cursor].last_error = reason.to_owned();
        self.awaiting = Awaiting::Retry;
        self.due_at = Some(now + timing.backoff(self.attempts));
        None
    }

    fn finish_step(&mut self, status: StepStatus, error: &str, now: DateTime<Utc>) {
        let record = &mut self.steps[self.cursor];
        record.status = status;
        record.finished_at = Some(now);
        if !error.is_empty() {
            record.last_error = error.to_owned();
        }
    }

    fn settle(&mut self, state: SagaState, reason: &str) {
        self.state = state;
        self.state_reason = reason.to_owned();
        self.awaiting = Awaiting::Nothing;
        self.due_at = None;
        if state == SagaState::Compensated {
            for step in &mut self.steps {
                if step.status == StepStatus::Pending {
                    step.status = StepStatus::Skipped;
                }
            }
        }
    }

    /// Stops and waits for an operator. Exposed so the engine can park a saga
    /// whose command cannot be built.
    pub fn park(&mut self, reason: String) {
        self.state = SagaState::Parked;
        self.state_reason = reason;
        self.awaiting = Awaiting::Nothing;
        self.due_at = None;
    }
}

#[cfg(test)]
mod tests {
    use chrono::{Duration as ChronoDuration, NaiveDate};
    use qapmap_proto::ledger::v1::HoldResult;
    use rust_decimal::Decimal;

    use super::*;
    use crate::context::SagaInput;
    use crate::sagas::EXERCISE;

    fn timing() -> Timing {
        Timing {
            max_compensation_attempts: 3,
            max_pivot_attempts: 3,
            ..Timing::default()
        }
    }

    fn exercise() -> (Saga, Send) {
        let context = SagaContext::new(SagaInput::Exercise {
            award_id: uuid::Uuid::nil(),
            quantity: Decimal::from(100),
            exercise_date: NaiveDate::from_ymd_opt(2026, 1, 1).expect("date"),
        });
        Saga::start(&EXERCISE, context, Utc::now(), &timing())
    }

    fn succeed(saga: &mut Saga, step: usize) -> Option<Send> {
        let event = Event::Replied {
            step,
            compensation: false,
            outcome: Outcome::Succeeded(None),
        };
        saga.apply(event, Utc::now(), &timing()).expect("applies")
    }

    fn reply(
        saga: &mut Saga,
        step: usize,
        compensation: bool,
        outcome: Outcome<'_>,
    ) -> Option<Send> {
        let event = Event::Replied {
            step,
            compensation,
            outcome,
        };
        saga.apply(event, Utc::now(), &timing()).expect("applies")
    }

    fn statuses(saga: &Saga) -> Vec<StepStatus> {
        saga.steps.iter().map(|step| step.status).collect()
    }

    #[test]
    fn a_saga_whose_steps_all_succeed_completes_in_order() {
        let (mut saga, first) = exercise();
        assert_eq!(
            first,
            Send {
                step: 0,
                compensation: false
            }
        );
        for step in 0..4 {
            assert_eq!(
                succeed(&mut saga, step),
                Some(Send {
                    step: step + 1,
                    compensation: false
                })
            );
        }
        assert_eq!(succeed(&mut saga, 4), None);
        assert_eq!(saga.state, SagaState::Completed);
        assert!(
            statuses(&saga)
                .iter()
                .all(|status| *status == StepStatus::Succeeded)
        );
        assert_eq!(saga.due_at, None);
    }

    #[test]
    fn a_declined_payment_compensates_earlier_steps_in_reverse_order() {
        let (mut saga, _) = exercise();
        succeed(&mut saga, 0);
        succeed(&mut saga, 1);
        let declined = Outcome::Rejected {
            reason: "payment_declined",
        };
        assert_eq!(
            reply(&mut saga, 2, false, declined),
            Some(Send {
                step: 1,
                compensation: true
            })
        );
        assert_eq!(saga.state, SagaState::Compensating);
        let done = Outcome::Succeeded(None);
        assert_eq!(
            reply(&mut saga, 1, true, done),
            Some(Send {
                step: 0,
                compensation: true
            })
        );
        assert_eq!(reply(&mut saga, 0, true, done), None);
        assert_eq!(saga.state, SagaState::Compensated);
        assert_eq!(saga.state_reason, "payment_declined");
        assert_eq!(
            statuses(&saga),
            [
                StepStatus::Compensated,
                StepStatus::Compensated,
                StepStatus::Failed,
                StepStatus::Skipped,
                StepStatus::Skipped
            ]
        );
    }

    #[test]
    fn a_refused_first_step_compensates_nothing() {
        let (mut saga, _) = exercise();
        let refused = Outcome::Rejected {
            reason: "insufficient_vested_options",
        };
        assert_eq!(reply(&mut saga, 0, false, refused), None);
        assert_eq!(saga.state, SagaState::Compensated);
    }

    #[test]
    fn a_compensatable_step_past_its_deadline_is_itself_compensated() {
        let (mut saga, _) = exercise();
        succeed(&mut saga, 0);
        let later = Utc::now() + ChronoDuration::hours(1);
        let send = saga.apply(Event::Woke, later, &timing()).expect("applies");
        assert_eq!(
            send,
            Some(Send {
                step: 1,
                compensation: true
            })
        );
        assert_eq!(saga.steps[1].last_error, "deadline exceeded");
    }

    #[test]
    fn steps_after_the_pivot_are_retried_never_compensated() {
        let (mut saga, _) = exercise();
        for step in 0..3 {
            succeed(&mut saga, step);
        }
        let refused = Outcome::Rejected {
            reason: "database busy",
        };
        assert_eq!(reply(&mut saga, 3, false, refused), None);
        assert_eq!(saga.awaiting, Awaiting::Retry);
        let later = Utc::now() + ChronoDuration::hours(1);
        assert_eq!(
            saga.apply(Event::Woke, later, &timing()).expect("applies"),
            Some(Send {
                step: 3,
                compensation: false
            })
        );
        assert_eq!(saga.state, SagaState::Running);
        assert_eq!(saga.steps[3].attempts, 2);
    }

    #[test]
    fn a_compensation_that_keeps_failing_parks_the_saga_and_retry_resumes_it() {
        let (mut saga, _) = exercise();
        succeed(&mut saga, 0);
        reply(
            &mut saga,
            1,
            false,
            Outcome::Rejected {
                reason: "no shares",
            },
        );
        let failing = Outcome::Rejected {
            reason: "equity down",
        };
        for _ in 0..3 {
            reply(&mut saga, 0, true, failing);
            let later = Utc::now() + ChronoDuration::hours(1);
            saga.apply(Event::Woke, later, &timing()).expect("applies");
        }
        assert_eq!(saga.state, SagaState::Parked, "{}", saga.state_reason);
        let resumed = saga
            .apply(Event::Retry, Utc::now(), &timing())
            .expect("retry");
        assert_eq!(
            resumed,
            Some(Send {
                step: 0,
                compensation: true
            })
        );
        assert_eq!(saga.state, SagaState::Compensating);
    }

    #[test]
    fn abort_is_refused_once_the_pivot_is_under_way() {
        let (mut saga, _) = exercise();
        succeed(&mut saga, 0);
        succeed(&mut saga, 1);
        let refused = saga.apply(Event::Abort { reason: "x" }, Utc::now(), &timing());
        assert_eq!(refused, Err(Refusal::PastPivot));
    }

    #[test]
    fn late_duplicate_replies_change_nothing() {
        let (mut saga, _) = exercise();
        let hold = ReplyResult::Hold(HoldResult {
            hold_id: "h1".into(),
        });
        succeed(&mut saga, 0);
        reply(&mut saga, 1, false, Outcome::Succeeded(Some(&hold)));
        let before = saga.clone();
        assert_eq!(succeed(&mut saga, 0), None);
        assert_eq!(reply(&mut saga, 1, false, Outcome::Succeeded(None)), None);
        assert_eq!(saga.cursor, before.cursor);
        assert_eq!(saga.context.hold_id.as_deref(), Some("h1"));
    }
}
