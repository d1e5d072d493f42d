//! Holds reserve shares of an account for a pending flow: placed against
//! what is available (balance − active holds), then released, or consumed
//! by the posting that moves the shares.

use rust_decimal::Decimal;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::accounts::{self, AccountKey, Unit};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldStatus {
    Active,
    Released,
    Consumed,
}

impl HoldStatus {
    fn from_stored(text: &str) -> Self {
        match text {
            "active" => Self::Active,
            "released" => Self::Released,
            "consumed" => Self::Consumed,
            other => unreachable!("CHECK constraint admits no hold status {other:?}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Hold {
    pub id: Uuid,
    pub company_id: Uuid,
    pub account: AccountKey,
    pub quantity: Decimal,
    pub cause: String,
    pub status: HoldStatus,
}

#[derive(Debug, thiserror::Error)]
pub enum HoldError {
    #[error("holds reserve shares; a cash account cannot be held")]
    NotAShareAccount,
    #[error("share class {0} is not known to the ledger")]
    UnknownShareClass(Uuid),
    #[error("only {available} shares are available to hold")]
    InsufficientAvailable { available: Decimal },
    #[error("hold {0} not found")]
    NotFound(Uuid),
    #[error("hold {0} was consumed by a posting and cannot be released")]
    AlreadyConsumed(Uuid),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl HoldError {
    pub fn reason_code(&self) -> &'static str {
        match self {
            Self::NotAShareAccount => "not_a_share_account",
            Self::UnknownShareClass(_) => "unknown_share_class",
            Self::InsufficientAvailable { .. } => "hold_exceeds_available",
            Self::NotFound(_) => "hold_not_found",
            Self::AlreadyConsumed(_) => "hold_already_consumed",
            Self::Database(_) => "internal",
        }
    }
}

/// Places a hold of `quantity` on `account`, or returns the hold already
/// placed for `cause`.
pub async fn place(
    connection: &mut PgConnection,
    company_id: Uuid,
    account: AccountKey,
    quantity: Decimal,
    cause: &str,
) -> Result<Hold, HoldError> {
    assert!(quantity > Decimal::ZERO, "parsed quantities are positive");
    if let Some(existing) = find_by_cause(connection, company_id, cause).await? {
        return Ok(existing);
    }
    let Unit::Shares(class) = account.unit else {
        return Err(HoldError::NotAShareAccount);
    };
    if !account.must_stay_non_negative() {
        return Err(HoldError::NotAShareAccount);
    }
    if !accounts::share_class_exists(connection, company_id, class).await? {
        return Err(HoldError::UnknownShareClass(class));
    }
    let account_id = accounts::ensure(connection, company_id, &account).await?;
    let locked = accounts::lock(connection, &[account_id]).await?;
    let available = locked[0].balance - locked[0].held;
    if quantity > available {
        return Err(HoldError::InsufficientAvailable { available });
    }
    let hold_id = Uuid::now_v7();
    // The hold and the account's held amount in one statement; the hold
    // is what was just written, so it is not read back.
    sqlx::query(
        "WITH hold AS (
             INSERT INTO holds (id, company_id, account_id, quantity, cause, status)
             VALUES ($1, $2, $3, $4, $5, 'active')
         )
         UPDATE accounts SET held = held + $4 WHERE id = $3",
    )
    .bind(hold_id)
    .bind(company_id)
    .bind(account_id)
    .bind(quantity)
    .bind(cause)
    .execute(&mut *connection)
    .await?;
    Ok(Hold {
        id: hold_id,
        company_id,
        account,
        quantity,
        cause: cause.to_owned(),
        status: HoldStatus::Active,
    })
}

/// Releases an active hold; releasing a released hold changes nothing.
pub async fn release(
    connection: &mut PgConnection,
    company_id: Uuid,
    hold_id: Uuid,
) -> Result<Hold, HoldError> {
    let row: Option<(Uuid, Decimal, String)> = sqlx::query_as(
        "SELECT account_id, quantity, status FROM holds WHERE id = $1 AND company_id = $2 FOR UPDATE",
    )
    .bind(hold_id)
    .bind(company_id)
    .fetch_optional(&mut *connection)
    .await?;
    let (account_id, quantity, status) = row.ok_or(HoldError::NotFound(hold_id))?;
    match HoldStatus::from_stored(&status) {
        HoldStatus::Consumed => return Err(HoldError::AlreadyConsumed(hold_id)),
        HoldStatus::Released => {}
        HoldStatus::Active => {
            accounts::lock(connection, &[account_id]).await?;
            change_held(connection, account_id, -quantity).await?;
            sqlx::query("UPDATE holds SET status = 'released' WHERE id = $1")
                .bind(hold_id)
                .execute(&mut *connection)
                .await?;
        }
    }
    find(connection, company_id, hold_id)
        .await?
        .ok_or(HoldError::NotFound(hold_id))
}

async fn change_held(
    connection: &mut PgConnection,
    account_id: Uuid,
    delta: Decimal,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE accounts SET held = held + $2 WHERE id = $1")
        .bind(account_id)
        .bind(delta)
        .execute(&mut *connection)
        .await?;
    Ok(())
}

const HOLD_SELECT: &str = "SELECT h.id, h.quantity, h.cause, h.status, a.owner_kind,
        a.stakeholder_id, a.share_class_id, a.currency
     FROM holds h JOIN accounts a ON a.id = h.account_id";

type HoldRow = (
    Uuid,
    Decimal,
    String,
    String,
    String,
    Option<Uuid>,
    Option<Uuid>,
    Option<String>,
);

/// The hold with `hold_id` in this company.
pub async fn find(
    connection: &mut PgConnection,
    company_id: Uuid,
    hold_id: Uuid,
) -> sqlx::Result<Option<Hold>> {
    let sql = format!("{HOLD_SELECT} WHERE h.company_id = $1 AND h.id = $2");
    let row: Option<HoldRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(company_id)
        .bind(hold_id)
        .fetch_optional(&mut *connection)
        .await?;
    Ok(row.map(|row| into_hold(company_id, row)))
}

/// The hold placed for `cause` (e.g. a saga step) in this company.
pub async fn find_by_cause(
    connection: &mut PgConnection,
    company_id: Uuid,
    cause: &str,
) -> sqlx::Result<Option<Hold>> {
    let sql = format!("{HOLD_SELECT} WHERE h.company_id = $1 AND h.cause = $2");
    let row: Option<HoldRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(company_id)
        .bind(cause)
        .fetch_optional(&mut *connection)
        .await?;
    Ok(row.map(|row| into_hold(company_id, row)))
}

fn into_hold(company_id: Uuid, row: HoldRow) -> Hold {
    let (id, quantity, cause, status, kind, stakeholder, class, currency) = row;
    Hold {
        id,
        company_id,
        account: AccountKey::from_columns(&kind, stakeholder, class, currency.as_deref()),
        quantity,
        cause,
        status: HoldStatus::from_stored(&status),
    }
}
