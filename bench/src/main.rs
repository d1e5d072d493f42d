//! QapMap's benchmark harness. `bench/run.sh` builds the release binaries,
//! starts the four processes on fresh databases and a fresh NATS namespace,
//! and runs `qapmap-bench run` against them; see bench/README.md.
//!
//! Subcommands:
//! - `run`: every measurement, configured by `QAPMAP_BENCH_*` variables
//!   (set by run.sh); exits non-zero when a saga fails or a call errs.
//! - `create-databases ADMIN_URL NAME...` / `drop-databases ADMIN_URL NAME...`
//! - `delete-streams NATS_URL NAMESPACE`: the streams of one namespace.
//! - `keys DIR`: a fresh Ed25519 signing key and its `jwks.json` in `DIR`,
//!   for the processes to verify the bench's token with.
//! - `vesting [AWARDS]`: the vesting measurement alone (no services), e.g.
//!   under `perf record`.
//! - `nats-pulls NATS_URL NATS_SERVER_PID [MESSAGES]`: the NATS server's CPU
//!   for a message pulled alone, with a fetch per pull and with one
//!   subscription (a probe; see `nats_pulls`).

mod backlog;
mod cap_table;
mod commits;
mod config;
mod cpu;
mod keys;
mod machine;
mod memory;
mod nats_pulls;
mod report;
mod sagas;
mod scans;
mod stats;
mod step_times;
mod system;
mod vesting;

use std::process::ExitCode;

/// The load generator shares the two cores with the services: its
/// allocations should cost as little as theirs (mimalloc there too).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use sqlx::{Connection, PgConnection};

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("run") | None => run().await,
        Some("create-databases") => databases(&args[1..], true).await.map(|()| true),
        Some("drop-databases") => databases(&args[1..], false).await.map(|()| true),
        Some("delete-streams") => delete_streams(&args[1..]).await.map(|()| true),
        Some("keys") => match &args[1..] {
            [dir] => keys::write(dir.as_ref()).map(|()| true),
            _ => Err(anyhow::anyhow!("usage: keys DIR")),
        },
        Some("vesting") => vesting_only(&args[1..]).map(|()| true),
        Some("nats-pulls") => nats_pulls_only(&args[1..]).await.map(|()| true),
        Some(other) => Err(anyhow::anyhow!(
            "unknown subcommand {other}; use run, create-databases, drop-databases, delete-streams, keys, vesting or nats-pulls"
        )),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("qapmap-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Every measurement; `Ok(false)` when a saga or call failed.
async fn run() -> anyhow::Result<bool> {
    let config = config::Config::from_env()?;
    report::run(&config).await
}

async fn databases(args: &[String], create: bool) -> anyhow::Result<()> {
    let (admin_url, names) = args
        .split_first()
        .ok_or_else(|| anyhow::anyhow!("usage: ADMIN_URL NAME..."))?;
    let mut connection = PgConnection::connect(admin_url).await?;
    for name in names {
        anyhow::ensure!(
            name.starts_with("qapmap_bench_")
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "refusing database name {name}: bench databases are qapmap_bench_[a-z0-9_]*"
        );
        let sql = if create {
            format!("CREATE DATABASE \"{name}\"")
        } else {
            format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")
        };
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut connection)
            .await?;
    }
    Ok(())
}

fn vesting_only(args: &[String]) -> anyhow::Result<()> {
    let awards = args.first().map_or(Ok(1_000_000), |a| a.parse())?;
    let result = vesting::run(awards)?;
    println!(
        "{} awards: {} on one thread; {} on {} threads; vested_as_of alone: {}",
        result.awards,
        stats::ms(result.single_thread),
        stats::ms(result.all_cores),
        result.threads,
        stats::ms(result.sum_only)
    );
    Ok(())
}

async fn nats_pulls_only(args: &[String]) -> anyhow::Result<()> {
    let (url, pid, messages) = match args {
        [url, pid] => (url, pid, "5000"),
        [url, pid, messages] => (url, pid, messages.as_str()),
        _ => anyhow::bail!("usage: nats-pulls NATS_URL NATS_SERVER_PID [MESSAGES]"),
    };
    let pid = pid
        .parse()
        .map_err(|error| anyhow::anyhow!("NATS_SERVER_PID {pid:?}: {error}"))?;
    let messages = messages
        .parse()
        .map_err(|error| anyhow::anyhow!("MESSAGES {messages:?}: {error}"))?;
    nats_pulls::run(url, pid, messages).await
}

async fn delete_streams(args: &[String]) -> anyhow::Result<()> {
    let [url, namespace] = args else {
        anyhow::bail!("usage: delete-streams NATS_URL NAMESPACE");
    };
    anyhow::ensure!(
        namespace.starts_with("qbench"),
        "refusing namespace {namespace}: bench namespaces start with qbench"
    );
    let client = async_nats::connect(url.as_str()).await?;
    let jetstream = async_nats::jetstream::new(client);
    let subjects = qapmap_runtime::messaging::Subjects::new(namespace.clone());
    qapmap_runtime::messaging::delete_streams(&jetstream, &subjects).await;
    Ok(())
}
