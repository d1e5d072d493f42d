//! The shareholder service through real gRPC against real Postgres and NATS:
//! one binary, one module per feature (zero-to-production layout).

mod audit;
mod helpers;
mod payments;
mod reconcile;
mod saga_commands;
mod saga_operations;
mod self_service;
mod stakeholders;
mod tenancy;
