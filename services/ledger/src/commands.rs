//! The plain ledger commands: each builds a balanced entry from a request
//! and posts it. Validation of the request happened at the gRPC edge.

use chrono::NaiveDate;
use qapmap_runtime::decimal::Money;
use qapmap_runtime::messaging::Subjects;
use rust_decimal::Decimal;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::accounts::{self, AccountKey, SystemAccount, Unit};
use crate::journal::{self, Cause, EntryType, Line, NewEntry, PostedEntry, PostingError, reading};

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Posting(#[from] PostingError),
    #[error("entry {0} not found")]
    EntryNotFound(Uuid),
    #[error("entry {0} was already reversed")]
    AlreadyReversed(Uuid),
    #[error("a reversal cannot be reversed; post a new entry instead")]
    ReversalOfReversal,
    #[error("the class already has {0} authorized shares")]
    AuthorizedUnchanged(Decimal),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Shares moving from one account to another, the shape of most commands.
#[derive(Debug, Clone, Copy)]
pub struct Movement {
    pub share_class_id: Uuid,
    pub quantity: Decimal,
    pub effective_date: NaiveDate,
}

fn unit(class: Uuid) -> Unit {
    Unit::Shares(class)
}

fn shares_lines(from: AccountKey, to: AccountKey, quantity: Decimal) -> Vec<Line> {
    vec![
        Line {
            account: from,
            amount: -quantity,
        },
        Line {
            account: to,
            amount: quantity,
        },
    ]
}

/// Cash paid by the outside world to the company (`amount` > 0), or by the
/// company to it (`amount` < 0).
pub fn cash_in_lines(money: Money, amount: Decimal) -> Vec<Line> {
    let currency = Unit::Cash(money.currency.into());
    shares_lines(
        AccountKey::system(SystemAccount::ExternalCash, currency),
        AccountKey::system(SystemAccount::CompanyCash, currency),
        amount,
    )
}

fn entry(entry_type: EntryType, movement: Movement, cause: Cause, lines: Vec<Line>) -> NewEntry {
    NewEntry {
        entry_type,
        effective_date: movement.effective_date,
        cause,
        lines,
        reverses_entry_id: None,
        consumes_hold_id: None,
        memo: String::new(),
    }
}

/// Issues shares from authorized-unissued to a holder; a price adds the
/// cash the holder paid.
pub async fn issue_shares(
    connection: &mut PgConnection,
    subjects: &Subjects,
    company_id: Uuid,
    cause: Cause,
    stakeholder_id: Uuid,
    movement: Movement,
    price_per_share: Option<Money>,
) -> Result<PostedEntry, CommandError> {
    let class = unit(movement.share_class_id);
    let mut lines = shares_lines(
        AccountKey::system(SystemAccount::AuthorizedUnissued, class),
        AccountKey::stakeholder(stakeholder_id, movement.share_class_id),
        movement.quantity,
    );
    if let Some(price) = price_per_share.filter(|price| !price.amount.is_zero()) {
        lines.extend(cash_in_lines(price, price.amount * movement.quantity));
    }
    let new = entry(EntryType::Issuance, movement, cause, lines);
    Ok(journal::post(connection, subjects, company_id, new).await?)
}

/// Moves shares between two holders.
pub async fn transfer_shares(
    connection: &mut PgConnection,
    subjects: &Subjects,
    company_id: Uuid,
    cause: Cause,
    (from, to): (Uuid, Uuid),
    movement: Movement,
) -> Result<PostedEntry, CommandError> {
    let lines = shares_lines(
        AccountKey::stakeholder(from, movement.share_class_id),
        AccountKey::stakeholder(to, movement.share_class_id),
        movement.quantity,
    );
    let new = entry(EntryType::Transfer, movement, cause, lines);
    Ok(journal::post(connection, subjects, company_id, new).await?)
}

/// Cancels a holder's shares: they return to authorized-unissued.
pub async fn cancel_shares(
    connection: &mut PgConnection,
    subjects: &Subjects,
    company_id: Uuid,
    cause: Cause,
    stakeholder_id: Uuid,
    movement: Movement,
) -> Result<PostedEntry, CommandError> {
    let lines = shares_lines(
        AccountKey::stakeholder(stakeholder_id, movement.share_class_id),
        AccountKey::system(
            SystemAccount::AuthorizedUnissued,
            unit(movement.share_class_id),
        ),
        movement.quantity,
    );
    let new = entry(EntryType::Cancellation, movement, cause, lines);
    Ok(journal::post(connection, subjects, company_id, new).await?)
}

/// Retires treasury shares.
pub async fn retire_treasury_shares(
    connection: &mut PgConnection,
    subjects: &Subjects,
    company_id: Uuid,
    cause: Cause,
    movement: Movement,
) -> Result<PostedEntry, CommandError> {
    let class = unit(movement.share_class_id);
    let lines = shares_lines(
        AccountKey::system(SystemAccount::Treasury, class),
        AccountKey::system(SystemAccount::Retired, class),
        movement.quantity,
    );
    let new = entry(EntryType::Retirement, movement, cause, lines);
    Ok(journal::post(connection, subjects, company_id, new).await?)
}

/// Sets a class's authorized shares to `new_authorized` (an absolute count);
/// the first adjustment of an unknown class makes it known to the ledger.
pub async fn adjust_authorized_shares(
    connection: &mut PgConnection,
    subjects: &Subjects,
    company_id: Uuid,
    cause: Cause,
    share_class_id: Uuid,
    new_authorized: Decimal,
    effective_date: NaiveDate,
) -> Result<PostedEntry, CommandError> {
    if let Some(existing) =
        reading::find_by_cause(connection, company_id, &cause.to_stored()).await?
    {
        return Ok(existing);
    }
    sqlx::query("INSERT INTO share_classes (company_id, share_class_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
        .bind(company_id)
        .bind(share_class_id)
        .execute(&mut *connection)
        .await?;
    let class = unit(share_class_id);
    let charter = AccountKey::system(SystemAccount::Authorized, class);
    let charter_id = accounts::ensure(connection, company_id, &charter).await?;
    // Locked before reading, so two adjustments cannot both start from the same count.
    let current = -accounts::lock(connection, &[charter_id]).await?[0].balance;
    let delta = new_authorized - current;
    if delta.is_zero() {
        return Err(CommandError::AuthorizedUnchanged(current));
    }
    let lines = shares_lines(
        charter,
        AccountKey::system(SystemAccount::AuthorizedUnissued, class),
        delta,
    );
    let movement = Movement {
        share_class_id,
        quantity: delta,
        effective_date,
    };
    let new = entry(
        EntryType::AuthorizedSharesAdjustment,
        movement,
        cause,
        lines,
    );
    Ok(journal::post(connection, subjects, company_id, new).await?)
}

/// Posts the mirror image of an entry, on the same effective date, so the
/// history as of any date is corrected.
pub async fn reverse_entry(
    connection: &mut PgConnection,
    subjects: &Subjects,
    company_id: Uuid,
    cause: Cause,
    entry_id: Uuid,
    memo: String,
) -> Result<PostedEntry, CommandError> {
    if let Some(existing) =
        reading::find_by_cause(connection, company_id, &cause.to_stored()).await?
    {
        return Ok(existing);
    }
    let original = reading::find_by_id(connection, company_id, entry_id)
        .await?
        .ok_or(CommandError::EntryNotFound(entry_id))?;
    if original.entry_type == EntryType::Reversal {
        return Err(CommandError::ReversalOfReversal);
    }
    let reversed: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM journal_entries WHERE reverses_entry_id = $1)",
    )
    .bind(entry_id)
    .fetch_one(&mut *connection)
    .await?;
    if reversed {
        return Err(CommandError::AlreadyReversed(entry_id));
    }
    let lines = original
        .lines
        .iter()
        .map(|line| Line {
            account: line.account,
            amount: -line.amount,
        })
        .collect();
    let new = NewEntry {
        entry_type: EntryType::Reversal,
        effective_date: original.effective_date,
        cause,
        lines,
        reverses_entry_id: Some(entry_id),
        consumes_hold_id: None,
        memo,
    };
    Ok(journal::post(connection, subjects, company_id, new).await?)
}
