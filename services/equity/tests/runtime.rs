//! The runtime contract of the equity binary: health, reflection, graceful
//! shutdown, and honest NOT_SERVING, against real Postgres and NATS.

use qapmap_testkit::runtime_checks;

const BINARY: &str = env!("CARGO_BIN_EXE_qapmap-equity");

#[tokio::test]
async fn serves_health_and_reflection_and_finishes_in_flight_calls_on_sigterm() {
    runtime_checks::check_health_reflection_and_graceful_shutdown(
        BINARY,
        &[
            "qapmap.equity.v1.EquityService",
            "qapmap.ops.v1.DeadLetterService",
        ],
    )
    .await;
}

#[tokio::test]
async fn reports_not_serving_while_its_database_is_down() {
    runtime_checks::check_not_serving_while_database_is_down(BINARY).await;
}
