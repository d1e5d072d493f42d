//! Feeds the equity service's domain events to the options projection
//! ([`crate::apply_equity_event`]) in the consumer's transaction. The
//! projection is idempotent by event id, so an event re-published under a
//! new message id still counts once. Each event is applied in a
//! transaction confined to its company (row-level security).

use std::time::Duration;

use prost::Message;
use qapmap_proto::messaging::v1::DomainEvent;
use qapmap_runtime::consumer::{
    ConsumerConfig, Handled, HandlerError, MessageHandler, ReceivedMessage,
};
use qapmap_runtime::ids;
use qapmap_runtime::messaging::{StreamKind, Subjects};
use sqlx::PgConnection;
use tracing::Instrument;
use uuid::Uuid;

use crate::equity_projection::{self, ProjectionError};

/// The durable consumer's name.
pub const CONSUMER_NAME: &str = "ledger-equity-events";
/// How long a batch of events waits for more before it is applied: no saga
/// step waits for the projection, so during a run of sagas their
/// `options_exercised` events share a commit instead of taking one each.
/// The cap table's option columns trail equity by about this much more.
pub const LINGER: Duration = Duration::from_millis(250);

/// Every equity event: [`EquityEventHandler::ignores`] acknowledges those
/// the projection does not use without a transaction (NATS 2.9 filters a
/// consumer on one subject only, so the server cannot drop them).
pub fn config(subjects: &Subjects) -> ConsumerConfig {
    ConsumerConfig::new(
        CONSUMER_NAME,
        StreamKind::Events,
        format!("{}.evt.equity.>", subjects.namespace()),
    )
    .with_linger(LINGER)
}

#[derive(Debug, Clone, Default)]
pub struct EquityEventHandler;

impl MessageHandler for EquityEventHandler {
    /// Told by the event's kind ([`equity_projection::projects`]); an
    /// undecodable payload is not ignored, so it reaches the dead letters.
    fn ignores(&self, message: &ReceivedMessage) -> bool {
        DomainEvent::decode(message.payload.as_ref())
            .is_ok_and(|event| !equity_projection::projects(event.event.as_ref()))
    }

    /// The event's company, confined in the inbox's round trip.
    fn confinement(&self, message: &ReceivedMessage) -> Option<Uuid> {
        let event = DomainEvent::decode(message.payload.as_ref()).ok()?;
        Uuid::try_parse(&event.company_id).ok()
    }

    async fn handle(
        &self,
        message: &ReceivedMessage,
        transaction: &mut PgConnection,
    ) -> Result<Handled, HandlerError> {
        let event = DomainEvent::decode(message.payload.as_ref())
            .map_err(|error| HandlerError::Poison(anyhow::anyhow!("not a DomainEvent: {error}")))?;
        let span = tracing::info_span!(
            "ledger.equity_event",
            event.id = %event.event_id,
            company.id = %event.company_id,
        );
        apply(message, transaction, &event).instrument(span).await
    }
}

async fn apply(
    message: &ReceivedMessage,
    transaction: &mut PgConnection,
    event: &DomainEvent,
) -> Result<Handled, HandlerError> {
    let company_id = ids::parse("company_id", &event.company_id)
        .map_err(|error| HandlerError::Poison(anyhow::anyhow!("{error}")))?;
    message
        .confine(transaction, company_id)
        .await
        .map_err(|error| HandlerError::Retry(error.into()))?;
    match equity_projection::apply_equity_event(transaction, event).await {
        Ok(_) => Ok(Handled::Done),
        // Events of one plan may arrive out of order (a redelivered message
        // bends stream order): retry until the plan's creation has landed,
        // letting the company's later events (the plan among them) go on.
        // Safe, because every event lands as a movement whose sum does not
        // depend on the order (`equity_projection::apply_equity_event`).
        Err(error @ ProjectionError::UnknownPlan(_)) => Err(HandlerError::Early(error.into())),
        Err(ProjectionError::Database(error)) => Err(HandlerError::Retry(error.into())),
        Err(error @ ProjectionError::Invalid { .. }) => Err(HandlerError::Poison(error.into())),
    }
}
