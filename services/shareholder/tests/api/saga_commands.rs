//! The saga command contract over real NATS and Postgres: commands published
//! to the COMMANDS stream as the orchestrator does, replies read back from
//! the REPLIES stream. One gateway call and one payment per (saga, step),
//! whatever is re-sent or redelivered.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull};
use futures::StreamExt;
use prost::Message;
use qapmap_proto::equity::v1 as equity;
use qapmap_proto::messaging::v1::saga_command::Command;
use qapmap_proto::messaging::v1::saga_reply::Result as ReplyResult;
use qapmap_proto::messaging::v1::{ReplyOutcome, SagaCommand, SagaReply};
use qapmap_proto::shareholder::v1 as shareholder;
use qapmap_runtime::messaging::{StreamKind, Subjects};
use qapmap_testkit::eventually;
use uuid::Uuid;

use crate::helpers::{TestApp, money, spawn_app};

/// Bounds every wait for a reply or a row; a retried command needs one
/// backoff delay (500 ms) on top of the relay and consumer round trips.
const WAIT: Duration = Duration::from_secs(15);
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// A JetStream client on the service's namespace, with a reader of replies.
struct Bus {
    jetstream: jetstream::Context,
    subjects: Subjects,
    replies: pull::Ordered,
}

/// A reply as it arrived.
struct Received {
    subject: String,
    traceparent: Option<String>,
    reply: SagaReply,
}

impl Bus {
    async fn connect(app: &TestApp) -> Self {
        let client = async_nats::connect(app.service.namespace.url.as_str())
            .await
            .expect("connect to NATS");
        let jetstream = jetstream::new(client);
        let subjects = app.service.namespace.subjects();
        let stream = jetstream
            .get_stream(subjects.stream_name(StreamKind::Replies))
            .await
            .expect("the service created the replies stream");
        let replies = stream
            .create_consumer(pull::OrderedConfig {
                filter_subject: format!("{}.reply.>", subjects.namespace()),
                ..Default::default()
            })
            .await
            .expect("ordered consumer")
            .messages()
            .await
            .expect("reply messages");
        Self {
            jetstream,
            subjects,
            replies,
        }
    }

    /// Publishes `command` as the orchestrator's relay would, under a new
    /// `Nats-Msg-Id` (a re-send after a deadline is a new message).
    async fn send(&self, command: &SagaCommand, name: &str, traceparent: Option<&str>) {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", Uuid::now_v7().to_string().as_str());
        headers.insert("Qapmap-Type", "qapmap.messaging.v1.SagaCommand");
        if let Some(traceparent) = traceparent {
            headers.insert("traceparent", traceparent);
        }
        self.jetstream
            .publish_with_headers(
                self.subjects.command("shareholder", name),
                headers,
                command.encode_to_vec().into(),
            )
            .await
            .expect("publish")
            .await
            .expect("JetStream stored the command");
    }

    async fn next_reply(&mut self) -> Received {
        let message = tokio::time::timeout(WAIT, self.replies.next())
            .await
            .expect("a reply within the wait")
            .expect("the reply stream is open")
            .expect("a reply message");
        let traceparent = message
            .headers
            .as_ref()
            .and_then(|headers| headers.get("traceparent"))
            .map(|value| value.to_string());
        Received {
            subject: message.subject.to_string(),
            traceparent,
            reply: SagaReply::decode(message.payload.as_ref()).expect("a SagaReply"),
        }
    }
}

/// A pivot payment command for `stakeholder_id` of the app's company.
pub(crate) fn payment_command(
    app: &TestApp,
    saga_type: &str,
    stakeholder_id: &str,
    amount: &str,
) -> SagaCommand {
    let (stakeholder_id, amount) = (stakeholder_id.to_owned(), Some(money(amount, "USD")));
    let command = if saga_type == "share_buyback" {
        Command::DisbursePayment(shareholder::DisbursePaymentCommand {
            stakeholder_id,
            amount,
        })
    } else {
        Command::CollectPayment(shareholder::CollectPaymentCommand {
            stakeholder_id,
            amount,
        })
    };
    SagaCommand {
        saga_id: Uuid::now_v7().to_string(),
        saga_type: saga_type.to_owned(),
        step: 2,
        compensation: false,
        company_id: app.company_id.to_string(),
        command: Some(command),
        ..SagaCommand::default()
    }
}

fn key(command: &SagaCommand) -> String {
    format!("saga:{}:{}", command.saga_id, command.step)
}

fn payment_id(reply: &SagaReply) -> Uuid {
    let Some(ReplyResult::Payment(result)) = &reply.result else {
        panic!("a payment result in {reply:?}");
    };
    assert!(!result.gateway_reference.is_empty());
    result.payment_id.parse().expect("a payment id")
}

/// The stored payment's direction, status and gateway attempts.
async fn payment_row(app: &TestApp, payment_id: Uuid) -> (String, String, i32) {
    sqlx::query_as("SELECT direction, status, gateway_attempts FROM payments WHERE id = $1")
        .bind(payment_id)
        .fetch_one(&app.pool)
        .await
        .expect("payment row")
}

fn assert_succeeded(received: &Received, command: &SagaCommand) {
    let reply = &received.reply;
    assert_eq!(
        reply.outcome,
        i32::from(ReplyOutcome::Succeeded),
        "{reply:?}"
    );
    assert_eq!(reply.saga_id, command.saga_id);
    assert_eq!(reply.step, command.step);
    assert!(!reply.compensation);
    assert_eq!(reply.company_id, command.company_id);
}

fn assert_rejected(received: &Received, reason_code: &str) {
    let reply = &received.reply;
    assert_eq!(
        reply.outcome,
        i32::from(ReplyOutcome::Rejected),
        "{reply:?}"
    );
    assert_eq!(reply.reason_code, reason_code);
    assert!(!reply.reason.is_empty());
    assert!(reply.result.is_none());
}

#[tokio::test]
async fn collect_and_disburse_commands_pay_once_and_reply_succeeded() {
    let app = spawn_app().await;
    let mut bus = Bus::connect(&app).await;
    let holder = app.stakeholder_paying_with("bank:ada").await;
    let collect = payment_command(&app, "option_exercise", &holder.id, "1250.50");
    let disburse = payment_command(&app, "share_buyback", &holder.id, "99.99");

    bus.send(&collect, "collect_payment", None).await;
    bus.send(&disburse, "disburse_payment", None).await;
    let mut replies = [bus.next_reply().await, bus.next_reply().await];
    replies.sort_by_key(|received| received.reply.saga_id != collect.saga_id);

    let ns = app.service.namespace.name.as_str();
    assert_succeeded(&replies[0], &collect);
    assert_eq!(replies[0].subject, format!("{ns}.reply.option_exercise"));
    assert_succeeded(&replies[1], &disburse);
    assert_eq!(replies[1].subject, format!("{ns}.reply.share_buyback"));
    let collected = payment_row(&app, payment_id(&replies[0].reply)).await;
    let disbursed = payment_row(&app, payment_id(&replies[1].reply)).await;
    assert_eq!(
        collected,
        ("collection".to_owned(), "succeeded".to_owned(), 1)
    );
    assert_eq!(
        disbursed,
        ("disbursement".to_owned(), "succeeded".to_owned(), 1)
    );
    assert_eq!(app.gateway.calls_for(&key(&collect)), 1);
    assert_eq!(app.gateway.calls_for(&key(&disburse)), 1);
    assert_eq!(app.count("payments").await, 2);
}

#[tokio::test]
async fn a_re_sent_command_gets_the_first_reply_and_no_second_gateway_call() {
    let app = spawn_app().await;
    let mut bus = Bus::connect(&app).await;
    let holder = app.stakeholder_paying_with("bank:ada").await;
    let command = payment_command(&app, "option_exercise", &holder.id, "10");

    bus.send(&command, "collect_payment", None).await;
    let first = bus.next_reply().await;
    // The orchestrator's deadline passed: same saga and step, new message id.
    bus.send(&command, "collect_payment", None).await;
    let second = bus.next_reply().await;

    assert_succeeded(&first, &command);
    assert_eq!(second.reply, first.reply);
    // Both messages really were handled (two inbox rows, two replies).
    assert_eq!(consumer_rows(&app).await, (2, 2, 0));
    assert_eq!(app.gateway.calls_for(&key(&command)), 1);
    assert_eq!(app.count("payments").await, 1);
}

#[tokio::test]
async fn a_payment_outcome_commits_with_the_commands_inbox_row() {
    // One commit for the step's effect and its answer (DESIGN.md): the
    // final outcome is written in the command's transaction, after the
    // claim committed on its own.
    let app = spawn_app().await;
    let mut bus = Bus::connect(&app).await;
    let holder = app.stakeholder_paying_with("bank:ada").await;
    let command = payment_command(&app, "option_exercise", &holder.id, "10");

    bus.send(&command, "collect_payment", None).await;
    let received = bus.next_reply().await;

    assert_succeeded(&received, &command);
    let payment_transaction: String =
        sqlx::query_scalar("SELECT xmin::text FROM payments WHERE id = $1")
            .bind(payment_id(&received.reply))
            .fetch_one(&app.pool)
            .await
            .expect("payment");
    let inbox_transaction: String =
        sqlx::query_scalar("SELECT xmin::text FROM inbox WHERE consumer = 'shareholder-commands'")
            .fetch_one(&app.pool)
            .await
            .expect("inbox row");
    assert_eq!(payment_transaction, inbox_transaction);
    assert_eq!(
        payment_row(&app, payment_id(&received.reply)).await,
        ("collection".to_owned(), "succeeded".to_owned(), 1)
    );
}

#[tokio::test]
async fn a_declined_payment_is_rejected_payment_declined_and_stored_declined() {
    let app = spawn_app().await;
    let mut bus = Bus::connect(&app).await;
    let holder = app.stakeholder_paying_with("sandbox:decline").await;
    let command = payment_command(&app, "share_buyback", &holder.id, "10");

    bus.send(&command, "disburse_payment", None).await;
    let received = bus.next_reply().await;

    assert_rejected(&received, "payment_declined");
    let status: String =
        sqlx::query_scalar("SELECT status FROM payments WHERE idempotency_key = $1")
            .bind(key(&command))
            .fetch_one(&app.pool)
            .await
            .expect("payment row");
    assert_eq!(status, "declined");
    assert_eq!(app.gateway.calls_for(&key(&command)), 1);
}

#[tokio::test]
async fn a_transient_gateway_failure_is_retried_by_redelivery_and_pays_once() {
    let app = spawn_app().await;
    let mut bus = Bus::connect(&app).await;
    let holder = app
        .stakeholder_paying_with("sandbox:fail-transient:1")
        .await;
    let command = payment_command(&app, "option_exercise", &holder.id, "10");

    bus.send(&command, "collect_payment", None).await;
    let received = bus.next_reply().await;

    assert_succeeded(&received, &command);
    let row = payment_row(&app, payment_id(&received.reply)).await;
    assert_eq!(row, ("collection".to_owned(), "succeeded".to_owned(), 2));
    assert_eq!(app.gateway.calls_for(&key(&command)), 2);
    assert_eq!(app.count("payments").await, 1);
}

#[tokio::test]
async fn another_companys_stakeholder_is_rejected_stakeholder_not_found() {
    let app = spawn_app().await;
    let mut bus = Bus::connect(&app).await;
    let holder = app.stakeholder_paying_with("bank:ada").await;
    let mut command = payment_command(&app, "option_exercise", &holder.id, "10");
    command.company_id = Uuid::now_v7().to_string();

    bus.send(&command, "collect_payment", None).await;
    let received = bus.next_reply().await;

    assert_rejected(&received, "stakeholder_not_found");
    assert_eq!(received.reply.company_id, command.company_id);
    assert_eq!(app.gateway.total_calls(), 0);
    assert_eq!(app.count("payments").await, 0);
}

#[tokio::test]
async fn the_traceparent_header_is_copied_onto_the_reply() {
    let app = spawn_app().await;
    let mut bus = Bus::connect(&app).await;
    let holder = app.stakeholder_paying_with("bank:ada").await;
    let command = payment_command(&app, "option_exercise", &holder.id, "10");

    bus.send(&command, "collect_payment", Some(TRACEPARENT))
        .await;
    let received = bus.next_reply().await;

    assert_succeeded(&received, &command);
    assert_eq!(received.traceparent.as_deref(), Some(TRACEPARENT));
}

/// Rows the commands consumer wrote: inbox entries, replies enqueued, dead letters.
async fn consumer_rows(app: &TestApp) -> (i64, i64, i64) {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM inbox WHERE consumer = 'shareholder-commands'),
                (SELECT count(*) FROM outbox WHERE subject LIKE '%.reply.%'),
                (SELECT count(*) FROM dead_letters WHERE consumer = 'shareholder-commands')",
    )
    .fetch_one(&app.pool)
    .await
    .expect("count consumer rows")
}

#[tokio::test]
async fn an_outcome_unknown_payment_is_not_answered_and_not_paid_again() {
    let app = spawn_app().await;
    let bus = Bus::connect(&app).await;
    let holder = app.stakeholder_paying_with("bank:ada").await;
    let command = payment_command(&app, "option_exercise", &holder.id, "10");
    // An earlier attempt died mid-call: nobody knows whether money moved.
    sqlx::query(
        "INSERT INTO payments (id, company_id, idempotency_key, stakeholder_id, direction,
             amount, currency, status, gateway_attempts)
         VALUES ($1, $2, $3, $4, 'collection', 10, 'USD', 'outcome_unknown', 1)",
    )
    .bind(Uuid::now_v7())
    .bind(app.company_id)
    .bind(key(&command))
    .bind(holder.id.parse::<Uuid>().expect("uuid"))
    .execute(&app.pool)
    .await
    .expect("insert the interrupted payment");

    bus.send(&command, "collect_payment", None).await;

    // The inbox row and any reply commit together, so once the row is there
    // the absence of a reply is final.
    let handled = eventually(WAIT, || async { consumer_rows(&app).await.0 == 1 }).await;
    assert!(handled, "the command was handled");
    assert_eq!(consumer_rows(&app).await, (1, 0, 0));
    assert_eq!(app.gateway.total_calls(), 0);
}

#[tokio::test]
async fn a_command_this_service_does_not_handle_is_dead_lettered_unanswered() {
    let app = spawn_app().await;
    let bus = Bus::connect(&app).await;
    let mut command = payment_command(&app, "option_exercise", &Uuid::now_v7().to_string(), "1");
    command.command = Some(Command::ConfirmExercise(equity::ConfirmExerciseCommand {
        reservation_id: Uuid::now_v7().to_string(),
    }));

    bus.send(&command, "confirm_exercise", None).await;

    let dead = eventually(WAIT, || async { consumer_rows(&app).await.2 == 1 }).await;
    assert!(dead, "the command became a dead letter");
    assert_eq!(consumer_rows(&app).await, (0, 0, 1));
    assert_eq!(app.gateway.total_calls(), 0);
}

#[tokio::test]
async fn a_missing_instruction_or_a_bad_amount_is_rejected_and_nothing_is_paid() {
    let app = spawn_app().await;
    let mut bus = Bus::connect(&app).await;
    let without_instruction = app.stakeholder_paying_with("").await;
    let holder = app.stakeholder_paying_with("bank:ada").await;
    let no_instruction = payment_command(&app, "option_exercise", &without_instruction.id, "10");
    let zero = payment_command(&app, "share_buyback", &holder.id, "0");

    bus.send(&no_instruction, "collect_payment", None).await;
    let first = bus.next_reply().await;
    bus.send(&zero, "disburse_payment", None).await;
    let second = bus.next_reply().await;

    assert_eq!(first.reply.saga_id, no_instruction.saga_id);
    assert_rejected(&first, "payment_instruction_missing");
    assert_eq!(second.reply.saga_id, zero.saga_id);
    assert_rejected(&second, "invalid_command");
    assert_eq!(app.gateway.total_calls(), 0);
    assert_eq!(app.count("payments").await, 0);
}
