//! `vested_on` per condition instead of per installment, under the
//! cumulative allocation types (OCF's default, CumulativeRounding, and
//! CumulativeRoundDown).
//!
//! Under those types the tranches vested by a date sum to the cumulative
//! amount allocated at the last of them: the exact cumulative amount rounded
//! to 10 places, then to whole units, never above the total (the last tranche
//! takes the total itself). The integer path's exact cumulative amount after
//! the j-th tranche of a condition's run is `start + (merged + j - 1) * step`
//! (capped at the award's quantity), so the answer needs the run that holds
//! the date and a bisection over its dates: no schedule, no `Decimal`
//! arithmetic but one comparison with the cap.
//!
//! And the `Decimal` is the one summing the schedule gives, scale included:
//! its quantities are normalized whole numbers, but for the one tranche that
//! reaches a fractional total (then only zeros follow), so the sum has the
//! scale of the normalized cumulative amount.
//!
//! Anything else — another allocation type, accelerations, amounts the
//! integer plan refuses, a zero amount that is not exactly zero in
//! rust_decimal, tranches out of date order, a cap below the total — answers
//! `None`, and the caller builds the schedule.

use chrono::NaiveDate;
use rust_decimal::Decimal;

use super::allocation::{
    IntegerPlan, Part, Stretch, UNIT, rounds_up, split, to_exact_scale, units_to_decimal,
};
use super::walk::Run;
use super::{AllocationType, VestingFacts, VestingTerms};

/// The quantity vested on `as_of` as `vested_as_of(&schedule(..), as_of)`
/// computes it, if it can be had in closed form.
pub(super) fn vested_on(
    terms: &VestingTerms,
    facts: &VestingFacts<'_>,
    runs: &[Run],
    as_of: NaiveDate,
) -> Option<Decimal> {
    let half = match terms.allocation {
        AllocationType::CumulativeRounding => true,
        AllocationType::CumulativeRoundDown => false,
        _ => return None,
    };
    if !facts.accelerations.is_empty() {
        return None;
    }
    let plan = IntegerPlan::new(terms, facts.quantity, runs.iter().map(Stretch::of_run))?;
    let denominator = u128::from(plan.denominator);
    // Everything in units of 1 / denominator.
    let quantity = u128::from(plan.total) * denominator;
    let mut vested = 0u128;
    // Tranches kept, and the cumulative amount at the last one on or before
    // `as_of`.
    let mut tranches = 0u64;
    let mut until = (0u64, 0u128);
    let mut past_as_of = false;
    let mut latest: Option<NaiveDate> = None;
    for run in runs {
        let count = run.len();
        let mut merged = u128::from(run.first_installments());
        let step = match Part::of(&terms.conditions[run.condition as usize].amount)? {
            Part::Zero => continue,
            Part::Whole(each) => u128::from(each) * denominator,
            Part::Fraction {
                numerator,
                denominator: bottom,
            } => {
                u128::from(plan.total)
                    * u128::from(numerator)
                    * u128::from(plan.denominator / bottom)
            }
            Part::Rest if merged == 0 => continue,
            Part::Rest => {
                // All that is unvested, once: a second tranche would vest a
                // zero the reference may not compute exactly.
                if count != 1 || vested >= quantity {
                    return None;
                }
                merged = 1;
                quantity - vested
            }
        };
        if merged == 0 || step == 0 {
            // Exactly zero in rust_decimal too: the tranches are dropped.
            continue;
        }
        let cumulative =
            |tranche: u32| (vested + (merged + u128::from(tranche) - 1) * step).min(quantity);
        // Every tranche vests something only if the total is not reached
        // before the last one.
        let before = if count == 1 {
            vested
        } else {
            cumulative(count - 1)
        };
        if before >= quantity {
            return None;
        }
        let (first, last) = (run.first_date, run.last_date);
        if latest.is_some_and(|latest| first < latest) {
            // The schedule sorts these tranches.
            return None;
        }
        latest = Some(last);
        if !past_as_of {
            let on_or_before = if last <= as_of {
                count
            } else {
                run.count_until(as_of)
            };
            if on_or_before > 0 {
                until = (tranches + u64::from(on_or_before), cumulative(on_or_before));
            }
            past_as_of = on_or_before < count;
        }
        vested = cumulative(count);
        tranches += u64::from(count);
    }
    if tranches == 0 {
        return Some(Decimal::ZERO);
    }
    let (whole, fraction) = split(vested, plan.denominator);
    let total = to_exact_scale(whole, fraction, plan.denominator);
    // The cumulative allocation after tranche `number` (from 1).
    let allocated = |number: u64, cumulative: u128| {
        if number == tranches {
            return total;
        }
        let (whole, fraction) = split(cumulative, plan.denominator);
        let whole = whole + u64::from(rounds_up(fraction, plan.denominator, half));
        (u128::from(whole) * u128::from(UNIT)).min(total)
    };
    // Within the cap, the cap trims nothing; it may drop tranches after the
    // total is reached, but those vest zero and leave the sum as it is (to
    // the scale: adding a normalized zero returns the other operand).
    if units_to_decimal(total) > facts.vesting_cap {
        return None;
    }
    Some(match until {
        (0, _) => Decimal::ZERO,
        (number, cumulative) => units_to_decimal(allocated(number, cumulative)),
    })
}
