//! The outbox relay: publishes committed outbox rows to JetStream.
//!
//! One round is one transaction:
//! 1. **Claim**: take the round lock (a transaction advisory lock, tried
//!    without waiting, in the claim statement; a relay that does not get it
//!    claims nothing, ends its round and looks again after
//!    `LOCKED_OUT_RETRY` (20 ms): the holder's round may have read the outbox
//!    before the rows this relay was woken for committed, and a wake-up by
//!    a writer of this process ([`crate::local_relay`]) reaches no other
//!    relay) and read up to
//!    [`CLAIM_BATCH_SIZE`] unpublished rows in id order, leaving out the
//!    rows this relay published whose marks are still pending.
//! 2. **Publish** in waves: wave *n* holds the *n*-th claimed row of every
//!    key, published pipelined (all sends, then all acks). A key whose row
//!    fails drops out of the later waves, so a key's later row is never sent
//!    before its earlier row was acknowledged.
//! 3. **Mark**: the acknowledged rows join the pending marks. A consumer
//!    batch of the same database in this process takes them and sets
//!    `published_at` in its own transaction ([`crate::local_relay`]), so on
//!    a busy service marks cost no commit. Those no batch took within
//!    [`MARK_DELAY`] the round marks itself and commits. Otherwise it rolls
//!    back: nothing was written.
//!
//! So the relay commits at most a few times a second however many rounds it
//! runs, and not at all while its process's consumers are busy (the
//! relay's own mark commits are asynchronous too: losing one only publishes
//! again). Rounds of all relays of a database are serialised by the lock,
//! so two relays never publish rows of one key at the same time, and a relay
//! that dies mid-round takes its lock with its transaction: nothing waits
//! for a lease to expire.
//!
//! A row is marked only after JetStream acknowledged it. A relay that dies
//! before its marks commit leaves the rows unmarked; the next round (of any
//! relay) publishes them again with the same `Nats-Msg-Id` and JetStream
//! drops the duplicates; so does another relay's round that finds rows whose
//! marks are pending elsewhere. Rows are selected by `published_at IS NULL`,
//! never by "ids above the last one published", so a row that commits after
//! a higher id was already published is still found.
//!
//! Per-key order is id order among committed rows: the relay cannot see a
//! row that has not committed, so writers of one key must commit in id
//! order (they do when each takes its aggregate's row lock before enqueueing).
//!
//! Retry horizon: a published-but-unmarked row is published again by the
//! next round of another relay, or within [`DEFAULT_POLL_INTERVAL`] of a
//! restart, while any relay runs. That is far inside JetStream's 15-minute
//! duplicate window ([`crate::messaging::DUPLICATE_WINDOW`]); only an outage
//! of every relay longer than the window lets a duplicate through, and the
//! consumers' inboxes drop that one.
//!
//! (The `lease_owner`/`lease_expires_at` columns are no longer written; the
//! round's transaction does what the leases did.)

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream::{self, message::PublishMessage};
use futures::FutureExt;
use futures::future::join_all;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::time::Instant;
use uuid::Uuid;

use crate::local_relay::{self, LocalRelay};
use crate::metrics::MessagingMetrics;
use crate::outbox::{NOTIFY_CHANNEL, PARTITION_KEY_HEADER};
use crate::server::{Application, StopSignal};

/// Rows claimed per round. Bounded by the JetStream context's in-flight ack
/// limit (5,000 by default) since one wave may hold a row of every key.
pub const CLAIM_BATCH_SIZE: i64 = 500;
/// How long a round may go on publishing waves before it marks and commits.
pub const DEFAULT_ROUND_LIMIT: Duration = Duration::from_secs(15);
/// The safety-net poll when no NOTIFY arrives (a lost listener connection,
/// a relay that died mid-round).
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(2);
/// How long published rows are kept (for inspection) before pruning.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);
/// How long a consumer's inbox row is kept: while it exists, a copy of its
/// message changes nothing. A copy can only come from JetStream, which keeps
/// a message at most [`crate::messaging::MAX_AGE`] (7 days), or from an
/// outbox row published but never marked, which any relay publishes again
/// within seconds (a month means every relay was down that long). Rows of a
/// message with a pending dead letter are kept however old, since a replay
/// carries the original id.
pub const DEFAULT_INBOX_RETENTION: Duration = Duration::from_secs(30 * 24 * 60 * 60);
/// How long a resolved (replayed or discarded) dead letter is kept, for
/// operators looking back at an incident; the audit trail keeps who
/// resolved it and how beyond that. Pending ones are kept until resolved.
pub const DEFAULT_DEAD_LETTER_RETENTION: Duration = Duration::from_secs(90 * 24 * 60 * 60);
/// How often published outbox rows and inbox rows past their retention are
/// pruned.
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(60);
/// Rows deleted per prune statement; keeps each delete short.
pub const PRUNE_BATCH_SIZE: i64 = 5_000;
/// Prune statements per prune pass, so one pass is bounded.
pub const PRUNE_ROUNDS_MAX: u32 = 20;
/// Notifications drained after a wake-up; the round that follows covers them all.
const NOTIFICATIONS_DRAINED_MAX: u32 = 1_024;
/// Backoff after a failed round: first and largest pause.
const FAILURE_BACKOFF_FIRST: Duration = Duration::from_millis(100);
const FAILURE_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long published rows may wait for their marks, so that the marks of
/// many rounds share one commit, or ride in a consumer batch's. A relay
/// that dies meanwhile only leaves them to be published again (JetStream
/// drops the duplicates); the relay's own later rounds skip them.
pub const MARK_DELAY: Duration = Duration::from_millis(250);
/// How soon a relay that found the round lock taken tries again (doubling
/// while it stays taken).
const LOCKED_OUT_RETRY: Duration = Duration::from_millis(20);
/// Pending marks that make a round commit at once.
const PENDING_MARKS_MAX: usize = 5_000;
/// Marks published rows, given their ids as `$1`.
const MARK_PUBLISHED: &str =
    "UPDATE outbox SET published_at = COALESCE(published_at, now()) WHERE id = ANY($1)";

/// [`MARK_PUBLISHED`] with the ids written into it (integers only), for a
/// transaction that writes a relay's marks in a round trip of other
/// statements without parameters ([`crate::local_relay::LocalRelay::lend_marks`]).
pub(crate) fn mark_published_sql(ids: &[i64]) -> String {
    let list: Vec<String> = ids.iter().map(i64::to_string).collect();
    format!(
        "UPDATE outbox SET published_at = COALESCE(published_at, now()) WHERE id = ANY('{{{}}}'::bigint[])",
        list.join(",")
    )
}
/// Key of the transaction advisory lock that serialises rounds.
pub const ROUND_LOCK_KEY: i64 = 0x7161_706d_6170_0001;

const _: () = assert!(CLAIM_BATCH_SIZE > 0 && CLAIM_BATCH_SIZE <= 5_000);
const _: () = assert!(DEFAULT_INBOX_RETENTION.as_secs() > crate::messaging::MAX_AGE.as_secs());

/// Tunables; the defaults suit production.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    pub round_limit: Duration,
    pub poll_interval: Duration,
    /// How long published outbox rows are kept.
    pub retention: Duration,
    /// How long inbox rows are kept (see [`DEFAULT_INBOX_RETENTION`]).
    pub inbox_retention: Duration,
    /// How long resolved dead letters are kept (see
    /// [`DEFAULT_DEAD_LETTER_RETENTION`]).
    pub dead_letter_retention: Duration,
    /// How long published rows wait for a consumer batch to mark them
    /// before the relay marks them itself (see [`MARK_DELAY`]).
    pub mark_delay: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            round_limit: DEFAULT_ROUND_LIMIT,
            poll_interval: DEFAULT_POLL_INTERVAL,
            retention: DEFAULT_RETENTION,
            inbox_retention: DEFAULT_INBOX_RETENTION,
            dead_letter_retention: DEFAULT_DEAD_LETTER_RETENTION,
            mark_delay: MARK_DELAY,
        }
    }
}

/// What one round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayRound {
    pub claimed: usize,
    pub published: usize,
    pub failed: usize,
    /// Another relay's round held the lock, so this one claimed nothing.
    pub locked_out: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("outbox database error")]
    Database(#[from] sqlx::Error),
    #[error("outbox row {id} has malformed headers")]
    MalformedHeaders {
        id: i64,
        #[source]
        source: serde_json::Error,
    },
}

/// A claim's row: whether the round got the lock, and an outbox row if any.
#[derive(Debug, sqlx::FromRow)]
struct ClaimRow {
    locked: bool,
    id: Option<i64>,
    message_id: Option<Uuid>,
    subject: Option<String>,
    payload: Option<Vec<u8>>,
    headers: Option<serde_json::Value>,
    partition_key: Option<String>,
}

impl ClaimRow {
    fn claimed(self) -> Option<ClaimedRow> {
        Some(ClaimedRow {
            id: self.id?,
            message_id: self.message_id?,
            subject: self.subject?,
            payload: self.payload?,
            headers: self.headers?,
            partition_key: self.partition_key?,
        })
    }
}

/// One outbox row on its way to JetStream.
#[derive(Debug, sqlx::FromRow)]
struct ClaimedRow {
    id: i64,
    message_id: Uuid,
    subject: String,
    payload: Vec<u8>,
    headers: serde_json::Value,
    partition_key: String,
}

/// Publishes the outbox of one database. Cheap to construct; run it with
/// [`Relay::run`] (or [`spawn_relay`]).
#[derive(Debug, Clone)]
pub struct Relay {
    pool: PgPool,
    jetstream: jetstream::Context,
    config: RelayConfig,
    metrics: Arc<MessagingMetrics>,
}

impl Relay {
    pub fn new(pool: PgPool, jetstream: jetstream::Context) -> Self {
        Self {
            pool,
            jetstream,
            config: RelayConfig::default(),
            metrics: Arc::new(MessagingMetrics::new()),
        }
    }

    pub fn with_config(mut self, config: RelayConfig) -> Self {
        assert!(
            !config.round_limit.is_zero(),
            "a relay round limit must be positive"
        );
        // A shorter one would forget messages JetStream may still deliver.
        assert!(
            config.inbox_retention > crate::messaging::MAX_AGE,
            "inbox rows must outlive the stream's messages"
        );
        self.config = config;
        self
    }

    /// Counts publishes in the process's shared metrics.
    pub fn with_metrics(mut self, metrics: Arc<MessagingMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Relays until `stop`: a round whenever NOTIFY (or a local wake-up) says
    /// rows were committed, at least every poll interval, and again at once
    /// while rounds fill their claim.
    /// Database and NATS failures are retried with backoff, never returned.
    pub async fn run(self, mut stop: StopSignal) -> anyhow::Result<()> {
        let mut failures: u32 = 0;
        // Postgres may be away at start too (a restart, a test stopping it):
        // wait for it like for any later failure instead of ending the task.
        let mut listener = loop {
            match self.listen().await {
                Ok(listener) => break listener,
                Err(error) => {
                    tracing::warn!(error.message = %format!("{error:#}"), "outbox listener unavailable; retrying");
                    failures += 1;
                    tokio::select! {
                        _ = stop.stopped() => return Ok(()),
                        _ = tokio::time::sleep(failure_backoff(failures)) => {}
                    }
                }
            }
        };
        failures = 0;
        let local = local_relay::register(&self.pool);
        // Rounds in a row that found the lock taken: the retry backs off.
        let mut locked_out: u32 = 0;
        let mut last_prune: Option<Instant> = None;
        while !stop.is_stopped() {
            if last_prune.is_none_or(|at| at.elapsed() >= PRUNE_INTERVAL) {
                self.prune_logged().await;
                last_prune = Some(Instant::now());
            }
            let pause = match self.relay_once(&local).await {
                Ok(round) if round.failed == 0 => {
                    failures = 0;
                    locked_out = if round.locked_out { locked_out + 1 } else { 0 };
                    // A full claim may have left rows behind: go on at once.
                    // Otherwise wait: a row committed after this claim read
                    // the outbox woke the relay after its commit, and that
                    // wake-up is kept (a queued NOTIFY, a stored local
                    // permit), so an empty look-again round would only cost
                    // three round trips.
                    if round.claimed >= CLAIM_BATCH_SIZE as usize {
                        continue;
                    }
                    // The holder's round may have read the outbox before
                    // the rows this relay was woken for committed, and a
                    // local wake-up reaches no other process: look again
                    // soon rather than at the next poll, less often while
                    // the holder's round goes on (up to a poll interval).
                    (locked_out > 0)
                        .then(|| locked_out_retry(locked_out, self.config.poll_interval))
                }
                Ok(round) => {
                    tracing::warn!(
                        failed = round.failed,
                        "some outbox rows were not acknowledged"
                    );
                    failures += 1;
                    Some(failure_backoff(failures))
                }
                Err(error) => {
                    tracing::warn!(error.cause_chain = ?error, error.message = %error, "outbox relay round failed");
                    failures += 1;
                    Some(failure_backoff(failures))
                }
            };
            tokio::select! {
                _ = stop.stopped() => break,
                _ = self.wait_for_work(&mut listener, &local, pause, local.marks_due_in(self.config.mark_delay, PENDING_MARKS_MAX)) => {}
            }
        }
        Ok(())
    }

    async fn listen(&self) -> anyhow::Result<PgListener> {
        let mut listener = PgListener::connect_with(&self.pool)
            .await
            .context("connecting the outbox listener")?;
        listener
            .listen(NOTIFY_CHANNEL)
            .await
            .context("listening for outbox notifications")?;
        Ok(listener)
    }

    /// Sleeps `pause` after a failure; otherwise waits for a notification, a
    /// local wake-up (or the poll interval) and drains the notifications
    /// queued behind it.
    async fn wait_for_work(
        &self,
        listener: &mut PgListener,
        local: &LocalRelay,
        pause: Option<Duration>,
        marks_due_in: Option<Duration>,
    ) {
        if let Some(pause) = pause {
            tokio::time::sleep(pause).await;
            return;
        }
        let wait = marks_due_in.map_or(self.config.poll_interval, |due_in| {
            due_in.min(self.config.poll_interval)
        });
        let woken = async {
            tokio::select! {
                received = listener.recv() => Some(received),
                _ = local.woken() => None,
            }
        };
        match tokio::time::timeout(wait, woken).await {
            Ok(None) | Ok(Some(Ok(_))) => {
                // Only what is already here: waiting for more would delay
                // the round on the saga path.
                for _ in 0..NOTIFICATIONS_DRAINED_MAX {
                    match listener.recv().now_or_never() {
                        Some(Ok(_)) => {}
                        _ => break,
                    }
                }
            }
            Ok(Some(Err(error))) => {
                // The listener reconnects on the next call; the poll covers the gap.
                tracing::warn!(error.message = %error, "outbox listener lost its connection");
                tokio::time::sleep(FAILURE_BACKOFF_FIRST).await;
            }
            Err(_poll_interval_passed) => {}
        }
    }

    /// Claims and publishes one batch, and commits the marks when they are
    /// due (unless a consumer batch took them first, see
    /// [`crate::local_relay`]), in one transaction; a round that commits
    /// nothing rolls back.
    async fn relay_once(&self, local: &LocalRelay) -> Result<RelayRound, RelayError> {
        let mut transaction = self.pool.begin().await?;
        // The round lock is taken by the claim itself, saving a round trip
        // per round; the claim says whether it got it. A relay that does
        // not claims nothing: another relay is in a round. The claim's
        // snapshot may predate the marks the previous holder committed just
        // before; rows it then claims again are published again under their
        // `Nats-Msg-Id`, and JetStream drops them.
        let claim = sqlx::query_as::<_, ClaimRow>(
            "SELECT round.locked, o.id, o.message_id, o.subject, o.payload, o.headers,
                    o.partition_key
             FROM (SELECT pg_try_advisory_xact_lock($3) AS locked OFFSET 0) round
             LEFT JOIN LATERAL (
                 SELECT id, message_id, subject, payload, headers, partition_key
                 FROM outbox
                 WHERE round.locked AND published_at IS NULL AND id <> ALL($2)
                 ORDER BY id LIMIT $1
             ) o ON true",
        )
        .bind(CLAIM_BATCH_SIZE)
        .bind(local.unmarked())
        .bind(ROUND_LOCK_KEY)
        .fetch_all(&mut *transaction)
        .await?;
        // Every outbox column is NOT NULL, so a row of NULLs is the
        // LEFT JOIN's "nothing claimed", never a row to skip.
        let locked_out = !claim.first().is_some_and(|row| row.locked);
        let rows: Vec<ClaimedRow> = claim.into_iter().filter_map(ClaimRow::claimed).collect();
        let claimed = rows.len();
        let published = if rows.is_empty() {
            0
        } else {
            let published_ids = self.publish_in_key_order(rows).await?;
            let published = published_ids.len();
            local.add_marks(published_ids);
            published
        };
        if local.marks_due_in(self.config.mark_delay, PENDING_MARKS_MAX) == Some(Duration::ZERO) {
            let ids = local.take_marks();
            let written = async {
                // The marks need no fsync of their own: a mark lost in a
                // crash only publishes its rows again, and JetStream drops
                // those duplicates. Set here, not in every round: most
                // rounds commit nothing.
                sqlx::query("SET LOCAL synchronous_commit TO off")
                    .execute(&mut *transaction)
                    .await?;
                sqlx::query(MARK_PUBLISHED)
                    .bind(&ids)
                    .execute(&mut *transaction)
                    .await?;
                transaction.commit().await?;
                Ok::<_, sqlx::Error>(())
            };
            if let Err(error) = written.await {
                local.return_marks(ids);
                return Err(error.into());
            }
            self.metrics.record_relay_mark_commit();
        }
        let failed = claimed - published;
        self.metrics.record_published(published as u64);
        self.metrics.record_publish_failures(failed as u64);
        Ok(RelayRound {
            claimed,
            published,
            failed,
            locked_out,
        })
    }

    /// Publishes `rows` in waves and returns the ids JetStream acknowledged.
    async fn publish_in_key_order(&self, rows: Vec<ClaimedRow>) -> Result<Vec<i64>, RelayError> {
        let mut queues = queues_by_key(rows);
        // Bounds how long a round holds its lock; later waves wait for the
        // next round.
        let deadline = Instant::now() + self.config.round_limit;
        let mut published = Vec::new();
        while Instant::now() < deadline {
            let wave: Vec<ClaimedRow> = queues
                .values_mut()
                .filter_map(VecDeque::pop_front)
                .collect();
            if wave.is_empty() {
                break;
            }
            for (row, acknowledged) in self.publish_wave(wave).await? {
                if acknowledged {
                    published.push(row.id);
                } else {
                    // Its later rows must wait until this one is acknowledged.
                    queues.remove(&row.partition_key);
                }
            }
        }
        Ok(published)
    }

    /// Sends every row of a wave, then awaits all their acks.
    async fn publish_wave(
        &self,
        wave: Vec<ClaimedRow>,
    ) -> Result<Vec<(ClaimedRow, bool)>, RelayError> {
        let mut sent = Vec::with_capacity(wave.len());
        for row in wave {
            let message = publish_message(&row)?;
            let ack = self
                .jetstream
                .send_publish(row.subject.clone(), message)
                .await;
            sent.push((row, ack));
        }
        let acks = sent.into_iter().map(|(row, ack)| async move {
            let outcome = match ack {
                Ok(ack) => ack.await.map(|_| ()),
                Err(error) => Err(error),
            };
            if let Err(error) = &outcome {
                tracing::warn!(outbox.id = row.id, subject = %row.subject, error.message = %error, "publish not acknowledged");
            }
            (row, outcome.is_ok())
        });
        Ok(join_all(acks).await)
    }

    /// Deletes published outbox rows, inbox rows and resolved dead letters
    /// past their retention, in bounded batches. Every relay of the database may prune: the
    /// deletes only ever remove rows nobody needs, so two at once are
    /// harmless.
    pub async fn prune(&self) -> Result<Pruned, sqlx::Error> {
        let outbox = prune_in_batches(|| {
            // `id = ANY(ARRAY(..))`: with `id IN (..)` the planner joined
            // the chosen ids against a scan of the whole outbox (150 ms a
            // batch at a million rows, against 7 ms).
            sqlx::query(
                "DELETE FROM outbox WHERE id = ANY(ARRAY(
                     SELECT id FROM outbox
                     WHERE published_at < now() - make_interval(secs => $1)
                     LIMIT $2))",
            )
            .bind(self.config.retention.as_secs_f64())
            .bind(PRUNE_BATCH_SIZE)
            .execute(&self.pool)
        })
        .await?;
        let inbox = prune_in_batches(|| {
            crate::inbox::prune(&self.pool, self.config.inbox_retention, PRUNE_BATCH_SIZE)
        })
        .await?;
        let dead_letters = prune_in_batches(|| {
            crate::dead_letter::prune(
                &self.pool,
                self.config.dead_letter_retention,
                PRUNE_BATCH_SIZE,
            )
        })
        .await?;
        Ok(Pruned {
            outbox,
            inbox,
            dead_letters,
        })
    }

    async fn prune_logged(&self) {
        match self.prune().await {
            Ok(pruned) if pruned == Pruned::default() => {}
            Ok(pruned) => {
                tracing::info!(
                    outbox = pruned.outbox,
                    inbox = pruned.inbox,
                    dead_letters = pruned.dead_letters,
                    "pruned published outbox rows, old inbox rows and resolved dead letters"
                )
            }
            Err(error) => {
                tracing::warn!(error.message = %error, "pruning the outbox, inbox or dead letters failed")
            }
        }
    }
}

/// Rows one prune pass deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub outbox: u64,
    pub inbox: u64,
    pub dead_letters: u64,
}

/// Runs a delete of at most [`PRUNE_BATCH_SIZE`] rows until one deletes
/// fewer, at most [`PRUNE_ROUNDS_MAX`] times, so one pass stays bounded.
/// For a service's own tables past their retention too.
pub async fn prune_in_batches<F, Fut>(mut delete: F) -> Result<u64, sqlx::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<sqlx::postgres::PgQueryResult, sqlx::Error>>,
{
    let mut deleted = 0;
    for _ in 0..PRUNE_ROUNDS_MAX {
        let batch = delete().await?.rows_affected();
        deleted += batch;
        if batch < PRUNE_BATCH_SIZE as u64 {
            break;
        }
    }
    Ok(deleted)
}

/// Claimed rows grouped by partition key, each queue in id order.
fn queues_by_key(rows: Vec<ClaimedRow>) -> BTreeMap<String, VecDeque<ClaimedRow>> {
    let mut queues: BTreeMap<String, VecDeque<ClaimedRow>> = BTreeMap::new();
    for row in rows {
        queues
            .entry(row.partition_key.clone())
            .or_default()
            .push_back(row);
    }
    for queue in queues.values() {
        debug_assert!(
            queue
                .iter()
                .zip(queue.iter().skip(1))
                .all(|(a, b)| a.id < b.id)
        );
    }
    queues
}

/// The row as a JetStream publish: its headers plus `Nats-Msg-Id`.
fn publish_message(row: &ClaimedRow) -> Result<PublishMessage, RelayError> {
    let headers: BTreeMap<String, String> = serde_json::from_value(row.headers.clone())
        .map_err(|source| RelayError::MalformedHeaders { id: row.id, source })?;
    let mut message = PublishMessage::build().payload(row.payload.clone().into());
    for (name, value) in headers {
        message = message.header(name, value);
    }
    Ok(message
        .header(PARTITION_KEY_HEADER, row.partition_key.as_str())
        .message_id(row.message_id.to_string()))
}

/// The pause after the `rounds`-th locked-out round in a row: 20 ms,
/// doubling, at most `poll_interval`.
fn locked_out_retry(rounds: u32, poll_interval: Duration) -> Duration {
    let exponent = rounds.saturating_sub(1).min(16);
    LOCKED_OUT_RETRY
        .saturating_mul(1 << exponent)
        .min(poll_interval)
}

fn failure_backoff(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    FAILURE_BACKOFF_FIRST
        .saturating_mul(1 << exponent)
        .min(FAILURE_BACKOFF_MAX)
}

/// Runs a relay for the application's database and NATS beside its server.
pub fn spawn_relay(application: Application) -> Application {
    spawn_relay_with(application, Arc::new(MessagingMetrics::new()))
}

/// [`spawn_relay`], counting into the process's shared metrics.
pub fn spawn_relay_with(application: Application, metrics: Arc<MessagingMetrics>) -> Application {
    let infrastructure = application.infrastructure();
    let relay = Relay::new(
        infrastructure.pool.clone(),
        infrastructure.jetstream.clone(),
    )
    .with_metrics(metrics);
    application.spawn_background("outbox-relay", move |stop| relay.run(stop))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_written_into_sql_are_the_ids_as_an_array() {
        assert_eq!(
            mark_published_sql(&[3, 41, -7]),
            "UPDATE outbox SET published_at = COALESCE(published_at, now()) WHERE id = ANY('{3,41,-7}'::bigint[])"
        );
    }

    #[test]
    fn failure_backoff_doubles_up_to_its_cap() {
        assert_eq!(failure_backoff(1), FAILURE_BACKOFF_FIRST);
        assert_eq!(failure_backoff(2), FAILURE_BACKOFF_FIRST * 2);
        assert_eq!(failure_backoff(40), FAILURE_BACKOFF_MAX);
    }

    #[test]
    fn the_locked_out_retry_doubles_up_to_the_poll_interval() {
        let poll = DEFAULT_POLL_INTERVAL;
        assert_eq!(locked_out_retry(1, poll), Duration::from_millis(20));
        assert_eq!(locked_out_retry(3, poll), Duration::from_millis(80));
        assert_eq!(locked_out_retry(40, poll), poll);
    }
}
