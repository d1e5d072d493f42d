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
    let count = length.checked_mul(steps)?;
    match unit {
        PeriodUnit::Days => base.checked_add_days(Days::new(u64::from(count))),
        PeriodUnit::Months => {
            let months_since_year_zero = base.year() * 12 + base.month0() as i32 + count as i32;
            let year = months_since_year_zero.div_euclid(12);
            let month = months_since_year_zero.rem_euclid(12) as u32 + 1;
            let wanted_day = match day_of_month {
                DayOfMonth::VestingStartDayOrLastDay => vesting_start.day(),
                DayOfMonth::LastDay => 31,
                DayOfMonth::Fixed(day) => u32::from(day),
            };
            let day = wanted_day.min(last_day_of_month(year, month)?);
            NaiveDate::from_ymd_opt(year, month, day)
        }
    }
}

/// 28 to 31.
pub(crate) fn last_day_of_month(year: i32, month: u32) -> Option<u32> {
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
