//! Executing a payment at most once per idempotency key.
//!
//! 1. Claim, in one short transaction: the key's row is read under lock. No
//!    row: the stakeholder is checked and a `pending` attempt is inserted
//!    (the unique key on `(company_id, idempotency_key)` lets exactly one of
//!    several concurrent repeats in). A final row is returned as it is; a
//!    transiently failed one is claimed for another attempt; a pending one
//!    belongs to another caller, who is waited for.
//! 2. The attempt is committed BEFORE the gateway is called, and no
//!    transaction is held open across the call.
//! 3. The outcome is recorded after: in a transaction of its own, or for a
//!    saga command in the command's transaction, with its inbox row and
//!    reply ([`Payments::execute_recording_in`]). A crash in between leaves
//!    a pending row that later callers see as stale and declare
//!    `outcome_unknown`: never paid twice, and visible for reconciliation.
//!
//! Every transaction here is confined to the payment's company (row-level
//! security, see `qapmap_runtime::tenancy`): these writes do not pass
//! through the idempotency layer that confines commands.

use std::sync::Arc;
use std::time::Duration;

use qapmap_proto::messaging::v1::domain_event::Event;
use qapmap_proto::shareholder::v1 as proto;
use qapmap_runtime::audit::{self, Actor};
use qapmap_runtime::messaging::Subjects;
use qapmap_runtime::tenancy;
use sqlx::{PgConnection, PgPool};
use tokio::time::Instant;
use uuid::Uuid;

use super::gateway::{GatewayOutcome, GatewayRequest, PaymentGateway};
use super::model::{Direction, IdempotencyKey, Payment, PaymentAmount, PaymentStatus};
use super::{PaymentError, store};
use crate::{convert, events, stakeholder};

/// How long the gateway may take before the outcome is declared unknown.
pub const DEFAULT_GATEWAY_TIMEOUT: Duration = Duration::from_secs(30);
/// Slack past the gateway timeout before a pending attempt counts as crashed.
const STALE_MARGIN: Duration = Duration::from_secs(5);
/// How often a concurrent repeat looks for the first call's outcome.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// A payment to execute.
#[derive(Debug, Clone)]
pub struct PaymentIntent {
    pub company_id: Uuid,
    pub stakeholder_id: Uuid,
    pub direction: Direction,
    pub amount: PaymentAmount,
    pub key: IdempotencyKey,
    /// The audit record to write with the payment's final outcome, so it
    /// names the outcome's event. None writes none.
    pub audit: Option<PaymentAudit>,
}

/// Who asked for a payment, for the audit trail.
#[derive(Debug, Clone)]
pub struct PaymentAudit {
    pub actor: Actor,
    /// What the trail calls the command, e.g. `saga:collect_payment`.
    pub method: String,
    pub request_id: String,
}

/// Payments against one database and gateway.
#[derive(Debug, Clone)]
pub struct Payments {
    pool: PgPool,
    gateway: Arc<dyn PaymentGateway>,
    subjects: Subjects,
    gateway_timeout: Duration,
}

/// What the claim step decided.
enum Claim {
    /// This caller owns an attempt: call the gateway.
    Run(Payment, String),
    /// A final result.
    Done(Payment),
    /// Another caller's attempt is running.
    Busy,
    /// Interrupted earlier; never retried automatically.
    Unknown(Uuid),
}

impl Payments {
    pub fn new(pool: PgPool, gateway: Arc<dyn PaymentGateway>, subjects: Subjects) -> Self {
        Self {
            pool,
            gateway,
            subjects,
            gateway_timeout: DEFAULT_GATEWAY_TIMEOUT,
        }
    }

    /// Overrides how long a gateway call may take (tests use a short one).
    pub fn with_gateway_timeout(mut self, timeout: Duration) -> Self {
        self.gateway_timeout = timeout;
        self
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Executes `intent` at most once; a repeat returns the first result (a
    /// decline included). A transient gateway failure is
    /// [`PaymentError::GatewayUnavailable`] and may be repeated.
    #[tracing::instrument(skip_all, fields(company.id = %intent.company_id, payment.key = intent.key.as_str()))]
    pub async fn execute(&self, intent: &PaymentIntent) -> Result<Payment, PaymentError> {
        self.run(intent, None).await
    }

    /// As [`Self::execute`], but a final outcome reached by this call is
    /// recorded (with its event and audit record) in `transaction`, which
    /// must be confined to the intent's company; the caller commits it with
    /// its own effects (a saga command's inbox row and reply: one commit
    /// instead of two). Until that commit the payment stays `pending`, so a
    /// caller that rolls back after the gateway approved leaves what a crash
    /// mid-call leaves: an attempt later callers declare `outcome_unknown`,
    /// never paid twice. The claim and the outcomes that are not final
    /// still commit on their own.
    #[tracing::instrument(skip_all, fields(company.id = %intent.company_id, payment.key = intent.key.as_str()))]
    pub async fn execute_recording_in(
        &self,
        intent: &PaymentIntent,
        transaction: &mut PgConnection,
    ) -> Result<Payment, PaymentError> {
        self.run(intent, Some(transaction)).await
    }

    async fn run(
        &self,
        intent: &PaymentIntent,
        mut recording_in: Option<&mut PgConnection>,
    ) -> Result<Payment, PaymentError> {
        let deadline = Instant::now() + self.gateway_timeout + STALE_MARGIN;
        loop {
            match self.claim(intent).await? {
                Claim::Run(payment, instruction) => {
                    let payment = self.attempt(payment, instruction).await?;
                    return self
                        .record_final(payment, intent.audit.as_ref(), recording_in.as_deref_mut())
                        .await;
                }
                Claim::Done(payment) => return Ok(payment),
                Claim::Unknown(payment_id) => return Err(PaymentError::OutcomeUnknown(payment_id)),
                Claim::Busy if Instant::now() >= deadline => return Err(PaymentError::InProgress),
                Claim::Busy => tokio::time::sleep(POLL_INTERVAL).await,
            }
        }
    }

    /// One payment of the company.
    pub async fn find(&self, company_id: Uuid, payment_id: Uuid) -> Result<Payment, PaymentError> {
        let mut transaction = tenancy::begin(&self.pool, company_id).await?;
        let payment = store::find(&mut *transaction, company_id, payment_id)
            .await?
            .ok_or(PaymentError::NotFound(payment_id))?;
        transaction.commit().await?;
        Ok(payment)
    }

    async fn claim(&self, intent: &PaymentIntent) -> Result<Claim, PaymentError> {
        let mut transaction = tenancy::begin(&self.pool, intent.company_id).await?;
        let stale_after = self.gateway_timeout + STALE_MARGIN;
        let existing = store::find_by_key_for_update(
            &mut transaction,
            intent.company_id,
            intent.key.as_str(),
            stale_after,
        )
        .await?;
        let claim = match existing {
            None => insert_attempt(&mut transaction, intent).await?,
            Some((payment, stale)) => reclaim(&mut transaction, intent, payment, stale).await?,
        };
        transaction.commit().await?;
        Ok(claim)
    }

    /// Calls the gateway for a claimed attempt: the payment with its final
    /// status, not yet recorded. Outcomes that are not final are recorded
    /// here, each in its own transaction.
    async fn attempt(
        &self,
        payment: Payment,
        instruction: String,
    ) -> Result<Payment, PaymentError> {
        let request = GatewayRequest {
            idempotency_key: payment.idempotency_key.clone(),
            direction: payment.direction,
            amount: payment.amount,
            payment_instruction_ref: instruction,
        };
        let call = self.gateway.execute(request);
        let status = match tokio::time::timeout(self.gateway_timeout, call).await {
            Ok(GatewayOutcome::Approved { gateway_reference }) => {
                PaymentStatus::Succeeded { gateway_reference }
            }
            Ok(GatewayOutcome::Declined { reason }) => PaymentStatus::Declined { reason },
            Ok(GatewayOutcome::TransientFailure { reason }) => {
                self.record_interim(&payment, &PaymentStatus::FailedRetryable)
                    .await?;
                return Err(PaymentError::GatewayUnavailable(reason));
            }
            Err(_elapsed) => {
                tracing::warn!(payment.id = %payment.id, "gateway timed out; outcome unknown");
                self.record_interim(&payment, &PaymentStatus::OutcomeUnknown)
                    .await?;
                return Err(PaymentError::OutcomeUnknown(payment.id));
            }
        };
        Ok(Payment { status, ..payment })
    }

    /// Records an outcome that is not final (nothing to announce).
    async fn record_interim(
        &self,
        payment: &Payment,
        status: &PaymentStatus,
    ) -> Result<(), PaymentError> {
        let mut transaction = tenancy::begin(&self.pool, payment.company_id).await?;
        store::record_outcome(&mut *transaction, payment.id, status).await?;
        transaction.commit().await?;
        Ok(())
    }

    /// Records a final outcome and announces it, and the audit record when
    /// asked for, in `recording_in` when given (the caller commits), else
    /// in a transaction of its own.
    async fn record_final(
        &self,
        payment: Payment,
        audit: Option<&PaymentAudit>,
        recording_in: Option<&mut PgConnection>,
    ) -> Result<Payment, PaymentError> {
        match recording_in {
            Some(transaction) => {
                record_final_in(transaction, &self.subjects, &payment, audit).await?;
            }
            None => {
                let mut transaction = tenancy::begin(&self.pool, payment.company_id).await?;
                record_final_in(&mut transaction, &self.subjects, &payment, audit).await?;
                transaction.commit().await?;
            }
        }
        tracing::info!(payment.id = %payment.id, payment.status = payment.status.as_db(), "payment recorded");
        Ok(payment)
    }
}

/// Writes a final outcome, its `PaymentRecorded` event and the audit record
/// (when asked for) through `transaction`. An attempt no longer pending
/// (declared `outcome_unknown` meanwhile) is left as it is.
async fn record_final_in(
    transaction: &mut PgConnection,
    subjects: &Subjects,
    payment: &Payment,
    audit: Option<&PaymentAudit>,
) -> Result<(), PaymentError> {
    if !store::record_outcome(&mut *transaction, payment.id, &payment.status).await? {
        return Err(PaymentError::OutcomeUnknown(payment.id));
    }
    announce(&mut *transaction, subjects, payment).await?;
    if let Some(audit) = audit {
        // Last, so the record names the event just enqueued.
        audit::record(
            &mut *transaction,
            payment.company_id,
            &audit.actor,
            &audit.method,
            &audit.request_id,
        )
        .await?;
    }
    Ok(())
}

/// Enqueues the `PaymentRecorded` event of a payment's final outcome.
pub(super) async fn announce(
    transaction: &mut PgConnection,
    subjects: &Subjects,
    payment: &Payment,
) -> Result<(), PaymentError> {
    let aggregate = events::Aggregate {
        company_id: payment.company_id,
        aggregate_type: "payment",
        aggregate_id: payment.id,
        version: 1,
    };
    let event = Event::PaymentRecorded(proto::PaymentRecorded {
        payment: Some(convert::payment_to_proto(payment)),
    });
    let today = qapmap_runtime::date::today();
    events::enqueue(
        &mut *transaction,
        subjects,
        &aggregate,
        today,
        "payment_recorded",
        event,
    )
    .await?;
    Ok(())
}

/// First sight of a key: check the stakeholder and record the attempt.
async fn insert_attempt(
    transaction: &mut PgConnection,
    intent: &PaymentIntent,
) -> Result<Claim, PaymentError> {
    let instruction =
        payment_instruction(transaction, intent.company_id, intent.stakeholder_id).await?;
    let payment = Payment {
        id: qapmap_runtime::ids::new_id(),
        company_id: intent.company_id,
        stakeholder_id: intent.stakeholder_id,
        direction: intent.direction,
        amount: intent.amount,
        status: PaymentStatus::Pending,
        idempotency_key: intent.key.as_str().to_owned(),
        gateway_attempts: 1,
        // Postgres keeps microseconds; every repeat must see the same value.
        recorded_at: chrono::SubsecRound::trunc_subsecs(chrono::Utc::now(), 6),
    };
    if store::insert_pending(transaction, &payment).await? {
        Ok(Claim::Run(payment, instruction))
    } else {
        Ok(Claim::Busy)
    }
}

/// A key seen before: return its result, wait for it, or try it again.
async fn reclaim(
    transaction: &mut PgConnection,
    intent: &PaymentIntent,
    payment: Payment,
    stale: bool,
) -> Result<Claim, PaymentError> {
    let same_payment = payment.stakeholder_id == intent.stakeholder_id
        && payment.direction == intent.direction
        && payment.amount == intent.amount;
    if !same_payment {
        return Err(PaymentError::KeyReused(intent.key.as_str().to_owned()));
    }
    match payment.status {
        PaymentStatus::Succeeded { .. } | PaymentStatus::Declined { .. } => {
            Ok(Claim::Done(payment))
        }
        PaymentStatus::OutcomeUnknown => Ok(Claim::Unknown(payment.id)),
        PaymentStatus::Pending if stale => {
            tracing::warn!(payment.id = %payment.id, "abandoned attempt; outcome unknown");
            store::record_outcome(
                &mut *transaction,
                payment.id,
                &PaymentStatus::OutcomeUnknown,
            )
            .await?;
            Ok(Claim::Unknown(payment.id))
        }
        PaymentStatus::Pending => Ok(Claim::Busy),
        PaymentStatus::FailedRetryable => {
            let instruction =
                payment_instruction(transaction, payment.company_id, payment.stakeholder_id)
                    .await?;
            store::start_retry(transaction, payment.id).await?;
            let retry = Payment {
                status: PaymentStatus::Pending,
                gateway_attempts: payment.gateway_attempts + 1,
                ..payment
            };
            Ok(Claim::Run(retry, instruction))
        }
    }
}

/// The stakeholder's payment instruction: payments need somewhere to take
/// money from or send it to. Terminated stakeholders may still pay and be
/// paid (an exercise inside the post-termination window, a buyback).
async fn payment_instruction(
    transaction: &mut PgConnection,
    company_id: Uuid,
    stakeholder_id: Uuid,
) -> Result<String, PaymentError> {
    let stakeholder = stakeholder::store::find(&mut *transaction, company_id, stakeholder_id)
        .await?
        .ok_or(PaymentError::StakeholderNotFound(stakeholder_id))?;
    stakeholder
        .payment_instruction_ref
        .map(|reference| reference.as_str().to_owned())
        .ok_or(PaymentError::PaymentInstructionMissing)
}
