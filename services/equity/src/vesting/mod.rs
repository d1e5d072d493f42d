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

mod allocation;
pub(crate) mod calendar;

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

    fn condition(&self, id: &str) -> Option<&Condition> {
        self.conditions.iter().find(|condition| condition.id == id)
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
pub fn schedule(terms: Option<&VestingTerms>, facts: &VestingFacts<'_>) -> Vec<Tranche> {
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
    // Stable: a tranche keeps its place among others on the same date.
    tranches.sort_by_key(|tranche| tranche.date);
    cap(tranches, facts.vesting_cap)
}

/// The quantity vested on `as_of` (inclusive).
pub fn vested_as_of(tranches: &[Tranche], as_of: NaiveDate) -> Decimal {
    tranches
        .iter()
        .filter(|tranche| tranche.date <= as_of)
        .map(|tranche| tranche.quantity)
        .sum()
}

/// Drops what lies beyond `limit`, trimming the tranche that crosses it: the
/// latest tranches are the ones an acceleration or cancellation takes.
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
    let allocated = allocation::allocate(terms.allocation, &amounts);
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

/// One installment before amounts are resolved.
#[derive(Debug, Clone)]
struct RawTranche {
    date: NaiveDate,
    amount: Amount,
    /// Installments merged into this one (a cliff), each vesting `amount`.
    installments: u32,
    condition_id: String,
}

/// Exact amounts, in order: a remainder portion sees what vested before it.
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

/// Follows the graph from the vesting start, choosing at each step the next
/// condition that happens first, and lists every installment on the way.
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
            .filter_map(|id| terms.condition(id))
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

/// When `condition` first happens, if it can yet.
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
            calendar::step(
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

/// The installments of `condition`, a cliff merged into its N-th installment.
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
                    let date = calendar::step(
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

#[cfg(test)]
mod tests;
