//! The cap table: per holder and class, shares held and options/RSUs
//! outstanding, plus each plan's available pool; fully diluted counts and
//! ownership percentages, exact and rounded for display. [`query`] loads the
//! positions as of a date, [`cache`] keeps the current table in Redis,
//! [`current`] in memory, [`earlier`] derives a past date's from it.

pub mod cache;
pub mod current;
pub mod earlier;
pub mod metrics;
pub mod query;

use std::ops::Range;

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

/// A row before percentages. `Copy`: a past date's table starts as a copy
/// of today's 10,000 of them, one memory copy.
#[derive(Debug, Clone, Copy, PartialEq)]
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

/// A row with its display percentages; the exact ones are computed when a
/// row is shown ([`CapTable::basic_percent`]), since a page shows 100 rows
/// of what may be 10,000.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub position: Position,
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

/// The table by columns: rows are assembled only for what is shown (a
/// past date's page is 100 rows of what may be 10,000).
#[derive(Debug, Clone, PartialEq)]
pub struct CapTable {
    pub as_of: NaiveDate,
    pub ledger_sequence: i64,
    pub projection_version: i64,
    pub totals: Totals,
    /// Sorted by key.
    positions: Vec<Position>,
    basic_display: DisplayColumn,
    diluted_display: DisplayColumn,
}

/// A column of display percentages, each summing to 100.00. Kept as
/// hundredths of a percent, which every table of sane figures fits; made
/// into decimals only for the rows a page shows (converting 10,000 rows for
/// every past read took a sixth of the machine).
#[derive(Debug, Clone, PartialEq)]
enum DisplayColumn {
    Hundredths(Vec<i64>),
    Decimals(Vec<Decimal>),
}

impl DisplayColumn {
    fn from_decimals(percents: Vec<Decimal>) -> Self {
        percents
            .iter()
            .map(|percent| (percent * Decimal::ONE_HUNDRED).to_i64())
            .collect::<Option<Vec<i64>>>()
            .map_or(Self::Decimals(percents), Self::Hundredths)
    }

    fn get(&self, index: usize) -> Decimal {
        match self {
            Self::Hundredths(hundredths) => Decimal::new(hundredths[index], 2),
            Self::Decimals(percents) => percents[index],
        }
    }
}

impl CapTable {
    /// Every row's figures, in key order.
    pub fn positions(&self) -> &[Position] {
        &self.positions
    }

    pub fn len(&self) -> usize {
        self.positions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }

    /// The rows in `range` (of key order).
    pub fn rows(&self, range: Range<usize>) -> impl Iterator<Item = Row> + '_ {
        range.map(|index| Row {
            position: self.positions[index],
            basic_percent_display: self.basic_display.get(index),
            fully_diluted_percent_display: self.diluted_display.get(index),
        })
    }

    /// The row's exact share of the outstanding shares, in percent.
    pub fn basic_percent(&self, row: &Row) -> Decimal {
        percent(row.position.shares, self.totals.outstanding_shares)
    }

    /// The row's exact share of the fully diluted count, in percent.
    pub fn fully_diluted_percent(&self, row: &Row) -> Decimal {
        percent(row.position.fully_diluted(), self.totals.fully_diluted)
    }
}

/// Builds the table from positions (any order; rows come out sorted by key).
pub fn compute(
    as_of: NaiveDate,
    ledger_sequence: i64,
    projection_version: i64,
    mut positions: Vec<Position>,
) -> CapTable {
    // Keys are unique, so an unstable sort is deterministic.
    positions.sort_unstable_by_key(Position::key);
    compute_sorted(as_of, ledger_sequence, projection_version, positions)
}

/// [`compute`] for positions already sorted by key (as a table's rows, and
/// [`earlier::roll_back`]'s result, are): checking that took 30% of a past
/// read's figures.
pub fn compute_sorted(
    as_of: NaiveDate,
    ledger_sequence: i64,
    projection_version: i64,
    positions: Vec<Position>,
) -> CapTable {
    debug_assert!(positions.is_sorted_by_key(Position::key));
    let Figures {
        totals,
        basic_display,
        diluted_display,
    } = in_integers(&positions).unwrap_or_else(|| in_decimals(&positions));
    CapTable {
        as_of,
        ledger_sequence,
        projection_version,
        totals,
        positions,
        basic_display,
        diluted_display,
    }
}

/// The totals and each row's display percentages.
#[derive(Debug, PartialEq)]
struct Figures {
    totals: Totals,
    basic_display: DisplayColumn,
    diluted_display: DisplayColumn,
}

/// [`Figures`] in exact integer arithmetic: every figure scaled to an
/// integer at the largest scale among them, so a part's truncated
/// hundredths of a percent are `part * 10000 / whole` and its remainder
/// `part * 10000 % whole`, with no decimal division (10,000 rows took
/// 13 ms the decimal way, most of a past-date read). `None` when a figure
/// does not fit in 128 bits; [`in_decimals`] then does the same.
fn in_integers(positions: &[Position]) -> Option<Figures> {
    let scale = positions
        .iter()
        .flat_map(|p| [p.shares, p.options_outstanding, p.pool_available])
        .map(|figure| figure.scale())
        .max()
        .unwrap_or(0);
    // Usually every figure is already at the scale (whole shares): no
    // multiplication then.
    let scaled = |figure: Decimal| -> Option<i128> {
        match scale - figure.scale() {
            0 => Some(figure.mantissa()),
            shift => figure.mantissa().checked_mul(10i128.checked_pow(shift)?),
        }
    };
    let mut shares = Vec::with_capacity(positions.len());
    let mut diluted = Vec::with_capacity(positions.len());
    let (mut shares_total, mut options_total, mut pool_total) = (0i128, 0i128, 0i128);
    for position in positions {
        let held = scaled(position.shares)?;
        let options = scaled(position.options_outstanding)?;
        let pool = scaled(position.pool_available)?;
        shares_total = shares_total.checked_add(held)?;
        options_total = options_total.checked_add(options)?;
        pool_total = pool_total.checked_add(pool)?;
        shares.push(held);
        diluted.push(held.checked_add(options)?.checked_add(pool)?);
    }
    let diluted_total = shares_total
        .checked_add(options_total)?
        .checked_add(pool_total)?;
    let decimal = |total: i128| Decimal::try_from_i128_with_scale(total, scale).ok();
    Some(Figures {
        totals: Totals {
            outstanding_shares: decimal(shares_total)?,
            options_outstanding: decimal(options_total)?,
            pool_available: decimal(pool_total)?,
            fully_diluted: decimal(diluted_total)?,
        },
        basic_display: display_in_integers(&shares, shares_total)?,
        diluted_display: display_in_integers(&diluted, diluted_total)?,
    })
}

fn display_in_integers(parts: &[i128], whole: i128) -> Option<DisplayColumn> {
    if whole == 0 {
        return Some(DisplayColumn::Hundredths(vec![0; parts.len()]));
    }
    let mut hundredths = Vec::with_capacity(parts.len());
    let mut remainders = Vec::with_capacity(parts.len());
    let whole_u64 = u64::try_from(whole).ok();
    for part in parts {
        let numerator = part.checked_mul(10_000)?;
        // One 64-bit division when both fit (the usual case); `/` and `%`
        // truncate toward zero, as the decimal way does.
        let (quotient, remainder) = match (u64::try_from(numerator), whole_u64) {
            (Ok(numerator), Some(whole)) => {
                (i128::from(numerator / whole), i128::from(numerator % whole))
            }
            _ => (numerator / whole, numerator % whole),
        };
        hundredths.push(i64::try_from(quotient).ok()?);
        remainders.push(remainder);
    }
    give_largest_remainders(&mut hundredths, &remainders);
    Some(DisplayColumn::Hundredths(hundredths))
}

/// Hundredths of a percent made to sum to 100.00: the missing hundredths go
/// to the largest remainders, ties to the earlier row.
fn give_largest_remainders(hundredths: &mut [i64], remainders: &[i128]) {
    let sum: i64 = hundredths.iter().sum();
    let missing = usize::try_from(10_000 - sum)
        .unwrap_or(0)
        .min(hundredths.len());
    if missing == 0 {
        return;
    }
    let packable = u32::try_from(remainders.len()).is_ok()
        && remainders.iter().all(|r| u64::try_from(*r).is_ok());
    let largest = if packable {
        largest_by_packed_keys(remainders, missing)
    } else {
        largest_by_index(remainders, missing)
    };
    for index in largest {
        hundredths[index] += 1;
    }
}

/// The rows of the `count` largest remainders (ties to the earlier row),
/// for remainders of 64 bits and at most 2^32 rows: remainder and row in
/// one key, larger first, then the earlier row (the complement of its
/// index), so the selection compares keys, not rows through their indexes.
fn largest_by_packed_keys(remainders: &[i128], count: usize) -> Vec<usize> {
    let mut keys: Vec<u128> = remainders
        .iter()
        .enumerate()
        .map(|(index, &remainder)| {
            ((remainder as u128) << 32) | u128::from(u32::MAX - index as u32)
        })
        .collect();
    keys.select_nth_unstable_by(count - 1, |a, b| b.cmp(a));
    keys[..count]
        .iter()
        .map(|key| (u32::MAX - *key as u32) as usize)
        .collect()
}

/// [`largest_by_packed_keys`] for any remainders.
fn largest_by_index(remainders: &[i128], count: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..remainders.len()).collect();
    order.select_nth_unstable_by(count - 1, |&a, &b| {
        remainders[b].cmp(&remainders[a]).then(a.cmp(&b))
    });
    order.truncate(count);
    order
}

/// [`Figures`] with decimal sums and percentages (any magnitude).
fn in_decimals(positions: &[Position]) -> Figures {
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
    Figures {
        basic_display: DisplayColumn::from_decimals(round_to_hundred(&basic)),
        diluted_display: DisplayColumn::from_decimals(round_to_hundred(&diluted)),
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

    /// Packing remainder and row into one key selects the rows that
    /// comparing through indexes selects, ties included.
    #[test]
    fn packed_keys_select_the_rows_indexes_select() {
        let mut seed: u64 = 0x1234_5678_9abc_def1;
        for size in [1usize, 2, 5, 64, 1_000] {
            let remainders: Vec<i128> = (0..size)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    // Few distinct values, so ties are common.
                    i128::from(seed % 7) * i128::from(u64::MAX / 8)
                })
                .collect();
            for count in [1, size / 2 + 1, size] {
                let mut packed = largest_by_packed_keys(&remainders, count);
                let mut indexed = largest_by_index(&remainders, count);
                packed.sort_unstable();
                indexed.sort_unstable();
                assert_eq!(packed, indexed, "{size} rows, {count} largest");
            }
        }
    }

    /// The integer way gives the totals and columns the decimal way gives,
    /// for whole and fractional holdings of any size up to the bounds of a
    /// quantity, and falls back to it beyond 128 bits.
    #[test]
    fn figures_in_integers_equal_the_figures_in_decimals() {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for case in 0..400u64 {
            let size = 1 + (next() % 60) as usize;
            let mut figure = || {
                let scale = (next() % 5) as u32 * (case % 3) as u32;
                let magnitude = match case % 4 {
                    0 => next() % 10,
                    1 => next() % 1_000,
                    2 => next() % 1_000_000_000,
                    _ => next() % 1_000_000_000_000_000,
                };
                // Most holders hold no options; pools hold no shares.
                if next() % 3 == 0 {
                    Decimal::ZERO
                } else {
                    Decimal::new(magnitude as i64, scale)
                }
            };
            let positions: Vec<Position> = (0..size as u128)
                .map(|i| Position {
                    holder: Holder::Stakeholder(Uuid::from_u128(i)),
                    share_class_id: Uuid::from_u128(1),
                    shares: figure(),
                    options_outstanding: figure(),
                    pool_available: figure(),
                })
                .collect();
            let expected = in_decimals(&positions);
            assert_eq!(in_integers(&positions), Some(expected), "{positions:?}");
        }
        let huge = Position {
            holder: Holder::Pool(Uuid::from_u128(2)),
            share_class_id: Uuid::from_u128(1),
            shares: Decimal::MAX,
            options_outstanding: Decimal::ZERO,
            pool_available: Decimal::new(1, 10),
        };
        assert_eq!(in_integers(std::slice::from_ref(&huge)), None);
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
        let rows: Vec<Row> = table.rows(0..table.len()).collect();
        assert_eq!(table.basic_percent(&rows[0]), d("100"));
        assert_eq!(table.fully_diluted_percent(&rows[0]), d("1.25"));
        assert_eq!(rows[1].fully_diluted_percent_display, d("98.75"));
        assert_eq!(rows[1].basic_percent_display, d("0"));
    }
}
