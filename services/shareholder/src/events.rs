//! Domain events to the outbox: a `qapmap.messaging.v1.DomainEvent` envelope
//! written in the caller's transaction, so it exists if and only if the change
//! it announces committed. Partitioned by aggregate id, so one stakeholder's
//! events are published in order.

use chrono::{NaiveDate, Utc};
use qapmap_proto::messaging::v1::{DomainEvent, domain_event::Event};
use qapmap_runtime::messaging::Subjects;
use qapmap_runtime::outbox::{self, OutboxMessage};
use sqlx::PgConnection;
use uuid::Uuid;

/// The service name in event subjects.
const SERVICE: &str = "shareholder";

/// What an event is about.
#[derive(Debug, Clone, Copy)]
pub struct Aggregate {
    pub company_id: Uuid,
    /// `stakeholder` or `payment`.
    pub aggregate_type: &'static str,
    pub aggregate_id: Uuid,
    /// The aggregate's version after the change.
    pub version: i64,
}

/// Enqueues `event` on `<ns>.evt.shareholder.<event_name>`.
pub async fn enqueue(
    transaction: &mut PgConnection,
    subjects: &Subjects,
    aggregate: &Aggregate,
    effective_date: NaiveDate,
    event_name: &str,
    event: Event,
) -> sqlx::Result<()> {
    let now = Utc::now();
    let envelope = DomainEvent {
        event_id: qapmap_runtime::ids::new_id().to_string(),
        company_id: aggregate.company_id.to_string(),
        aggregate_type: aggregate.aggregate_type.to_owned(),
        aggregate_id: aggregate.aggregate_id.to_string(),
        aggregate_version: aggregate.version,
        effective_date: Some(qapmap_runtime::date::to_proto(effective_date)),
        recorded_at: Some(prost_types::Timestamp {
            seconds: now.timestamp(),
            nanos: i32::try_from(now.timestamp_subsec_nanos()).unwrap_or_default(),
        }),
        initiator: None,
        event: Some(event),
    };
    let message = OutboxMessage::protobuf(
        subjects.event(SERVICE, event_name),
        aggregate.aggregate_id.to_string(),
        Some(aggregate.company_id),
        &envelope,
    );
    outbox::enqueue(transaction, &message).await
}
