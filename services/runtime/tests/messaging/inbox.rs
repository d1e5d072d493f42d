//! The inbox: a command delivered again changes nothing, and its first reply
//! is sent again.

use qapmap_runtime::consumer::{
    Consumer, ConsumerConfig, Handled, HandlerError, MessageHandler, ReceivedMessage,
};
use qapmap_runtime::messaging::StreamKind;
use sqlx::PgConnection;
use std::time::Duration;
use uuid::Uuid;

use crate::support::{CommandHandler, FLOW_TIMEOUT, Harness, Running, wait_for_count};

async fn reply_published_at(harness: &Harness) -> Option<chrono::DateTime<chrono::Utc>> {
    sqlx::query_scalar("SELECT published_at FROM outbox WHERE subject LIKE '%.reply.%'")
        .fetch_one(&harness.pool)
        .await
        .expect("reply row")
}

/// Runs the relay and the `commands` consumer (with [`CommandHandler`]).
fn relay_and_command_consumer(harness: &Harness) -> (Running, Running) {
    let relay = harness.relay();
    let relay = Running::spawn(move |stop| relay.run(stop));
    (relay, command_consumer(harness))
}

/// Runs the `commands` consumer (with [`CommandHandler`]).
fn command_consumer(harness: &Harness) -> Running {
    let config = ConsumerConfig::new(
        "commands",
        StreamKind::Commands,
        harness.subjects.command("test", "*"),
    );
    let handler = CommandHandler {
        reply_subject: harness.subjects.reply("test_saga"),
    };
    let consumer = Consumer::new(
        harness.pool.clone(),
        harness.jetstream.clone(),
        harness.subjects.clone(),
        config,
        handler,
    )
    .with_metrics(harness.metrics.clone());
    Running::spawn(move |stop| consumer.run(stop))
}

/// Goal: the second delivery of a command is acknowledged without a second
/// effect, and the reply stored the first time goes out again under the same
/// message id (so JetStream, or the receiver's inbox, drops the copy).
/// Method: the command is published straight to JetStream, then published
/// again carrying the same inbox id (as a redelivery or a replay would).
#[tokio::test]
async fn a_redelivered_command_changes_nothing_and_its_reply_is_sent_again() {
    let harness = Harness::start().await;
    let (relay, consumer) = relay_and_command_consumer(&harness);

    let command_id = Uuid::now_v7().to_string();
    let subject = harness.subjects.command("test", "do_it");
    harness
        .publish_direct(
            subject.clone(),
            "do it".as_bytes(),
            command_id.as_str(),
            None,
        )
        .await;
    wait_for_count(
        &harness,
        "SELECT count(*) FROM outbox WHERE subject LIKE '%.reply.%' AND published_at IS NOT NULL",
        1,
    )
    .await;
    let first_publication = reply_published_at(&harness).await;

    harness
        .publish_direct(
            subject,
            "do it".as_bytes(),
            &Uuid::now_v7().to_string(),
            Some(command_id.as_str()),
        )
        .await;
    let resent = qapmap_testkit::eventually(FLOW_TIMEOUT, || async {
        harness.metrics.redelivered_duplicates_total() == 1
            && reply_published_at(&harness).await > first_publication
    })
    .await;
    assert!(resent, "the stored reply was published again");
    assert_eq!(harness.count("SELECT count(*) FROM effects").await, 1);
    assert_eq!(harness.metrics.handled_total(), 1);
    assert_eq!(
        harness.stream_messages(StreamKind::Replies).await,
        1,
        "the copy carried the first reply's id, so JetStream kept one"
    );
    relay.stop().await;
    consumer.stop().await;
}

/// Goal: a refused command keeps nothing its handler wrote, yet its reply is
/// sent and stored, and the command after it in the same batch takes effect.
/// Method: a refused and an accepted command are published before the
/// consumer starts, so one pull hands both to one batch transaction.
#[tokio::test]
async fn a_refused_command_keeps_no_effect_and_still_replies() {
    let harness = Harness::start().await;
    let subject = harness.subjects.command("test", "do_it");
    let refused_id = Uuid::now_v7().to_string();
    let accepted_id = Uuid::now_v7().to_string();
    for (id, payload) in [(&refused_id, "refuse"), (&accepted_id, "do it")] {
        harness
            .publish_direct(subject.clone(), payload.as_bytes(), id.as_str(), None)
            .await;
    }
    let (relay, consumer) = relay_and_command_consumer(&harness);

    wait_for_count(
        &harness,
        "SELECT count(*) FROM outbox WHERE subject LIKE '%.reply.%' AND published_at IS NOT NULL",
        2,
    )
    .await;
    let effects: Vec<String> = sqlx::query_scalar("SELECT message_id FROM effects")
        .fetch_all(&harness.pool)
        .await
        .expect("effects");
    assert_eq!(
        effects,
        vec![accepted_id.clone()],
        "only the accepted command's effect"
    );
    let replies: Vec<String> = sqlx::query_scalar(
        "SELECT convert_from(payload, 'UTF8') FROM outbox WHERE subject LIKE '%.reply.%' ORDER BY id",
    )
    .fetch_all(&harness.pool)
    .await
    .expect("replies");
    assert_eq!(
        replies,
        vec![
            format!("refused:{refused_id}"),
            format!("done:{accepted_id}")
        ]
    );
    assert_eq!(
        harness
            .count("SELECT count(*) FROM inbox WHERE consumer = 'commands' AND reply_message_id IS NOT NULL")
            .await,
        2,
        "both commands are recorded with their replies, so a redelivery resends them"
    );
    assert_eq!(harness.metrics.handled_total(), 2);
    relay.stop().await;
    consumer.stop().await;
}

/// Goal: a message id that is not plain (quotes, spaces, semicolons) is
/// bound as a parameter, never written into the SQL: the command applies
/// once, and its redelivery is recognised. Method: three commands in one
/// batch, so the odd one is not the batch's first (which is always bound)
/// but takes the path that shares a round trip with the savepoint.
#[tokio::test]
async fn an_odd_message_id_is_recorded_once_and_changes_no_sql() {
    let harness = Harness::start().await;
    let subject = harness.subjects.command("test", "do_it");
    let odd_id = "o'hara'); DELETE FROM effects; --".to_owned();
    let ids = [
        Uuid::now_v7().to_string(),
        odd_id.clone(),
        Uuid::now_v7().to_string(),
    ];
    for id in &ids {
        harness
            .publish_direct(subject.clone(), "do it".as_bytes(), id.as_str(), None)
            .await;
    }
    let (relay, consumer) = relay_and_command_consumer(&harness);
    wait_for_count(&harness, "SELECT count(*) FROM effects", 3).await;
    let recorded: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM inbox WHERE consumer = 'commands' AND message_id = $1",
    )
    .bind(&odd_id)
    .fetch_one(&harness.pool)
    .await
    .expect("inbox");
    assert_eq!(recorded, 1, "the odd id is stored as it is");

    // Its redelivery (same inbox id) is a duplicate.
    harness
        .publish_direct(
            subject,
            "do it".as_bytes(),
            &Uuid::now_v7().to_string(),
            Some(odd_id.as_str()),
        )
        .await;
    let seen = qapmap_testkit::eventually(FLOW_TIMEOUT, || async {
        harness.metrics.redelivered_duplicates_total() == 1
    })
    .await;
    assert!(seen, "the redelivery was recognised as handled");
    assert_eq!(harness.count("SELECT count(*) FROM effects").await, 3);
    assert_eq!(harness.metrics.handled_total(), 3);
    relay.stop().await;
    consumer.stop().await;
}

/// Goal: a consumer whose database's relay runs in the same process wakes
/// that relay itself after its commit, and sends no NOTIFY (a NOTIFY holds
/// a cluster-wide lock through the commit, so notifying writers commit one
/// at a time).
/// Method: the relay polls only once a minute, so only the local wake-up
/// can publish the reply within the test's wait; a listener on the relay's
/// channel must hear nothing while the command is handled.
#[tokio::test]
async fn a_consumer_wakes_its_local_relay_after_commit_without_notify() {
    let harness = Harness::start().await;
    let mut listener = sqlx::postgres::PgListener::connect_with(&harness.pool)
        .await
        .expect("listener");
    listener
        .listen(qapmap_runtime::outbox::NOTIFY_CHANNEL)
        .await
        .expect("listen");
    let relay = harness.slow_polling_relay().await;
    let consumer = command_consumer(&harness);

    harness
        .publish_direct(
            harness.subjects.command("test", "do_it"),
            "do it".as_bytes(),
            &Uuid::now_v7().to_string(),
            None,
        )
        .await;
    let replied = qapmap_testkit::eventually(Duration::from_secs(30), || async {
        harness.stream_messages(StreamKind::Replies).await == 1
    })
    .await;
    assert!(
        replied,
        "the reply was published well before the relay's next poll"
    );
    assert_eq!(harness.count("SELECT count(*) FROM effects").await, 1);
    let notification = tokio::time::timeout(Duration::from_millis(200), listener.recv()).await;
    assert!(
        notification.is_err(),
        "the consumer's transaction sent no NOTIFY: {notification:?}"
    );
    consumer.stop().await;
    relay.stop().await;
}

/// Writes what each message finds of the settings a handler may leave
/// behind, then leaves them behind: confined to a company as the
/// application role, with audit event ids noted.
#[derive(Debug)]
struct SettingsLeavingHandler;

impl MessageHandler for SettingsLeavingHandler {
    async fn handle(
        &self,
        message: &ReceivedMessage,
        transaction: &mut PgConnection,
    ) -> Result<Handled, HandlerError> {
        sqlx::query(
            "INSERT INTO seen_settings (message_id, transaction_id, role, company_id, event_ids)
             VALUES ($1, txid_current(), current_user,
                     coalesce(current_setting('qapmap.company_id', true), ''),
                     coalesce(current_setting('qapmap.event_ids', true), ''))",
        )
        .bind(&message.message_id)
        .execute(&mut *transaction)
        .await?;
        sqlx::raw_sql(
            "SET LOCAL ROLE qapmap_app;
             SET LOCAL qapmap.company_id = '00000000-0000-0000-0000-000000000001';
             SET LOCAL qapmap.event_ids = 'left-by-the-handler'",
        )
        .execute(&mut *transaction)
        .await?;
        Ok(Handled::Done)
    }
}

/// Five messages of one key published before a [`SettingsLeavingHandler`]
/// consumer with `config` starts (so they are ready at once), then consumed;
/// each leaves its row in `seen_settings`.
async fn five_ready_then_consumed(harness: &Harness, config: ConsumerConfig) {
    sqlx::raw_sql(
        "CREATE TABLE seen_settings (message_id TEXT NOT NULL, transaction_id BIGINT NOT NULL,
                                     role TEXT NOT NULL, company_id TEXT NOT NULL,
                                     event_ids TEXT NOT NULL)",
    )
    .execute(&harness.pool)
    .await
    .expect("seen_settings table");
    let events: Vec<_> = (1..=5).map(|seq| harness.event("k", seq, false)).collect();
    for event in &events {
        harness
            .publish_direct(
                event.subject.clone(),
                &event.payload,
                &event.message_id.to_string(),
                None,
            )
            .await;
    }
    let consumer = Consumer::new(
        harness.pool.clone(),
        harness.jetstream.clone(),
        harness.subjects.clone(),
        config,
        SettingsLeavingHandler,
    );
    let consumer = Running::spawn(move |stop| consumer.run(stop));
    wait_for_count(harness, "SELECT count(*) FROM seen_settings", 5).await;
    consumer.stop().await;
}

/// Goal: a message handled after another in the same batch starts as the
/// first did: not as the application role, not confined to the previous
/// message's company, with no audit event ids of its own yet.
/// Method: the handler notes what it finds, then leaves all three set; the
/// messages are published before the consumer starts, so they share a
/// batch (checked by their transaction ids).
#[tokio::test]
async fn each_message_of_a_batch_starts_with_the_settings_reset() {
    let harness = Harness::start().await;
    five_ready_then_consumed(&harness, harness.consumer_config("settings")).await;

    let session_user: String = sqlx::query_scalar("SELECT session_user::text")
        .fetch_one(&harness.pool)
        .await
        .expect("session user");
    let seen: Vec<(i64, String, String, String)> = sqlx::query_as(
        "SELECT transaction_id, role, company_id, event_ids FROM seen_settings ORDER BY message_id",
    )
    .fetch_all(&harness.pool)
    .await
    .expect("seen settings");
    let largest_batch = seen
        .iter()
        .map(|(batch, ..)| seen.iter().filter(|(other, ..)| other == batch).count())
        .max()
        .unwrap_or(0);
    assert!(largest_batch >= 2, "the messages shared a batch: {seen:?}");
    for (_, role, company_id, event_ids) in &seen {
        assert_eq!(
            (role.as_str(), company_id.as_str(), event_ids.as_str()),
            (session_user.as_str(), "", ""),
            "every message starts reset: {seen:?}"
        );
    }
}

/// Goal: a consumer limited to one message per batch commits each message
/// on its own even when several are ready at once (the shareholder's
/// payments, whose outcomes must not wait for later gateway calls).
/// Method: as above, five messages ready before the consumer starts, which
/// without the limit share a batch; their transaction ids must all differ.
#[tokio::test]
async fn a_consumer_limited_to_one_message_per_batch_commits_each_alone() {
    let harness = Harness::start().await;
    five_ready_then_consumed(
        &harness,
        harness.consumer_config("one-by-one").with_max_batch(1),
    )
    .await;

    let transactions = harness
        .count("SELECT count(DISTINCT transaction_id) FROM seen_settings")
        .await;
    assert_eq!(transactions, 5);
    assert_eq!(
        harness
            .count("SELECT count(*) FROM inbox WHERE consumer = 'one-by-one'")
            .await,
        5
    );
}
