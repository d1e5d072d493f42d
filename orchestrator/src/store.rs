//! Saga rows and step rows in Postgres. Every function takes the caller's
//! connection, so a transition and the commands it sends commit together.

use chrono::{DateTime, Utc};
use qapmap_runtime::outbox::OutboxMessage;
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

/// Writes a new saga, its steps and its first command (if any): one
/// statement.
pub async fn insert(
    connection: &mut PgConnection,
    new: &NewSaga<'_>,
    saga: &Saga,
    command: Option<&OutboxMessage>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let context = serde_json::to_value(&saga.context)
        .map_err(|error| StoreError::Corrupt(error.to_string()))?;
    let views: Vec<_> = saga.definition.steps().collect();
    let steps = StepColumns::of(saga.steps.iter().enumerate());
    // One statement: the saga, all its steps and its command (every
    // statement costs CPU on both sides, and the machine's CPU is what
    // bounds the saga rate).
    let sql = format!(
        "WITH saga AS (
             INSERT INTO sagas (id, company_id, saga_type, state, state_reason, request_id, request,
                                context, cursor_step, attempts, awaiting, due_at, wake_at,
                                initiator, initiator_roles, initiator_stakeholder_id, trace_id,
                                traceparent, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12, $13, $14, $15, $16, $17,
                     $18, $18)
         ), steps AS (
             INSERT INTO saga_steps (saga_id, company_id, step_index, name, service, kind, status,
                                     attempts, started_at, finished_at, last_error)
             SELECT $1, $2, step.*
             FROM unnest($19::int[], $20::text[], $21::text[], $22::text[], $23::text[], $24::int[],
                         $25::timestamptz[], $26::timestamptz[], $27::text[])
                  AS step (step_index, name, service, kind, status, attempts, started_at,
                           finished_at, last_error)
         ), {}",
        command_sql(28)
    );
    let query = sqlx::query(sqlx::AssertSqlSafe(sql))
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
        .bind(saga.due_at)
        .bind(&new.initiator.subject)
        .bind(&new.initiator.roles)
        .bind(new.initiator.stakeholder_id)
        .bind(new.trace_id)
        .bind(new.traceparent)
        .bind(now)
        .bind(&steps.index)
        .bind(views.iter().map(|view| view.info.name).collect::<Vec<_>>())
        .bind(
            views
                .iter()
                .map(|view| view.info.service)
                .collect::<Vec<_>>(),
        )
        .bind(
            views
                .iter()
                .map(|view| view.kind.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(&steps.status)
        .bind(&steps.attempts)
        .bind(&steps.started_at)
        .bind(&steps.finished_at)
        .bind(&steps.last_error);
    bind_command(query, command)?
        .execute(&mut *connection)
        .await?;
    Ok(())
}

/// Writes the saga's mutable state, the steps that differ from the saga as
/// loaded (`before`), and the command to send (if any), in one statement:
/// [`save_many`] for one saga.
pub async fn save(
    connection: &mut PgConnection,
    id: Uuid,
    (before, saga): (&Saga, &Saga),
    command: Option<&OutboxMessage>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let commands: Vec<&OutboxMessage> = command.into_iter().collect();
    save_many(connection, &[(id, before, saga)], &commands, now).await
}

/// Writes sagas' mutable state, the steps that differ from each saga as
/// loaded, and their commands (in the order given, which is the order the
/// relay publishes them in), in one statement. Each change is (id, saga as
/// loaded, saga now). Like [`qapmap_runtime::outbox::enqueue`], it wakes
/// the relay and notes the commands' ids for an audit record of the
/// transaction (an operator's abort or retry).
pub async fn save_many(
    connection: &mut PgConnection,
    changes: &[(Uuid, &Saga, &Saga)],
    commands: &[&OutboxMessage],
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let mut sagas = SagaColumns::default();
    let mut steps = StepColumns::default();
    let mut step_saga_ids = Vec::new();
    for (id, before, saga) in changes {
        sagas.push(*id, saga)?;
        let changed = saga
            .steps
            .iter()
            .enumerate()
            .filter(|(index, step)| before.steps.get(*index) != Some(*step));
        for (index, step) in changed {
            step_saga_ids.push(*id);
            steps.push(index, step);
        }
    }
    let mut command_headers = Vec::with_capacity(commands.len());
    for command in commands {
        command_headers.push(
            serde_json::to_value(&command.headers)
                .map_err(|error| StoreError::Corrupt(error.to_string()))?,
        );
    }
    let sql = format!(
        "WITH saga AS (
             UPDATE sagas SET state = changed.state, state_reason = changed.state_reason,
                              context = changed.context, cursor_step = changed.cursor_step,
                              attempts = changed.attempts, awaiting = changed.awaiting,
                              due_at = changed.due_at, wake_at = {WAKE_AT_KEPT_IF_EARLIER},
                              updated_at = $1
             FROM unnest($2::uuid[], $3::text[], $4::text[], $5::jsonb[], $6::int[], $7::int[],
                         $8::text[], $9::timestamptz[])
                  AS changed (id, state, state_reason, context, cursor_step, attempts, awaiting,
                              due_at)
             WHERE sagas.id = changed.id
         ), steps AS (
             UPDATE saga_steps SET status = step.status, attempts = step.attempts,
                                   started_at = step.started_at, finished_at = step.finished_at,
                                   last_error = step.last_error
             FROM unnest($10::uuid[], $11::int[], $12::text[], $13::int[], $14::timestamptz[],
                         $15::timestamptz[], $16::text[])
                  AS step (saga_id, step_index, status, attempts, started_at, finished_at,
                           last_error)
             WHERE saga_steps.saga_id = step.saga_id AND saga_steps.step_index = step.step_index
         ), commands AS (
             INSERT INTO outbox (message_id, company_id, subject, payload, headers, partition_key)
             SELECT command.message_id, command.company_id, command.subject, command.payload,
                    command.headers, command.partition_key
             FROM unnest($17::uuid[], $18::uuid[], $19::text[], $20::bytea[], $21::jsonb[],
                         $22::text[]) WITH ORDINALITY
                  AS command (message_id, company_id, subject, payload, headers, partition_key,
                              position)
             ORDER BY command.position
         )
         SELECT {},
                set_config('qapmap.event_ids',
                           concat_ws(',', nullif(current_setting('qapmap.event_ids', true), ''),
                                     array_to_string($17::uuid[], ',')),
                           true)
         WHERE cardinality($17::uuid[]) > 0",
        qapmap_runtime::notify_relay_sql!()
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(now)
        .bind(&sagas.id)
        .bind(&sagas.state)
        .bind(&sagas.state_reason)
        .bind(&sagas.context)
        .bind(&sagas.cursor)
        .bind(&sagas.attempts)
        .bind(&sagas.awaiting)
        .bind(&sagas.due_at)
        .bind(&step_saga_ids)
        .bind(&steps.index)
        .bind(&steps.status)
        .bind(&steps.attempts)
        .bind(&steps.started_at)
        .bind(&steps.finished_at)
        .bind(&steps.last_error)
        .bind(commands.iter().map(|c| c.message_id).collect::<Vec<_>>())
        .bind(commands.iter().map(|c| c.company_id).collect::<Vec<_>>())
        .bind(
            commands
                .iter()
                .map(|c| c.subject.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            commands
                .iter()
                .map(|c| c.payload.as_slice())
                .collect::<Vec<_>>(),
        )
        .bind(&command_headers)
        .bind(
            commands
                .iter()
                .map(|c| c.partition_key.as_str())
                .collect::<Vec<_>>(),
        )
        .execute(&mut *connection)
        .await?;
    Ok(())
}

/// The timer's next look (`wake_at`) after a save, with `sagas` the row as
/// loaded and `changed` the saga now: none when nothing is due; a look still
/// to come and no later than the new due time is kept, so a saga's updates
/// between its first step and its end change no indexed column and can be
/// HOT; otherwise the new due time.
const WAKE_AT_KEPT_IF_EARLIER: &str = "CASE WHEN changed.due_at IS NULL THEN NULL
                                   WHEN sagas.wake_at > $1 AND sagas.wake_at <= changed.due_at
                                   THEN sagas.wake_at
                                   ELSE changed.due_at END";

/// Sagas' mutable state as column arrays, for `unnest`.
#[derive(Debug, Default)]
struct SagaColumns {
    id: Vec<Uuid>,
    state: Vec<&'static str>,
    state_reason: Vec<String>,
    context: Vec<serde_json::Value>,
    cursor: Vec<i32>,
    attempts: Vec<i32>,
    awaiting: Vec<&'static str>,
    due_at: Vec<Option<DateTime<Utc>>>,
}

impl SagaColumns {
    fn push(&mut self, id: Uuid, saga: &Saga) -> Result<(), StoreError> {
        self.context.push(
            serde_json::to_value(&saga.context)
                .map_err(|error| StoreError::Corrupt(error.to_string()))?,
        );
        self.id.push(id);
        self.state.push(saga.state.as_str());
        self.state_reason.push(saga.state_reason.clone());
        self.cursor.push(cursor_as_i32(saga.cursor));
        self.attempts
            .push(i32::try_from(saga.attempts).unwrap_or(i32::MAX));
        self.awaiting.push(saga.awaiting.as_str());
        self.due_at.push(saga.due_at);
        Ok(())
    }
}

/// The end of a saga statement that also enqueues its command (parameters
/// from `$first` on, bound by [`bind_command`]): what
/// [`qapmap_runtime::outbox::enqueue`] does (the row, the relay's NOTIFY
/// unless the transaction wakes its relay locally,
/// the message id noted for the audit record), and nothing when the
/// message id is NULL.
fn command_sql(first: usize) -> String {
    let [id, company, subject, payload, headers, key] =
        std::array::from_fn(|offset| first + offset);
    let notify = qapmap_runtime::notify_relay_sql!();
    format!(
        "command AS (
             INSERT INTO outbox (message_id, company_id, subject, payload, headers, partition_key)
             SELECT ${id}::uuid, ${company}::uuid, ${subject}::text, ${payload}::bytea,
                    ${headers}::jsonb, ${key}::text
             WHERE ${id}::uuid IS NOT NULL
         )
         SELECT {notify},
                set_config('qapmap.event_ids',
                           concat_ws(',', nullif(current_setting('qapmap.event_ids', true), ''),
                                     ${id}::text),
                           true)
         WHERE ${id}::uuid IS NOT NULL"
    )
}

type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// Binds the parameters of [`command_sql`].
fn bind_command<'q>(
    query: PgQuery<'q>,
    command: Option<&'q OutboxMessage>,
) -> Result<PgQuery<'q>, StoreError> {
    let headers = command
        .map(|command| serde_json::to_value(&command.headers))
        .transpose()
        .map_err(|error| StoreError::Corrupt(error.to_string()))?;
    Ok(query
        .bind(command.map(|command| command.message_id))
        .bind(command.and_then(|command| command.company_id))
        .bind(command.map(|command| command.subject.as_str()))
        .bind(command.map(|command| command.payload.as_slice()))
        .bind(headers)
        .bind(command.map(|command| command.partition_key.as_str())))
}

/// Step records as column arrays, for `unnest`.
#[derive(Debug, Default)]
struct StepColumns {
    index: Vec<i32>,
    status: Vec<&'static str>,
    attempts: Vec<i32>,
    started_at: Vec<Option<DateTime<Utc>>>,
    finished_at: Vec<Option<DateTime<Utc>>>,
    last_error: Vec<String>,
}

impl StepColumns {
    fn of<'a>(steps: impl Iterator<Item = (usize, &'a StepRecord)>) -> Self {
        let mut columns = Self::default();
        for (index, step) in steps {
            columns.push(index, step);
        }
        columns
    }

    fn push(&mut self, index: usize, step: &StepRecord) {
        self.index.push(cursor_as_i32(index));
        self.status.push(step.status.as_str());
        self.attempts
            .push(i32::try_from(step.attempts).unwrap_or(i32::MAX));
        self.started_at.push(step.started_at);
        self.finished_at.push(step.finished_at);
        self.last_error.push(step.last_error.clone());
    }
}

fn cursor_as_i32(index: usize) -> i32 {
    i32::try_from(index).unwrap_or(i32::MAX)
}

/// A saga row with its steps as arrays in step order (`sagas` as `s`), so
/// a saga loads in one round trip.
const SAGA_SELECT: &str = "SELECT s.id, s.company_id, s.saga_type, s.state, s.state_reason,
        s.request_id, s.context, s.cursor_step, s.attempts, s.awaiting, s.due_at, s.initiator,
        s.initiator_roles, s.initiator_stakeholder_id, s.trace_id, s.traceparent, s.created_at,
        s.updated_at,
        ARRAY(SELECT status FROM saga_steps WHERE saga_id = s.id ORDER BY step_index) AS step_status,
        ARRAY(SELECT attempts FROM saga_steps WHERE saga_id = s.id ORDER BY step_index) AS step_attempts,
        ARRAY(SELECT started_at FROM saga_steps WHERE saga_id = s.id ORDER BY step_index) AS step_started_at,
        ARRAY(SELECT finished_at FROM saga_steps WHERE saga_id = s.id ORDER BY step_index) AS step_finished_at,
        ARRAY(SELECT last_error FROM saga_steps WHERE saga_id = s.id ORDER BY step_index) AS step_last_error
    FROM sagas s";

/// Loads one saga; `for_update` locks its row until the transaction ends.
pub async fn load(
    connection: &mut PgConnection,
    id: Uuid,
    for_update: bool,
) -> Result<Option<StoredSaga>, StoreError> {
    let lock = if for_update { " FOR UPDATE OF s" } else { "" };
    let sql = format!("{SAGA_SELECT} WHERE s.id = $1{lock}");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(&mut *connection)
        .await?;
    match row {
        Some(row) => Ok(Some(from_row(&row)?)),
        None => Ok(None),
    }
}

/// Loads and locks the sagas with these ids (those that exist), locking in
/// id order so two lockers of overlapping sets cannot deadlock.
pub async fn load_many(
    connection: &mut PgConnection,
    ids: &[Uuid],
) -> Result<Vec<StoredSaga>, StoreError> {
    let sql = format!("{SAGA_SELECT} WHERE s.id = ANY($1) ORDER BY s.id FOR UPDATE OF s");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(ids)
        .fetch_all(&mut *connection)
        .await?;
    rows.iter().map(from_row).collect()
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

/// Ids of sagas whose timer look (`wake_at`) has come, locked (skipping ones another
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
        "{SAGA_SELECT}
         WHERE s.company_id = $1
           AND ($2::text IS NULL OR s.state = $2)
           AND ($3::text IS NULL OR s.saga_type = $3)
           AND ($4::timestamptz IS NULL OR s.created_at >= $4)
           AND ($5::timestamptz IS NULL OR s.created_at < $5)
           AND ($6::timestamptz IS NULL OR (s.created_at, s.id) < ($6, $7))
           AND ($9::uuid IS NULL OR s.initiator_stakeholder_id = $9)
         ORDER BY s.created_at DESC, s.id DESC
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
    rows.iter().map(from_row).collect()
}

fn from_row(row: &sqlx::postgres::PgRow) -> Result<StoredSaga, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(what.to_owned());
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
        due_at: row.try_get("due_at")?,
        steps: steps_of(row)?,
    };
    if saga.steps.len() != definition.step_count() {
        return Err(corrupt("step count"));
    }
    Ok(StoredSaga {
        id: row.try_get("id")?,
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

/// The steps of a [`SAGA_SELECT`] row, in step order.
fn steps_of(row: &sqlx::postgres::PgRow) -> Result<Vec<StepRecord>, StoreError> {
    let status: Vec<String> = row.try_get("step_status")?;
    let attempts: Vec<i32> = row.try_get("step_attempts")?;
    let started_at: Vec<Option<DateTime<Utc>>> = row.try_get("step_started_at")?;
    let finished_at: Vec<Option<DateTime<Utc>>> = row.try_get("step_finished_at")?;
    let last_error: Vec<String> = row.try_get("step_last_error")?;
    let count = status.len();
    if [
        attempts.len(),
        started_at.len(),
        finished_at.len(),
        last_error.len(),
    ]
    .iter()
    .any(|len| *len != count)
    {
        return Err(StoreError::Corrupt("step columns".to_owned()));
    }
    status
        .into_iter()
        .zip(attempts)
        .zip(started_at.into_iter().zip(finished_at))
        .zip(last_error)
        .map(
            |(((status, attempts), (started_at, finished_at)), last_error)| {
                Ok(StepRecord {
                    status: StepStatus::parse(&status)
                        .ok_or_else(|| StoreError::Corrupt("step status".to_owned()))?,
                    attempts: u32::try_from(attempts).unwrap_or_default(),
                    started_at,
                    finished_at,
                    last_error,
                })
            },
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A saga's command must wake the relay the way every outbox write does,
    /// so a consumer batch that wakes its relay locally sees it `pending`.
    #[test]
    fn a_command_uses_the_shared_relay_wake_up() {
        let sql = command_sql(16);
        assert!(sql.contains(qapmap_runtime::notify_relay_sql!()));
        assert!(
            !sql.replace(qapmap_runtime::notify_relay_sql!(), "")
                .contains("pg_notify")
        );
    }
}
