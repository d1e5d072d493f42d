//! The cap table: per holder and class, shares held and options/RSUs
//! outstanding, plus each plan's available pool; fully diluted counts and
//! ownership percentages, exact and rounded for display. [`query`] loads the
//! positions as of a date, [`cache`] keeps the current table in Redis.

pub mod cache;
pub mod current;
pub mod query;

use chrono::NaiveDate;
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::{Decimal, RoundingStrategy};
use uuid::Uuid;

/// Whose row it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    Stakeholder(Uuid),
    /// The available pool of an equity plan.
    Pool(Uuid),
}

/// A row before percentages.
#[derive(Debug, Clone, PartialEq)]
pub struct Position {
    pub holder: Holder,
    pub share_class_id: Uuid,
    pub shares: Decimal,
    pub options_outstanding: Decimal,
    pub pool_available: Decimal,
}

impl Position {
    pub fn fully_diluted(&self) -> Decimal {
        self.shares + self.options_outstanding + self.pool_available
    }

    /// Sort and page key: class, holders before pools, then id.
    pub fn key(&self) -> RowKey {
        let (pool, id) = match self.holder {
            Holder::Stakeholder(id) => (false, id),
            Holder::Pool(id) => (true, id),
        };
        RowKey {
            share_class_id: self.share_class_id,
            pool,
            id,
        }
    }
}

/// Where a row sorts: class, holders before pools, then id. Its text
/// (`class|0|id`, `|1|` for a pool) is the page token's content and sorts
/// the same way (a UUID's hyphenated hex orders as its bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct RowKey {
    pub share_class_id: Uuid,
    pub pool: bool,
    pub id: Uuid,
}

impl RowKey {
    pub fn to_text(&self) -> String {
        format!(
            "{}|{}|{}",
            self.share_class_id,
            u8::from(self.pool),
            self.id
        )
    }

    /// `None` for text [`RowKey::to_text`] did not make.
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.split('|');
        let share_class_id = parts.next()?.parse().ok()?;
        let pool = match parts.next()? {
            "0" => false,
            "1" => true,
            _ => return None,
        };
        let id = parts.next()?.parse().ok()?;
        parts.next().is_none().then_some(Self {
            share_class_id,
            pool,
            id,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub position: Position,
    pub basic_percent: Decimal,
    pub fully_diluted_percent: Decimal,
    pub basic_percent_display: Decimal,
    pub fully_diluted_percent_display: Decimal,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Totals {
    pub outstanding_shares: Decimal,
    pub options_outstanding: Decimal,
    pub pool_available: Decimal,
    pub fully_diluted: Decimal,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CapTable {
    pub as_of: NaiveDate,
    pub ledger_sequence: i64,
    pub projection_version: i64,
    pub rows: Vec<Row>,
    pub totals: Totals,
}

/// Builds the table from positions (any order; rows come out sorted by key).
pub fn compute(
    as_of: NaiveDate,
    ledger_sequence: i64,
    projection_version: i64,
    mut positions: Vec<Position>,
) -> CapTable {
    positions.sort_by_key(Position::key);
    let totals = Totals {
        outstanding_shares: positions.iter().map(|p| p.shares).sum(),
        options_outstanding: positions.iter().map(|p| p.options_outstanding).sum(),
        pool_available: positions.iter().map(|p| p.pool_available).sum(),
        fully_diluted: positions.iter().map(Position::fully_diluted).sum(),
    };
    let basic: Vec<Decimal> = positions
        .iter()
        .map(|p| percent(p.shares, totals.outstanding_shares))
        .collect();
    let diluted: Vec<Decimal> = positions
        .iter()
        .map(|p| percent(p.fully_diluted(), totals.fully_diluted))
        .collect();
    let basic_display = round_to_hundred(&basic);
    let diluted_display = round_to_hundred(&diluted);
    let rows = positions
        .into_iter()
        .enumerate()
        .map(|(i, position)| Row {
            position,
            basic_percent: basic[i],
            fully_diluted_percent: diluted[i],
            basic_percent_display: basic_display[i],
            fully_diluted_percent_display: diluted_display[i],
        })
        .collect();
    CapTable {
        as_of,
        ledger_sequence,
        projection_version,
        rows,
        totals,
    }
}

fn percent(part: Decimal, whole: Decimal) -> Decimal {
    if whole.is_zero() {
        Decimal::ZERO
    } else {
        part * Decimal::ONE_HUNDRED / whole
    }
}

/// Rounds percentages to 2 places so that they sum to exactly 100.00
/// (largest remainder: truncate all, then give the missing hundredths to the
/// largest remainders, ties to the earlier row). All zeros stay zeros.
pub fn round_to_hundred(percents: &[Decimal]) -> Vec<Decimal> {
    let mut rounded: Vec<Decimal> = percents
        .iter()
        .map(|p| p.round_dp_with_strategy(2, RoundingStrategy::ToZero))
        .collect();
    if percents.iter().all(Decimal::is_zero) {
        return rounded;
    }
    let hundredth = Decimal::new(1, 2);
    let missing = (Decimal::ONE_HUNDRED - rounded.iter().copied().sum::<Decimal>()) / hundredth;
    let missing = missing.round().to_usize().unwrap_or(0).min(percents.len());
    if missing == 0 {
        return rounded;
    }
    // Each remainder computed once; only the `missing` largest need finding
    // (a selection, not a sort: 10,000 holders are common).
    let remainders: Vec<Decimal> = percents
        .iter()
        .zip(&rounded)
        .map(|(exact, truncated)| exact - truncated)
        .collect();
    let mut order: Vec<usize> = (0..percents.len()).collect();
    order.select_nth_unstable_by(missing - 1, |&a, &b| {
        remainders[b].cmp(&remainders[a]).then(a.cmp(&b))
    });
    for &index in &order[..missing] {
        rounded[index] += hundredth;
    }
    rounded
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(text: &str) -> Decimal {
        text.parse().expect("decimal")
    }

    #[test]
    fn thirds_round_to_a_column_that_sums_to_exactly_one_hundred() {
        let third = Decimal::ONE_HUNDRED / Decimal::from(3);
        let rounded = round_to_hundred(&[third, third, third]);
        assert_eq!(rounded, [d("33.34"), d("33.33"), d("33.33")]);
        assert_eq!(rounded.iter().copied().sum::<Decimal>(), d("100.00"));
    }

    #[test]
    fn the_largest_remainders_get_the_missing_hundredths() {
        let rounded = round_to_hundred(&[d("10.004"), d("20.009"), d("69.987")]);
        assert_eq!(rounded, [d("10.00"), d("20.01"), d("69.99")]);
        assert_eq!(rounded.iter().copied().sum::<Decimal>(), d("100"));
    }

    /// The selection gives the same column as sorting every remainder.
    #[test]
    fn largest_remainder_selection_equals_the_full_sort() {
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        for size in [1usize, 2, 3, 7, 50, 333] {
            let weights: Vec<Decimal> = (0..size)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    Decimal::from(seed % 1000 + 1)
                })
                .collect();
            let total: Decimal = weights.iter().copied().sum();
            let percents: Vec<Decimal> = weights
                .iter()
                .map(|w| *w * Decimal::ONE_HUNDRED / total)
                .collect();
            let mut expected: Vec<Decimal> = percents
                .iter()
                .map(|p| p.round_dp_with_strategy(2, RoundingStrategy::ToZero))
                .collect();
            let missing = ((Decimal::ONE_HUNDRED - expected.iter().copied().sum::<Decimal>())
                / Decimal::new(1, 2))
            .round()
            .to_usize()
            .unwrap_or(0);
            let mut order: Vec<usize> = (0..size).collect();
            order.sort_by(|&a, &b| {
                (percents[b] - expected[b])
                    .cmp(&(percents[a] - expected[a]))
                    .then(a.cmp(&b))
            });
            for index in order.into_iter().take(missing) {
                expected[index] += Decimal::new(1, 2);
            }
            let rounded = round_to_hundred(&percents);
            assert_eq!(rounded, expected, "{size} rows");
            assert_eq!(rounded.iter().copied().sum::<Decimal>(), d("100"));
        }
    }

    #[test]
    fn an_empty_cap_table_rounds_to_zeros_not_to_one_hundred() {
        assert_eq!(
            round_to_hundred(&[Decimal::ZERO, Decimal::ZERO]),
            [Decimal::ZERO, Decimal::ZERO]
        );
    }

    #[test]
    fn row_keys_sort_as_their_text_and_read_back() {
        let mut keys: Vec<RowKey> = (0..200u128)
            .map(|i| RowKey {
                share_class_id: Uuid::from_u128(i.wrapping_mul(0x9e37_79b9_7f4a_7c15) % 3),
                pool: i % 2 == 0,
                id: Uuid::from_u128(i.wrapping_mul(0xbf58_476d_1ce4_e5b9_94d0_49bb_1331_11eb)),
            })
            .collect();
        keys.sort();
        let texts: Vec<String> = keys.iter().map(RowKey::to_text).collect();
        let mut sorted_texts = texts.clone();
        sorted_texts.sort();
        assert_eq!(texts, sorted_texts);
        for (key, text) in keys.iter().zip(&texts) {
            assert_eq!(RowKey::parse(text), Some(*key));
        }
        assert_eq!(RowKey::parse("not|a|key"), None);
        assert_eq!(
            RowKey::parse(&format!("{}|2|{}", Uuid::nil(), Uuid::nil())),
            None
        );
        assert_eq!(
            RowKey::parse(&format!("{}|0|{}|x", Uuid::nil(), Uuid::nil())),
            None
        );
    }

    #[test]
    fn fully_diluted_counts_shares_options_and_the_available_pool() {
        let class = Uuid::from_u128(1);
        let date = NaiveDate::from_ymd_opt(2024, 2, 1).expect("date");
        let positions = vec![
            Position {
                holder: Holder::Stakeholder(Uuid::from_u128(7)),
                share_class_id: class,
                shares: d("25000"),
                options_outstanding: d("75000"),
                pool_available: d("0"),
            },
            Position {
                holder: Holder::Pool(Uuid::from_u128(8)),
                share_class_id: class,
                shares: d("0"),
                options_outstanding: d("0"),
                pool_available: d("7900000"),
            },
        ];
        let table = compute(date, 3, 4, positions);
        assert_eq!(table.totals.fully_diluted, d("8000000"));
        assert_eq!(table.rows[0].basic_percent, d("100"));
        assert_eq!(table.rows[0].fully_diluted_percent, d("1.25"));
        assert_eq!(table.rows[1].fully_diluted_percent_display, d("98.75"));
        assert_eq!(table.rows[1].basic_percent_display, d("0"));
    }
}
