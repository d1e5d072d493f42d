//! Dead letters: messages a consumer gave up on (deliveries exhausted, or
//! rejected as poison), kept in the service's `dead_letters` table with
//! their payload, headers, last error and delivery count, and copied to the
//! namespace's dead-letter stream (`<ns>.dlq.<consumer>`) through the outbox.
//! The consumer acknowledges them afterwards, so they never block the
//! messages behind them.
//!
//! [`DeadLetterAdmin`] serves `qapmap.ops.v1.DeadLetterService`:
//! - list pages through them (pending only unless asked otherwise);
//! - replay writes the message to the outbox again under its original
//!   subject and headers, with a **new** `Nats-Msg-Id` (JetStream would drop
//!   the original id inside its 15-minute duplicate window) and the original
//!   id in [`ORIGINAL_MESSAGE_ID_HEADER`], which is what the consumer's inbox
//!   keys on: a replay of a message that was in fact applied is not applied
//!   again. The status change and the outbox row commit together, so a
//!   repeated replay call finds it replayed and publishes nothing more;
//! - discard marks it discarded with the operator's reason.
//!
//! Both admin calls are idempotent by the dead letter's state, so the
//! `request_id` is validated but needs no table of its own.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use qapmap_proto::ops::v1 as proto;
use qapmap_proto::ops::v1::dead_letter_service_server::{
    DeadLetterService, DeadLetterServiceServer,
};
use sqlx::{PgConnection, PgPool};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::consumer::ReceivedMessage;
use crate::error::ApiError;
use crate::inbox::{NATS_MESSAGE_ID_HEADER, ORIGINAL_MESSAGE_ID_HEADER};
use crate::messaging::Subjects;
use crate::outbox::{self, OutboxMessage, PARTITION_KEY_HEADER};
use crate::pagination::PageRequest;

/// Header on the dead-letter stream copy: the dead letter's id.
pub const DEAD_LETTER_ID_HEADER: &str = "Qapmap-Dead-Letter-Id";
/// Header on the dead-letter stream copy: the subject it was consumed from.
pub const ORIGINAL_SUBJECT_HEADER: &str = "Qapmap-Original-Subject";
/// Longest error text kept; a handler's error chain can be long.
const LAST_ERROR_LENGTH_MAX: usize = 4_000;

/// Where a dead letter stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLetterStatus {
    Pending,
    Replayed,
    Discarded,
}

impl DeadLetterStatus {
    fn parse(text: &str) -> Self {
        match text {
            "replayed" => Self::Replayed,
            "discarded" => Self::Discarded,
            _ => Self::Pending,
        }
    }
}

/// A stored dead letter.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub id: Uuid,
    pub consumer: String,
    pub subject: String,
    /// The id the consumer's inbox knows the message by.
    pub message_id: String,
    pub payload: Vec<u8>,
    pub headers: BTreeMap<String, String>,
    pub last_error: String,
    pub delivery_count: i32,
    pub dead_at: DateTime<Utc>,
    pub status: DeadLetterStatus,
    pub resolution: Option<String>,
}

#[derive(sqlx::FromRow)]
struct DeadLetterRow {
    id: Uuid,
    consumer: String,
    subject: String,
    message_id: String,
    payload: Vec<u8>,
    headers: serde_json::Value,
    last_error: String,
    delivery_count: i32,
    dead_at: DateTime<Utc>,
    status: String,
    resolution: Option<String>,
}

impl From<DeadLetterRow> for DeadLetter {
    fn from(row: DeadLetterRow) -> Self {
        Self {
            id: row.id,
            consumer: row.consumer,
            subject: row.subject,
            message_id: row.message_id,
            payload: row.payload,
            headers: serde_json::from_value(row.headers).unwrap_or_default(),
            last_error: row.last_error,
            delivery_count: row.delivery_count,
            dead_at: row.dead_at,
            status: DeadLetterStatus::parse(&row.status),
            resolution: row.resolution,
        }
    }
}

const SELECT_COLUMNS: &str = "id, consumer, subject, message_id, payload, headers, last_error,
    delivery_count, dead_at, status, resolution";

/// Deletes up to `limit` dead letters resolved (replayed or discarded) more
/// than `retention` ago. A pending dead letter is never deleted, however old:
/// it still waits for an operator. See
/// [`crate::relay::DEFAULT_DEAD_LETTER_RETENTION`].
pub async fn prune(
    pool: &PgPool,
    retention: std::time::Duration,
    limit: i64,
) -> sqlx::Result<sqlx::postgres::PgQueryResult> {
    // `id = ANY(ARRAY(..))`, as the outbox prune, so the chosen ids are
    // looked up by key rather than joined against a scan of the table.
    sqlx::query(
        "DELETE FROM dead_letters WHERE id = ANY(ARRAY(
             SELECT id FROM dead_letters
             WHERE status <> 'pending'
               AND resolved_at < now() - make_interval(secs => $1)
             LIMIT $2))",
    )
    .bind(retention.as_secs_f64())
    .bind(limit)
    .execute(pool)
    .await
}

/// Stores `message` as a dead letter of `consumer` and enqueues its copy to
/// the dead-letter stream, in one transaction. A message already pending for
/// this consumer is kept once. Returns the dead letter's id when stored.
pub async fn store(
    pool: &PgPool,
    subjects: &Subjects,
    consumer: &str,
    message: &ReceivedMessage,
    last_error: &str,
) -> sqlx::Result<Option<Uuid>> {
    let id = Uuid::now_v7();
    let last_error = truncate(last_error, LAST_ERROR_LENGTH_MAX);
    let mut transaction = pool.begin().await?;
    let inserted = sqlx::query(
        "INSERT INTO dead_letters
             (id, consumer, subject, message_id, payload, headers, last_error, delivery_count)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (consumer, message_id) WHERE status = 'pending' DO NOTHING",
    )
    .bind(id)
    .bind(consumer)
    .bind(&message.subject)
    .bind(&message.message_id)
    .bind(message.payload.as_ref())
    .bind(serde_json::to_value(&message.headers).map_err(|e| sqlx::Error::Encode(e.into()))?)
    .bind(&last_error)
    .bind(i32::try_from(message.delivery_count).unwrap_or(i32::MAX))
    .execute(&mut *transaction)
    .await?;
    if inserted.rows_affected() == 0 {
        transaction.commit().await?;
        return Ok(None);
    }
    let copy = dead_letter_copy(subjects, consumer, id, message);
    outbox::enqueue(&mut transaction, &copy).await?;
    transaction.commit().await?;
    Ok(Some(id))
}

/// The message as it lands on the dead-letter stream.
fn dead_letter_copy(
    subjects: &Subjects,
    consumer: &str,
    id: Uuid,
    message: &ReceivedMessage,
) -> OutboxMessage {
    let mut headers = message.headers.clone();
    headers.remove(NATS_MESSAGE_ID_HEADER);
    headers.insert(DEAD_LETTER_ID_HEADER.to_owned(), id.to_string());
    headers.insert(ORIGINAL_SUBJECT_HEADER.to_owned(), message.subject.clone());
    headers.insert(
        ORIGINAL_MESSAGE_ID_HEADER.to_owned(),
        message.message_id.clone(),
    );
    OutboxMessage {
        message_id: Uuid::now_v7(),
        company_id: None,
        subject: subjects.dead_letter(consumer),
        payload: message.payload.to_vec(),
        headers,
        partition_key: format!("dead-letter:{consumer}"),
    }
}

fn truncate(text: &str, length_max: usize) -> String {
    if text.len() <= length_max {
        return text.to_owned();
    }
    let mut end = length_max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// Pages through dead letters in id (= time) order.
pub async fn list(
    pool: &PgPool,
    page: &PageRequest,
    include_resolved: bool,
) -> Result<Vec<DeadLetter>, ApiError> {
    let after =
        match &page.after {
            Some(token) => Some(Uuid::try_parse(token).map_err(|_| {
                ApiError::invalid("page_token", "is not a token this service issued")
            })?),
            None => None,
        };
    let rows: Vec<DeadLetterRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {SELECT_COLUMNS} FROM dead_letters
         WHERE ($1::uuid IS NULL OR id > $1) AND ($2 OR status = 'pending')
         ORDER BY id LIMIT $3"
    )))
    .bind(after)
    .bind(include_resolved)
    .bind(page.fetch_limit())
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(DeadLetter::from).collect())
}

async fn lock(transaction: &mut PgConnection, id: Uuid) -> Result<DeadLetter, ApiError> {
    let row: Option<DeadLetterRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {SELECT_COLUMNS} FROM dead_letters WHERE id = $1 FOR UPDATE"
    )))
    .bind(id)
    .fetch_optional(&mut *transaction)
    .await?;
    row.map(DeadLetter::from)
        .ok_or_else(|| ApiError::not_found("dead letter", id.to_string()))
}

/// Replays a pending dead letter through the outbox (see the module docs).
pub async fn replay(pool: &PgPool, id: Uuid) -> Result<DeadLetter, ApiError> {
    let mut transaction = pool.begin().await?;
    let dead_letter = lock(&mut transaction, id).await?;
    match dead_letter.status {
        DeadLetterStatus::Replayed => return Ok(dead_letter),
        DeadLetterStatus::Discarded => {
            return Err(ApiError::precondition(
                "dead_letter_discarded",
                "the dead letter was discarded and cannot be replayed",
            ));
        }
        DeadLetterStatus::Pending => {}
    }
    let replay = replay_message(&dead_letter);
    outbox::enqueue(&mut transaction, &replay).await?;
    let resolution = replay.message_id.to_string();
    sqlx::query(
        "UPDATE dead_letters SET status = 'replayed', resolution = $2, resolved_at = now()
         WHERE id = $1",
    )
    .bind(id)
    .bind(&resolution)
    .execute(&mut *transaction)
    .await?;
    transaction.commit().await?;
    Ok(DeadLetter {
        status: DeadLetterStatus::Replayed,
        resolution: Some(resolution),
        ..dead_letter
    })
}

/// The outbox message a replay publishes: original subject, payload and
/// headers; a new message id; the inbox's id in its own header.
fn replay_message(dead_letter: &DeadLetter) -> OutboxMessage {
    let mut headers = dead_letter.headers.clone();
    headers.remove(NATS_MESSAGE_ID_HEADER);
    headers.insert(
        ORIGINAL_MESSAGE_ID_HEADER.to_owned(),
        dead_letter.message_id.clone(),
    );
    let partition_key = headers
        .get(PARTITION_KEY_HEADER)
        .cloned()
        .unwrap_or_else(|| dead_letter.message_id.clone());
    OutboxMessage {
        message_id: Uuid::now_v7(),
        company_id: None,
        subject: dead_letter.subject.clone(),
        payload: dead_letter.payload.clone(),
        headers,
        partition_key,
    }
}

/// Discards a pending dead letter with the operator's reason.
pub async fn discard(pool: &PgPool, id: Uuid, reason: &str) -> Result<(), ApiError> {
    if reason.trim().is_empty() {
        return Err(ApiError::invalid("reason", "is required"));
    }
    let mut transaction = pool.begin().await?;
    let dead_letter = lock(&mut transaction, id).await?;
    match dead_letter.status {
        DeadLetterStatus::Discarded => return Ok(()),
        DeadLetterStatus::Replayed => {
            return Err(ApiError::precondition(
                "dead_letter_replayed",
                "the dead letter was already replayed",
            ));
        }
        DeadLetterStatus::Pending => {}
    }
    sqlx::query(
        "UPDATE dead_letters SET status = 'discarded', resolution = $2, resolved_at = now()
         WHERE id = $1",
    )
    .bind(id)
    .bind(truncate(reason, LAST_ERROR_LENGTH_MAX))
    .execute(&mut *transaction)
    .await?;
    transaction.commit().await?;
    Ok(())
}

/// `qapmap.ops.v1.DeadLetterService` over one service's database.
#[derive(Debug, Clone)]
pub struct DeadLetterAdmin {
    pool: PgPool,
}

impl DeadLetterAdmin {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// The tonic service, ready for `Application::add_service`.
    pub fn into_service(self) -> DeadLetterServiceServer<Self> {
        DeadLetterServiceServer::new(self)
    }
}

#[tonic::async_trait]
impl DeadLetterService for DeadLetterAdmin {
    async fn list_dead_letters(
        &self,
        request: Request<proto::ListDeadLettersRequest>,
    ) -> Result<Response<proto::ListDeadLettersResponse>, Status> {
        let request = request.into_inner();
        let page = PageRequest::parse(request.page_size, &request.page_token)?;
        let mut rows = list(&self.pool, &page, request.include_resolved).await?;
        let next_page_token = page.finish(&mut rows, |row| row.id.to_string());
        Ok(Response::new(proto::ListDeadLettersResponse {
            dead_letters: rows.into_iter().map(proto::DeadLetter::from).collect(),
            next_page_token,
        }))
    }

    async fn replay_dead_letter(
        &self,
        request: Request<proto::ReplayDeadLetterRequest>,
    ) -> Result<Response<proto::ReplayDeadLetterResponse>, Status> {
        let request = request.into_inner();
        crate::idempotency::validate_request_id(&request.request_id)?;
        let id = crate::ids::parse("dead_letter_id", &request.dead_letter_id)?;
        let dead_letter = replay(&self.pool, id).await?;
        Ok(Response::new(proto::ReplayDeadLetterResponse {
            dead_letter: Some(dead_letter.into()),
        }))
    }

    async fn discard_dead_letter(
        &self,
        request: Request<proto::DiscardDeadLetterRequest>,
    ) -> Result<Response<proto::DiscardDeadLetterResponse>, Status> {
        let request = request.into_inner();
        crate::idempotency::validate_request_id(&request.request_id)?;
        let id = crate::ids::parse("dead_letter_id", &request.dead_letter_id)?;
        discard(&self.pool, id, &request.reason).await?;
        Ok(Response::new(proto::DiscardDeadLetterResponse {}))
    }
}

impl From<DeadLetterStatus> for proto::DeadLetterStatus {
    fn from(status: DeadLetterStatus) -> Self {
        match status {
            DeadLetterStatus::Pending => Self::Pending,
            DeadLetterStatus::Replayed => Self::Replayed,
            DeadLetterStatus::Discarded => Self::Discarded,
        }
    }
}

impl From<DeadLetter> for proto::DeadLetter {
    fn from(dead_letter: DeadLetter) -> Self {
        Self {
            id: dead_letter.id.to_string(),
            subject: dead_letter.subject,
            message_id: dead_letter.message_id,
            payload: dead_letter.payload,
            headers: dead_letter.headers.into_iter().collect::<HashMap<_, _>>(),
            last_error: dead_letter.last_error,
            delivery_count: dead_letter.delivery_count,
            dead_at: Some(prost_types::Timestamp {
                seconds: dead_letter.dead_at.timestamp(),
                nanos: i32::try_from(dead_letter.dead_at.timestamp_subsec_nanos()).unwrap_or(0),
            }),
            consumer: dead_letter.consumer,
            status: proto::DeadLetterStatus::from(dead_letter.status).into(),
            resolution: dead_letter.resolution.unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncate("abc", 10), "abc");
        assert_eq!(truncate("aé", 2), "a");
    }
}
