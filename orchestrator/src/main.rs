//! The orchestrator process. Everything is in the library so tests start it the
//! same way; this only reads settings, starts telemetry, and stops on
//! SIGTERM / SIGINT with exit code 0.

use qapmap_runtime::{ServiceName, Settings};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = qapmap_runtime::telemetry::init(ServiceName::Orchestrator.as_str())?;
    let settings = match Settings::from_env(ServiceName::Orchestrator) {
        Ok(settings) => settings,
        Err(error) => {
            tracing::error!(error.message = %error, "invalid settings");
            std::process::exit(2);
        }
    };
    let application = qapmap_orchestrator::build(settings)
        .await
        .inspect_err(|error| {
            tracing::error!(error.cause_chain = ?error, error.message = %error, "start-up failed");
        })?;
    application
        .run_until(async {
            if let Err(error) = qapmap_runtime::shutdown::signal().await {
                tracing::error!(error.message = %error, "cannot listen for signals; stopping");
            }
        })
        .await
}
