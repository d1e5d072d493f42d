//! Appending a state change to its aggregate's event log and to the outbox,
//! in the caller's transaction: the event exists if and only if the change
//! committed. The DomainEvent envelope is what the relay later publishes.

use chrono::NaiveDate;
use qapmap_proto::messaging::v1::{DomainEvent, Initiator, domain_event::Event};
use qapmap_runtime::date;
use qapmap_runtime::messaging::Subjects;
use qapmap_runtime::outbox::{self, OutboxMessage};
use sqlx::PgConnection;
use uuid::Uuid;

/// The service name in event subjects (`<ns>.evt.equity.<event>`).
const SERVICE: &str = "equity";

/// Which aggregate changed, to which version, and on what date.
#[derive(Debug, Clone)]
pub struct EventContext {
    pub company_id: Uuid,
    pub aggregate_type: &'static str,
    pub aggregate_id: Uuid,
    pub aggregate_version: i64,
    pub effective_date: NaiveDate,
    /// The request or saga step that caused it.
    pub cause: String,
}

/// The snake_case subject token of an event.
fn event_name(event: &Event) -> &'static str {
    match event {
        Event::ShareClassCreated(_) => "share_class_created",
        Event::AuthorizedSharesAdjusted(_) => "authorized_shares_adjusted",
        Event::EquityPlanCreated(_) => "equity_plan_created",
        Event::PoolAdjusted(_) => "pool_adjusted",
        Event::AwardGranted(_) => "award_granted",
        Event::AwardQuantityCancelled(_) => "award_quantity_cancelled",
        Event::OptionsExercised(_) => "options_exercised",
        Event::SharesRepurchased(_) => "shares_repurchased",
        Event::AwardTerminated(_) => "award_terminated",
        Event::VestingEventRecorded(_) => "vesting_event_recorded",
        Event::VestingAccelerated(_) => "vesting_accelerated",
        Event::RepurchaseProgramCreated(_) => "repurchase_program_created",
        Event::OptionsReserved(_) => "options_reserved",
        Event::OptionReservationReleased(_) => "option_reservation_released",
        Event::RepurchaseCapacityReserved(_) => "repurchase_capacity_reserved",
        Event::RepurchaseReservationReleased(_) => "repurchase_reservation_released",
        // Events of other services never come from here.
        _ => "unknown",
    }
}

/// Appends `event` at `context.aggregate_version` and enqueues it. A second
/// writer of the same version fails on the primary key.
pub async fn record(
    connection: &mut PgConnection,
    subjects: &Subjects,
    context: &EventContext,
    event: Event,
) -> sqlx::Result<()> {
    let name = event_name(&event);
    let event_id = Uuid::now_v7();
    let envelope = DomainEvent {
        event_id: event_id.to_string(),
        company_id: context.company_id.to_string(),
        aggregate_type: context.aggregate_type.to_owned(),
        aggregate_id: context.aggregate_id.to_string(),
        aggregate_version: context.aggregate_version,
        effective_date: Some(date::to_proto(context.effective_date)),
        recorded_at: Some(crate::convert::timestamp(chrono::Utc::now())),
        initiator: Some(Initiator {
            subject: String::new(),
            request_id: context.cause.clone(),
            ..Initiator::default()
        }),
        event: Some(event),
    };
    let mut message = OutboxMessage::protobuf(
        subjects.event(SERVICE, name),
        context.aggregate_id.to_string(),
        Some(context.company_id),
        &envelope,
    );
    // The outbox message id is the event id, so consumers can deduplicate on either.
    message.message_id = event_id;
    // The event and its message in one statement: the event id is the
    // message's ($1), the stored payload is the message's ($4).
    outbox::enqueue_with(
        connection,
        &message,
        "event AS (
             INSERT INTO equity_events (company_id, aggregate_type, aggregate_id,
                                        aggregate_version, event_id, event_type, effective_date,
                                        payload)
             VALUES ($7, $8, $9, $10, $1, $11, $12, $4)
         )",
        |query| {
            query
                .bind(context.company_id)
                .bind(context.aggregate_type)
                .bind(context.aggregate_id)
                .bind(context.aggregate_version)
                .bind(name)
                .bind(context.effective_date)
        },
    )
    .await
}
