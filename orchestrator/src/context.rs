//! What a saga knows: its input, and what each step returned. Stored as JSON
//! on the saga row (decimals as strings), so an operator can read it.

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A step needed something an earlier step should have returned.
#[derive(Debug, thiserror::Error)]
#[error("the saga context has no {0}")]
pub struct ContextError(pub &'static str);

/// The validated input of a saga.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SagaInput {
    Exercise {
        award_id: Uuid,
        quantity: Decimal,
        exercise_date: NaiveDate,
    },
    Buyback {
        program_id: Uuid,
        stakeholder_id: Uuid,
        quantity: Decimal,
        price_per_share: Decimal,
        currency: String,
        repurchase_date: NaiveDate,
    },
}

/// Input plus results, filled in as steps succeed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SagaContext {
    pub input: SagaInput,
    #[serde(default)]
    pub reservation_id: Option<String>,
    #[serde(default)]
    pub share_class_id: Option<String>,
    #[serde(default)]
    pub stakeholder_id: Option<String>,
    /// Exercise price per share, and its currency (from the award).
    #[serde(default)]
    pub price_per_share: Option<Decimal>,
    #[serde(default)]
    pub currency: Option<String>,
    #[serde(default)]
    pub hold_id: Option<String>,
    #[serde(default)]
    pub payment_id: Option<String>,
    #[serde(default)]
    pub entry_id: Option<String>,
}

impl SagaContext {
    pub fn new(input: SagaInput) -> Self {
        let mut context = Self {
            input,
            reservation_id: None,
            share_class_id: None,
            stakeholder_id: None,
            price_per_share: None,
            currency: None,
            hold_id: None,
            payment_id: None,
            entry_id: None,
        };
        if let SagaInput::Buyback {
            stakeholder_id,
            price_per_share,
            currency,
            ..
        } = &context.input
        {
            context.stakeholder_id = Some(stakeholder_id.to_string());
            context.price_per_share = Some(*price_per_share);
            context.currency = Some(currency.clone());
        }
        context
    }

    pub fn quantity(&self) -> Decimal {
        match &self.input {
            SagaInput::Exercise { quantity, .. } | SagaInput::Buyback { quantity, .. } => *quantity,
        }
    }

    pub fn effective_date(&self) -> NaiveDate {
        match &self.input {
            SagaInput::Exercise { exercise_date, .. } => *exercise_date,
            SagaInput::Buyback {
                repurchase_date, ..
            } => *repurchase_date,
        }
    }

    /// price × quantity: what the payment step moves.
    pub fn amount(&self) -> Result<Decimal, ContextError> {
        let price = self
            .price_per_share
            .ok_or(ContextError("price per share"))?;
        price
            .checked_mul(self.quantity())
            .ok_or(ContextError("an amount that fits a decimal"))
    }

    pub fn required<'a>(
        value: &'a Option<String>,
        what: &'static str,
    ) -> Result<&'a str, ContextError> {
        value.as_deref().ok_or(ContextError(what))
    }
}
