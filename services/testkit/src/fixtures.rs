//! Requests and terms tests and tools share, so one fixture means one thing
//! everywhere.

use qapmap_proto::common::v1::Decimal;
use qapmap_proto::equity::v1 as equity;

fn decimal(value: &str) -> Option<Decimal> {
    Some(Decimal {
        value: value.to_owned(),
    })
}

/// OCF's 4-year, 1-year-cliff terms (samples/VestingTerms.ocf.json): 12/48
/// at the cliff, then 1/48 monthly on the start day or the month's last day,
/// rounded cumulatively.
pub fn four_year_one_year_cliff() -> equity::VestingTerms {
    use equity::vesting_condition::Amount;
    use equity::vesting_trigger::Trigger;
    let relative = |length, occurrences, to: &str| {
        Trigger::Relative(equity::RelativeTrigger {
            period: Some(equity::VestingPeriod {
                length,
                period_type: equity::PeriodType::Months as i32,
                occurrences,
                day_of_month: equity::VestingDayOfMonth::VestingStartDayOrLastDayOfMonth as i32,
                day_of_month_number: 0,
                cliff_installment: 0,
            }),
            relative_to_condition_id: to.to_owned(),
        })
    };
    let portion = |numerator: &str| {
        Amount::Portion(equity::VestingPortion {
            numerator: decimal(numerator),
            denominator: decimal("48"),
            remainder: false,
        })
    };
    let condition = |id: &str, amount, trigger, next: &[&str]| equity::VestingCondition {
        id: id.to_owned(),
        description: String::new(),
        amount: Some(amount),
        trigger: Some(equity::VestingTrigger {
            trigger: Some(trigger),
        }),
        next_condition_ids: next.iter().map(|n| (*n).to_owned()).collect(),
    };
    equity::VestingTerms {
        id: "4y-1y-cliff".into(),
        name: "Four Year / One Year Cliff".into(),
        description: String::new(),
        allocation_type: equity::AllocationType::CumulativeRounding as i32,
        conditions: vec![
            condition(
                "start",
                Amount::Quantity(Decimal { value: "0".into() }),
                Trigger::VestingStart(equity::VestingStartTrigger {}),
                &["cliff"],
            ),
            condition(
                "cliff",
                portion("12"),
                relative(12, 1, "start"),
                &["monthly"],
            ),
            condition("monthly", portion("1"), relative(1, 36, "cliff"), &[]),
        ],
    }
}
