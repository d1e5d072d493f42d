//! The ledger's API tests, against real Postgres, NATS and Redis over gRPC
//! (and the saga operations and equity projection called directly, and
//! through their JetStream consumers).

mod accounts;
mod bus;
mod cap_table;
mod concurrency;
mod earlier_dates;
mod equity_event_consumer;
mod equity_projection;
mod helpers;
mod invariants;
mod ocf_tutorial;
mod projection_retention;
mod saga_commands;
mod saga_operations;
mod self_service;
mod tenancy;
