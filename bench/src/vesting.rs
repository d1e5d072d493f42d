//! The pure vesting engine in-process: for each award, the quantity vested
//! on a date from its terms and facts (`qapmap_equity::vesting::vested_on`,
//! equal to `vested_as_of(&schedule(..), as_of)`) — what equity computes for
//! an award's position.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use qapmap_equity::vesting::{self, Tranche, VestingFacts, VestingTerms};
use rust_decimal::Decimal;

#[derive(Debug)]
pub(crate) struct Vesting {
    pub(crate) awards: usize,
    /// vested_on (terms + facts -> vested quantity) per award, one thread.
    pub(crate) single_thread: Duration,
    /// The same split over every core.
    pub(crate) all_cores: Duration,
    pub(crate) threads: usize,
    /// vested_as_of alone over precomputed schedules, one thread.
    pub(crate) sum_only: Duration,
    /// Check value: total vested over all awards.
    pub(crate) total_vested: Decimal,
}

fn terms() -> anyhow::Result<VestingTerms> {
    qapmap_equity::convert::vesting_terms(&crate::system::four_year_one_year_cliff())
        .map_err(|error| anyhow::anyhow!("vesting terms: {error:?}"))
}

/// Award `index`: 1,000-49,999 options, vesting start spread over 2019-2024.
fn award(index: usize) -> (Decimal, NaiveDate) {
    let base = NaiveDate::from_ymd_opt(2019, 1, 1).expect("date");
    let quantity = Decimal::from(1_000 + (index * 7_919) % 49_000);
    let start = base + chrono::Days::new(((index * 37) % 2_000) as u64);
    (quantity, start)
}

fn evaluate(terms: &VestingTerms, range: std::ops::Range<usize>, as_of: NaiveDate) -> Decimal {
    let events = BTreeMap::new();
    let mut total = Decimal::ZERO;
    for index in range {
        let (quantity, start) = award(index);
        let facts = VestingFacts {
            quantity,
            grant_date: start,
            vesting_start: start,
            events: &events,
            accelerations: &[],
            vesting_cap: quantity,
        };
        total += vesting::vested_on(Some(black_box(terms)), &facts, as_of);
    }
    total
}

pub(crate) fn run(awards: usize) -> anyhow::Result<Vesting> {
    let terms = terms()?;
    let as_of = NaiveDate::from_ymd_opt(2025, 6, 1).expect("date");
    // Warm up caches and the allocator.
    black_box(evaluate(&terms, 0..1_000, as_of));

    let began = Instant::now();
    let total_vested = evaluate(&terms, 0..awards, as_of);
    let single_thread = began.elapsed();

    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let began = Instant::now();
    let parallel_total: Decimal = std::thread::scope(|scope| {
        let chunk = awards.div_ceil(threads);
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let terms = &terms;
                scope
                    .spawn(move || evaluate(terms, t * chunk..((t + 1) * chunk).min(awards), as_of))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("vesting thread"))
            .sum()
    });
    let all_cores = began.elapsed();
    anyhow::ensure!(
        parallel_total == total_vested,
        "parallel and serial totals differ"
    );

    // vested_as_of alone: 1,000 distinct schedules, each asked about many dates.
    let events = BTreeMap::new();
    let schedules: Vec<Vec<Tranche>> = (0..1_000)
        .map(|index| {
            let (quantity, start) = award(index);
            vesting::schedule(
                Some(&terms),
                &VestingFacts {
                    quantity,
                    grant_date: start,
                    vesting_start: start,
                    events: &events,
                    accelerations: &[],
                    vesting_cap: quantity,
                },
            )
        })
        .collect();
    let began = Instant::now();
    let mut sum = Decimal::ZERO;
    for index in 0..awards {
        let day = as_of - chrono::Days::new((index % 2_500) as u64);
        sum += vesting::vested_as_of(black_box(&schedules[index % schedules.len()]), day);
    }
    black_box(sum);
    let sum_only = began.elapsed();

    Ok(Vesting {
        awards,
        single_thread,
        all_cores,
        threads,
        sum_only,
        total_vested,
    })
}
