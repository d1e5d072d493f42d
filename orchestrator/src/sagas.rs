//! The two saga definitions of DESIGN.md: option exercise and share buyback.

use qapmap_proto::common::v1 as common;
use qapmap_proto::equity::v1 as equity;
use qapmap_proto::ledger::v1 as ledger;
use qapmap_proto::messaging::v1::saga_command::Command;
use qapmap_proto::messaging::v1::saga_reply::Result as ReplyResult;
use qapmap_proto::shareholder::v1 as shareholder;
use qapmap_runtime::{date, decimal};

use crate::context::{ContextError, SagaContext, SagaInput};
use crate::definition::{
    Action, CompensatableStep, PivotStep, RetriableStep, SagaDefinition, StepInfo,
};

pub const OPTION_EXERCISE: &str = "option_exercise";
pub const SHARE_BUYBACK: &str = "share_buyback";

/// Every definition, for look-ups by type and for tests over all of them.
pub const ALL: [&SagaDefinition; 2] = [&EXERCISE, &BUYBACK];

pub fn by_type(saga_type: &str) -> Option<&'static SagaDefinition> {
    ALL.into_iter()
        .find(|definition| definition.saga_type == saga_type)
}

/// Holder pays strike × quantity and receives shares.
pub static EXERCISE: SagaDefinition = SagaDefinition {
    saga_type: OPTION_EXERCISE,
    compensatable: &[
        CompensatableStep {
            info: StepInfo {
                name: "reserve_options",
                service: "equity",
                action: Action {
                    command: "reserve_options",
                    build: reserve_options,
                },
                absorb: absorb_option_reservation,
            },
            compensation: Action {
                command: "release_option_reservation",
                build: release_option_reservation,
            },
        },
        CompensatableStep {
            info: StepInfo {
                name: "hold_unissued_shares",
                service: "ledger",
                action: Action {
                    command: "hold_unissued_shares",
                    build: hold_unissued_shares,
                },
                absorb: absorb_hold,
            },
            compensation: Action {
                command: "release_hold",
                build: release_hold,
            },
        },
    ],
    pivot: PivotStep {
        info: StepInfo {
            name: "collect_payment",
            service: "shareholder",
            action: Action {
                command: "collect_payment",
                build: collect_payment,
            },
            absorb: absorb_payment,
        },
    },
    retriable: &[
        RetriableStep {
            info: StepInfo {
                name: "post_exercise",
                service: "ledger",
                action: Action {
                    command: "post_exercise",
                    build: post_exercise,
                },
                absorb: absorb_posting,
            },
        },
        RetriableStep {
            info: StepInfo {
                name: "confirm_exercise",
                service: "equity",
                action: Action {
                    command: "confirm_exercise",
                    build: confirm_exercise,
                },
                absorb: absorb_nothing,
            },
        },
    ],
};

/// Company pays price × quantity; the holder's shares go to treasury.
pub static BUYBACK: SagaDefinition = SagaDefinition {
    saga_type: SHARE_BUYBACK,
    compensatable: &[
        CompensatableStep {
            info: StepInfo {
                name: "reserve_repurchase",
                service: "equity",
                action: Action {
                    command: "reserve_repurchase",
                    build: reserve_repurchase,
                },
                absorb: absorb_repurchase_reservation,
            },
            compensation: Action {
                command: "release_repurchase_reservation",
                build: release_repurchase_reservation,
            },
        },
        CompensatableStep {
            info: StepInfo {
                name: "hold_holder_shares",
                service: "ledger",
                action: Action {
                    command: "hold_holder_shares",
                    build: hold_holder_shares,
                },
                absorb: absorb_hold,
            },
            compensation: Action {
                command: "release_hold",
                build: release_hold,
            },
        },
    ],
    pivot: PivotStep {
        info: StepInfo {
            name: "disburse_payment",
            service: "shareholder",
            action: Action {
                command: "disburse_payment",
                build: disburse_payment,
            },
            absorb: absorb_payment,
        },
    },
    retriable: &[
        RetriableStep {
            info: StepInfo {
                name: "post_repurchase",
                service: "ledger",
                action: Action {
                    command: "post_repurchase",
                    build: post_repurchase,
                },
                absorb: absorb_posting,
            },
        },
        RetriableStep {
            info: StepInfo {
                name: "confirm_repurchase",
                service: "equity",
                action: Action {
                    command: "confirm_repurchase",
                    build: confirm_repurchase,
                },
                absorb: absorb_nothing,
            },
        },
    ],
};

fn money(context: &SagaContext) -> Result<common::Money, ContextError> {
    Ok(common::Money {
        amount: Some(decimal::to_proto(context.amount()?)),
        currency: SagaContext::required(&context.currency, "currency")?.to_owned(),
    })
}

fn reserve_options(context: &SagaContext) -> Result<Command, ContextError> {
    let SagaInput::Exercise {
        award_id,
        quantity,
        exercise_date,
    } = &context.input
    else {
        return Err(ContextError("exercise input"));
    };
    Ok(Command::ReserveOptions(equity::ReserveOptionsCommand {
        award_id: award_id.to_string(),
        quantity: Some(decimal::to_proto(*quantity)),
        exercise_date: Some(date::to_proto(*exercise_date)),
    }))
}

/// The reservation id may be unknown when the reserve step timed out: the
/// service then finds the reservation by saga id and step.
fn release_option_reservation(context: &SagaContext) -> Result<Command, ContextError> {
    Ok(Command::ReleaseOptionReservation(
        equity::ReleaseOptionReservationCommand {
            reservation_id: context.reservation_id.clone().unwrap_or_default(),
        },
    ))
}

fn hold_unissued_shares(context: &SagaContext) -> Result<Command, ContextError> {
    Ok(Command::HoldUnissuedShares(
        ledger::HoldUnissuedSharesCommand {
            share_class_id: SagaContext::required(&context.share_class_id, "share class")?
                .to_owned(),
            quantity: Some(decimal::to_proto(context.quantity())),
        },
    ))
}

fn release_hold(context: &SagaContext) -> Result<Command, ContextError> {
    Ok(Command::ReleaseHold(ledger::ReleaseHoldCommand {
        hold_id: context.hold_id.clone().unwrap_or_default(),
    }))
}

fn collect_payment(context: &SagaContext) -> Result<Command, ContextError> {
    Ok(Command::CollectPayment(
        shareholder::CollectPaymentCommand {
            stakeholder_id: SagaContext::required(&context.stakeholder_id, "stakeholder")?
                .to_owned(),
            amount: Some(money(context)?),
        },
    ))
}

fn post_exercise(context: &SagaContext) -> Result<Command, ContextError> {
    Ok(Command::PostExercise(ledger::PostExerciseCommand {
        hold_id: SagaContext::required(&context.hold_id, "hold")?.to_owned(),
        stakeholder_id: SagaContext::required(&context.stakeholder_id, "stakeholder")?.to_owned(),
        share_class_id: SagaContext::required(&context.share_class_id, "share class")?.to_owned(),
        quantity: Some(decimal::to_proto(context.quantity())),
        amount_paid: Some(money(context)?),
        effective_date: Some(date::to_proto(context.effective_date())),
    }))
}

fn confirm_exercise(context: &SagaContext) -> Result<Command, ContextError> {
    Ok(Command::ConfirmExercise(equity::ConfirmExerciseCommand {
        reservation_id: SagaContext::required(&context.reservation_id, "reservation")?.to_owned(),
    }))
}

fn reserve_repurchase(context: &SagaContext) -> Result<Command, ContextError> {
    let SagaInput::Buyback {
        program_id,
        stakeholder_id,
        quantity,
        price_per_share,
        currency,
        repurchase_date,
    } = &context.input
    else {
        return Err(ContextError("buyback input"));
    };
    Ok(Command::ReserveRepurchase(
        equity::ReserveRepurchaseCommand {
            program_id: program_id.to_string(),
            stakeholder_id: stakeholder_id.to_string(),
            quantity: Some(decimal::to_proto(*quantity)),
            price_per_share: Some(common::Money {
                amount: Some(decimal::to_proto(*price_per_share)),
                currency: currency.clone(),
            }),
            repurchase_date: Some(date::to_proto(*repurchase_date)),
        },
    ))
}

fn release_repurchase_reservation(context: &SagaContext) -> Result<Command, ContextError> {
    Ok(Command::ReleaseRepurchaseReservation(
        equity::ReleaseRepurchaseReservationCommand {
            reservation_id: context.reservation_id.clone().unwrap_or_default(),
        },
    ))
}

fn hold_holder_shares(context: &SagaContext) -> Result<Command, ContextError> {
    Ok(Command::HoldHolderShares(ledger::HoldHolderSharesCommand {
        share_class_id: SagaContext::required(&context.share_class_id, "share class")?.to_owned(),
        stakeholder_id: SagaContext::required(&context.stakeholder_id, "stakeholder")?.to_owned(),
        quantity: Some(decimal::to_proto(context.quantity())),
    }))
}

fn disburse_payment(context: &SagaContext) -> Result<Command, ContextError> {
    Ok(Command::DisbursePayment(
        shareholder::DisbursePaymentCommand {
            stakeholder_id: SagaContext::required(&context.stakeholder_id, "stakeholder")?
                .to_owned(),
            amount: Some(money(context)?),
        },
    ))
}

fn post_repurchase(context: &SagaContext) -> Result<Command, ContextError> {
    Ok(Command::PostRepurchase(ledger::PostRepurchaseCommand {
        hold_id: SagaContext::required(&context.hold_id, "hold")?.to_owned(),
        stakeholder_id: SagaContext::required(&context.stakeholder_id, "stakeholder")?.to_owned(),
        share_class_id: SagaContext::required(&context.share_class_id, "share class")?.to_owned(),
        quantity: Some(decimal::to_proto(context.quantity())),
        amount_paid: Some(money(context)?),
        effective_date: Some(date::to_proto(context.effective_date())),
    }))
}

fn confirm_repurchase(context: &SagaContext) -> Result<Command, ContextError> {
    Ok(Command::ConfirmRepurchase(
        equity::ConfirmRepurchaseCommand {
            reservation_id: SagaContext::required(&context.reservation_id, "reservation")?
                .to_owned(),
        },
    ))
}

fn absorb_option_reservation(context: &mut SagaContext, result: Option<&ReplyResult>) {
    if let Some(ReplyResult::ReserveOptions(reserved)) = result {
        context.reservation_id = Some(reserved.reservation_id.clone());
        context.share_class_id = Some(reserved.share_class_id.clone());
        context.stakeholder_id = Some(reserved.stakeholder_id.clone());
        if let Some(price) = &reserved.exercise_price {
            context.price_per_share = price
                .amount
                .as_ref()
                .and_then(|amount| decimal::parse_str("exercise_price", &amount.value).ok());
            context.currency = Some(price.currency.clone());
        }
    }
}

fn absorb_repurchase_reservation(context: &mut SagaContext, result: Option<&ReplyResult>) {
    if let Some(ReplyResult::ReserveRepurchase(reserved)) = result {
        context.reservation_id = Some(reserved.reservation_id.clone());
        context.share_class_id = Some(reserved.share_class_id.clone());
    }
}

fn absorb_hold(context: &mut SagaContext, result: Option<&ReplyResult>) {
    if let Some(ReplyResult::Hold(hold)) = result {
        context.hold_id = Some(hold.hold_id.clone());
    }
}

fn absorb_payment(context: &mut SagaContext, result: Option<&ReplyResult>) {
    if let Some(ReplyResult::Payment(payment)) = result {
        context.payment_id = Some(payment.payment_id.clone());
    }
}

fn absorb_posting(context: &mut SagaContext, result: Option<&ReplyResult>) {
    if let Some(ReplyResult::Posting(posting)) = result {
        context.entry_id = Some(posting.entry_id.clone());
    }
}

fn absorb_nothing(_: &mut SagaContext, _: Option<&ReplyResult>) {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::StepKind;

    #[test]
    fn every_definition_has_compensatable_steps_then_one_pivot_then_retriable_steps() {
        for definition in ALL {
            let kinds: Vec<StepKind> = definition.steps().map(|step| step.kind).collect();
            let pivot = definition.pivot_index();
            assert_eq!(kinds.iter().filter(|k| **k == StepKind::Pivot).count(), 1);
            assert!(kinds[..pivot].iter().all(|k| *k == StepKind::Compensatable));
            assert!(kinds[pivot + 1..].iter().all(|k| *k == StepKind::Retriable));
            for step in definition.steps() {
                assert_eq!(
                    step.compensation.is_some(),
                    step.kind == StepKind::Compensatable,
                    "{} step {} compensation",
                    definition.saga_type,
                    step.info.name
                );
            }
        }
    }

    #[test]
    fn the_exercise_saga_follows_the_design_table() {
        let names: Vec<&str> = EXERCISE.steps().map(|step| step.info.name).collect();
        assert_eq!(
            names,
            [
                "reserve_options",
                "hold_unissued_shares",
                "collect_payment",
                "post_exercise",
                "confirm_exercise"
            ]
        );
        let services: Vec<&str> = EXERCISE.steps().map(|step| step.info.service).collect();
        assert_eq!(
            services,
            ["equity", "ledger", "shareholder", "ledger", "equity"]
        );
    }

    #[test]
    fn the_buyback_pays_price_times_quantity() {
        let context = SagaContext::new(SagaInput::Buyback {
            program_id: uuid::Uuid::nil(),
            stakeholder_id: uuid::Uuid::nil(),
            quantity: rust_decimal::Decimal::new(1500, 0),
            price_per_share: rust_decimal::Decimal::new(125, 2),
            currency: "USD".to_owned(),
            repurchase_date: chrono::NaiveDate::from_ymd_opt(2026, 1, 1).expect("date"),
        });
        let Ok(Command::DisbursePayment(command)) = disburse_payment(&context) else {
            panic!("expected a disbursement");
        };
        let amount = command.amount.expect("amount");
        assert_eq!(amount.amount.expect("decimal").value, "1875");
        assert_eq!(amount.currency, "USD");
    }
}
