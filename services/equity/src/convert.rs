//! Proto <-> domain conversions at the gRPC edge. Parsing rejects bad input
//! with INVALID_ARGUMENT naming the proto field path, before any work starts.

use chrono::NaiveDate;
use qapmap_proto::common::v1 as common;
use qapmap_proto::equity::v1 as proto;
use qapmap_runtime::decimal::{self, Money};
use qapmap_runtime::{ApiError, date};
use rust_decimal::Decimal;

use crate::domain::{
    AwardStatus, AwardType, CancellationBehavior, Position, Quantity, ShareClassType,
    TerminationReason, TerminationWindow, WindowUnit,
};
use crate::vesting::{
    self, AllocationType, Amount, Condition, DayOfMonth, Period, PeriodUnit, Trigger, VestingTerms,
};

/// Longest name accepted for classes, plans and descriptions.
pub const MAX_NAME_LENGTH: usize = 200;

/// A required enum field: unknown values and UNSPECIFIED are refused.
pub fn enum_field<P, D>(
    field: &str,
    value: i32,
    map: impl Fn(P) -> Option<D>,
) -> Result<D, ApiError>
where
    P: TryFrom<i32>,
{
    P::try_from(value)
        .ok()
        .and_then(map)
        .ok_or_else(|| ApiError::invalid(field, format!("{value} is not a known value")))
}

pub fn name(field: &str, value: &str) -> Result<String, ApiError> {
    let trimmed = value.trim();
    if trimmed.is_empty() || trimmed.chars().count() > MAX_NAME_LENGTH {
        return Err(ApiError::invalid(field, "must be 1-200 characters"));
    }
    Ok(trimmed.to_owned())
}

pub fn quantity(field: &str, value: Option<&common::Decimal>) -> Result<Quantity, ApiError> {
    let parsed = decimal::positive(field, value)?;
    Quantity::new(parsed).ok_or_else(|| ApiError::invalid(field, "must be above 0"))
}

pub fn share_class_type(value: i32) -> Result<ShareClassType, ApiError> {
    enum_field("class_type", value, |p: proto::ShareClassType| match p {
        proto::ShareClassType::Common => Some(ShareClassType::Common),
        proto::ShareClassType::Preferred => Some(ShareClassType::Preferred),
        proto::ShareClassType::Unspecified => None,
    })
}

pub fn share_class_type_to_proto(value: ShareClassType) -> proto::ShareClassType {
    match value {
        ShareClassType::Common => proto::ShareClassType::Common,
        ShareClassType::Preferred => proto::ShareClassType::Preferred,
    }
}

pub fn cancellation_behavior(value: i32) -> Result<CancellationBehavior, ApiError> {
    enum_field(
        "cancellation_behavior",
        value,
        |p: proto::CancellationBehavior| match p {
            proto::CancellationBehavior::ReturnToPool => Some(CancellationBehavior::ReturnToPool),
            proto::CancellationBehavior::Retire => Some(CancellationBehavior::Retire),
            proto::CancellationBehavior::Unspecified => None,
        },
    )
}

pub fn cancellation_behavior_to_proto(value: CancellationBehavior) -> proto::CancellationBehavior {
    match value {
        CancellationBehavior::ReturnToPool => proto::CancellationBehavior::ReturnToPool,
        CancellationBehavior::Retire => proto::CancellationBehavior::Retire,
    }
}

pub fn award_type(value: i32) -> Result<AwardType, ApiError> {
    enum_field("award_type", value, |p: proto::AwardType| match p {
        proto::AwardType::Iso => Some(AwardType::Iso),
        proto::AwardType::Nso => Some(AwardType::Nso),
        proto::AwardType::Rsu => Some(AwardType::Rsu),
        proto::AwardType::Unspecified => None,
    })
}

fn award_type_to_proto(value: AwardType) -> proto::AwardType {
    match value {
        AwardType::Iso => proto::AwardType::Iso,
        AwardType::Nso => proto::AwardType::Nso,
        AwardType::Rsu => proto::AwardType::Rsu,
    }
}

fn award_status_to_proto(value: AwardStatus) -> proto::AwardStatus {
    match value {
        AwardStatus::Active => proto::AwardStatus::Active,
        AwardStatus::Terminated => proto::AwardStatus::Terminated,
        AwardStatus::Closed => proto::AwardStatus::Closed,
    }
}

pub fn termination_reason(field: &str, value: i32) -> Result<TerminationReason, ApiError> {
    use proto::TerminationReason as P;
    enum_field(field, value, |p: P| match p {
        P::VoluntaryOther => Some(TerminationReason::VoluntaryOther),
        P::VoluntaryGoodCause => Some(TerminationReason::VoluntaryGoodCause),
        P::VoluntaryRetirement => Some(TerminationReason::VoluntaryRetirement),
        P::InvoluntaryOther => Some(TerminationReason::InvoluntaryOther),
        P::InvoluntaryDeath => Some(TerminationReason::InvoluntaryDeath),
        P::InvoluntaryDisability => Some(TerminationReason::InvoluntaryDisability),
        P::InvoluntaryWithCause => Some(TerminationReason::InvoluntaryWithCause),
        P::Unspecified => None,
    })
}

pub fn termination_reason_to_proto(value: TerminationReason) -> proto::TerminationReason {
    use proto::TerminationReason as P;
    match value {
        TerminationReason::VoluntaryOther => P::VoluntaryOther,
        TerminationReason::VoluntaryGoodCause => P::VoluntaryGoodCause,
        TerminationReason::VoluntaryRetirement => P::VoluntaryRetirement,
        TerminationReason::InvoluntaryOther => P::InvoluntaryOther,
        TerminationReason::InvoluntaryDeath => P::InvoluntaryDeath,
        TerminationReason::InvoluntaryDisability => P::InvoluntaryDisability,
        TerminationReason::InvoluntaryWithCause => P::InvoluntaryWithCause,
    }
}

fn positive_count(field: &str, value: i32) -> Result<u32, ApiError> {
    u32::try_from(value)
        .ok()
        .filter(|count| *count >= 1)
        .ok_or_else(|| ApiError::invalid(field, "must be at least 1"))
}

pub fn termination_windows(
    windows: &[proto::TerminationWindow],
) -> Result<Vec<TerminationWindow>, ApiError> {
    let mut parsed: Vec<TerminationWindow> = Vec::with_capacity(windows.len());
    for (index, window) in windows.iter().enumerate() {
        let field = |name: &str| format!("termination_windows[{index}].{name}");
        let reason = termination_reason(&field("reason"), window.reason)?;
        if parsed.iter().any(|earlier| earlier.reason == reason) {
            return Err(ApiError::invalid(field("reason"), "appears twice"));
        }
        let length = u32::try_from(window.period)
            .map_err(|_| ApiError::invalid(field("period"), "must not be negative"))?;
        let unit = enum_field(
            &field("period_type"),
            window.period_type,
            |p: proto::PeriodType| match p {
                proto::PeriodType::Days => Some(WindowUnit::Days),
                proto::PeriodType::Months => Some(WindowUnit::Months),
                proto::PeriodType::Years => Some(WindowUnit::Years),
                proto::PeriodType::Unspecified => None,
            },
        )?;
        parsed.push(TerminationWindow {
            reason,
            length,
            unit,
        });
    }
    Ok(parsed)
}

pub fn termination_windows_to_proto(
    windows: &[TerminationWindow],
) -> Vec<proto::TerminationWindow> {
    windows
        .iter()
        .map(|window| proto::TerminationWindow {
            reason: termination_reason_to_proto(window.reason) as i32,
            period: i32::try_from(window.length).unwrap_or(i32::MAX),
            period_type: match window.unit {
                WindowUnit::Days => proto::PeriodType::Days,
                WindowUnit::Months => proto::PeriodType::Months,
                WindowUnit::Years => proto::PeriodType::Years,
            } as i32,
        })
        .collect()
}

/// OCF vesting terms, every field checked; `field` paths start at `vesting_terms`.
pub fn vesting_terms(terms: &proto::VestingTerms) -> Result<VestingTerms, ApiError> {
    let allocation = enum_field(
        "vesting_terms.allocation_type",
        terms.allocation_type,
        allocation_type,
    )?;
    let conditions = terms
        .conditions
        .iter()
        .enumerate()
        .map(|(index, condition)| vesting_condition(index, condition))
        .collect::<Result<Vec<_>, _>>()?;
    let parsed = VestingTerms {
        id: terms.id.clone(),
        name: terms.name.clone(),
        description: terms.description.clone(),
        allocation,
        conditions,
    };
    parsed
        .validate()
        .map_err(|error| ApiError::invalid(error.field, error.description))?;
    Ok(parsed)
}

fn allocation_type(value: proto::AllocationType) -> Option<AllocationType> {
    use proto::AllocationType as P;
    Some(match value {
        P::CumulativeRounding => AllocationType::CumulativeRounding,
        P::CumulativeRoundDown => AllocationType::CumulativeRoundDown,
        P::FrontLoaded => AllocationType::FrontLoaded,
        P::BackLoaded => AllocationType::BackLoaded,
        P::FrontLoadedToSingleTranche => AllocationType::FrontLoadedToSingleTranche,
        P::BackLoadedToSingleTranche => AllocationType::BackLoadedToSingleTranche,
        P::Fractional => AllocationType::Fractional,
        P::Unspecified => return None,
    })
}

fn allocation_type_to_proto(value: AllocationType) -> proto::AllocationType {
    use proto::AllocationType as P;
    match value {
        AllocationType::CumulativeRounding => P::CumulativeRounding,
        AllocationType::CumulativeRoundDown => P::CumulativeRoundDown,
        AllocationType::FrontLoaded => P::FrontLoaded,
        AllocationType::BackLoaded => P::BackLoaded,
        AllocationType::FrontLoadedToSingleTranche => P::FrontLoadedToSingleTranche,
        AllocationType::BackLoadedToSingleTranche => P::BackLoadedToSingleTranche,
        AllocationType::Fractional => P::Fractional,
    }
}

fn vesting_condition(
    index: usize,
    condition: &proto::VestingCondition,
) -> Result<Condition, ApiError> {
    let path = format!("vesting_terms.conditions[{index}]");
    let amount = match &condition.amount {
        Some(proto::vesting_condition::Amount::Portion(portion)) => {
            let numerator = decimal::non_negative(
                &format!("{path}.portion.numerator"),
                portion.numerator.as_ref(),
            )?;
            let denominator = decimal::positive(
                &format!("{path}.portion.denominator"),
                portion.denominator.as_ref(),
            )?;
            if numerator > denominator {
                return Err(ApiError::invalid(
                    format!("{path}.portion.numerator"),
                    "must not exceed the denominator",
                ));
            }
            Amount::Portion {
                numerator,
                denominator,
                remainder: portion.remainder,
            }
        }
        Some(proto::vesting_condition::Amount::Quantity(quantity)) => Amount::Quantity(
            decimal::non_negative(&format!("{path}.quantity"), Some(quantity))?,
        ),
        None => {
            return Err(ApiError::invalid(
                format!("{path}.amount"),
                "a portion or a quantity is required",
            ));
        }
    };
    let trigger = vesting_trigger(&path, condition.trigger.as_ref())?;
    Ok(Condition {
        id: condition.id.clone(),
        description: condition.description.clone(),
        amount,
        trigger,
        next: condition.next_condition_ids.clone(),
    })
}

fn vesting_trigger(
    path: &str,
    trigger: Option<&proto::VestingTrigger>,
) -> Result<Trigger, ApiError> {
    use proto::vesting_trigger::Trigger as P;
    let missing = || ApiError::invalid(format!("{path}.trigger"), "is required");
    Ok(
        match trigger
            .and_then(|t| t.trigger.as_ref())
            .ok_or_else(missing)?
        {
            P::VestingStart(_) => Trigger::VestingStart,
            P::Event(_) => Trigger::Event,
            P::Absolute(absolute) => Trigger::Absolute(date::required(
                &format!("{path}.trigger.absolute.date"),
                absolute.date.as_ref(),
            )?),
            P::Relative(relative) => {
                let period_path = format!("{path}.trigger.relative.period");
                let period = relative
                    .period
                    .as_ref()
                    .ok_or_else(|| ApiError::invalid(&period_path, "is required"))?;
                Trigger::Relative {
                    period: vesting_period(&period_path, period)?,
                    relative_to: relative.relative_to_condition_id.clone(),
                }
            }
        },
    )
}

fn vesting_period(path: &str, period: &proto::VestingPeriod) -> Result<Period, ApiError> {
    let field = |name: &str| format!("{path}.{name}");
    let length = positive_count(&field("length"), period.length)?;
    let occurrences = positive_count(&field("occurrences"), period.occurrences)?;
    if occurrences > vesting::MAX_OCCURRENCES {
        return Err(ApiError::invalid(
            field("occurrences"),
            "must be at most 1200",
        ));
    }
    let unit = enum_field(
        &field("period_type"),
        period.period_type,
        |p: proto::PeriodType| match p {
            proto::PeriodType::Days => Some(PeriodUnit::Days),
            proto::PeriodType::Months => Some(PeriodUnit::Months),
            // OCF vesting periods are in days or months only.
            proto::PeriodType::Years | proto::PeriodType::Unspecified => None,
        },
    )?;
    let day_of_month = day_of_month(&field("day_of_month"), period)?;
    let cliff_installment = u32::try_from(period.cliff_installment)
        .map_err(|_| ApiError::invalid(field("cliff_installment"), "must not be negative"))?;
    if cliff_installment > occurrences {
        return Err(ApiError::invalid(
            field("cliff_installment"),
            "the cliff is longer than the schedule's occurrences",
        ));
    }
    Ok(Period {
        length,
        unit,
        occurrences,
        day_of_month,
        cliff_installment,
    })
}

fn day_of_month(field: &str, period: &proto::VestingPeriod) -> Result<DayOfMonth, ApiError> {
    use proto::VestingDayOfMonth as P;
    let rule = P::try_from(period.day_of_month).map_err(|_| {
        ApiError::invalid(
            field,
            format!("{} is not a known value", period.day_of_month),
        )
    })?;
    Ok(match rule {
        // Unset means OCF's usual "same day as the start, or the month's last".
        P::Unspecified | P::VestingStartDayOrLastDayOfMonth => DayOfMonth::VestingStartDayOrLastDay,
        P::LastDayOfMonth => DayOfMonth::LastDay,
        P::FixedDay => {
            let day = u8::try_from(period.day_of_month_number)
                .ok()
                .filter(|day| (1..=31).contains(day))
                .ok_or_else(|| {
                    ApiError::invalid(
                        field.replace("day_of_month", "day_of_month_number"),
                        "must be 1-31",
                    )
                })?;
            DayOfMonth::Fixed(day)
        }
    })
}

pub fn vesting_terms_to_proto(terms: &VestingTerms) -> proto::VestingTerms {
    proto::VestingTerms {
        id: terms.id.clone(),
        name: terms.name.clone(),
        description: terms.description.clone(),
        allocation_type: allocation_type_to_proto(terms.allocation) as i32,
        conditions: terms.conditions.iter().map(condition_to_proto).collect(),
    }
}

fn condition_to_proto(condition: &Condition) -> proto::VestingCondition {
    use proto::vesting_trigger::Trigger as P;
    let amount = match condition.amount {
        Amount::Portion {
            numerator,
            denominator,
            remainder,
        } => proto::vesting_condition::Amount::Portion(proto::VestingPortion {
            numerator: Some(decimal::to_proto(numerator)),
            denominator: Some(decimal::to_proto(denominator)),
            remainder,
        }),
        Amount::Quantity(quantity) => {
            proto::vesting_condition::Amount::Quantity(decimal::to_proto(quantity))
        }
    };
    let trigger = match &condition.trigger {
        Trigger::VestingStart => P::VestingStart(proto::VestingStartTrigger {}),
        Trigger::Event => P::Event(proto::EventTrigger {}),
        Trigger::Absolute(on) => P::Absolute(proto::AbsoluteTrigger {
            date: Some(date::to_proto(*on)),
        }),
        Trigger::Relative {
            period,
            relative_to,
        } => P::Relative(proto::RelativeTrigger {
            period: Some(period_to_proto(period)),
            relative_to_condition_id: relative_to.clone(),
        }),
    };
    proto::VestingCondition {
        id: condition.id.clone(),
        description: condition.description.clone(),
        amount: Some(amount),
        trigger: Some(proto::VestingTrigger {
            trigger: Some(trigger),
        }),
        next_condition_ids: condition.next.clone(),
    }
}

fn period_to_proto(period: &Period) -> proto::VestingPeriod {
    let (day_of_month, day_of_month_number) = match period.day_of_month {
        DayOfMonth::VestingStartDayOrLastDay => {
            (proto::VestingDayOfMonth::VestingStartDayOrLastDayOfMonth, 0)
        }
        DayOfMonth::LastDay => (proto::VestingDayOfMonth::LastDayOfMonth, 0),
        DayOfMonth::Fixed(day) => (proto::VestingDayOfMonth::FixedDay, i32::from(day)),
    };
    let count = |value: u32| i32::try_from(value).unwrap_or(i32::MAX);
    proto::VestingPeriod {
        length: count(period.length),
        period_type: match period.unit {
            PeriodUnit::Days => proto::PeriodType::Days,
            PeriodUnit::Months => proto::PeriodType::Months,
        } as i32,
        occurrences: count(period.occurrences),
        day_of_month: day_of_month as i32,
        day_of_month_number,
        cliff_installment: count(period.cliff_installment),
    }
}

pub fn optional_date(value: Option<NaiveDate>) -> Option<common::Date> {
    value.map(date::to_proto)
}

pub fn award_to_proto(award: &crate::domain::Award) -> proto::Award {
    proto::Award {
        id: award.id.to_string(),
        company_id: award.company_id.to_string(),
        plan_id: award.plan_id.to_string(),
        stakeholder_id: award.stakeholder_id.to_string(),
        award_type: award_type_to_proto(award.award_type) as i32,
        quantity: Some(decimal::to_proto(award.quantity)),
        exercise_price: award.exercise_price.map(Money::to_proto),
        grant_date: Some(date::to_proto(award.grant_date)),
        expiration_date: optional_date(award.expiration_date),
        termination_windows: termination_windows_to_proto(&award.termination_windows),
        early_exercisable: award.early_exercisable,
        vesting_terms: award.vesting_terms.as_ref().map(vesting_terms_to_proto),
        vesting_start_date: Some(date::to_proto(award.vesting_start)),
        status: award_status_to_proto(award.status) as i32,
        version: award.version,
        termination_date: optional_date(award.termination.map(|(on, _)| on)),
        termination_reason: award
            .termination
            .map_or(0, |(_, reason)| termination_reason_to_proto(reason) as i32),
    }
}

pub fn position_to_proto(position: &Position) -> proto::AwardPosition {
    let number = |value: Decimal| Some(decimal::to_proto(value));
    proto::AwardPosition {
        as_of: Some(date::to_proto(position.as_of)),
        vested: number(position.vested),
        unvested: number(position.unvested),
        exercised: number(position.exercised),
        forfeited: number(position.forfeited),
        reserved: number(position.reserved),
        exercisable: number(position.exercisable),
        vested_unexercised: number(position.vested_unexercised),
        exercisable_until: optional_date(position.exercisable_until),
    }
}

pub fn tranche_to_proto(tranche: &vesting::Tranche) -> proto::VestingTranche {
    proto::VestingTranche {
        date: Some(date::to_proto(tranche.date)),
        quantity: Some(decimal::to_proto(tranche.quantity)),
        condition_id: tranche.condition_id.clone(),
    }
}

pub fn timestamp(at: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or_default(),
    }
}
