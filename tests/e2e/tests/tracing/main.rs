//! Tracing end to end: all four binaries as real processes export over OTLP
//! to a real OTLP/gRPC receiver inside the test; one saga is one trace.

mod receiver;
mod setup;
mod system;
mod traces;
