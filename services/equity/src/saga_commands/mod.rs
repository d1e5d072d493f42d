//! The saga command consumer: `<ns>.cmd.equity.>` on the COMMANDS stream,
//! one durable consumer ([`CONSUMER_NAME`]), running the reservations of the
//! exercise and buyback sagas ([`crate::saga_operations`]) for the
//! orchestrator.
//!
//! - [`parse`]: envelope and command fields; replies are built with
//!   `qapmap_runtime::saga_reply`.
//!
//! Answers, per the saga command contract:
//! - done -> SUCCEEDED, with `ReserveOptionsResult` / `ReserveRepurchaseResult`
//!   for the reserve steps (what the orchestrator absorbs);
//! - a business refusal (not enough vested options, program exhausted,
//!   another company's award, a reserve after its compensation, bad fields)
//!   -> REJECTED with the operation's reason code. The operation runs inside
//!   a SAVEPOINT that is rolled back on refusal, so a refused step leaves no
//!   effect while the inbox row and the REJECTED reply still commit;
//! - a database failure -> [`HandlerError::Retry`] (the whole transaction is
//!   dropped and the message comes back with backoff);
//! - undecodable, malformed envelope, or a command this service does not
//!   handle -> [`HandlerError::Poison`] (dead letter).
//!
//! Security: the transaction is confined to the command's company before
//! the operation runs (row-level security, see `qapmap_runtime::tenancy`).
//! A refusal ([`Handled::Refused`]) is rolled back by the consumer, the
//! confinement with it, before its reply and inbox row (tables without row
//! security) are written. When an employee started the
//! saga for themselves (the initiator names their stakeholder), reserving
//! anyone else's award is REJECTED [`saga_operations::NOT_OWN_AWARD`]. Each
//! applied command writes an audit record after its events: subject and roles of the initiator, method `saga:<command>`,
//! request id `<saga_id>/<step>[/compensation]`. A refused one writes none.
//!
//! [`saga_operations::NOT_OWN_AWARD`]: crate::saga_operations::NOT_OWN_AWARD
//!
//! Repeats: a redelivery (same message id) is answered by the inbox with the
//! stored reply; a re-send by the orchestrator (new message id, same saga id
//! and step) reaches the operation, which returns its first result and writes
//! nothing.

pub mod parse;

use std::time::Duration;

use prost::Message;
use qapmap_proto::messaging::v1::SagaCommand;
use qapmap_proto::messaging::v1::saga_reply::Result as ReplyResult;
use qapmap_runtime::audit;
use qapmap_runtime::consumer::{
    ConsumerConfig, Handled, HandlerError, MessageHandler, ReceivedMessage,
};
use qapmap_runtime::messaging::{StreamKind, Subjects};
use qapmap_runtime::saga_reply as reply;
use sqlx::PgConnection;
use tracing::Instrument;
use uuid::Uuid;

use crate::saga_operations::{self as operations, SagaError, SagaStep};
use parse::EquityCommand;

/// The durable consumer's name (and its inbox key).
pub const CONSUMER_NAME: &str = "equity-commands";
/// The service token in command subjects.
pub const SERVICE: &str = "equity";

/// Short first delays: a transient database failure usually clears quickly,
/// and the orchestrator's step deadline (10 s by default) is waiting.
const BACKOFF: [Duration; 4] = [
    Duration::from_millis(500),
    Duration::from_secs(2),
    Duration::from_secs(5),
    Duration::from_secs(15),
];

/// The commands consumer's configuration in `subjects`' namespace.
pub fn consumer_config(subjects: &Subjects) -> ConsumerConfig {
    ConsumerConfig::new(
        CONSUMER_NAME,
        StreamKind::Commands,
        format!("{}.cmd.{SERVICE}.>", subjects.namespace()),
    )
    .with_backoff(BACKOFF.to_vec())
}

/// Handles equity's saga commands.
#[derive(Debug, Clone)]
pub struct CommandHandler {
    subjects: Subjects,
}

impl CommandHandler {
    pub fn new(subjects: Subjects) -> Self {
        Self { subjects }
    }

    async fn handle_command(
        &self,
        message: &ReceivedMessage,
        command: &SagaCommand,
        transaction: &mut PgConnection,
    ) -> Result<Handled, HandlerError> {
        let envelope = parse::envelope(command, &message.subject, |name| {
            self.subjects.command(SERVICE, name)
        })
        .map_err(|error| HandlerError::Poison(error.into()))?;
        message
            .confine(transaction, envelope.step.company_id)
            .await?;
        let answer = |reply| {
            reply::message(
                &self.subjects,
                command,
                envelope.step.company_id,
                &reply,
                &message.headers,
            )
        };
        let parsed =
            parse::command(command).and_then(|parsed| Ok((parsed, parse::initiator(command)?)));
        let (parsed, initiator) = match parsed {
            Ok(parsed) => parsed,
            Err(invalid) => {
                tracing::info!(command = envelope.name, "saga command has invalid fields");
                let reply = reply::rejected(command, parse::INVALID_COMMAND, invalid.to_string());
                return Ok(Handled::Reply(answer(reply)));
            }
        };
        // A refusal keeps nothing the operation wrote: the consumer rolls
        // the message back before sending the reply (`Handled::Refused`).
        let applied = self
            .apply(transaction, envelope.step, parsed, initiator.stakeholder_id)
            .await;
        match applied {
            Ok(result) => {
                // After the operation's events, so the record names them.
                let request_id = format!(
                    "{}/{}{}",
                    envelope.step.saga_id,
                    envelope.step.step,
                    if command.compensation {
                        "/compensation"
                    } else {
                        ""
                    }
                );
                audit::record(
                    transaction,
                    envelope.step.company_id,
                    &initiator.actor,
                    &format!("saga:{}", envelope.name),
                    &request_id,
                )
                .await?;
                tracing::info!(command = envelope.name, "saga command applied");
                Ok(Handled::Reply(answer(reply::succeeded(command, result))))
            }
            Err(SagaError::Rejected {
                reason,
                description,
            }) => {
                tracing::info!(
                    command = envelope.name,
                    reason_code = reason,
                    "saga command rejected"
                );
                Ok(Handled::Refused(answer(reply::rejected(
                    command,
                    reason,
                    description,
                ))))
            }
            // The consumer rolls the message back and retries it.
            Err(SagaError::Database(error)) => Err(HandlerError::Retry(error.into())),
        }
    }

    /// Runs the operation. `owner`: the stakeholder an employee's own saga
    /// is confined to.
    async fn apply(
        &self,
        connection: &mut PgConnection,
        step: SagaStep,
        command: EquityCommand,
        owner: Option<Uuid>,
    ) -> Result<Option<ReplyResult>, SagaError> {
        let subjects = &self.subjects;
        let result = match command {
            EquityCommand::ReserveOptions {
                award_id,
                quantity,
                exercise_date,
            } => {
                let reserved = operations::reserve_options(
                    connection,
                    subjects,
                    step,
                    award_id,
                    quantity,
                    exercise_date,
                    owner,
                )
                .await?;
                Some(ReplyResult::ReserveOptions(reserved.to_proto()))
            }
            EquityCommand::ReleaseOptionReservation { reservation_id } => {
                operations::release_option_reservation(connection, subjects, step, reservation_id)
                    .await?;
                None
            }
            EquityCommand::ConfirmExercise { reservation_id } => {
                operations::confirm_exercise(connection, subjects, step, reservation_id).await?;
                None
            }
            EquityCommand::ReserveRepurchase(request) => {
                let reserved =
                    operations::reserve_repurchase(connection, subjects, step, request, owner)
                        .await?;
                Some(ReplyResult::ReserveRepurchase(reserved.to_proto()))
            }
            EquityCommand::ReleaseRepurchaseReservation { reservation_id } => {
                operations::release_repurchase_reservation(
                    connection,
                    subjects,
                    step,
                    reservation_id,
                )
                .await?;
                None
            }
            EquityCommand::ConfirmRepurchase { reservation_id } => {
                operations::confirm_repurchase(connection, subjects, step, reservation_id).await?;
                None
            }
        };
        Ok(result)
    }
}

impl MessageHandler for CommandHandler {
    /// The command's company, confined in the inbox's round trip.
    fn confinement(&self, message: &ReceivedMessage) -> Option<Uuid> {
        reply::command_company(&message.payload)
    }

    async fn handle(
        &self,
        message: &ReceivedMessage,
        transaction: &mut PgConnection,
    ) -> Result<Handled, HandlerError> {
        let command = SagaCommand::decode(message.payload.as_ref())
            .map_err(|error| HandlerError::Poison(anyhow::anyhow!("not a SagaCommand: {error}")))?;
        let span = tracing::info_span!(
            "saga.command",
            saga.id = %command.saga_id,
            saga.type = %command.saga_type,
            saga.step = command.step,
            saga.compensation = command.compensation,
            company.id = %command.company_id,
            messaging.delivery = message.delivery_count,
        );
        self.handle_command(message, &command, transaction)
            .instrument(span)
            .await
    }
}

#[cfg(test)]
mod tests {
    use qapmap_proto::equity::v1 as proto;
    use qapmap_proto::messaging::v1::saga_command::Command;
    use uuid::Uuid;

    use super::parse::{self, EquityCommand, Malformed};
    use super::*;

    fn command(compensation: bool, body: Command) -> SagaCommand {
        SagaCommand {
            saga_id: Uuid::now_v7().to_string(),
            saga_type: "option_exercise".to_owned(),
            step: 0,
            compensation,
            company_id: Uuid::now_v7().to_string(),
            command: Some(body),
            ..SagaCommand::default()
        }
    }

    fn subject(name: &str) -> String {
        Subjects::new("ns").command(SERVICE, name)
    }

    #[test]
    fn a_release_without_an_id_parses_to_none() {
        let release = command(
            true,
            Command::ReleaseOptionReservation(proto::ReleaseOptionReservationCommand::default()),
        );
        let envelope = parse::envelope(&release, &subject("release_option_reservation"), subject)
            .expect("envelope");
        assert_eq!(envelope.name, "release_option_reservation");
        assert_eq!(
            parse::command(&release),
            Ok(EquityCommand::ReleaseOptionReservation {
                reservation_id: None
            })
        );
    }

    #[test]
    fn a_release_must_be_a_compensation_and_arrive_on_its_subject() {
        let release = command(
            false,
            Command::ReleaseOptionReservation(proto::ReleaseOptionReservationCommand::default()),
        );
        assert!(matches!(
            parse::envelope(&release, &subject("release_option_reservation"), subject),
            Err(Malformed::CompensationFlag { .. })
        ));
        let confirm = command(
            false,
            Command::ConfirmExercise(proto::ConfirmExerciseCommand {
                reservation_id: Uuid::now_v7().to_string(),
            }),
        );
        assert!(matches!(
            parse::envelope(&confirm, &subject("reserve_options"), subject),
            Err(Malformed::SubjectMismatch { .. })
        ));
    }

    #[test]
    fn another_services_command_is_unhandled() {
        let payment = command(false, Command::CollectPayment(Default::default()));
        assert!(matches!(
            parse::envelope(&payment, &subject("collect_payment"), subject),
            Err(Malformed::Unhandled(_))
        ));
    }

    #[test]
    fn a_confirm_without_a_reservation_is_an_invalid_command() {
        let confirm = command(
            false,
            Command::ConfirmExercise(proto::ConfirmExerciseCommand::default()),
        );
        assert!(parse::command(&confirm).is_err());
    }
}
