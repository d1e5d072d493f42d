//! An earlier date's cap table from today's: today's positions less what
//! was dated after that date (and a later date's, today's plus what is
//! dated up to it). A read then needs only those changes (usually few;
//! none when nothing moved since), not every holder's balance. They are read in one round trip, per date, and the reader keeps
//! them beside today's table (see `grpc::queries`): a later read of that
//! date, or of any date after it, filters them and touches no database.
//!
//! The two must describe the same ledger: the changes are read in one
//! statement together with the company's versions, and are used only when
//! those equal the versions today's table was built at. Otherwise the
//! caller computes the table from Postgres as before.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use qapmap_runtime::tenancy;
use rust_decimal::Decimal;
use sqlx::{Connection, PgConnection, Row};
use uuid::Uuid;

use super::{Holder, Position, RowKey};

/// What moved in `(after, through]`, per day, read in one snapshot with the
/// versions it belongs to. Read from a past date up to today's, it rolls
/// today's table back to any date from `after` on; read from today's up to
/// a later date, it rolls the table forward to that date.
#[derive(Debug, Clone, PartialEq)]
pub struct LaterChanges {
    pub ledger_sequence: i64,
    pub projection_version: i64,
    /// The changes are those dated after this date.
    pub after: NaiveDate,
    /// Net shares per day, stakeholder and class.
    pub shares: Vec<SharesMoved>,
    /// Net options outstanding and pool available per day, holder, plan and
    /// class.
    pub options: Vec<OptionsMoved>,
}

impl LaterChanges {
    /// None moved after `after`.
    pub fn none_after(after: NaiveDate) -> Self {
        Self {
            ledger_sequence: 0,
            projection_version: 0,
            after,
            shares: Vec::new(),
            options: Vec::new(),
        }
    }

    /// How many movements are held (what keeping them costs).
    pub fn len(&self) -> usize {
        self.shares.len() + self.options.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SharesMoved {
    pub effective_date: NaiveDate,
    pub stakeholder_id: Uuid,
    pub share_class_id: Uuid,
    pub quantity: Decimal,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OptionsMoved {
    pub effective_date: NaiveDate,
    /// `None` for a pool-only movement (a plan created or its pool adjusted).
    pub stakeholder_id: Option<Uuid>,
    pub plan_id: Uuid,
    pub share_class_id: Uuid,
    pub outstanding: Decimal,
    pub pool_available: Decimal,
}

/// The changes dated after `after` up to and including `through` (a past
/// date and today's, or today's and a later date), confined to the company,
/// in one statement (one snapshot) prepared once per connection: a read
/// then plans nothing.
///
/// Each entry in range has its lines, and each summed line its account,
/// looked up by index: the `OFFSET 0` keeps the planner from flattening
/// those lookups into joins, where it hashed all of the company's entries
/// or scanned all its accounts (EXPLAIN ANALYZE on the bench's 10,000
/// holders, 200 later entries: 3.7 ms either way, 1.3 ms by index). Lines
/// are summed per day and account before the accounts are looked up (600
/// lines, 204 accounts). Reaching back past most of the journal costs more
/// by index (90-120 ms against 70 ms for 10,200 entries); such changes
/// outnumber the table and are not kept anyway.
pub async fn later_changes(
    connection: &mut PgConnection,
    company_id: Uuid,
    after: NaiveDate,
    through: NaiveDate,
) -> sqlx::Result<LaterChanges> {
    let begin = format!(
        "BEGIN READ ONLY; {}",
        tenancy::confine_statements(company_id)
    );
    let mut transaction = connection.begin_with(sqlx::AssertSqlSafe(begin)).await?;
    let rows = sqlx::query(
        "SELECT 'v' AS kind, NULL::date AS day, NULL::uuid AS holder, NULL::uuid AS plan,
                NULL::uuid AS class, NULL::numeric AS first, NULL::numeric AS second,
                COALESCE(l.last_sequence, 0) AS sequence,
                COALESCE(l.projection_version, 0) + COALESCE(p.version, 0) AS version
         FROM (SELECT $1::uuid AS company_id) c
         LEFT JOIN ledgers l USING (company_id)
         LEFT JOIN projection_versions p USING (company_id)
         UNION ALL
         SELECT 's', l.effective_date, a.stakeholder_id, NULL, a.share_class_id, SUM(l.amount),
                NULL, NULL, NULL
         FROM (SELECT e.effective_date, jl.account_id, SUM(jl.amount) AS amount
               FROM journal_entries e
               CROSS JOIN LATERAL (SELECT account_id, amount FROM journal_lines
                                   WHERE entry_id = e.id OFFSET 0) jl
               WHERE e.company_id = $1 AND e.effective_date > $2 AND e.effective_date <= $3
               GROUP BY e.effective_date, jl.account_id) l
         CROSS JOIN LATERAL (SELECT stakeholder_id, share_class_id FROM accounts
                             WHERE id = l.account_id AND owner_kind = 'stakeholder'
                               AND share_class_id IS NOT NULL OFFSET 0) a
         GROUP BY l.effective_date, a.stakeholder_id, a.share_class_id
         UNION ALL
         SELECT 'o', effective_date, stakeholder_id, plan_id, share_class_id,
                SUM(outstanding_delta), SUM(pool_available_delta), NULL, NULL
         FROM option_movements
         WHERE company_id = $1 AND effective_date > $2 AND effective_date <= $3
         GROUP BY effective_date, stakeholder_id, plan_id, share_class_id",
    )
    .bind(company_id)
    .bind(after)
    .bind(through)
    .fetch_all(&mut *transaction)
    .await?;
    transaction.commit().await?;
    let mut changes = LaterChanges::none_after(after);
    for row in rows {
        let kind: String = row.try_get("kind")?;
        match kind.as_str() {
            "v" => {
                changes.ledger_sequence = row.try_get("sequence")?;
                changes.projection_version = row.try_get("version")?;
            }
            "s" => changes.shares.push(SharesMoved {
                effective_date: row.try_get("day")?,
                stakeholder_id: row.try_get("holder")?,
                share_class_id: row.try_get("class")?,
                quantity: row.try_get("first")?,
            }),
            _ => changes.options.push(OptionsMoved {
                effective_date: row.try_get("day")?,
                stakeholder_id: row.try_get("holder")?,
                plan_id: row.try_get("plan")?,
                share_class_id: row.try_get("class")?,
                outstanding: row.try_get("first")?,
                pool_available: row.try_get("second")?,
            }),
        }
    }
    Ok(changes)
}

/// The positions as of `as_of` (not before `changes.after`): `today` (sorted
/// by key, as a computed table's rows are) less each change dated after
/// `as_of`, the same grouping [`super::query::load`] makes; positions that
/// come to zero are dropped. The result is sorted by key.
pub fn roll_back(today: &[Position], changes: &LaterChanges, as_of: NaiveDate) -> Vec<Position> {
    debug_assert!(
        as_of >= changes.after,
        "the changes do not reach back that far"
    );
    shift(today, changes, |date| date > as_of, Direction::Undo)
}

/// The positions as of `as_of`, a date after today's table's: `today` plus
/// each change dated up to `as_of`. `changes` must have been read (from
/// today's date) through `as_of` at least. Otherwise as [`roll_back`].
pub fn roll_forward(today: &[Position], changes: &LaterChanges, as_of: NaiveDate) -> Vec<Position> {
    debug_assert!(as_of >= changes.after, "a date after today's table's");
    shift(today, changes, |date| date <= as_of, Direction::Apply)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Undo,
    Apply,
}

/// `today` with the changes whose date `selected` accepts undone or applied.
fn shift(
    today: &[Position],
    changes: &LaterChanges,
    selected: impl Fn(NaiveDate) -> bool,
    direction: Direction,
) -> Vec<Position> {
    let signed = |quantity: Decimal| match direction {
        Direction::Undo => -quantity,
        Direction::Apply => quantity,
    };
    let mut positions = today.to_vec();
    // Only a changed position can come to zero (today's table holds none):
    // their indexes, so the check skips the other thousands.
    let mut changed: Vec<usize> = Vec::new();
    // Holders not in today's table (who left again since the date, or
    // arrive after today) are few: a map for them alone.
    let mut absent: BTreeMap<RowKey, Position> = BTreeMap::new();
    let mut adjust = |holder: Holder, class: Uuid, change: &dyn Fn(&mut Position)| {
        let wanted = empty(holder, class);
        let key = wanted.key();
        match positions.binary_search_by_key(&key, Position::key) {
            Ok(index) => {
                change(&mut positions[index]);
                changed.push(index);
            }
            Err(_) => change(absent.entry(key).or_insert(wanted)),
        }
    };
    for moved in changes.shares.iter().filter(|m| selected(m.effective_date)) {
        adjust(
            Holder::Stakeholder(moved.stakeholder_id),
            moved.share_class_id,
            &|p| p.shares += signed(moved.quantity),
        );
    }
    for moved in changes
        .options
        .iter()
        .filter(|m| selected(m.effective_date))
    {
        if let Some(stakeholder) = moved.stakeholder_id {
            adjust(
                Holder::Stakeholder(stakeholder),
                moved.share_class_id,
                &|p| p.options_outstanding += signed(moved.outstanding),
            );
        }
        adjust(Holder::Pool(moved.plan_id), moved.share_class_id, &|p| {
            p.pool_available += signed(moved.pool_available)
        });
    }
    changed.retain(|&index| positions[index].fully_diluted().is_zero());
    changed.sort_unstable();
    changed.dedup();
    remove_sorted(&mut positions, &changed);
    if absent.is_empty() {
        return positions;
    }
    // Both are sorted: merge, so the result is too (and compute need not sort).
    let mut merged = Vec::with_capacity(positions.len() + absent.len());
    let mut absent = absent
        .into_values()
        .filter(|p| !p.fully_diluted().is_zero())
        .peekable();
    for position in positions {
        while let Some(before) = absent.next_if(|a| a.key() < position.key()) {
            merged.push(before);
        }
        merged.push(position);
    }
    merged.extend(absent);
    merged
}

/// Removes the positions at `indexes` (ascending, distinct), moving the
/// rows between them as blocks: a per-row `retain` over 10,000 rows was 5%
/// of a past read.
fn remove_sorted(positions: &mut Vec<Position>, indexes: &[usize]) {
    let Some(&first) = indexes.first() else {
        return;
    };
    let mut kept = first;
    for (at, &index) in indexes.iter().enumerate() {
        let next = indexes.get(at + 1).copied().unwrap_or(positions.len());
        positions.copy_within(index + 1..next, kept);
        kept += next - index - 1;
    }
    positions.truncate(kept);
}

fn empty(holder: Holder, share_class_id: Uuid) -> Position {
    Position {
        holder,
        share_class_id,
        shares: Decimal::ZERO,
        options_outstanding: Decimal::ZERO,
        pool_available: Decimal::ZERO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(text: &str) -> Decimal {
        text.parse().expect("decimal")
    }

    fn holder(id: u128, class: u128, shares: &str, options: &str) -> Position {
        Position {
            holder: Holder::Stakeholder(Uuid::from_u128(id)),
            share_class_id: Uuid::from_u128(class),
            shares: d(shares),
            options_outstanding: d(options),
            pool_available: Decimal::ZERO,
        }
    }

    fn pool(plan: u128, class: u128, available: &str) -> Position {
        Position {
            pool_available: d(available),
            ..empty(Holder::Pool(Uuid::from_u128(plan)), Uuid::from_u128(class))
        }
    }

    fn sorted(mut positions: Vec<Position>) -> Vec<Position> {
        positions.sort_by_key(Position::key);
        positions
    }

    /// The date tables are rolled back to.
    fn as_of() -> NaiveDate {
        NaiveDate::from_ymd_opt(2025, 6, 1).expect("date")
    }

    /// `days` after [`as_of`] (on it for 0).
    fn later_by(days: u64) -> NaiveDate {
        as_of() + chrono::Days::new(days)
    }

    /// Net shares of `holder` in class 9 moved the day after the date.
    fn shares_moved(holder: u128, quantity: &str) -> SharesMoved {
        SharesMoved {
            effective_date: later_by(1),
            stakeholder_id: Uuid::from_u128(holder),
            share_class_id: Uuid::from_u128(9),
            quantity: d(quantity),
        }
    }

    /// Options of plan 7 (class 9) granted to `holder` (`None`: the pool
    /// alone changed) on `day`.
    fn options_moved(
        holder: Option<u128>,
        outstanding: &str,
        pool_available: &str,
        day: NaiveDate,
    ) -> OptionsMoved {
        OptionsMoved {
            effective_date: day,
            stakeholder_id: holder.map(Uuid::from_u128),
            plan_id: Uuid::from_u128(7),
            share_class_id: Uuid::from_u128(9),
            outstanding: d(outstanding),
            pool_available: d(pool_available),
        }
    }

    /// Rolled back, the positions come out sorted and equal to `expected`.
    fn assert_rolled_back(today: &[Position], changes: &LaterChanges, expected: Vec<Position>) {
        let earlier = roll_back(today, changes, as_of());
        assert!(earlier.is_sorted_by_key(Position::key));
        assert_eq!(earlier, sorted(expected));
    }

    #[test]
    fn later_moves_are_undone_and_holders_who_came_later_disappear() {
        let today = sorted(vec![
            holder(1, 9, "100", "0"),
            holder(2, 9, "50", "30"),
            holder(3, 9, "10", "0"),
            pool(7, 9, "970"),
        ]);
        let changes = LaterChanges {
            ledger_sequence: 4,
            projection_version: 2,
            after: as_of(),
            // 2 bought 10 more; 3 arrived.
            shares: vec![shares_moved(2, "10"), shares_moved(3, "10")],
            options: vec![options_moved(Some(2), "30", "-30", later_by(30))],
        };
        assert_rolled_back(
            &today,
            &changes,
            vec![
                holder(1, 9, "100", "0"),
                holder(2, 9, "40", "0"),
                pool(7, 9, "1000"),
            ],
        );
    }

    #[test]
    fn a_holder_gone_by_today_comes_back() {
        let today = sorted(vec![holder(1, 9, "100", "0")]);
        // 5 sold everything to 1 after the date; a plan's pool was emptied.
        let changes = LaterChanges {
            shares: vec![shares_moved(5, "-25"), shares_moved(1, "25")],
            options: vec![options_moved(None, "0", "-500", later_by(2))],
            ..LaterChanges::none_after(as_of())
        };
        assert_rolled_back(
            &today,
            &changes,
            vec![
                holder(1, 9, "75", "0"),
                holder(5, 9, "25", "0"),
                pool(7, 9, "500"),
            ],
        );
    }

    #[test]
    fn nothing_later_leaves_today_as_it_is() {
        let today = sorted(vec![holder(1, 9, "100", "5"), pool(7, 9, "20")]);
        let nothing = LaterChanges::none_after(as_of());
        assert_eq!(roll_back(&today, &nothing, as_of()), today);
    }

    /// Changes kept from an earlier read reach further back than this one:
    /// only those after its date are undone.
    #[test]
    fn changes_on_or_before_the_date_stay() {
        let today = sorted(vec![holder(1, 9, "100", "0"), holder(2, 9, "30", "0")]);
        let changes = LaterChanges {
            after: as_of() - chrono::Days::new(10),
            shares: vec![
                // On the date itself, and before it: part of the table.
                SharesMoved {
                    effective_date: later_by(0),
                    ..shares_moved(2, "20")
                },
                SharesMoved {
                    effective_date: as_of() - chrono::Days::new(3),
                    ..shares_moved(2, "10")
                },
                // After it: undone.
                shares_moved(1, "40"),
            ],
            ..LaterChanges::none_after(as_of())
        };
        assert_rolled_back(
            &today,
            &changes,
            vec![holder(1, 9, "60", "0"), holder(2, 9, "30", "0")],
        );
    }

    /// A later date: changes up to it are applied, those after it are not;
    /// a holder who sells everything disappears, a newcomer appears.
    #[test]
    fn a_later_date_applies_the_changes_up_to_it() {
        let today = sorted(vec![holder(1, 9, "100", "0"), holder(2, 9, "30", "0")]);
        let changes = LaterChanges {
            shares: vec![
                // 2 sells all to 3 the next day; 1 buys more a month later.
                shares_moved(2, "-30"),
                shares_moved(3, "30"),
                SharesMoved {
                    effective_date: later_by(30),
                    ..shares_moved(1, "5")
                },
            ],
            ..LaterChanges::none_after(as_of())
        };
        let forward = roll_forward(&today, &changes, later_by(1));
        assert!(forward.is_sorted_by_key(Position::key));
        assert_eq!(
            forward,
            sorted(vec![holder(1, 9, "100", "0"), holder(3, 9, "30", "0")])
        );
        assert_eq!(
            roll_forward(&today, &changes, later_by(30)),
            sorted(vec![holder(1, 9, "105", "0"), holder(3, 9, "30", "0")])
        );
    }

    #[test]
    fn removing_rows_keeps_the_others_in_order() {
        let rows: Vec<Position> = (0..8).map(|i| holder(i, 9, "1", "0")).collect();
        for indexes in [
            vec![],
            vec![0],
            vec![7],
            vec![2, 5],
            vec![0, 1, 2],
            vec![3, 4, 7],
        ] {
            let mut left = rows.clone();
            remove_sorted(&mut left, &indexes);
            let expected: Vec<Position> = (0..8)
                .filter(|i| !indexes.contains(i))
                .map(|i| rows[i])
                .collect();
            assert_eq!(left, expected, "without {indexes:?}");
        }
    }
}
