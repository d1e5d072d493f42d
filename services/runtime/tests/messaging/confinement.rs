//! A handler that names a message's company (`MessageHandler::confinement`)
//! finds its transaction already confined to it: the consumer sets the
//! confinement in the round trip that records the message in the inbox,
//! only for a new message, and resets it before the next message.

use std::sync::{Arc, Mutex};

use qapmap_runtime::consumer::{Consumer, Handled, HandlerError, MessageHandler, ReceivedMessage};
use qapmap_runtime::inbox;
use qapmap_runtime::outbox::OutboxMessage;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::support::{Harness, Running, wait_for_count};

const CONSUMER: &str = "confined";

/// The role and company a transaction runs under.
async fn settings(transaction: &mut PgConnection) -> (String, String) {
    sqlx::query_as(
        "SELECT current_user::text, coalesce(current_setting('qapmap.company_id', true), '')",
    )
    .fetch_one(transaction)
    .await
    .expect("settings")
}

/// Payload `<company uuid>:<seq>` names a company, `none:<seq>` none.
fn company_of(message: &ReceivedMessage) -> Option<Uuid> {
    let body = std::str::from_utf8(&message.payload).ok()?;
    Uuid::try_parse(body.split(':').next()?).ok()
}

/// A message's payload and the (role, company) its handler started under.
type Observation = (String, (String, String));

/// Notes, for each message, the settings it found before doing anything
/// (and after its own `confine`, when it names another company).
#[derive(Debug, Clone, Default)]
struct ObservingHandler {
    seen: Arc<Mutex<Vec<Observation>>>,
}

impl MessageHandler for ObservingHandler {
    fn confinement(&self, message: &ReceivedMessage) -> Option<Uuid> {
        company_of(message)
    }

    async fn handle(
        &self,
        message: &ReceivedMessage,
        transaction: &mut PgConnection,
    ) -> Result<Handled, HandlerError> {
        let found = settings(&mut *transaction).await;
        let body = String::from_utf8_lossy(&message.payload).into_owned();
        self.seen.lock().expect("lock").push((body.clone(), found));
        // `<company>:<seq>:as:<other>`: the handler's own parse names
        // another company, and `confine` must follow it.
        if let Some(other) = body
            .split_once(":as:")
            .and_then(|(_, other)| Uuid::try_parse(other).ok())
        {
            message.confine(&mut *transaction, other).await?;
            let after = settings(&mut *transaction).await;
            self.seen.lock().expect("lock").push((body, after));
        }
        Ok(Handled::Done)
    }
}

fn event(harness: &Harness, body: String) -> OutboxMessage {
    OutboxMessage {
        message_id: Uuid::now_v7(),
        company_id: None,
        subject: harness.subjects.event("test", "happened"),
        payload: body.into_bytes(),
        headers: Default::default(),
        partition_key: "key".to_owned(),
    }
}

/// Goal: in one batch, each message's handler starts confined to the
/// company it named (the first message's round trip and the later ones'
/// alike), and a message naming none starts unconfined, as the owner. A
/// handler confining to another company than the one named ends up
/// confined to its own choice.
#[tokio::test]
async fn each_message_of_a_batch_starts_confined_to_the_company_it_names() {
    let harness = Harness::start().await;
    let (ours, theirs) = (Uuid::now_v7(), Uuid::now_v7());
    let bodies = [
        format!("{ours}:1"),
        format!("{theirs}:2"),
        "none:3".to_owned(),
        format!("{ours}:4"),
        format!("{ours}:5:as:{theirs}"),
    ];
    let relay = harness.relay();
    let relay = Running::spawn(move |stop| relay.run(stop));
    let events: Vec<_> = bodies
        .iter()
        .map(|body| event(&harness, body.clone()))
        .collect();
    harness.enqueue(&events).await;
    let published = qapmap_testkit::eventually(crate::support::FLOW_TIMEOUT, || async {
        harness
            .stream_messages(qapmap_runtime::messaging::StreamKind::Events)
            .await
            == 5
    })
    .await;
    assert!(published, "the relay published every event");
    relay.stop().await;

    let handler = ObservingHandler::default();
    let consumer = Consumer::new(
        harness.pool.clone(),
        harness.jetstream.clone(),
        harness.subjects.clone(),
        harness.consumer_config(CONSUMER),
        handler.clone(),
    );
    let consumer = Running::spawn(move |stop| consumer.run(stop));
    wait_for_count(
        &harness,
        "SELECT count(*) FROM inbox WHERE consumer = 'confined'",
        5,
    )
    .await;
    consumer.stop().await;

    let owner: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(&harness.pool)
        .await
        .expect("owner");
    let app = qapmap_runtime::tenancy::APPLICATION_ROLE.to_owned();
    let seen = handler.seen.lock().expect("lock").clone();
    assert_eq!(
        seen,
        [
            (bodies[0].clone(), (app.clone(), ours.to_string())),
            (bodies[1].clone(), (app.clone(), theirs.to_string())),
            (bodies[2].clone(), (owner, String::new())),
            (bodies[3].clone(), (app.clone(), ours.to_string())),
            (bodies[4].clone(), (app.clone(), ours.to_string())),
            (bodies[4].clone(), (app, theirs.to_string())),
        ]
    );
}

/// Goal: the inbox statement confines only when it records a new message;
/// a message seen before leaves the transaction as it was (its stored
/// reply is read and resent as the owner). Both forms: bound parameters
/// and values written into the SQL.
#[tokio::test]
async fn only_a_new_message_is_confined_by_its_inbox_statement() {
    let harness = Harness::start().await;
    let company = Uuid::now_v7();
    let owner: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(&harness.pool)
        .await
        .expect("owner");
    let app = qapmap_runtime::tenancy::APPLICATION_ROLE.to_owned();
    let confined = (app, company.to_string());
    let unconfined = (owner, String::new());

    for (message_id, inline) in [("bound-1", false), ("inline-1", true)] {
        let mut expected = [(true, confined.clone()), (false, unconfined.clone())].into_iter();
        for _attempt in 0..2 {
            let mut transaction = harness.pool.begin().await.expect("begin");
            let recorded = if inline {
                let sql = inbox::inline_record_sql(CONSUMER, message_id, "ns.x", Some(company))
                    .expect("plain values");
                let rows = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .fetch_all(&mut *transaction)
                    .await
                    .expect("inline record");
                !rows.is_empty()
            } else {
                inbox::record_and_confine(
                    &mut transaction,
                    CONSUMER,
                    message_id,
                    "ns.x",
                    Some(company),
                )
                .await
                .expect("record")
            };
            let found = settings(&mut transaction).await;
            transaction.commit().await.expect("commit");
            assert_eq!(
                (recorded, found),
                expected.next().expect("two attempts"),
                "{message_id}"
            );
        }
    }
}
