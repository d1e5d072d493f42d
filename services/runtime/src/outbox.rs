//! Writing to the transactional outbox. A message is enqueued in the same
//! Postgres transaction as the state change it announces, so it exists if and
//! only if that change committed. Publishing is the relay's job.

use std::collections::BTreeMap;

use sqlx::PgConnection;
use uuid::Uuid;

/// The channel the relay LISTENs on; NOTIFY is delivered at commit.
pub const NOTIFY_CHANNEL: &str = "qapmap_outbox";
/// The NOTIFY that wakes relays at commit, as a boolean scalar for a
/// statement's select list. A transaction that set `qapmap.relay_wake` to
/// `local` gets no NOTIFY: the expression sets it to `pending` instead, and
/// the writer, seeing that before its commit, wakes this process's relay
/// itself after it ([`crate::local_relay`]). That spares the
/// cluster-wide lock every notifying commit holds through its fsync.
#[macro_export]
macro_rules! notify_relay_sql {
    () => {
        "(CASE WHEN current_setting('qapmap.relay_wake', true) IN ('local', 'pending') \
               THEN set_config('qapmap.relay_wake', 'pending', true) IS NULL \
               ELSE pg_notify('qapmap_outbox', '') IS NULL END)"
    };
}

/// Header naming the protobuf message type of the payload.
pub const TYPE_HEADER: &str = "Qapmap-Type";
/// Header naming the payload's schema version.
pub const VERSION_HEADER: &str = "Qapmap-Version";

/// Header the relay adds with the row's partition key, so a consumer (and a
/// dead-letter replay) knows which aggregate the message belongs to.
pub const PARTITION_KEY_HEADER: &str = "Qapmap-Partition-Key";

/// A message waiting to be published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxMessage {
    /// Becomes `Nats-Msg-Id`.
    pub message_id: Uuid,
    pub company_id: Option<Uuid>,
    pub subject: String,
    pub payload: Vec<u8>,
    pub headers: BTreeMap<String, String>,
    /// Messages with the same key are published in the order enqueued.
    pub partition_key: String,
}

impl OutboxMessage {
    /// A protobuf message with its type and version headers set.
    pub fn protobuf<M: prost::Message + prost::Name>(
        subject: String,
        partition_key: String,
        company_id: Option<Uuid>,
        message: &M,
    ) -> Self {
        let headers = BTreeMap::from([
            (TYPE_HEADER.to_owned(), M::full_name()),
            (VERSION_HEADER.to_owned(), "1".to_owned()),
        ]);
        Self {
            message_id: Uuid::now_v7(),
            company_id,
            subject,
            payload: message.encode_to_vec(),
            headers,
            partition_key,
        }
    }

    /// Adds a header (e.g. the W3C `traceparent` of the current span).
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }
}

/// The end of a statement that enqueues a message (parameters `$1` to
/// `$6`, bound by [`bind_message`]): the insert, the relay's wake-up, and
/// the id noted for the command's audit record (see `audit`). No
/// RETURNING: under row-level security it would also need the row to be
/// visible, which the insert alone does not.
macro_rules! enqueue_sql {
    () => {
        concat!(
            "inserted AS (
                 INSERT INTO outbox (message_id, company_id, subject, payload, headers, partition_key)
                 VALUES ($1, $2, $3, $4, $5, $6)
             )
             SELECT ",
            crate::notify_relay_sql!(),
            ",
                    set_config('qapmap.event_ids',
                               concat_ws(',', nullif(current_setting('qapmap.event_ids', true), ''), $1::text),
                               true)",
        )
    };
}

type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// Binds `message` as `$1` to `$6` of [`enqueue_sql`].
fn bind_message<'q>(query: PgQuery<'q>, message: &'q OutboxMessage) -> sqlx::Result<PgQuery<'q>> {
    let headers = serde_json::to_value(&message.headers)
        .map_err(|error| sqlx::Error::Encode(error.into()))?;
    Ok(query
        .bind(message.message_id)
        .bind(message.company_id)
        .bind(&message.subject)
        .bind(&message.payload)
        .bind(headers)
        .bind(&message.partition_key))
}

/// Writes `message` in the caller's transaction and wakes the relay at
/// commit, in one round trip (every saga step pays it on a serial consumer).
pub async fn enqueue(transaction: &mut PgConnection, message: &OutboxMessage) -> sqlx::Result<()> {
    bind_message(sqlx::query(concat!("WITH ", enqueue_sql!())), message)?
        .execute(&mut *transaction)
        .await?;
    Ok(())
}

/// [`enqueue`] together with one more write of the caller's, in the same
/// statement (a round trip less): `write` is a data-modifying CTE,
/// `name AS (INSERT ...)`, that may use the message's parameters (`$1` its
/// id, `$4` its payload) and its own from `$7` on, which `bind` adds.
pub async fn enqueue_with<'q>(
    transaction: &mut PgConnection,
    message: &'q OutboxMessage,
    write: &'static str,
    bind: impl FnOnce(PgQuery<'q>) -> PgQuery<'q>,
) -> sqlx::Result<()> {
    let sql = format!("WITH {write}, {}", enqueue_sql!());
    bind(bind_message(
        sqlx::query(sqlx::AssertSqlSafe(sql)),
        message,
    )?)
    .execute(&mut *transaction)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_relay_notification_uses_the_channel_relays_listen_on() {
        assert!(crate::notify_relay_sql!().contains(&format!("pg_notify('{NOTIFY_CHANNEL}'")));
    }
}
