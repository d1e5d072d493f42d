//! Durable pull consumers whose handlers take effect once per message.
//!
//! Messages are handled in batches, in stream order: a pull returns what is
//! ready (waiting up to [`FETCH_EXPIRY`] for the first), and every group of
//! messages that is ready at once (up to [`FETCH_BATCH_SIZE`], or the
//! consumer's [`ConsumerConfig::max_batch`]) shares one transaction, so a
//! busy consumer pays one commit per batch, not one per message. A consumer
//! may linger ([`ConsumerConfig::with_linger`]) to gather more per batch.
//! Messages its handler ignores ([`MessageHandler::ignores`]) are
//! acknowledged without a transaction or an inbox row. For every other
//! message of a batch:
//! 1. a savepoint is set and the message id is recorded in the inbox; a
//!    message seen before changes nothing (a command's stored reply is put
//!    back in the outbox); a new one whose company the handler names
//!    ([`MessageHandler::confinement`]) is confined to it in the same round
//!    trip;
//! 2. the handler runs with the transaction, writing its effect and any
//!    follow-up messages to the outbox (never publishing directly); a reply
//!    it returns is enqueued and stored with the inbox row;
//! 3. the savepoint is released, or on a handler error rolled back, so a
//!    failed message leaves nothing behind and the batch goes on.
//!
//! The transaction then commits, and only then are the messages
//! acknowledged (a failed commit retries the whole batch). A stop ends the
//! waits for messages, never a batch in hand: that batch commits and is
//! acknowledged first.
//!
//! A handler with a set-based form ([`MessageHandler::handle_batch`], the
//! orchestrator's replies) takes a batch of two or more messages, all new
//! to the inbox, in one step: one statement records them all in the inbox,
//! then the handler applies them together. If a message was seen before,
//! or the handler fails, that step is rolled back and the batch goes
//! through the steps above, so the outcome is the same, only cheaper in
//! round trips when it works.
//!
//! A handler asks for a retry ([`HandlerError::Retry`], e.g. a transient
//! database error): the message is nak'ed with the backoff delay of its
//! attempt, and the later messages of its partition key, in its batch or
//! arriving after it, are held in memory, unhandled and unacknowledged,
//! until it comes back; they then join its batch behind it (`key_holds`).
//! Held, they spend no deliveries. Not so when it only came too early
//! ([`HandlerError::Early`]): one of them may be what it waits for. After
//! [`ConsumerConfig::max_deliveries`] attempts, or at once when the handler
//! says [`HandlerError::Poison`], it is stored as a dead letter and
//! acknowledged, so the messages behind it keep flowing.
//!
//! JetStream's own `max_deliver` is set [`SPARE_DELIVERIES`] above ours: a
//! delivery past our limit only arrives when an earlier one ended without a
//! verdict (the worker died, the ack wait expired, or it waited behind an
//! earlier message of its key), and it is dead-lettered without running the
//! handler again.
//!
//! Per-key order: one worker at a time handles a consumer's messages, in
//! stream order, so effects follow the relay's per-key order. Every replica
//! may run the consumer: a worker is active only while it holds a Postgres
//! session advisory lock on the consumer name; the others stand by and take
//! over when its session ends. The active worker's batches run on that same
//! session, so a batch can only commit while the lock is held, and the
//! session needs no separate liveness probe while messages flow. Order can
//! bend around a dead-lettered message, around a takeover (the messages
//! the old worker had fetched come back only after the ack wait; the ones
//! it held it gives back timed behind their failed message), and when more
//! than [`MAX_HELD_MESSAGES`] wait behind messages to retry (the rest are
//! nak'd); the inbox keeps effects exactly-once in every case, and a
//! handler that needs order checks it ([`HandlerError::Early`]).
//!
//! A handler's transaction-local settings (the company confinement, the
//! audit's event ids) are reset before the next message of the batch, so a
//! message never runs in the previous one's confinement.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use async_nats::connection::State as ConnectionState;
use async_nats::jetstream::{self, AckKind, consumer::PullConsumer, consumer::pull};
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use sqlx::{Connection, PgConnection, PgPool, Row};
use tracing::Instrument;
use uuid::Uuid;

use crate::dead_letter;
use crate::inbox::{self, NATS_MESSAGE_ID_HEADER, ORIGINAL_MESSAGE_ID_HEADER};
use crate::key_holds::{KeyHolds, Keyed};
use crate::local_relay;
use crate::messaging::{StreamKind, Subjects};
use crate::metrics::MessagingMetrics;
use crate::outbox::{OutboxMessage, PARTITION_KEY_HEADER};
use crate::server::{Application, StopSignal};

/// Messages asked for per pull, and the most handled in one transaction
/// (unless [`ConsumerConfig::with_max_batch`] says fewer).
pub const FETCH_BATCH_SIZE: usize = 64;
/// How long a pull waits for a first message before asking again (it
/// returns as soon as one is there).
pub const FETCH_EXPIRY: Duration = Duration::from_secs(1);
/// Default time JetStream waits for an ack before redelivering.
pub const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(30);
/// Default handler attempts before a message becomes a dead letter.
pub const DEFAULT_MAX_DELIVERIES: u32 = 5;
/// Deliveries JetStream makes beyond ours, so a message whose last attempt
/// ended without a verdict still reaches the dead letters.
pub const SPARE_DELIVERIES: u32 = 2;
/// Default delays before the 2nd, 3rd, ... attempt; the last repeats.
pub const DEFAULT_BACKOFF: [Duration; 4] = [
    Duration::from_secs(1),
    Duration::from_secs(5),
    Duration::from_secs(30),
    Duration::from_secs(120),
];
/// How often a standby worker asks whether the active one is gone.
pub const STANDBY_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// How long the active worker waits for its lock session to answer.
const LOCK_PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause after a failed pull or set-up, doubling up to the maximum.
const RECONNECT_BACKOFF_FIRST: Duration = Duration::from_millis(100);
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// The most messages a worker holds behind messages to retry (see
/// `key_holds`); under JetStream's default `max_ack_pending` (1,000), which
/// counts them, so the other keys keep flowing.
const MAX_HELD_MESSAGES: usize = 500;

/// A message as a handler sees it.
#[derive(Debug, Clone)]
pub struct ReceivedMessage {
    pub subject: String,
    /// The id the inbox keys on: `Qapmap-Original-Msg-Id` for a replayed dead
    /// letter, else `Nats-Msg-Id` (the outbox message id), else the stream
    /// and sequence for a message published without one.
    pub message_id: String,
    pub headers: BTreeMap<String, String>,
    pub payload: Bytes,
    /// 1 on the first delivery.
    pub delivery_count: u64,
    /// Its place in the stream: the order of its key's messages.
    stream_sequence: u64,
    /// The company the consumer confines the message's work to
    /// ([`MessageHandler::confinement`]) in the round trip that records it
    /// in the inbox; see [`ReceivedMessage::confine`].
    confinement: Option<Uuid>,
}

impl ReceivedMessage {
    /// Confines the handler's transaction to `company_id`
    /// (`tenancy::confine`), unless the consumer already did so for this
    /// message, which costs no round trip of its own (see
    /// [`MessageHandler::confinement`]).
    pub async fn confine(
        &self,
        transaction: &mut PgConnection,
        company_id: Uuid,
    ) -> sqlx::Result<()> {
        if self.confinement == Some(company_id) {
            return Ok(());
        }
        crate::tenancy::confine(transaction, company_id).await
    }
}

/// What a handler did with a message.
#[derive(Debug)]
pub enum Handled {
    /// The effect is written; nothing to answer.
    Done,
    /// The effect is written; send this reply (a command's answer). It is
    /// enqueued in the same transaction and sent again if the command is
    /// delivered again.
    Reply(OutboxMessage),
    /// The command is refused: nothing the handler wrote is kept (the
    /// consumer rolls the message back to its savepoint and records it
    /// again), and this reply is sent as for [`Handled::Reply`]. A handler
    /// needs no savepoint of its own around an operation that may refuse.
    Refused(OutboxMessage),
}

/// Why a handler did not finish.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Try again later (a transient failure): nak with backoff, dead letter
    /// after the last attempt.
    #[error("retry later: {0:#}")]
    Retry(anyhow::Error),
    /// The message came before one it depends on (a grant before its
    /// plan): retried later with backoff, like [`HandlerError::Retry`], but
    /// the later messages of its key go on meanwhile, since one of them may
    /// be what it waits for. Holding them back would bring both back
    /// together after every delay, the dependency behind its dependant,
    /// until the dependant ran out of attempts. Only for handlers whose
    /// effects do not depend on the order in which such messages land.
    #[error("arrived early: {0:#}")]
    Early(anyhow::Error),
    /// The message can never succeed: dead letter now.
    #[error("poison: {0:#}")]
    Poison(anyhow::Error),
}

impl From<sqlx::Error> for HandlerError {
    fn from(error: sqlx::Error) -> Self {
        Self::Retry(error.into())
    }
}

/// Handles one message inside the consumer's transaction. Write the effect
/// and any follow-up messages (with [`outbox::enqueue`]) through
/// `transaction`; do not commit it.
pub trait MessageHandler: Send + Sync + 'static {
    fn handle(
        &self,
        message: &ReceivedMessage,
        transaction: &mut PgConnection,
    ) -> impl Future<Output = Result<Handled, HandlerError>> + Send;

    /// True for a message that has no effect here, told from the message
    /// alone (its subject, headers or payload; no database). It is
    /// acknowledged without a transaction or an inbox row, as a server-side
    /// filter would drop it (NATS 2.9 filters a consumer on one subject
    /// only), so a consumer pays no commit for the events it does not use. Ignoring has no effect to repeat, so
    /// a redelivery is ignored again.
    fn ignores(&self, _message: &ReceivedMessage) -> bool {
        false
    }

    /// The company whose rows the message's work is confined to, told from
    /// the message alone (no database), for a handler that confines its
    /// transaction (`tenancy`). The consumer then confines it in the same
    /// round trip that records the message in the inbox, after that
    /// insert (the inbox has no row security) and only when the message is
    /// new, and the handler's [`ReceivedMessage::confine`] costs nothing. A
    /// handler still calls `confine` with the company it parsed: if the two
    /// differ, that call confines to the parsed one.
    fn confinement(&self, _message: &ReceivedMessage) -> Option<Uuid> {
        None
    }

    /// True for a handler with a set-based form ([`MessageHandler::handle_batch`]).
    fn handles_batches(&self) -> bool {
        false
    }

    /// Applies a whole batch (two or more messages, each new to the inbox,
    /// in stream order) in a few statements instead of a few per message:
    /// with many messages in flight a consumer's cost is its round trips.
    /// Only for effects [`Handled::Done`] describes (no replies). Any error
    /// undoes everything the call wrote, and the consumer then handles the
    /// messages one by one with [`MessageHandler::handle`], which decides
    /// each message's verdict; so an error here needs no precision. The
    /// batch runs with the settings reset as for a first message; a handler
    /// that confines itself to a company must not do so here.
    fn handle_batch(
        &self,
        _messages: &[BatchMessage<'_>],
        _transaction: &mut PgConnection,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        async { Err(HandlerError::Retry(anyhow::anyhow!("no batch form"))) }
    }
}

/// A message of a batch handled as a whole, with the span (under the
/// sender's trace) that its part of the work belongs to.
#[derive(Debug)]
pub struct BatchMessage<'a> {
    pub message: &'a ReceivedMessage,
    pub span: tracing::Span,
}

/// A durable pull consumer's settings.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// The durable name and the inbox's consumer key: letters, digits, `-`, `_`.
    pub name: String,
    pub stream: StreamKind,
    /// E.g. `<ns>.cmd.equity.>`.
    pub filter_subject: String,
    pub ack_wait: Duration,
    /// Handler attempts before a dead letter.
    pub max_deliveries: u32,
    /// Delay before attempt n+1 is `backoff[n-1]` (the last entry repeats).
    pub backoff: Vec<Duration>,
    /// The most messages handled in one transaction.
    pub max_batch: usize,
    /// How long a batch that is not full waits for more messages after its
    /// first arrived (None: not at all, the batch is what is ready).
    pub linger: Option<Duration>,
}

impl ConsumerConfig {
    pub fn new(
        name: impl Into<String>,
        stream: StreamKind,
        filter_subject: impl Into<String>,
    ) -> Self {
        let name = name.into();
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "consumer name {name:?} must be letters, digits, '-' or '_'"
        );
        Self {
            name,
            stream,
            filter_subject: filter_subject.into(),
            ack_wait: DEFAULT_ACK_WAIT,
            max_deliveries: DEFAULT_MAX_DELIVERIES,
            backoff: DEFAULT_BACKOFF.to_vec(),
            max_batch: FETCH_BATCH_SIZE,
            linger: None,
        }
    }

    /// A batch that is not full waits `linger` after its first messages
    /// for more (up to the batch limit) and handles them in one
    /// transaction: one commit for many messages when they trickle in, at
    /// the cost of that much delay. For consumers nobody waits on (a projection), never for a
    /// saga's steps.
    pub fn with_linger(mut self, linger: Duration) -> Self {
        self.linger = Some(linger);
        self
    }

    /// At most `max_batch` messages (1 to [`FETCH_BATCH_SIZE`]) share a
    /// transaction: for a handler whose effects should not wait for the
    /// later messages' to commit.
    pub fn with_max_batch(mut self, max_batch: usize) -> Self {
        assert!(
            (1..=FETCH_BATCH_SIZE).contains(&max_batch),
            "a batch holds 1 to {FETCH_BATCH_SIZE} messages"
        );
        self.max_batch = max_batch;
        self
    }

    pub fn with_max_deliveries(mut self, max_deliveries: u32) -> Self {
        assert!(max_deliveries >= 1, "at least one delivery");
        self.max_deliveries = max_deliveries;
        self
    }

    pub fn with_backoff(mut self, backoff: Vec<Duration>) -> Self {
        assert!(!backoff.is_empty(), "a backoff needs at least one delay");
        self.backoff = backoff;
        self
    }

    pub fn with_ack_wait(mut self, ack_wait: Duration) -> Self {
        self.ack_wait = ack_wait;
        self
    }

    /// The delay before the attempt after `delivery_count`.
    fn retry_delay(&self, delivery_count: u64) -> Duration {
        let index = usize::try_from(delivery_count.saturating_sub(1)).unwrap_or(usize::MAX);
        self.backoff
            .get(index)
            .or(self.backoff.last())
            .copied()
            .unwrap_or(DEFAULT_BACKOFF[0])
    }

    /// The JetStream consumer configuration. Redeliveries after an ack wait
    /// expiry wait at least the ack wait, so a slow handler is not raced.
    fn pull_config(&self) -> pull::Config {
        let server_deliveries = self.max_deliveries + SPARE_DELIVERIES;
        let backoff = (1..u64::from(server_deliveries))
            .map(|attempt| self.retry_delay(attempt).max(self.ack_wait))
            .collect();
        pull::Config {
            durable_name: Some(self.name.clone()),
            filter_subject: self.filter_subject.clone(),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: self.ack_wait,
            max_deliver: i64::from(server_deliveries),
            backoff,
            ..Default::default()
        }
    }
}

/// The verdict on one message.
#[derive(Debug)]
enum Verdict {
    Applied,
    Duplicate,
    /// The handler has no use for it ([`MessageHandler::ignores`]).
    Ignored,
    Retry {
        delay: Duration,
        error: String,
        /// Its key's later messages wait for it (not for
        /// [`HandlerError::Early`]).
        holds_key: bool,
    },
    /// Not handled: an earlier message of its key in the batch will retry.
    /// Held until it comes back (`key_holds`), nak'd when the holds are full.
    Deferred {
        delay: Duration,
    },
    DeadLetter {
        error: String,
    },
}

/// A message received and not yet answered.
#[derive(Debug)]
struct Pending {
    message: jetstream::Message,
    received: ReceivedMessage,
}

impl Keyed for Pending {
    fn partition_key(&self) -> Option<&str> {
        self.received
            .headers
            .get(PARTITION_KEY_HEADER)
            .map(String::as_str)
    }

    fn message_id(&self) -> &str {
        &self.received.message_id
    }

    fn sequence(&self) -> u64 {
        self.received.stream_sequence
    }
}

/// A consumer of one durable, with its handler.
#[derive(Debug)]
pub struct Consumer<H> {
    pool: PgPool,
    jetstream: jetstream::Context,
    subjects: Subjects,
    config: ConsumerConfig,
    handler: Arc<H>,
    metrics: Arc<MessagingMetrics>,
}

impl<H: MessageHandler> Consumer<H> {
    pub fn new(
        pool: PgPool,
        jetstream: jetstream::Context,
        subjects: Subjects,
        config: ConsumerConfig,
        handler: H,
    ) -> Self {
        Self {
            pool,
            jetstream,
            subjects,
            config,
            handler: Arc::new(handler),
            metrics: Arc::new(MessagingMetrics::new()),
        }
    }

    pub fn with_metrics(mut self, metrics: Arc<MessagingMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Creates the durable consumer, or updates its configuration.
    pub async fn ensure(&self) -> anyhow::Result<PullConsumer> {
        let stream_name = self.subjects.stream_name(self.config.stream);
        let stream = self
            .jetstream
            .get_stream(&stream_name)
            .await
            .with_context(|| format!("looking up stream {stream_name}"))?;
        let config = self.config.pull_config();
        if stream.consumer_info(&self.config.name).await.is_ok() {
            stream
                .update_consumer(config)
                .await
                .with_context(|| format!("updating consumer {}", self.config.name))
        } else {
            stream
                .get_or_create_consumer(&self.config.name, config)
                .await
                .with_context(|| format!("creating consumer {}", self.config.name))
        }
    }

    /// Consumes until `stop`. NATS and database outages are waited out.
    pub async fn run(self, mut stop: StopSignal) -> anyhow::Result<()> {
        let mut failures: u32 = 0;
        let consumer = loop {
            match self.ensure().await {
                Ok(consumer) => break consumer,
                Err(error) => {
                    tracing::warn!(consumer = %self.config.name, error.message = %format!("{error:#}"), "consumer set-up failed; retrying");
                    failures += 1;
                    tokio::select! {
                        _ = stop.stopped() => return Ok(()),
                        _ = tokio::time::sleep(reconnect_backoff(failures)) => {}
                    }
                }
            }
        };
        while !stop.is_stopped() {
            let Some(session) = self.become_active(&mut stop).await else {
                break;
            };
            tracing::info!(consumer = %self.config.name, "consumer worker active");
            self.consume_while_active(&consumer, session, &mut stop)
                .await;
        }
        Ok(())
    }

    /// Waits until this worker holds the consumer's lock (`None` on stop).
    /// The lock lives as long as the returned session.
    async fn become_active(&self, stop: &mut StopSignal) -> Option<PgConnection> {
        let lock_name = format!("qapmap-consumer:{}", self.config.name);
        let mut session: Option<PgConnection> = None;
        loop {
            let pause = match self.try_lock(&mut session, &lock_name).await {
                Ok(true) => return session,
                Ok(false) => STANDBY_POLL_INTERVAL,
                Err(error) => {
                    tracing::warn!(consumer = %self.config.name, error.message = %error, "consumer lock unavailable");
                    session = None;
                    STANDBY_POLL_INTERVAL
                }
            };
            tokio::select! {
                _ = stop.stopped() => return None,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// One attempt at the lock, on a session of its own (detached from the
    /// pool, so the lock is never handed to another task with a pooled
    /// connection).
    async fn try_lock(
        &self,
        session: &mut Option<PgConnection>,
        lock_name: &str,
    ) -> sqlx::Result<bool> {
        if session.is_none() {
            *session = Some(self.pool.acquire().await?.detach());
        }
        let connection = session.as_mut().expect("session was just opened");
        sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
            .bind(lock_name)
            .fetch_one(connection)
            .await
    }

    /// Pulls and handles batches while the lock session answers; then
    /// gives back the messages still held behind one to retry.
    async fn consume_while_active(
        &self,
        consumer: &PullConsumer,
        mut session: PgConnection,
        stop: &mut StopSignal,
    ) {
        let mut holds = KeyHolds::new(MAX_HELD_MESSAGES);
        self.consume_with_holds(consumer, &mut session, &mut holds, stop)
            .await;
        for (pending, delay) in holds.give_back(Instant::now()) {
            self.tell(&pending, AckKind::Nak(Some(delay))).await;
        }
    }

    async fn consume_with_holds(
        &self,
        consumer: &PullConsumer,
        session: &mut PgConnection,
        holds: &mut KeyHolds<Pending>,
        stop: &mut StopSignal,
    ) {
        let mut failures: u32 = 0;
        // A session idle this long is probed before the next pull; a busy one
        // proves itself with every batch.
        let mut last_used = Instant::now();
        let mut suspect = false;
        // Held messages are kept from redelivery by progress acks.
        let progress_every = self.config.ack_wait / 3;
        let mut last_progress = Instant::now();
        let client = self.jetstream.client();
        while !stop.is_stopped() {
            if suspect || last_used.elapsed() >= FETCH_EXPIRY {
                if !lock_still_held(session).await {
                    tracing::warn!(consumer = %self.config.name, "consumer lock session lost; standing by");
                    return;
                }
                suspect = false;
                last_used = Instant::now();
            }
            if holds.any_due(Instant::now())
                && !self.process_batch(session, Vec::new(), holds).await
            {
                suspect = true;
                continue;
            }
            if holds.held() > 0 && last_progress.elapsed() >= progress_every {
                self.keep_held_unexpired(holds).await;
                last_progress = Instant::now();
            }
            if !connected_within(&client, FETCH_EXPIRY, stop).await {
                continue;
            }
            // A stop ends the wait for messages, never a batch in hand: a
            // batch dropped mid-way may have committed without its acks.
            match self.pull_and_handle(consumer, session, holds, stop).await {
                Ok(pull) => {
                    failures = 0;
                    if pull.batches > 0 {
                        last_used = Instant::now();
                    }
                    suspect = pull.session_failed;
                }
                Err(error) => {
                    tracing::warn!(consumer = %self.config.name, error.message = %format!("{error:#}"), "pull failed; retrying");
                    failures += 1;
                    tokio::select! {
                        _ = stop.stopped() => break,
                        _ = tokio::time::sleep(reconnect_backoff(failures)) => {}
                    }
                }
            }
        }
    }

    /// Resets the ack wait of every held message.
    async fn keep_held_unexpired(&self, holds: &KeyHolds<Pending>) {
        for pending in holds.held_messages() {
            // A held message redelivered anyway replaces its held copy.
            self.tell(pending, AckKind::Progress).await;
        }
    }

    /// Sends JetStream `ack` for a message. A failure is only logged: the
    /// message comes back after the ack wait, and the inbox (or the holds,
    /// for a held one) makes that harmless.
    async fn tell(&self, pending: &Pending, ack: AckKind) {
        if let Err(error) = pending.message.ack_with(ack).await {
            tracing::warn!(consumer = %self.config.name, message_id = %pending.received.message_id, ack = ?ack, error.message = %error, "telling JetStream failed");
        }
    }

    /// Pulls once and handles what arrives, batch by batch: each batch is
    /// what is ready at once, so a lone message is not held back (unless
    /// the consumer lingers).
    async fn pull_and_handle(
        &self,
        consumer: &PullConsumer,
        session: &mut PgConnection,
        holds: &mut KeyHolds<Pending>,
        stop: &mut StopSignal,
    ) -> anyhow::Result<Pull> {
        if let Some(linger) = self.config.linger {
            return self
                .pull_lingering_and_handle(consumer, session, linger, holds, stop)
                .await;
        }
        let asked = consumer
            .fetch()
            .max_messages(FETCH_BATCH_SIZE)
            .expires(FETCH_EXPIRY)
            .messages();
        let Some(batch) = until_stopped(stop, asked).await else {
            return Ok(Pull::default());
        };
        let batch = batch.context("pulling messages")?;
        let mut ready = BoundedPull::new(batch.ready_chunks(self.config.max_batch), consumer);
        let mut pull = Pull::default();
        loop {
            let Some(Some(chunk)) = until_stopped(stop, ready.next()).await else {
                break;
            };
            let mut messages = Vec::with_capacity(chunk.len());
            let mut failure = None;
            for message in chunk {
                match message {
                    Ok(message) => messages.push(message),
                    Err(error) => failure = Some(error),
                }
            }
            if !messages.is_empty() {
                pull.batches += 1;
                if !self.process_batch(session, messages, holds).await {
                    pull.session_failed = true;
                }
            }
            if let Some(error) = failure {
                return Err(anyhow::anyhow!(error)).context("receiving a message");
            }
        }
        self.note_if_cut(&ready);
        Ok(pull)
    }

    /// Counts and logs a pull whose end the server never sent.
    fn note_if_cut<S: futures::Stream + Unpin>(&self, pull: &BoundedPull<'_, S>) {
        if pull.cut() {
            self.metrics.record_pull_cut();
            tracing::warn!(consumer = %self.config.name, "the server never ended a pull; ended it at its deadline");
        }
    }

    /// Pulls what is ready (waiting up to [`FETCH_EXPIRY`] for a first
    /// message); unless that filled a batch, waits `linger` and pulls again;
    /// handles it all as one batch. The first pull is read to its end before
    /// the second is asked for, so the messages stay in stream order.
    ///
    /// The second pull takes only what is ready (a no-wait pull without an
    /// expiry: it ends at once, empty or not; 0.4 ms when empty in a probe),
    /// so a batch waits `linger` and no more. Not a pull that waits the
    /// whole `linger` collecting: against nats-server 2.9 such a pull now
    /// and then missed the server's end of request and ran to the client's
    /// own timeout, 5 s later (1 in 60 in a probe; 5-second stalls of the
    /// projection in the bench). If the second pull fails, what the first
    /// brought is still handled (not left to the ack wait), then the error
    /// is returned.
    async fn pull_lingering_and_handle(
        &self,
        consumer: &PullConsumer,
        session: &mut PgConnection,
        linger: Duration,
        holds: &mut KeyHolds<Pending>,
        stop: &mut StopSignal,
    ) -> anyhow::Result<Pull> {
        let max = self.config.max_batch;
        let asked = consumer
            .fetch()
            .max_messages(max)
            .expires(FETCH_EXPIRY)
            .messages();
        let Some(ready) = until_stopped(stop, asked).await else {
            return Ok(Pull::default());
        };
        let ready = ready.context("pulling messages")?;
        let mut ready = BoundedPull::new(ready, consumer);
        let (mut messages, mut failure) = collect_messages(&mut ready, stop).await;
        self.note_if_cut(&ready);
        let mut later_failure = None;
        let room_left = !messages.is_empty() && messages.len() < max && failure.is_none();
        // A stop skips the linger and the second pull, not what is in hand.
        if room_left
            && until_stopped(stop, tokio::time::sleep(linger))
                .await
                .is_some()
        {
            // No expiry: a no-wait pull without one returns what is ready
            // and ends at once (404) when nothing is; with one, nats-server
            // 2.9 turns an empty pull into a waiting one.
            let later = consumer
                .fetch()
                .max_messages(max - messages.len())
                .messages()
                .await;
            match later {
                Ok(later) => {
                    let (more, more_failure) =
                        collect_messages(&mut BoundedPull::unbounded(later), stop).await;
                    messages.extend(more);
                    failure = more_failure;
                }
                Err(error) => later_failure = Some(error),
            }
        }
        let mut pull = Pull::default();
        if !messages.is_empty() {
            pull.batches = 1;
            pull.session_failed = !self.process_batch(session, messages, holds).await;
        }
        if let Some(error) = later_failure {
            return Err(anyhow::anyhow!(error)).context("pulling messages after lingering");
        }
        match failure {
            Some(error) => Err(anyhow::anyhow!(error)).context("receiving a message"),
            None => Ok(pull),
        }
    }

    /// Handles what a pull brought, in transactions on `session`, and tells
    /// JetStream. `holds` takes the messages that must wait behind an
    /// earlier message of their key and gives back those whose wait is
    /// over ([`KeyHolds::admit`]). False when a transaction could not
    /// begin or commit (the session may be gone).
    async fn process_batch(
        &self,
        session: &mut PgConnection,
        messages: Vec<jetstream::Message>,
        holds: &mut KeyHolds<Pending>,
    ) -> bool {
        let mut incoming = Vec::with_capacity(messages.len());
        for message in messages {
            match decode(&message) {
                Ok(received) => incoming.push(Pending { message, received }),
                Err(error) => {
                    tracing::error!(error.message = %error, "message without delivery info; leaving it to redelivery");
                }
            }
        }
        // Released messages can make a batch longer than `max_batch`: the
        // rest goes through the holds again after the first part, so it
        // waits if a message of its key failed again there.
        let mut committed = true;
        loop {
            let admitted = holds.admit(incoming, Instant::now());
            self.metrics.record_held(admitted.held as u64);
            for (pending, delay) in admitted.overflow {
                tracing::warn!(consumer = %self.config.name, message_id = %pending.received.message_id, "too many messages held behind messages to retry; this one is nak'd");
                self.tell(&pending, AckKind::Nak(Some(delay))).await;
            }
            let mut batch = admitted.batch;
            let rest = batch.split_off(batch.len().min(self.config.max_batch));
            if !batch.is_empty() {
                committed &= self.answer_batch(session, batch, holds).await;
            }
            if rest.is_empty() {
                return committed;
            }
            incoming = rest;
        }
    }

    /// Decides on `batch` (in stream order, at most `max_batch`) in one
    /// transaction and tells JetStream; a message to retry holds its key
    /// in `holds`. False when the transaction could not begin or commit.
    async fn answer_batch(
        &self,
        session: &mut PgConnection,
        mut batch: Vec<Pending>,
        holds: &mut KeyHolds<Pending>,
    ) -> bool {
        let mut ignored = Vec::with_capacity(batch.len());
        for Pending { received, .. } in &mut batch {
            // Asked once each; a message ignored needs no company.
            let ignores = self.handler.ignores(received);
            received.confinement = (!ignores)
                .then(|| self.handler.confinement(received))
                .flatten();
            ignored.push(ignores);
        }
        let (verdicts, committed) = self
            .verdicts_skipping_ignored(session, &batch, &ignored)
            .await;
        // Every verdict (and its count) first, then the acks.
        let now = Instant::now();
        let mut acks = Vec::with_capacity(batch.len());
        for (pending, verdict) in batch.into_iter().zip(verdicts) {
            let received = &pending.received;
            let ack = match verdict {
                Verdict::Applied => {
                    self.metrics.record_handled();
                    AckKind::Ack
                }
                Verdict::Duplicate => {
                    self.metrics.record_duplicate();
                    AckKind::Ack
                }
                Verdict::Ignored => {
                    self.metrics.record_ignored();
                    AckKind::Ack
                }
                Verdict::Retry {
                    delay,
                    error,
                    holds_key,
                } => {
                    tracing::warn!(consumer = %self.config.name, message_id = %received.message_id, delivery = received.delivery_count, error.message = %error, "handler will retry");
                    if holds_key {
                        match holds.retry(pending, delay, self.config.ack_wait, now) {
                            Some(pending) => acks.push((pending, AckKind::Nak(Some(delay)))),
                            None => self.metrics.record_held(1),
                        }
                        continue;
                    }
                    AckKind::Nak(Some(delay))
                }
                Verdict::Deferred { delay } => {
                    tracing::debug!(consumer = %self.config.name, message_id = %received.message_id, "waits for an earlier message of its key");
                    match holds.defer(pending) {
                        Some(pending) => acks.push((pending, AckKind::Nak(Some(delay)))),
                        None => self.metrics.record_held(1),
                    }
                    continue;
                }
                Verdict::DeadLetter { error } => self.dead_letter(received, &error).await,
            };
            acks.push((pending, ack));
        }
        for (pending, ack) in acks {
            self.tell(&pending, ack).await;
        }
        committed
    }

    /// The verdicts on a batch, in its order: [`Verdict::Ignored`] for what
    /// the handler ignores (`ignored`, one flag a message), the others decided in one transaction (none
    /// when every message is ignored). Also whether that transaction, when
    /// there was one, began and committed.
    async fn verdicts_skipping_ignored(
        &self,
        session: &mut PgConnection,
        batch: &[Pending],
        ignored: &[bool],
    ) -> (Vec<Verdict>, bool) {
        let handled: Vec<&ReceivedMessage> = batch
            .iter()
            .zip(ignored)
            .filter(|(_, ignored)| !**ignored)
            .map(|(pending, _)| &pending.received)
            .collect();
        let (mut decided, committed) = if handled.is_empty() {
            (Vec::new(), true)
        } else {
            self.verdicts(session, &handled).await
        };
        let mut decided = decided.drain(..);
        let verdicts = ignored
            .iter()
            .map(|ignored| {
                if *ignored {
                    Verdict::Ignored
                } else {
                    decided.next().expect("one verdict per message handled")
                }
            })
            .collect();
        (verdicts, committed)
    }

    /// The verdicts on a batch, in its order, and whether its transaction
    /// began and committed.
    async fn verdicts(
        &self,
        session: &mut PgConnection,
        batch: &[&ReceivedMessage],
    ) -> (Vec<Verdict>, bool) {
        let max = u64::from(self.config.max_deliveries);
        // With this database's relay in this process, the batch wakes it
        // after its commit instead of NOTIFYing (see `local_relay`).
        let local_relays = local_relay::running(&self.pool);
        let waking_locally = !local_relays.is_empty();
        let begin = if waking_locally {
            BATCH_BEGIN_WAKING_LOCALLY
        } else {
            BATCH_BEGIN
        };
        // BEGIN and the first message's savepoint share one round trip.
        let began = tokio::time::timeout(LOCK_PROBE_TIMEOUT, session.begin_with(begin)).await;
        let mut transaction = match began {
            Ok(Ok(transaction)) => transaction,
            Ok(Err(error)) => {
                let error = HandlerError::Retry(error.into());
                return (self.all_failed(batch, &error), false);
            }
            Err(_elapsed) => {
                let error =
                    HandlerError::Retry(anyhow::anyhow!("the consumer session did not answer"));
                return (self.all_failed(batch, &error), false);
            }
        };
        let mut verdicts = Vec::with_capacity(batch.len());
        // Keys with a message to retry: their later messages wait for it.
        let mut held_back: HashMap<&str, Duration> = HashMap::new();
        let mut doomed = false;
        let mut savepoint = Savepoint::Fresh;
        let mut one_by_one = batch;
        let whole = self.whole_batch(&mut transaction, batch).await;
        match whole {
            WholeBatch::Applied => {
                verdicts.resize_with(batch.len(), || Verdict::Applied);
                savepoint = Savepoint::Held;
                one_by_one = &[];
            }
            WholeBatch::OneByOne => {}
            WholeBatch::Broken => {
                one_by_one = &[];
                doomed = true;
            }
        }
        for received in one_by_one {
            if received.delivery_count > max {
                verdicts.push(Verdict::DeadLetter {
                    error: format!(
                        "delivery {} is past the limit of {max}: an earlier attempt ended without a verdict (worker stopped, ack wait expired, or it waited behind an earlier message of its key)",
                        received.delivery_count
                    ),
                });
                continue;
            }
            let key = received
                .headers
                .get(PARTITION_KEY_HEADER)
                .map(String::as_str);
            if let Some(delay) = key.and_then(|key| held_back.get(key)) {
                verdicts.push(Verdict::Deferred { delay: *delay });
                continue;
            }
            let span = crate::trace_context::message_span(
                &self.config.name,
                &received.subject,
                &received.message_id,
                &received.headers,
            );
            let (outcome, intact) = self
                .handle_in_savepoint(&mut transaction, received, &mut savepoint)
                .instrument(span)
                .await;
            let verdict = self.verdict(received, outcome);
            if let (
                Verdict::Retry {
                    delay,
                    holds_key: true,
                    ..
                },
                Some(key),
            ) = (&verdict, key)
            {
                held_back.insert(key, *delay);
            }
            verdicts.push(verdict);
            if !intact {
                doomed = true;
                break;
            }
        }
        // The last message's savepoint is released on its own before COMMIT:
        // a COMMIT of an aborted transaction (a handler that swallowed a
        // database error) rolls back without an error, a RELEASE fails. The
        // same round trip asks whether the batch enqueued anything for a
        // local relay to publish.
        let mut wake_relay = false;
        // The local relays' marks ride along (see `local_relay`): settled
        // when the batch commits, given back to the relay otherwise.
        let mut loans = Vec::new();
        if !doomed {
            loans = local_relays
                .iter()
                .filter_map(local_relay::LocalRelay::lend_marks)
                .collect();
            match batch_end(&mut transaction, savepoint, waking_locally, &loans).await {
                Ok(enqueued) => wake_relay = enqueued,
                Err(_) => doomed = true,
            }
        }
        let committed = if doomed {
            // Ends by rollback (drop).
            Err(HandlerError::Retry(anyhow::anyhow!(
                "the batch's transaction failed outside a message's savepoint"
            )))
        } else {
            transaction.commit().await.map_err(HandlerError::from)
        };
        if let Err(error) = committed {
            // Nothing of the batch took effect: every message handled or
            // still to handle retries.
            verdicts.resize_with(batch.len(), || Verdict::Deferred {
                delay: Duration::ZERO,
            });
            let verdicts = batch
                .iter()
                .zip(verdicts)
                .map(|(received, verdict)| match verdict {
                    Verdict::Applied | Verdict::Duplicate | Verdict::Deferred { .. } => self
                        .verdict(
                            received,
                            Err(HandlerError::Retry(anyhow::anyhow!("{error}"))),
                        ),
                    other => other,
                })
                .collect();
            return (verdicts, false);
        }
        for loan in loans {
            self.metrics
                .record_marks_in_consumer_batch(loan.ids().len() as u64);
            loan.settle();
        }
        if whole == WholeBatch::Applied {
            self.metrics.record_whole_batch(batch.len() as u64);
        }
        if wake_relay {
            local_relays.iter().for_each(|relay| relay.wake());
        }
        (verdicts, true)
    }

    /// Tries the batch as one set-based step
    /// ([`MessageHandler::handle_batch`]): one inbox statement for all of
    /// it, then the handler's. Taken only when the handler has that form,
    /// the batch holds two or more messages, none is past its last
    /// delivery, and all are new to the inbox; otherwise, or when the
    /// handler fails, the savepoint is rolled back (fresh again) and the
    /// messages go one by one.
    async fn whole_batch(
        &self,
        transaction: &mut PgConnection,
        batch: &[&ReceivedMessage],
    ) -> WholeBatch {
        let max = u64::from(self.config.max_deliveries);
        if !self.handler.handles_batches()
            || batch.len() < 2
            || batch.iter().any(|received| received.delivery_count > max)
        {
            return WholeBatch::OneByOne;
        }
        let ids: Vec<&str> = batch.iter().map(|m| m.message_id.as_str()).collect();
        let subjects: Vec<&str> = batch.iter().map(|m| m.subject.as_str()).collect();
        let applied = match inbox::record_many(
            &mut *transaction,
            &self.config.name,
            &ids,
            &subjects,
        )
        .await
        {
            Ok(recorded) if recorded == batch.len() as u64 => {
                let messages: Vec<BatchMessage<'_>> = batch
                    .iter()
                    .map(|received| BatchMessage {
                        message: received,
                        span: crate::trace_context::message_span(
                            &self.config.name,
                            &received.subject,
                            &received.message_id,
                            &received.headers,
                        ),
                    })
                    .collect();
                match self.handler.handle_batch(&messages, transaction).await {
                    Ok(()) => true,
                    Err(error) => {
                        tracing::debug!(consumer = %self.config.name, error.message = %error, "batch step failed; one by one");
                        false
                    }
                }
            }
            // A message seen before: its stored reply is the per-message
            // path's business.
            Ok(_) => false,
            Err(error) => {
                tracing::debug!(consumer = %self.config.name, error.message = %error, "batch inbox insert failed; one by one");
                false
            }
        };
        if applied {
            return WholeBatch::Applied;
        }
        // Undoes the inbox rows, the handler's writes and its settings; the
        // savepoint stays, as BATCH_BEGIN left it.
        match sqlx::raw_sql("ROLLBACK TO SAVEPOINT qapmap_message")
            .execute(&mut *transaction)
            .await
        {
            Ok(_) => WholeBatch::OneByOne,
            Err(error) => {
                tracing::warn!(consumer = %self.config.name, error.message = %error, "rolling back a batch step failed");
                WholeBatch::Broken
            }
        }
    }

    /// The same failure for every message of a batch.
    fn all_failed(&self, batch: &[&ReceivedMessage], error: &HandlerError) -> Vec<Verdict> {
        batch
            .iter()
            .map(|received| {
                self.verdict(
                    received,
                    Err(HandlerError::Retry(anyhow::anyhow!("{error}"))),
                )
            })
            .collect()
    }

    /// The verdict on a message the handler saw (or failed to see).
    fn verdict(&self, received: &ReceivedMessage, outcome: Result<bool, HandlerError>) -> Verdict {
        let max = u64::from(self.config.max_deliveries);
        match outcome {
            Ok(true) => Verdict::Applied,
            Ok(false) => Verdict::Duplicate,
            Err(HandlerError::Poison(error)) => Verdict::DeadLetter {
                error: format!("poison: {error:#}"),
            },
            Err(HandlerError::Retry(error) | HandlerError::Early(error))
                if received.delivery_count >= max =>
            {
                Verdict::DeadLetter {
                    error: format!("{error:#}"),
                }
            }
            Err(HandlerError::Retry(error)) => Verdict::Retry {
                delay: self.config.retry_delay(received.delivery_count),
                error: format!("{error:#}"),
                holds_key: true,
            },
            Err(HandlerError::Early(error)) => Verdict::Retry {
                delay: self.config.retry_delay(received.delivery_count),
                error: format!("{error:#}"),
                holds_key: false,
            },
        }
    }

    /// Stores the dead letter; if that fails, nak so it comes back.
    async fn dead_letter(&self, received: &ReceivedMessage, error: &str) -> AckKind {
        match dead_letter::store(
            &self.pool,
            &self.subjects,
            &self.config.name,
            received,
            error,
        )
        .await
        {
            Ok(_) => {
                self.metrics.record_dead_lettered();
                tracing::error!(consumer = %self.config.name, message_id = %received.message_id, delivery = received.delivery_count, error.message = %error, "message moved to dead letters");
                AckKind::Ack
            }
            Err(store_error) => {
                tracing::error!(consumer = %self.config.name, error.message = %store_error, "storing a dead letter failed");
                AckKind::Nak(Some(self.config.retry_delay(received.delivery_count)))
            }
        }
    }

    /// Runs the handler with the inbox under a savepoint of the batch's
    /// transaction. Ok(false): the message was handled before and nothing
    /// changed. On an error nothing of the message is left. The flag says
    /// whether the transaction is still usable: when a savepoint could not
    /// be set, released or rolled back, it is not, and must not be committed
    /// (a COMMIT of an aborted transaction rolls back without an error).
    ///
    /// A message that succeeds keeps its savepoint ([`Savepoint::Held`]):
    /// the next message releases it in the same round trip that sets its
    /// own and records its inbox row, so a message costs its handler's
    /// round trips plus two (that one and its reply).
    async fn handle_in_savepoint(
        &self,
        transaction: &mut PgConnection,
        received: &ReceivedMessage,
        savepoint: &mut Savepoint,
    ) -> (Result<bool, HandlerError>, bool) {
        let recorded = match self.open_message(transaction, received, *savepoint).await {
            Ok(recorded) => recorded,
            // Which of the round trip's statements failed is unknown, so the
            // transaction is not trusted: the whole batch retries.
            Err(error) => {
                *savepoint = Savepoint::None;
                return (Err(error.into()), false);
            }
        };
        *savepoint = Savepoint::Held;
        let outcome = self.handle_message(transaction, received, recorded).await;
        if outcome.is_ok() {
            return (outcome, true);
        }
        *savepoint = Savepoint::None;
        let rollback =
            sqlx::raw_sql("ROLLBACK TO SAVEPOINT qapmap_message; RELEASE SAVEPOINT qapmap_message")
                .execute(&mut *transaction)
                .await;
        if let Err(error) = &rollback {
            tracing::warn!(consumer = %self.config.name, error.message = %error, "rolling back a message failed");
        }
        (outcome, rollback.is_ok())
    }

    /// Gives the message a fresh savepoint (releasing the previous message's),
    /// records it in the inbox and, when it is new and the handler named
    /// its company ([`MessageHandler::confinement`]), confines the
    /// transaction: in one round trip where the ids allow. True when it was
    /// not handled before.
    async fn open_message(
        &self,
        transaction: &mut PgConnection,
        received: &ReceivedMessage,
        savepoint: Savepoint,
    ) -> sqlx::Result<bool> {
        let name = self.config.name.as_str();
        let prefix = match savepoint {
            // BATCH_BEGIN set it up.
            Savepoint::Fresh => None,
            Savepoint::Held => Some(RELEASE_RESET_AND_SAVEPOINT),
            Savepoint::None => Some(RESET_AND_SAVEPOINT),
        };
        if let Some(prefix) = prefix {
            let inline = inbox::inline_record_sql(
                name,
                &received.message_id,
                &received.subject,
                received.confinement,
            );
            if let Some(record) = inline {
                let rows = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("{prefix}; {record}")))
                    .fetch_all(&mut *transaction)
                    .await?;
                return Ok(!rows.is_empty());
            }
            sqlx::raw_sql(prefix).execute(&mut *transaction).await?;
        }
        inbox::record_and_confine(
            &mut *transaction,
            name,
            &received.message_id,
            &received.subject,
            received.confinement,
        )
        .await
    }

    async fn handle_message(
        &self,
        transaction: &mut PgConnection,
        received: &ReceivedMessage,
        recorded: bool,
    ) -> Result<bool, HandlerError> {
        let name = self.config.name.as_str();
        if !recorded {
            if let Some(reply) =
                inbox::stored_reply(&mut *transaction, name, &received.message_id).await?
            {
                inbox::resend_reply(&mut *transaction, &reply).await?;
            }
            return Ok(false);
        }
        match self.handler.handle(received, &mut *transaction).await? {
            Handled::Done => {}
            Handled::Reply(reply) => {
                inbox::enqueue_reply(&mut *transaction, name, &received.message_id, &reply).await?;
            }
            Handled::Refused(reply) => {
                // Undoes the handler's writes and settings and the inbox row;
                // the savepoint stays, holding what follows.
                sqlx::raw_sql("ROLLBACK TO SAVEPOINT qapmap_message")
                    .execute(&mut *transaction)
                    .await?;
                inbox::record(
                    &mut *transaction,
                    name,
                    &received.message_id,
                    &received.subject,
                )
                .await?;
                inbox::enqueue_reply(&mut *transaction, name, &received.message_id, &reply).await?;
            }
        }
        Ok(true)
    }
}

/// The state of the batch's message savepoint between messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Savepoint {
    /// Set (with the settings reset) and nothing done in it yet.
    Fresh,
    /// Holds a handled message's work, still to be released.
    Held,
    /// None open.
    None,
}

/// How a batch's set-based attempt ([`Consumer::whole_batch`]) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WholeBatch {
    /// Every message took effect; the savepoint holds the work.
    Applied,
    /// Not taken, or undone: handle the messages one by one.
    OneByOne,
    /// The transaction cannot be trusted: the whole batch retries.
    Broken,
}

/// Whether the NATS connection is up, waiting up to `patience` for it.
///
/// A pull asked for while it is down waits in the client and reaches the
/// server only on the reconnect, while the client counts the pull's life
/// (its expiry plus 5 s) from when it was asked for. Back near the end of
/// that life, the server delivers into the pull and the client ends it
/// while its messages are still being handed out: the rest are dropped,
/// and come back only after the ack wait, behind the later messages of
/// their keys. So no pull is asked for until the connection is back.
async fn connected_within(
    client: &async_nats::Client,
    patience: Duration,
    stop: &mut StopSignal,
) -> bool {
    let deadline = Instant::now() + patience;
    loop {
        if client.connection_state() == ConnectionState::Connected {
            return true;
        }
        if Instant::now() >= deadline
            || until_stopped(stop, tokio::time::sleep(CONNECTION_POLL))
                .await
                .is_none()
        {
            return false;
        }
    }
}

/// `work`'s output, or `None` when `stop` comes first.
async fn until_stopped<F: std::future::Future>(
    stop: &mut StopSignal,
    work: F,
) -> Option<F::Output> {
    tokio::select! {
        biased;
        () = stop.stopped() => None,
        output = work => Some(output),
    }
}

/// Every message of one pull request until it ends (or a stop), and the
/// error that ended it early, if any.
async fn collect_messages<S, E>(
    pull: &mut BoundedPull<'_, S>,
    stop: &mut StopSignal,
) -> (Vec<jetstream::Message>, Option<E>)
where
    S: futures::Stream<Item = Result<jetstream::Message, E>> + Unpin,
{
    let mut messages = Vec::new();
    loop {
        let Some(Some(message)) = until_stopped(stop, pull.next()).await else {
            break;
        };
        match message {
            Ok(message) => messages.push(message),
            Err(error) => return (messages, Some(error)),
        }
    }
    (messages, None)
}

/// How long after a pull's expiry the consumer asks the server about it if
/// the server has not ended it. nats-server 2.9 now and then never sends
/// the end of a pull request (1 in 60 rounds in a probe of the projection's
/// pull), and async-nats then waits out its own timeout, the expiry plus
/// 5 s, with the consumer's worker waiting on it. (A bench run had sagas
/// wait 6.0 s at 64 in flight; whether this was the cause is not known.)
pub const PULL_GRACE: Duration = Duration::from_millis(500);

/// How often a worker looks whether NATS is back before it pulls again.
const CONNECTION_POLL: Duration = Duration::from_millis(20);

/// How long the consumer waits for the server's word on a pull.
const PULL_CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// Where a [`BoundedPull`] stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PullState {
    /// Before its deadline.
    Open,
    /// Past its deadline, the server holding no pull request of this
    /// consumer: ended with what had already arrived.
    Cut,
    /// Past its deadline, but the server still holds a request of this
    /// consumer, or did not answer: left to end as it would have.
    Kept,
}

/// A pull's items as they come, until the server ends the request. At the
/// deadline ([`FETCH_EXPIRY`] + [`PULL_GRACE`]) the consumer asks the
/// server whether it still holds a pull request of this consumer (one
/// worker pulls at a time, so only this one). When it holds none, it will
/// deliver nothing more to this one, and the pull ends with what had
/// arrived. Otherwise, or without an answer (a server paused, or
/// restarting), the pull is left alone: a message delivered to a pull
/// already ended would come back only after the ack wait, while later
/// messages of its key overtook it.
struct BoundedPull<'a, S> {
    items: S,
    deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    /// The server to ask; without one, a pull past its deadline is cut.
    consumer: Option<&'a PullConsumer>,
    state: PullState,
}

impl<'a, S: futures::Stream + Unpin> BoundedPull<'a, S> {
    /// For a pull just asked for with [`FETCH_EXPIRY`].
    fn new(items: S, consumer: &'a PullConsumer) -> Self {
        Self::with_deadline(items, FETCH_EXPIRY + PULL_GRACE, Some(consumer))
    }

    /// For a no-wait pull without an expiry, which the server ends at once.
    fn unbounded(items: S) -> Self {
        Self {
            items,
            deadline: None,
            consumer: None,
            state: PullState::Open,
        }
    }

    fn with_deadline(items: S, after: Duration, consumer: Option<&'a PullConsumer>) -> Self {
        Self {
            items,
            deadline: Some(Box::pin(tokio::time::sleep(after))),
            consumer,
            state: PullState::Open,
        }
    }

    async fn next(&mut self) -> Option<S::Item> {
        match (self.state, self.deadline.as_mut()) {
            (PullState::Open, Some(deadline)) => {
                tokio::select! {
                    biased;
                    item = self.items.next() => return item,
                    () = deadline => {}
                }
                self.state = if self.server_holds_no_request().await {
                    PullState::Cut
                } else {
                    PullState::Kept
                };
                self.next_after_deadline().await
            }
            _ => self.next_after_deadline().await,
        }
    }

    async fn next_after_deadline(&mut self) -> Option<S::Item> {
        match self.state {
            // Only what has already arrived.
            PullState::Cut => self.items.next().now_or_never().flatten(),
            PullState::Open | PullState::Kept => self.items.next().await,
        }
    }

    async fn server_holds_no_request(&self) -> bool {
        let Some(consumer) = self.consumer else {
            return true;
        };
        matches!(
            tokio::time::timeout(PULL_CHECK_TIMEOUT, consumer.get_info()).await,
            Ok(Ok(info)) if info.num_waiting == 0
        )
    }

    /// Whether the pull was ended at its deadline.
    fn cut(&self) -> bool {
        self.state == PullState::Cut
    }
}

/// What one pull did.
#[derive(Debug, Default)]
struct Pull {
    batches: usize,
    /// A batch's transaction did not begin or commit.
    session_failed: bool,
}

/// Undoes the transaction-local settings the previous message's handler
/// left (its confinement to a company and its audit's event ids), so each
/// message starts as the first did. One statement (it was three SETs, on
/// every message); `concat` evaluates all three `set_config` calls, and the
/// statement returns no row, so an inbox insert's RETURNING after it is the
/// only result of a round trip.
macro_rules! reset_settings {
    () => {
        "SELECT 1 WHERE concat(set_config('role', 'none', true), \
                              set_config('qapmap.company_id', '', true), \
                              set_config('qapmap.event_ids', '', true)) IS NULL"
    };
}

/// Begins a batch's transaction with the first message's savepoint.
const BATCH_BEGIN: &str = concat!("BEGIN; ", reset_settings!(), "; SAVEPOINT qapmap_message");
/// [`BATCH_BEGIN`] for a batch that wakes its local relay itself: the
/// outbox writes leave their NOTIFY out and note `pending` instead.
const BATCH_BEGIN_WAKING_LOCALLY: &str = concat!(
    "BEGIN; SET LOCAL qapmap.relay_wake = 'local'; ",
    reset_settings!(),
    "; SAVEPOINT qapmap_message"
);
/// Whether the batch's outbox writes left a local relay to wake.
macro_rules! ask_relay_wake {
    () => {
        "SELECT current_setting('qapmap.relay_wake', true) = 'pending'"
    };
}
const ASK_RELAY_WAKE: &str = ask_relay_wake!();

/// Ends a batch before its COMMIT, in one round trip: releases the last
/// message's savepoint when one is held, writes the marks lent by the local
/// relays (with the handler's settings reset first, so its company
/// confinement does not hide other companies' outbox rows) and, when the
/// batch wakes its relay locally, says whether it enqueued anything.
async fn batch_end(
    transaction: &mut PgConnection,
    savepoint: Savepoint,
    waking_locally: bool,
    loans: &[local_relay::MarksLoan],
) -> sqlx::Result<bool> {
    let mut statements: Vec<String> = Vec::new();
    if savepoint == Savepoint::Held {
        statements.push("RELEASE SAVEPOINT qapmap_message".to_owned());
    }
    let marks: Vec<i64> = loans
        .iter()
        .flat_map(|loan| loan.ids().iter().copied())
        .collect();
    if !marks.is_empty() {
        statements.push(reset_settings!().to_owned());
        statements.push(crate::relay::mark_published_sql(&marks));
    }
    if waking_locally {
        statements.push(ASK_RELAY_WAKE.to_owned());
    }
    if statements.is_empty() {
        return Ok(false);
    }
    let sql = sqlx::AssertSqlSafe(statements.join("; "));
    if !waking_locally {
        sqlx::raw_sql(sql).execute(&mut *transaction).await?;
        return Ok(false);
    }
    let row = sqlx::raw_sql(sql).fetch_one(&mut *transaction).await?;
    Ok(row.try_get::<Option<bool>, _>(0)?.unwrap_or(false))
}

/// A message's savepoint when none is open.
const RESET_AND_SAVEPOINT: &str = concat!(reset_settings!(), "; SAVEPOINT qapmap_message");
/// A message's savepoint after a handled message's, which it releases.
const RELEASE_RESET_AND_SAVEPOINT: &str = concat!(
    "RELEASE SAVEPOINT qapmap_message; ",
    reset_settings!(),
    "; SAVEPOINT qapmap_message"
);

/// The handler's view of a JetStream message.
fn decode(message: &jetstream::Message) -> Result<ReceivedMessage, async_nats::Error> {
    let info = message.info()?;
    let mut headers = BTreeMap::new();
    if let Some(map) = &message.headers {
        for (name, values) in map.iter() {
            if let Some(value) = values.first() {
                headers.insert(name.to_string(), value.to_string());
            }
        }
    }
    let message_id = headers
        .get(ORIGINAL_MESSAGE_ID_HEADER)
        .or_else(|| headers.get(NATS_MESSAGE_ID_HEADER))
        .cloned()
        .unwrap_or_else(|| format!("{}:{}", info.stream, info.stream_sequence));
    Ok(ReceivedMessage {
        subject: message.subject.to_string(),
        message_id,
        headers,
        payload: message.payload.clone(),
        delivery_count: u64::try_from(info.delivered).unwrap_or(1).max(1),
        stream_sequence: info.stream_sequence,
        confinement: None,
    })
}

/// True while the session holding the consumer lock answers.
async fn lock_still_held(lock: &mut PgConnection) -> bool {
    let probe = sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(lock);
    matches!(
        tokio::time::timeout(LOCK_PROBE_TIMEOUT, probe).await,
        Ok(Ok(1))
    )
}

fn reconnect_backoff(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    RECONNECT_BACKOFF_FIRST
        .saturating_mul(1 << exponent)
        .min(RECONNECT_BACKOFF_MAX)
}

/// Runs a consumer beside the application's server, on its database and NATS.
pub fn spawn_consumer<H: MessageHandler>(
    application: Application,
    config: ConsumerConfig,
    handler: H,
    metrics: Arc<MessagingMetrics>,
) -> Application {
    let infrastructure = application.infrastructure();
    let consumer = Consumer::new(
        infrastructure.pool.clone(),
        infrastructure.jetstream.clone(),
        infrastructure.subjects.clone(),
        config,
        handler,
    )
    .with_metrics(metrics);
    application.spawn_background("message-consumer", move |stop| consumer.run(stop))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_follow_the_backoff_and_repeat_its_last_entry() {
        let config = ConsumerConfig::new("c", StreamKind::Events, "x.evt.>")
            .with_backoff(vec![Duration::from_millis(10), Duration::from_millis(20)]);
        assert_eq!(config.retry_delay(1), Duration::from_millis(10));
        assert_eq!(config.retry_delay(2), Duration::from_millis(20));
        assert_eq!(config.retry_delay(9), Duration::from_millis(20));
    }

    /// Every item of `pull` until it ends; fails if that takes 10 s.
    async fn drained<S: futures::Stream + Unpin>(pull: &mut BoundedPull<'_, S>) -> Vec<S::Item> {
        let drain = async {
            let mut items = Vec::new();
            while let Some(item) = pull.next().await {
                items.push(item);
            }
            items
        };
        tokio::time::timeout(Duration::from_secs(10), drain)
            .await
            .expect("the pull ends")
    }

    #[tokio::test]
    async fn a_pull_the_server_never_ends_is_cut_at_its_deadline_keeping_what_arrived() {
        let (sender, receiver) = futures::channel::mpsc::unbounded();
        sender.unbounded_send(1).expect("send");
        sender.unbounded_send(2).expect("send");
        let mut pull = BoundedPull::with_deadline(receiver, Duration::from_millis(50), None);
        assert_eq!(drained(&mut pull).await, vec![1, 2]);
        assert!(pull.cut());
        drop(sender);
    }

    #[tokio::test]
    async fn a_pull_the_server_ends_is_not_cut() {
        let (sender, receiver) = futures::channel::mpsc::unbounded();
        sender.unbounded_send(1).expect("send");
        drop(sender);
        let mut pull = BoundedPull::with_deadline(receiver, Duration::from_secs(5), None);
        assert_eq!(drained(&mut pull).await, vec![1]);
        assert!(!pull.cut());
    }

    /// A durable pull consumer on a fresh namespace of the test NATS, and
    /// the namespace (its streams go when it is dropped).
    async fn server_consumer() -> (PullConsumer, qapmap_testkit::nats::TestNamespace) {
        let namespace = qapmap_testkit::nats::TestNamespace::new();
        let client = async_nats::connect(namespace.url.as_str())
            .await
            .expect("connect to NATS");
        let jetstream = jetstream::new(client);
        // This crate's own `Subjects`: the testkit's come from its copy of it.
        let subjects = Subjects::new(namespace.name.clone());
        crate::messaging::ensure_streams(&jetstream, &subjects)
            .await
            .expect("streams");
        let config = ConsumerConfig::new("held", StreamKind::Events, subjects.event("test", "*"));
        let consumer = jetstream
            .get_stream(subjects.stream_name(StreamKind::Events))
            .await
            .expect("stream")
            .create_consumer(config.pull_config())
            .await
            .expect("consumer");
        (consumer, namespace)
    }

    /// Goal: at the deadline, a pull the server still holds is left to end
    /// when the server ends it, never cut: a message the server then
    /// delivered to it would wait out the ack wait, overtaken by later ones.
    /// Method: an empty pull expiring after 800 ms, a deadline at 100 ms.
    #[tokio::test]
    async fn a_pull_the_server_still_holds_is_not_cut_at_its_deadline() {
        let (consumer, _namespace) = server_consumer().await;
        let asked = Instant::now();
        let empty = consumer
            .fetch()
            .max_messages(1)
            .expires(Duration::from_millis(800))
            .messages()
            .await
            .expect("pull");
        let mut pull =
            BoundedPull::with_deadline(empty, Duration::from_millis(100), Some(&consumer));
        assert!(drained(&mut pull).await.is_empty());
        assert!(!pull.cut(), "the server held the request at the deadline");
        assert!(
            asked.elapsed() >= Duration::from_millis(700),
            "the pull ended when the server ended it, after {:?}",
            asked.elapsed()
        );
    }

    /// Goal: a pull whose end never comes while the server holds no pull
    /// request (the request it forgot) is cut at its deadline, keeping what
    /// had arrived; this is the server's real answer, not a stand-in.
    /// Method: the consumer exists but nothing pulls from it; the items
    /// come from a channel that never ends.
    #[tokio::test]
    async fn a_pull_the_server_holds_no_request_for_is_cut_at_its_deadline() {
        let (consumer, _namespace) = server_consumer().await;
        let (sender, receiver) = futures::channel::mpsc::unbounded();
        sender.unbounded_send(1).expect("send");
        let mut pull =
            BoundedPull::with_deadline(receiver, Duration::from_millis(100), Some(&consumer));
        assert_eq!(drained(&mut pull).await, vec![1]);
        assert!(pull.cut(), "the server said it held no request");
        drop(sender);
    }

    #[test]
    fn jetstream_delivers_spare_attempts_beyond_ours() {
        let config = ConsumerConfig::new("c", StreamKind::Events, "x.evt.>").with_max_deliveries(3);
        let pull = config.pull_config();
        assert_eq!(pull.max_deliver, 5);
        assert_eq!(pull.backoff.len(), 4);
        assert!(pull.backoff.iter().all(|delay| *delay >= config.ack_wait));
    }
}
