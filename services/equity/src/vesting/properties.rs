//! The engine against `reference` (the engine as it was before the integer
//! path): the same tranches, dates, condition ids and quantities, to the last
//! digit and scale of every `Decimal`, over random terms graphs, awards,
//! events, accelerations and caps; and the integer path actually taken where
//! it should be.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use rust_decimal::prelude::ToPrimitive;

use super::*;

fn date(year: i32, month: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(year, month, day).expect("valid date")
}

/// A `Decimal` to the digit: value, scale and sign.
fn digits(value: Decimal) -> (i128, u32, bool) {
    (value.mantissa(), value.scale(), value.is_sign_negative())
}

type Exactly = Vec<(NaiveDate, (i128, u32, bool), String)>;

fn exactly(tranches: &[Tranche]) -> Exactly {
    tranches
        .iter()
        .map(|tranche| {
            (
                tranche.date,
                digits(tranche.quantity),
                tranche.condition_id.clone(),
            )
        })
        .collect()
}

/// One award and its terms, owned.
#[derive(Debug, Clone)]
struct Case {
    terms: Option<VestingTerms>,
    quantity: Decimal,
    grant_date: NaiveDate,
    vesting_start: NaiveDate,
    events: BTreeMap<String, NaiveDate>,
    accelerations: Vec<Acceleration>,
    vesting_cap: Decimal,
    as_of: Vec<NaiveDate>,
}

impl Case {
    fn facts(&self) -> VestingFacts<'_> {
        VestingFacts {
            quantity: self.quantity,
            grant_date: self.grant_date,
            vesting_start: self.vesting_start,
            events: &self.events,
            accelerations: &self.accelerations,
            vesting_cap: self.vesting_cap,
        }
    }

    /// The engine and the reference agree on everything.
    fn check(&self) -> Result<(), TestCaseError> {
        let facts = self.facts();
        let terms = self.terms.as_ref();
        let expected = reference::schedule(terms, &facts);
        let tranches = schedule(terms, &facts);
        prop_assert_eq!(exactly(&tranches), exactly(&expected));
        for as_of in &self.as_of {
            let wanted = digits(reference::vested_as_of(&expected, *as_of));
            prop_assert_eq!(digits(vested_as_of(&tranches, *as_of)), wanted);
            prop_assert_eq!(digits(vested_on(terms, &facts, *as_of)), wanted);
        }
        Ok(())
    }

    fn integer_path(&self) -> bool {
        self.terms
            .as_ref()
            .is_some_and(|terms| takes_integer_path(terms, &self.facts()))
    }

    /// Whether `vested_on` answers every `as_of` in closed form.
    fn closed_form(&self) -> bool {
        self.terms.as_ref().is_some_and(|terms| {
            self.as_of
                .iter()
                .all(|as_of| takes_closed_form(terms, &self.facts(), *as_of))
        })
    }
}

fn any_date() -> impl Strategy<Value = NaiveDate> {
    (1995i32..2040, 1u32..=365)
        .prop_map(|(year, day)| NaiveDate::from_yo_opt(year, day).expect("day of a year"))
}

/// Award quantities: small, typical, huge, fractional, and whole with
/// trailing zeros (as read from a NUMERIC column).
fn any_quantity() -> impl Strategy<Value = Decimal> {
    prop_oneof![
        3 => (0i64..=40).prop_map(Decimal::from),
        6 => (1i64..=100_000).prop_map(Decimal::from),
        2 => (1i64..=10_000_000_000_000).prop_map(Decimal::from),
        1 => (1i64..=1_000_000_000_000_000_000).prop_map(Decimal::from),
        2 => (1i64..=10_000_000, 1u32..=6).prop_map(|(digits, scale)| Decimal::new(digits, scale)),
        2 => (0i64..=100_000, 1u32..=4)
            .prop_map(|(whole, scale)| Decimal::new(whole * 10i64.pow(scale), scale)),
    ]
}

fn any_denominator() -> impl Strategy<Value = i64> {
    prop_oneof![
        6 => prop::sample::select(vec![1i64, 2, 3, 4, 6, 7, 12, 36, 48, 100]),
        2 => 1i64..=500,
        1 => prop::sample::select(vec![1024i64, 2048, 4096, 3 * 2048, 5i64.pow(11), 99_991]),
    ]
}

fn any_amount() -> impl Strategy<Value = Amount> {
    let portion = (any_denominator(), any::<bool>(), 0u32..=2, 0u32..=1).prop_flat_map(
        |(denominator, remainder, numerator_scale, denominator_scale)| {
            let remainder = remainder && denominator % 3 == 0;
            (0..=denominator + 1).prop_map(move |numerator| Amount::Portion {
                numerator: Decimal::new(numerator * 10i64.pow(numerator_scale), numerator_scale),
                denominator: Decimal::new(
                    denominator * 10i64.pow(denominator_scale),
                    denominator_scale,
                ),
                remainder,
            })
        },
    );
    prop_oneof![
        6 => portion,
        1 => Just(Amount::Portion {
            numerator: Decimal::ONE,
            denominator: Decimal::ONE,
            remainder: true,
        }),
        1 => (1i64..=99, 1i64..=9).prop_map(|(numerator, denominator)| Amount::Portion {
            numerator: Decimal::new(numerator, 2),
            denominator: Decimal::from(denominator),
            remainder: false,
        }),
        2 => (0i64..=5_000).prop_map(|quantity| Amount::Quantity(Decimal::from(quantity))),
        1 => (0i64..=50_000, 1u32..=3)
            .prop_map(|(digits, scale)| Amount::Quantity(Decimal::new(digits, scale))),
    ]
}

fn any_period() -> impl Strategy<Value = Period> {
    (
        prop_oneof![
            4 => (1u32..=24).prop_map(|length| (length, PeriodUnit::Months)),
            1 => (1u32..=400).prop_map(|length| (length, PeriodUnit::Days)),
        ],
        prop_oneof![8 => 1u32..=60, 1 => Just(0u32), 1 => 60u32..=200],
        prop_oneof![
            3 => Just(DayOfMonth::VestingStartDayOrLastDay),
            1 => Just(DayOfMonth::LastDay),
            1 => (1u8..=31).prop_map(DayOfMonth::Fixed),
        ],
        0u32..=30,
    )
        .prop_map(
            |((length, unit), occurrences, day_of_month, cliff_installment)| Period {
                length,
                unit,
                occurrences,
                day_of_month,
                cliff_installment,
            },
        )
}

fn id(index: usize) -> String {
    format!("c{index}")
}

/// A trigger for condition `index`: relative to an earlier condition, on a
/// date, or on an event.
fn any_trigger(index: usize) -> impl Strategy<Value = Trigger> {
    prop_oneof![
        6 => (any_period(), 0..index).prop_map(|(period, to)| Trigger::Relative {
            period,
            relative_to: id(to),
        }),
        1 => any_date().prop_map(Trigger::Absolute),
        1 => Just(Trigger::Event),
    ]
}

/// A terms graph: condition 0 is the vesting start; each condition may lead
/// to any later one (so there is no cycle), in random priority.
fn any_terms() -> impl Strategy<Value = VestingTerms> {
    (2usize..=6)
        .prop_flat_map(|count| {
            let conditions: Vec<_> = (0..count)
                .map(|index| {
                    let trigger = if index == 0 {
                        Just(Trigger::VestingStart).boxed()
                    } else {
                        any_trigger(index).boxed()
                    };
                    let amount = if index == 0 {
                        prop_oneof![
                            4 => Just(Amount::Quantity(Decimal::ZERO)),
                            1 => any_amount(),
                        ]
                        .boxed()
                    } else {
                        any_amount().boxed()
                    };
                    let later: Vec<usize> = (index + 1..count).collect();
                    let next =
                        prop::sample::subsequence(later.clone(), 0..=later.len()).prop_shuffle();
                    (amount, trigger, next).prop_map(move |(amount, trigger, next)| Condition {
                        id: id(index),
                        description: String::new(),
                        amount,
                        trigger,
                        next: next.into_iter().map(id).collect(),
                    })
                })
                .collect();
            (
                conditions,
                prop::sample::select(AllocationType::ALL.to_vec()),
            )
        })
        .prop_map(|(mut conditions, allocation)| {
            // Mostly a chain, as real terms are: the start leads somewhere.
            if conditions[0].next.is_empty() {
                conditions[0].next.push(id(1));
            }
            let terms = VestingTerms {
                id: "terms".into(),
                name: "terms".into(),
                description: String::new(),
                allocation,
                conditions,
            };
            debug_assert!(terms.validate().is_ok());
            terms
        })
}

fn any_case() -> impl Strategy<Value = Case> {
    (
        prop_oneof![9 => any_terms().prop_map(Some), 1 => Just(None)],
        any_quantity(),
        any_date(),
        prop::collection::btree_map((1usize..6).prop_map(id), any_date(), 0..3),
        prop::collection::vec(
            (any_date(), (0i64..=20_000).prop_map(Decimal::from))
                .prop_map(|(date, quantity)| Acceleration { date, quantity }),
            0..3,
        ),
        prop_oneof![
            6 => Just(None),
            2 => (0i64..=100).prop_map(Some),
            1 => (-5i64..=5).prop_map(|less| Some(-less)),
        ],
        prop::collection::vec(any_date(), 1..4),
    )
        .prop_map(
            |(terms, quantity, start, events, accelerations, cut, as_of)| {
                // A cap at the quantity, or a share of it cancelled.
                let vesting_cap = match cut {
                    None => quantity,
                    Some(percent) => {
                        (quantity * Decimal::from(100 - percent.min(100))) / Decimal::from(100)
                    }
                };
                Case {
                    terms,
                    quantity,
                    grant_date: start,
                    vesting_start: start,
                    events,
                    accelerations,
                    vesting_cap,
                    as_of,
                }
            },
        )
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

#[test]
fn random_terms_awards_and_dates_schedule_exactly_as_the_reference_does() {
    let integer = std::cell::Cell::new(0u32);
    let closed = std::cell::Cell::new(0u32);
    let total = std::cell::Cell::new(0u32);
    runner(3_000)
        .run(&any_case(), |case| {
            total.set(total.get() + 1);
            integer.set(integer.get() + u32::from(case.integer_path()));
            closed.set(closed.get() + u32::from(case.closed_form()));
            case.check()
        })
        .expect("engine and reference agree");
    let (integer, closed, total) = (integer.get(), closed.get(), total.get());
    // Not only the reference path was exercised.
    assert!(
        integer * 6 > total && closed > 0,
        "integer path in {integer}, closed form in {closed} of {total} cases"
    );
}

#[test]
fn random_cumulative_terms_vest_in_closed_form_exactly_as_the_reference_does() {
    // The closed form's ground: cumulative allocation, no acceleration.
    let strategy = (any_case(), any::<bool>()).prop_map(|(mut case, down)| {
        if let Some(terms) = &mut case.terms {
            terms.allocation = if down {
                AllocationType::CumulativeRoundDown
            } else {
                AllocationType::CumulativeRounding
            };
        }
        case.accelerations.clear();
        case
    });
    let closed = std::cell::Cell::new(0u32);
    let total = std::cell::Cell::new(0u32);
    runner(3_000)
        .run(&strategy, |case| {
            total.set(total.get() + 1);
            closed.set(closed.get() + u32::from(case.closed_form()));
            case.check()
        })
        .expect("engine and reference agree");
    let (closed, total) = (closed.get(), total.get());
    assert!(
        closed * 6 > total,
        "closed form in {closed} of {total} cases"
    );
}

/// The benchmark's terms (OCF's 4yr-1yr-cliff, chained) and the single
/// condition with a cliff installment, under every allocation type.
fn four_year_terms(allocation: AllocationType, chained: bool) -> VestingTerms {
    let portion = |numerator: i64| Amount::Portion {
        numerator: Decimal::from(numerator),
        denominator: Decimal::from(48),
        remainder: false,
    };
    let monthly = |length, occurrences, cliff_installment| Period {
        length,
        unit: PeriodUnit::Months,
        occurrences,
        day_of_month: DayOfMonth::VestingStartDayOrLastDay,
        cliff_installment,
    };
    let condition = |id: &str, amount, trigger, next: &[&str]| Condition {
        id: id.into(),
        description: String::new(),
        amount,
        trigger,
        next: next.iter().map(|next| (*next).to_owned()).collect(),
    };
    let relative = |period, to: &str| Trigger::Relative {
        period,
        relative_to: to.into(),
    };
    let start = |next| {
        condition(
            "start",
            Amount::Quantity(Decimal::ZERO),
            Trigger::VestingStart,
            next,
        )
    };
    let conditions = if chained {
        vec![
            start(&["cliff"]),
            condition(
                "cliff",
                portion(12),
                relative(monthly(12, 1, 0), "start"),
                &["monthly"],
            ),
            condition(
                "monthly",
                portion(1),
                relative(monthly(1, 36, 0), "cliff"),
                &[],
            ),
        ]
    } else {
        vec![
            start(&["monthly"]),
            condition(
                "monthly",
                portion(1),
                relative(monthly(1, 48, 12), "start"),
                &[],
            ),
        ]
    };
    VestingTerms {
        id: "4y-1y-cliff".into(),
        name: "Four Year / One Year Cliff".into(),
        description: String::new(),
        allocation,
        conditions,
    }
}

fn award(terms: &VestingTerms, quantity: Decimal, start: NaiveDate) -> Case {
    Case {
        terms: Some(terms.clone()),
        quantity,
        grant_date: start,
        vesting_start: start,
        events: BTreeMap::new(),
        accelerations: Vec::new(),
        vesting_cap: quantity,
        as_of: vec![
            start,
            start + chrono::Days::new(365),
            start + chrono::Days::new(1_000),
            date(2025, 6, 1),
            start + chrono::Days::new(1_461),
        ],
    }
}

#[test]
fn every_quantity_the_benchmark_uses_takes_the_integer_path_and_matches_the_reference() {
    // The benchmark's awards: 1,000-49,999 options, starts over 2019-2024.
    // Every quantity up to 240, then a stride through the rest and beyond.
    let quantities = (0..=240).chain((241..=200_000).step_by(997));
    for (allocation, chained) in AllocationType::ALL
        .into_iter()
        .flat_map(|allocation| [(allocation, true), (allocation, false)])
    {
        let terms = four_year_terms(allocation, chained);
        for (index, quantity) in quantities.clone().enumerate() {
            let start = date(2019, 1, 1) + chrono::Days::new((index as u64 * 37) % 2_000);
            let case = award(&terms, Decimal::from(quantity), start);
            assert!(case.integer_path(), "{allocation:?} {quantity}");
            let cumulative = matches!(
                allocation,
                AllocationType::CumulativeRounding | AllocationType::CumulativeRoundDown
            );
            assert_eq!(case.closed_form(), cumulative, "{allocation:?} {quantity}");
            case.check()
                .unwrap_or_else(|error| panic!("{allocation:?} {quantity}: {error}"));
        }
    }
}

#[test]
fn four_year_awards_of_any_size_cap_and_acceleration_match_the_reference() {
    let strategy = (
        prop::sample::select(AllocationType::ALL.to_vec()),
        any::<bool>(),
        any_quantity(),
        any_date(),
        prop_oneof![3 => Just(None), 1 => (0u32..=100).prop_map(Some)],
        prop::collection::vec(
            (any_date(), (1i64..=5_000).prop_map(Decimal::from))
                .prop_map(|(date, quantity)| Acceleration { date, quantity }),
            0..2,
        ),
    );
    runner(1_000)
        .run(
            &strategy,
            |(allocation, chained, quantity, start, percent, accelerations)| {
                let mut case = award(&four_year_terms(allocation, chained), quantity, start);
                if let Some(percent) = percent {
                    case.vesting_cap = quantity * Decimal::from(percent) / Decimal::from(100);
                }
                case.accelerations = accelerations;
                // Whole awards up to 10^9 options take the integer path.
                if quantity.is_integer()
                    && quantity
                        .to_u64()
                        .is_some_and(|whole| whole <= 1_000_000_000)
                {
                    prop_assert!(case.integer_path());
                }
                case.check()
            },
        )
        .expect("engine and reference agree");
}

#[test]
fn what_the_integer_path_cannot_bound_goes_to_the_reference_and_still_agrees() {
    let start = date(2024, 1, 31);
    let single = |amount: Amount| VestingTerms {
        id: "terms".into(),
        name: "terms".into(),
        description: String::new(),
        allocation: AllocationType::CumulativeRounding,
        conditions: vec![
            Condition {
                id: "start".into(),
                description: String::new(),
                amount: Amount::Quantity(Decimal::ZERO),
                trigger: Trigger::VestingStart,
                next: vec!["monthly".into()],
            },
            Condition {
                id: "monthly".into(),
                description: String::new(),
                amount,
                trigger: Trigger::Relative {
                    period: Period {
                        length: 1,
                        unit: PeriodUnit::Months,
                        occurrences: 48,
                        day_of_month: DayOfMonth::VestingStartDayOrLastDay,
                        cliff_installment: 12,
                    },
                    relative_to: "start".into(),
                },
                next: vec![],
            },
        ],
    };
    let portion = |numerator: i64, denominator: i64, remainder: bool| Amount::Portion {
        numerator: Decimal::from(numerator),
        denominator: Decimal::from(denominator),
        remainder,
    };
    let cases = [
        // A fractional award.
        (portion(1, 48, false), Decimal::new(100_0005, 4)),
        // A remainder portion other than n/n.
        (portion(1, 2, true), Decimal::from(1_000)),
        // A denominator with eleven factors of 2: exact halfway points.
        (portion(1, 2048, false), Decimal::from(1)),
        // A portion above the whole.
        (portion(3, 2, false), Decimal::from(1_000)),
        // A fractional quantity per installment.
        (Amount::Quantity(Decimal::new(15, 1)), Decimal::from(100)),
        // An award too large to bound the reference's rounding.
        (
            portion(1, 48, false),
            Decimal::from(10_000_000_000_000_000i64),
        ),
    ];
    for (amount, quantity) in cases {
        let case = award(&single(amount), quantity, start);
        assert!(!case.integer_path(), "{amount:?} {quantity}");
        case.check()
            .unwrap_or_else(|error| panic!("{amount:?} {quantity}: {error}"));
    }
    // Vesting more after everything vested: a zero the reference may not
    // compute exactly, so the reference decides.
    let mut after = single(portion(1, 3, false));
    after.conditions[1].next = vec!["bonus".into()];
    after.conditions.push(Condition {
        id: "bonus".into(),
        description: String::new(),
        amount: Amount::Quantity(Decimal::from(10)),
        trigger: Trigger::Absolute(date(2030, 1, 1)),
        next: vec![],
    });
    after.conditions[1].amount = portion(1, 3, false);
    let case = award(&after, Decimal::from(100), start);
    assert!(!case.integer_path());
    case.check().expect("engine and reference agree");
}

#[test]
fn an_award_whose_rounding_the_plan_cannot_bound_goes_to_the_reference() {
    // 10^15 options, 1/12,347 a day for 1,200 days, fractional: with the
    // error budget lifted, the integer path's 10-place amounts differ from
    // rust_decimal's here (its running total keeps only ~15 decimals).
    let mut terms = four_year_terms(AllocationType::Fractional, false);
    terms.conditions[1].amount = Amount::Portion {
        numerator: Decimal::ONE,
        denominator: Decimal::from(12_347),
        remainder: false,
    };
    if let Trigger::Relative { period, .. } = &mut terms.conditions[1].trigger {
        period.unit = PeriodUnit::Days;
        period.occurrences = 1_200;
        period.cliff_installment = 0;
    }
    for quantity in [1_000_000_000_000_000i64, 999_999_999_999_989] {
        let case = award(&terms, Decimal::from(quantity), date(2024, 1, 31));
        assert!(!case.integer_path(), "{quantity}");
        case.check()
            .unwrap_or_else(|error| panic!("{quantity}: {error}"));
    }
}

#[test]
fn the_largest_awards_the_integer_path_takes_still_match_the_reference() {
    // Daily or monthly portions of 1/d, d prime or not; for each, the largest
    // award the error budget lets through (found by bisection), and below.
    let strategy = (
        prop::sample::select(AllocationType::ALL.to_vec()),
        prop_oneof![
            prop::sample::select(vec![3i64, 7, 48, 97, 1_024, 12_347, 99_991, 5i64.pow(7)]),
            // Eleven factors of 2 always go to the reference.
            (2i64..=100_000).prop_filter("at most 2^10", |d| d.trailing_zeros() <= 10),
        ],
        prop::sample::select(vec![1u32, 12, 100, 1_200]),
        0u32..=12,
        any::<bool>(),
        any_date(),
    );
    runner(150)
        .run(
            &strategy,
            |(allocation, denominator, occurrences, cliff, daily, start)| {
                let mut terms = four_year_terms(allocation, false);
                terms.conditions[1].amount = Amount::Portion {
                    numerator: Decimal::ONE,
                    denominator: Decimal::from(denominator),
                    remainder: false,
                };
                if let Trigger::Relative { period, .. } = &mut terms.conditions[1].trigger {
                    if daily {
                        period.unit = PeriodUnit::Days;
                    }
                    // Never more than the whole: no zero amounts after it.
                    period.occurrences = occurrences.min(denominator as u32);
                    period.cliff_installment = cliff;
                }
                let takes =
                    |quantity: u64| award(&terms, Decimal::from(quantity), start).integer_path();
                let (mut low, mut high) = (1u64, 1_000_000_000_000_000u64);
                prop_assert!(takes(low));
                while low < high {
                    let middle = low + (high - low).div_ceil(2);
                    if takes(middle) {
                        low = middle;
                    } else {
                        high = middle - 1;
                    }
                }
                for quantity in [low, low - low / 7, low - low / 1_000, low / 3 + 1] {
                    prop_assert!(!takes(low + 1));
                    let case = award(&terms, Decimal::from(quantity), start);
                    prop_assert!(case.integer_path());
                    case.check()?;
                }
                Ok(())
            },
        )
        .expect("engine and reference agree");
}

#[cfg(target_pointer_width = "64")]
#[test]
fn a_slot_is_the_size_of_a_tranche_so_schedule_collects_in_place() {
    assert_eq!(std::mem::size_of::<Slot>(), std::mem::size_of::<Tranche>());
}
