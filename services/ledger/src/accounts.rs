//! Accounts: company × unit (a share class or a currency) × owner (a
//! stakeholder or a system account), and the rows that hold their balances.

use qapmap_runtime::decimal::Currency;
use rust_decimal::Decimal;
use sqlx::PgConnection;
use uuid::Uuid;

/// What an account counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Unit {
    Shares(Uuid),
    Cash(CurrencyCode),
}

/// A currency code that can be ordered and hashed (for per-unit sums).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CurrencyCode([u8; 3]);

impl From<Currency> for CurrencyCode {
    fn from(currency: Currency) -> Self {
        let bytes = currency.as_str().as_bytes();
        Self([bytes[0], bytes[1], bytes[2]])
    }
}

impl CurrencyCode {
    pub fn as_str(&self) -> &str {
        // Only built from a validated ISO 4217 code, which is ASCII.
        std::str::from_utf8(&self.0).unwrap_or("XXX")
    }

    fn from_stored(text: &str) -> Self {
        let bytes = text.as_bytes();
        assert_eq!(bytes.len(), 3, "stored currencies are 3 letters (CHECK)");
        Self([bytes[0], bytes[1], bytes[2]])
    }
}

/// The company's own accounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SystemAccount {
    /// The charter: minus the authorized shares of a class.
    Authorized,
    AuthorizedUnissued,
    Treasury,
    Retired,
    CompanyCash,
    /// The outside world's side of cash movements.
    ExternalCash,
}

/// Who an account belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Owner {
    Stakeholder(Uuid),
    System(SystemAccount),
}

/// Names one account of a company.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountKey {
    pub owner: Owner,
    pub unit: Unit,
}

impl AccountKey {
    pub fn stakeholder(stakeholder_id: Uuid, share_class_id: Uuid) -> Self {
        Self {
            owner: Owner::Stakeholder(stakeholder_id),
            unit: Unit::Shares(share_class_id),
        }
    }

    pub fn system(account: SystemAccount, unit: Unit) -> Self {
        Self {
            owner: Owner::System(account),
            unit,
        }
    }

    /// Share accounts never go below zero (so issued never exceeds
    /// authorized); the charter is negative by design, and cash is only
    /// recorded, not custodied, so it is not constrained.
    pub fn must_stay_non_negative(&self) -> bool {
        matches!(self.unit, Unit::Shares(_))
            && self.owner != Owner::System(SystemAccount::Authorized)
    }

    fn owner_kind(&self) -> &'static str {
        match self.owner {
            Owner::Stakeholder(_) => "stakeholder",
            Owner::System(system) => system.as_str(),
        }
    }

    fn stakeholder_id(&self) -> Option<Uuid> {
        match self.owner {
            Owner::Stakeholder(id) => Some(id),
            Owner::System(_) => None,
        }
    }

    fn share_class_id(&self) -> Option<Uuid> {
        match self.unit {
            Unit::Shares(id) => Some(id),
            Unit::Cash(_) => None,
        }
    }

    fn currency(&self) -> Option<&str> {
        match &self.unit {
            Unit::Shares(_) => None,
            Unit::Cash(code) => Some(code.as_str()),
        }
    }

    /// Rebuilds a key from the columns of an `accounts` row.
    pub fn from_columns(
        owner_kind: &str,
        stakeholder_id: Option<Uuid>,
        share_class_id: Option<Uuid>,
        currency: Option<&str>,
    ) -> Self {
        let owner = match (owner_kind, stakeholder_id) {
            ("stakeholder", Some(id)) => Owner::Stakeholder(id),
            (kind, _) => Owner::System(SystemAccount::from_str(kind)),
        };
        let unit = match (share_class_id, currency) {
            (Some(id), _) => Unit::Shares(id),
            (None, Some(code)) => Unit::Cash(CurrencyCode::from_stored(code)),
            (None, None) => unreachable!("CHECK: an account has a class or a currency"),
        };
        Self { owner, unit }
    }
}

impl SystemAccount {
    fn as_str(self) -> &'static str {
        match self {
            Self::Authorized => "authorized",
            Self::AuthorizedUnissued => "authorized_unissued",
            Self::Treasury => "treasury",
            Self::Retired => "retired",
            Self::CompanyCash => "company_cash",
            Self::ExternalCash => "external_cash",
        }
    }

    fn from_str(kind: &str) -> Self {
        match kind {
            "authorized" => Self::Authorized,
            "authorized_unissued" => Self::AuthorizedUnissued,
            "treasury" => Self::Treasury,
            "retired" => Self::Retired,
            "company_cash" => Self::CompanyCash,
            "external_cash" => Self::ExternalCash,
            other => unreachable!("CHECK constraint admits no owner kind {other:?}"),
        }
    }
}

/// An account row, locked for the current transaction.
#[derive(Debug, Clone)]
pub struct LockedAccount {
    pub id: Uuid,
    pub key: AccountKey,
    pub balance: Decimal,
    pub held: Decimal,
}

/// The id of the account, creating its row (at zero) when it is new. One
/// statement when the account exists or is created here (every posting
/// ensures each of its accounts, on the serial saga consumer); a second only
/// when another transaction created it at the same moment.
pub async fn ensure(
    connection: &mut PgConnection,
    company_id: Uuid,
    key: &AccountKey,
) -> sqlx::Result<Uuid> {
    let found: Option<Uuid> = sqlx::query_scalar(
        "WITH existing AS (
             SELECT id FROM accounts
             WHERE company_id = $2 AND owner_kind = $3 AND stakeholder_id IS NOT DISTINCT FROM $4
               AND share_class_id IS NOT DISTINCT FROM $5 AND currency IS NOT DISTINCT FROM $6
         ), inserted AS (
             INSERT INTO accounts (id, company_id, owner_kind, stakeholder_id, share_class_id,
                                   currency, must_stay_non_negative)
             SELECT $1, $2, $3, $4, $5, $6, $7 WHERE NOT EXISTS (SELECT 1 FROM existing)
             ON CONFLICT DO NOTHING
             RETURNING id
         )
         SELECT id FROM existing UNION ALL SELECT id FROM inserted",
    )
    .bind(Uuid::now_v7())
    .bind(company_id)
    .bind(key.owner_kind())
    .bind(key.stakeholder_id())
    .bind(key.share_class_id())
    .bind(key.currency())
    .bind(key.must_stay_non_negative())
    .fetch_optional(&mut *connection)
    .await?;
    if let Some(id) = found {
        return Ok(id);
    }
    // A concurrent insert won the conflict after this statement's snapshot
    // was taken; a new statement sees it.
    find(connection, company_id, key)
        .await?
        .ok_or(sqlx::Error::RowNotFound)
}

/// [`ensure`] for several accounts in one statement (a posting ensures
/// each of its lines' accounts): their ids in the order of `keys`. Keys
/// the statement could not settle (two equal keys both new, or an account
/// another transaction created at the same moment) go through [`ensure`].
pub async fn ensure_many(
    connection: &mut PgConnection,
    company_id: Uuid,
    keys: &[AccountKey],
) -> sqlx::Result<Vec<Uuid>> {
    let found: Vec<(i64, Uuid)> = sqlx::query_as(
        "WITH wanted AS (
             SELECT * FROM unnest($2::uuid[], $3::text[], $4::uuid[], $5::uuid[], $6::text[],
                                  $7::bool[]) WITH ORDINALITY
                  AS wanted (new_id, owner_kind, stakeholder_id, share_class_id, currency,
                             must_stay_non_negative, position)
         ), existing AS (
             SELECT wanted.position, account.id
             FROM wanted CROSS JOIN LATERAL (
                 SELECT id FROM accounts
                 WHERE company_id = $1 AND owner_kind = wanted.owner_kind
                   AND stakeholder_id IS NOT DISTINCT FROM wanted.stakeholder_id
                   AND share_class_id IS NOT DISTINCT FROM wanted.share_class_id
                   AND currency IS NOT DISTINCT FROM wanted.currency
             ) AS account
         ), inserted AS (
             INSERT INTO accounts (id, company_id, owner_kind, stakeholder_id, share_class_id,
                                   currency, must_stay_non_negative)
             SELECT new_id, $1, owner_kind, stakeholder_id, share_class_id, currency,
                    must_stay_non_negative
             FROM wanted
             WHERE NOT EXISTS (SELECT 1 FROM existing WHERE existing.position = wanted.position)
             ORDER BY position
             ON CONFLICT DO NOTHING
             RETURNING id
         )
         SELECT position, id FROM existing
         UNION ALL
         SELECT wanted.position, inserted.id FROM inserted JOIN wanted ON wanted.new_id = inserted.id",
    )
    .bind(company_id)
    .bind(keys.iter().map(|_| Uuid::now_v7()).collect::<Vec<_>>())
    .bind(keys.iter().map(AccountKey::owner_kind).collect::<Vec<_>>())
    .bind(keys.iter().map(AccountKey::stakeholder_id).collect::<Vec<_>>())
    .bind(keys.iter().map(AccountKey::share_class_id).collect::<Vec<_>>())
    .bind(keys.iter().map(AccountKey::currency).collect::<Vec<_>>())
    .bind(
        keys.iter()
            .map(AccountKey::must_stay_non_negative)
            .collect::<Vec<_>>(),
    )
    .fetch_all(&mut *connection)
    .await?;
    let mut ids: Vec<Option<Uuid>> = vec![None; keys.len()];
    for (position, id) in found {
        let index = usize::try_from(position - 1).ok();
        if let Some(slot) = index.and_then(|index| ids.get_mut(index)) {
            *slot = Some(id);
        }
    }
    let mut settled = Vec::with_capacity(keys.len());
    for (key, id) in keys.iter().zip(ids) {
        settled.push(match id {
            Some(id) => id,
            None => ensure(connection, company_id, key).await?,
        });
    }
    Ok(settled)
}

/// The id of an existing account.
pub async fn find(
    connection: &mut PgConnection,
    company_id: Uuid,
    key: &AccountKey,
) -> sqlx::Result<Option<Uuid>> {
    sqlx::query_scalar(
        "SELECT id FROM accounts
         WHERE company_id = $1 AND owner_kind = $2 AND stakeholder_id IS NOT DISTINCT FROM $3
           AND share_class_id IS NOT DISTINCT FROM $4 AND currency IS NOT DISTINCT FROM $5",
    )
    .bind(company_id)
    .bind(key.owner_kind())
    .bind(key.stakeholder_id())
    .bind(key.share_class_id())
    .bind(key.currency())
    .fetch_optional(&mut *connection)
    .await
}

/// Locks the rows in id order (every posting does, so two postings over the
/// same accounts queue instead of deadlocking) and returns them in that order.
pub async fn lock(connection: &mut PgConnection, ids: &[Uuid]) -> sqlx::Result<Vec<LockedAccount>> {
    let rows: Vec<AccountRow> = sqlx::query_as(
        "SELECT id, owner_kind, stakeholder_id, share_class_id, currency, balance, held
         FROM accounts WHERE id = ANY($1) ORDER BY id FOR UPDATE",
    )
    .bind(ids)
    .fetch_all(&mut *connection)
    .await?;
    Ok(rows.into_iter().map(into_locked).collect())
}

type AccountRow = (
    Uuid,
    String,
    Option<Uuid>,
    Option<Uuid>,
    Option<String>,
    Decimal,
    Decimal,
);

fn into_locked(row: AccountRow) -> LockedAccount {
    let (id, owner_kind, stakeholder_id, share_class_id, currency, balance, held) = row;
    LockedAccount {
        id,
        key: AccountKey::from_columns(
            &owner_kind,
            stakeholder_id,
            share_class_id,
            currency.as_deref(),
        ),
        balance,
        held,
    }
}

/// Whether the ledger knows the share class (an authorized adjustment created it).
pub async fn share_class_exists(
    connection: &mut PgConnection,
    company_id: Uuid,
    share_class_id: Uuid,
) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM share_classes WHERE company_id = $1 AND share_class_id = $2)",
    )
    .bind(company_id)
    .bind(share_class_id)
    .fetch_one(&mut *connection)
    .await
}
