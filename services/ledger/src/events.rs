//! The ledger's domain events, written to the outbox in the posting's
//! transaction so they exist exactly when the entry does.

use qapmap_proto::ledger::v1 as ledger;
use qapmap_proto::messaging::v1::{DomainEvent, domain_event};
use qapmap_runtime::date;
use qapmap_runtime::messaging::Subjects;
use qapmap_runtime::outbox::{self, OutboxMessage};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::convert;
use crate::journal::PostedEntry;

/// The event name in `qapmap.evt.ledger.<event>`.
pub const ENTRY_POSTED: &str = "entry_posted";

/// Enqueues `EntryPosted` for `entry`; ordered per company by the partition key.
pub async fn enqueue_entry_posted(
    connection: &mut PgConnection,
    subjects: &Subjects,
    entry: &PostedEntry,
) -> sqlx::Result<()> {
    let event = DomainEvent {
        event_id: Uuid::now_v7().to_string(),
        company_id: entry.company_id.to_string(),
        aggregate_type: "ledger".to_owned(),
        aggregate_id: entry.company_id.to_string(),
        aggregate_version: entry.sequence,
        effective_date: Some(date::to_proto(entry.effective_date)),
        recorded_at: Some(convert::timestamp(entry.recorded_at)),
        initiator: None,
        event: Some(domain_event::Event::EntryPosted(ledger::EntryPosted {
            entry: Some(convert::entry_to_proto(entry)),
        })),
    };
    let message = OutboxMessage::protobuf(
        subjects.event("ledger", ENTRY_POSTED),
        format!("ledger:{}", entry.company_id),
        Some(entry.company_id),
        &event,
    );
    outbox::enqueue(connection, &message).await
}
