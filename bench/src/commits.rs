//! Postgres commits: `pg_stat_database.xact_commit` summed over the four
//! bench databases, and the machine's durable-commit bound (one small
//! insert per transaction, fsync on, at a given concurrency).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection};

/// How long a snapshot of the counters waits for the work before it to
/// show. A backend reports its counters at the end of a transaction at most
/// once a second, and one that went idle with counts not yet reported
/// reports them 10 s later (PostgreSQL 15: `PGSTAT_IDLE_INTERVAL`; measured
/// here: 200 commits of an idle session appeared after 10.4 s). Waiting
/// 1.5 s, as the harness did until 2026-11-22, missed the last commits of
/// every pooled connection that went idle after a phase, unless something
/// else (a health probe's `SELECT 1`) ran on it. Full runs wait past the
/// idle interval; the tiny CI run, whose figures are indicative only, does
/// not.
pub(crate) const STATS_SETTLE_FULL: Duration = Duration::from_millis(11_000);
pub(crate) const STATS_SETTLE_TINY: Duration = Duration::from_millis(1_500);

#[derive(Debug)]
pub(crate) struct Counter {
    connection: PgConnection,
    databases: Vec<String>,
    /// The wait before each snapshot (see [`STATS_SETTLE_FULL`]).
    pub(crate) settle: Duration,
}

impl Counter {
    pub(crate) async fn connect(
        admin_url: &str,
        databases: Vec<String>,
        settle: Duration,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            connection: PgConnection::connect(admin_url).await?,
            databases,
            settle,
        })
    }

    /// Server processes connected to the bench's databases now: every pool
    /// connection, listener and consumer lock session of the four processes.
    pub(crate) async fn connections(&mut self) -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = ANY($1) AND application_name <> $2",
        )
        .bind(&self.databases)
        .bind(crate::scans::APPLICATION_NAME)
        .fetch_one(&mut self.connection)
        .await?)
    }

    /// What autovacuum would have done by now, in every bench database:
    /// `VACUUM ANALYZE`. Fresh databases have no planner statistics, and a
    /// plan a backend cached while a table was a page or two (a sequential
    /// scan) stays cached until the table's statistics change. Autovacuum
    /// refreshes them as tables grow (about once a minute); the Postgres on
    /// the development machine runs with `autovacuum = off`, where without
    /// this the later phases ran on plans made for empty tables (seq scans of
    /// thousands of journal entries per saga). Returns the server's
    /// `autovacuum` setting.
    pub(crate) async fn vacuum_analyze(&mut self, admin_url: &str) -> anyhow::Result<String> {
        for database in &self.databases {
            let mut connection = crate::scans::connect_to(admin_url, database).await?;
            sqlx::raw_sql("VACUUM ANALYZE")
                .execute(&mut connection)
                .await?;
            connection.close().await?;
        }
        Ok(sqlx::query_scalar("SELECT current_setting('autovacuum')")
            .fetch_one(&mut self.connection)
            .await?)
    }

    /// Per database, in the order given.
    pub(crate) async fn commits_each(&mut self) -> anyhow::Result<Vec<i64>> {
        let mut each = Vec::with_capacity(self.databases.len());
        for database in &self.databases {
            let value: i64 = sqlx::query_scalar(
                "SELECT COALESCE(sum(xact_commit), 0)::bigint FROM pg_stat_database
                 WHERE datname = $1",
            )
            .bind(database)
            .fetch_one(&mut self.connection)
            .await?;
            each.push(value);
        }
        Ok(each)
    }
}

/// The durable-commit loop's result at one concurrency.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bound {
    pub(crate) concurrency: usize,
    pub(crate) commits_per_second: f64,
    pub(crate) p99: Duration,
}

/// `concurrency` connections each committing one small insert per
/// transaction for `duration`.
pub(crate) async fn durable_commit_bound(
    scratch_url: &str,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<Bound> {
    let pool = PgPoolOptions::new()
        .max_connections(u32::try_from(concurrency)?)
        .min_connections(u32::try_from(concurrency)?)
        .acquire_timeout(Duration::from_secs(10))
        .connect(scratch_url)
        .await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS bench_commit (
             id bigserial PRIMARY KEY, worker int NOT NULL, n bigint NOT NULL, at timestamptz NOT NULL DEFAULT now())",
    )
    .execute(&pool)
    .await?;
    // Open every connection before timing.
    let mut held = Vec::new();
    for _ in 0..concurrency {
        held.push(pool.acquire().await?);
    }
    drop(held);
    let count = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + duration;
    let mut workers = Vec::new();
    for worker in 0..concurrency {
        let pool = pool.clone();
        let count = count.clone();
        workers.push(tokio::spawn(async move {
            let mut latencies = crate::stats::Latencies::default();
            let mut n: i64 = 0;
            // Bounded by time and by count.
            while Instant::now() < deadline && n < 10_000_000 {
                let began = Instant::now();
                sqlx::query("INSERT INTO bench_commit (worker, n) VALUES ($1, $2)")
                    .bind(i32::try_from(worker).unwrap_or(i32::MAX))
                    .bind(n)
                    .execute(&pool)
                    .await?;
                latencies.record(began.elapsed());
                count.fetch_add(1, Ordering::Relaxed);
                n += 1;
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = crate::stats::Latencies::default();
    for worker in workers {
        latencies.extend(worker.await??);
    }
    let elapsed = start.elapsed();
    sqlx::query("TRUNCATE bench_commit").execute(&pool).await?;
    pool.close().await;
    Ok(Bound {
        concurrency,
        commits_per_second: count.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64(),
        p99: latencies.summary().p99,
    })
}
