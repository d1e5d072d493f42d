//! End-to-end saga tests: all four services over real gRPC, Postgres and
//! NATS JetStream, through the outbox, relay and inbox.

mod buyback;
mod concurrency;
mod exercise;
mod faults;
mod helpers;
mod reconciliation;
mod scale;
mod self_service;
