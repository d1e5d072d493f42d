//! The append-only, double-entry journal: what an entry is, the rules it
//! must meet, posting it ([`posting`]) and reading it back ([`reading`]).

pub mod posting;
pub mod reading;

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::accounts::{AccountKey, Unit};

pub use posting::post;

/// What kind of fact an entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryType {
    Issuance,
    Exercise,
    Repurchase,
    Transfer,
    Cancellation,
    Retirement,
    AuthorizedSharesAdjustment,
    Payment,
    Reversal,
}

impl EntryType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Issuance => "issuance",
            Self::Exercise => "exercise",
            Self::Repurchase => "repurchase",
            Self::Transfer => "transfer",
            Self::Cancellation => "cancellation",
            Self::Retirement => "retirement",
            Self::AuthorizedSharesAdjustment => "authorized_shares_adjustment",
            Self::Payment => "payment",
            Self::Reversal => "reversal",
        }
    }

    pub fn from_stored(text: &str) -> Self {
        match text {
            "issuance" => Self::Issuance,
            "exercise" => Self::Exercise,
            "repurchase" => Self::Repurchase,
            "transfer" => Self::Transfer,
            "cancellation" => Self::Cancellation,
            "retirement" => Self::Retirement,
            "authorized_shares_adjustment" => Self::AuthorizedSharesAdjustment,
            "payment" => Self::Payment,
            "reversal" => Self::Reversal,
            other => unreachable!("CHECK constraint admits no entry type {other:?}"),
        }
    }
}

/// What caused an entry; posting twice for one cause posts once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    Saga { saga_id: Uuid, step: i32 },
    Request { request_id: String },
}

impl Cause {
    pub fn to_stored(&self) -> String {
        match self {
            Self::Saga { saga_id, step } => format!("saga:{saga_id}:{step}"),
            Self::Request { request_id } => format!("request:{request_id}"),
        }
    }
}

/// One line: a positive amount grows the account, a negative one shrinks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line {
    pub account: AccountKey,
    pub amount: Decimal,
}

/// An entry to post.
#[derive(Debug, Clone)]
pub struct NewEntry {
    pub entry_type: EntryType,
    pub effective_date: NaiveDate,
    pub cause: Cause,
    pub lines: Vec<Line>,
    pub reverses_entry_id: Option<Uuid>,
    /// A hold this posting uses up (exercise, repurchase).
    pub consumes_hold_id: Option<Uuid>,
    pub memo: String,
}

/// An entry as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct PostedEntry {
    pub id: Uuid,
    pub company_id: Uuid,
    pub sequence: i64,
    pub entry_type: EntryType,
    pub effective_date: NaiveDate,
    pub recorded_at: DateTime<Utc>,
    pub cause: String,
    pub lines: Vec<Line>,
    pub reverses_entry_id: Option<Uuid>,
    pub memo: String,
}

/// Why a posting was refused; nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum PostingError {
    #[error("an entry needs at least two lines")]
    TooFewLines,
    #[error("the lines of unit {unit} sum to {sum}, not 0")]
    Unbalanced { unit: String, sum: Decimal },
    #[error("a line has amount 0")]
    ZeroLine,
    #[error("share class {0} is not known to the ledger: adjust its authorized shares first")]
    UnknownShareClass(Uuid),
    #[error("the account has {balance} and cannot give {requested}")]
    InsufficientShares {
        balance: Decimal,
        requested: Decimal,
    },
    #[error("only {available} authorized shares are unissued")]
    AuthorizedSharesExceeded { available: Decimal },
    #[error("{held} of the account's {balance} shares are on hold")]
    SharesOnHold { balance: Decimal, held: Decimal },
    #[error(
        "the account would be below zero on {date}: nothing may be dated before what it depends on"
    )]
    NegativeOnDate { date: NaiveDate },
    #[error("hold {0} not found")]
    HoldNotFound(Uuid),
    #[error("hold {0} is no longer active")]
    HoldNotActive(Uuid),
    #[error("hold {0} is on an account this entry does not take from")]
    HoldOnOtherAccount(Uuid),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl PostingError {
    /// The stable reason code callers see in `ErrorInfo.reason`.
    pub fn reason_code(&self) -> &'static str {
        match self {
            Self::TooFewLines | Self::ZeroLine => "malformed_entry",
            Self::Unbalanced { .. } => "unbalanced_entry",
            Self::UnknownShareClass(_) => "unknown_share_class",
            Self::InsufficientShares { .. } => "insufficient_shares",
            Self::AuthorizedSharesExceeded { .. } => "authorized_shares_exceeded",
            Self::SharesOnHold { .. } => "shares_on_hold",
            Self::NegativeOnDate { .. } => "dated_before_dependency",
            Self::HoldNotFound(_) => "hold_not_found",
            Self::HoldNotActive(_) => "hold_not_active",
            Self::HoldOnOtherAccount(_) => "hold_on_other_account",
            Self::Database(_) => "internal",
        }
    }
}

/// Checks the shape of an entry before anything touches the database.
pub fn check_balanced(lines: &[Line]) -> Result<(), PostingError> {
    if lines.len() < 2 {
        return Err(PostingError::TooFewLines);
    }
    if lines.iter().any(|line| line.amount.is_zero()) {
        return Err(PostingError::ZeroLine);
    }
    let mut sums: BTreeMap<Unit, Decimal> = BTreeMap::new();
    for line in lines {
        *sums.entry(line.account.unit).or_default() += line.amount;
    }
    match sums.into_iter().find(|(_, sum)| !sum.is_zero()) {
        Some((unit, sum)) => Err(PostingError::Unbalanced {
            unit: unit_label(&unit),
            sum,
        }),
        None => Ok(()),
    }
}

fn unit_label(unit: &Unit) -> String {
    match unit {
        Unit::Shares(class) => format!("share class {class}"),
        Unit::Cash(currency) => currency.as_str().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts::SystemAccount;

    fn line(account: AccountKey, amount: i64) -> Line {
        Line {
            account,
            amount: Decimal::from(amount),
        }
    }

    #[test]
    fn an_entry_balances_per_unit_not_in_total() {
        let class_a = Unit::Shares(Uuid::from_u128(1));
        let class_b = Unit::Shares(Uuid::from_u128(2));
        let holder = Uuid::from_u128(9);
        let unbalanced = [
            line(
                AccountKey::system(SystemAccount::AuthorizedUnissued, class_a),
                -5,
            ),
            line(AccountKey::stakeholder(holder, Uuid::from_u128(2)), 5),
        ];
        let error = check_balanced(&unbalanced).expect_err("units differ");
        assert_eq!(error.reason_code(), "unbalanced_entry");
        let balanced = [
            line(
                AccountKey::system(SystemAccount::AuthorizedUnissued, class_b),
                -5,
            ),
            line(AccountKey::stakeholder(holder, Uuid::from_u128(2)), 5),
        ];
        assert!(check_balanced(&balanced).is_ok());
    }

    #[test]
    fn an_entry_needs_two_non_zero_lines() {
        let account = AccountKey::stakeholder(Uuid::from_u128(1), Uuid::from_u128(2));
        assert!(check_balanced(&[line(account, 0), line(account, 0)]).is_err());
        assert!(check_balanced(&[line(account, 1)]).is_err());
    }
}
