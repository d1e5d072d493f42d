//! The stakeholder register: who holds (or was promised) equity in a company.
//!
//! Plain domain types with the OCF vocabulary ([`model`]), the rules for each
//! change ([`commands`]) and their SQL ([`store`]). Every change bumps the
//! version by one and appends a row to `stakeholder_events`.

pub mod commands;
pub mod model;
pub mod store;

pub use model::{
    ActiveStatus, Email, InvalidValue, PaymentInstructionRef, PersonName, Relationship,
    Relationships, Stakeholder, StakeholderType, Status, Termination, TerminationReason,
};

use uuid::Uuid;

/// Why a stakeholder command was refused.
#[derive(Debug, thiserror::Error)]
pub enum StakeholderError {
    /// Unknown id, or another company's.
    #[error("stakeholder {0} not found")]
    NotFound(Uuid),
    /// The caller read an older version than the one stored.
    #[error("stakeholder is at version {actual}, not the expected {expected}")]
    StaleVersion { expected: i64, actual: i64 },
    #[error("the stakeholder is already terminated")]
    AlreadyTerminated,
    #[error("the termination date is before the employment start date")]
    TerminationBeforeEmploymentStart,
    #[error("the stakeholder is terminated; its status cannot change")]
    Terminated,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl StakeholderError {
    /// The stable reason code a rule break is reported with.
    pub fn reason_code(&self) -> &'static str {
        match self {
            Self::NotFound(_) => "stakeholder_not_found",
            Self::StaleVersion { .. } => "stale_version",
            Self::AlreadyTerminated => "stakeholder_already_terminated",
            Self::TerminationBeforeEmploymentStart => "termination_before_employment_start",
            Self::Terminated => "stakeholder_terminated",
            Self::Database(_) => "internal",
        }
    }
}
