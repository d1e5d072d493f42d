//! The equity service's commands and queries, one module per aggregate. Each
//! command parses its request first (bad input writes nothing), then runs in
//! one transaction: idempotency begin, row locks, rule checks, writes, events
//! to the log and outbox, idempotency finish, commit. A refused command rolls
//! back, so nothing of it is written.

pub mod award_changes;
pub mod awards;
pub mod plans;
pub mod programs;
pub mod share_classes;

use chrono::NaiveDate;
use prost::Message;
use qapmap_runtime::ApiError;
use qapmap_runtime::idempotency::{self, RequestKey};
use qapmap_runtime::messaging::Subjects;
use qapmap_runtime::tenancy;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::domain::CancellationBehavior;

/// What every command needs: the database and the subject names.
#[derive(Debug, Clone)]
pub struct Equity {
    pub pool: PgPool,
    pub subjects: Subjects,
}

/// Why a command did not happen. Converted to `ApiError` in `grpc`.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// No such record for this company (another company's ids included).
    #[error("{resource} {id} not found")]
    NotFound { resource: &'static str, id: Uuid },
    /// A business rule refused it; `reason` is a stable snake_case code.
    #[error("{description}")]
    Refused {
        reason: &'static str,
        description: String,
    },
    /// The caller's expected version is not the current one.
    #[error("expected version {expected}, but the current version is {actual}")]
    StaleVersion { expected: i64, actual: i64 },
    /// A unique name is taken.
    #[error("{0}")]
    Duplicate(String),
    /// Bad input or an idempotency conflict, already in API terms.
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl CommandError {
    pub fn refused(reason: &'static str, description: impl Into<String>) -> Self {
        Self::Refused {
            reason,
            description: description.into(),
        }
    }
}

/// Checks optimistic concurrency; 0 means the caller skips the check.
pub fn check_version(expected: i64, actual: i64) -> Result<(), CommandError> {
    if expected != 0 && expected != actual {
        return Err(CommandError::StaleVersion { expected, actual });
    }
    Ok(())
}

/// A command's transaction, or the response of an earlier identical request.
#[derive(Debug)]
pub enum Started<R> {
    Repeat(R),
    Fresh(Transaction<'static, Postgres>),
}

/// Opens the transaction and claims the request id.
pub async fn start<R: Message + Default>(
    equity: &Equity,
    key: &RequestKey,
) -> Result<Started<R>, CommandError> {
    let mut transaction = equity.pool.begin().await?;
    match idempotency::begin::<R>(&mut transaction, key).await? {
        Some(stored) => Ok(Started::Repeat(stored)),
        None => Ok(Started::Fresh(transaction)),
    }
}

/// A query's transaction, confined to `company_id` (row-level security,
/// see `qapmap_runtime::tenancy`): reads hold the same second line as
/// commands. Commit it once read.
pub async fn read(
    equity: &Equity,
    company_id: Uuid,
) -> Result<Transaction<'static, Postgres>, CommandError> {
    Ok(tenancy::begin(&equity.pool, company_id).await?)
}

/// Stores the response with the request id and commits.
pub async fn finish<R: Message>(
    mut transaction: Transaction<'static, Postgres>,
    key: &RequestKey,
    response: R,
) -> Result<R, CommandError> {
    idempotency::finish(&mut transaction, key, &response).await?;
    transaction.commit().await?;
    Ok(response)
}

/// The full gRPC method name of an `EquityService` call, the idempotency
/// key's method, built at compile time.
macro_rules! method {
    ($name:literal) => {
        concat!("/qapmap.equity.v1.EquityService/", $name)
    };
}
pub(crate) use method;

/// How a cancelled quantity splits between the pool and retirement:
/// (returned, retired).
pub fn split_cancelled(
    behavior: CancellationBehavior,
    quantity: rust_decimal::Decimal,
) -> (rust_decimal::Decimal, rust_decimal::Decimal) {
    match behavior {
        CancellationBehavior::ReturnToPool => (quantity, rust_decimal::Decimal::ZERO),
        CancellationBehavior::Retire => (rust_decimal::Decimal::ZERO, quantity),
    }
}

/// Refuses a date earlier than what it depends on.
pub fn not_before(date: NaiveDate, earliest: NaiveDate, what: &str) -> Result<(), CommandError> {
    if date < earliest {
        return Err(CommandError::refused(
            "dated_before_dependency",
            format!("{date} is before the {what} ({earliest})"),
        ));
    }
    Ok(())
}
