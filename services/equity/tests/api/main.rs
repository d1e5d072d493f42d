//! The equity service over real gRPC, against real Postgres and NATS: one
//! binary, one module per feature.

mod audit;
mod awards;
mod helpers;
mod plans;
mod saga_commands;
mod saga_operations;
mod self_service;
mod share_classes;
mod tenancy;
mod termination;
