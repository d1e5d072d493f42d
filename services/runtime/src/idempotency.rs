//! Idempotent mutating calls, keyed by the caller's `request_id` per company.
//!
//! Inside the transaction that performs the change:
//! 1. [`begin`] takes a transaction-scoped advisory lock on the key, so two
//!    concurrent repeats run one after the other, and returns the stored
//!    response if the request was already handled;
//! 2. the handler does its work;
//! 3. [`finish`] stores the response, and the audit record, before commit.
//!
//! [`begin`] also confines the transaction to the key's company (see
//! `tenancy`): every command runs under row-level security.
//!
//! A failed request stores nothing, so the caller may fix and retry it.

use prost::Message;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::audit::{Actor, EVENT_IDS_SQL};
use crate::error::ApiError;

/// Longest request id accepted.
pub const MAX_REQUEST_ID_LENGTH: usize = 128;

/// Identifies one mutating request.
#[derive(Debug, Clone)]
pub struct RequestKey {
    pub company_id: Uuid,
    pub request_id: String,
    /// The full gRPC method name.
    pub method: &'static str,
    /// The encoded request.
    pub request: Vec<u8>,
}

impl RequestKey {
    /// Validates `request_id` (field `request_id`) and captures the request.
    pub fn new<M: Message>(
        company_id: Uuid,
        request_id: &str,
        method: &'static str,
        request: &M,
    ) -> Result<Self, ApiError> {
        validate_request_id(request_id)?;
        Ok(Self {
            company_id,
            request_id: request_id.to_owned(),
            method,
            request: request.encode_to_vec(),
        })
    }
}

/// A request id is 1–128 printable ASCII characters.
pub fn validate_request_id(request_id: &str) -> Result<(), ApiError> {
    if request_id.is_empty() {
        return Err(ApiError::invalid("request_id", "is required"));
    }
    if request_id.len() > MAX_REQUEST_ID_LENGTH || !request_id.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(ApiError::invalid(
            "request_id",
            "must be 1-128 printable ASCII characters",
        ));
    }
    Ok(())
}

/// Locks the key for this transaction and returns the stored response of an
/// earlier identical request, if any. The same id with a different request
/// (or method) is ALREADY_EXISTS.
pub async fn begin<R: Message + Default>(
    transaction: &mut PgConnection,
    key: &RequestKey,
) -> Result<Option<R>, ApiError> {
    // Confines the transaction to the company (row-level security, see
    // `tenancy`) in the same round trip as the lock.
    sqlx::query(
        "SELECT set_config('role', 'qapmap_app', true),
                set_config('qapmap.company_id', $1::text, true),
                pg_advisory_xact_lock(hashtextextended($1::text || '/' || $2, 0))",
    )
    .bind(key.company_id)
    .bind(&key.request_id)
    .execute(&mut *transaction)
    .await?;
    let stored: Option<(String, Vec<u8>, Vec<u8>)> = sqlx::query_as(
        "SELECT method, request, response FROM idempotent_requests
         WHERE company_id = $1 AND request_id = $2",
    )
    .bind(key.company_id)
    .bind(&key.request_id)
    .fetch_optional(&mut *transaction)
    .await?;
    let Some((method, request, response)) = stored else {
        return Ok(None);
    };
    if method != key.method || request != key.request {
        return Err(ApiError::AlreadyExists(format!(
            "request_id {:?} was already used for a different request",
            key.request_id
        )));
    }
    R::decode(response.as_slice()).map(Some).map_err(|error| {
        ApiError::internal(anyhow::anyhow!("stored response does not decode: {error}"))
    })
}

/// Stores the response of a request whose audit record was written with
/// its effect, in an earlier transaction: a payment's outcome (and its
/// event) must commit before its response can be stored, and its record
/// names that event.
pub async fn store_response<R: Message>(
    transaction: &mut PgConnection,
    key: &RequestKey,
    response: &R,
) -> Result<(), ApiError> {
    sqlx::query(
        "INSERT INTO idempotent_requests (company_id, request_id, method, request, response)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(key.company_id)
    .bind(&key.request_id)
    .bind(key.method)
    .bind(&key.request)
    .bind(response.encode_to_vec())
    .execute(&mut *transaction)
    .await?;
    Ok(())
}

/// Stores the response of a request handled in this transaction.
pub async fn finish<R: Message>(
    transaction: &mut PgConnection,
    key: &RequestKey,
    response: &R,
) -> Result<(), ApiError> {
    // The audit record rides in the same statement: one round trip.
    let actor = Actor::current_or_system();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "WITH stored AS (
             INSERT INTO idempotent_requests (company_id, request_id, method, request, response)
             VALUES ($1, $2, $3, $4, $5)
         )
         INSERT INTO audit_log (audit_id, company_id, subject, roles, method, request_id, event_ids, trace_id)
         VALUES ($6, $1, $7, $8, $3, $2, {EVENT_IDS_SQL}, $9)"
    )))
    .bind(key.company_id)
    .bind(&key.request_id)
    .bind(key.method)
    .bind(&key.request)
    .bind(response.encode_to_vec())
    .bind(Uuid::now_v7())
    .bind(&actor.subject)
    .bind(&actor.roles)
    .bind(crate::trace_context::current().trace_id)
    .execute(&mut *transaction)
    .await?;
    Ok(())
}
