//! The engine as it was before the integer fast path (commit dc2ff52),
//! kept verbatim as the oracle the property tests compare against: rust_decimal
//! throughout, a `String` per raw tranche, a `HashMap` of happened conditions,
//! chrono for every month length. Slow (~14 µs per 4-year award) and simple.

use std::collections::HashMap;

use chrono::{Datelike, Days, NaiveDate};
use rust_decimal::{Decimal, RoundingStrategy};

use super::{
    ACCELERATION_CONDITION_ID, AllocationType, Amount, Condition, DayOfMonth,
    IMMEDIATE_CONDITION_ID, MAX_CONDITIONS, PeriodUnit, Tranche, Trigger, VestingFacts,
    VestingTerms,
};

pub(super) fn schedule(terms: Option<&VestingTerms>, facts: &VestingFacts<'_>) -> Vec<Tranche> {
    let mut tranches = match terms {
        None => vec![Tranche {
            date: facts.grant_date,
            quantity: facts.quantity,
            condition_id: IMMEDIATE_CONDITION_ID.to_owned(),
        }],
        Some(terms) => allocated_tranches(terms, facts),
    };
    for acceleration in facts.accelerations {
        tranches.push(Tranche {
            date: acceleration.date,
            quantity: acceleration.quantity,
            condition_id: ACCELERATION_CONDITION_ID.to_owned(),
        });
    }
    tranches.sort_by_key(|tranche| tranche.date);
    cap(tranches, facts.vesting_cap)
}

pub(super) fn vested_as_of(tranches: &[Tranche], as_of: NaiveDate) -> Decimal {
    tranches
        .iter()
        .filter(|tranche| tranche.date <= as_of)
        .map(|tranche| tranche.quantity)
        .sum()
}

fn cap(tranches: Vec<Tranche>, limit: Decimal) -> Vec<Tranche> {
    let mut running = Decimal::ZERO;
    let mut kept = Vec::with_capacity(tranches.len());
    for mut tranche in tranches {
        let room = limit - running;
        if room <= Decimal::ZERO {
            break;
        }
        tranche.quantity = tranche.quantity.min(room);
        running += tranche.quantity;
        kept.push(tranche);
    }
    kept
}

fn allocated_tranches(terms: &VestingTerms, facts: &VestingFacts<'_>) -> Vec<Tranche> {
    let raw = walk(terms, facts);
    let exact = exact_amounts(&raw, facts.quantity);
    let (dated, amounts): (Vec<_>, Vec<_>) = raw
        .into_iter()
        .zip(exact)
        .filter(|(_, amount)| *amount > Decimal::ZERO)
        .unzip();
    let allocated = allocate(terms.allocation, &amounts);
    dated
        .into_iter()
        .zip(allocated)
        .map(|(raw, quantity)| Tranche {
            date: raw.date,
            quantity: quantity.normalize(),
            condition_id: raw.condition_id,
        })
        .collect()
}

#[derive(Debug, Clone)]
struct RawTranche {
    date: NaiveDate,
    amount: Amount,
    installments: u32,
    condition_id: String,
}

fn exact_amounts(raw: &[RawTranche], total: Decimal) -> Vec<Decimal> {
    let mut vested = Decimal::ZERO;
    raw.iter()
        .map(|tranche| {
            let mut amount = Decimal::ZERO;
            for _ in 0..tranche.installments {
                let one = match tranche.amount {
                    Amount::Quantity(quantity) => quantity,
                    Amount::Portion {
                        numerator,
                        denominator,
                        remainder,
                    } => {
                        let base = if remainder {
                            total - vested - amount
                        } else {
                            total
                        };
                        base * numerator / denominator
                    }
                };
                amount += one;
            }
            let amount = amount.min(total - vested).max(Decimal::ZERO);
            vested += amount;
            amount
        })
        .collect()
}

fn walk(terms: &VestingTerms, facts: &VestingFacts<'_>) -> Vec<RawTranche> {
    let mut happened: HashMap<&str, NaiveDate> = HashMap::new();
    let mut raw = Vec::new();
    let Some(mut current) = terms
        .conditions
        .iter()
        .find(|condition| condition.trigger == Trigger::VestingStart)
    else {
        return raw;
    };
    happened.insert(current.id.as_str(), facts.vesting_start);
    raw.push(RawTranche {
        date: facts.vesting_start,
        amount: current.amount,
        installments: 1,
        condition_id: current.id.clone(),
    });
    for _ in 0..MAX_CONDITIONS {
        let chosen = current
            .next
            .iter()
            .filter_map(|id| terms.conditions.iter().find(|c| c.id == *id))
            .filter_map(|candidate| {
                first_date(candidate, &happened, facts).map(|date| (date, candidate))
            })
            .min_by_key(|(date, _)| *date);
        let Some((_, next)) = chosen else { break };
        let installments = installments(next, &happened, facts);
        let Some(last) = installments.last() else {
            break;
        };
        happened.insert(next.id.as_str(), last.date);
        raw.extend(installments);
        current = next;
    }
    raw
}

fn first_date(
    condition: &Condition,
    happened: &HashMap<&str, NaiveDate>,
    facts: &VestingFacts<'_>,
) -> Option<NaiveDate> {
    match &condition.trigger {
        Trigger::VestingStart => None,
        Trigger::Absolute(date) => Some(*date),
        Trigger::Event => facts.events.get(&condition.id).copied(),
        Trigger::Relative {
            period,
            relative_to,
        } => {
            let base = happened.get(relative_to.as_str())?;
            step(
                *base,
                period.unit,
                period.length,
                1,
                period.day_of_month,
                facts.vesting_start,
            )
        }
    }
}

fn installments(
    condition: &Condition,
    happened: &HashMap<&str, NaiveDate>,
    facts: &VestingFacts<'_>,
) -> Vec<RawTranche> {
    let single = |date| {
        vec![RawTranche {
            date,
            amount: condition.amount,
            installments: 1,
            condition_id: condition.id.clone(),
        }]
    };
    match &condition.trigger {
        Trigger::VestingStart => Vec::new(),
        Trigger::Absolute(date) => single(*date),
        Trigger::Event => facts
            .events
            .get(&condition.id)
            .copied()
            .map_or_else(Vec::new, single),
        Trigger::Relative {
            period,
            relative_to,
        } => {
            let Some(base) = happened.get(relative_to.as_str()) else {
                return Vec::new();
            };
            let cliff = period.cliff_installment.max(1).min(period.occurrences);
            (cliff..=period.occurrences)
                .filter_map(|number| {
                    let date = step(
                        *base,
                        period.unit,
                        period.length,
                        number,
                        period.day_of_month,
                        facts.vesting_start,
                    )?;
                    Some(RawTranche {
                        date,
                        amount: condition.amount,
                        installments: if number == cliff { cliff } else { 1 },
                        condition_id: condition.id.clone(),
                    })
                })
                .collect()
        }
    }
}

pub(super) fn step(
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

pub(super) fn last_day_of_month(year: i32, month: u32) -> Option<u32> {
    let first_of_next = if month == 12 {
        NaiveDate::from_ymd_opt(year + 1, 1, 1)?
    } else {
        NaiveDate::from_ymd_opt(year, month + 1, 1)?
    };
    first_of_next.pred_opt().map(|date| date.day())
}

// Allocation, as allocation.rs had it.

const EXACT_SCALE: u32 = 10;

pub(super) fn allocate(allocation: AllocationType, exact: &[Decimal]) -> Vec<Decimal> {
    let cumulative = cumulative_exact(exact);
    let total = cumulative.last().copied().unwrap_or_default();
    let per_tranche = differences(&cumulative);
    match allocation {
        AllocationType::Fractional => per_tranche,
        AllocationType::CumulativeRounding => cumulative_whole(&cumulative, total, |value| {
            value.round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero)
        }),
        AllocationType::CumulativeRoundDown => cumulative_whole(&cumulative, total, |value| {
            value.round_dp_with_strategy(0, RoundingStrategy::ToZero)
        }),
        AllocationType::FrontLoaded => spread_remainder(&per_tranche, total, Spread::EachFromFront),
        AllocationType::BackLoaded => spread_remainder(&per_tranche, total, Spread::EachFromBack),
        AllocationType::FrontLoadedToSingleTranche => {
            spread_remainder(&per_tranche, total, Spread::AllToFirst)
        }
        AllocationType::BackLoadedToSingleTranche => {
            spread_remainder(&per_tranche, total, Spread::AllToLast)
        }
    }
}

fn cumulative_exact(exact: &[Decimal]) -> Vec<Decimal> {
    let mut running = Decimal::ZERO;
    exact
        .iter()
        .map(|amount| {
            running += amount;
            running.round_dp(EXACT_SCALE)
        })
        .collect()
}

fn differences(cumulative: &[Decimal]) -> Vec<Decimal> {
    let mut previous = Decimal::ZERO;
    cumulative
        .iter()
        .map(|value| {
            let amount = value - previous;
            previous = *value;
            amount
        })
        .collect()
}

fn cumulative_whole(
    cumulative: &[Decimal],
    total: Decimal,
    round: impl Fn(Decimal) -> Decimal,
) -> Vec<Decimal> {
    let last = cumulative.len().saturating_sub(1);
    let rounded: Vec<Decimal> = cumulative
        .iter()
        .enumerate()
        .map(|(index, value)| {
            if index == last {
                total
            } else {
                round(*value).min(total)
            }
        })
        .collect();
    differences(&rounded)
}

#[derive(Debug, Clone, Copy)]
enum Spread {
    EachFromFront,
    EachFromBack,
    AllToFirst,
    AllToLast,
}

fn spread_remainder(per_tranche: &[Decimal], total: Decimal, spread: Spread) -> Vec<Decimal> {
    let mut amounts: Vec<Decimal> = per_tranche.iter().map(|amount| amount.floor()).collect();
    if amounts.is_empty() {
        return amounts;
    }
    let mut remainder = total - amounts.iter().sum::<Decimal>();
    let count = amounts.len();
    let order: Vec<usize> = match spread {
        Spread::EachFromFront => (0..count).collect(),
        Spread::EachFromBack => (0..count).rev().collect(),
        Spread::AllToFirst => vec![0],
        Spread::AllToLast => vec![count - 1],
    };
    let mut position = 0;
    while remainder > Decimal::ZERO {
        let index = order[position % order.len()];
        let unit = if order.len() == 1 || remainder < Decimal::ONE {
            remainder
        } else {
            Decimal::ONE
        };
        amounts[index] += unit;
        remainder -= unit;
        position += 1;
    }
    amounts
}
