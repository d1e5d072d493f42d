//! Conversions between the ledger's domain types and `qapmap.ledger.v1`
//! messages. Parsing incoming messages names the offending proto field.

use qapmap_proto::ledger::v1 as proto;
use qapmap_runtime::ApiError;
use qapmap_runtime::decimal::{self, Currency};
use qapmap_runtime::{date, ids};

use crate::accounts::{AccountKey, Owner, SystemAccount, Unit};
use crate::journal::{EntryType, PostedEntry};

impl From<SystemAccount> for proto::SystemAccount {
    fn from(account: SystemAccount) -> Self {
        match account {
            SystemAccount::Authorized => Self::Authorized,
            SystemAccount::AuthorizedUnissued => Self::AuthorizedUnissued,
            SystemAccount::Treasury => Self::Treasury,
            SystemAccount::Retired => Self::Retired,
            SystemAccount::CompanyCash => Self::CompanyCash,
            SystemAccount::ExternalCash => Self::ExternalCash,
        }
    }
}

pub fn account_to_proto(key: &AccountKey) -> proto::AccountRef {
    let owner = match key.owner {
        Owner::Stakeholder(id) => proto::account_ref::Owner::StakeholderId(id.to_string()),
        Owner::System(system) => {
            proto::account_ref::Owner::System(proto::SystemAccount::from(system) as i32)
        }
    };
    let unit = match key.unit {
        Unit::Shares(class) => proto::account_ref::Unit::ShareClassId(class.to_string()),
        Unit::Cash(currency) => proto::account_ref::Unit::Currency(currency.as_str().to_owned()),
    };
    proto::AccountRef {
        owner: Some(owner),
        unit: Some(unit),
    }
}

/// Parses an account reference found at `field`.
pub fn parse_account(
    field: &str,
    value: Option<&proto::AccountRef>,
) -> Result<AccountKey, ApiError> {
    let value = value.ok_or_else(|| ApiError::invalid(field, "is required"))?;
    let owner = match &value.owner {
        Some(proto::account_ref::Owner::StakeholderId(id)) => {
            Owner::Stakeholder(ids::parse(&format!("{field}.stakeholder_id"), id)?)
        }
        Some(proto::account_ref::Owner::System(system)) => {
            Owner::System(parse_system(&format!("{field}.system"), *system)?)
        }
        None => return Err(ApiError::invalid(format!("{field}.owner"), "is required")),
    };
    let unit = match &value.unit {
        Some(proto::account_ref::Unit::ShareClassId(id)) => {
            Unit::Shares(ids::parse(&format!("{field}.share_class_id"), id)?)
        }
        Some(proto::account_ref::Unit::Currency(code)) => {
            Unit::Cash(Currency::parse(&format!("{field}.currency"), code)?.into())
        }
        None => return Err(ApiError::invalid(format!("{field}.unit"), "is required")),
    };
    Ok(AccountKey { owner, unit })
}

fn parse_system(field: &str, value: i32) -> Result<SystemAccount, ApiError> {
    match proto::SystemAccount::try_from(value) {
        Ok(proto::SystemAccount::Authorized) => Ok(SystemAccount::Authorized),
        Ok(proto::SystemAccount::AuthorizedUnissued) => Ok(SystemAccount::AuthorizedUnissued),
        Ok(proto::SystemAccount::Treasury) => Ok(SystemAccount::Treasury),
        Ok(proto::SystemAccount::Retired) => Ok(SystemAccount::Retired),
        Ok(proto::SystemAccount::CompanyCash) => Ok(SystemAccount::CompanyCash),
        Ok(proto::SystemAccount::ExternalCash) => Ok(SystemAccount::ExternalCash),
        Ok(proto::SystemAccount::Unspecified) | Err(_) => {
            Err(ApiError::invalid(field, "must name a system account"))
        }
    }
}

impl From<EntryType> for proto::EntryType {
    fn from(entry_type: EntryType) -> Self {
        match entry_type {
            EntryType::Issuance => Self::Issuance,
            EntryType::Exercise => Self::Exercise,
            EntryType::Repurchase => Self::Repurchase,
            EntryType::Transfer => Self::Transfer,
            EntryType::Cancellation => Self::Cancellation,
            EntryType::Retirement => Self::Retirement,
            EntryType::AuthorizedSharesAdjustment => Self::AuthorizedSharesAdjustment,
            EntryType::Payment => Self::Payment,
            EntryType::Reversal => Self::Reversal,
        }
    }
}

/// Parses the entry type of a general journal entry (field `entry_type`).
pub fn parse_entry_type(value: i32) -> Result<EntryType, ApiError> {
    use proto::EntryType as P;
    match P::try_from(value) {
        Ok(P::Issuance) => Ok(EntryType::Issuance),
        Ok(P::Exercise) => Ok(EntryType::Exercise),
        Ok(P::Repurchase) => Ok(EntryType::Repurchase),
        Ok(P::Transfer) => Ok(EntryType::Transfer),
        Ok(P::Cancellation) => Ok(EntryType::Cancellation),
        Ok(P::Retirement) => Ok(EntryType::Retirement),
        Ok(P::Payment) => Ok(EntryType::Payment),
        Ok(P::AuthorizedSharesAdjustment | P::Reversal) => Err(ApiError::invalid(
            "entry_type",
            "use AdjustAuthorizedShares or ReverseEntry for this type",
        )),
        Ok(P::Unspecified) | Err(_) => Err(ApiError::invalid("entry_type", "is required")),
    }
}

pub fn entry_to_proto(entry: &PostedEntry) -> proto::JournalEntry {
    proto::JournalEntry {
        id: entry.id.to_string(),
        company_id: entry.company_id.to_string(),
        sequence: entry.sequence,
        entry_type: proto::EntryType::from(entry.entry_type) as i32,
        effective_date: Some(date::to_proto(entry.effective_date)),
        recorded_at: Some(timestamp(entry.recorded_at)),
        cause: entry.cause.clone(),
        lines: entry
            .lines
            .iter()
            .map(|line| proto::EntryLine {
                account: Some(account_to_proto(&line.account)),
                amount: Some(decimal::to_proto(line.amount)),
            })
            .collect(),
        reverses_entry_id: entry
            .reverses_entry_id
            .map(|id| id.to_string())
            .unwrap_or_default(),
        memo: entry.memo.clone(),
    }
}

pub fn timestamp(at: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or_default(),
    }
}

pub fn hold_to_proto(hold: &crate::holds::Hold) -> proto::Hold {
    use crate::holds::HoldStatus;
    let status = match hold.status {
        HoldStatus::Active => proto::HoldStatus::Active,
        HoldStatus::Released => proto::HoldStatus::Released,
        HoldStatus::Consumed => proto::HoldStatus::Consumed,
    };
    proto::Hold {
        id: hold.id.to_string(),
        company_id: hold.company_id.to_string(),
        account: Some(account_to_proto(&hold.account)),
        quantity: Some(decimal::to_proto(hold.quantity)),
        cause: hold.cause.clone(),
        status: status as i32,
    }
}
