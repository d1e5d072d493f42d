//! Runs every measurement in order and prints the figures, then the
//! issue's floors next to them.

use std::time::{Duration, Instant};

use crate::backlog::BacklogSampler;
use crate::cap_table;
use crate::commits::{self, Counter};
use crate::config::{Config, Part};
use crate::cpu;
use crate::machine;
use crate::memory::{Sampler, mib};
use crate::sagas::{self, Phase};
use crate::scans::{self, ScanCounter};
use crate::stats::ms;
use crate::system::{self, System, date};
use crate::vesting;

/// The per-process RSS floor.
const RSS_FLOOR_KIB: u64 = 64 * 1024;

#[derive(Debug)]
struct Floor {
    figure: String,
    measured: String,
    floor: String,
    met: bool,
}

#[derive(Debug, Default)]
struct Floors(Vec<Floor>);

impl Floors {
    fn add(&mut self, figure: &str, measured: String, floor: &str, met: bool) {
        self.0.push(Floor {
            figure: figure.to_owned(),
            measured,
            floor: floor.to_owned(),
            met,
        });
    }

    fn print(&self, size: &str) {
        println!("\n== floors (issue 10) ==");
        if size == "tiny" {
            println!("(tiny size: seconds-long smoke run, the figures are indicative only)");
        }
        let width = self.0.iter().map(|f| f.figure.len()).max().unwrap_or(0);
        for floor in &self.0 {
            println!(
                "{:<width$}  {:>22}  floor {:<18} {}",
                floor.figure,
                floor.measured,
                floor.floor,
                if floor.met { "MET" } else { "MISSED" }
            );
        }
        let missed = self.0.iter().filter(|f| !f.met).count();
        println!(
            "{} of {} floors met, {missed} missed",
            self.0.len() - missed,
            self.0.len()
        );
    }
}

/// What the bench databases and consumers did while a phase ran.
#[derive(Debug, Clone)]
struct PhaseFigures {
    delta: i64,
    elapsed: Duration,
    /// Per database: equity, shareholder, ledger, orchestrator.
    each: [i64; 4],
    /// The consumers' backlog line (see `backlog`).
    backlog: String,
    /// The big tables' sequential scans line (see `scans`).
    scans: String,
    /// Rows written per saga by table (see `scans`).
    writes: Vec<String>,
    /// CPU per saga by process, from the phase's start to its last saga's end.
    cpu: cpu::Usage,
}

async fn settle_and_count_each(counter: &mut Counter) -> anyhow::Result<(i64, [i64; 4], Instant)> {
    tokio::time::sleep(counter.settle).await;
    let each = counter.commits_each().await?;
    let mut four = [0; 4];
    for (slot, value) in four.iter_mut().zip(&each) {
        *slot = *value;
    }
    Ok((each.iter().sum(), four, Instant::now()))
}

/// Commits one GetSaga poll costs (the harness's own reads).
#[derive(Debug, Clone, Copy)]
struct Calibration {
    per_poll: f64,
}

impl Calibration {
    /// Commits per saga: raw (everything the four databases committed while
    /// the phase ran, background included), and without the harness's polls.
    fn per_saga(&self, commits: &PhaseFigures, phase: &Phase) -> (f64, f64) {
        let sagas = phase.outcomes.len().max(1) as f64;
        let raw = commits.delta as f64 / sagas;
        let without_polls = (commits.delta as f64 - phase.polls as f64 * self.per_poll) / sagas;
        (raw, without_polls)
    }
}

fn print_phase(label: &str, phase: &Phase, commits: &PhaseFigures, calibration: &Calibration) {
    let (raw, marginal) = calibration.per_saga(commits, phase);
    println!("{label}");
    println!(
        "  completed sagas/s:   {:.1} /s ({} completed within the {} s window)",
        phase.throughput(),
        phase.completed_in_window(),
        phase.window.as_secs_f64()
    );
    println!(
        "  latency start->completed (server-stamped): {}",
        phase.latencies().summary().line()
    );
    let observed = phase.observed().summary();
    if observed.count > 0 {
        println!(
            "  latency as the client observed it (polls): {}",
            observed.line()
        );
    }
    println!("  outcomes:            {}", phase.errors_line());
    println!(
        "  GetSaga polls:       {} ({:.1} per saga)",
        phase.polls,
        phase.polls as f64 / phase.outcomes.len().max(1) as f64
    );
    println!(
        "  Postgres commits:    {} in {:.1} s = {raw:.1} per saga raw; {marginal:.1} per saga without the harness's GetSaga polls",
        commits.delta,
        commits.elapsed.as_secs_f64()
    );
    let sagas = phase.outcomes.len().max(1) as f64;
    println!(
        "  commits per saga by database (raw): equity {:.1}, shareholder {:.1}, ledger {:.1}, orchestrator {:.1}",
        commits.each[0] as f64 / sagas,
        commits.each[1] as f64 / sagas,
        commits.each[2] as f64 / sagas,
        commits.each[3] as f64 / sagas
    );
    println!("{}", commits.backlog);
    println!("{}", commits.scans);
    for line in &commits.writes {
        println!("{line}");
    }
    println!("{}", commits.cpu.line("saga"));
}

/// Commits per second per database over 3 s with no load from the harness.
async fn background(counter: &mut Counter, label: &str) -> anyhow::Result<()> {
    let (_, before, began) = settle_and_count_each(counter).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, after, ended) = settle_and_count_each(counter).await?;
    let seconds = (ended - began).as_secs_f64();
    let rate = |index: usize| (after[index] - before[index]) as f64 / seconds;
    println!(
        "{label}, no load: {:.1} commits/s (equity {:.1}, shareholder {:.1}, ledger {:.1}, orchestrator {:.1})",
        (0..4).map(rate).sum::<f64>(),
        rate(0),
        rate(1),
        rate(2),
        rate(3)
    );
    Ok(())
}

/// A read run's throughput, latency and errors.
fn print_reads(reads: &cap_table::Reads) {
    println!("  requests/s: {:.0} /s", reads.requests_per_second);
    println!("  latency:    {}", reads.latency.line());
    println!(
        "  errors:     {}{}",
        reads.errors,
        reads
            .first_error
            .as_deref()
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default()
    );
}

fn print_memory(label: &str, config: &Config, kib: &[u64]) {
    let parts: Vec<String> = config
        .processes
        .iter()
        .zip(kib)
        .map(|(p, k)| format!("{} {}", p.name, mib(*k)))
        .collect();
    println!("  RSS {label}: {}", parts.join(", "));
}

fn max_each(into: &mut [u64], from: &[u64]) {
    for (a, b) in into.iter_mut().zip(from) {
        *a = (*a).max(*b);
    }
}

async fn run_phase<F>(
    config: &Config,
    counter: &mut Counter,
    phase: F,
) -> anyhow::Result<(Phase, PhaseFigures)>
where
    F: std::future::Future<Output = Phase>,
{
    counter.vacuum_analyze(&config.admin_url).await?;
    let named: Vec<(String, String)> = config
        .processes
        .iter()
        .map(|process| (process.name.clone(), process.database.clone()))
        .collect();
    let mut scan_counter = ScanCounter::connect(&config.admin_url, &named).await?;
    // Before the commit count starts: the snapshot's reads commit too.
    let scans_before = scan_counter.snapshot().await?;
    let (before, before_each, began) = settle_and_count_each(counter).await?;
    let backlog = BacklogSampler::start(&config.nats_url, &config.namespace).await?;
    let cpu_before = cpu::snapshot(config);
    let phase = phase.await;
    let cpu = cpu::Usage::between(&cpu_before, &cpu::snapshot(config), phase.outcomes.len());
    let backlog = backlog.stop();
    let (after, after_each, ended) = settle_and_count_each(counter).await?;
    let scans_after = scan_counter.snapshot().await?;
    let scans = scans::line(&scans_before, &scans_after);
    let writes = scans::writes_lines(&scans_before, &scans_after, phase.outcomes.len());
    scan_counter.close().await?;
    let mut each = [0; 4];
    for (index, slot) in each.iter_mut().enumerate() {
        *slot = after_each[index] - before_each[index];
    }
    Ok((
        phase,
        PhaseFigures {
            delta: after - before,
            elapsed: ended - began,
            each,
            backlog,
            scans,
            writes,
            cpu,
        },
    ))
}

pub(crate) async fn run(config: &Config) -> anyhow::Result<bool> {
    let size = &config.size;
    machine::print(config).await;
    let system = System::connect(config).await?;
    let sampler = Sampler::start(config);
    let mut floors = Floors::default();
    let mut ok = true;
    let mut saga_peak = vec![0; config.processes.len()];
    let mut read_peak = vec![0; config.processes.len()];

    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = sampler.take_peaks();
    println!("\n== memory, idle (after start, before any load) ==");
    print_memory("idle", config, &idle);

    let mut counter =
        Counter::connect(&config.admin_url, config.databases(), size.stats_settle).await?;
    // The most backends the processes held at the end of a loaded phase.
    let mut peak_connections = 0;

    if config.runs(Part::Sagas) {
        // (a) exercise sagas.
        println!("\n== exercise sagas ==");
        let began = Instant::now();
        let companies = system::companies(&system, size.companies).await?;
        println!(
            "set-up: {} companies x 1 grant of 900,000 options (4y/1y cliff from 2020-01-01, fully vested) in {:.1} s; each saga exercises 1 option",
            companies.len(),
            began.elapsed().as_secs_f64()
        );
        background(&mut counter, "background after set-up, before any saga").await?;
        let warm = sagas::warm_up(&system, &companies, size.saga_patience).await;
        println!("warm-up: {}", warm.errors_line());
        if warm.failures() > 0 {
            println!("FAILED: warm-up sagas did not all complete; stopping");
            sampler.stop();
            return Ok(false);
        }
        let autovacuum = counter.vacuum_analyze(&config.admin_url).await?;
        println!(
            "VACUUM ANALYZE in the four databases after the warm-up and before each timed phase, as autovacuum keeps them (this server: autovacuum = {autovacuum})"
        );
        background(&mut counter, "background after the warm-up").await?;
        let saga_id = sagas::one(&system, &companies[0], size.saga_patience).await?;
        let polls = 1000;
        let (_, before_each, _) = settle_and_count_each(&mut counter).await?;
        sagas::poll_many(&system, &companies[0], &saga_id, polls).await?;
        let (_, after_each, _) = settle_and_count_each(&mut counter).await?;
        // The orchestrator's database alone; its background is small beside 1,000 polls.
        let per_poll = (after_each[3] - before_each[3]) as f64 / polls as f64;
        let calibration = Calibration { per_poll };
        println!(
            "calibration: {per_poll:.2} commits per GetSaga poll (1,000 polls of a finished saga)"
        );

        sampler.take_peaks();
        let mut closed = Vec::new();
        for &concurrency in &size.concurrencies {
            let (phase, commits) = run_phase(
                config,
                &mut counter,
                sagas::closed_loop(
                    &system,
                    &companies,
                    concurrency,
                    size.closed_duration,
                    size.saga_patience,
                ),
            )
            .await?;
            print_phase(
                &format!(
                    "closed loop, {concurrency} in flight, {} s:",
                    size.closed_duration.as_secs_f64()
                ),
                &phase,
                &commits,
                &calibration,
            );
            let peak = sampler.take_peaks();
            print_memory("peak", config, &peak);
            max_each(&mut saga_peak, &peak);
            peak_connections = peak_connections.max(counter.connections().await?);
            ok &= phase.failures() == 0;
            let (_, marginal) = calibration.per_saga(&commits, &phase);
            closed.push((
                concurrency,
                phase.throughput(),
                marginal,
                commits.cpu.machine_ms(),
            ));
        }
        background(&mut counter, "background after the closed loops").await?;
        let (best_concurrency, max_rate, _, best_cpu_ms) = closed
            .iter()
            .copied()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap_or((0, 0.0, 0.0, 0.0));
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        println!(
            "CPU budget: 300 sagas/s on {cores} cores leaves {:.2} ms of CPU per saga for everything; the best closed loop used {best_cpu_ms:.2} ms",
            cores as f64 * 1000.0 / 300.0
        );
        floors.add(
            "exercise sagas sustained (best closed loop)",
            format!("{max_rate:.1}/s @{best_concurrency}"),
            ">= 300/s",
            max_rate >= 300.0,
        );

        let rate = (max_rate / 2.0).max(1.0);
        let (open, open_commits) = run_phase(
            config,
            &mut counter,
            sagas::open_loop(
                &system,
                &companies,
                rate,
                size.open_duration,
                size.saga_patience,
            ),
        )
        .await?;
        print_phase(
            &format!(
                "open loop, {rate:.1} arrivals/s (half the best closed loop) for {} s:",
                size.open_duration.as_secs_f64()
            ),
            &open,
            &open_commits,
            &calibration,
        );
        println!(
            "  all {} sagas resolved {:.1} s after the first arrival (arrivals span {:.1} s)",
            open.outcomes.len(),
            open.elapsed.as_secs_f64(),
            size.open_duration.as_secs_f64()
        );
        for line in crate::step_times::lines(&open) {
            println!("{line}");
        }
        let peak = sampler.take_peaks();
        print_memory("peak", config, &peak);
        max_each(&mut saga_peak, &peak);
        peak_connections = peak_connections.max(counter.connections().await?);
        ok &= open.failures() == 0;
        let open_p99 = open.latencies().summary().p99;
        background(&mut counter, "background after the open loop").await?;
        floors.add(
            "exercise p99 at half the max rate (open loop)",
            ms(open_p99),
            "<= 100 ms",
            open_p99 <= Duration::from_millis(100) && open.completed_in_window() > 0,
        );
        let (open_raw, _) = calibration.per_saga(&open_commits, &open);
        floors.add(
            "Postgres commits per saga (open loop, raw)",
            format!("{open_raw:.1}"),
            "<= 12",
            open_raw <= 12.0,
        );
        let pool_total = config.pool_total();

        // (b) the durable-commit bound.
        println!(
            "\n== durable-commit bound (one small INSERT per transaction, scratch database) =="
        );
        for &(concurrency, saga_rate, commits_per_saga, _) in &closed {
            let bound = commits::durable_commit_bound(
                &config.scratch_url,
                concurrency,
                size.commit_duration,
            )
            .await?;
            let sagas_bound = bound.commits_per_second / commits_per_saga.max(1.0);
            println!(
                "{} connections: {:.0} commits/s (p99 {}); at {commits_per_saga:.1} commits per saga (that closed loop, without the harness's polls) that bounds sagas at {sagas_bound:.0}/s; measured {saga_rate:.1}/s = {:.2} of the bound",
                bound.concurrency,
                bound.commits_per_second,
                ms(bound.p99),
                saga_rate / sagas_bound
            );
        }
        let bound = commits::durable_commit_bound(
            &config.scratch_url,
            pool_total as usize,
            size.commit_duration,
        )
        .await?;
        println!(
            "{} connections (the processes' total pool): {:.0} commits/s (p99 {})",
            bound.concurrency,
            bound.commits_per_second,
            ms(bound.p99)
        );
    }

    if config.runs(Part::CapTable) {
        // (c) cap table reads.
        println!("\n== cap table reads ==");
        let holders = cap_table::company_with_holders(&system, size.holders).await?;
        println!(
            "set-up: {} holders issued with IssueShares (16 in parallel) in {:.1} s ({:.0}/s)",
            size.holders,
            holders.elapsed.as_secs_f64(),
            size.holders as f64 / holders.elapsed.as_secs_f64()
        );
        // As autovacuum would after the set-up's inserts: without
        // statistics the past-date read joined by scanning every journal
        // line (40,000 at full size) on each read.
        let autovacuum = counter.vacuum_analyze(&config.admin_url).await?;
        println!(
            "VACUUM ANALYZE in the four databases after the set-up (this server: autovacuum = {autovacuum})"
        );
        sampler.take_peaks();
        // The last two runs are not judged: one caller at a time shows the
        // uncached read's own latency, without 63 others queued before it;
        // a future date reads the changes dated up to it on every call
        // (none here) and adds them to today's table.
        for (label, as_of, concurrency, judged) in [
            (
                "cached (today: the ledger's memory)",
                None,
                size.read_concurrency,
                Some(ReadFloor::Cached),
            ),
            (
                "uncached (as_of 2025-06-01: computed on every read, today's positions less the later changes kept beside them)",
                date(2025, 6, 1),
                size.read_concurrency,
                Some(ReadFloor::Uncached),
            ),
            (
                "uncached (as_of 2025-06-01), one caller",
                date(2025, 6, 1),
                1,
                None,
            ),
            (
                "future date (as_of 2027-06-01: today's positions plus the changes dated up to it, read from Postgres on every read)",
                date(2027, 6, 1),
                size.read_concurrency,
                None,
            ),
        ] {
            let (reader_config, company_id, duration) = (
                config.clone(),
                holders.company_id.clone(),
                size.read_duration,
            );
            let cpu_before = cpu::snapshot(config);
            let reads = tokio::task::spawn_blocking(move || {
                cap_table::read_load_on_one_thread(
                    &reader_config,
                    &company_id,
                    as_of,
                    concurrency,
                    duration,
                )
            })
            .await??;
            let cpu = cpu::Usage::between(&cpu_before, &cpu::snapshot(config), reads.latency.count);
            println!(
                "{label}, {concurrency} concurrent, {} s, page of {} rows:",
                size.read_duration.as_secs_f64(),
                reads.rows
            );
            print_reads(&reads);
            println!("{}", cpu.line("read"));
            let peak = sampler.take_peaks();
            print_memory("peak", config, &peak);
            max_each(&mut read_peak, &peak);
            peak_connections = peak_connections.max(counter.connections().await?);
            ok &= reads.errors == 0;
            let Some(judged) = judged else {
                continue;
            };
            if judged == ReadFloor::Cached {
                floors.add(
                    "cached cap table throughput",
                    format!("{:.0} req/s", reads.requests_per_second),
                    ">= 20000 req/s",
                    reads.requests_per_second >= 20_000.0,
                );
                floors.add(
                    "cached cap table p99",
                    ms(reads.latency.p99),
                    "<= 5 ms",
                    reads.latency.p99 <= Duration::from_millis(5),
                );
            } else {
                floors.add(
                    &format!("uncached cap table p99 ({} holders)", size.holders),
                    ms(reads.latency.p99),
                    "<= 50 ms",
                    reads.latency.p99 <= Duration::from_millis(50),
                );
            }
        }
        // Not judged: the first past read after a change, which reads the
        // later changes from Postgres.
        let reads = size.cold_reads;
        let (reader_config, company_id) = (config.clone(), holders.company_id.clone());
        let cold = tokio::task::spawn_blocking(move || {
            cap_table::cold_reads_on_one_thread(
                &reader_config,
                &company_id,
                chrono::NaiveDate::from_ymd_opt(2025, 6, 1).expect("date"),
                reads,
            )
        })
        .await??;
        println!(
            "uncached, cold (later changes read from Postgres on every read: {reads} reads, each a day earlier than the last, from 2025-05-31), one caller:"
        );
        print_reads(&cold);
        ok &= cold.errors == 0;
    }

    if config.runs(Part::Vesting) {
        // (d) vesting.
        println!("\n== vesting (in-process, vested_on per award) ==");
        let awards = size.vesting_awards;
        let result = tokio::task::spawn_blocking(move || vesting::run(awards)).await??;
        let per_million = result.single_thread.as_secs_f64() * 1_000_000.0 / result.awards as f64;
        println!(
            "{} awards: {} on one thread ({:.0} awards/s); {} on {} threads; vested_as_of alone over precomputed schedules: {}; total vested {}",
            result.awards,
            ms(result.single_thread),
            result.awards as f64 / result.single_thread.as_secs_f64(),
            ms(result.all_cores),
            result.threads,
            ms(result.sum_only),
            result.total_vested
        );
        floors.add(
            "1,000,000 vesting evaluations, one thread",
            if result.awards == 1_000_000 {
                format!("{per_million:.2} s")
            } else {
                format!("{per_million:.2} s (scaled)")
            },
            "<= 1 s",
            per_million <= 1.0,
        );
    }

    if peak_connections > 0 {
        // Pools are each process's QAPMAP_DATABASE_MAX_CONNECTIONS; besides them each
        // relay's LISTEN session holds a pool connection, each consumer a
        // lock session of its own, and the ledger a change listener.
        println!(
            "\n== Postgres connections ==\npools {}; backends on the four databases, most seen after a loaded phase: {peak_connections}",
            config.pools_line()
        );
        floors.add(
            "Postgres connections, all four processes",
            peak_connections.to_string(),
            "8-16 (small)",
            (8..=16).contains(&peak_connections),
        );
    }

    // (e) memory.
    println!("\n== memory (VmRSS from /proc/<pid>/status, sampled every 100 ms) ==");
    print_memory("idle", config, &idle);
    print_memory("peak under saga load", config, &saga_peak);
    print_memory("peak under cap table reads", config, &read_peak);
    let mut load_peak = saga_peak.clone();
    max_each(&mut load_peak, &read_peak);
    for (process, peak) in config.processes.iter().zip(&load_peak) {
        floors.add(
            &format!("RSS under load, {}", process.name),
            mib(*peak),
            "<= 64 MiB",
            *peak <= RSS_FLOOR_KIB,
        );
    }
    sampler.stop();

    floors.print(size.name);
    if !ok {
        println!("\nFAILED: a saga did not complete or a call failed (see the outcomes above)");
    }
    Ok(ok)
}

/// Which floor a cap-table read run is judged against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadFloor {
    Cached,
    Uncached,
}
