//! SIGTERM and SIGINT as one future, so every process stops the same way.

/// Completes when the process receives SIGTERM (Kubernetes, `kill`) or SIGINT
/// (Ctrl-C). If a handler cannot be installed the process could never stop
/// cleanly, so that is a startup failure.
pub async fn signal() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = terminate.recv() => tracing::info!(signal = "SIGTERM", "shutdown requested"),
        _ = interrupt.recv() => tracing::info!(signal = "SIGINT", "shutdown requested"),
    }
    Ok(())
}
