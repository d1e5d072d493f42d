//! The walk through the terms graph: from the vesting start, at each step
//! the next condition that happens first (ties to the earlier-listed one),
//! each condition reached giving one run of installments.

use chrono::NaiveDate;

use super::calendar::Steps;
use super::{
    Condition, MAX_CONDITIONS, MAX_OCCURRENCES, Slot, Source, Trigger, VestingFacts, VestingTerms,
};

/// Step counts (`length * number`) up to which a relative condition's dates
/// are known to exist between its first and last installment and to rise
/// with the installment number; beyond, each date is worked out alone.
const MAX_STEP_COUNT: u32 = 10_000_000;

/// The installments of one condition reached on the walk.
#[derive(Debug, Clone, Copy)]
pub(super) struct Run {
    /// Index into the terms' conditions.
    pub(super) condition: u32,
    /// The dates of the first and the last tranche.
    pub(super) first_date: NaiveDate,
    pub(super) last_date: NaiveDate,
    pub(super) dates: Dates,
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Dates {
    /// One installment on `date`, vesting `installments` times the amount.
    One { date: NaiveDate, installments: u32 },
    /// Installments `first..=last` of a relative condition, every date
    /// existing and none earlier than the one before; the first vests
    /// `first` times the amount (a cliff merges the installments up to it).
    Steps { steps: Steps, first: u32, last: u32 },
}

impl Run {
    /// How many tranches the run makes.
    pub(super) fn len(&self) -> u32 {
        match self.dates {
            Dates::One { .. } => 1,
            Dates::Steps { first, last, .. } => last - first + 1,
        }
    }

    /// How many times the amount the run's first tranche vests.
    pub(super) fn first_installments(&self) -> u32 {
        match self.dates {
            Dates::One { installments, .. } => installments,
            Dates::Steps { first, .. } => first,
        }
    }

    /// How many of the run's tranches fall on or before `as_of`.
    pub(super) fn count_until(&self, as_of: NaiveDate) -> u32 {
        match self.dates {
            Dates::One { date, .. } => u32::from(date <= as_of),
            Dates::Steps { steps, first, last } => steps.count_until(first, last, as_of),
        }
    }

    fn one(condition: usize, date: NaiveDate, installments: u32) -> Self {
        Self {
            condition: condition as u32,
            first_date: date,
            last_date: date,
            dates: Dates::One { date, installments },
        }
    }
}

/// Happened conditions, keyed by the index of the first condition with the
/// id (ids are unique in valid terms): on the stack for small terms.
struct Happened {
    small: [Option<NaiveDate>; 16],
    large: Vec<Option<NaiveDate>>,
}

impl Happened {
    fn new(conditions: usize) -> Self {
        Self {
            small: [None; 16],
            large: if conditions > 16 {
                vec![None; conditions]
            } else {
                Vec::new()
            },
        }
    }

    fn dates(&mut self) -> &mut [Option<NaiveDate>] {
        if self.large.is_empty() {
            &mut self.small
        } else {
            &mut self.large
        }
    }
}

/// The first condition with `id`, as `index_of` in `validate` would find it.
fn first_with(conditions: &[Condition], id: &str) -> Option<usize> {
    // Ids are short: bytes compared in place beat a call to memcmp.
    let id = id.as_bytes();
    conditions.iter().position(|condition| {
        let other = condition.id.as_bytes();
        other.len() == id.len() && other.iter().zip(id).all(|(a, b)| a == b)
    })
}

/// Follows the graph from the vesting start, choosing at each step the next
/// condition that happens first, and lists the runs of installments on the
/// way into `runs` (emptied first).
pub(super) fn walk(terms: &VestingTerms, facts: &VestingFacts<'_>, runs: &mut Vec<Run>) {
    runs.clear();
    let conditions = terms.conditions.as_slice();
    let Some(start) = conditions
        .iter()
        .position(|condition| matches!(condition.trigger, Trigger::VestingStart))
    else {
        return;
    };
    let mut happened = Happened::new(conditions.len());
    let happened = happened.dates();
    if let Some(key) = first_with(conditions, &conditions[start].id) {
        happened[key] = Some(facts.vesting_start);
    }
    runs.push(Run::one(start, facts.vesting_start, 1));
    let mut current = start;
    for _ in 0..MAX_CONDITIONS {
        let mut chosen: Option<(NaiveDate, usize)> = None;
        for id in &conditions[current].next {
            let Some(candidate) = first_with(conditions, id) else {
                continue;
            };
            let Some(date) = first_date(conditions, candidate, happened, facts) else {
                continue;
            };
            if chosen.is_none_or(|(earliest, _)| date < earliest) {
                chosen = Some((date, candidate));
            }
        }
        let Some((_, next)) = chosen else { break };
        let before = runs.len();
        push_runs(conditions, next, happened, facts, runs);
        let Some(last) = runs[before..].last().map(|run| run.last_date) else {
            break;
        };
        happened[next] = Some(last);
        current = next;
    }
}

/// When condition `index` first happens, if it can yet.
fn first_date(
    conditions: &[Condition],
    index: usize,
    happened: &[Option<NaiveDate>],
    facts: &VestingFacts<'_>,
) -> Option<NaiveDate> {
    let condition = &conditions[index];
    match &condition.trigger {
        Trigger::VestingStart => None,
        Trigger::Absolute(date) => Some(*date),
        Trigger::Event => facts.events.get(&condition.id).copied(),
        Trigger::Relative {
            period,
            relative_to,
        } => {
            let base = happened[first_with(conditions, relative_to)?]?;
            Steps::new(
                base,
                period.unit,
                period.length,
                period.day_of_month,
                facts.vesting_start,
            )
            .nth(1)
        }
    }
}

/// Appends the installments of condition `index`, a cliff merged into its
/// N-th installment: one run, or for extreme periods one run per date.
fn push_runs(
    conditions: &[Condition],
    index: usize,
    happened: &[Option<NaiveDate>],
    facts: &VestingFacts<'_>,
    runs: &mut Vec<Run>,
) {
    let condition = &conditions[index];
    let one = |date| Run::one(index, date, 1);
    match &condition.trigger {
        Trigger::VestingStart => {}
        Trigger::Absolute(date) => runs.push(one(*date)),
        Trigger::Event => {
            if let Some(date) = facts.events.get(&condition.id) {
                runs.push(one(*date));
            }
        }
        Trigger::Relative {
            period,
            relative_to,
        } => {
            let Some(base) = first_with(conditions, relative_to).and_then(|key| happened[key])
            else {
                return;
            };
            let steps = Steps::new(
                base,
                period.unit,
                period.length,
                period.day_of_month,
                facts.vesting_start,
            );
            let cliff = period.cliff_installment.max(1).min(period.occurrences);
            let last = period.occurrences;
            let ordinary = period
                .length
                .checked_mul(last)
                .is_some_and(|count| count <= MAX_STEP_COUNT);
            if ordinary
                && let Some(first_date) = steps.nth(cliff)
                && let Some(last_date) = steps.nth(last)
            {
                runs.push(Run {
                    condition: index as u32,
                    first_date,
                    last_date,
                    dates: Dates::Steps {
                        steps,
                        first: cliff,
                        last,
                    },
                });
                return;
            }
            for number in cliff..=last {
                if let Some(date) = steps.nth(number) {
                    let installments = if number == cliff { cliff } else { 1 };
                    runs.push(Run::one(index, date, installments));
                }
            }
        }
    }
}

/// Every installment of `runs` as a slot, in walk order, into `slots`.
pub(super) fn expand(runs: &[Run], slots: &mut Vec<Slot>) {
    let count = runs.iter().map(|run| run.len() as usize).sum::<usize>();
    slots.reserve(count.min(4 * MAX_OCCURRENCES as usize));
    for run in runs {
        let source = Source::Condition(run.condition);
        match run.dates {
            Dates::One { date, installments } => {
                slots.push(Slot::new(date, source, installments));
            }
            Dates::Steps { steps, first, last } => {
                for number in first..=last {
                    if let Some(date) = steps.nth(number) {
                        let installments = if number == first { first } else { 1 };
                        slots.push(Slot::new(date, source, installments));
                    }
                }
            }
        }
    }
}
