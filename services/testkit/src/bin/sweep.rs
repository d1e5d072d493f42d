//! `qapmap-test-sweep <run-id>`: removes every database and JetStream stream
//! a test run made (names carry the run id), including those a crashed or
//! killed test could not clean up itself.

use sqlx::{Connection, PgConnection};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let run_id = std::env::args()
        .nth(1)
        .filter(|id| !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric()))
        .ok_or_else(|| anyhow::anyhow!("usage: qapmap-test-sweep <alphanumeric run id>"))?
        .to_ascii_lowercase();
    let databases = sweep_databases(&run_id).await?;
    let streams = sweep_streams(&run_id).await?;
    println!("test sweep: removed {databases} database(s) and {streams} stream(s) of run {run_id}");
    Ok(())
}

async fn sweep_databases(run_id: &str) -> anyhow::Result<usize> {
    let mut connection = PgConnection::connect(&qapmap_testkit::database::admin_url()).await?;
    let pattern = format!("qt\\_{run_id}\\_%");
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE $1")
            .bind(pattern)
            .fetch_all(&mut connection)
            .await?;
    for name in &names {
        // Names come from pg_database and match our own pattern.
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
        )))
        .execute(&mut connection)
        .await?;
    }
    Ok(names.len())
}

async fn sweep_streams(run_id: &str) -> anyhow::Result<usize> {
    use futures::TryStreamExt;
    let client = async_nats::connect(qapmap_testkit::nats::shared_url()).await?;
    let jetstream = async_nats::jetstream::new(client);
    let prefix = format!("QT{}", run_id.to_ascii_uppercase());
    let names: Vec<String> = jetstream.stream_names().try_collect().await?;
    let mut removed = 0;
    for name in names.iter().filter(|name| name.starts_with(&prefix)) {
        jetstream.delete_stream(name).await?;
        removed += 1;
    }
    Ok(removed)
}
