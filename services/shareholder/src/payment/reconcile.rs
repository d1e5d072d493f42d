//! Settling a payment whose outcome is unknown.
//!
//! A gateway call that timed out, or an attempt abandoned by a crash, leaves
//! a payment `outcome_unknown`: nobody knows whether money moved, so it is
//! never retried on its own (that could pay twice), and a saga waiting on it
//! parks. An operator asks the gateway and records the answer here:
//! - the money moved: the payment becomes `succeeded` with the gateway's
//!   reference and is announced (`PaymentRecorded`) like any success; a
//!   saga retry then gets that result without calling the gateway;
//! - nothing moved: it becomes `failed_retryable`, and the next request
//!   with its key (a saga retry) calls the gateway again.

use qapmap_runtime::messaging::Subjects;
use sqlx::PgConnection;
use uuid::Uuid;

use super::executor::announce;
use super::{Payment, PaymentError, PaymentStatus, store};

/// What the gateway says became of the money.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    MoneyMoved { gateway_reference: String },
    MoneyNotMoved,
}

/// Records `resolution` for the company's payment in `transaction`, which
/// must be confined to the company; the caller commits.
pub async fn resolve(
    transaction: &mut PgConnection,
    subjects: &Subjects,
    company_id: Uuid,
    payment_id: Uuid,
    resolution: Resolution,
) -> Result<Payment, PaymentError> {
    let payment = store::find(&mut *transaction, company_id, payment_id)
        .await?
        .ok_or(PaymentError::NotFound(payment_id))?;
    if payment.status != PaymentStatus::OutcomeUnknown {
        return Err(PaymentError::NotOutcomeUnknown {
            id: payment_id,
            status: payment.status.as_db(),
        });
    }
    let status = match resolution {
        Resolution::MoneyMoved { gateway_reference } => {
            PaymentStatus::Succeeded { gateway_reference }
        }
        Resolution::MoneyNotMoved => PaymentStatus::FailedRetryable,
    };
    // The status guard also covers a concurrent resolution of the same payment.
    if !store::resolve_unknown(&mut *transaction, payment_id, &status).await? {
        let now = store::find(&mut *transaction, company_id, payment_id)
            .await?
            .map_or("gone", |payment| payment.status.as_db());
        return Err(PaymentError::NotOutcomeUnknown {
            id: payment_id,
            status: now,
        });
    }
    let payment = Payment { status, ..payment };
    if matches!(payment.status, PaymentStatus::Succeeded { .. }) {
        announce(&mut *transaction, subjects, &payment).await?;
    }
    tracing::info!(payment.id = %payment.id, payment.status = payment.status.as_db(), "unknown payment outcome resolved");
    Ok(payment)
}
