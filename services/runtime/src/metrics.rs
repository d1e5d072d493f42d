//! Messaging metrics of one process: what the relay published, what the
//! consumers handled and dead-lettered (counters kept in atomics), and the
//! outbox backlog with the age of its oldest row (read from Postgres when
//! asked, since several relays share one outbox). The exporter reads these.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::PgPool;

/// Counters shared by the relay and the consumers of one process.
#[derive(Debug, Default)]
pub struct MessagingMetrics {
    published_total: AtomicU64,
    publish_failures_total: AtomicU64,
    handled_total: AtomicU64,
    redelivered_duplicates_total: AtomicU64,
    ignored_total: AtomicU64,
    dead_lettered_total: AtomicU64,
    pulls_cut_total: AtomicU64,
    relay_mark_commits_total: AtomicU64,
    marks_in_consumer_batches_total: AtomicU64,
    whole_batches_total: AtomicU64,
    messages_in_whole_batches_total: AtomicU64,
    held_behind_retry_total: AtomicU64,
}

/// The outbox rows still waiting for JetStream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxBacklog {
    pub unpublished_rows: i64,
    /// How long the oldest unpublished row has waited; `None` when empty.
    pub oldest_age: Option<Duration>,
}

impl MessagingMetrics {
    pub fn new() -> Self {
        Self::default()
    }

    pub(crate) fn record_published(&self, count: u64) {
        self.published_total.fetch_add(count, Ordering::Relaxed);
    }

    pub(crate) fn record_publish_failures(&self, count: u64) {
        self.publish_failures_total
            .fetch_add(count, Ordering::Relaxed);
    }

    pub(crate) fn record_handled(&self) {
        self.handled_total.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_duplicate(&self) {
        self.redelivered_duplicates_total
            .fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_ignored(&self) {
        self.ignored_total.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_dead_lettered(&self) {
        self.dead_lettered_total.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_pull_cut(&self) {
        self.pulls_cut_total.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_relay_mark_commit(&self) {
        self.relay_mark_commits_total
            .fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_marks_in_consumer_batch(&self, count: u64) {
        self.marks_in_consumer_batches_total
            .fetch_add(count, Ordering::Relaxed);
    }

    pub(crate) fn record_held(&self, count: u64) {
        self.held_behind_retry_total
            .fetch_add(count, Ordering::Relaxed);
    }

    /// Times a consumer held a message in memory behind an earlier message
    /// of its key that will be retried, instead of nak'ing it.
    pub fn held_behind_retry_total(&self) -> u64 {
        self.held_behind_retry_total.load(Ordering::Relaxed)
    }

    pub(crate) fn record_whole_batch(&self, messages: u64) {
        self.whole_batches_total.fetch_add(1, Ordering::Relaxed);
        self.messages_in_whole_batches_total
            .fetch_add(messages, Ordering::Relaxed);
    }

    /// Batches a consumer applied and committed in one set-based step
    /// (`MessageHandler::handle_batch`).
    pub fn whole_batches_total(&self) -> u64 {
        self.whole_batches_total.load(Ordering::Relaxed)
    }

    /// Messages applied in such batches (also counted as handled).
    pub fn messages_in_whole_batches_total(&self) -> u64 {
        self.messages_in_whole_batches_total.load(Ordering::Relaxed)
    }

    /// Commits the relay made for its marks alone: those no consumer batch
    /// took within the mark delay (`local_relay`).
    pub fn relay_mark_commits_total(&self) -> u64 {
        self.relay_mark_commits_total.load(Ordering::Relaxed)
    }

    /// Published rows marked in a consumer batch's transaction, at no
    /// commit of their own.
    pub fn marks_in_consumer_batches_total(&self) -> u64 {
        self.marks_in_consumer_batches_total.load(Ordering::Relaxed)
    }

    /// Pulls whose end the server never sent, ended by the consumer at
    /// their deadline (`consumer::PULL_GRACE`).
    pub fn pulls_cut_total(&self) -> u64 {
        self.pulls_cut_total.load(Ordering::Relaxed)
    }

    /// Messages this process published and JetStream acknowledged; its rate
    /// is the publish rate.
    pub fn published_total(&self) -> u64 {
        self.published_total.load(Ordering::Relaxed)
    }

    /// Publishes that failed or timed out and will be retried.
    pub fn publish_failures_total(&self) -> u64 {
        self.publish_failures_total.load(Ordering::Relaxed)
    }

    /// Messages whose effect this process committed.
    pub fn handled_total(&self) -> u64 {
        self.handled_total.load(Ordering::Relaxed)
    }

    /// Redeliveries the inbox recognised and acknowledged without an effect.
    pub fn redelivered_duplicates_total(&self) -> u64 {
        self.redelivered_duplicates_total.load(Ordering::Relaxed)
    }

    /// Messages a consumer acknowledged unhandled because it has no use for
    /// them (`MessageHandler::ignores`).
    pub fn ignored_total(&self) -> u64 {
        self.ignored_total.load(Ordering::Relaxed)
    }

    /// Messages this process moved to dead letters.
    pub fn dead_lettered_total(&self) -> u64 {
        self.dead_lettered_total.load(Ordering::Relaxed)
    }

    /// The outbox backlog of the database `pool` points at.
    pub async fn outbox_backlog(pool: &PgPool) -> sqlx::Result<OutboxBacklog> {
        let (unpublished_rows, oldest_age_seconds): (i64, Option<f64>) = sqlx::query_as(
            "SELECT count(*), EXTRACT(EPOCH FROM now() - min(created_at))::float8
             FROM outbox WHERE published_at IS NULL",
        )
        .fetch_one(pool)
        .await?;
        Ok(OutboxBacklog {
            unpublished_rows,
            oldest_age: oldest_age_seconds.map(|seconds| Duration::from_secs_f64(seconds.max(0.0))),
        })
    }

    /// Dead letters waiting for an operator (neither replayed nor discarded).
    pub async fn pending_dead_letters(pool: &PgPool) -> sqlx::Result<i64> {
        sqlx::query_scalar("SELECT count(*) FROM dead_letters WHERE status = 'pending'")
            .fetch_one(pool)
            .await
    }
}
