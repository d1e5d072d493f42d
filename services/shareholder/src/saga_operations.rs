//! The pivot steps of the exercise and buyback sagas (DESIGN.md, Sagas), as
//! plain async functions the NATS command handler calls. The payment's
//! idempotency key is (saga id, step), so a redelivered command returns the
//! first result and never pays twice. A final outcome is recorded in the
//! caller's transaction (the command's, with its inbox row and reply), so
//! the step commits its effect and its answer once.

use sqlx::PgConnection;
use uuid::Uuid;

use crate::payment::{
    Direction, IdempotencyKey, Payment, PaymentAmount, PaymentAudit, PaymentError, PaymentIntent,
    PaymentStatus, Payments,
};

/// One saga step's payment command.
#[derive(Debug, Clone)]
pub struct SagaPayment {
    pub company_id: Uuid,
    pub saga_id: Uuid,
    pub step: u32,
    pub stakeholder_id: Uuid,
    pub amount: PaymentAmount,
    /// The audit record written with the payment's outcome (who started
    /// the saga); None writes none.
    pub audit: Option<PaymentAudit>,
}

/// A payment that moved money.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentReceipt {
    pub payment_id: Uuid,
    pub gateway_reference: String,
}

/// Why a saga payment did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum SagaPaymentError {
    /// The gateway refused: final, the saga compensates.
    #[error("payment declined: {reason}")]
    Declined { payment_id: Uuid, reason: String },
    /// A business rule refused the command: final.
    #[error("payment refused: {0}")]
    Rejected(PaymentError),
    /// Try the same command again later (a transient gateway failure, an
    /// attempt still in progress, the database away).
    #[error("payment not executed yet: {0}")]
    Retriable(PaymentError),
    /// An earlier attempt was interrupted mid-call: needs reconciliation
    /// before the saga may continue or compensate.
    #[error("payment outcome unknown: {0}")]
    OutcomeUnknown(PaymentError),
}

impl SagaPaymentError {
    /// The stable reason code for the saga reply.
    pub fn reason_code(&self) -> &'static str {
        match self {
            Self::Declined { .. } => "payment_declined",
            Self::Rejected(error) | Self::Retriable(error) | Self::OutcomeUnknown(error) => {
                error.reason_code()
            }
        }
    }

    /// True when redelivering the same command may succeed.
    pub fn is_retriable(&self) -> bool {
        matches!(self, Self::Retriable(_))
    }
}

/// Exercise pivot: the holder pays strike x quantity to the company. The
/// outcome is written through `transaction` (confined to the command's
/// company), which the caller commits.
pub async fn collect_payment_for_saga(
    payments: &Payments,
    command: &SagaPayment,
    transaction: &mut PgConnection,
) -> Result<PaymentReceipt, SagaPaymentError> {
    execute(payments, command, Direction::Collection, transaction).await
}

/// Buyback pivot: the company pays price x quantity to the holder. The
/// outcome is written through `transaction`, as for collections.
pub async fn disburse_payment_for_saga(
    payments: &Payments,
    command: &SagaPayment,
    transaction: &mut PgConnection,
) -> Result<PaymentReceipt, SagaPaymentError> {
    execute(payments, command, Direction::Disbursement, transaction).await
}

async fn execute(
    payments: &Payments,
    command: &SagaPayment,
    direction: Direction,
    transaction: &mut PgConnection,
) -> Result<PaymentReceipt, SagaPaymentError> {
    let intent = PaymentIntent {
        company_id: command.company_id,
        stakeholder_id: command.stakeholder_id,
        direction,
        amount: command.amount,
        key: IdempotencyKey::for_saga_step(command.saga_id, command.step),
        audit: command.audit.clone(),
    };
    let payment = payments
        .execute_recording_in(&intent, transaction)
        .await
        .map_err(classify)?;
    receipt(payment)
}

fn receipt(payment: Payment) -> Result<PaymentReceipt, SagaPaymentError> {
    match payment.status {
        PaymentStatus::Succeeded { gateway_reference } => Ok(PaymentReceipt {
            payment_id: payment.id,
            gateway_reference,
        }),
        PaymentStatus::Declined { reason } => Err(SagaPaymentError::Declined {
            payment_id: payment.id,
            reason,
        }),
        // `execute` returns only final payments.
        other => unreachable!("execute returned a non-final payment: {}", other.as_db()),
    }
}

fn classify(error: PaymentError) -> SagaPaymentError {
    match error {
        PaymentError::GatewayUnavailable(_)
        | PaymentError::InProgress
        | PaymentError::Database(_) => SagaPaymentError::Retriable(error),
        PaymentError::OutcomeUnknown(_) => SagaPaymentError::OutcomeUnknown(error),
        PaymentError::StakeholderNotFound(_)
        | PaymentError::PaymentInstructionMissing
        | PaymentError::KeyReused(_)
        | PaymentError::NotFound(_)
        | PaymentError::NotOutcomeUnknown { .. } => SagaPaymentError::Rejected(error),
    }
}
