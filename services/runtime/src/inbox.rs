//! The inbox: which messages a consumer has handled, recorded in the same
//! transaction as the handler's effect.
//!
//! The consumer records a message id *before* running the handler. The
//! primary key makes a second delivery of the same message (to this or
//! another worker) wait for the first transaction and then find the row, so
//! the effect happens once. A command's reply is stored with its row: when
//! the command comes again, the same reply (same message id) goes back to
//! the outbox and is published again; the receiver's inbox drops it if the
//! first copy arrived.

use std::collections::BTreeMap;

use sqlx::PgConnection;
use uuid::Uuid;

use crate::outbox::OutboxMessage;

/// JetStream's deduplication header; the relay sets it to the outbox message id.
pub const NATS_MESSAGE_ID_HEADER: &str = "Nats-Msg-Id";

/// Header a dead-letter replay carries: the message id the consumer's inbox
/// knows the message by. The replay itself travels under a new `Nats-Msg-Id`
/// so JetStream's duplicate window does not drop it.
pub const ORIGINAL_MESSAGE_ID_HEADER: &str = "Qapmap-Original-Msg-Id";

/// Records that `consumer` is handling `message_id`. Returns false when it
/// was already handled (the caller then changes nothing). Waits while
/// another transaction holds the same message.
pub async fn record(
    transaction: &mut PgConnection,
    consumer: &str,
    message_id: &str,
    subject: &str,
) -> sqlx::Result<bool> {
    let inserted = sqlx::query(
        "INSERT INTO inbox (consumer, message_id, subject) VALUES ($1, $2, $3)
         ON CONFLICT (consumer, message_id) DO NOTHING",
    )
    .bind(consumer)
    .bind(message_id)
    .bind(subject)
    .execute(&mut *transaction)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// Records a batch of messages for `consumer` in one statement; returns how
/// many were new (fewer than given when some were handled before, or one
/// id came twice). Waits, as [`record`] does, while another transaction
/// holds one of them.
pub async fn record_many(
    transaction: &mut PgConnection,
    consumer: &str,
    message_ids: &[&str],
    subjects: &[&str],
) -> sqlx::Result<u64> {
    let inserted = sqlx::query(
        "INSERT INTO inbox (consumer, message_id, subject)
         SELECT $1, message.id, message.subject
         FROM unnest($2::text[], $3::text[]) AS message (id, subject)
         ON CONFLICT (consumer, message_id) DO NOTHING",
    )
    .bind(consumer)
    .bind(message_ids)
    .bind(subjects)
    .execute(&mut *transaction)
    .await?;
    Ok(inserted.rows_affected())
}

/// The select after the inbox insert of [`record_and_confine`]: one row
/// per new message, and the confinement set only for that row. `set_config`
/// is volatile, so the filter is evaluated per row of `recorded` (never as
/// a one-time filter), and not at all when there is none.
macro_rules! confine_recorded {
    ($company:literal) => {
        concat!(
            "SELECT 1 FROM recorded WHERE concat(set_config('role', 'qapmap_app', true), \
             set_config('qapmap.company_id', ",
            $company,
            ", true)) IS NOT NULL"
        )
    };
}

/// [`record`], and when the message is new, confines the rest of the
/// transaction to `company_id` (as `tenancy::confine` does) in the same
/// statement: the insert runs before the confinement (the inbox has no
/// row security), and a message seen before is not confined, so its stored
/// reply is read and resent as without one.
pub async fn record_and_confine(
    transaction: &mut PgConnection,
    consumer: &str,
    message_id: &str,
    subject: &str,
    company_id: Option<Uuid>,
) -> sqlx::Result<bool> {
    let Some(company_id) = company_id else {
        return record(transaction, consumer, message_id, subject).await;
    };
    let recorded = sqlx::query(concat!(
        "WITH recorded AS (INSERT INTO inbox (consumer, message_id, subject) VALUES ($1, $2, $3) \
         ON CONFLICT (consumer, message_id) DO NOTHING RETURNING 1) ",
        confine_recorded!("$4::text")
    ))
    .bind(consumer)
    .bind(message_id)
    .bind(subject)
    .bind(company_id)
    .fetch_optional(&mut *transaction)
    .await?;
    Ok(recorded.is_some())
}

/// The statement [`record_and_confine`] runs, with its values written into
/// the SQL (one row when the message is new), so it can share a round trip
/// with the consumer's savepoint statements, which take no parameters.
/// `None` unless all three values consist only of characters that cannot
/// end or escape a quoted literal (letters, digits and `.:-_*>`, which
/// cover outbox message ids, `stream:sequence` ids and NATS subjects); the
/// caller then runs [`record_and_confine`] with bound parameters instead.
/// A `Uuid` prints as hex digits and hyphens only.
pub fn inline_record_sql(
    consumer: &str,
    message_id: &str,
    subject: &str,
    company_id: Option<Uuid>,
) -> Option<String> {
    let plain = |value: &str| {
        !value.is_empty()
            && value.len() <= 512
            && value
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || b".:-_*>".contains(&byte))
    };
    if !(plain(consumer) && plain(message_id) && plain(subject)) {
        return None;
    }
    let insert = format!(
        "INSERT INTO inbox (consumer, message_id, subject) VALUES ('{consumer}', '{message_id}', '{subject}') \
         ON CONFLICT (consumer, message_id) DO NOTHING RETURNING 1"
    );
    Some(match company_id {
        None => insert,
        Some(company_id) => format!(
            concat!("WITH recorded AS ({}) ", confine_recorded!("'{}'")),
            insert, company_id
        ),
    })
}

/// Deletes up to `limit` inbox rows handled more than `retention` ago,
/// keeping those whose message has a pending dead letter of the same
/// consumer (its replay is known by the original id). See
/// [`crate::relay::DEFAULT_INBOX_RETENTION`] for why the rows are no longer
/// needed.
pub async fn prune(
    pool: &sqlx::PgPool,
    retention: std::time::Duration,
    limit: i64,
) -> sqlx::Result<sqlx::postgres::PgQueryResult> {
    sqlx::query(
        // `ctid = ANY(ARRAY(..))`: with `IN (..)` the planner joined the
        // chosen rows against a scan of the whole inbox.
        "DELETE FROM inbox WHERE ctid = ANY(ARRAY(
             SELECT i.ctid FROM inbox i
             WHERE i.handled_at < now() - make_interval(secs => $1)
               AND NOT EXISTS (
                   SELECT 1 FROM dead_letters d
                   WHERE d.status = 'pending'
                     AND d.consumer = i.consumer
                     AND d.message_id = i.message_id)
             LIMIT $2))",
    )
    .bind(retention.as_secs_f64())
    .bind(limit)
    .execute(pool)
    .await
}

/// Enqueues the reply to a message recorded in this transaction (as
/// [`crate::outbox::enqueue`] does) and stores it with the message's inbox
/// row, in one statement.
pub async fn enqueue_reply(
    transaction: &mut PgConnection,
    consumer: &str,
    message_id: &str,
    reply: &OutboxMessage,
) -> sqlx::Result<()> {
    sqlx::query(concat!(
        "WITH inserted AS (
             INSERT INTO outbox (message_id, company_id, subject, payload, headers, partition_key)
             VALUES ($1, $2, $3, $4, $5, $6)
         ), stored AS (
             UPDATE inbox SET reply_message_id = $1, reply_subject = $3, reply_payload = $4,
                 reply_headers = $5, reply_partition_key = $6, reply_company_id = $2
             WHERE consumer = $7 AND message_id = $8
         )
         SELECT ",
        crate::notify_relay_sql!(),
        ",
                set_config('qapmap.event_ids',
                           concat_ws(',', nullif(current_setting('qapmap.event_ids', true), ''), $1::text),
                           true)",
    ))
    .bind(reply.message_id)
    .bind(reply.company_id)
    .bind(&reply.subject)
    .bind(&reply.payload)
    .bind(headers_json(&reply.headers)?)
    .bind(&reply.partition_key)
    .bind(consumer)
    .bind(message_id)
    .execute(&mut *transaction)
    .await?;
    Ok(())
}

/// The reply stored for a handled message, if its handler sent one.
pub async fn stored_reply(
    transaction: &mut PgConnection,
    consumer: &str,
    message_id: &str,
) -> sqlx::Result<Option<OutboxMessage>> {
    type ReplyRow = (
        Option<Uuid>,
        Option<String>,
        Option<Vec<u8>>,
        Option<serde_json::Value>,
        Option<String>,
        Option<Uuid>,
    );
    let row: Option<ReplyRow> = sqlx::query_as(
        "SELECT reply_message_id, reply_subject, reply_payload, reply_headers,
                reply_partition_key, reply_company_id
         FROM inbox WHERE consumer = $1 AND message_id = $2",
    )
    .bind(consumer)
    .bind(message_id)
    .fetch_optional(&mut *transaction)
    .await?;
    let Some((Some(id), Some(subject), Some(payload), Some(headers), Some(key), company_id)) = row
    else {
        return Ok(None);
    };
    let headers: BTreeMap<String, String> =
        serde_json::from_value(headers).map_err(|error| sqlx::Error::Decode(error.into()))?;
    Ok(Some(OutboxMessage {
        message_id: id,
        company_id,
        subject,
        payload,
        headers,
        partition_key: key,
    }))
}

/// Puts a stored reply back in the outbox, unpublished, under its original
/// message id: a new row if the first was pruned, else the same row again.
pub async fn resend_reply(
    transaction: &mut PgConnection,
    reply: &OutboxMessage,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO outbox (message_id, company_id, subject, payload, headers, partition_key)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (message_id) DO UPDATE
         SET published_at = NULL, lease_owner = NULL, lease_expires_at = NULL",
    )
    .bind(reply.message_id)
    .bind(reply.company_id)
    .bind(&reply.subject)
    .bind(&reply.payload)
    .bind(headers_json(&reply.headers)?)
    .bind(&reply.partition_key)
    .execute(&mut *transaction)
    .await?;
    sqlx::query(concat!("SELECT ", crate::notify_relay_sql!()))
        .execute(&mut *transaction)
        .await?;
    Ok(())
}

fn headers_json(headers: &BTreeMap<String, String>) -> sqlx::Result<serde_json::Value> {
    serde_json::to_value(headers).map_err(|error| sqlx::Error::Encode(error.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_values_are_written_into_the_sql() {
        let id = "0196f3c2-7a10-7c3e-9d2b-5f1e2a3b4c5d";
        let sql = inline_record_sql("ledger-commands", id, "qapmap.cmd.ledger.hold_shares", None)
            .expect("a uuid and a subject are plain");
        assert!(sql.contains(&format!("'{id}'")));
        assert!(inline_record_sql("c", "QAPMAP_COMMANDS:42", "ns.cmd.>", None).is_some());
        for unsafe_id in [
            "o'hara",
            "a\\b",
            "two words",
            "semi;colon",
            "dollar$$quote",
            "",
            &"x".repeat(513),
        ] {
            assert_eq!(
                inline_record_sql("c", unsafe_id, "ns.cmd.x", None),
                None,
                "{unsafe_id:?} must be bound, not written into the SQL"
            );
            assert_eq!(inline_record_sql("c", "id", unsafe_id, None), None);
        }
    }
}
