//! `qapmap-create-database <admin-url> <name>`: creates a database if it does
//! not exist yet. Used by `scripts/run.sh`, which must work where no `psql`
//! client is installed.

use sqlx::{Connection, PgConnection};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(admin_url), Some(name)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: qapmap-create-database <admin-url> <name>");
    };
    anyhow::ensure!(
        !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
        "a database name is letters, digits and '_'"
    );
    let mut connection = PgConnection::connect(&admin_url).await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut connection)
            .await?;
    if !exists {
        // The name was checked above to be letters, digits and '_'.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut connection)
            .await?;
    }
    Ok(())
}
