//! The runtime every QapMap process starts with.
//!
//! Layout:
//! - [`settings`]: typed settings from `QAPMAP_*` environment variables,
//!   validated once at start.
//! - [`telemetry`]: JSON logs, and OTLP trace export switched on by `OTEL_*`.
//! - [`database`]: the Postgres pool and the service's migrations.
//! - [`messaging`]: the NATS connection and idempotent JetStream set-up.
//! - [`outbox`]: enqueueing messages in the caller's transaction.
//! - [`relay`]: publishing the outbox to JetStream, in order per key.
//! - [`consumer`], [`inbox`]: durable pull consumers whose handlers take
//!   effect once per message (`key_holds`: later messages of a key wait in
//!   memory behind one to retry); [`dead_letter`]: what ran out of
//!   deliveries, and the admin service to replay or discard it.
//! - [`metrics`]: outbox backlog, publish and dead-letter counts.
//! - [`health`]: `grpc.health.v1`, SERVING only while Postgres and NATS answer.
//! - [`server`]: the gRPC server with health, reflection and graceful shutdown.
//! - [`shutdown`]: SIGTERM / SIGINT as a future.
//! - [`audit`]: who did what, written with each command; `AuditService`.
//! - [`tenancy`]: confining a transaction to one company (row-level security).
//! - [`auth`]: bearer tokens, method policy, tenant checks and rate limits.
//! - [`error`]: the one error type, mapped to `tonic::Status` in one place.
//! - [`idempotency`]: `request_id` handling for every mutating call.
//! - [`decimal`], [`date`], [`ids`], [`pagination`]: conversions at the gRPC edge.

pub mod audit;
pub mod auth;
pub mod consumer;
pub mod database;
pub mod date;
pub mod dead_letter;
pub mod decimal;
pub mod error;
pub mod grpc_tracing;
pub mod health;
pub mod idempotency;
pub mod ids;
pub mod inbox;
mod key_holds;
pub mod local_relay;
pub mod messaging;
pub mod metrics;
pub mod metrics_export;
pub mod outbox;
pub mod pagination;
pub mod relay;
pub mod request_limits;
pub mod saga_initiator;
pub mod saga_reply;
pub mod server;
pub mod settings;
pub mod shutdown;
pub mod telemetry;
pub mod tenancy;
pub mod trace_context;

pub use error::{ApiError, ApiResult};
pub use settings::{ServiceName, Settings};
