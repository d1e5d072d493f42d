//! Money moved between a company and its stakeholders through a
//! [`gateway::PaymentGateway`], at most once per idempotency key.
//!
//! - [`model`]: payments, amounts, statuses, idempotency keys.
//! - [`gateway`]: the port every gateway implements; [`sandbox`]: the default.
//! - [`store`]: the `payments` table.
//! - [`executor`]: record the attempt, call the gateway, record the outcome.
//! - [`reconcile`]: an operator settles a payment whose outcome is unknown.

pub mod executor;
pub mod gateway;
pub mod model;
pub mod reconcile;
pub mod sandbox;
pub mod store;

pub use executor::{PaymentAudit, PaymentIntent, Payments};
pub use gateway::{GatewayOutcome, GatewayRequest, PaymentGateway};
pub use model::{Direction, IdempotencyKey, Payment, PaymentAmount, PaymentStatus};
pub use sandbox::{SandboxGateway, SandboxSettings};

use uuid::Uuid;

/// Why a payment could not be executed (a decline is not an error: it is a
/// recorded result, see [`PaymentStatus::Declined`]).
#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    /// Unknown stakeholder id, or another company's.
    #[error("stakeholder {0} not found")]
    StakeholderNotFound(Uuid),
    /// Nowhere to take the money from or send it to.
    #[error("the stakeholder has no payment instruction on file")]
    PaymentInstructionMissing,
    /// The idempotency key was used for a different payment.
    #[error("idempotency key {0:?} was already used for a different payment")]
    KeyReused(String),
    /// The gateway failed and moved no money; the same key may be retried.
    #[error("the payment gateway is unavailable: {0}")]
    GatewayUnavailable(String),
    /// Another attempt with the same key is still running; retry shortly.
    #[error("a payment with this key is in progress")]
    InProgress,
    /// An attempt was interrupted and it is not known whether money moved.
    #[error("the outcome of payment {0} is unknown and needs reconciliation")]
    OutcomeUnknown(Uuid),
    #[error("unknown payment {0}")]
    NotFound(Uuid),
    /// Only a payment whose outcome is unknown can be resolved.
    #[error("payment {id} is {status}, not outcome_unknown: there is nothing to resolve")]
    NotOutcomeUnknown { id: Uuid, status: &'static str },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl PaymentError {
    /// The stable reason code a refusal is reported with.
    pub fn reason_code(&self) -> &'static str {
        match self {
            Self::StakeholderNotFound(_) => "stakeholder_not_found",
            Self::PaymentInstructionMissing => "payment_instruction_missing",
            Self::KeyReused(_) => "idempotency_key_reused",
            Self::GatewayUnavailable(_) => "payment_gateway_unavailable",
            Self::InProgress => "payment_in_progress",
            Self::OutcomeUnknown(_) => "payment_outcome_unknown",
            Self::NotFound(_) => "payment_not_found",
            Self::NotOutcomeUnknown { .. } => "payment_not_outcome_unknown",
            Self::Database(_) => "internal",
        }
    }
}
