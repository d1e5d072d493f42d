//! The inbox: a command delivered again changes nothing, and its first reply
//! is sent again.

use qapmap_runtime::consumer::{Consumer, ConsumerConfig};
use qapmap_runtime::inbox::ORIGINAL_MESSAGE_ID_HEADER;
use qapmap_runtime::messaging::StreamKind;
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
    (relay, Running::spawn(move |stop| consumer.run(stop)))
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
        .jetstream
        .send_publish(
            subject.clone(),
            async_nats::jetstream::message::PublishMessage::build()
                .payload("do it".into())
                .message_id(&command_id),
        )
        .await
        .expect("publish")
        .await
        .expect("ack");
    wait_for_count(
        &harness,
        "SELECT count(*) FROM outbox WHERE subject LIKE '%.reply.%' AND published_at IS NOT NULL",
        1,
    )
    .await;
    let first_publication = reply_published_at(&harness).await;

    harness
        .jetstream
        .send_publish(
            subject,
            async_nats::jetstream::message::PublishMessage::build()
                .payload("do it".into())
                .message_id(Uuid::now_v7().to_string())
                .header(ORIGINAL_MESSAGE_ID_HEADER, command_id.as_str()),
        )
        .await
        .expect("publish")
        .await
        .expect("ack");
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
            .jetstream
            .send_publish(
                subject.clone(),
                async_nats::jetstream::message::PublishMessage::build()
                    .payload(payload.into())
                    .message_id(id.as_str()),
            )
            .await
            .expect("publish")
            .await
            .expect("ack");
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
            .jetstream
            .send_publish(
                subject.clone(),
                async_nats::jetstream::message::PublishMessage::build()
                    .payload("do it".into())
                    .message_id(id.as_str()),
            )
            .await
            .expect("publish")
            .await
            .expect("ack");
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
        .jetstream
        .send_publish(
            subject,
            async_nats::jetstream::message::PublishMessage::build()
                .payload("do it".into())
                .message_id(Uuid::now_v7().to_string())
                .header(ORIGINAL_MESSAGE_ID_HEADER, odd_id.as_str()),
        )
        .await
        .expect("publish")
        .await
        .expect("ack");
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
