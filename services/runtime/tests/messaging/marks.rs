//! A relay's marks ride in the next batch of a consumer of the same database
//! in the same process, so a busy service pays no commit for them.

use qapmap_runtime::consumer::{
    Consumer, ConsumerConfig, Handled, HandlerError, MessageHandler, ReceivedMessage,
};
use qapmap_runtime::messaging::StreamKind;
use qapmap_runtime::outbox::OutboxMessage;
use qapmap_runtime::relay::RelayConfig;
use sqlx::PgConnection;
use std::time::Duration;
use uuid::Uuid;

use crate::support::{CommandHandler, Harness, Running};

/// A [`CommandHandler`] confined to a company as the application role, as
/// the services' handlers are: the first command's company is not the
/// later ones', so the marks of the first reply would be hidden from an
/// UPDATE run in a later batch's confinement.
#[derive(Debug)]
struct ConfiningCommandHandler(CommandHandler);

const FIRST_COMPANY: Uuid = Uuid::from_u128(1);
const LATER_COMPANY: Uuid = Uuid::from_u128(2);

impl MessageHandler for ConfiningCommandHandler {
    async fn handle(
        &self,
        message: &ReceivedMessage,
        transaction: &mut PgConnection,
    ) -> Result<Handled, HandlerError> {
        let company = if message.payload.as_ref() == b"first" {
            FIRST_COMPANY
        } else {
            LATER_COMPANY
        };
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "SET LOCAL ROLE qapmap_app; SET LOCAL qapmap.company_id = '{company}'"
        )))
        .execute(&mut *transaction)
        .await?;
        match self.0.handle(message, transaction).await? {
            Handled::Reply(reply) => Ok(Handled::Reply(OutboxMessage {
                company_id: Some(company),
                ..reply
            })),
            other => Ok(other),
        }
    }
}

async fn publish_command(harness: &Harness, body: &str) -> String {
    let message_id = Uuid::now_v7().to_string();
    harness
        .publish_direct(
            harness.subjects.command("test", "do_it"),
            body.as_bytes(),
            &message_id,
            None,
        )
        .await;
    message_id
}

/// Each reply's payload (`done:<command id>`) and whether its row is marked.
async fn replies_marked(harness: &Harness) -> Vec<(String, bool)> {
    sqlx::query_as(
        "SELECT convert_from(payload, 'UTF8'), published_at IS NOT NULL
         FROM outbox WHERE subject LIKE '%.reply.%' ORDER BY id",
    )
    .fetch_all(&harness.pool)
    .await
    .expect("reply rows")
}

/// Goal: the rows a relay published are marked by the next batch of a
/// consumer beside it, in that batch's transaction, even one its handler
/// left confined to a company; the relay itself commits no mark.
/// Method: the relay polls once a minute and waits a minute before marking
/// itself, so within the test only the consumer can mark. Commands one
/// after the other: a later one's batch marks the first's reply; the last
/// reply, published after, waits unmarked.
#[tokio::test]
async fn a_consumer_batch_writes_the_marks_of_the_relay_beside_it() {
    let harness = Harness::start().await;
    let relay = harness
        .slow_polling_relay_with(RelayConfig {
            mark_delay: Duration::from_secs(60),
            ..RelayConfig::default()
        })
        .await;
    let consumer = Consumer::new(
        harness.pool.clone(),
        harness.jetstream.clone(),
        harness.subjects.clone(),
        ConsumerConfig::new(
            "commands",
            StreamKind::Commands,
            harness.subjects.command("test", "*"),
        ),
        ConfiningCommandHandler(CommandHandler {
            reply_subject: harness.subjects.reply("test_saga"),
        }),
    )
    .with_metrics(harness.metrics.clone());
    let consumer = Running::spawn(move |stop| consumer.run(stop));

    let first = publish_command(&harness, "first").await;
    let first_published = qapmap_testkit::eventually(Duration::from_secs(30), || async {
        harness.stream_messages(StreamKind::Replies).await == 1
    })
    .await;
    assert!(first_published, "the first reply was published");
    assert_eq!(
        replies_marked(&harness).await,
        [(format!("done:{first}"), false)],
        "the relay waits for a batch to mark it"
    );

    // The relay notes its marks just after JetStream's ack, so a command
    // sent at once may find none yet: a later one then takes them.
    let mut later_replies = 1;
    let mut first_marked = false;
    while !first_marked && later_replies <= 5 {
        publish_command(&harness, "later").await;
        later_replies += 1;
        let published = qapmap_testkit::eventually(Duration::from_secs(30), || async {
            harness.stream_messages(StreamKind::Replies).await == later_replies
        })
        .await;
        assert!(published, "reply {later_replies} was published");
        first_marked = replies_marked(&harness).await[0].1;
    }
    let replies = replies_marked(&harness).await;
    consumer.stop().await;
    relay.stop().await;
    assert_eq!(replies[0], (format!("done:{first}"), true), "{replies:?}");
    assert!(
        !replies.last().expect("replies").1,
        "the last reply waits for a later batch: {replies:?}"
    );
    let marked_rows = replies.iter().filter(|(_, marked)| *marked).count() as u64;
    assert_eq!(
        harness.metrics.marks_in_consumer_batches_total(),
        marked_rows
    );
    assert_eq!(harness.metrics.relay_mark_commits_total(), 0);
}
