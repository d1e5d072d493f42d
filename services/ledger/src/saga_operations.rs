//! The ledger's saga steps, called by the orchestrator (through NATS) with
//! the caller's transaction. Each is idempotent by (saga id, step): a repeat
//! returns the first result and writes nothing. Business refusals come back
//! as [`SagaError::Rejected`] with a stable reason code.

use chrono::NaiveDate;
use qapmap_runtime::decimal::Money;
use qapmap_runtime::messaging::Subjects;
use rust_decimal::Decimal;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::accounts::{AccountKey, SystemAccount, Unit};
use crate::commands::cash_in_lines;
use crate::holds::{self, Hold, HoldError};
use crate::journal::{self, Cause, EntryType, Line, NewEntry, PostedEntry, PostingError};

/// Which saga step is asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SagaStep {
    pub saga_id: Uuid,
    pub step: i32,
}

impl SagaStep {
    fn cause(self) -> Cause {
        Cause::Saga {
            saga_id: self.saga_id,
            step: self.step,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SagaError {
    /// A rule refused the step; retrying will not help (compensate instead).
    #[error("{description}")]
    Rejected {
        reason: &'static str,
        description: String,
    },
    /// The database failed; the step may be retried.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl From<PostingError> for SagaError {
    fn from(error: PostingError) -> Self {
        match error {
            PostingError::Database(error) => Self::Database(error),
            other => Self::Rejected {
                reason: other.reason_code(),
                description: other.to_string(),
            },
        }
    }
}

impl From<HoldError> for SagaError {
    fn from(error: HoldError) -> Self {
        match error {
            HoldError::Database(error) => Self::Database(error),
            other => Self::Rejected {
                reason: other.reason_code(),
                description: other.to_string(),
            },
        }
    }
}

/// Exercise step 2: holds authorized-unissued shares of the class.
pub async fn hold_unissued_shares(
    connection: &mut PgConnection,
    company_id: Uuid,
    saga: SagaStep,
    share_class_id: Uuid,
    quantity: Decimal,
) -> Result<Hold, SagaError> {
    let account = AccountKey::system(
        SystemAccount::AuthorizedUnissued,
        Unit::Shares(share_class_id),
    );
    Ok(holds::place(
        connection,
        company_id,
        account,
        quantity,
        &saga.cause().to_stored(),
    )
    .await?)
}

/// Buyback step 2: holds a holder's shares (available = balance − holds).
pub async fn hold_holder_shares(
    connection: &mut PgConnection,
    company_id: Uuid,
    saga: SagaStep,
    stakeholder_id: Uuid,
    share_class_id: Uuid,
    quantity: Decimal,
) -> Result<Hold, SagaError> {
    let account = AccountKey::stakeholder(stakeholder_id, share_class_id);
    Ok(holds::place(
        connection,
        company_id,
        account,
        quantity,
        &saga.cause().to_stored(),
    )
    .await?)
}

/// Compensation of either hold. Releasing twice is fine; a consumed hold is refused.
pub async fn release_hold(
    connection: &mut PgConnection,
    company_id: Uuid,
    _saga: SagaStep,
    hold_id: Uuid,
) -> Result<Hold, SagaError> {
    Ok(holds::release(connection, company_id, hold_id).await?)
}

/// What an exercise or a repurchase posts.
#[derive(Debug, Clone, Copy)]
pub struct HeldPosting {
    pub hold_id: Uuid,
    pub stakeholder_id: Uuid,
    pub share_class_id: Uuid,
    pub quantity: Decimal,
    /// The total paid (strike × quantity, or price × quantity); `None` or 0 posts no cash.
    pub amount_paid: Option<Money>,
    pub effective_date: NaiveDate,
}

/// Exercise step 4: unissued → holder (consuming the hold), and the price
/// from the outside world to company cash.
pub async fn post_exercise(
    connection: &mut PgConnection,
    subjects: &Subjects,
    company_id: Uuid,
    saga: SagaStep,
    posting: HeldPosting,
) -> Result<PostedEntry, SagaError> {
    let class = Unit::Shares(posting.share_class_id);
    let mut lines = vec![
        Line {
            account: AccountKey::system(SystemAccount::AuthorizedUnissued, class),
            amount: -posting.quantity,
        },
        Line {
            account: AccountKey::stakeholder(posting.stakeholder_id, posting.share_class_id),
            amount: posting.quantity,
        },
    ];
    if let Some(paid) = posting.amount_paid.filter(|paid| !paid.amount.is_zero()) {
        lines.extend(cash_in_lines(paid, paid.amount));
    }
    post_held(
        connection,
        subjects,
        company_id,
        saga,
        EntryType::Exercise,
        posting,
        lines,
    )
    .await
}

/// Buyback step 4: holder → treasury (consuming the hold), and the price
/// from company cash to the outside world.
pub async fn post_repurchase(
    connection: &mut PgConnection,
    subjects: &Subjects,
    company_id: Uuid,
    saga: SagaStep,
    posting: HeldPosting,
) -> Result<PostedEntry, SagaError> {
    let class = Unit::Shares(posting.share_class_id);
    let mut lines = vec![
        Line {
            account: AccountKey::stakeholder(posting.stakeholder_id, posting.share_class_id),
            amount: -posting.quantity,
        },
        Line {
            account: AccountKey::system(SystemAccount::Treasury, class),
            amount: posting.quantity,
        },
    ];
    if let Some(paid) = posting.amount_paid.filter(|paid| !paid.amount.is_zero()) {
        lines.extend(cash_in_lines(paid, -paid.amount));
    }
    post_held(
        connection,
        subjects,
        company_id,
        saga,
        EntryType::Repurchase,
        posting,
        lines,
    )
    .await
}

async fn post_held(
    connection: &mut PgConnection,
    subjects: &Subjects,
    company_id: Uuid,
    saga: SagaStep,
    entry_type: EntryType,
    posting: HeldPosting,
    lines: Vec<Line>,
) -> Result<PostedEntry, SagaError> {
    let entry = NewEntry {
        entry_type,
        effective_date: posting.effective_date,
        cause: saga.cause(),
        lines,
        reverses_entry_id: None,
        consumes_hold_id: Some(posting.hold_id),
        memo: String::new(),
    };
    Ok(journal::post(connection, subjects, company_id, entry).await?)
}
