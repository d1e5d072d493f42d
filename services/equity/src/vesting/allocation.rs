//! OCF allocation types: how exact (fractional) tranche amounts become the
//! amounts that actually vest. Works on cumulative exact amounts so that a
//! long schedule of thirds or 48ths still sums to exactly the total.

use rust_decimal::{Decimal, RoundingStrategy};

use super::AllocationType;

/// Exact amounts are kept to OCF's 10 decimal places.
const EXACT_SCALE: u32 = 10;

/// The amount of each tranche under `allocation`, given each tranche's exact
/// amount. The result has the same length and sums to the exact total.
pub(crate) fn allocate(allocation: AllocationType, exact: &[Decimal]) -> Vec<Decimal> {
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
