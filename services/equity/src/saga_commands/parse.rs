//! Reading a `SagaCommand` envelope into a typed equity command.
//!
//! Bad input comes in two kinds, answered differently:
//! - [`Malformed`]: the envelope itself is wrong (ids that are not UUIDs, a
//!   negative step, no saga type to reply to, a command this service does
//!   not handle, a compensation flag that does not fit the command). No
//!   reply could be routed or matched to a saga step, so the consumer
//!   dead-letters it for an operator.
//! - [`InvalidCommand`]: the envelope is fine but a field is not (an award
//!   id, a quantity). Nothing was done, so the step is answered REJECTED
//!   with [`INVALID_COMMAND`].

use chrono::NaiveDate;
use qapmap_proto::messaging::v1::SagaCommand;
use qapmap_proto::messaging::v1::saga_command::Command;
use qapmap_runtime::decimal::{self, Money};
pub use qapmap_runtime::saga_initiator::{self, SagaInitiator};
use qapmap_runtime::{date, ids};
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::saga_operations::{RepurchaseRequest, SagaStep};

/// The reason code of a command whose fields do not parse.
pub const INVALID_COMMAND: &str = "invalid_command";

/// A command that cannot be handled or answered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Malformed {
    #[error("{0} must be a UUID")]
    NotAUuid(&'static str),
    #[error("step {0} is negative")]
    NegativeStep(i32),
    #[error("the saga type is empty, so the reply has no subject")]
    NoSagaType,
    #[error("the equity service does not handle {0}")]
    Unhandled(String),
    #[error("{command} must come with compensation = {expected}")]
    CompensationFlag {
        command: &'static str,
        expected: bool,
    },
    #[error("subject {subject:?} does not carry a {command} command")]
    SubjectMismatch {
        subject: String,
        command: &'static str,
    },
}

/// A field that does not parse; names the field.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct InvalidCommand(pub String);

impl From<qapmap_runtime::ApiError> for InvalidCommand {
    fn from(error: qapmap_runtime::ApiError) -> Self {
        Self(error.to_string())
    }
}

/// An equity saga command with its fields parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EquityCommand {
    ReserveOptions {
        award_id: Uuid,
        quantity: Decimal,
        exercise_date: NaiveDate,
    },
    /// `None`: the reserve timed out; find it by (saga_id, step).
    ReleaseOptionReservation {
        reservation_id: Option<Uuid>,
    },
    ConfirmExercise {
        reservation_id: Uuid,
    },
    ReserveRepurchase(RepurchaseRequest),
    /// `None`: the reserve timed out; find it by (saga_id, step).
    ReleaseRepurchaseReservation {
        reservation_id: Option<Uuid>,
    },
    ConfirmRepurchase {
        reservation_id: Uuid,
    },
}

/// The envelope of an equity command, checked: which step, and which
/// command (its subject token).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Envelope {
    pub step: SagaStep,
    pub name: &'static str,
}

/// Checks the envelope. `expected_subject` maps a command name to the subject
/// it must arrive on, so a reserve can never be read off a release subject.
pub fn envelope(
    command: &SagaCommand,
    subject: &str,
    expected_subject: impl Fn(&str) -> String,
) -> Result<Envelope, Malformed> {
    let saga_id = Uuid::try_parse(&command.saga_id).map_err(|_| Malformed::NotAUuid("saga_id"))?;
    let company_id =
        Uuid::try_parse(&command.company_id).map_err(|_| Malformed::NotAUuid("company_id"))?;
    if command.step < 0 {
        return Err(Malformed::NegativeStep(command.step));
    }
    if command.saga_type.is_empty() {
        return Err(Malformed::NoSagaType);
    }
    let (name, compensation) = match &command.command {
        Some(Command::ReserveOptions(_)) => ("reserve_options", false),
        Some(Command::ReleaseOptionReservation(_)) => ("release_option_reservation", true),
        Some(Command::ConfirmExercise(_)) => ("confirm_exercise", false),
        Some(Command::ReserveRepurchase(_)) => ("reserve_repurchase", false),
        Some(Command::ReleaseRepurchaseReservation(_)) => ("release_repurchase_reservation", true),
        Some(Command::ConfirmRepurchase(_)) => ("confirm_repurchase", false),
        Some(other) => return Err(Malformed::Unhandled(format!("{other:?}"))),
        None => return Err(Malformed::Unhandled("an empty command".to_owned())),
    };
    if command.compensation != compensation {
        return Err(Malformed::CompensationFlag {
            command: name,
            expected: compensation,
        });
    }
    if subject != expected_subject(name) {
        return Err(Malformed::SubjectMismatch {
            subject: subject.to_owned(),
            command: name,
        });
    }
    Ok(Envelope {
        step: SagaStep {
            company_id,
            saga_id,
            step: command.step,
        },
        name,
    })
}

/// The command's fields. Call after [`envelope`] accepted it.
pub fn command(command: &SagaCommand) -> Result<EquityCommand, InvalidCommand> {
    let parsed = match &command.command {
        Some(Command::ReserveOptions(reserve)) => EquityCommand::ReserveOptions {
            award_id: ids::parse("reserve_options.award_id", &reserve.award_id)?,
            // Sign and zero are the operation's to refuse, with its own reason.
            quantity: decimal::required("reserve_options.quantity", reserve.quantity.as_ref())?,
            exercise_date: date::required(
                "reserve_options.exercise_date",
                reserve.exercise_date.as_ref(),
            )?,
        },
        Some(Command::ReleaseOptionReservation(release)) => {
            EquityCommand::ReleaseOptionReservation {
                reservation_id: ids::optional(
                    "release_option_reservation.reservation_id",
                    &release.reservation_id,
                )?,
            }
        }
        Some(Command::ConfirmExercise(confirm)) => EquityCommand::ConfirmExercise {
            reservation_id: ids::parse("confirm_exercise.reservation_id", &confirm.reservation_id)?,
        },
        Some(Command::ReserveRepurchase(reserve)) => {
            EquityCommand::ReserveRepurchase(RepurchaseRequest {
                program_id: ids::parse("reserve_repurchase.program_id", &reserve.program_id)?,
                stakeholder_id: ids::parse(
                    "reserve_repurchase.stakeholder_id",
                    &reserve.stakeholder_id,
                )?,
                quantity: decimal::required(
                    "reserve_repurchase.quantity",
                    reserve.quantity.as_ref(),
                )?,
                price_per_share: Money::required(
                    "reserve_repurchase.price_per_share",
                    reserve.price_per_share.as_ref(),
                )?,
                repurchase_date: date::required(
                    "reserve_repurchase.repurchase_date",
                    reserve.repurchase_date.as_ref(),
                )?,
            })
        }
        Some(Command::ReleaseRepurchaseReservation(release)) => {
            EquityCommand::ReleaseRepurchaseReservation {
                reservation_id: ids::optional(
                    "release_repurchase_reservation.reservation_id",
                    &release.reservation_id,
                )?,
            }
        }
        Some(Command::ConfirmRepurchase(confirm)) => EquityCommand::ConfirmRepurchase {
            reservation_id: ids::parse(
                "confirm_repurchase.reservation_id",
                &confirm.reservation_id,
            )?,
        },
        // `envelope` admits only the commands above.
        _ => return Err(InvalidCommand("not an equity command".to_owned())),
    };
    Ok(parsed)
}

/// Reads the command's initiator (see `qapmap_runtime::saga_initiator`).
pub fn initiator(command: &SagaCommand) -> Result<SagaInitiator, InvalidCommand> {
    Ok(saga_initiator::of(command)?)
}
