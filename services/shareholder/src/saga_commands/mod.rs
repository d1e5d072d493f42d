//! The saga command consumer: `<ns>.cmd.shareholder.>` on the COMMANDS
//! stream, one durable consumer ([`CONSUMER_NAME`]), handling the pivot
//! payments of the exercise (`collect_payment`) and buyback
//! (`disburse_payment`) sagas.
//!
//! - [`parse`]: envelope and payment fields; replies are built with `qapmap_runtime::saga_reply`.
//!
//! Answers, per the saga command contract:
//! - paid -> SUCCEEDED with `PaymentResult`;
//! - declined, unknown or other company's stakeholder, no payment
//!   instruction, bad payment fields -> REJECTED with a reason code (no money
//!   moved, so the orchestrator may compensate);
//! - transient (gateway failed without moving money, database away before
//!   the gateway call, another attempt in progress) -> [`HandlerError::Retry`]:
//!   the consumer naks with backoff and the same key is tried again;
//! - **outcome unknown** (the gateway timed out, or an earlier attempt died
//!   mid-call, or the command's transaction was lost after the gateway
//!   answered: its outcome was to commit with it, so the attempt stays
//!   `pending`, the redelivery waits for it as for another caller's, and
//!   past the gateway timeout declares it unknown) -> no reply at all ([`Handled::Done`]). Money may have moved,
//!   so neither "declined" (the saga would compensate) nor a retry (it could
//!   pay twice) is honest. The orchestrator re-sends the pivot on its
//!   deadline, gets silence again, and parks the saga after its last attempt
//!   for an operator to reconcile with the gateway;
//! - undecodable, malformed envelope, a command this service does not handle,
//!   or the saga key reused for a different payment -> [`HandlerError::Poison`]
//!   (dead letter). A reused key is not answered REJECTED: the first payment
//!   may have moved money, and a rejection would make the saga compensate.
//!
//! Commits: one batch holds one command ([`consumer_config`]), since the
//! command's transaction also records its payment's outcome: a batch of
//! several would keep earlier outcomes uncommitted while later gateway
//! calls run, and a crash then would leave them all `outcome_unknown`.
//!
//! Security: the consumer's transaction (outcome, inbox row, reply) is confined to
//! the command's company, as the payment's own transactions are (see
//! `payment::executor`). When an employee started the saga for themselves
//! (the initiator names their stakeholder), a payment for anyone else is
//! REJECTED `not_own_stakeholder`. Each payment that reaches a final
//! outcome is audited, under the initiator, in the transaction that records
//! the outcome (method `saga:<command>`, request id `<saga_id>/<step>`):
//! exactly once, however often the command is re-sent.
//!
//! Repeats: the payment's idempotency key is (saga id, step), so a redelivery
//! (same message id: the inbox re-sends the stored reply) and a re-send by
//! the orchestrator (new message id: the payment row returns the first
//! result) both answer the first result without calling the gateway again.

pub mod parse;

use qapmap_proto::messaging::v1::saga_reply::Result as ReplyResult;
use qapmap_proto::shareholder::v1::PaymentResult;
use qapmap_runtime::saga_reply as reply;

use crate::saga_operations::PaymentReceipt;
use std::time::Duration;

use prost::Message;
use qapmap_proto::messaging::v1::SagaCommand;
use qapmap_runtime::consumer::{
    ConsumerConfig, Handled, HandlerError, MessageHandler, ReceivedMessage,
};
use qapmap_runtime::messaging::{StreamKind, Subjects};
use sqlx::PgConnection;
use tracing::Instrument;
use uuid::Uuid;

use crate::payment::{
    Direction, PaymentAudit, PaymentError, Payments, executor::DEFAULT_GATEWAY_TIMEOUT,
};
use crate::saga_operations::{
    SagaPaymentError, collect_payment_for_saga, disburse_payment_for_saga,
};

/// The durable consumer's name (and its inbox key).
pub const CONSUMER_NAME: &str = "shareholder-commands";
/// The service token in command subjects.
pub const SERVICE: &str = "shareholder";
/// The reason code of a payment for someone other than the employee who
/// started the saga.
pub const NOT_OWN_STAKEHOLDER: &str = "not_own_stakeholder";

/// Handling may wait for a concurrent attempt and then call the gateway, each
/// bounded by the gateway timeout; JetStream must not redeliver meanwhile.
const ACK_WAIT: Duration = Duration::from_secs(DEFAULT_GATEWAY_TIMEOUT.as_secs() * 2 + 30);
/// Short first delays: a transient gateway failure usually clears quickly,
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
    .with_ack_wait(ACK_WAIT)
    .with_backoff(BACKOFF.to_vec())
    .with_max_batch(1)
}

/// Handles the shareholder's saga commands.
#[derive(Debug, Clone)]
pub struct CommandHandler {
    payments: Payments,
    subjects: Subjects,
}

impl CommandHandler {
    pub fn new(payments: Payments, subjects: Subjects) -> Self {
        Self { payments, subjects }
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
        message.confine(transaction, envelope.company_id).await?;
        let answer = |reply| {
            Handled::Reply(reply::message(
                &self.subjects,
                command,
                envelope.company_id,
                &reply,
                &message.headers,
            ))
        };
        let parsed = parse::initiator(command)
            .and_then(|initiator| Ok((initiator, parse::payment(&envelope, command)?)));
        let (initiator, mut payment) = match parsed {
            Ok(parsed) => parsed,
            Err(invalid) => {
                tracing::warn!(field = invalid.field, "payment command refused");
                let reply = reply::rejected(command, parse::INVALID_COMMAND, invalid.to_string());
                return Ok(answer(reply));
            }
        };
        if initiator
            .stakeholder_id
            .is_some_and(|own| own != payment.stakeholder_id)
        {
            tracing::warn!("saga payment for someone other than the employee who started it");
            let reply = reply::rejected(
                command,
                NOT_OWN_STAKEHOLDER,
                "the saga's initiator may only pay for their own stakeholder".to_owned(),
            );
            return Ok(answer(reply));
        }
        let name = match envelope.direction {
            Direction::Collection => "collect_payment",
            Direction::Disbursement => "disburse_payment",
        };
        payment.audit = Some(PaymentAudit {
            actor: initiator.actor,
            method: format!("saga:{name}"),
            request_id: format!("{}/{}", envelope.saga_id, envelope.step),
        });
        let result = match envelope.direction {
            Direction::Collection => {
                collect_payment_for_saga(&self.payments, &payment, transaction).await
            }
            Direction::Disbursement => {
                disburse_payment_for_saga(&self.payments, &payment, transaction).await
            }
        };
        match result {
            Ok(receipt) => {
                tracing::info!(payment.id = %receipt.payment_id, "saga payment succeeded");
                Ok(answer(reply::succeeded(
                    command,
                    Some(payment_result(&receipt)),
                )))
            }
            Err(SagaPaymentError::Rejected(error @ PaymentError::KeyReused(_))) => {
                Err(HandlerError::Poison(error.into()))
            }
            Err(error @ (SagaPaymentError::Declined { .. } | SagaPaymentError::Rejected(_))) => {
                tracing::info!(reason_code = error.reason_code(), "saga payment rejected");
                let reply = reply::rejected(command, error.reason_code(), error.to_string());
                Ok(answer(reply))
            }
            Err(SagaPaymentError::Retriable(error)) => Err(HandlerError::Retry(error.into())),
            Err(SagaPaymentError::OutcomeUnknown(error)) => {
                // See the module docs: silence lets the orchestrator park it.
                tracing::error!(error.message = %error, "saga payment outcome unknown; not answering, the saga will park for reconciliation");
                Ok(Handled::Done)
            }
        }
    }
}

impl MessageHandler for CommandHandler {
    /// The command's company, confined in the inbox's round trip.
    fn confinement(&self, message: &ReceivedMessage) -> Option<Uuid> {
        reply::command_company(&message.payload)
    }

    /// The payment's claim commits in a transaction of its own before the
    /// gateway is called; `transaction` carries its final outcome (with the
    /// `PaymentRecorded` event and the audit record), the inbox row and the
    /// reply, committed together. The payment's (saga id, step) key makes a
    /// rerun harmless.
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
            company.id = %command.company_id,
            messaging.delivery = message.delivery_count,
        );
        self.handle_command(message, &command, transaction)
            .instrument(span)
            .await
    }
}

/// What the orchestrator learns from a payment step.
fn payment_result(receipt: &PaymentReceipt) -> ReplyResult {
    ReplyResult::Payment(PaymentResult {
        payment_id: receipt.payment_id.to_string(),
        gateway_reference: receipt.gateway_reference.clone(),
    })
}
