//! Retention of `applied_equity_events`, the options projection's record of
//! the equity events it applied (its idempotency by event id).
//!
//! An event reaches the projection only through the equity-events
//! consumer, whose inbox already drops a second copy of a message for
//! [`DEFAULT_INBOX_RETENTION`], and keeps the row of any message with a
//! pending dead letter, since a replay carries the original id. The
//! projection's own record guards the same copies by event id, so it is
//! kept exactly as long: past that, no copy can arrive (JetStream keeps a
//! message at most 7 days), and the record would only grow.

use std::time::Duration;

use qapmap_runtime::relay::{
    DEFAULT_INBOX_RETENTION, PRUNE_BATCH_SIZE, PRUNE_INTERVAL, prune_in_batches,
};
use qapmap_runtime::server::StopSignal;
use sqlx::PgPool;

/// How long an applied event's record is kept.
pub const APPLIED_EVENT_RETENTION: Duration = DEFAULT_INBOX_RETENTION;

/// Deletes the records of events applied more than `retention` ago, in
/// bounded batches. Returns how many.
pub async fn prune(pool: &PgPool, retention: Duration) -> sqlx::Result<u64> {
    prune_in_batches(|| {
        // `ctid = ANY(ARRAY(..))`, as the inbox prune: the chosen rows are
        // fetched by address, not joined against a scan of the table.
        sqlx::query(
            "DELETE FROM applied_equity_events WHERE ctid = ANY(ARRAY(
                 SELECT ctid FROM applied_equity_events
                 WHERE applied_at < now() - make_interval(secs => $1)
                 LIMIT $2))",
        )
        .bind(retention.as_secs_f64())
        .bind(PRUNE_BATCH_SIZE)
        .execute(pool)
    })
    .await
}

/// Prunes at start and every [`PRUNE_INTERVAL`] until `stop`. Every replica
/// may: the deletes only remove rows nobody needs, so two at once are
/// harmless. A failure is logged and tried again at the next pass.
pub async fn run(pool: PgPool, mut stop: StopSignal) -> anyhow::Result<()> {
    while !stop.is_stopped() {
        match prune(&pool, APPLIED_EVENT_RETENTION).await {
            Ok(0) => {}
            Ok(pruned) => tracing::info!(pruned, "pruned old records of applied equity events"),
            Err(error) => {
                tracing::warn!(error.message = %error, "pruning applied equity events failed")
            }
        }
        tokio::select! {
            _ = stop.stopped() => break,
            _ = tokio::time::sleep(PRUNE_INTERVAL) => {}
        }
    }
    Ok(())
}
