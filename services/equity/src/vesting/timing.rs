//! Per-award cost of the engine, the benchmark's way (bench/src/vesting.rs)
//! and without strings. Ignored: run in release,
//! `cargo test --release -p qapmap-equity --lib vesting::timing -- --ignored --nocapture`.

use std::hint::black_box;
use std::time::Instant;

use super::*;

fn terms() -> VestingTerms {
    let portion = |numerator: i64| Amount::Portion {
        numerator: Decimal::from(numerator),
        denominator: Decimal::from(48),
        remainder: false,
    };
    let relative = |length, occurrences, to: &str| Trigger::Relative {
        period: Period {
            length,
            unit: PeriodUnit::Months,
            occurrences,
            day_of_month: DayOfMonth::VestingStartDayOrLastDay,
            cliff_installment: 0,
        },
        relative_to: to.into(),
    };
    let condition = |id: &str, amount, trigger, next: &[&str]| Condition {
        id: id.into(),
        description: String::new(),
        amount,
        trigger,
        next: next.iter().map(|next| (*next).to_owned()).collect(),
    };
    VestingTerms {
        id: "4y-1y-cliff".into(),
        name: "Four Year / One Year Cliff".into(),
        description: String::new(),
        allocation: AllocationType::CumulativeRounding,
        conditions: vec![
            condition(
                "start",
                Amount::Quantity(Decimal::ZERO),
                Trigger::VestingStart,
                &["cliff"],
            ),
            condition("cliff", portion(12), relative(12, 1, "start"), &["monthly"]),
            condition("monthly", portion(1), relative(1, 36, "cliff"), &[]),
        ],
    }
}

/// The benchmark's award `index`.
fn award(index: usize) -> (Decimal, NaiveDate) {
    let base = NaiveDate::from_ymd_opt(2019, 1, 1).expect("date");
    let quantity = Decimal::from(1_000 + (index * 7_919) % 49_000);
    let start = base + chrono::Days::new(((index * 37) % 2_000) as u64);
    (quantity, start)
}

fn run(label: &str, awards: usize, evaluate: impl Fn(&VestingFacts<'_>) -> Decimal) -> Decimal {
    let events = BTreeMap::new();
    let began = Instant::now();
    let mut total = Decimal::ZERO;
    for index in 0..awards {
        let (quantity, start) = award(index);
        let facts = VestingFacts {
            quantity,
            grant_date: start,
            vesting_start: start,
            events: &events,
            accelerations: &[],
            vesting_cap: quantity,
        };
        total += evaluate(&facts);
    }
    let elapsed = began.elapsed();
    println!(
        "{label}: {awards} awards in {:.1} ms, {:.0} ns per award",
        elapsed.as_secs_f64() * 1e3,
        elapsed.as_nanos() as f64 / awards as f64
    );
    total
}

fn benchmark_terms_and_date() -> (VestingTerms, NaiveDate) {
    (terms(), NaiveDate::from_ymd_opt(2025, 6, 1).expect("date"))
}

const AWARDS: usize = 200_000;

#[test]
#[ignore = "a timing, not a test: run in release"]
fn per_award_cost_schedule_and_vested_as_of() {
    let (terms, as_of) = benchmark_terms_and_date();
    black_box(run("schedule + vested_as_of", AWARDS, |facts| {
        vested_as_of(&schedule(Some(black_box(&terms)), facts), as_of)
    }));
}

#[test]
#[ignore = "a timing, not a test: run in release"]
fn per_award_cost_vested_on() {
    let (terms, as_of) = benchmark_terms_and_date();
    black_box(run("vested_on", AWARDS, |facts| {
        vested_on(Some(black_box(&terms)), facts, as_of)
    }));
}

#[test]
#[ignore = "a timing, not a test: run in release"]
fn per_award_cost_reference() {
    let (terms, as_of) = benchmark_terms_and_date();
    black_box(run("reference (the engine before)", AWARDS / 10, |facts| {
        reference::vested_as_of(&reference::schedule(Some(black_box(&terms)), facts), as_of)
    }));
}

#[test]
#[ignore = "a timing, not a test: run in release"]
fn per_award_cost_vested_on_all_cores() {
    // As the benchmark splits its awards over every core.
    let (terms, as_of) = benchmark_terms_and_date();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = AWARDS.div_ceil(threads);
    let events = BTreeMap::new();
    let began = Instant::now();
    std::thread::scope(|scope| {
        for thread in 0..threads {
            let (terms, events) = (&terms, &events);
            scope.spawn(move || {
                let mut total = Decimal::ZERO;
                for index in thread * chunk..((thread + 1) * chunk).min(AWARDS) {
                    let (quantity, start) = award(index);
                    let facts = VestingFacts {
                        quantity,
                        grant_date: start,
                        vesting_start: start,
                        events,
                        accelerations: &[],
                        vesting_cap: quantity,
                    };
                    total += vested_on(Some(black_box(terms)), &facts, as_of);
                }
                black_box(total)
            });
        }
    });
    let elapsed = began.elapsed();
    println!(
        "vested_on on {threads} threads: {AWARDS} awards in {:.1} ms, {:.0} ns per award",
        elapsed.as_secs_f64() * 1e3,
        elapsed.as_nanos() as f64 / AWARDS as f64
    );
}
