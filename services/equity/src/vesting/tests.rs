//! The engine against OCF's own examples and the options tutorial.

use super::*;

fn date(year: i32, month: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(year, month, day).expect("valid date")
}

fn portion(numerator: i64, denominator: i64) -> Amount {
    Amount::Portion {
        numerator: Decimal::from(numerator),
        denominator: Decimal::from(denominator),
        remainder: false,
    }
}

fn monthly(length: u32, occurrences: u32, cliff_installment: u32) -> Period {
    Period {
        length,
        unit: PeriodUnit::Months,
        occurrences,
        day_of_month: DayOfMonth::VestingStartDayOrLastDay,
        cliff_installment,
    }
}

fn condition(id: &str, amount: Amount, trigger: Trigger, next: &[&str]) -> Condition {
    Condition {
        id: id.to_owned(),
        description: String::new(),
        amount,
        trigger,
        next: next.iter().map(|id| (*id).to_owned()).collect(),
    }
}

fn relative(period: Period, to: &str) -> Trigger {
    Trigger::Relative {
        period,
        relative_to: to.to_owned(),
    }
}

fn terms(allocation: AllocationType, conditions: Vec<Condition>) -> VestingTerms {
    let terms = VestingTerms {
        id: "terms".into(),
        name: "terms".into(),
        description: String::new(),
        allocation,
        conditions,
    };
    terms.validate().expect("valid terms");
    terms
}

/// OCF samples/VestingTerms.ocf.json "4yr-1yr-cliff-schedule": a chained cliff.
fn four_years_one_year_cliff_chained() -> VestingTerms {
    terms(
        AllocationType::CumulativeRounding,
        vec![
            condition(
                "vesting-start",
                Amount::Quantity(Decimal::ZERO),
                Trigger::VestingStart,
                &["cliff"],
            ),
            condition(
                "cliff",
                portion(12, 48),
                relative(monthly(12, 1, 0), "vesting-start"),
                &["monthly-thereafter"],
            ),
            condition(
                "monthly-thereafter",
                portion(1, 48),
                relative(monthly(1, 36, 0), "cliff"),
                &[],
            ),
        ],
    )
}

struct Award {
    quantity: Decimal,
    start: NaiveDate,
    events: BTreeMap<String, NaiveDate>,
    accelerations: Vec<Acceleration>,
    cap: Decimal,
}

impl Award {
    fn new(quantity: i64, start: NaiveDate) -> Self {
        Self {
            quantity: Decimal::from(quantity),
            start,
            events: BTreeMap::new(),
            accelerations: Vec::new(),
            cap: Decimal::from(quantity),
        }
    }

    fn schedule(&self, terms: &VestingTerms) -> Vec<Tranche> {
        schedule(
            Some(terms),
            &VestingFacts {
                quantity: self.quantity,
                grant_date: self.start,
                vesting_start: self.start,
                events: &self.events,
                accelerations: &self.accelerations,
                vesting_cap: self.cap,
            },
        )
    }
}

#[test]
fn the_options_tutorial_schedule_is_reproduced() {
    let award = Award::new(100_000, date(2022, 12, 31));
    let tranches = award.schedule(&four_years_one_year_cliff_chained());
    let vested = |on| vested_as_of(&tranches, on);
    assert_eq!(
        vested(date(2023, 12, 30)),
        Decimal::ZERO,
        "nothing before the cliff"
    );
    assert_eq!(vested(date(2023, 12, 31)), Decimal::from(25_000));
    assert_eq!(vested(date(2024, 1, 31)), Decimal::from(27_083));
    assert_eq!(vested(date(2024, 2, 29)), Decimal::from(29_167));
    assert_eq!(vested(date(2024, 3, 31)), Decimal::from(31_250));
    assert_eq!(vested(date(2026, 11, 30)), Decimal::from(97_917));
    assert_eq!(vested(date(2026, 12, 30)), Decimal::from(97_917));
    assert_eq!(vested(date(2026, 12, 31)), Decimal::from(100_000));
    assert_eq!(tranches.len(), 37, "the cliff and 36 monthly tranches");
    assert_eq!(tranches[2].date, date(2024, 2, 29));
    assert_eq!(
        tranches[3].date,
        date(2024, 3, 31),
        "the 31st comes back after February"
    );
}

#[test]
fn a_cliff_installment_on_one_periodic_condition_vests_like_the_chained_encoding() {
    let single = terms(
        AllocationType::CumulativeRounding,
        vec![
            condition(
                "start",
                Amount::Quantity(Decimal::ZERO),
                Trigger::VestingStart,
                &["monthly"],
            ),
            condition(
                "monthly",
                portion(1, 48),
                relative(monthly(1, 48, 12), "start"),
                &[],
            ),
        ],
    );
    let award = Award::new(100_000, date(2022, 12, 31));
    let dated = |tranches: Vec<Tranche>| -> Vec<(NaiveDate, Decimal)> {
        tranches.into_iter().map(|t| (t.date, t.quantity)).collect()
    };
    let chained = dated(award.schedule(&four_years_one_year_cliff_chained()));
    assert_eq!(dated(award.schedule(&single)), chained);
    assert_eq!(chained[0], (date(2023, 12, 31), Decimal::from(25_000)));
}

#[test]
fn the_18_share_example_vests_per_allocation_type_through_the_whole_engine() {
    let expected: [(AllocationType, [i64; 4]); 6] = [
        (AllocationType::CumulativeRounding, [5, 4, 5, 4]),
        (AllocationType::CumulativeRoundDown, [4, 5, 4, 5]),
        (AllocationType::FrontLoaded, [5, 5, 4, 4]),
        (AllocationType::BackLoaded, [4, 4, 5, 5]),
        (AllocationType::FrontLoadedToSingleTranche, [6, 4, 4, 4]),
        (AllocationType::BackLoadedToSingleTranche, [4, 4, 4, 6]),
    ];
    let award = Award::new(18, date(2024, 1, 15));
    for (allocation, amounts) in expected {
        let quarterly = terms(
            allocation,
            vec![
                condition(
                    "start",
                    Amount::Quantity(Decimal::ZERO),
                    Trigger::VestingStart,
                    &["quarterly"],
                ),
                condition(
                    "quarterly",
                    portion(1, 4),
                    relative(monthly(3, 4, 0), "start"),
                    &[],
                ),
            ],
        );
        let tranches = award.schedule(&quarterly);
        let quantities: Vec<Decimal> = tranches.iter().map(|t| t.quantity).collect();
        let wanted: Vec<Decimal> = amounts.into_iter().map(Decimal::from).collect();
        assert_eq!(quantities, wanted, "{allocation:?}");
        assert_eq!(tranches[3].date, date(2025, 1, 15));
    }
    let fractional = terms(
        AllocationType::Fractional,
        vec![
            condition(
                "start",
                Amount::Quantity(Decimal::ZERO),
                Trigger::VestingStart,
                &["quarterly"],
            ),
            condition(
                "quarterly",
                portion(1, 4),
                relative(monthly(3, 4, 0), "start"),
                &[],
            ),
        ],
    );
    let tranches = award.schedule(&fractional);
    assert!(tranches.iter().all(|t| t.quantity == Decimal::new(45, 1)));
}

#[test]
fn day_periods_and_fixed_days_of_month_and_absolute_dates_schedule_as_written() {
    let daily = terms(
        AllocationType::Fractional,
        vec![
            condition(
                "start",
                Amount::Quantity(Decimal::ZERO),
                Trigger::VestingStart,
                &["every-30-days"],
            ),
            condition(
                "every-30-days",
                Amount::Quantity(Decimal::from(10)),
                relative(
                    Period {
                        length: 30,
                        unit: PeriodUnit::Days,
                        occurrences: 3,
                        day_of_month: DayOfMonth::LastDay,
                        cliff_installment: 0,
                    },
                    "start",
                ),
                &["on-a-date"],
            ),
            condition(
                "on-a-date",
                Amount::Quantity(Decimal::from(70)),
                Trigger::Absolute(date(2024, 12, 1)),
                &[],
            ),
        ],
    );
    let award = Award::new(100, date(2024, 1, 1));
    let tranches = award.schedule(&daily);
    let dates: Vec<NaiveDate> = tranches.iter().map(|t| t.date).collect();
    assert_eq!(
        dates,
        [
            date(2024, 1, 31),
            date(2024, 3, 1),
            date(2024, 3, 31),
            date(2024, 12, 1)
        ]
    );
    assert_eq!(
        vested_as_of(&tranches, date(2024, 11, 30)),
        Decimal::from(30)
    );
    assert_eq!(
        vested_as_of(&tranches, date(2024, 12, 1)),
        Decimal::from(100)
    );

    let last_day = terms(
        AllocationType::Fractional,
        vec![
            condition(
                "start",
                Amount::Quantity(Decimal::ZERO),
                Trigger::VestingStart,
                &["monthly"],
            ),
            condition(
                "monthly",
                portion(1, 2),
                relative(
                    Period {
                        day_of_month: DayOfMonth::LastDay,
                        ..monthly(1, 2, 0)
                    },
                    "start",
                ),
                &[],
            ),
        ],
    );
    let dates: Vec<NaiveDate> = award.schedule(&last_day).iter().map(|t| t.date).collect();
    assert_eq!(dates, [date(2024, 2, 29), date(2024, 3, 31)]);
}

/// OCF samples "multi-tranche-event-based", shortened to two sales.
fn sales_with_double_trigger_acceleration() -> VestingTerms {
    let next = ["vesting-expired", "double-trigger-acceleration"];
    terms(
        AllocationType::CumulativeRoundDown,
        vec![
            condition(
                "vesting-start",
                Amount::Quantity(Decimal::ZERO),
                Trigger::VestingStart,
                &[next[0], next[1], "sale-1"],
            ),
            condition(
                "vesting-expired",
                Amount::Quantity(Decimal::ZERO),
                relative(monthly(48, 1, 0), "vesting-start"),
                &[],
            ),
            condition(
                "double-trigger-acceleration",
                Amount::Portion {
                    numerator: Decimal::ONE,
                    denominator: Decimal::ONE,
                    remainder: true,
                },
                Trigger::Event,
                &[],
            ),
            condition(
                "sale-1",
                portion(20, 100),
                Trigger::Event,
                &[next[0], next[1], "sale-2"],
            ),
            condition(
                "sale-2",
                portion(20, 100),
                Trigger::Event,
                &[next[0], next[1]],
            ),
        ],
    )
}

#[test]
fn event_conditions_vest_only_once_recorded_and_a_remainder_portion_vests_the_rest() {
    let terms = sales_with_double_trigger_acceleration();
    let mut award = Award::new(1_000, date(2024, 1, 1));
    assert!(
        award.schedule(&terms).is_empty(),
        "no sale yet: nothing vests"
    );

    award.events.insert("sale-1".into(), date(2024, 6, 1));
    let tranches = award.schedule(&terms);
    assert_eq!(
        vested_as_of(&tranches, date(2024, 6, 1)),
        Decimal::from(200)
    );

    award
        .events
        .insert("double-trigger-acceleration".into(), date(2025, 2, 1));
    let tranches = award.schedule(&terms);
    assert_eq!(
        vested_as_of(&tranches, date(2025, 1, 31)),
        Decimal::from(200)
    );
    assert_eq!(
        vested_as_of(&tranches, date(2025, 2, 1)),
        Decimal::from(1_000)
    );
}

#[test]
fn an_event_after_the_vesting_window_loses_to_the_expiry_condition() {
    let terms = sales_with_double_trigger_acceleration();
    let mut award = Award::new(1_000, date(2024, 1, 1));
    award.events.insert("sale-1".into(), date(2028, 6, 1));
    assert!(award.schedule(&terms).is_empty());
}

#[test]
fn an_acceleration_vests_early_and_takes_from_the_latest_tranches() {
    let mut award = Award::new(100_000, date(2022, 12, 31));
    award.accelerations.push(Acceleration {
        date: date(2023, 6, 30),
        quantity: Decimal::from(10_000),
    });
    let tranches = award.schedule(&four_years_one_year_cliff_chained());
    assert_eq!(
        vested_as_of(&tranches, date(2023, 6, 30)),
        Decimal::from(10_000)
    );
    assert_eq!(
        vested_as_of(&tranches, date(2023, 12, 31)),
        Decimal::from(35_000)
    );
    assert_eq!(
        tranches.iter().map(|t| t.quantity).sum::<Decimal>(),
        Decimal::from(100_000)
    );
    assert_eq!(
        vested_as_of(&tranches, date(2026, 7, 31)),
        Decimal::from(99_583)
    );
    assert_eq!(
        vested_as_of(&tranches, date(2026, 8, 31)),
        Decimal::from(100_000),
        "the end comes sooner"
    );
}

#[test]
fn a_cap_stops_vesting_where_cancelled_options_begin() {
    let mut award = Award::new(100_000, date(2022, 12, 31));
    // Terminated on 2024-02-29: 29,167 vested, the rest forfeited.
    award.cap = Decimal::from(29_167);
    let tranches = award.schedule(&four_years_one_year_cliff_chained());
    assert_eq!(
        vested_as_of(&tranches, date(2030, 1, 1)),
        Decimal::from(29_167)
    );
}

#[test]
fn terms_with_a_cycle_or_a_dangling_reference_or_two_starts_are_refused() {
    let base = four_years_one_year_cliff_chained();
    let mut cyclic = base.clone();
    cyclic.conditions[2].next = vec!["cliff".into()];
    assert_eq!(
        cyclic.validate().expect_err("cycle").field,
        "vesting_terms.conditions"
    );

    let mut dangling = base.clone();
    dangling.conditions[2].trigger = relative(monthly(1, 36, 0), "nowhere");
    assert_eq!(
        dangling.validate().expect_err("dangling").field,
        "vesting_terms.conditions[2].trigger.relative.relative_to_condition_id"
    );

    let mut two_starts = base;
    two_starts.conditions[1].trigger = Trigger::VestingStart;
    assert!(two_starts.validate().is_err());
}

#[test]
fn an_award_without_terms_is_vested_at_grant() {
    let facts = VestingFacts {
        quantity: Decimal::from(500),
        grant_date: date(2024, 5, 1),
        vesting_start: date(2024, 5, 1),
        events: &BTreeMap::new(),
        accelerations: &[],
        vesting_cap: Decimal::from(500),
    };
    let tranches = schedule(None, &facts);
    assert_eq!(vested_as_of(&tranches, date(2024, 4, 30)), Decimal::ZERO);
    assert_eq!(
        vested_as_of(&tranches, date(2024, 5, 1)),
        Decimal::from(500)
    );
}
