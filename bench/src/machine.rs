//! The machine the figures were taken on.

use sqlx::{Connection, PgConnection};

use crate::config::Config;

fn proc_field(path: &str, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find(|line| line.starts_with(key))
        .and_then(|line| line.split_once(':'))
        .map(|(_, value)| value.trim().to_owned())
}

async fn postgres_version(config: &Config) -> anyhow::Result<String> {
    let mut connection = PgConnection::connect(&config.admin_url).await?;
    let version: String = sqlx::query_scalar("SELECT current_setting('server_version')")
        .fetch_one(&mut connection)
        .await?;
    let settings: (String, String, String, String) = sqlx::query_as(
        "SELECT current_setting('fsync'), current_setting('synchronous_commit'),
                current_setting('max_connections'), current_setting('shared_buffers')",
    )
    .fetch_one(&mut connection)
    .await?;
    Ok(format!(
        "{version} (fsync={}, synchronous_commit={}, max_connections={}, shared_buffers={})",
        settings.0, settings.1, settings.2, settings.3
    ))
}

async fn nats_version(config: &Config) -> anyhow::Result<String> {
    let client = async_nats::connect(config.nats_url.as_str()).await?;
    let info = client.server_info();
    Ok(format!("{} (JetStream {})", info.version, info.jetstream))
}

async fn redis_version(config: &Config) -> anyhow::Result<String> {
    let client = redis::Client::open(config.redis_url.as_str())?;
    let mut connection = client.get_multiplexed_async_connection().await?;
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut connection)
        .await?;
    Ok(info
        .lines()
        .find_map(|line| line.strip_prefix("redis_version:"))
        .unwrap_or("unknown")
        .trim()
        .to_owned())
}

fn or_error(result: anyhow::Result<String>) -> String {
    result.unwrap_or_else(|error| format!("unknown ({error})"))
}

pub(crate) async fn print(config: &Config) {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("== machine ==");
    println!(
        "date (UTC):      {}",
        chrono::Utc::now().format("%Y-%m-%d %H:%M:%S")
    );
    println!("nproc:           {cpus}");
    println!(
        "CPU:             {}",
        proc_field("/proc/cpuinfo", "model name").unwrap_or_else(|| "unknown".into())
    );
    println!(
        "memory:          {}",
        proc_field("/proc/meminfo", "MemTotal").unwrap_or_else(|| "unknown".into())
    );
    println!(
        "kernel:          {}",
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
    );
    println!(
        "load average:    {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    println!(
        "Postgres:        {}",
        or_error(postgres_version(config).await)
    );
    println!("NATS:            {}", or_error(nats_version(config).await));
    println!("Redis:           {}", or_error(redis_version(config).await));
    println!(
        "pools:           QAPMAP_DATABASE_MAX_CONNECTIONS (equity+shareholder+ledger+orchestrator) {} pooled connections (all backends: see \"Postgres connections\")",
        config.pools_line()
    );
    println!("size:            {}", config.size.name);
}
