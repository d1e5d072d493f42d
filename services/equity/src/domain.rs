//! The equity domain in plain Rust: the enums of the contract, an award and
//! its position on a date. No prost, no sqlx: conversions live in `convert`
//! and `store`. Positions are pure functions of an award's facts.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use qapmap_runtime::decimal::Money;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::vesting::{self, Acceleration, PeriodUnit, Tranche, VestingFacts, VestingTerms};

/// Declares a closed enum with its stable snake_case storage name.
macro_rules! stored_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }

            pub fn from_stored(text: &str) -> Option<Self> {
                match text { $($text => Some(Self::$variant),)+ _ => None }
            }
        }
    };
}

stored_enum!(ShareClassType { Common => "common", Preferred => "preferred" });
stored_enum!(
    /// Where cancelled options go.
    CancellationBehavior { ReturnToPool => "return_to_pool", Retire => "retire" }
);
stored_enum!(AwardType { Iso => "iso", Nso => "nso", Rsu => "rsu" });
stored_enum!(AwardStatus { Active => "active", Terminated => "terminated", Closed => "closed" });
stored_enum!(
    /// OCF termination reasons.
    TerminationReason {
        VoluntaryOther => "voluntary_other",
        VoluntaryGoodCause => "voluntary_good_cause",
        VoluntaryRetirement => "voluntary_retirement",
        InvoluntaryOther => "involuntary_other",
        InvoluntaryDeath => "involuntary_death",
        InvoluntaryDisability => "involuntary_disability",
        InvoluntaryWithCause => "involuntary_with_cause",
    }
);

impl AwardType {
    pub fn is_option(self) -> bool {
        !matches!(self, Self::Rsu)
    }
}

/// Units of a post-termination exercise window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WindowUnit {
    Days,
    Months,
    Years,
}

/// How long vested options stay exercisable after a termination for `reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminationWindow {
    pub reason: TerminationReason,
    pub length: u32,
    pub unit: WindowUnit,
}

impl TerminationWindow {
    fn end(self, termination_date: NaiveDate) -> Option<NaiveDate> {
        let (unit, length) = match self.unit {
            WindowUnit::Days => (PeriodUnit::Days, self.length),
            WindowUnit::Months => (PeriodUnit::Months, self.length),
            WindowUnit::Years => (PeriodUnit::Months, self.length.checked_mul(12)?),
        };
        vesting::calendar::add_period(termination_date, unit, length)
    }
}

/// A quantity above zero (shares, options, units).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Quantity(Decimal);

impl Quantity {
    pub fn new(value: Decimal) -> Option<Self> {
        (value > Decimal::ZERO).then_some(Self(value))
    }

    pub fn value(self) -> Decimal {
        self.0
    }
}

/// An award as stored, with what has happened to it.
#[derive(Debug, Clone)]
pub struct Award {
    pub id: Uuid,
    pub company_id: Uuid,
    pub plan_id: Uuid,
    pub stakeholder_id: Uuid,
    pub award_type: AwardType,
    pub quantity: Decimal,
    pub exercise_price: Option<Money>,
    pub grant_date: NaiveDate,
    pub expiration_date: Option<NaiveDate>,
    pub vesting_start: NaiveDate,
    pub early_exercisable: bool,
    pub vesting_terms: Option<VestingTerms>,
    pub termination_windows: Vec<TerminationWindow>,
    pub vesting_events: BTreeMap<String, NaiveDate>,
    pub accelerations: Vec<Acceleration>,
    pub exercised: Decimal,
    /// Held by open exercise reservations.
    pub reserved: Decimal,
    /// Cancelled after vesting (surrendered or expired).
    pub cancelled_vested: Decimal,
    /// Cancelled before vesting (surrendered, forfeited at termination, expired).
    pub cancelled_unvested: Decimal,
    pub termination: Option<(NaiveDate, TerminationReason)>,
    pub status: AwardStatus,
    pub version: i64,
}

/// An award's counts on a date. Always:
/// quantity = vested_unexercised + unvested + exercised + forfeited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub as_of: NaiveDate,
    pub vested: Decimal,
    pub unvested: Decimal,
    pub exercised: Decimal,
    pub forfeited: Decimal,
    pub reserved: Decimal,
    pub exercisable: Decimal,
    pub vested_unexercised: Decimal,
    pub exercisable_until: Option<NaiveDate>,
}

impl Award {
    /// The most that may ever vest.
    pub fn vesting_cap(&self) -> Decimal {
        self.quantity - self.cancelled_unvested
    }

    /// The vesting schedule as it stands.
    pub fn tranches(&self) -> Vec<Tranche> {
        vesting::schedule(self.vesting_terms.as_ref(), &self.vesting_facts())
    }

    fn vesting_facts(&self) -> VestingFacts<'_> {
        VestingFacts {
            quantity: self.quantity,
            grant_date: self.grant_date,
            vesting_start: self.vesting_start,
            events: &self.vesting_events,
            accelerations: &self.accelerations,
            vesting_cap: self.vesting_cap(),
        }
    }

    /// The last day options may be exercised: the expiration date, and after
    /// a termination the end of the window for its reason (no window for the
    /// reason: the termination date itself).
    pub fn exercisable_until(&self) -> Option<NaiveDate> {
        let window_end = self.termination.map(|(date, reason)| {
            self.termination_windows
                .iter()
                .find(|window| window.reason == reason)
                .and_then(|window| window.end(date))
                .unwrap_or(date)
        });
        match (self.expiration_date, window_end) {
            (Some(expiry), Some(end)) => Some(expiry.min(end)),
            (expiry, end) => expiry.or(end),
        }
    }

    pub fn is_expired_on(&self, date: NaiveDate) -> bool {
        self.exercisable_until().is_some_and(|until| date > until)
    }

    /// The counts on `as_of`.
    pub fn position(&self, as_of: NaiveDate) -> Position {
        // The same figure as `vested_as_of(&self.tranches(), as_of)`, without
        // building the tranche list (vesting::vested_on is proven equal).
        let vested = vesting::vested_on(self.vesting_terms.as_ref(), &self.vesting_facts(), as_of);
        // Early exercise may consume options before they vest.
        let consumed = self.exercised + self.cancelled_vested;
        let vested_or_consumed = vested.max(consumed).min(self.vesting_cap());
        let vested_unexercised = vested_or_consumed - consumed;
        let unvested = self.vesting_cap() - vested_or_consumed;
        let exercisable = self.exercisable_on(as_of, vested_unexercised, unvested);
        Position {
            as_of,
            vested,
            unvested,
            exercised: self.exercised,
            forfeited: self.cancelled_vested + self.cancelled_unvested,
            reserved: self.reserved,
            exercisable,
            vested_unexercised,
            exercisable_until: self.exercisable_until(),
        }
    }

    fn exercisable_on(
        &self,
        as_of: NaiveDate,
        vested_unexercised: Decimal,
        unvested: Decimal,
    ) -> Decimal {
        let open = self.award_type.is_option()
            && self.status != AwardStatus::Closed
            && !self.is_expired_on(as_of)
            && as_of >= self.grant_date;
        if !open {
            return Decimal::ZERO;
        }
        let early = if self.early_exercisable && self.termination.is_none() {
            unvested
        } else {
            Decimal::ZERO
        };
        (vested_unexercised + early - self.reserved).max(Decimal::ZERO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(year: i32, month: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(year, month, day).expect("valid date")
    }

    fn award(quantity: i64) -> Award {
        Award {
            id: Uuid::nil(),
            company_id: Uuid::nil(),
            plan_id: Uuid::nil(),
            stakeholder_id: Uuid::nil(),
            award_type: AwardType::Iso,
            quantity: Decimal::from(quantity),
            exercise_price: None,
            grant_date: date(2024, 1, 1),
            expiration_date: Some(date(2034, 1, 1)),
            vesting_start: date(2024, 1, 1),
            early_exercisable: false,
            vesting_terms: None,
            termination_windows: vec![TerminationWindow {
                reason: TerminationReason::VoluntaryOther,
                length: 3,
                unit: WindowUnit::Months,
            }],
            vesting_events: BTreeMap::new(),
            accelerations: Vec::new(),
            exercised: Decimal::ZERO,
            reserved: Decimal::ZERO,
            cancelled_vested: Decimal::ZERO,
            cancelled_unvested: Decimal::ZERO,
            termination: None,
            status: AwardStatus::Active,
            version: 1,
        }
    }

    fn holds_the_award_identity(award: &Award, position: &Position) -> bool {
        position.vested_unexercised + position.unvested + position.exercised + position.forfeited
            == award.quantity
    }

    #[test]
    fn a_termination_window_ends_exercisability_before_the_expiration_date() {
        let mut terminated = award(1_000);
        terminated.termination = Some((date(2025, 11, 30), TerminationReason::VoluntaryOther));
        assert_eq!(terminated.exercisable_until(), Some(date(2026, 2, 28)));
        assert!(!terminated.is_expired_on(date(2026, 2, 28)));
        assert!(terminated.is_expired_on(date(2026, 3, 1)));

        terminated.termination =
            Some((date(2025, 11, 30), TerminationReason::InvoluntaryWithCause));
        assert_eq!(
            terminated.exercisable_until(),
            Some(date(2025, 11, 30)),
            "no window: none"
        );
    }

    #[test]
    fn the_position_always_sums_to_the_quantity() {
        let mut partly_used = award(1_000);
        partly_used.exercised = Decimal::from(300);
        partly_used.reserved = Decimal::from(100);
        partly_used.cancelled_vested = Decimal::from(50);
        let position = partly_used.position(date(2024, 6, 1));
        assert_eq!(position.vested_unexercised, Decimal::from(650));
        assert_eq!(position.exercisable, Decimal::from(550));
        assert!(holds_the_award_identity(&partly_used, &position));

        let expired = partly_used.position(date(2034, 1, 2));
        assert_eq!(expired.exercisable, Decimal::ZERO);
        assert!(holds_the_award_identity(&partly_used, &expired));
    }
}
