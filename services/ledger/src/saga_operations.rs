//! The ledger's saga steps, called by the orchestrator (through NATS) with
//! the caller's transaction. Each is idempotent by (saga id, step): a repeat
//! returns the first result and writes nothing. Business refusals come back
//! as [`SagaError::Rejected`] with a stable reason code; a refusal may leave
//! writes in the caller's transaction, so callers roll back (to a savepoint)
//! on one.
//!
//! A hold step can be compensated before its command lands (the orchestrator
//! gave up waiting): the release then records a tombstone (see
//! [`crate::saga_tombstones`]) and the late hold is refused with
//! `compensated_before_applied`.

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
use crate::saga_tombstones;

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

impl SagaError {
    fn not_found(hold_id: Uuid) -> Self {
        Self::Rejected {
            reason: "not_found",
            description: format!("hold {hold_id} not found in this company"),
        }
    }
}

impl From<PostingError> for SagaError {
    fn from(error: PostingError) -> Self {
        match error {
            PostingError::Database(error) => Self::Database(error),
            // A hold of another company is as unknown as a missing one; the
            // saga contract names both `not_found`.
            PostingError::HoldNotFound(id) => Self::not_found(id),
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
            HoldError::NotFound(id) => Self::not_found(id),
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
    hold_for_step(connection, company_id, saga, account, quantity).await
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
    hold_for_step(connection, company_id, saga, account, quantity).await
}

/// Places the step's hold unless the step was compensated first.
async fn hold_for_step(
    connection: &mut PgConnection,
    company_id: Uuid,
    saga: SagaStep,
    account: AccountKey,
    quantity: Decimal,
) -> Result<Hold, SagaError> {
    saga_tombstones::lock_step(connection, saga).await?;
    if saga_tombstones::exists(connection, saga).await? {
        return Err(SagaError::Rejected {
            reason: "compensated_before_applied",
            description: format!(
                "step {} of saga {} was compensated before it arrived",
                saga.step, saga.saga_id
            ),
        });
    }
    Ok(holds::place(
        connection,
        company_id,
        account,
        quantity,
        &saga.cause().to_stored(),
    )
    .await?)
}

/// What a compensation of a hold step did.
#[derive(Debug, Clone, PartialEq)]
pub enum Released {
    /// The step's hold is released (now or before).
    Hold(Hold),
    /// The step never placed a hold; a tombstone now refuses it if it comes.
    NeverApplied,
}

/// Compensation of either hold, `saga` being the hold's own step. Without
/// `hold_id` (the orchestrator never heard back from the hold step) the hold
/// is found by its step. Releasing twice is fine; a consumed hold is refused.
pub async fn release_hold(
    connection: &mut PgConnection,
    company_id: Uuid,
    saga: SagaStep,
    hold_id: Option<Uuid>,
) -> Result<Released, SagaError> {
    saga_tombstones::lock_step(connection, saga).await?;
    let hold_id = match hold_id {
        Some(hold_id) => hold_id,
        None => {
            let cause = saga.cause().to_stored();
            match holds::find_by_cause(connection, company_id, &cause).await? {
                Some(hold) => hold.id,
                None => {
                    saga_tombstones::record(connection, company_id, saga).await?;
                    return Ok(Released::NeverApplied);
                }
            }
        }
    };
    Ok(Released::Hold(
        holds::release(connection, company_id, hold_id).await?,
    ))
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
