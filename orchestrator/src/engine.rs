//! Runs sagas: applies events to the state machine inside a transaction that
//! also writes the commands to send (outbox), so a transition and its
//! messages commit together or not at all. Several orchestrators can run at
//! once: every transition holds the saga's row lock.

use chrono::{DateTime, Timelike, Utc};
use qapmap_proto::messaging::v1::{self as messaging, ReplyOutcome, SagaCommand, SagaReply};
use qapmap_runtime::audit::{self, Actor};
use qapmap_runtime::messaging::Subjects;
use qapmap_runtime::outbox::OutboxMessage;
use qapmap_runtime::trace_context;
use sqlx::{PgConnection, PgPool};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use uuid::Uuid;

use std::collections::HashMap;
use std::sync::Arc;

use crate::metrics::SagaMetrics;

use crate::context::SagaContext;
use crate::definition::{SagaDefinition, Timing};
use crate::machine::{Event, Outcome, Refusal, Saga, Send};
use crate::store::{self, Initiator, NewSaga, StoreError, StoredSaga};

/// How many due sagas one timer pass handles.
const WAKE_BATCH: i64 = 64;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("saga {0} not found")]
    NotFound(Uuid),
    #[error("request_id {0:?} was already used for a different saga request")]
    RequestIdReused(String),
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// What the caller of a start learns.
#[derive(Debug)]
pub struct Started {
    pub saga: StoredSaga,
    /// False when the request id had already started this saga.
    pub created: bool,
}

/// A request to start a saga.
#[derive(Debug)]
pub struct StartRequest<'a> {
    pub company_id: Uuid,
    pub request_id: &'a str,
    /// The encoded start request, compared byte for byte on a repeat.
    pub request: Vec<u8>,
    /// The full gRPC method, for the audit trail.
    pub method: &'a str,
    pub initiator: Initiator,
    pub definition: &'static SagaDefinition,
    pub context: SagaContext,
}

#[derive(Debug, Clone)]
pub struct Engine {
    pub pool: PgPool,
    pub subjects: Subjects,
    pub timing: Timing,
    pub metrics: Arc<SagaMetrics>,
}

impl Engine {
    /// Starts a saga, or returns the one this request id already started.
    pub async fn start(&self, request: StartRequest<'_>) -> Result<Started, EngineError> {
        let mut transaction = self.pool.begin().await?;
        // Confines the transaction to the company (row-level security, as
        // `tenancy::confine` does) in the same round trip as the lock.
        sqlx::query(
            "SELECT set_config('role', 'qapmap_app', true),
                    set_config('qapmap.company_id', $1::text, true),
                    pg_advisory_xact_lock(hashtextextended($1::text || '/saga/' || $2, 0))",
        )
        .bind(request.company_id)
        .bind(request.request_id)
        .execute(&mut *transaction)
        .await?;
        if let Some((id, stored_request)) =
            store::find_by_request(&mut transaction, request.company_id, request.request_id).await?
        {
            if stored_request != request.request {
                return Err(EngineError::RequestIdReused(request.request_id.to_owned()));
            }
            let saga = store::load(&mut transaction, id, false)
                .await?
                .ok_or(EngineError::NotFound(id))?;
            // An employee repeating someone else's request (same id, same
            // bytes) must not get their saga: to them the id is taken.
            if let Some(own) = request.initiator.stakeholder_id
                && saga.initiator.stakeholder_id != Some(own)
            {
                return Err(EngineError::RequestIdReused(request.request_id.to_owned()));
            }
            return Ok(Started {
                saga,
                created: false,
            });
        }
        let now = stored_precision(Utc::now());
        let (mut saga, send) = Saga::start(request.definition, request.context, now, &self.timing);
        let trace = qapmap_runtime::trace_context::current();
        let new = NewSaga {
            id: Uuid::now_v7(),
            company_id: request.company_id,
            request_id: request.request_id,
            request: &request.request,
            initiator: &request.initiator,
            trace_id: &trace.trace_id,
            traceparent: &trace.traceparent,
        };
        let envelope = SagaHeader {
            id: new.id,
            company_id: new.company_id,
            request_id: new.request_id,
            initiator: new.initiator,
            traceparent: new.traceparent,
        };
        let command = self.command(&envelope, &mut saga, send, now);
        store::insert(&mut transaction, &new, &saga, command.as_ref(), now).await?;
        // Last, so the record names the first command's message id.
        let actor = Actor {
            subject: request.initiator.subject.clone(),
            roles: request.initiator.roles.clone(),
        };
        audit::record(
            &mut transaction,
            request.company_id,
            &actor,
            request.method,
            request.request_id,
        )
        .await?;
        // What was just written; reading it back would cost a round trip.
        let saga = StoredSaga {
            id: new.id,
            company_id: new.company_id,
            request_id: new.request_id.to_owned(),
            initiator: request.initiator.clone(),
            trace_id: trace.trace_id.clone(),
            traceparent: trace.traceparent.clone(),
            created_at: now,
            updated_at: now,
            saga,
        };
        transaction.commit().await?;
        self.metrics.record_started(&saga.saga);
        Ok(Started {
            saga,
            created: true,
        })
    }

    /// Applies a service's reply, in the caller's (the consumer's) transaction.
    pub async fn handle_reply(
        &self,
        connection: &mut PgConnection,
        reply: &SagaReply,
    ) -> Result<(), EngineError> {
        let Some(reply) = ReplyEvent::of(reply) else {
            return Ok(());
        };
        match self
            .transition(connection, reply.saga_id, reply.event())
            .await
        {
            Ok(_) | Err(EngineError::NotFound(_)) => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Applies a batch of replies, in stream order, as [`Engine::handle_reply`]
    /// would one by one, in three statements whatever their number: the
    /// sagas are loaded (locked) at once, each reply is applied in memory
    /// (under its span), and every changed saga and command is written at
    /// once. Any error leaves the caller to undo the batch.
    pub async fn handle_replies(
        &self,
        connection: &mut PgConnection,
        replies: &[(SagaReply, tracing::Span)],
    ) -> Result<(), EngineError> {
        let events: Vec<(ReplyEvent<'_>, &tracing::Span)> = replies
            .iter()
            .filter_map(|(reply, span)| ReplyEvent::of(reply).map(|event| (event, span)))
            .collect();
        let mut ids: Vec<Uuid> = events.iter().map(|(event, _)| event.saga_id).collect();
        ids.sort_unstable();
        ids.dedup();
        // Each saga as loaded (what `save` compares against) and as it goes.
        let mut sagas: HashMap<Uuid, (Saga, StoredSaga)> = store::load_many(connection, &ids)
            .await?
            .into_iter()
            .map(|stored| (stored.id, (stored.saga.clone(), stored)))
            .collect();
        let now = Utc::now();
        let mut commands = Vec::new();
        let mut transitions = Vec::with_capacity(events.len());
        for (event, span) in &events {
            // A reply for a saga that does not exist is ignored, as one by one.
            let Some((_, stored)) = sagas.get_mut(&event.saga_id) else {
                continue;
            };
            let before = stored.saga.clone();
            let command = span.in_scope(|| self.apply(stored, event.event(), now))?;
            commands.extend(command);
            transitions.push((before, stored.saga.clone()));
        }
        let changes: Vec<(Uuid, &Saga, &Saga)> = sagas
            .values()
            .map(|(loaded, stored)| (stored.id, loaded, &stored.saga))
            .collect();
        let commands: Vec<&OutboxMessage> = commands.iter().collect();
        store::save_many(connection, &changes, &commands, now).await?;
        for (before, after) in &transitions {
            self.metrics.record_transition(before, after, now);
        }
        Ok(())
    }

    /// Wakes sagas whose timer look has come: those whose deadline or retry
    /// time has come act, the others only move their next look up to it.
    /// Returns how many were woken.
    pub async fn wake_due(&self) -> Result<usize, EngineError> {
        let mut transaction = self.pool.begin().await?;
        let due = store::lock_due(&mut transaction, Utc::now(), WAKE_BATCH).await?;
        if due.is_empty() {
            // Ends by rollback (drop): a pass that finds nothing, ten times a
            // second, commits nothing.
            return Ok(0);
        }
        for id in &due {
            self.transition(&mut transaction, *id, Event::Woke).await?;
        }
        transaction.commit().await?;
        Ok(due.len())
    }

    /// An operator's abort or retry, confined to the company. `method` and
    /// `request_id` name the call in the audit trail (the saga id when the
    /// caller gave no request id).
    pub async fn operate(
        &self,
        company_id: Uuid,
        saga_id: Uuid,
        (method, request_id): (&str, &str),
        event: Event<'_>,
    ) -> Result<StoredSaga, EngineError> {
        let mut transaction = qapmap_runtime::tenancy::begin(&self.pool, company_id).await?;
        let stored = store::load(&mut transaction, saga_id, true).await?;
        if stored.is_none_or(|stored| stored.company_id != company_id) {
            return Err(EngineError::NotFound(saga_id));
        }
        self.transition(&mut transaction, saga_id, event).await?;
        let actor = Actor::current_or_system();
        let saga_key = saga_id.to_string();
        let request_id = if request_id.is_empty() {
            saga_key.as_str()
        } else {
            request_id
        };
        audit::record(&mut transaction, company_id, &actor, method, request_id).await?;
        let saga = store::load(&mut transaction, saga_id, false)
            .await?
            .ok_or(EngineError::NotFound(saga_id))?;
        transaction.commit().await?;
        Ok(saga)
    }

    /// Loads (locking), applies `event`, sends what it asks, saves.
    async fn transition(
        &self,
        connection: &mut PgConnection,
        saga_id: Uuid,
        event: Event<'_>,
    ) -> Result<(), EngineError> {
        let mut stored = store::load(connection, saga_id, true)
            .await?
            .ok_or(EngineError::NotFound(saga_id))?;
        let now = Utc::now();
        let before = stored.saga.clone();
        let command = self.apply(&mut stored, event, now)?;
        store::save(
            connection,
            saga_id,
            (&before, &stored.saga),
            command.as_ref(),
            now,
        )
        .await?;
        // Counted before the caller commits: a rollback may over-count by one
        // transition, which a counter used for rates tolerates.
        self.metrics.record_transition(&before, &stored.saga, now);
        Ok(())
    }

    /// Applies `event` to a loaded saga; the command it sends, if any.
    fn apply(
        &self,
        stored: &mut StoredSaga,
        event: Event<'_>,
        now: DateTime<Utc>,
    ) -> Result<Option<OutboxMessage>, Refusal> {
        let send = stored.saga.apply(event, now, &self.timing)?;
        Ok(send.and_then(|send| {
            let header = SagaHeader {
                id: stored.id,
                company_id: stored.company_id,
                request_id: &stored.request_id,
                initiator: &stored.initiator,
                traceparent: &stored.traceparent,
            };
            self.command(&header, &mut stored.saga, send, now)
        }))
    }

    /// The outbox message carrying the command for `send` (the store writes
    /// it with the saga); parks the saga instead if the command cannot be
    /// built (a step returned less than the next needs).
    fn command(
        &self,
        header: &SagaHeader<'_>,
        saga: &mut Saga,
        send: Send,
        now: DateTime<Utc>,
    ) -> Option<OutboxMessage> {
        let Some(view) = saga.definition.step(send.step) else {
            saga.park(format!("step {} does not exist", send.step));
            return None;
        };
        let action = if send.compensation {
            view.compensation
        } else {
            Some(view.info.action)
        };
        let Some(action) = action else {
            saga.park(format!("step {} has no compensation", view.info.name));
            return None;
        };
        let command = match (action.build)(&saga.context) {
            Ok(command) => command,
            Err(error) => {
                saga.park(format!("cannot build {}: {error}", action.command));
                return None;
            }
        };
        let deadline = saga.due_at.unwrap_or(now);
        let envelope = SagaCommand {
            saga_id: header.id.to_string(),
            saga_type: saga.definition.saga_type.to_owned(),
            step: i32::try_from(send.step).unwrap_or(i32::MAX),
            compensation: send.compensation,
            company_id: header.company_id.to_string(),
            initiator: Some(messaging::Initiator {
                subject: header.initiator.subject.clone(),
                request_id: header.request_id.to_owned(),
                roles: header.initiator.role_list(),
                stakeholder_id: header
                    .initiator
                    .stakeholder_id
                    .map(|id| id.to_string())
                    .unwrap_or_default(),
            }),
            deadline: Some(prost_types::Timestamp {
                seconds: deadline.timestamp(),
                nanos: i32::try_from(deadline.timestamp_subsec_nanos()).unwrap_or(0),
            }),
            command: Some(command),
        };
        let subject = self.subjects.command(view.info.service, action.command);
        let mut message = OutboxMessage::protobuf(
            subject,
            header.id.to_string(),
            Some(header.company_id),
            &envelope,
        );
        // The step's span hangs under the saga's root span (stored on its row,
        // so a restarted orchestrator continues the same trace); the command
        // carries the step span, so the service's work hangs under the step.
        let step_span = step_span(header, saga.definition.saga_type, view.info.name, send);
        if let Some(traceparent) = trace_context::traceparent_of(&step_span) {
            message = message.with_header("traceparent", traceparent);
        }
        Some(message)
    }
}

/// A reply as the state machine's event for its saga.
#[derive(Debug)]
struct ReplyEvent<'a> {
    saga_id: Uuid,
    step: usize,
    compensation: bool,
    result: Option<&'a messaging::saga_reply::Result>,
    succeeded: bool,
    /// The reason code, then the words (operators and tests read the code
    /// first).
    rejection: String,
}

impl<'a> ReplyEvent<'a> {
    /// None for a reply naming a malformed saga id or step (ignored).
    fn of(reply: &'a SagaReply) -> Option<Self> {
        let Ok(saga_id) = Uuid::parse_str(&reply.saga_id) else {
            tracing::warn!(saga.id = %reply.saga_id, "reply for a malformed saga id; ignored");
            return None;
        };
        let step = usize::try_from(reply.step).ok()?;
        let rejection = match (reply.reason_code.is_empty(), reply.reason.is_empty()) {
            (false, false) => format!("{}: {}", reply.reason_code, reply.reason),
            (false, true) => reply.reason_code.clone(),
            _ => reply.reason.clone(),
        };
        Some(Self {
            saga_id,
            step,
            compensation: reply.compensation,
            result: reply.result.as_ref(),
            succeeded: ReplyOutcome::try_from(reply.outcome) == Ok(ReplyOutcome::Succeeded),
            rejection,
        })
    }

    fn event(&self) -> Event<'_> {
        let outcome = if self.succeeded {
            Outcome::Succeeded(self.result)
        } else {
            Outcome::Rejected {
                reason: &self.rejection,
            }
        };
        Event::Replied {
            step: self.step,
            compensation: self.compensation,
            outcome,
        }
    }
}

/// `time` as Postgres stores it (microseconds), so what `start` returns
/// equals what a later read returns.
fn stored_precision(time: DateTime<Utc>) -> DateTime<Utc> {
    time.with_nanosecond(time.timestamp_subsec_micros() * 1_000)
        .unwrap_or(time)
}

/// A span for sending one step's command (or its compensation).
fn step_span(
    header: &SagaHeader<'_>,
    saga_type: &str,
    step_name: &str,
    send: Send,
) -> tracing::Span {
    let operation = if send.compensation {
        "compensate"
    } else {
        "step"
    };
    let span = tracing::info_span!(
        "saga.step",
        otel.name = %format!("{saga_type} {operation} {step_name}"),
        saga.id = %header.id,
        "saga.type" = saga_type,
        saga.step = send.step,
        saga.step.name = step_name,
        saga.compensation = send.compensation,
        company.id = %header.company_id,
    );
    if !header.traceparent.is_empty() {
        let _ = span.set_parent(trace_context::parent_from_traceparent(header.traceparent));
    }
    span
}

/// What every command of one saga carries.
#[derive(Debug)]
struct SagaHeader<'a> {
    id: Uuid,
    company_id: Uuid,
    /// The request id the saga was started with.
    request_id: &'a str,
    initiator: &'a Initiator,
    traceparent: &'a str,
}
