//! The ledger's JetStream consumers (run by the runtime's inbox consumer, so
//! each message takes effect once, in one transaction with its reply):
//! - [`saga_commands`]: the orchestrator's commands to the ledger
//!   (`<ns>.cmd.ledger.>`), answered with a `SagaReply`.
//! - [`equity_events`]: the equity service's events (`<ns>.evt.equity.>`),
//!   fed to the options projection behind the cap table.

pub mod equity_events;
pub mod saga_commands;
