//! End-to-end tests of QapMap live in `tests/`: every service runs for real
//! (in-process on loopback gRPC, or as a spawned binary when a test must kill
//! it) against real Postgres and NATS JetStream.
