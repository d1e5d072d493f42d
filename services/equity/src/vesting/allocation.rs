//! OCF allocation types: how exact (fractional) tranche amounts become the
//! amounts that actually vest. Works on cumulative exact amounts so that a
//! long schedule of thirds or 48ths still sums to exactly the total.
//!
//! Two ways to the same numbers. The reference is rust_decimal throughout
//! (`resolve_with_decimals` and `allocate`): each installment's portion is
//! `total * numerator / denominator`, rounded by rust_decimal to ~28
//! significant digits, the running total is rounded to 10 places, then the
//! allocation type applies. The integer path (`IntegerPlan`) computes the same
//! exact amounts as fractions over one common denominator (the lcm of the
//! portions' denominators) in `u64`, with no rounding at all, and rounds only
//! where the reference rounds to 10 places and to whole units.
//!
//! Why the results are identical: rust_decimal's rounding errors are at most
//! one unit in the 28th significant digit per operation, so after `ops`
//! operations on values below `magnitude` the reference's running total is
//! within `ops * magnitude * 1e-27` of the exact one. An exact running total
//! `whole + r / L` is a multiple of `1e-10 / L` away from any 10-place value,
//! and (with at most ten factors of 2 in `L`) at least `1e-10 / (2 L)` away
//! from any halfway point, so while `ops * magnitude * 1e-27` is below that
//! — checked per schedule with a further factor of 100 to spare — rounding to
//! 10 places gives the same value both ways, and from there the reference's
//! arithmetic is exact. Amounts that are exactly zero are the one other place
//! an error could show (a tiny positive amount keeps a tranche the exact path
//! drops): a zero that rust_decimal also computes exactly (a zero quantity or
//! numerator, no installments) is dropped; any other zero takes the reference
//! path. Everything the plan cannot bound (fractional award quantities,
//! fractional or huge condition quantities, portions above one, remainder
//! portions other than n/n, denominators above 10^8, awards above 10^15)
//! takes the reference path too.

use rust_decimal::{Decimal, RoundingStrategy};

use super::walk::Run;
use super::{AllocationType, Amount, MAX_OCCURRENCES, Slot, Source, VestingTerms};

/// Exact amounts are kept to OCF's 10 decimal places.
const EXACT_SCALE: u32 = 10;
/// One whole unit in units of the exact scale.
pub(super) const UNIT: u64 = 10_000_000_000;
/// The largest award or condition quantity the integer path takes.
const MAX_INTEGER_QUANTITY: u64 = 1_000_000_000_000_000;
/// The largest common denominator the integer path takes.
const MAX_INTEGER_DENOMINATOR: u64 = 100_000_000;
/// 10^0 to 10^8: the scales a portion on the integer path can have.
const POWERS_OF_TEN: [u64; 9] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
];
/// `ops * magnitude * 2 * denominator` must stay below this: the rounding
/// margin of the module documentation, 1e-25 per operation against 1e-10.
const ERROR_BUDGET: u128 = 1_000_000_000_000_000;

/// Resolves each slot's exact amount (a remainder portion sees what vested
/// before it), drops the slots that vest nothing, and allocates the rest by
/// `terms.allocation`, normalized. Returns the allocated total when the
/// integer path did the work (every quantity is then non-negative).
pub(super) fn allocate_slots(
    terms: &VestingTerms,
    total: Decimal,
    slots: &mut Vec<Slot>,
) -> Option<Decimal> {
    if let Some(plan) = IntegerPlan::new(terms, total, slots.iter().map(Stretch::of_slot))
        && plan.resolve(terms, slots)
    {
        return Some(plan.allocate(terms.allocation, slots));
    }
    resolve_with_decimals(terms, total, slots);
    None
}

#[cfg(test)]
pub(super) fn takes_integer_path(terms: &VestingTerms, total: Decimal, slots: &[Slot]) -> bool {
    let mut slots = slots.to_vec();
    IntegerPlan::new(terms, total, slots.iter().map(Stretch::of_slot))
        .is_some_and(|plan| plan.resolve(terms, &mut slots))
}

/// The reference path: rust_decimal as the engine always computed it.
fn resolve_with_decimals(terms: &VestingTerms, total: Decimal, slots: &mut Vec<Slot>) {
    let mut vested = Decimal::ZERO;
    for slot in slots.iter_mut() {
        let Source::Condition(index) = slot.source else {
            continue;
        };
        let mut amount = Decimal::ZERO;
        for _ in 0..slot.installments {
            let one = match terms.conditions[index as usize].amount {
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
        slot.quantity = amount;
    }
    slots.retain(|slot| slot.quantity > Decimal::ZERO);
    let exact: Vec<Decimal> = slots.iter().map(|slot| slot.quantity).collect();
    for (slot, quantity) in slots.iter_mut().zip(allocate(terms.allocation, &exact)) {
        slot.quantity = quantity.normalize();
    }
}

/// What one installment of a condition vests, for the integer path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Part {
    /// Nothing, however many installments; rust_decimal computes exactly
    /// zero too (a zero quantity, or a zero numerator).
    Zero,
    /// A whole quantity.
    Whole(u64),
    /// `numerator / denominator` of the award, at most all of it.
    Fraction { numerator: u64, denominator: u64 },
    /// Everything still unvested: a remainder portion of n/n.
    Rest,
}

impl Part {
    /// `None` where the integer path cannot follow the reference exactly.
    pub(super) fn of(amount: &Amount) -> Option<Self> {
        match *amount {
            Amount::Quantity(quantity) => {
                let whole = whole(quantity)?;
                Some(if whole == 0 {
                    Self::Zero
                } else {
                    Self::Whole(whole)
                })
            }
            Amount::Portion {
                numerator,
                denominator,
                remainder,
            } => {
                let (numerator_digits, numerator_scale) = unsigned(numerator)?;
                let (denominator_digits, denominator_scale) = unsigned(denominator)?;
                if denominator_digits == 0 {
                    // The reference divides by zero; let it.
                    return None;
                }
                if numerator_digits == 0 {
                    return Some(Self::Zero);
                }
                // n / d = n_digits * 10^d_scale / (d_digits * 10^n_scale),
                // all at most MAX_INTEGER_DENOMINATOR (10^8).
                let small = |digits: u128| {
                    u64::try_from(digits)
                        .ok()
                        .filter(|digits| *digits <= MAX_INTEGER_DENOMINATOR)
                };
                let power = |scale: u32| POWERS_OF_TEN.get(scale as usize).copied();
                let top = small(numerator_digits)?.checked_mul(power(denominator_scale)?)?;
                let bottom = small(denominator_digits)?.checked_mul(power(numerator_scale)?)?;
                if bottom > MAX_INTEGER_DENOMINATOR || top > bottom {
                    return None;
                }
                if remainder {
                    return (top == bottom).then_some(Self::Rest);
                }
                Some(Self::Fraction {
                    numerator: top,
                    denominator: bottom,
                })
            }
        }
    }
}

/// Mantissa and scale of a value that is not negative.
fn unsigned(value: Decimal) -> Option<(u128, u32)> {
    if value.is_sign_negative() && !value.is_zero() {
        return None;
    }
    Some((value.mantissa().unsigned_abs(), value.scale()))
}

/// A whole, non-negative value up to `MAX_INTEGER_QUANTITY`.
fn whole(value: Decimal) -> Option<u64> {
    let (digits, scale) = unsigned(value)?;
    let whole = if scale == 0 {
        digits
    } else {
        let power = 10u128.checked_pow(scale)?;
        if !digits.is_multiple_of(power) {
            return None;
        }
        digits / power
    };
    u64::try_from(whole)
        .ok()
        .filter(|whole| *whole <= MAX_INTEGER_QUANTITY)
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Consecutive tranches of one condition, as the plan sees them.
#[derive(Debug, Clone, Copy)]
pub(super) struct Stretch {
    /// The condition's index; `None` for a tranche of no condition.
    condition: Option<u32>,
    tranches: u64,
    /// Installments over all the tranches, and the most merged into one.
    installments: u64,
    most_installments: u64,
}

impl Stretch {
    fn of_slot(slot: &Slot) -> Self {
        let installments = u64::from(slot.installments);
        Self {
            condition: match slot.source {
                Source::Condition(index) => Some(index),
                _ => None,
            },
            tranches: 1,
            installments,
            most_installments: installments,
        }
    }

    pub(super) fn of_run(run: &Run) -> Self {
        let (first, rest) = (
            u64::from(run.first_installments()),
            u64::from(run.len() - 1),
        );
        Self {
            condition: Some(run.condition),
            tranches: rest + 1,
            installments: first + rest,
            most_installments: first.max(rest.min(1)),
        }
    }
}

/// The integer path for one schedule: the award's quantity and the common
/// denominator of every portion on the walk.
#[derive(Debug, Clone, Copy)]
pub(super) struct IntegerPlan {
    pub(super) total: u64,
    pub(super) denominator: u64,
}

impl IntegerPlan {
    /// Checks that the integer path gives the reference's results for the
    /// walk's tranches (module documentation); `None` sends them to the
    /// reference.
    pub(super) fn new(
        terms: &VestingTerms,
        total: Decimal,
        stretches: impl IntoIterator<Item = Stretch>,
    ) -> Option<Self> {
        let total = whole(total)?;
        let mut denominator = 1u64;
        let mut largest_quantity = total;
        let mut most_installments = 1u64;
        let mut installments = 0u64;
        let mut tranches = 0u64;
        let mut previous = None;
        for stretch in stretches {
            let index = stretch.condition?;
            installments = installments.saturating_add(stretch.installments);
            tranches = tranches.saturating_add(stretch.tranches);
            most_installments = most_installments.max(stretch.most_installments);
            if previous == Some(index) {
                continue;
            }
            previous = Some(index);
            match Part::of(&terms.conditions[index as usize].amount)? {
                Part::Fraction {
                    denominator: bottom,
                    ..
                } if !denominator.is_multiple_of(bottom) => {
                    denominator = (denominator / gcd(denominator, bottom))
                        .checked_mul(bottom)
                        .filter(|lcm| *lcm <= MAX_INTEGER_DENOMINATOR)?;
                }
                Part::Whole(quantity) => largest_quantity = largest_quantity.max(quantity),
                _ => {}
            }
        }
        if most_installments > u64::from(MAX_OCCURRENCES) || denominator.trailing_zeros() > 10 {
            return None;
        }
        let ops = 5 * u128::from(installments) + 6 * u128::from(tranches) + 10;
        let magnitude = u128::from(most_installments) * u128::from(largest_quantity) + 1;
        let error = ops
            .saturating_mul(magnitude)
            .saturating_mul(2 * u128::from(denominator));
        (error < ERROR_BUDGET).then_some(Self { total, denominator })
    }

    /// The exact cumulative amount vested through each slot, and whether the
    /// slot vests anything; `false` if a zero amount might not be zero in the
    /// reference (the slots are then as they were, for it).
    fn resolve(&self, terms: &VestingTerms, slots: &mut [Slot]) -> bool {
        let (total, denominator) = (self.total, self.denominator);
        // Vested so far: whole + fraction / denominator, fraction < denominator.
        let (mut whole, mut fraction) = (0u64, 0u64);
        // The last condition's part and one installment of it.
        let mut last: Option<(u32, Part, u64, u64)> = None;
        for slot in slots.iter_mut() {
            let Source::Condition(index) = slot.source else {
                return false;
            };
            let (part, one_whole, one_fraction) = match last {
                Some((previous, part, one_whole, one_fraction)) if previous == index => {
                    (part, one_whole, one_fraction)
                }
                _ => {
                    let Some(part) = Part::of(&terms.conditions[index as usize].amount) else {
                        return false;
                    };
                    let (one_whole, one_fraction) = match part {
                        Part::Fraction {
                            numerator,
                            denominator: bottom,
                        } => {
                            let product = u128::from(total) * u128::from(numerator);
                            let (quotient, rest) = match u64::try_from(product) {
                                Ok(product) => (product / bottom, product % bottom),
                                Err(_) => (
                                    (product / u128::from(bottom)) as u64,
                                    (product % u128::from(bottom)) as u64,
                                ),
                            };
                            (quotient, rest * (denominator / bottom))
                        }
                        _ => (0, 0),
                    };
                    last = Some((index, part, one_whole, one_fraction));
                    (part, one_whole, one_fraction)
                }
            };
            let count = u64::from(slot.installments);
            let unvested = if fraction == 0 {
                (total - whole, 0)
            } else {
                (total - whole - 1, denominator - fraction)
            };
            let (sum, exactly_zero) = match part {
                Part::Zero => ((0, 0), true),
                Part::Whole(quantity) => ((count * quantity, 0), count == 0),
                Part::Fraction { .. } => {
                    let sum = if count == 1 {
                        (one_whole, one_fraction)
                    } else {
                        let fractions = count * one_fraction;
                        (
                            count * one_whole + fractions / denominator,
                            fractions % denominator,
                        )
                    };
                    (sum, sum == (0, 0))
                }
                Part::Rest if count == 0 => ((0, 0), true),
                Part::Rest => (unvested, false),
            };
            let amount = sum.min(unvested);
            if amount == (0, 0) {
                if !exactly_zero {
                    return false;
                }
                slot.vests = false;
                continue;
            }
            whole += amount.0;
            fraction += amount.1;
            if fraction >= denominator {
                fraction -= denominator;
                whole += 1;
            }
            slot.vests = true;
            slot.vested_whole = whole;
            // Below the denominator, at most 10^8.
            slot.vested_fraction = fraction as u32;
        }
        true
    }

    /// Keeps the slots that vest and sets their allocated quantities; returns
    /// their total.
    fn allocate(&self, allocation: AllocationType, slots: &mut Vec<Slot>) -> Decimal {
        slots.retain(|slot| slot.vests);
        let Some(last) = slots.last() else {
            return Decimal::ZERO;
        };
        let denominator = self.denominator;
        let exact = |slot: &Slot| {
            to_exact_scale(
                slot.vested_whole,
                u64::from(slot.vested_fraction),
                denominator,
            )
        };
        let total = exact(last);
        let count = slots.len();
        match allocation {
            AllocationType::Fractional => {
                let mut previous = 0;
                for slot in slots.iter_mut() {
                    let cumulative = exact(slot);
                    slot.quantity = units_to_decimal(cumulative - previous);
                    previous = cumulative;
                }
            }
            AllocationType::CumulativeRounding | AllocationType::CumulativeRoundDown => {
                let half = allocation == AllocationType::CumulativeRounding;
                let mut previous = 0;
                for (index, slot) in slots.iter_mut().enumerate() {
                    let rounded = if index + 1 == count {
                        total
                    } else {
                        let fraction = u64::from(slot.vested_fraction);
                        let whole =
                            slot.vested_whole + u64::from(rounds_up(fraction, denominator, half));
                        (u128::from(whole) * u128::from(UNIT)).min(total)
                    };
                    slot.quantity = units_to_decimal(rounded - previous);
                    previous = rounded;
                }
            }
            AllocationType::FrontLoaded
            | AllocationType::BackLoaded
            | AllocationType::FrontLoadedToSingleTranche
            | AllocationType::BackLoadedToSingleTranche => {
                // Each tranche's exact amount rounded down; the whole units
                // (and the fraction) left over go where `spread_remainder`
                // hands them out.
                let mut previous = 0;
                let mut floors = 0u128;
                for slot in slots.iter_mut() {
                    let cumulative = exact(slot);
                    let amount = cumulative - previous;
                    previous = cumulative;
                    let floor = amount / u128::from(UNIT);
                    floors += floor * u128::from(UNIT);
                    slot.vested_whole = floor as u64;
                }
                let remainder = total - floors;
                // Every tranche loses less than a unit to its floor.
                let units = (remainder / u128::from(UNIT)) as usize;
                let fraction = remainder % u128::from(UNIT);
                debug_assert!(units < count, "{units} units over {count} tranches");
                let extra = |index: usize| {
                    if count == 1 {
                        return remainder;
                    }
                    // Place in the order `spread_remainder` hands units out.
                    let position = match allocation {
                        AllocationType::FrontLoaded => index,
                        AllocationType::BackLoaded => count - 1 - index,
                        AllocationType::FrontLoadedToSingleTranche => {
                            return if index == 0 { remainder } else { 0 };
                        }
                        _ => return if index == count - 1 { remainder } else { 0 },
                    };
                    match position.cmp(&units) {
                        std::cmp::Ordering::Less => u128::from(UNIT),
                        std::cmp::Ordering::Equal => fraction,
                        std::cmp::Ordering::Greater => 0,
                    }
                };
                for (index, slot) in slots.iter_mut().enumerate() {
                    let floor = u128::from(slot.vested_whole) * u128::from(UNIT);
                    slot.quantity = units_to_decimal(floor + extra(index));
                }
            }
        }
        units_to_decimal(total)
    }
}

/// `whole + fraction / denominator` rounded to 10 places (half to even, as
/// `round_dp`), in units of 1e-10. `fraction < denominator <= 10^8`.
pub(super) fn to_exact_scale(whole: u64, fraction: u64, denominator: u64) -> u128 {
    // No exact halfway case: at most ten factors of 2 in the denominator.
    u128::from(whole) * u128::from(UNIT)
        + u128::from((2 * fraction * UNIT + denominator) / (2 * denominator))
}

/// Whether `fraction / denominator`, rounded to 10 places (half to even),
/// rounds the whole part up: from one half (MidpointAwayFromZero, `half`), or
/// only when it rounds to a whole unit already (ToZero).
pub(super) fn rounds_up(fraction: u64, denominator: u64, half: bool) -> bool {
    let twice = 2 * fraction * UNIT;
    if half {
        twice >= (UNIT - 1) * denominator
    } else {
        twice >= (2 * UNIT - 1) * denominator
    }
}

/// An exact amount in units of `1 / denominator` as whole and fraction.
pub(super) fn split(amount: u128, denominator: u64) -> (u64, u64) {
    match u64::try_from(amount) {
        Ok(amount) => (amount / denominator, amount % denominator),
        Err(_) => (
            (amount / u128::from(denominator)) as u64,
            (amount % u128::from(denominator)) as u64,
        ),
    }
}

/// A non-negative amount in units of 1e-10 (at most 10^25, well inside 96
/// bits), normalized (no trailing zeros), as `Decimal::normalize` leaves it.
pub(super) fn units_to_decimal(units: u128) -> Decimal {
    let (whole, fraction) = match u64::try_from(units) {
        Ok(units) => (u128::from(units / UNIT), units % UNIT),
        Err(_) => (units / u128::from(UNIT), (units % u128::from(UNIT)) as u64),
    };
    let (mantissa, scale) = if fraction == 0 {
        (whole, 0)
    } else {
        let (mut digits, mut scale) = (fraction, EXACT_SCALE);
        while digits.is_multiple_of(10) {
            digits /= 10;
            scale -= 1;
        }
        (whole * 10u128.pow(scale) + u128::from(digits), scale)
    };
    debug_assert!(mantissa >> 96 == 0);
    Decimal::from_parts(
        mantissa as u32,
        (mantissa >> 32) as u32,
        (mantissa >> 64) as u32,
        false,
        scale,
    )
}

/// The amount of each tranche under `allocation`, given each tranche's exact
/// amount. The result has the same length and sums to the exact total.
fn allocate(allocation: AllocationType, exact: &[Decimal]) -> Vec<Decimal> {
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

/// Rounds the running total, never past the exact total (which a fractional
/// total would otherwise overshoot), and vests the differences.
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

/// Rounds every tranche down to whole units and hands the units left over to
/// the tranches `spread` names. A total that is not whole leaves a fraction,
/// which goes with the last unit handed out.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn eighteen_over_four(allocation: AllocationType) -> Vec<Decimal> {
        allocate(allocation, &[Decimal::new(45, 1); 4])
    }

    fn whole(values: [i64; 4]) -> Vec<Decimal> {
        values.into_iter().map(Decimal::from).collect()
    }

    #[test]
    fn the_ocf_schema_table_of_18_shares_over_4_tranches_is_reproduced_for_every_type() {
        use AllocationType::*;
        assert_eq!(eighteen_over_four(CumulativeRounding), whole([5, 4, 5, 4]));
        assert_eq!(eighteen_over_four(CumulativeRoundDown), whole([4, 5, 4, 5]));
        assert_eq!(eighteen_over_four(FrontLoaded), whole([5, 5, 4, 4]));
        assert_eq!(eighteen_over_four(BackLoaded), whole([4, 4, 5, 5]));
        assert_eq!(
            eighteen_over_four(FrontLoadedToSingleTranche),
            whole([6, 4, 4, 4])
        );
        assert_eq!(
            eighteen_over_four(BackLoadedToSingleTranche),
            whole([4, 4, 4, 6])
        );
        assert_eq!(eighteen_over_four(Fractional), vec![Decimal::new(45, 1); 4]);
    }

    #[test]
    fn thirds_still_sum_to_the_exact_total() {
        let third = Decimal::from(100) / Decimal::from(3);
        for allocation in AllocationType::ALL {
            let amounts = allocate(allocation, &[third, third, third]);
            assert_eq!(
                amounts.iter().sum::<Decimal>(),
                Decimal::from(100),
                "{allocation:?}"
            );
        }
    }
}
