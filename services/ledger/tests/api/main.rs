//! The ledger's API tests, against real Postgres, NATS and Redis over gRPC
//! (and the saga operations and equity projection called directly).

mod cap_table;
mod concurrency;
mod equity_projection;
mod helpers;
mod invariants;
mod ocf_tutorial;
mod saga_operations;
