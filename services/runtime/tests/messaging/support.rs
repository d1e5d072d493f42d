//! A test's database, namespace, relays and consumers, and the effect the
//! test handler writes: one `effects` row per handled message, in the order
//! handled, so tests can count what was lost, doubled or reordered.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use qapmap_runtime::consumer::{
    Consumer, ConsumerConfig, Handled, HandlerError, MessageHandler, ReceivedMessage,
};
use qapmap_runtime::messaging::{self, StreamKind, Subjects};
use qapmap_runtime::metrics::MessagingMetrics;
use qapmap_runtime::outbox::{self, OutboxMessage};
use qapmap_runtime::relay::{Relay, RelayConfig};
use qapmap_runtime::server::StopSignal;
use qapmap_testkit::database::TestDatabase;
use qapmap_testkit::nats::TestNamespace;
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgConnection, PgPool};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

/// How long a test waits for messages to flow before it fails.
/// Generous: a loaded 2-core CI machine runs other tests beside these, and
/// waiting ends as soon as the count is reached.
pub(crate) const FLOW_TIMEOUT: Duration = Duration::from_secs(240);

/// One test's database, namespace and JetStream.
#[derive(Debug)]
pub(crate) struct Harness {
    pub(crate) pool: PgPool,
    pub(crate) jetstream: jetstream::Context,
    pub(crate) subjects: Subjects,
    pub(crate) metrics: Arc<MessagingMetrics>,
    // Held so the streams and the database live as long as the test; dropped
    // last, namespace first (streams), then the database.
    _namespace: TestNamespace,
    _database: TestDatabase,
}

impl Harness {
    /// On the shared NATS.
    pub(crate) async fn start() -> Self {
        Self::start_on(TestNamespace::new()).await
    }

    pub(crate) async fn start_on(namespace: TestNamespace) -> Self {
        let database = TestDatabase::create("runtime_msg").await;
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .connect(&database.url)
            .await
            .expect("connect to the test database");
        qapmap_runtime::database::runtime_migrator()
            .run(&pool)
            .await
            .expect("runtime migrations");
        sqlx::raw_sql(
            "CREATE TABLE effects (
                 applied      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                 consumer     TEXT NOT NULL,
                 partition_key TEXT NOT NULL,
                 seq          INT NOT NULL,
                 message_id   TEXT NOT NULL,
                 -- The consumer batch's transaction (savepoints share it).
                 transaction_id BIGINT NOT NULL DEFAULT txid_current());
             CREATE TABLE poison_fixed (fixed BOOLEAN NOT NULL);
             INSERT INTO poison_fixed VALUES (false);",
        )
        .execute(&pool)
        .await
        .expect("test tables");
        let client = async_nats::ConnectOptions::new()
            .max_reconnects(None)
            .connect(namespace.url.as_str())
            .await
            .expect("connect to NATS");
        let jetstream = jetstream::new(client);
        let subjects = namespace.subjects();
        messaging::ensure_streams(&jetstream, &subjects)
            .await
            .expect("streams");
        Self {
            pool,
            jetstream,
            subjects,
            metrics: Arc::new(MessagingMetrics::new()),
            _namespace: namespace,
            _database: database,
        }
    }

    /// The event a test sends: `<key>:<seq>` (or `poison:<key>:<seq>`).
    pub(crate) fn event(&self, key: &str, seq: i32, poison: bool) -> OutboxMessage {
        let body = if poison {
            format!("poison:{key}:{seq}")
        } else {
            format!("{key}:{seq}")
        };
        self.event_with_body(key, body)
    }

    /// An event that needs `<key>:<seq - 1>` to have landed first: the
    /// handler says it came early until then.
    pub(crate) fn event_needing_previous(&self, key: &str, seq: i32) -> OutboxMessage {
        self.event_with_body(key, format!("needs-previous:{key}:{seq}"))
    }

    fn event_with_body(&self, key: &str, body: String) -> OutboxMessage {
        OutboxMessage {
            message_id: Uuid::now_v7(),
            company_id: None,
            subject: self.subjects.event("test", "happened"),
            payload: body.into_bytes(),
            headers: Default::default(),
            partition_key: key.to_owned(),
        }
    }

    /// Enqueues and commits events, one transaction.
    pub(crate) async fn enqueue(&self, events: &[OutboxMessage]) {
        let mut transaction = self.pool.begin().await.expect("begin");
        for event in events {
            outbox::enqueue(&mut transaction, event)
                .await
                .expect("enqueue");
        }
        transaction.commit().await.expect("commit");
    }

    /// Publishes straight to JetStream, as a relay would, and waits for the
    /// ack. `original_id`: the inbox id a redelivery or replay carries.
    pub(crate) async fn publish_direct(
        &self,
        subject: String,
        payload: &[u8],
        message_id: &str,
        original_id: Option<&str>,
    ) {
        let mut message = jetstream::message::PublishMessage::build()
            .payload(payload.to_vec().into())
            .message_id(message_id);
        if let Some(original_id) = original_id {
            message = message.header(
                qapmap_runtime::inbox::ORIGINAL_MESSAGE_ID_HEADER,
                original_id,
            );
        }
        self.jetstream
            .send_publish(subject, message)
            .await
            .expect("publish")
            .await
            .expect("ack");
    }

    /// A running relay that polls only once a minute, so that what it
    /// publishes sooner it was woken for; returned once it is registered
    /// for local wake-ups.
    pub(crate) async fn slow_polling_relay(&self) -> Running {
        self.slow_polling_relay_with(RelayConfig::default()).await
    }

    /// [`Harness::slow_polling_relay`] with `config`'s other settings.
    pub(crate) async fn slow_polling_relay_with(&self, config: RelayConfig) -> Running {
        let relay = self.relay().with_config(RelayConfig {
            poll_interval: Duration::from_secs(60),
            ..config
        });
        let relay = Running::spawn(move |stop| relay.run(stop));
        let registered = qapmap_testkit::eventually(Duration::from_secs(30), || async {
            !qapmap_runtime::local_relay::running(&self.pool).is_empty()
        })
        .await;
        assert!(registered, "the relay registered its wake-up");
        relay
    }

    pub(crate) fn relay(&self) -> Relay {
        Relay::new(self.pool.clone(), self.jetstream.clone())
            .with_config(RelayConfig {
                poll_interval: Duration::from_millis(500),
                ..RelayConfig::default()
            })
            .with_metrics(self.metrics.clone())
    }

    pub(crate) fn consumer_config(&self, name: &str) -> ConsumerConfig {
        ConsumerConfig::new(name, StreamKind::Events, self.subjects.event("test", "*"))
            .with_backoff(vec![Duration::from_millis(100)])
            .with_ack_wait(Duration::from_secs(5))
    }

    pub(crate) fn consumer(&self, config: ConsumerConfig) -> Consumer<RecordingHandler> {
        self.consumer_on(self.jetstream.clone(), config)
    }

    /// A consumer that talks to NATS through `jetstream`'s own client.
    pub(crate) fn consumer_on(
        &self,
        jetstream: jetstream::Context,
        config: ConsumerConfig,
    ) -> Consumer<RecordingHandler> {
        let handler = RecordingHandler {
            consumer: config.name.clone(),
        };
        Consumer::new(
            self.pool.clone(),
            jetstream,
            self.subjects.clone(),
            config,
            handler,
        )
        .with_metrics(self.metrics.clone())
    }

    pub(crate) async fn count(&self, sql: &'static str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(&self.pool)
            .await
            .expect("count query")
    }

    /// Messages stored in one of the namespace's streams.
    pub(crate) async fn stream_messages(&self, kind: StreamKind) -> u64 {
        let mut stream = self
            .jetstream
            .get_stream(self.subjects.stream_name(kind))
            .await
            .expect("stream");
        stream.info().await.expect("stream info").state.messages
    }

    /// Effects that break exactly-once or per-key order, for `consumer`:
    /// (handled, distinct messages, rows out of order).
    pub(crate) async fn effect_audit(&self, consumer: &str) -> (i64, i64, i64) {
        sqlx::query_as(
            "SELECT count(*), count(DISTINCT message_id),
                    count(*) FILTER (WHERE (previous IS NULL AND seq <> 1)
                                        OR (previous IS NOT NULL AND seq <> previous + 1))
             FROM (SELECT message_id, seq,
                          lag(seq) OVER (PARTITION BY partition_key ORDER BY applied) AS previous
                   FROM effects WHERE consumer = $1) AS ordered",
        )
        .bind(consumer)
        .fetch_one(&self.pool)
        .await
        .expect("audit query")
    }
}

/// Writes one `effects` row per message; refuses poison until it is fixed,
/// and says a `needs-previous:` message came early until its predecessor landed.
#[derive(Debug)]
pub(crate) struct RecordingHandler {
    consumer: String,
}

impl RecordingHandler {
    pub(crate) fn new(consumer: &str) -> Self {
        Self {
            consumer: consumer.to_owned(),
        }
    }
}

impl MessageHandler for RecordingHandler {
    async fn handle(
        &self,
        message: &ReceivedMessage,
        transaction: &mut PgConnection,
    ) -> Result<Handled, HandlerError> {
        let body = std::str::from_utf8(&message.payload)
            .map_err(|error| HandlerError::Poison(error.into()))?;
        let (poison, rest) = match body.strip_prefix("poison:") {
            Some(rest) => (true, rest),
            None => (false, body),
        };
        let (needs_previous, rest) = match rest.strip_prefix("needs-previous:") {
            Some(rest) => (true, rest),
            None => (false, rest),
        };
        if poison {
            let fixed: bool = sqlx::query_scalar("SELECT fixed FROM poison_fixed")
                .fetch_one(&mut *transaction)
                .await?;
            if !fixed {
                return Err(HandlerError::Retry(anyhow::anyhow!(
                    "the handler cannot take this message yet"
                )));
            }
        }
        let (key, seq) = rest
            .rsplit_once(':')
            .ok_or_else(|| HandlerError::Poison(anyhow::anyhow!("no sequence")))?;
        let seq: i32 = seq
            .parse()
            .map_err(|error: std::num::ParseIntError| HandlerError::Poison(error.into()))?;
        if needs_previous {
            let previous: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM effects WHERE consumer = $1 AND partition_key = $2 AND seq = $3",
            )
            .bind(&self.consumer)
            .bind(key)
            .bind(seq - 1)
            .fetch_one(&mut *transaction)
            .await?;
            if previous == 0 {
                return Err(HandlerError::Early(anyhow::anyhow!(
                    "{key}:{} has not landed yet",
                    seq - 1
                )));
            }
        }
        sqlx::query(
            "INSERT INTO effects (consumer, partition_key, seq, message_id) VALUES ($1, $2, $3, $4)",
        )
        .bind(&self.consumer)
        .bind(key)
        .bind(seq)
        .bind(&message.message_id)
        .execute(&mut *transaction)
        .await?;
        Ok(Handled::Done)
    }
}

/// A background task with its stop switch; aborted if dropped unstopped.
#[derive(Debug)]
pub(crate) struct Running {
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Running {
    pub(crate) fn spawn<F, Fut>(run: F) -> Self
    where
        F: FnOnce(StopSignal) -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let (stop, signal) = StopSignal::pair();
        Self {
            stop,
            task: Some(tokio::spawn(run(signal))),
        }
    }

    /// Kills the task where it stands, as a crash would.
    pub(crate) fn abort(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    /// Asks the task to stop and waits for it.
    pub(crate) async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let outcome = tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("task stops within 10 s");
            outcome
                .expect("task did not panic")
                .expect("task ended cleanly");
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Waits until `sql` counts `expected`, or fails the test with what it saw.
pub(crate) async fn wait_for_count(harness: &Harness, sql: &'static str, expected: i64) {
    let reached = qapmap_testkit::eventually(FLOW_TIMEOUT, || async {
        harness.count(sql).await == expected
    })
    .await;
    assert!(
        reached,
        "{sql} stayed at {} instead of {expected}",
        harness.count(sql).await
    );
}

/// Answers every command with a reply naming it, after one effect row; a
/// command whose payload is `refuse` is refused ([`Handled::Refused`]), so
/// its effect row must not survive.
#[derive(Debug)]
pub(crate) struct CommandHandler {
    pub(crate) reply_subject: String,
}

impl MessageHandler for CommandHandler {
    async fn handle(
        &self,
        message: &ReceivedMessage,
        transaction: &mut PgConnection,
    ) -> Result<Handled, HandlerError> {
        sqlx::query(
            "INSERT INTO effects (consumer, partition_key, seq, message_id)
             VALUES ('commands', 'command', 1, $1)",
        )
        .bind(&message.message_id)
        .execute(&mut *transaction)
        .await?;
        let refused = message.payload.as_ref() == b"refuse";
        let reply = OutboxMessage {
            message_id: Uuid::now_v7(),
            company_id: None,
            subject: self.reply_subject.clone(),
            payload: format!(
                "{}:{}",
                if refused { "refused" } else { "done" },
                message.message_id
            )
            .into_bytes(),
            headers: Default::default(),
            partition_key: "saga-1".to_owned(),
        };
        Ok(if refused {
            Handled::Refused(reply)
        } else {
            Handled::Reply(reply)
        })
    }
}
