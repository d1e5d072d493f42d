//! The audit trail: one row per command, written in the command's own
//! transaction (so it exists exactly when the command's effect does), naming
//! who made it, for which company, when, under which request id, and the
//! ids of the events it produced. Read through `qapmap.ops.v1.AuditService`,
//! which every process serves.
//!
//! The event ids need no bookkeeping by the command: `outbox::enqueue`
//! appends each message id to the transaction-local setting
//! `qapmap.event_ids`, which the audit insert reads.

use chrono::{DateTime, Utc};
use qapmap_proto::ops::v1 as proto;
use qapmap_proto::ops::v1::audit_service_server::{AuditService, AuditServiceServer};
use sqlx::{PgConnection, PgPool, Row};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::auth::{AuthorizedCall, current_call};
use crate::error::ApiError;
use crate::pagination::PageRequest;

/// The SQL that turns the transaction's `qapmap.event_ids` into a `uuid[]`.
pub const EVENT_IDS_SQL: &str = "coalesce(string_to_array(nullif(current_setting('qapmap.event_ids', true), ''), ',')::uuid[], '{}')";

/// Who a command is recorded against: the current call, or `fallback`
/// (a subject such as the saga initiator) when none is in scope.
#[derive(Debug, Clone)]
pub struct Actor {
    pub subject: String,
    pub roles: String,
}

impl Actor {
    /// The caller of the gRPC call being served, if any.
    pub fn current() -> Option<Self> {
        current_call().map(|call| Self::of(&call))
    }

    /// The caller of the gRPC call being served, or `system` outside one.
    pub fn current_or_system() -> Self {
        Self::current().unwrap_or_else(|| Self {
            subject: "system".to_owned(),
            roles: String::new(),
        })
    }

    pub fn of(call: &AuthorizedCall) -> Self {
        Self {
            subject: call.caller.subject.clone(),
            roles: call.caller.roles_text(),
        }
    }
}

/// Records a command in `transaction` (call it last, after the events).
pub async fn record(
    transaction: &mut PgConnection,
    company_id: Uuid,
    actor: &Actor,
    method: &str,
    request_id: &str,
) -> sqlx::Result<()> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO audit_log (audit_id, company_id, subject, roles, method, request_id, event_ids, trace_id)
         VALUES ($1, $2, $3, $4, $5, $6, {EVENT_IDS_SQL}, $7)"
    )))
    .bind(Uuid::now_v7())
    .bind(company_id)
    .bind(&actor.subject)
    .bind(&actor.roles)
    .bind(method)
    .bind(request_id)
    .bind(crate::trace_context::current().trace_id)
    .execute(&mut *transaction)
    .await?;
    Ok(())
}

/// One row of the trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub audit_id: Uuid,
    pub company_id: Uuid,
    pub subject: String,
    pub roles: String,
    pub method: String,
    pub request_id: String,
    pub event_ids: Vec<Uuid>,
    pub trace_id: String,
    pub recorded_at: DateTime<Utc>,
}

/// A company's records, newest first, confined to that company.
pub async fn list(
    pool: &PgPool,
    company_id: Uuid,
    subject: Option<&str>,
    page: &PageRequest,
) -> Result<Vec<AuditRecord>, ApiError> {
    let before = page
        .after
        .as_deref()
        .map(|key| {
            Uuid::parse_str(key)
                .map_err(|_| ApiError::invalid("page_token", "is not a token this service issued"))
        })
        .transpose()?;
    let mut transaction = crate::tenancy::begin(pool, company_id).await?;
    let rows = sqlx::query(
        "SELECT audit_id, company_id, subject, roles, method, request_id, event_ids, trace_id, recorded_at
         FROM audit_log
         WHERE company_id = $1
           AND ($2::uuid IS NULL OR audit_id < $2)
           AND ($3::text IS NULL OR subject = $3)
         ORDER BY audit_id DESC
         LIMIT $4",
    )
    .bind(company_id)
    .bind(before)
    .bind(subject)
    .bind(page.fetch_limit())
    .fetch_all(&mut *transaction)
    .await?;
    transaction.commit().await?;
    rows.into_iter()
        .map(|row| {
            Ok(AuditRecord {
                audit_id: row.try_get("audit_id")?,
                company_id: row.try_get("company_id")?,
                subject: row.try_get("subject")?,
                roles: row.try_get("roles")?,
                method: row.try_get("method")?,
                request_id: row.try_get("request_id")?,
                event_ids: row.try_get("event_ids")?,
                trace_id: row.try_get("trace_id")?,
                recorded_at: row.try_get("recorded_at")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(ApiError::from)
}

/// `qapmap.ops.v1.AuditService`.
#[derive(Debug, Clone)]
pub struct AuditApi {
    pool: PgPool,
}

impl AuditApi {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    pub fn into_service(self) -> AuditServiceServer<Self> {
        AuditServiceServer::new(self)
    }
}

/// Longest subject filter accepted.
const MAX_SUBJECT_FILTER: usize = 256;

#[tonic::async_trait]
impl AuditService for AuditApi {
    async fn list_audit_records(
        &self,
        request: Request<proto::ListAuditRecordsRequest>,
    ) -> Result<Response<proto::ListAuditRecordsResponse>, Status> {
        let request = request.into_inner();
        let company_id = crate::ids::parse("company_id", &request.company_id)?;
        if request.subject.len() > MAX_SUBJECT_FILTER {
            return Err(ApiError::invalid("subject", "must be at most 256 characters").into());
        }
        let subject = Some(request.subject.as_str()).filter(|subject| !subject.is_empty());
        let page = PageRequest::parse(request.page_size, &request.page_token)?;
        let mut records = list(&self.pool, company_id, subject, &page).await?;
        let next_page_token = page.finish(&mut records, |record| record.audit_id.to_string());
        Ok(Response::new(proto::ListAuditRecordsResponse {
            records: records.into_iter().map(proto::AuditRecord::from).collect(),
            next_page_token,
        }))
    }
}

impl From<AuditRecord> for proto::AuditRecord {
    fn from(record: AuditRecord) -> Self {
        Self {
            audit_id: record.audit_id.to_string(),
            company_id: record.company_id.to_string(),
            subject: record.subject,
            roles: record
                .roles
                .split(',')
                .filter(|role| !role.is_empty())
                .map(str::to_owned)
                .collect(),
            method: record.method,
            request_id: record.request_id,
            event_ids: record.event_ids.iter().map(Uuid::to_string).collect(),
            recorded_at: Some(prost_types::Timestamp {
                seconds: record.recorded_at.timestamp(),
                nanos: i32::try_from(record.recorded_at.timestamp_subsec_nanos()).unwrap_or(0),
            }),
            trace_id: record.trace_id,
        }
    }
}
