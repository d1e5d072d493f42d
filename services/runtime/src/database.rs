//! The service's Postgres pool and its migrations: the runtime's shared
//! tables first, then the service's own.

use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::Context;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::settings::Settings;

/// How long start-up waits for Postgres before giving up; covers a database
/// container that starts at the same time as the service.
const STARTUP_WAIT: Duration = Duration::from_secs(30);
/// How long a request waits for a pooled connection before UNAVAILABLE.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// Connects to the service's database and applies its migrations.
///
/// sqlx takes an advisory lock while migrating, so several replicas can start
/// at once.
pub async fn connect_and_migrate(
    settings: &Settings,
    migrator: &Migrator,
) -> anyhow::Result<PgPool> {
    let options = PgConnectOptions::from_str(&settings.database_url)
        .context("QAPMAP_DATABASE_URL is not a valid Postgres URL")?
        .application_name(settings.service.as_str())
        // No statement outlives the longest call deadline: a stuck query
        // fails (and releases its locks) instead of holding a connection.
        .options([(
            "statement_timeout",
            settings.request_timeout.as_millis().to_string(),
        )]);
    let pool = PgPoolOptions::new()
        .max_connections(settings.database_max_connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_lazy_with(options);

    let runtime_migrator = runtime_migrator();
    let started = Instant::now();
    loop {
        let result = match runtime_migrator.run(&pool).await {
            Ok(()) => migrator.run(&pool).await,
            Err(error) => Err(error),
        };
        match result {
            Ok(()) => return Ok(pool),
            Err(error) if started.elapsed() < STARTUP_WAIT && is_transient(&error) => {
                tracing::warn!(error.message = %error, "database not reachable yet; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(error) => return Err(error).context("running database migrations"),
        }
    }
}

/// The tables every service shares (outbox, inbox, dead letters), tracked in
/// their own migrations table so service migrations never collide with them.
pub fn runtime_migrator() -> Migrator {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.dangerous_set_table_name("_qapmap_runtime_migrations");
    migrator
}

fn is_transient(error: &sqlx::migrate::MigrateError) -> bool {
    matches!(
        error,
        sqlx::migrate::MigrateError::Execute(sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut)
    )
}

/// True when the database answers within `timeout` on a pooled
/// connection. A protocol-level ping (Sync, answered by ReadyForQuery) rather
/// than `SELECT 1`: the server answers without running a statement, so the
/// health probes (every second, in every process) add no transactions to
/// the database's commit count.
pub async fn is_reachable(pool: &PgPool, timeout: Duration) -> bool {
    let probe = async {
        let mut connection = pool.acquire().await?;
        sqlx::Connection::ping(&mut *connection).await
    };
    matches!(tokio::time::timeout(timeout, probe).await, Ok(Ok(())))
}
