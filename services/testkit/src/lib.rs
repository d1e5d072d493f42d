//! Test support for QapMap's integration tests. Everything here talks to
//! real servers:
//! - [`auth`]: the test signing key, its JWKS, and tokens for every role.
//! - [`fixtures`]: shared request fixtures (OCF vesting terms).
//! - [`database`]: a fresh database per test on the shared Postgres, dropped after.
//! - [`in_process`]: a service served inside the test process on a loopback port.
//! - [`nats`]: a unique subject namespace (and its streams) per test on the shared NATS.
//! - [`private`]: Postgres, NATS and Redis instances of the test's own, on free
//!   ports, for tests that must stop or restart them.
//! - [`process`]: a QapMap binary started as a child process.
//! - [`saga_bus`]: the orchestrator's side of NATS, to test a service's saga commands.
//! - [`runtime_checks`]: the checks every binary must pass (health, reflection, shutdown).
//!
//! Names made here start with the run id (`QAPMAP_TEST_RUN_ID`, set by
//! `scripts/test.sh`), so a run can sweep up whatever a crashed test left.

pub mod auth;
pub mod database;
pub mod fixtures;
pub mod in_process;
pub mod nats;
pub mod private;
pub mod process;
pub mod runtime_checks;
pub mod saga_bus;
pub mod tenancy;

/// A short random lowercase id for names of databases, namespaces, streams.
pub fn unique_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

/// The run id every name made by this run starts with.
pub fn run_id() -> String {
    std::env::var("QAPMAP_TEST_RUN_ID")
        .ok()
        .filter(|id| !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric()))
        .unwrap_or_else(|| "local".to_owned())
        .to_ascii_lowercase()
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

/// Polls `condition` every 50 ms until it holds or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: std::time::Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
