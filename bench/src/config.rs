//! What run.sh tells the benchmark: where the processes are, their pids and
//! databases, and the size to run.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

/// How big each measurement is.
#[derive(Debug, Clone)]
pub(crate) struct Size {
    pub(crate) name: &'static str,
    /// Companies with one vested grant each, for the exercise sagas.
    pub(crate) companies: usize,
    /// In-flight sagas of each closed-loop run.
    pub(crate) concurrencies: Vec<usize>,
    pub(crate) closed_duration: Duration,
    pub(crate) open_duration: Duration,
    pub(crate) commit_duration: Duration,
    /// Holders of the cap-table company.
    pub(crate) holders: usize,
    pub(crate) read_duration: Duration,
    pub(crate) read_concurrency: usize,
    /// Past reads that each need the later changes from Postgres (one day
    /// earlier each, all after the holders' issuance on 2024-01-02).
    pub(crate) cold_reads: u64,
    pub(crate) vesting_awards: usize,
    /// How long a saga may take before it counts as failed.
    pub(crate) saga_patience: Duration,
    /// The wait before each snapshot of the commit counters.
    pub(crate) stats_settle: Duration,
}

impl Size {
    pub(crate) fn full() -> Self {
        Self {
            name: "full",
            companies: 100,
            concurrencies: vec![8, 32, 64],
            closed_duration: Duration::from_secs(15),
            open_duration: Duration::from_secs(20),
            commit_duration: Duration::from_secs(5),
            holders: 10_000,
            read_duration: Duration::from_secs(10),
            read_concurrency: 64,
            cold_reads: 500,
            vesting_awards: 1_000_000,
            saga_patience: Duration::from_secs(60),
            stats_settle: crate::commits::STATS_SETTLE_FULL,
        }
    }

    /// Seconds long: keeps the harness compiling and working in CI.
    pub(crate) fn tiny() -> Self {
        Self {
            name: "tiny",
            companies: 8,
            concurrencies: vec![4, 8],
            closed_duration: Duration::from_secs(3),
            open_duration: Duration::from_secs(3),
            commit_duration: Duration::from_secs(1),
            holders: 300,
            read_duration: Duration::from_secs(2),
            // Not 64: on debug binaries sharing a busy machine, 64 uncached
            // reads queued on the ledger's 3 connections waited past the
            // pool's 3 s acquire timeout (UNAVAILABLE). The smoke run checks
            // the harness, not the saturation point.
            read_concurrency: 16,
            cold_reads: 20,
            vesting_awards: 100_000,
            saga_patience: Duration::from_secs(30),
            stats_settle: crate::commits::STATS_SETTLE_TINY,
        }
    }
}

/// One of the four processes.
#[derive(Debug, Clone)]
pub(crate) struct Process {
    pub(crate) name: String,
    pub(crate) pid: u32,
    pub(crate) endpoint: String,
    /// The database (name) it owns.
    pub(crate) database: String,
}

/// A measurement `QAPMAP_BENCH_ONLY` can single out (while working on one of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    Sagas,
    CapTable,
    Vesting,
}

#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) size: Size,
    /// `None`: every measurement.
    pub(crate) only: Option<Part>,
    /// equity, shareholder, ledger, orchestrator.
    pub(crate) processes: Vec<Process>,
    /// Superuser URL to the `postgres` database (reads pg_stat_database).
    pub(crate) admin_url: String,
    /// A bench database of its own for the commit-bound loop.
    pub(crate) scratch_url: String,
    pub(crate) nats_url: String,
    /// The processes' NATS namespace (streams and consumers).
    pub(crate) namespace: String,
    pub(crate) redis_url: String,
    /// QAPMAP_DATABASE_MAX_CONNECTIONS of each process.
    /// `QAPMAP_DATABASE_MAX_CONNECTIONS` of equity, shareholder, ledger, orchestrator.
    pub(crate) pools: Vec<u32>,
    /// Where `qapmap-bench keys` put the signing key the processes trust.
    pub(crate) key_dir: PathBuf,
}

fn var(name: &str) -> anyhow::Result<String> {
    std::env::var(name).with_context(|| format!("{name} is not set (run bench/run.sh)"))
}

impl Config {
    pub(crate) fn from_env() -> anyhow::Result<Self> {
        let size = match var("QAPMAP_BENCH_SIZE")?.as_str() {
            "tiny" => Size::tiny(),
            "full" => Size::full(),
            other => anyhow::bail!("QAPMAP_BENCH_SIZE must be tiny or full, not {other}"),
        };
        let mut processes = Vec::new();
        for name in ["equity", "shareholder", "ledger", "orchestrator"] {
            let upper = name.to_ascii_uppercase();
            processes.push(Process {
                name: name.to_owned(),
                pid: var(&format!("QAPMAP_BENCH_{upper}_PID"))?
                    .parse()
                    .with_context(|| format!("QAPMAP_BENCH_{upper}_PID"))?,
                endpoint: format!(
                    "http://127.0.0.1:{}",
                    var(&format!("QAPMAP_BENCH_{upper}_PORT"))?
                ),
                database: var(&format!("QAPMAP_BENCH_{upper}_DATABASE"))?,
            });
        }
        let only = match std::env::var("QAPMAP_BENCH_ONLY")
            .unwrap_or_default()
            .as_str()
        {
            "" => None,
            "sagas" => Some(Part::Sagas),
            "cap-table" => Some(Part::CapTable),
            "vesting" => Some(Part::Vesting),
            other => {
                anyhow::bail!("QAPMAP_BENCH_ONLY must be sagas, cap-table or vesting, not {other}")
            }
        };
        Ok(Self {
            size,
            only,
            processes,
            admin_url: var("QAPMAP_PG_ADMIN_URL")?,
            scratch_url: var("QAPMAP_BENCH_SCRATCH_URL")?,
            nats_url: var("QAPMAP_NATS_URL_BASE")?,
            namespace: var("QAPMAP_BENCH_NAMESPACE")?,
            redis_url: var("QAPMAP_REDIS_URL_BASE")?,
            pools: var("QAPMAP_BENCH_POOLS")?
                .split_whitespace()
                .map(str::parse)
                .collect::<Result<Vec<u32>, _>>()
                .context("QAPMAP_BENCH_POOLS")?,
            key_dir: PathBuf::from(var("QAPMAP_BENCH_KEY_DIR")?),
        })
    }

    /// Whether this run measures `part` (all parts unless `QAPMAP_BENCH_ONLY` names one).
    pub(crate) fn runs(&self, part: Part) -> bool {
        self.only.is_none_or(|only| only == part)
    }

    pub(crate) fn pool_total(&self) -> u32 {
        self.pools.iter().sum()
    }

    /// "2+2+3+2 = 9": the pools as configured.
    pub(crate) fn pools_line(&self) -> String {
        let parts: Vec<String> = self.pools.iter().map(u32::to_string).collect();
        format!("{} = {}", parts.join("+"), self.pool_total())
    }

    pub(crate) fn process(&self, name: &str) -> &Process {
        self.processes
            .iter()
            .find(|process| process.name == name)
            .expect("the four processes are configured")
    }

    pub(crate) fn databases(&self) -> Vec<String> {
        self.processes.iter().map(|p| p.database.clone()).collect()
    }
}
