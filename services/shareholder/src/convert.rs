//! Domain types <-> `qapmap.shareholder.v1` messages. Enums go through their
//! proto names (`STAKEHOLDER_RELATIONSHIP_` + the OCF spelling), so the two
//! vocabularies cannot drift apart silently: a unit test walks every value.

use chrono::{DateTime, Utc};
use qapmap_proto::shareholder::v1 as proto;
use qapmap_runtime::{ApiError, date};

use crate::payment::{Direction, Payment, PaymentStatus};
use crate::stakeholder::{
    ActiveStatus, Relationship, Relationships, Stakeholder, StakeholderType, Status,
    TerminationReason,
};

pub fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or_default(),
    }
}

pub fn stakeholder_type_to_proto(value: StakeholderType) -> proto::StakeholderType {
    let name = format!("STAKEHOLDER_TYPE_{}", value.as_ocf());
    proto::StakeholderType::from_str_name(&name).unwrap_or_default()
}

pub fn relationship_to_proto(value: Relationship) -> proto::StakeholderRelationship {
    let name = format!("STAKEHOLDER_RELATIONSHIP_{}", value.as_ocf());
    proto::StakeholderRelationship::from_str_name(&name).unwrap_or_default()
}

pub fn relationships_to_proto(value: &Relationships) -> Vec<i32> {
    value
        .as_slice()
        .iter()
        .map(|r| relationship_to_proto(*r) as i32)
        .collect()
}

pub fn status_to_proto(value: &Status) -> proto::StakeholderStatus {
    let name = format!("STAKEHOLDER_STATUS_{}", value.as_ocf());
    proto::StakeholderStatus::from_str_name(&name).unwrap_or_default()
}

pub fn termination_reason_to_proto(value: TerminationReason) -> proto::TerminationReason {
    let name = format!("TERMINATION_REASON_{}", value.as_ocf());
    proto::TerminationReason::from_str_name(&name).unwrap_or_default()
}

/// Reads a proto enum field: unknown numbers and UNSPECIFIED are refused
/// with the field's name.
fn enum_name<E: TryFrom<i32>>(
    field: &str,
    value: i32,
    as_str_name: impl Fn(&E) -> &'static str,
    prefix: &str,
) -> Result<&'static str, ApiError> {
    let known = E::try_from(value).map_err(|_| ApiError::invalid(field, "is not a known value"))?;
    match as_str_name(&known).strip_prefix(prefix) {
        Some("UNSPECIFIED") | None => Err(ApiError::invalid(field, "is required")),
        Some(name) => Ok(name),
    }
}

pub fn stakeholder_type_from_proto(field: &str, value: i32) -> Result<StakeholderType, ApiError> {
    let name = enum_name(
        field,
        value,
        proto::StakeholderType::as_str_name,
        "STAKEHOLDER_TYPE_",
    )?;
    StakeholderType::from_ocf(name).ok_or_else(|| ApiError::invalid(field, "is not supported"))
}

pub fn relationship_from_proto(field: &str, value: i32) -> Result<Relationship, ApiError> {
    let name = enum_name(
        field,
        value,
        proto::StakeholderRelationship::as_str_name,
        "STAKEHOLDER_RELATIONSHIP_",
    )?;
    Relationship::from_ocf(name).ok_or_else(|| ApiError::invalid(field, "is not supported"))
}

/// A repeated relationship field; `field[i]` names a bad element.
pub fn relationships_from_proto(field: &str, values: &[i32]) -> Result<Relationships, ApiError> {
    let parsed = values
        .iter()
        .enumerate()
        .map(|(index, value)| relationship_from_proto(&format!("{field}[{index}]"), *value))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Relationships::new(parsed))
}

/// The OCF status string of a status field (any status, for list filters).
pub fn status_name_from_proto(field: &str, value: i32) -> Result<&'static str, ApiError> {
    enum_name(
        field,
        value,
        proto::StakeholderStatus::as_str_name,
        "STAKEHOLDER_STATUS_",
    )
}

/// A status a stakeholder may be moved to without a termination.
pub fn active_status_from_proto(field: &str, value: i32) -> Result<ActiveStatus, ApiError> {
    let name = status_name_from_proto(field, value)?;
    ActiveStatus::from_ocf(name).ok_or_else(|| {
        ApiError::invalid(
            field,
            "must be ACTIVE or LEAVE_OF_ABSENCE; record terminations with RecordTermination",
        )
    })
}

pub fn termination_reason_from_proto(
    field: &str,
    value: i32,
) -> Result<TerminationReason, ApiError> {
    let name = enum_name(
        field,
        value,
        proto::TerminationReason::as_str_name,
        "TERMINATION_REASON_",
    )?;
    TerminationReason::from_ocf(name).ok_or_else(|| ApiError::invalid(field, "is not supported"))
}

pub fn stakeholder_to_proto(stakeholder: &Stakeholder) -> proto::Stakeholder {
    let termination = stakeholder.status.termination();
    proto::Stakeholder {
        id: stakeholder.id.to_string(),
        company_id: stakeholder.company_id.to_string(),
        stakeholder_type: stakeholder_type_to_proto(stakeholder.stakeholder_type) as i32,
        name: stakeholder.name.as_str().to_owned(),
        email: stakeholder
            .email
            .as_ref()
            .map(|e| e.as_str().to_owned())
            .unwrap_or_default(),
        relationships: relationships_to_proto(&stakeholder.relationships),
        status: status_to_proto(&stakeholder.status) as i32,
        employment_start_date: stakeholder.employment_start_date.map(date::to_proto),
        termination_date: termination.map(|t| date::to_proto(t.date)),
        payment_instruction_ref: stakeholder
            .payment_instruction_ref
            .as_ref()
            .map(|r| r.as_str().to_owned())
            .unwrap_or_default(),
        version: stakeholder.version,
        recorded_at: Some(timestamp(stakeholder.recorded_at)),
        termination_reason: termination
            .map(|t| termination_reason_to_proto(t.reason) as i32)
            .unwrap_or_default(),
    }
}

pub fn direction_to_proto(direction: Direction) -> proto::PaymentDirection {
    match direction {
        Direction::Collection => proto::PaymentDirection::Collection,
        Direction::Disbursement => proto::PaymentDirection::Disbursement,
    }
}

pub fn payment_to_proto(payment: &Payment) -> proto::Payment {
    let (status, decline_reason, gateway_reference) = match &payment.status {
        PaymentStatus::Pending => (proto::PaymentStatus::Pending, "", ""),
        PaymentStatus::Succeeded { gateway_reference } => (
            proto::PaymentStatus::Succeeded,
            "",
            gateway_reference.as_str(),
        ),
        PaymentStatus::Declined { reason } => (proto::PaymentStatus::Declined, reason.as_str(), ""),
        PaymentStatus::FailedRetryable => (proto::PaymentStatus::FailedRetryable, "", ""),
        PaymentStatus::OutcomeUnknown => (proto::PaymentStatus::OutcomeUnknown, "", ""),
    };
    proto::Payment {
        id: payment.id.to_string(),
        company_id: payment.company_id.to_string(),
        stakeholder_id: payment.stakeholder_id.to_string(),
        direction: direction_to_proto(payment.direction) as i32,
        amount: Some(payment.amount.money().to_proto()),
        status: status as i32,
        decline_reason: decline_reason.to_owned(),
        idempotency_key: payment.idempotency_key.clone(),
        gateway_reference: gateway_reference.to_owned(),
        recorded_at: Some(timestamp(payment.recorded_at)),
        gateway_attempts: payment.gateway_attempts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_domain_value_has_a_proto_twin() {
        for value in StakeholderType::ALL {
            let wire = stakeholder_type_to_proto(*value) as i32;
            assert_eq!(
                stakeholder_type_from_proto("t", wire).expect("known"),
                *value
            );
        }
        for value in Relationship::ALL {
            let wire = relationship_to_proto(*value) as i32;
            assert_eq!(relationship_from_proto("r", wire).expect("known"), *value);
        }
        for value in TerminationReason::ALL {
            let wire = termination_reason_to_proto(*value) as i32;
            assert_eq!(
                termination_reason_from_proto("t", wire).expect("known"),
                *value
            );
        }
    }

    #[test]
    fn unspecified_and_unknown_enum_values_name_the_field() {
        for value in [0, 999] {
            let error = relationship_from_proto("relationships[2]", value).expect_err("refused");
            assert!(
                matches!(error, ApiError::InvalidArgument { ref field, .. } if field == "relationships[2]")
            );
        }
    }

    #[test]
    fn a_termination_status_cannot_be_set_as_a_plain_status_change() {
        let terminated = proto::StakeholderStatus::TerminationVoluntaryOther as i32;
        assert!(active_status_from_proto("new_status", terminated).is_err());
        let leave = proto::StakeholderStatus::LeaveOfAbsence as i32;
        assert_eq!(
            active_status_from_proto("new_status", leave).expect("ok"),
            ActiveStatus::LeaveOfAbsence
        );
    }
}
