//! The stakeholder commands, each run inside the caller's transaction: load
//! and lock the current version, apply the rule, write the new version, append
//! it to the event log and, when other services care, to the outbox.

use chrono::{NaiveDate, SubsecRound, Utc};
use qapmap_proto::messaging::v1::domain_event::Event;
use qapmap_proto::shareholder::v1 as proto;
use qapmap_runtime::messaging::Subjects;
use sqlx::PgConnection;
use uuid::Uuid;

use super::model::{
    ActiveStatus, Email, PaymentInstructionRef, PersonName, Relationships, Stakeholder,
    StakeholderType, Status, Termination,
};
use super::{StakeholderError, store};
use crate::{convert, events};

/// A stakeholder to register; it starts ACTIVE at version 1.
#[derive(Debug, Clone)]
pub struct NewStakeholder {
    pub company_id: Uuid,
    pub stakeholder_type: StakeholderType,
    pub name: PersonName,
    pub email: Option<Email>,
    pub relationships: Relationships,
    pub employment_start_date: Option<NaiveDate>,
    pub payment_instruction_ref: Option<PaymentInstructionRef>,
}

/// The stakeholder a change applies to, at the version the caller read.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub company_id: Uuid,
    pub stakeholder_id: Uuid,
    pub expected_version: i64,
}

/// Contact details to change; `None` leaves a field as it is, and
/// `Some(None)` clears an optional one.
#[derive(Debug, Clone, Default)]
pub struct ContactChanges {
    pub name: Option<PersonName>,
    pub email: Option<Option<Email>>,
    pub payment_instruction_ref: Option<Option<PaymentInstructionRef>>,
}

/// Registers a stakeholder.
pub async fn create(
    transaction: &mut PgConnection,
    subjects: &Subjects,
    new: NewStakeholder,
) -> Result<Stakeholder, StakeholderError> {
    let stakeholder = Stakeholder {
        id: qapmap_runtime::ids::new_id(),
        company_id: new.company_id,
        stakeholder_type: new.stakeholder_type,
        name: new.name,
        email: new.email,
        relationships: new.relationships,
        status: Status::Current(ActiveStatus::Active),
        employment_start_date: new.employment_start_date,
        payment_instruction_ref: new.payment_instruction_ref,
        version: 1,
        // Postgres keeps microseconds; the response must match what a Get reads.
        recorded_at: Utc::now().trunc_subsecs(6),
    };
    store::insert(transaction, &stakeholder).await?;
    let event = Event::StakeholderCreated(proto::StakeholderCreated {
        stakeholder_id: stakeholder.id.to_string(),
        stakeholder_type: convert::stakeholder_type_to_proto(stakeholder.stakeholder_type) as i32,
        relationships: convert::relationships_to_proto(&stakeholder.relationships),
        status: convert::status_to_proto(&stakeholder.status) as i32,
        employment_start_date: stakeholder
            .employment_start_date
            .map(qapmap_runtime::date::to_proto),
    });
    let effective_date = stakeholder
        .employment_start_date
        .unwrap_or_else(qapmap_runtime::date::today);
    record(
        transaction,
        subjects,
        &stakeholder,
        effective_date,
        "stakeholder_created",
        Some(event),
    )
    .await?;
    Ok(stakeholder)
}

/// Changes contact details. Not published: they are personal data that no
/// other service keeps.
pub async fn update_contact(
    transaction: &mut PgConnection,
    subjects: &Subjects,
    target: Target,
    changes: ContactChanges,
) -> Result<Stakeholder, StakeholderError> {
    let mut stakeholder = load_current(transaction, target).await?;
    if let Some(name) = changes.name {
        stakeholder.name = name;
    }
    if let Some(email) = changes.email {
        stakeholder.email = email;
    }
    if let Some(reference) = changes.payment_instruction_ref {
        stakeholder.payment_instruction_ref = reference;
    }
    save(
        transaction,
        subjects,
        stakeholder,
        qapmap_runtime::date::today(),
        "stakeholder_updated",
        |_| None,
    )
    .await
}

/// Records that the stakeholder left, on a date not before the employment
/// start. Relationships stay as they are: a caller that wants `EX_EMPLOYEE`
/// says so with a relationship change.
pub async fn record_termination(
    transaction: &mut PgConnection,
    subjects: &Subjects,
    target: Target,
    termination: Termination,
) -> Result<Stakeholder, StakeholderError> {
    let mut stakeholder = load_current(transaction, target).await?;
    if stakeholder.status.termination().is_some() {
        return Err(StakeholderError::AlreadyTerminated);
    }
    if stakeholder
        .employment_start_date
        .is_some_and(|start| termination.date < start)
    {
        return Err(StakeholderError::TerminationBeforeEmploymentStart);
    }
    stakeholder.status = Status::Terminated(termination);
    save(
        transaction,
        subjects,
        stakeholder,
        termination.date,
        "stakeholder_terminated",
        |s| {
            Some(Event::StakeholderTerminated(proto::StakeholderTerminated {
                stakeholder_id: s.id.to_string(),
                termination_date: Some(qapmap_runtime::date::to_proto(termination.date)),
                termination_reason: convert::termination_reason_to_proto(termination.reason) as i32,
                status: convert::status_to_proto(&s.status) as i32,
            }))
        },
    )
    .await
}

/// Moves a current stakeholder to ACTIVE or LEAVE_OF_ABSENCE.
pub async fn change_status(
    transaction: &mut PgConnection,
    subjects: &Subjects,
    target: Target,
    new_status: ActiveStatus,
    effective_date: NaiveDate,
) -> Result<Stakeholder, StakeholderError> {
    let mut stakeholder = load_current(transaction, target).await?;
    let previous = match stakeholder.status {
        Status::Current(previous) => previous,
        Status::Terminated(_) => return Err(StakeholderError::Terminated),
    };
    stakeholder.status = Status::Current(new_status);
    save(
        transaction,
        subjects,
        stakeholder,
        effective_date,
        "stakeholder_status_changed",
        |s| {
            Some(Event::StakeholderStatusChanged(
                proto::StakeholderStatusChanged {
                    stakeholder_id: s.id.to_string(),
                    previous_status: convert::status_to_proto(&Status::Current(previous)) as i32,
                    new_status: convert::status_to_proto(&s.status) as i32,
                },
            ))
        },
    )
    .await
}

/// Replaces the stakeholder's relationships.
pub async fn change_relationships(
    transaction: &mut PgConnection,
    subjects: &Subjects,
    target: Target,
    relationships: Relationships,
    effective_date: NaiveDate,
) -> Result<Stakeholder, StakeholderError> {
    let mut stakeholder = load_current(transaction, target).await?;
    stakeholder.relationships = relationships;
    let event_type = "stakeholder_relationships_changed";
    save(
        transaction,
        subjects,
        stakeholder,
        effective_date,
        event_type,
        |s| {
            Some(Event::StakeholderRelationshipsChanged(
                proto::StakeholderRelationshipsChanged {
                    stakeholder_id: s.id.to_string(),
                    relationships: convert::relationships_to_proto(&s.relationships),
                },
            ))
        },
    )
    .await
}

/// Locks the stakeholder and checks the caller read its current version.
async fn load_current(
    transaction: &mut PgConnection,
    target: Target,
) -> Result<Stakeholder, StakeholderError> {
    let stakeholder = store::find_for_update(transaction, target.company_id, target.stakeholder_id)
        .await?
        .ok_or(StakeholderError::NotFound(target.stakeholder_id))?;
    if stakeholder.version != target.expected_version {
        return Err(StakeholderError::StaleVersion {
            expected: target.expected_version,
            actual: stakeholder.version,
        });
    }
    Ok(stakeholder)
}

/// Writes the next version, its event-log row and its outbox message.
async fn save(
    transaction: &mut PgConnection,
    subjects: &Subjects,
    mut stakeholder: Stakeholder,
    effective_date: NaiveDate,
    event_type: &str,
    event: impl FnOnce(&Stakeholder) -> Option<Event>,
) -> Result<Stakeholder, StakeholderError> {
    stakeholder.version += 1;
    store::update(transaction, &stakeholder).await?;
    let event = event(&stakeholder);
    record(
        transaction,
        subjects,
        &stakeholder,
        effective_date,
        event_type,
        event,
    )
    .await?;
    Ok(stakeholder)
}

async fn record(
    transaction: &mut PgConnection,
    subjects: &Subjects,
    stakeholder: &Stakeholder,
    effective_date: NaiveDate,
    event_type: &str,
    event: Option<Event>,
) -> Result<(), StakeholderError> {
    let snapshot = prost::Message::encode_to_vec(&convert::stakeholder_to_proto(stakeholder));
    store::append_event(
        transaction,
        stakeholder,
        event_type,
        effective_date,
        snapshot,
    )
    .await?;
    if let Some(event) = event {
        let aggregate = events::Aggregate {
            company_id: stakeholder.company_id,
            aggregate_type: "stakeholder",
            aggregate_id: stakeholder.id,
            version: stakeholder.version,
        };
        events::enqueue(
            transaction,
            subjects,
            &aggregate,
            effective_date,
            event_type,
            event,
        )
        .await?;
    }
    Ok(())
}
