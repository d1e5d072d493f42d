//! The service's Postgres pool and its migrations.

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
        .application_name(settings.service.as_str());
    let pool = PgPoolOptions::new()
        .max_connections(settings.database_max_connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_lazy_with(options);

    let started = Instant::now();
    loop {
        match migrator.run(&pool).await {
            Ok(()) => return Ok(pool),
            Err(error) if started.elapsed() < STARTUP_WAIT && is_transient(&error) => {
                tracing::warn!(error.message = %error, "database not reachable yet; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(error) => return Err(error).context("running database migrations"),
        }
    }
}

fn is_transient(error: &sqlx::migrate::MigrateError) -> bool {
    matches!(
        error,
        sqlx::migrate::MigrateError::Execute(sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut)
    )
}

/// True when the database answers a trivial query within `timeout`.
pub async fn is_reachable(pool: &PgPool, timeout: Duration) -> bool {
    let probe = sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(pool);
    matches!(tokio::time::timeout(timeout, probe).await, Ok(Ok(1)))
}
