//! Payment domain types.

use chrono::{DateTime, Utc};
use qapmap_runtime::decimal::{Currency, Money};
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::stakeholder::InvalidValue;

/// Who pays whom.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The holder pays the company (an exercise price).
    Collection,
    /// The company pays the holder (buyback proceeds).
    Disbursement,
}

impl Direction {
    pub fn as_db(self) -> &'static str {
        match self {
            Self::Collection => "collection",
            Self::Disbursement => "disbursement",
        }
    }

    pub fn from_db(text: &str) -> Option<Self> {
        match text {
            "collection" => Some(Self::Collection),
            "disbursement" => Some(Self::Disbursement),
            _ => None,
        }
    }
}

/// An amount above zero in an ISO 4217 currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PaymentAmount(Money);

impl PaymentAmount {
    pub fn new(money: Money) -> Result<Self, InvalidValue> {
        if money.amount <= Decimal::ZERO {
            return Err(InvalidValue("must be above 0"));
        }
        Ok(Self(money))
    }

    pub fn money(&self) -> Money {
        self.0
    }

    pub fn amount(&self) -> Decimal {
        self.0.amount
    }

    pub fn currency(&self) -> Currency {
        self.0.currency
    }
}

/// What makes a payment execute at most once. Namespaced by origin so an API
/// `request_id` can never collide with a saga step.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// An API call's key; `request_id` is already validated (1-128 ASCII).
    pub fn for_request(request_id: &str) -> Self {
        Self(format!("request:{request_id}"))
    }

    /// A saga step's key: a redelivered command maps to the same payment.
    pub fn for_saga_step(saga_id: Uuid, step: u32) -> Self {
        Self(format!("saga:{saga_id}:{step}"))
    }

    pub fn from_stored(text: String) -> Self {
        Self(text)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Where a payment stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentStatus {
    /// An attempt is recorded; the gateway has not answered yet.
    Pending,
    /// Final: money moved.
    Succeeded { gateway_reference: String },
    /// Final: the gateway refused; returned to every repeat.
    Declined { reason: String },
    /// The gateway failed without moving money; the key may be retried.
    FailedRetryable,
    /// Interrupted mid-call: needs reconciliation, never retried blindly.
    OutcomeUnknown,
}

impl PaymentStatus {
    pub fn as_db(&self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Succeeded { .. } => "succeeded",
            Self::Declined { .. } => "declined",
            Self::FailedRetryable => "failed_retryable",
            Self::OutcomeUnknown => "outcome_unknown",
        }
    }

    /// True once the result will never change.
    pub fn is_final(&self) -> bool {
        matches!(self, Self::Succeeded { .. } | Self::Declined { .. })
    }
}

/// A payment as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    pub id: Uuid,
    pub company_id: Uuid,
    pub stakeholder_id: Uuid,
    pub direction: Direction,
    pub amount: PaymentAmount,
    pub status: PaymentStatus,
    pub idempotency_key: String,
    /// How many times the gateway was called for it.
    pub gateway_attempts: i32,
    pub recorded_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn money(amount: i64) -> Money {
        Money {
            amount: Decimal::from(amount),
            currency: Currency::parse("currency", "USD").expect("USD"),
        }
    }

    #[test]
    fn a_payment_amount_must_be_above_zero() {
        assert!(PaymentAmount::new(money(0)).is_err());
        assert!(PaymentAmount::new(money(-5)).is_err());
        assert_eq!(
            PaymentAmount::new(money(5)).expect("ok").amount(),
            Decimal::from(5)
        );
    }

    #[test]
    fn request_and_saga_keys_never_collide() {
        let saga_id = Uuid::nil();
        let saga = IdempotencyKey::for_saga_step(saga_id, 3);
        let forged = IdempotencyKey::for_request(&format!("saga:{saga_id}:3"));
        assert_ne!(saga, forged);
    }
}
