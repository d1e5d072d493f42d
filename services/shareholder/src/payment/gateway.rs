//! The payment-gateway port. A real gateway (a bank, a payments provider) and
//! the sandbox implement it; the executor never knows which one it calls.

use futures::future::BoxFuture;

use super::model::{Direction, PaymentAmount};

/// One call to the gateway.
#[derive(Debug, Clone)]
pub struct GatewayRequest {
    /// Passed on so a gateway that supports idempotency keys also dedupes.
    pub idempotency_key: String,
    pub direction: Direction,
    pub amount: PaymentAmount,
    /// The holder's instructions at the gateway (an opaque reference).
    pub payment_instruction_ref: String,
}

/// What the gateway answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatewayOutcome {
    /// Money moved; the gateway's reference for it.
    Approved { gateway_reference: String },
    /// A business refusal (insufficient funds, closed account): final.
    Declined { reason: String },
    /// The gateway failed before moving money; safe to try again.
    TransientFailure { reason: String },
}

/// A payment gateway. Implementations must be safe to call concurrently.
pub trait PaymentGateway: Send + Sync + std::fmt::Debug {
    /// Executes one payment. Answering `TransientFailure` promises no money moved.
    fn execute(&self, request: GatewayRequest) -> BoxFuture<'_, GatewayOutcome>;
}
