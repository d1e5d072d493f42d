//! The orchestrator's commands to the ledger (`<ns>.cmd.ledger.<command>`),
//! each answered with a `SagaReply` on `<ns>.reply.<saga type>`.
//!
//! A business refusal writes nothing: the handler answers
//! [`Handled::Refused`], and the consumer rolls the message back to its own
//! savepoint before it enqueues the reply and records the inbox row. Idempotency is the saga
//! operations' own, by (saga id, step): a command re-sent under a new message
//! id finds the hold or entry placed the first time and answers the same.
//!
//! Malformed envelopes, and commands or compensation flags the ledger does
//! not handle, are poison (dead letters); malformed fields inside a known
//! command are refused with `invalid_argument`, so the saga can move on.
//!
//! The transaction is confined to the command's company (row-level security)
//! before the step runs; a refusal's rollback undoes that too, and its reply
//! and inbox row (tables without row security) are written as the consumer
//! writes any message's. A saga an employee started for themselves may move only their
//! own shares (`not_own_shares`; equity checked the award first, this is the
//! second line). Each applied step leaves an audit record naming the saga's
//! initiator.

use prost::Message;
use qapmap_proto::ledger::v1 as ledger;
use qapmap_proto::messaging::v1::SagaCommand;
use qapmap_proto::messaging::v1::saga_command::Command;
use qapmap_proto::messaging::v1::saga_reply::Result as ReplyResult;
use qapmap_runtime::audit;
use qapmap_runtime::consumer::{
    ConsumerConfig, Handled, HandlerError, MessageHandler, ReceivedMessage,
};
use qapmap_runtime::decimal::{self, Money};
use qapmap_runtime::messaging::{StreamKind, Subjects};
use qapmap_runtime::outbox::OutboxMessage;
use qapmap_runtime::saga_initiator::{self, SagaInitiator};
use qapmap_runtime::saga_reply;
use qapmap_runtime::{ApiError, date, ids};
use rust_decimal::Decimal;
use sqlx::PgConnection;
use tracing::Instrument;
use uuid::Uuid;

use crate::saga_operations::{self, HeldPosting, Released, SagaError, SagaStep};

/// The durable consumer's name.
pub const CONSUMER_NAME: &str = "ledger-commands";

/// The reason code of an employee's saga reaching for someone else's shares.
pub const NOT_OWN_SHARES: &str = "not_own_shares";

/// Every command addressed to the ledger.
pub fn config(subjects: &Subjects) -> ConsumerConfig {
    ConsumerConfig::new(
        CONSUMER_NAME,
        StreamKind::Commands,
        format!("{}.cmd.ledger.>", subjects.namespace()),
    )
}

#[derive(Debug, Clone)]
pub struct SagaCommandHandler {
    pub subjects: Subjects,
}

impl MessageHandler for SagaCommandHandler {
    /// The command's company, confined in the inbox's round trip.
    fn confinement(&self, message: &ReceivedMessage) -> Option<Uuid> {
        saga_reply::command_company(&message.payload)
    }

    async fn handle(
        &self,
        message: &ReceivedMessage,
        transaction: &mut PgConnection,
    ) -> Result<Handled, HandlerError> {
        let command = SagaCommand::decode(message.payload.as_ref())
            .map_err(|error| poison(format!("not a SagaCommand: {error}")))?;
        let span = tracing::info_span!(
            "ledger.saga_command",
            saga.id = %command.saga_id,
            saga.step = command.step,
            saga.compensation = command.compensation,
            company.id = %command.company_id,
        );
        async {
            let company_id = ids::parse("company_id", &command.company_id)
                .map_err(|error| poison(error.to_string()))?;
            let saga = SagaStep {
                saga_id: ids::parse("saga_id", &command.saga_id)
                    .map_err(|error| poison(error.to_string()))?,
                step: command.step,
            };
            message.confine(transaction, company_id).await?;
            let parsed =
                Step::parse(&command)?.and_then(|step| Ok((step, saga_initiator::of(&command)?)));
            let outcome = match parsed {
                Ok((step, initiator)) => match step.refusal_for(&initiator) {
                    Some(refusal) => refusal,
                    None => {
                        let outcome = self.run(transaction, company_id, saga, step).await?;
                        if matches!(outcome, Outcome::Succeeded(_)) {
                            audit(transaction, company_id, &command, &initiator).await?;
                        }
                        outcome
                    }
                },
                Err(invalid) => Outcome::rejected("invalid_argument", invalid.to_string()),
            };
            if let Outcome::Rejected { reason_code, .. } = &outcome {
                tracing::info!(reason_code, "saga step refused");
            }
            // A refusal keeps nothing the step wrote: the consumer rolls
            // the message back before sending the reply.
            let refused = matches!(outcome, Outcome::Rejected { .. });
            let reply = reply(&self.subjects, message, &command, company_id, outcome);
            Ok(if refused {
                Handled::Refused(reply)
            } else {
                Handled::Reply(reply)
            })
        }
        .instrument(span)
        .await
    }
}

impl SagaCommandHandler {
    /// Runs the step. What a refused step wrote is undone by the consumer
    /// ([`Handled::Refused`]), so the step needs no savepoint of its own.
    async fn run(
        &self,
        transaction: &mut PgConnection,
        company_id: Uuid,
        saga: SagaStep,
        step: Step,
    ) -> Result<Outcome, HandlerError> {
        match step
            .execute(transaction, &self.subjects, company_id, saga)
            .await
        {
            Ok(result) => Ok(Outcome::Succeeded(result)),
            Err(SagaError::Rejected {
                reason,
                description,
            }) => Ok(Outcome::rejected(reason, description)),
            Err(SagaError::Database(error)) => Err(HandlerError::Retry(error.into())),
        }
    }
}

/// Records an applied step: who started the saga, the command as
/// `saga:<command>`, and the step as `<saga id>/<step>[/compensation]`.
async fn audit(
    transaction: &mut PgConnection,
    company_id: Uuid,
    command: &SagaCommand,
    initiator: &SagaInitiator,
) -> sqlx::Result<()> {
    let name = command.command.as_ref().map_or("unknown", command_name);
    let mut request_id = format!("{}/{}", command.saga_id, command.step);
    if command.compensation {
        request_id.push_str("/compensation");
    }
    audit::record(
        transaction,
        company_id,
        &initiator.actor,
        &format!("saga:{name}"),
        &request_id,
    )
    .await
}

/// A ledger command, parsed into domain types.
#[derive(Debug)]
enum Step {
    HoldUnissued {
        share_class_id: Uuid,
        quantity: Decimal,
    },
    HoldHolder {
        share_class_id: Uuid,
        stakeholder_id: Uuid,
        quantity: Decimal,
    },
    Release {
        hold_id: Option<Uuid>,
    },
    PostExercise(HeldPosting),
    PostRepurchase(HeldPosting),
}

impl Step {
    /// The outer error is poison (not a ledger command, or the compensation
    /// flag does not fit it); the inner one a field the step cannot use.
    fn parse(command: &SagaCommand) -> Result<Result<Self, ApiError>, HandlerError> {
        let compensation = command.compensation;
        Ok(match &command.command {
            Some(Command::HoldUnissuedShares(hold)) if !compensation => Self::hold_unissued(hold),
            Some(Command::HoldHolderShares(hold)) if !compensation => Self::hold_holder(hold),
            Some(Command::ReleaseHold(release)) if compensation => {
                ids::optional("release_hold.hold_id", &release.hold_id)
                    .map(|hold_id| Self::Release { hold_id })
            }
            Some(Command::PostExercise(post)) if !compensation => {
                held_posting(HeldFields::from(post)).map(Self::PostExercise)
            }
            Some(Command::PostRepurchase(post)) if !compensation => {
                held_posting(HeldFields::from(post)).map(Self::PostRepurchase)
            }
            Some(other) => {
                return Err(poison(format!(
                    "the ledger does not handle {} with compensation = {compensation}",
                    command_name(other)
                )));
            }
            None => return Err(poison("a SagaCommand without a command".to_owned())),
        })
    }

    /// The stakeholder whose shares the step moves, if any.
    fn holder(&self) -> Option<Uuid> {
        match self {
            Self::HoldHolder { stakeholder_id, .. } => Some(*stakeholder_id),
            Self::PostExercise(posting) | Self::PostRepurchase(posting) => {
                Some(posting.stakeholder_id)
            }
            Self::HoldUnissued { .. } | Self::Release { .. } => None,
        }
    }

    /// The refusal of a step an employee's own saga may not take: moving
    /// another stakeholder's shares.
    fn refusal_for(&self, initiator: &SagaInitiator) -> Option<Outcome> {
        match (initiator.stakeholder_id, self.holder()) {
            (Some(own), Some(holder)) if own != holder => Some(Outcome::rejected(
                NOT_OWN_SHARES,
                format!("the saga's initiator may move only their own shares, not {holder}'s"),
            )),
            _ => None,
        }
    }

    fn hold_unissued(hold: &ledger::HoldUnissuedSharesCommand) -> Result<Self, ApiError> {
        Ok(Self::HoldUnissued {
            share_class_id: ids::parse("share_class_id", &hold.share_class_id)?,
            quantity: decimal::positive("quantity", hold.quantity.as_ref())?,
        })
    }

    fn hold_holder(hold: &ledger::HoldHolderSharesCommand) -> Result<Self, ApiError> {
        Ok(Self::HoldHolder {
            share_class_id: ids::parse("share_class_id", &hold.share_class_id)?,
            stakeholder_id: ids::parse("stakeholder_id", &hold.stakeholder_id)?,
            quantity: decimal::positive("quantity", hold.quantity.as_ref())?,
        })
    }

    async fn execute(
        self,
        connection: &mut PgConnection,
        subjects: &Subjects,
        company_id: Uuid,
        saga: SagaStep,
    ) -> Result<Option<ReplyResult>, SagaError> {
        let hold_result = |hold_id: Uuid| {
            Some(ReplyResult::Hold(ledger::HoldResult {
                hold_id: hold_id.to_string(),
            }))
        };
        let posting_result = |entry: crate::journal::PostedEntry| {
            Some(ReplyResult::Posting(ledger::PostingResult {
                entry_id: entry.id.to_string(),
                sequence: entry.sequence,
            }))
        };
        Ok(match self {
            Self::HoldUnissued {
                share_class_id,
                quantity,
            } => {
                let hold = saga_operations::hold_unissued_shares(
                    connection,
                    company_id,
                    saga,
                    share_class_id,
                    quantity,
                )
                .await?;
                hold_result(hold.id)
            }
            Self::HoldHolder {
                share_class_id,
                stakeholder_id,
                quantity,
            } => {
                let hold = saga_operations::hold_holder_shares(
                    connection,
                    company_id,
                    saga,
                    stakeholder_id,
                    share_class_id,
                    quantity,
                )
                .await?;
                hold_result(hold.id)
            }
            Self::Release { hold_id } => {
                match saga_operations::release_hold(connection, company_id, saga, hold_id).await? {
                    Released::Hold(hold) => hold_result(hold.id),
                    Released::NeverApplied => None,
                }
            }
            Self::PostExercise(posting) => posting_result(
                saga_operations::post_exercise(connection, subjects, company_id, saga, posting)
                    .await?,
            ),
            Self::PostRepurchase(posting) => posting_result(
                saga_operations::post_repurchase(connection, subjects, company_id, saga, posting)
                    .await?,
            ),
        })
    }
}

/// The fields exercise and repurchase postings share.
struct HeldFields<'a> {
    hold_id: &'a str,
    stakeholder_id: &'a str,
    share_class_id: &'a str,
    quantity: Option<&'a qapmap_proto::common::v1::Decimal>,
    amount_paid: Option<&'a qapmap_proto::common::v1::Money>,
    effective_date: Option<&'a qapmap_proto::common::v1::Date>,
}

impl<'a> From<&'a ledger::PostExerciseCommand> for HeldFields<'a> {
    fn from(post: &'a ledger::PostExerciseCommand) -> Self {
        Self {
            hold_id: &post.hold_id,
            stakeholder_id: &post.stakeholder_id,
            share_class_id: &post.share_class_id,
            quantity: post.quantity.as_ref(),
            amount_paid: post.amount_paid.as_ref(),
            effective_date: post.effective_date.as_ref(),
        }
    }
}

impl<'a> From<&'a ledger::PostRepurchaseCommand> for HeldFields<'a> {
    fn from(post: &'a ledger::PostRepurchaseCommand) -> Self {
        Self {
            hold_id: &post.hold_id,
            stakeholder_id: &post.stakeholder_id,
            share_class_id: &post.share_class_id,
            quantity: post.quantity.as_ref(),
            amount_paid: post.amount_paid.as_ref(),
            effective_date: post.effective_date.as_ref(),
        }
    }
}

fn held_posting(fields: HeldFields<'_>) -> Result<HeldPosting, ApiError> {
    Ok(HeldPosting {
        hold_id: ids::parse("hold_id", fields.hold_id)?,
        stakeholder_id: ids::parse("stakeholder_id", fields.stakeholder_id)?,
        share_class_id: ids::parse("share_class_id", fields.share_class_id)?,
        quantity: decimal::positive("quantity", fields.quantity)?,
        amount_paid: Money::optional("amount_paid", fields.amount_paid)?,
        effective_date: date::required("effective_date", fields.effective_date)?,
    })
}

/// What the step came to.
#[derive(Debug)]
enum Outcome {
    Succeeded(Option<ReplyResult>),
    Rejected { reason_code: String, reason: String },
}

impl Outcome {
    fn rejected(reason_code: &str, reason: String) -> Self {
        Self::Rejected {
            reason_code: reason_code.to_owned(),
            reason,
        }
    }
}

/// The reply, continuing the command's trace.
fn reply(
    subjects: &Subjects,
    message: &ReceivedMessage,
    command: &SagaCommand,
    company_id: Uuid,
    outcome: Outcome,
) -> OutboxMessage {
    let reply = match outcome {
        Outcome::Succeeded(result) => saga_reply::succeeded(command, result),
        Outcome::Rejected {
            reason_code,
            reason,
        } => saga_reply::rejected(command, &reason_code, reason),
    };
    saga_reply::message(subjects, command, company_id, &reply, &message.headers)
}

fn poison(why: String) -> HandlerError {
    HandlerError::Poison(anyhow::anyhow!(why))
}

/// A command's name for logs and dead letters (never its fields).
fn command_name(command: &Command) -> &'static str {
    match command {
        Command::ReserveOptions(_) => "reserve_options",
        Command::ReleaseOptionReservation(_) => "release_option_reservation",
        Command::ConfirmExercise(_) => "confirm_exercise",
        Command::ReserveRepurchase(_) => "reserve_repurchase",
        Command::ReleaseRepurchaseReservation(_) => "release_repurchase_reservation",
        Command::ConfirmRepurchase(_) => "confirm_repurchase",
        Command::HoldUnissuedShares(_) => "hold_unissued_shares",
        Command::HoldHolderShares(_) => "hold_holder_shares",
        Command::ReleaseHold(_) => "release_hold",
        Command::PostExercise(_) => "post_exercise",
        Command::PostRepurchase(_) => "post_repurchase",
        Command::CollectPayment(_) => "collect_payment",
        Command::DisbursePayment(_) => "disburse_payment",
    }
}
