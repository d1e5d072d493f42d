//! Posting an entry: every invariant is checked inside the caller's
//! transaction, after the touched account rows are locked, so a breach rolls
//! everything back and concurrent postings on one account queue up.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use qapmap_runtime::messaging::Subjects;
use rust_decimal::Decimal;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{NewEntry, PostedEntry, PostingError, check_balanced, reading};
use crate::accounts::{self, LockedAccount, Owner, SystemAccount, Unit};
use crate::events;

/// Posts `entry` for `company_id`, or returns the entry already posted for
/// its cause. The caller commits.
pub async fn post(
    connection: &mut PgConnection,
    subjects: &Subjects,
    company_id: Uuid,
    entry: NewEntry,
) -> Result<PostedEntry, PostingError> {
    let cause = entry.cause.to_stored();
    if let Some(existing) = reading::find_by_cause(connection, company_id, &cause).await? {
        return Ok(existing);
    }
    check_balanced(&entry.lines)?;
    check_share_classes_known(connection, company_id, &entry).await?;
    let line_account_ids = ensure_accounts(connection, company_id, &entry).await?;
    let mut locked = lock_accounts(connection, &line_account_ids).await?;
    if let Some(hold_id) = entry.consumes_hold_id {
        release_consumed_hold(
            connection,
            company_id,
            hold_id,
            &entry,
            &line_account_ids,
            &mut locked,
        )
        .await?;
    }
    let before = locked.clone();
    for (line, account_id) in entry.lines.iter().zip(&line_account_ids) {
        if let Some(account) = locked.get_mut(account_id) {
            account.balance += line.amount;
        }
    }
    for (id, account) in &locked {
        check_account(&before[id], account)?;
    }
    let posted = write_entry(
        connection,
        company_id,
        &entry,
        cause,
        &line_account_ids,
        &locked,
    )
    .await?;
    check_history(connection, company_id, &entry, &line_account_ids, &locked).await?;
    events::enqueue_entry_posted(connection, subjects, &posted).await?;
    Ok(posted)
}

async fn check_share_classes_known(
    connection: &mut PgConnection,
    company_id: Uuid,
    entry: &NewEntry,
) -> Result<(), PostingError> {
    let mut classes: Vec<Uuid> = entry
        .lines
        .iter()
        .filter_map(|line| match line.account.unit {
            Unit::Shares(class) => Some(class),
            Unit::Cash(_) => None,
        })
        .collect();
    classes.sort();
    classes.dedup();
    for class in classes {
        if !accounts::share_class_exists(connection, company_id, class).await? {
            return Err(PostingError::UnknownShareClass(class));
        }
    }
    Ok(())
}

/// The account id of each line, in line order.
async fn ensure_accounts(
    connection: &mut PgConnection,
    company_id: Uuid,
    entry: &NewEntry,
) -> sqlx::Result<Vec<Uuid>> {
    let keys: Vec<_> = entry.lines.iter().map(|line| line.account).collect();
    accounts::ensure_many(connection, company_id, &keys).await
}

async fn lock_accounts(
    connection: &mut PgConnection,
    line_account_ids: &[Uuid],
) -> sqlx::Result<BTreeMap<Uuid, LockedAccount>> {
    let mut ids = line_account_ids.to_vec();
    ids.sort();
    ids.dedup();
    let locked = accounts::lock(connection, &ids).await?;
    assert_eq!(locked.len(), ids.len(), "every ensured account exists");
    Ok(locked
        .into_iter()
        .map(|account| (account.id, account))
        .collect())
}

/// Frees the quantity of the hold this posting uses up, so the shares it
/// reserved can move. The hold must sit on an account the entry takes from.
async fn release_consumed_hold(
    connection: &mut PgConnection,
    company_id: Uuid,
    hold_id: Uuid,
    entry: &NewEntry,
    line_account_ids: &[Uuid],
    locked: &mut BTreeMap<Uuid, LockedAccount>,
) -> Result<(), PostingError> {
    let hold: Option<(Uuid, Decimal, String)> = sqlx::query_as(
        "SELECT account_id, quantity, status FROM holds
         WHERE id = $1 AND company_id = $2 FOR UPDATE",
    )
    .bind(hold_id)
    .bind(company_id)
    .fetch_optional(&mut *connection)
    .await?;
    let (account_id, quantity, status) = hold.ok_or(PostingError::HoldNotFound(hold_id))?;
    if status != "active" {
        return Err(PostingError::HoldNotActive(hold_id));
    }
    let takes_from_account = entry
        .lines
        .iter()
        .zip(line_account_ids)
        .any(|(line, id)| *id == account_id && line.amount.is_sign_negative());
    let account = locked
        .get_mut(&account_id)
        .filter(|_| takes_from_account)
        .ok_or(PostingError::HoldOnOtherAccount(hold_id))?;
    account.held -= quantity;
    assert!(
        account.held >= Decimal::ZERO,
        "held is the sum of active holds"
    );
    Ok(())
}

/// The current-balance rules for one account after the entry.
fn check_account(before: &LockedAccount, after: &LockedAccount) -> Result<(), PostingError> {
    if !after.key.must_stay_non_negative() || after.balance >= before.balance {
        return Ok(());
    }
    if after.balance < Decimal::ZERO {
        let requested = before.balance - after.balance;
        return Err(match after.key.owner {
            Owner::System(SystemAccount::AuthorizedUnissued) => {
                PostingError::AuthorizedSharesExceeded {
                    available: before.balance - before.held,
                }
            }
            _ => PostingError::InsufficientShares {
                balance: before.balance,
                requested,
            },
        });
    }
    if after.balance < after.held {
        return Err(PostingError::SharesOnHold {
            balance: before.balance,
            held: after.held,
        });
    }
    Ok(())
}

/// Writes the entry in one statement: the company's next sequence number
/// (taken after the account locks, the same order everywhere, and held
/// until commit, so numbers are gap-free), the entry and its lines, the
/// hold it consumes, and the accounts' new balances. The lines' and the
/// hold's references to the entry are checked at the statement's end,
/// when the entry is there.
async fn write_entry(
    connection: &mut PgConnection,
    company_id: Uuid,
    entry: &NewEntry,
    cause: String,
    line_account_ids: &[Uuid],
    locked: &BTreeMap<Uuid, LockedAccount>,
) -> sqlx::Result<PostedEntry> {
    let id = Uuid::now_v7();
    let amounts: Vec<Decimal> = entry.lines.iter().map(|line| line.amount).collect();
    let account_ids: Vec<Uuid> = locked.keys().copied().collect();
    let balances: Vec<Decimal> = locked.values().map(|account| account.balance).collect();
    let held: Vec<Decimal> = locked.values().map(|account| account.held).collect();
    let (sequence, recorded_at): (i64, DateTime<Utc>) = sqlx::query_as(
        "WITH next_sequence AS (
             INSERT INTO ledgers (company_id, last_sequence) VALUES ($2, 1)
             ON CONFLICT (company_id) DO UPDATE SET last_sequence = ledgers.last_sequence + 1
             RETURNING last_sequence
         ), entry AS (
             INSERT INTO journal_entries
                 (id, company_id, sequence, entry_type, effective_date, cause, reverses_entry_id, memo)
             SELECT $1, $2, last_sequence, $3, $4, $5, $6, $7 FROM next_sequence
             RETURNING sequence, recorded_at
         ), lines AS (
             INSERT INTO journal_lines (entry_id, line_number, company_id, account_id, amount)
             SELECT $1, ordinality - 1, $2, account_id, amount
             FROM unnest($8::uuid[], $9::numeric[]) WITH ORDINALITY AS line(account_id, amount)
         ), consumed_hold AS (
             UPDATE holds SET status = 'consumed', consumed_by_entry_id = $1 WHERE id = $10
         ), balances AS (
             UPDATE accounts SET balance = new.balance, held = new.held
             FROM unnest($11::uuid[], $12::numeric[], $13::numeric[]) AS new(id, balance, held)
             WHERE accounts.id = new.id
         )
         SELECT sequence, recorded_at FROM entry",
    )
    .bind(id)
    .bind(company_id)
    .bind(entry.entry_type.as_str())
    .bind(entry.effective_date)
    .bind(&cause)
    .bind(entry.reverses_entry_id)
    .bind(&entry.memo)
    .bind(line_account_ids)
    .bind(&amounts)
    .bind(entry.consumes_hold_id)
    .bind(&account_ids)
    .bind(&balances)
    .bind(&held)
    .fetch_one(&mut *connection)
    .await?;
    Ok(PostedEntry {
        id,
        company_id,
        sequence,
        entry_type: entry.entry_type,
        effective_date: entry.effective_date,
        recorded_at,
        cause,
        lines: entry.lines.clone(),
        reverses_entry_id: entry.reverses_entry_id,
        memo: entry.memo.clone(),
    })
}

/// A back-dated entry must not make an account negative on any later date:
/// a transfer may not be dated before the issuance it spends.
async fn check_history(
    connection: &mut PgConnection,
    company_id: Uuid,
    entry: &NewEntry,
    line_account_ids: &[Uuid],
    locked: &BTreeMap<Uuid, LockedAccount>,
) -> Result<(), PostingError> {
    for (line, account_id) in entry.lines.iter().zip(line_account_ids) {
        let constrained = locked[account_id].key.must_stay_non_negative();
        if !constrained || line.amount.is_sign_positive() {
            continue;
        }
        let account = AccountAfter {
            company_id,
            account_id: *account_id,
            balance: locked[account_id].balance,
        };
        if let Some(date) = first_negative_date(connection, &account, entry.effective_date).await? {
            return Err(PostingError::NegativeOnDate { date });
        }
    }
    Ok(())
}

/// An account and its balance once the entry is applied.
struct AccountAfter {
    company_id: Uuid,
    account_id: Uuid,
    balance: Decimal,
}

/// The first date on or after `from` whose closing balance is negative.
/// The balance only changes on dates with lines, and on a date `d` it is
/// the final balance less what later-dated lines move; so only lines dated
/// after `from` are read (usually none), never the account's whole history
/// (an authorized-unissued account has a line per issuance).
async fn first_negative_date(
    connection: &mut PgConnection,
    account: &AccountAfter,
    from: NaiveDate,
) -> sqlx::Result<Option<NaiveDate>> {
    sqlx::query_scalar(
        "WITH later AS (
             SELECT e.effective_date, SUM(l.amount) AS delta
             FROM journal_entries e JOIN journal_lines l ON l.entry_id = e.id
             WHERE e.company_id = $1 AND e.effective_date > $3 AND l.account_id = $2
             GROUP BY e.effective_date),
         closing AS (
             SELECT $3::date AS effective_date,
                    $4::numeric - COALESCE((SELECT SUM(delta) FROM later), 0) AS balance
             UNION ALL
             SELECT effective_date,
                    $4::numeric - COALESCE(SUM(delta) OVER (ORDER BY effective_date DESC
                        ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0)
             FROM later)
         SELECT effective_date FROM closing WHERE balance < 0 ORDER BY effective_date LIMIT 1",
    )
    .bind(account.company_id)
    .bind(account.account_id)
    .bind(from)
    .bind(account.balance)
    .fetch_optional(&mut *connection)
    .await
}
