//! Saga rows and step rows in Postgres. Every function takes the caller's
//! connection, so a transition and the commands it sends commit together.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::context::SagaContext;
use crate::machine::{Awaiting, Saga, SagaState, StepRecord, StepStatus};
use crate::sagas;

/// Who started a saga, as their token said: every command of the saga
/// carries it, so services can check it again (and audit it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Initiator {
    pub subject: String,
    /// Comma-separated, as `Caller::roles_text` writes them.
    pub roles: String,
    /// Set when an employee started the saga for themselves: the saga is
    /// confined to this stakeholder's own records.
    pub stakeholder_id: Option<Uuid>,
}

impl Initiator {
    /// The roles as a list, for the `Initiator` message.
    pub fn role_list(&self) -> Vec<String> {
        self.roles
            .split(',')
            .filter(|role| !role.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

/// A saga with the facts that never change after it starts.
#[derive(Debug, Clone)]
pub struct StoredSaga {
    pub id: Uuid,
    pub company_id: Uuid,
    pub request_id: String,
    pub initiator: Initiator,
    pub trace_id: String,
    pub traceparent: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub saga: Saga,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("saga row is corrupt: {0}")]
    Corrupt(String),
}

/// Facts recorded when a saga starts.
#[derive(Debug)]
pub struct NewSaga<'a> {
    pub id: Uuid,
    pub company_id: Uuid,
    pub request_id: &'a str,
    pub request: &'a [u8],
    pub initiator: &'a Initiator,
    pub trace_id: &'a str,
    pub traceparent: &'a str,
}

pub async fn insert(
    connection: &mut PgConnection,
    new: &NewSaga<'_>,
    saga: &Saga,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let context = serde_json::to_value(&saga.context)
        .map_err(|error| StoreError::Corrupt(error.to_string()))?;
    sqlx::query(
        "INSERT INTO sagas (id, company_id, saga_type, state, state_reason, request_id, request, context,
                            cursor_step, attempts, awaiting, wake_at, initiator, initiator_roles,
                            initiator_stakeholder_id, trace_id, traceparent, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $18)",
    )
    .bind(new.id)
    .bind(new.company_id)
    .bind(saga.definition.saga_type)
    .bind(saga.state.as_str())
    .bind(&saga.state_reason)
    .bind(new.request_id)
    .bind(new.request)
    .bind(context)
    .bind(cursor_as_i32(saga.cursor))
    .bind(i32::try_from(saga.attempts).unwrap_or(i32::MAX))
    .bind(saga.awaiting.as_str())
    .bind(saga.wake_at)
    .bind(&new.initiator.subject)
    .bind(&new.initiator.roles)
    .bind(new.initiator.stakeholder_id)
    .bind(new.trace_id)
    .bind(new.traceparent)
    .bind(now)
    .execute(&mut *connection)
    .await?;
    for view in saga.definition.steps() {
        sqlx::query(
            "INSERT INTO saga_steps (saga_id, company_id, step_index, name, service, kind, status)
             VALUES ($1, $2, $3, $4, $5, $6, 'pending')",
        )
        .bind(new.id)
        .bind(new.company_id)
        .bind(cursor_as_i32(view.index))
        .bind(view.info.name)
        .bind(view.info.service)
        .bind(view.kind.as_str())
        .execute(&mut *connection)
        .await?;
    }
    save_steps(connection, new.id, saga).await
}

/// Writes the saga's mutable state and its steps.
pub async fn save(
    connection: &mut PgConnection,
    id: Uuid,
    saga: &Saga,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let context = serde_json::to_value(&saga.context)
        .map_err(|error| StoreError::Corrupt(error.to_string()))?;
    sqlx::query(
        "UPDATE sagas SET state = $2, state_reason = $3, context = $4, cursor_step = $5, attempts = $6,
                          awaiting = $7, wake_at = $8, updated_at = $9
         WHERE id = $1",
    )
    .bind(id)
    .bind(saga.state.as_str())
    .bind(&saga.state_reason)
    .bind(context)
    .bind(cursor_as_i32(saga.cursor))
    .bind(i32::try_from(saga.attempts).unwrap_or(i32::MAX))
    .bind(saga.awaiting.as_str())
    .bind(saga.wake_at)
    .bind(now)
    .execute(&mut *connection)
    .await?;
    save_steps(connection, id, saga).await
}

async fn save_steps(
    connection: &mut PgConnection,
    id: Uuid,
    saga: &Saga,
) -> Result<(), StoreError> {
    for (index, step) in saga.steps.iter().enumerate() {
        sqlx::query(
            "UPDATE saga_steps SET status = $3, attempts = $4, started_at = $5, finished_at = $6, last_error = $7
             WHERE saga_id = $1 AND step_index = $2",
        )
        .bind(id)
        .bind(cursor_as_i32(index))
        .bind(step.status.as_str())
        .bind(i32::try_from(step.attempts).unwrap_or(i32::MAX))
        .bind(step.started_at)
        .bind(step.finished_at)
        .bind(&step.last_error)
        .execute(&mut *connection)
        .await?;
    }
    Ok(())
}

fn cursor_as_i32(index: usize) -> i32 {
    i32::try_from(index).unwrap_or(i32::MAX)
}

const SAGA_COLUMNS: &str =
    "id, company_id, saga_type, state, state_reason, request_id, context, cursor_step,
    attempts, awaiting, wake_at, initiator, initiator_roles, initiator_stakeholder_id, trace_id,
    traceparent, created_at, updated_at";

/// Loads one saga; `for_update` locks its row until the transaction ends.
pub async fn load(
    connection: &mut PgConnection,
    id: Uuid,
    for_update: bool,
) -> Result<Option<StoredSaga>, StoreError> {
    let lock = if for_update { " FOR UPDATE" } else { "" };
    let sql = format!("SELECT {SAGA_COLUMNS} FROM sagas WHERE id = $1{lock}");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(&mut *connection)
        .await?;
    match row {
        Some(row) => Ok(Some(from_row(connection, &row).await?)),
        None => Ok(None),
    }
}

/// The saga a company started with `request_id`, and the request it carried.
pub async fn find_by_request(
    connection: &mut PgConnection,
    company_id: Uuid,
    request_id: &str,
) -> Result<Option<(Uuid, Vec<u8>)>, StoreError> {
    let found =
        sqlx::query_as("SELECT id, request FROM sagas WHERE company_id = $1 AND request_id = $2")
            .bind(company_id)
            .bind(request_id)
            .fetch_optional(&mut *connection)
            .await?;
    Ok(found)
}

/// Ids of sagas whose wake time has come, locked (skipping ones another
/// orchestrator holds) until the transaction ends.
pub async fn lock_due(
    connection: &mut PgConnection,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<Uuid>, StoreError> {
    let ids = sqlx::query_scalar(
        "SELECT id FROM sagas WHERE wake_at IS NOT NULL AND wake_at <= $1
         ORDER BY wake_at LIMIT $2 FOR UPDATE SKIP LOCKED",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(&mut *connection)
    .await?;
    Ok(ids)
}

/// Filters of ListSagas.
#[derive(Debug, Default, Clone)]
pub struct ListFilter {
    pub company_id: Uuid,
    /// Only sagas an employee started for themselves (self-service).
    pub initiator_stakeholder_id: Option<Uuid>,
    pub state: Option<SagaState>,
    pub saga_type: Option<&'static str>,
    pub created_from: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    /// Keyset: rows strictly after (created_at, id) in descending order.
    pub after: Option<(DateTime<Utc>, Uuid)>,
    pub limit: i64,
}

pub async fn list(
    connection: &mut PgConnection,
    filter: &ListFilter,
) -> Result<Vec<StoredSaga>, StoreError> {
    let sql = format!(
        "SELECT {SAGA_COLUMNS} FROM sagas
         WHERE company_id = $1
           AND ($2::text IS NULL OR state = $2)
           AND ($3::text IS NULL OR saga_type = $3)
           AND ($4::timestamptz IS NULL OR created_at >= $4)
           AND ($5::timestamptz IS NULL OR created_at < $5)
           AND ($6::timestamptz IS NULL OR (created_at, id) < ($6, $7))
           AND ($9::uuid IS NULL OR initiator_stakeholder_id = $9)
         ORDER BY created_at DESC, id DESC
         LIMIT $8"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(filter.company_id)
        .bind(filter.state.map(SagaState::as_str))
        .bind(filter.saga_type)
        .bind(filter.created_from)
        .bind(filter.created_before)
        .bind(filter.after.map(|(created_at, _)| created_at))
        .bind(filter.after.map(|(_, id)| id))
        .bind(filter.limit)
        .bind(filter.initiator_stakeholder_id)
        .fetch_all(&mut *connection)
        .await?;
    let mut sagas = Vec::with_capacity(rows.len());
    for row in &rows {
        sagas.push(from_row(connection, row).await?);
    }
    Ok(sagas)
}

async fn from_row(
    connection: &mut PgConnection,
    row: &sqlx::postgres::PgRow,
) -> Result<StoredSaga, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(what.to_owned());
    let id: Uuid = row.try_get("id")?;
    let saga_type: String = row.try_get("saga_type")?;
    let definition = sagas::by_type(&saga_type).ok_or_else(|| corrupt("saga_type"))?;
    let context: SagaContext = serde_json::from_value(row.try_get("context")?)
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let state: String = row.try_get("state")?;
    let awaiting: String = row.try_get("awaiting")?;
    let cursor: i32 = row.try_get("cursor_step")?;
    let attempts: i32 = row.try_get("attempts")?;
    let saga = Saga {
        definition,
        state: SagaState::parse(&state).ok_or_else(|| corrupt("state"))?,
        state_reason: row.try_get("state_reason")?,
        context,
        cursor: usize::try_from(cursor).map_err(|_| corrupt("cursor_step"))?,
        attempts: u32::try_from(attempts).map_err(|_| corrupt("attempts"))?,
        awaiting: Awaiting::parse(&awaiting).ok_or_else(|| corrupt("awaiting"))?,
        wake_at: row.try_get("wake_at")?,
        steps: load_steps(connection, id).await?,
    };
    if saga.steps.len() != definition.step_count() {
        return Err(corrupt("step count"));
    }
    Ok(StoredSaga {
        id,
        company_id: row.try_get("company_id")?,
        request_id: row.try_get("request_id")?,
        initiator: Initiator {
            subject: row.try_get("initiator")?,
            roles: row.try_get("initiator_roles")?,
            stakeholder_id: row.try_get("initiator_stakeholder_id")?,
        },
        trace_id: row.try_get("trace_id")?,
        traceparent: row.try_get("traceparent")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        saga,
    })
}

async fn load_steps(
    connection: &mut PgConnection,
    id: Uuid,
) -> Result<Vec<StepRecord>, StoreError> {
    let rows = sqlx::query(
        "SELECT status, attempts, started_at, finished_at, last_error FROM saga_steps
         WHERE saga_id = $1 ORDER BY step_index",
    )
    .bind(id)
    .fetch_all(&mut *connection)
    .await?;
    rows.iter()
        .map(|row| {
            let status: String = row.try_get("status")?;
            let attempts: i32 = row.try_get("attempts")?;
            Ok(StepRecord {
                status: StepStatus::parse(&status)
                    .ok_or_else(|| StoreError::Corrupt("step status".to_owned()))?,
                attempts: u32::try_from(attempts).unwrap_or_default(),
                started_at: row.try_get("started_at")?,
                finished_at: row.try_get("finished_at")?,
                last_error: row.try_get("last_error")?,
            })
        })
        .collect()
}
