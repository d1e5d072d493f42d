//! Calendar arithmetic for vesting periods: OCF months are calendar months,
//! and the day of the month follows the period's day-of-month rule, always
//! clamped to the month's last day (so a 31st start vests on 29 February).

use chrono::{Datelike, Days, NaiveDate};

use super::{DayOfMonth, PeriodUnit};

/// The date `steps` periods of `length` `unit`s after `base`.
///
/// Months are counted from `base`'s year and month, and the day is chosen by
/// `day_of_month` against `vesting_start` afresh each time, so a clamped
/// February date does not drag later months to the 29th.
pub(crate) fn step(
    base: NaiveDate,
    unit: PeriodUnit,
    length: u32,
    steps: u32,
    day_of_month: DayOfMonth,
    vesting_start: NaiveDate,
) -> Option<NaiveDate> {
    Steps::new(base, unit, length, day_of_month, vesting_start).nth(steps)
}

/// `step` from one base by one period, for many step counts: what depends
/// only on the base and the period is worked out once.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Steps {
    base: NaiveDate,
    unit: PeriodUnit,
    length: u32,
    /// `base`'s months since year zero.
    base_months: i32,
    /// The day of the month wanted, before clamping to the month's length.
    wanted_day: u32,
}

impl Steps {
    pub(crate) fn new(
        base: NaiveDate,
        unit: PeriodUnit,
        length: u32,
        day_of_month: DayOfMonth,
        vesting_start: NaiveDate,
    ) -> Self {
        Self {
            base,
            unit,
            length,
            base_months: base.year() * 12 + base.month0() as i32,
            wanted_day: match day_of_month {
                DayOfMonth::VestingStartDayOrLastDay => vesting_start.day(),
                DayOfMonth::LastDay => 31,
                DayOfMonth::Fixed(day) => u32::from(day),
            },
        }
    }

    /// How many of installments `first..=last` fall on or before `as_of`,
    /// when every one of their dates exists and none is earlier than the
    /// one before: a guess from the calendar, checked with two dates, and
    /// a bisection should the guess miss.
    pub(crate) fn count_until(&self, first: u32, last: u32, as_of: NaiveDate) -> u32 {
        let on_or_before = |number: i64| {
            u32::try_from(number)
                .ok()
                .and_then(|number| self.nth(number))
                .is_some_and(|date| date <= as_of)
        };
        let (first, last) = (i64::from(first), i64::from(last));
        // The last installment on or before `as_of`, roughly.
        let elapsed = match self.unit {
            PeriodUnit::Days => as_of.signed_duration_since(self.base).num_days(),
            PeriodUnit::Months => {
                i64::from(as_of.year()) * 12 + i64::from(as_of.month0())
                    - i64::from(self.base_months)
            }
        };
        let guess = match self.length {
            0 if elapsed >= 0 => last,
            0 => first - 1,
            length => elapsed.div_euclid(i64::from(length)),
        }
        .clamp(first - 1, last);
        // The first installment after `as_of`, checked on both sides.
        let after = if guess < first || on_or_before(guess) {
            guess + 1
        } else {
            guess
        };
        let checked = (after == first || after - 1 == guess || on_or_before(after - 1))
            && (after > last || !on_or_before(after));
        let after = if checked {
            after
        } else {
            let (mut low, mut high) = (first, last + 1);
            while low < high {
                let middle = low + (high - low) / 2;
                if on_or_before(middle) {
                    low = middle + 1;
                } else {
                    high = middle;
                }
            }
            low
        };
        (after - first) as u32
    }

    /// The date `steps` periods after the base.
    pub(crate) fn nth(&self, steps: u32) -> Option<NaiveDate> {
        let count = self.length.checked_mul(steps)?;
        match self.unit {
            PeriodUnit::Days => self.base.checked_add_days(Days::new(u64::from(count))),
            PeriodUnit::Months => {
                let months_since_year_zero = self.base_months + count as i32;
                let year = months_since_year_zero.div_euclid(12);
                let month = months_since_year_zero.rem_euclid(12) as u32 + 1;
                let day = self.wanted_day.min(last_day_of_month(year, month)?);
                NaiveDate::from_ymd_opt(year, month, day)
            }
        }
    }
}

/// Years where the month-length table is used; chrono's own range is
/// ±262,143, and at its edges chrono answers as it did before the table.
const TABLE_YEARS: std::ops::RangeInclusive<i32> = -200_000..=200_000;

/// 28 to 31.
pub(crate) fn last_day_of_month(year: i32, month: u32) -> Option<u32> {
    const DAYS: [u8; 12] = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if (1..=12).contains(&month) && TABLE_YEARS.contains(&year) {
        let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
        return Some(if month == 2 && leap {
            29
        } else {
            u32::from(DAYS[month as usize - 1])
        });
    }
    let first_of_next = if month == 12 {
        NaiveDate::from_ymd_opt(year + 1, 1, 1)?
    } else {
        NaiveDate::from_ymd_opt(year, month + 1, 1)?
    };
    first_of_next.pred_opt().map(|date| date.day())
}

/// `base` plus a whole number of days, months or years (termination windows).
pub(crate) fn add_period(base: NaiveDate, unit: PeriodUnit, length: u32) -> Option<NaiveDate> {
    step(
        base,
        unit,
        length,
        1,
        DayOfMonth::VestingStartDayOrLastDay,
        base,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(year: i32, month: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(year, month, day).expect("valid date")
    }

    #[test]
    fn a_month_after_the_31st_is_the_last_day_of_a_shorter_month_and_recovers_after() {
        let start = date(2022, 12, 31);
        let rule = DayOfMonth::VestingStartDayOrLastDay;
        assert_eq!(
            step(start, PeriodUnit::Months, 1, 2, rule, start),
            Some(date(2023, 2, 28))
        );
        assert_eq!(
            step(date(2024, 2, 29), PeriodUnit::Months, 1, 1, rule, start),
            Some(date(2024, 3, 31))
        );
    }

    #[test]
    fn the_month_length_table_agrees_with_chrono_everywhere_it_is_used_and_at_the_edges() {
        let chrono_says = |year: i32, month: u32| {
            let first_of_next = if month == 12 {
                NaiveDate::from_ymd_opt(year + 1, 1, 1)?
            } else {
                NaiveDate::from_ymd_opt(year, month + 1, 1)?
            };
            first_of_next.pred_opt().map(|date| date.day())
        };
        let years = (-2_000..=3_000)
            .chain([-200_001, -200_000, 199_999, 200_000, 200_001])
            .chain([-262_145, -262_144, -262_143, 262_142, 262_143, 262_144]);
        for year in years {
            for month in 0..=13 {
                assert_eq!(
                    last_day_of_month(year, month),
                    chrono_says(year, month),
                    "{year}-{month}"
                );
            }
        }
    }

    #[test]
    fn counting_installments_until_a_date_agrees_with_counting_one_by_one() {
        let rules = [
            DayOfMonth::VestingStartDayOrLastDay,
            DayOfMonth::LastDay,
            DayOfMonth::Fixed(30),
        ];
        let bases = [date(2023, 1, 31), date(2024, 2, 29), date(2024, 12, 15)];
        for (base, unit, length, rule) in bases.into_iter().flat_map(|base| {
            [PeriodUnit::Months, PeriodUnit::Days]
                .into_iter()
                .flat_map(move |unit| {
                    [0u32, 1, 2, 3, 7, 12, 30]
                        .into_iter()
                        .flat_map(move |length| rules.map(|rule| (base, unit, length, rule)))
                })
        }) {
            let steps = Steps::new(base, unit, length, rule, date(2020, 5, 31));
            for (first, last) in [(0, 0), (1, 1), (1, 36), (12, 48), (3, 5)] {
                let mut as_of = base - chrono::Days::new(40);
                let end = base + chrono::Days::new(u64::from(length * last) * 31 + 40);
                while as_of <= end {
                    let counted = (first..=last)
                        .filter(|number| steps.nth(*number).is_some_and(|day| day <= as_of))
                        .count() as u32;
                    assert_eq!(
                        steps.count_until(first, last, as_of),
                        counted,
                        "{base} {unit:?} {length} {rule:?} {first}..={last} until {as_of}"
                    );
                    as_of = as_of + chrono::Days::new(if length > 2 { 11 } else { 3 });
                }
            }
        }
    }

    #[test]
    fn fixed_and_last_day_rules_pick_their_day() {
        let start = date(2024, 1, 10);
        assert_eq!(
            step(start, PeriodUnit::Months, 1, 1, DayOfMonth::LastDay, start),
            Some(date(2024, 2, 29))
        );
        assert_eq!(
            step(
                start,
                PeriodUnit::Months,
                3,
                1,
                DayOfMonth::Fixed(30),
                start
            ),
            Some(date(2024, 4, 30))
        );
        assert_eq!(
            step(start, PeriodUnit::Days, 30, 2, DayOfMonth::LastDay, start),
            Some(date(2024, 3, 10))
        );
    }
}
