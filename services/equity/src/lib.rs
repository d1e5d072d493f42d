//! The equity service. See OVERVIEW.md for its mental model.

pub mod vesting;

use qapmap_runtime::Settings;
use qapmap_runtime::server::{Application, Infrastructure};
use sqlx::migrate::Migrator;

/// The service's schema, embedded at compile time.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Connects to the service's infrastructure and binds its gRPC port; the
/// caller runs it with [`Application::run_until`].
pub async fn build(settings: Settings) -> anyhow::Result<Application> {
    let infrastructure = Infrastructure::connect(settings, &MIGRATOR).await?;
    let application = Application::bind(infrastructure).await?;
    Ok(application)
}
