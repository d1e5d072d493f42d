//! The OCF vesting engine: pure functions from vesting terms and an award's
//! facts (quantity, vesting start, events that happened, accelerations,
//! cancellations) to the tranches that vest and the quantity vested on a date.
//!
//! Model (OCF VestingTerms): a graph of conditions starting at the one whose
//! trigger is the vesting start. From each condition reached, the next one is
//! the candidate that happens first (ties go to the earlier-listed one);
//! EVENT conditions happen only once recorded. Relative conditions repeat
//! `occurrences` times, each installment vesting its portion; a
//! `cliff_installment` of N vests the first N installments together at the
//! N-th. Portions are of the total, or with `remainder` of what is unvested.
//! Exact amounts are then rounded by the terms' allocation type.
//!
//! How it is computed: `walk` follows the graph into one run per condition
//! reached (a relative condition's dates as a calendar step, not a list);
//! `schedule` expands the runs into tranches and `allocation` resolves their
//! amounts with integers over a common denominator where that provably gives
//! rust_decimal's results (and with rust_decimal, as the engine always did,
//! where it does not); `vested_on` answers from the runs in closed form under
//! the cumulative allocation types. `reference.rs` keeps the engine as it
//! was, and the property tests hold all of this to it, digit for digit.

mod allocation;
pub(crate) mod calendar;
mod closed_form;
mod walk;

use std::collections::{BTreeMap, HashMap};

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// Guards the graph walk against pathological terms.
pub const MAX_CONDITIONS: usize = 200;
/// Most installments one relative condition may have (100 years of months).
pub const MAX_OCCURRENCES: u32 = 1200;
/// The condition id of tranches made by an acceleration.
pub const ACCELERATION_CONDITION_ID: &str = "acceleration";
/// The condition id of the single tranche of an award without vesting terms.
pub const IMMEDIATE_CONDITION_ID: &str = "vested_at_grant";

/// How exact per-tranche amounts are rounded (OCF AllocationType).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AllocationType {
    CumulativeRounding,
    CumulativeRoundDown,
    FrontLoaded,
    BackLoaded,
    FrontLoadedToSingleTranche,
    BackLoadedToSingleTranche,
    Fractional,
}

impl AllocationType {
    pub const ALL: [Self; 7] = [
        Self::CumulativeRounding,
        Self::CumulativeRoundDown,
        Self::FrontLoaded,
        Self::BackLoaded,
        Self::FrontLoadedToSingleTranche,
        Self::BackLoadedToSingleTranche,
        Self::Fractional,
    ];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeriodUnit {
    Days,
    Months,
}

/// Which day of the month a monthly installment falls on; always clamped to
/// the month's last day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DayOfMonth {
    VestingStartDayOrLastDay,
    LastDay,
    /// 1..=31.
    Fixed(u8),
}

/// A repeating period of a relative condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Period {
    pub length: u32,
    pub unit: PeriodUnit,
    /// At least 1.
    pub occurrences: u32,
    pub day_of_month: DayOfMonth,
    /// The first this-many installments vest together; below 2 means no cliff.
    pub cliff_installment: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Trigger {
    VestingStart,
    Absolute(NaiveDate),
    Relative { period: Period, relative_to: String },
    Event,
}

/// How much one installment of a condition vests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Amount {
    /// numerator / denominator of the total, or with `remainder` of what is
    /// still unvested when the installment happens.
    Portion {
        numerator: Decimal,
        denominator: Decimal,
        remainder: bool,
    },
    Quantity(Decimal),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Condition {
    pub id: String,
    pub description: String,
    pub amount: Amount,
    pub trigger: Trigger,
    /// In priority order.
    pub next: Vec<String>,
}

/// Validated OCF vesting terms: ids are unique, references resolve, exactly
/// one condition is the vesting start, and the graph has no cycle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VestingTerms {
    pub id: String,
    pub name: String,
    pub description: String,
    pub allocation: AllocationType,
    pub conditions: Vec<Condition>,
}

/// A bad vesting-terms graph, naming the proto field path under `vesting_terms`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {description}")]
pub struct VestingTermsError {
    pub field: String,
    pub description: String,
}

impl VestingTerms {
    /// Checks the graph rules that single fields cannot express.
    pub fn validate(&self) -> Result<(), VestingTermsError> {
        let fail = |field: String, description: &str| VestingTermsError {
            field,
            description: description.to_owned(),
        };
        if self.conditions.is_empty() || self.conditions.len() > MAX_CONDITIONS {
            return Err(fail(
                "vesting_terms.conditions".into(),
                "must hold 1 to 200 conditions",
            ));
        }
        let mut index_of = HashMap::new();
        for (index, condition) in self.conditions.iter().enumerate() {
            if condition.id.is_empty() || index_of.insert(condition.id.as_str(), index).is_some() {
                return Err(fail(
                    format!("vesting_terms.conditions[{index}].id"),
                    "must be present and unique",
                ));
            }
        }
        let starts = self
            .conditions
            .iter()
            .filter(|condition| condition.trigger == Trigger::VestingStart)
            .count();
        if starts != 1 {
            return Err(fail(
                "vesting_terms.conditions".into(),
                "exactly one condition must be triggered by the vesting start",
            ));
        }
        for (index, condition) in self.conditions.iter().enumerate() {
            for (position, next) in condition.next.iter().enumerate() {
                if !index_of.contains_key(next.as_str()) {
                    return Err(fail(
                        format!("vesting_terms.conditions[{index}].next_condition_ids[{position}]"),
                        "names no condition of these terms",
                    ));
                }
            }
            if let Trigger::Relative { relative_to, .. } = &condition.trigger
                && !index_of.contains_key(relative_to.as_str())
            {
                return Err(fail(
                    format!(
                        "vesting_terms.conditions[{index}].trigger.relative.relative_to_condition_id"
                    ),
                    "names no condition of these terms",
                ));
            }
        }
        if self.has_cycle(&index_of) {
            return Err(fail(
                "vesting_terms.conditions".into(),
                "next_condition_ids must not form a cycle",
            ));
        }
        Ok(())
    }

    fn has_cycle(&self, index_of: &HashMap<&str, usize>) -> bool {
        // Kahn's algorithm: a cycle leaves nodes with incoming edges.
        let mut incoming = vec![0usize; self.conditions.len()];
        for condition in &self.conditions {
            for next in &condition.next {
                incoming[index_of[next.as_str()]] += 1;
            }
        }
        let mut ready: Vec<usize> = (0..incoming.len()).filter(|i| incoming[*i] == 0).collect();
        let mut visited = 0;
        while let Some(index) = ready.pop() {
            visited += 1;
            for next in &self.conditions[index].next {
                let target = index_of[next.as_str()];
                incoming[target] -= 1;
                if incoming[target] == 0 {
                    ready.push(target);
                }
            }
        }
        visited != self.conditions.len()
    }
}

/// A quantity that vests on a date.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tranche {
    pub date: NaiveDate,
    pub quantity: Decimal,
    pub condition_id: String,
}

/// OCF TX_VESTING_ACCELERATION: `quantity` vests on `date`, taken from the
/// latest tranches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acceleration {
    pub date: NaiveDate,
    pub quantity: Decimal,
}

/// What the engine needs to know about one award.
#[derive(Debug, Clone, Copy)]
pub struct VestingFacts<'a> {
    pub quantity: Decimal,
    pub grant_date: NaiveDate,
    pub vesting_start: NaiveDate,
    /// EVENT condition id -> the date it happened.
    pub events: &'a BTreeMap<String, NaiveDate>,
    pub accelerations: &'a [Acceleration],
    /// The most that may ever vest: quantity minus what was cancelled before
    /// vesting (unvested surrenders, forfeiture at termination).
    pub vesting_cap: Decimal,
}

/// The tranches that vest, in date order, allocation applied, accelerations
/// included, and cut so they never sum above the cap. Terms of `None` vest
/// everything at grant (OCF: a security without terms is vested at issuance).
///
/// Each tranche owns its condition id, one small allocation apiece; a caller
/// that only needs the quantity vested on a date should call [`vested_on`],
/// which computes the same schedule without them.
pub fn schedule(terms: Option<&VestingTerms>, facts: &VestingFacts<'_>) -> Vec<Tranche> {
    let mut slots = Vec::new();
    with_scratch(|scratch| {
        if let Some(terms) = terms {
            walk::walk(terms, facts, &mut scratch.runs);
        }
        build(terms, facts, &scratch.runs, &mut slots);
    });
    // Collected in place: a slot is the size of a tranche.
    slots
        .into_iter()
        .map(|slot| Tranche {
            date: slot.date,
            quantity: slot.quantity,
            condition_id: match slot.source {
                Source::Condition(index) => terms
                    .map(|terms| terms.conditions[index as usize].id.clone())
                    .unwrap_or_default(),
                Source::Immediate => IMMEDIATE_CONDITION_ID.to_owned(),
                Source::Acceleration => ACCELERATION_CONDITION_ID.to_owned(),
            },
        })
        .collect()
}

/// The quantity vested on `as_of` (inclusive).
pub fn vested_as_of(tranches: &[Tranche], as_of: NaiveDate) -> Decimal {
    tranches
        .iter()
        .filter(|tranche| tranche.date <= as_of)
        .map(|tranche| tranche.quantity)
        .sum()
}

/// `vested_as_of(&schedule(terms, facts), as_of)`, the same `Decimal` to the
/// last digit and scale, without the tranche list or its condition id
/// strings: what an award's position needs. Under a cumulative allocation
/// type (the OCF default) it works per condition rather than per
/// installment; otherwise it builds the schedule in a per-thread buffer.
pub fn vested_on(
    terms: Option<&VestingTerms>,
    facts: &VestingFacts<'_>,
    as_of: NaiveDate,
) -> Decimal {
    with_scratch(|scratch| {
        if let Some(terms) = terms {
            walk::walk(terms, facts, &mut scratch.runs);
            if let Some(vested) = closed_form::vested_on(terms, facts, &scratch.runs, as_of) {
                return vested;
            }
        }
        build(terms, facts, &scratch.runs, &mut scratch.slots);
        scratch
            .slots
            .iter()
            .filter(|slot| slot.date <= as_of)
            .map(|slot| slot.quantity)
            .sum()
    })
}

/// Buffers a thread reuses from call to call.
#[derive(Debug, Default)]
struct Scratch {
    runs: Vec<walk::Run>,
    slots: Vec<Slot>,
}

/// Items a scratch buffer keeps between calls.
const SCRATCH_KEPT: usize = 4_096;

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

/// Runs `work` with this thread's scratch buffers (fresh ones if they are
/// in use or gone), keeping them for the next call unless oversized.
fn with_scratch<T>(work: impl FnOnce(&mut Scratch) -> T) -> T {
    let mut scratch = SCRATCH
        .try_with(|cell| {
            cell.try_borrow_mut()
                .map(|mut kept| std::mem::take(&mut *kept))
        })
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    let result = work(&mut scratch);
    if scratch.runs.capacity() <= SCRATCH_KEPT && scratch.slots.capacity() <= SCRATCH_KEPT {
        // Gone or in use: then these buffers just go.
        let _ = SCRATCH.try_with(|cell| {
            if let Ok(mut kept) = cell.try_borrow_mut() {
                *kept = scratch;
            }
        });
    }
    result
}

/// Where a tranche comes from; its condition id is only made when a
/// [`Tranche`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// Index into the terms' conditions.
    Condition(u32),
    Immediate,
    Acceleration,
}

/// A tranche as the engine works on it: no strings, and scratch room for the
/// integer allocation.
#[derive(Debug, Clone, Copy)]
struct Slot {
    date: NaiveDate,
    source: Source,
    /// Installments merged into this one (a cliff), each vesting the
    /// condition's amount; meaningful until amounts are resolved.
    installments: u32,
    /// The exact quantity vested up to and including this tranche, as
    /// `whole + fraction / denominator` (integer path only).
    vested_whole: u64,
    vested_fraction: u32,
    /// Whether the exact amount is above zero (integer path only).
    vests: bool,
    quantity: Decimal,
}

impl Slot {
    fn new(date: NaiveDate, source: Source, installments: u32) -> Self {
        Self {
            date,
            source,
            installments,
            vested_whole: 0,
            vested_fraction: 0,
            vests: false,
            quantity: Decimal::ZERO,
        }
    }
}

/// The schedule as `schedule` returns it, tranche by tranche, into `slots`
/// (emptied first), from the terms' walk (`runs`; ignored without terms).
fn build(
    terms: Option<&VestingTerms>,
    facts: &VestingFacts<'_>,
    runs: &[walk::Run],
    slots: &mut Vec<Slot>,
) {
    slots.clear();
    // The allocated total when the integer path made the amounts: then every
    // quantity is known to be non-negative and the cap can often be skipped.
    let mut allocated_total = None;
    match terms {
        None => {
            slots.reserve(1 + facts.accelerations.len());
            let mut slot = Slot::new(facts.grant_date, Source::Immediate, 1);
            slot.quantity = facts.quantity;
            slots.push(slot);
        }
        Some(terms) => {
            walk::expand(runs, slots);
            allocated_total = allocation::allocate_slots(terms, facts.quantity, slots);
        }
    }
    for acceleration in facts.accelerations {
        let mut slot = Slot::new(acceleration.date, Source::Acceleration, 1);
        slot.quantity = acceleration.quantity;
        slots.push(slot);
    }
    // Stable: a tranche keeps its place among others on the same date.
    if !slots.is_sorted_by_key(|slot| slot.date) {
        slots.sort_by_key(|slot| slot.date);
    }
    let cap_changes_nothing = facts.accelerations.is_empty()
        && allocated_total
            .is_some_and(|total| cap_changes_nothing(slots, total, facts.vesting_cap));
    if !cap_changes_nothing {
        cap(slots, facts.vesting_cap);
    }
}

/// Whether `cap` would keep every tranche as it is: with non-negative
/// quantities summing to `total`, exactly when the total stays within the
/// limit and the limit is not already reached before the last tranche (a
/// tranche after that point would be dropped, even a zero one).
fn cap_changes_nothing(slots: &[Slot], total: Decimal, limit: Decimal) -> bool {
    match slots.last() {
        None => true,
        Some(last) => total <= limit && total - last.quantity < limit,
    }
}

/// Drops what lies beyond `limit`, trimming the tranche that crosses it: the
/// latest tranches are the ones an acceleration or cancellation takes.
fn cap(slots: &mut Vec<Slot>, limit: Decimal) {
    let mut running = Decimal::ZERO;
    let mut kept = 0;
    for slot in slots.iter_mut() {
        let room = limit - running;
        if room <= Decimal::ZERO {
            break;
        }
        slot.quantity = slot.quantity.min(room);
        running += slot.quantity;
        kept += 1;
    }
    slots.truncate(kept);
}

/// Whether the integer path (not the rust_decimal reference) resolves and
/// allocates these terms' amounts for this award.
#[cfg(test)]
fn takes_integer_path(terms: &VestingTerms, facts: &VestingFacts<'_>) -> bool {
    let (mut runs, mut slots) = (Vec::new(), Vec::new());
    walk::walk(terms, facts, &mut runs);
    walk::expand(&runs, &mut slots);
    allocation::takes_integer_path(terms, facts.quantity, &slots)
}

/// Whether `vested_on` answers in closed form (without the schedule).
#[cfg(test)]
fn takes_closed_form(terms: &VestingTerms, facts: &VestingFacts<'_>, as_of: NaiveDate) -> bool {
    let mut runs = Vec::new();
    walk::walk(terms, facts, &mut runs);
    closed_form::vested_on(terms, facts, &runs, as_of).is_some()
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod reference;

#[cfg(test)]
mod properties;

#[cfg(test)]
mod timing;
