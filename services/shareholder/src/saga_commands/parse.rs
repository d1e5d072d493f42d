//! Reading a `SagaCommand` envelope into a typed payment command.
//!
//! Bad input comes in two kinds, answered differently:
//! - [`Malformed`]: the envelope itself is wrong (ids that are not UUIDs, a
//!   negative step, a compensation of a pivot, a command this service does
//!   not handle). No reply could be matched to a saga step, so the consumer
//!   dead-letters it for an operator.
//! - [`InvalidPayment`]: the envelope is fine but the payment fields are not
//!   (stakeholder id, amount). Nothing was paid, so the step is answered
//!   REJECTED and the saga may compensate.

use qapmap_proto::messaging::v1::SagaCommand;
use qapmap_proto::messaging::v1::saga_command::Command;
use qapmap_runtime::decimal::Money;
use qapmap_runtime::ids;
pub use qapmap_runtime::saga_initiator::{self, SagaInitiator};
use uuid::Uuid;

use crate::payment::{Direction, PaymentAmount};
use crate::saga_operations::SagaPayment;

/// The reason code of a command whose payment fields do not parse.
pub const INVALID_COMMAND: &str = "invalid_command";

/// The envelope of a payment command, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Envelope {
    pub saga_id: Uuid,
    pub step: u32,
    pub company_id: Uuid,
    pub direction: Direction,
}

/// A command that cannot be handled or answered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Malformed {
    #[error("{0} must be a UUID")]
    NotAUuid(&'static str),
    #[error("step {0} is negative")]
    NegativeStep(i32),
    #[error("payment steps are pivots: they have no compensation")]
    Compensation,
    #[error("the shareholder service does not handle {0}")]
    Unhandled(String),
    #[error("subject {subject:?} does not carry a {command} command")]
    SubjectMismatch {
        subject: String,
        command: &'static str,
    },
}

/// A payment field that does not parse; names the field.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid {field}: {description}")]
pub struct InvalidPayment {
    pub field: &'static str,
    pub description: String,
}

/// Checks the envelope. `expected_subject` maps a command name to the subject
/// it must arrive on, so a collect can never be read off a disburse subject.
pub fn envelope(
    command: &SagaCommand,
    subject: &str,
    expected_subject: impl Fn(&str) -> String,
) -> Result<Envelope, Malformed> {
    let saga_id = Uuid::try_parse(&command.saga_id).map_err(|_| Malformed::NotAUuid("saga_id"))?;
    let company_id =
        Uuid::try_parse(&command.company_id).map_err(|_| Malformed::NotAUuid("company_id"))?;
    let step = u32::try_from(command.step).map_err(|_| Malformed::NegativeStep(command.step))?;
    if command.compensation {
        return Err(Malformed::Compensation);
    }
    let (name, direction) = match &command.command {
        Some(Command::CollectPayment(_)) => ("collect_payment", Direction::Collection),
        Some(Command::DisbursePayment(_)) => ("disburse_payment", Direction::Disbursement),
        Some(other) => return Err(Malformed::Unhandled(format!("{other:?}"))),
        None => return Err(Malformed::Unhandled("an empty command".to_owned())),
    };
    if subject != expected_subject(name) {
        return Err(Malformed::SubjectMismatch {
            subject: subject.to_owned(),
            command: name,
        });
    }
    Ok(Envelope {
        saga_id,
        step,
        company_id,
        direction,
    })
}

/// The payment the command asks for.
pub fn payment(envelope: &Envelope, command: &SagaCommand) -> Result<SagaPayment, InvalidPayment> {
    let (stakeholder_id, amount) = match &command.command {
        Some(Command::CollectPayment(body)) => (&body.stakeholder_id, body.amount.as_ref()),
        Some(Command::DisbursePayment(body)) => (&body.stakeholder_id, body.amount.as_ref()),
        // `envelope` accepted only the two payment commands.
        _ => unreachable!("the envelope was checked"),
    };
    let invalid = |field: &'static str, error: qapmap_runtime::ApiError| InvalidPayment {
        field,
        description: error.to_string(),
    };
    let stakeholder_id = ids::parse("stakeholder_id", stakeholder_id)
        .map_err(|error| invalid("stakeholder_id", error))?;
    let money = Money::required("amount", amount).map_err(|error| invalid("amount", error))?;
    let amount = PaymentAmount::new(money).map_err(|error| InvalidPayment {
        field: "amount",
        description: error.0.to_owned(),
    })?;
    Ok(SagaPayment {
        company_id: envelope.company_id,
        saga_id: envelope.saga_id,
        step: envelope.step,
        stakeholder_id,
        amount,
        // The handler adds who asked, once it has checked them.
        audit: None,
    })
}

/// Reads the command's initiator (see `qapmap_runtime::saga_initiator`).
pub fn initiator(command: &SagaCommand) -> Result<SagaInitiator, InvalidPayment> {
    saga_initiator::of(command).map_err(|error| InvalidPayment {
        field: "initiator.stakeholder_id",
        description: error.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use qapmap_proto::common::v1 as common;
    use qapmap_proto::equity::v1 as equity;
    use qapmap_proto::shareholder::v1 as shareholder;

    use super::*;

    fn subject(name: &str) -> String {
        format!("ns.cmd.shareholder.{name}")
    }

    fn collect(amount: &str) -> SagaCommand {
        SagaCommand {
            saga_id: Uuid::now_v7().to_string(),
            saga_type: "option_exercise".to_owned(),
            step: 2,
            company_id: Uuid::now_v7().to_string(),
            command: Some(Command::CollectPayment(
                shareholder::CollectPaymentCommand {
                    stakeholder_id: Uuid::now_v7().to_string(),
                    amount: Some(common::Money {
                        amount: Some(common::Decimal {
                            value: amount.to_owned(),
                        }),
                        currency: "USD".to_owned(),
                    }),
                },
            )),
            ..SagaCommand::default()
        }
    }

    #[test]
    fn a_collect_command_parses_with_its_saga_step_as_key() {
        let command = collect("12.50");
        let envelope = envelope(&command, &subject("collect_payment"), subject).expect("ok");
        assert_eq!(envelope.step, 2);
        assert_eq!(envelope.direction, Direction::Collection);
        let payment = payment(&envelope, &command).expect("ok");
        assert_eq!(payment.amount.amount().to_string(), "12.50");
        assert_eq!(payment.saga_id.to_string(), command.saga_id);
    }

    #[test]
    fn a_broken_envelope_is_malformed() {
        let mut command = collect("1");
        command.saga_id = "nope".to_owned();
        assert_eq!(
            envelope(&command, &subject("collect_payment"), subject),
            Err(Malformed::NotAUuid("saga_id"))
        );
        let mut command = collect("1");
        command.compensation = true;
        assert_eq!(
            envelope(&command, &subject("collect_payment"), subject),
            Err(Malformed::Compensation)
        );
        let command = collect("1");
        assert!(matches!(
            envelope(&command, &subject("disburse_payment"), subject),
            Err(Malformed::SubjectMismatch { .. })
        ));
        let mut command = collect("1");
        command.command = Some(Command::ConfirmExercise(equity::ConfirmExerciseCommand {
            reservation_id: String::new(),
        }));
        assert!(matches!(
            envelope(&command, &subject("confirm_exercise"), subject),
            Err(Malformed::Unhandled(_))
        ));
    }

    #[test]
    fn a_zero_amount_is_an_invalid_payment_naming_the_field() {
        let command = collect("0");
        let envelope = envelope(&command, &subject("collect_payment"), subject).expect("ok");
        let error = payment(&envelope, &command).expect_err("refused");
        assert_eq!(error.field, "amount");
    }
}
