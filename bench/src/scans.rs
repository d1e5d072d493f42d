//! Sequential scans of big tables while a phase ran: a saga-path lookup no
//! index serves reads a whole table that grows with every saga, a cost the
//! bench's small tables hide (one such lookup took 52 ms at 1,000,000 rows
//! and 0.2 ms with its index). Small tables are left out: for a few pages a
//! sequential scan is the planner's right choice.

use std::collections::BTreeMap;

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};

/// The harness's own sessions in the service databases say so, and the
/// connections floor does not count them.
pub(crate) const APPLICATION_NAME: &str = "qapmap-bench";

/// A session of the harness's own in one bench database.
pub(crate) async fn connect_to(admin_url: &str, database: &str) -> anyhow::Result<PgConnection> {
    let server = admin_url
        .rsplit_once('/')
        .map_or(admin_url, |(server, _)| server);
    let options: PgConnectOptions = format!("{server}/{database}").parse()?;
    Ok(PgConnection::connect_with(&options.application_name(APPLICATION_NAME)).await?)
}

/// Tables with at least this many live rows at the end of a phase count.
const BIG_TABLE_ROWS: i64 = 1_000;

/// Per `service.table`: sequential scans so far and live rows.
type Snapshot = BTreeMap<String, (i64, i64)>;

#[derive(Debug)]
pub(crate) struct ScanCounter {
    /// (service, connection to its database).
    databases: Vec<(String, PgConnection)>,
}

impl ScanCounter {
    pub(crate) async fn connect(
        admin_url: &str,
        databases: &[(String, String)],
    ) -> anyhow::Result<Self> {
        let mut connected = Vec::with_capacity(databases.len());
        for (service, database) in databases {
            connected.push((service.clone(), connect_to(admin_url, database).await?));
        }
        Ok(Self {
            databases: connected,
        })
    }

    pub(crate) async fn close(self) -> anyhow::Result<()> {
        for (_, connection) in self.databases {
            connection.close().await?;
        }
        Ok(())
    }

    pub(crate) async fn snapshot(&mut self) -> anyhow::Result<Snapshot> {
        let mut snapshot = Snapshot::new();
        for (service, connection) in &mut self.databases {
            let rows: Vec<(String, i64, i64)> = sqlx::query_as(
                "SELECT relname::text, seq_scan, n_live_tup FROM pg_stat_user_tables",
            )
            .fetch_all(&mut *connection)
            .await?;
            for (table, seq_scan, live) in rows {
                snapshot.insert(format!("{service}.{table}"), (seq_scan, live));
            }
        }
        Ok(snapshot)
    }
}

/// The line saying which big tables were scanned between two snapshots.
pub(crate) fn line(before: &Snapshot, after: &Snapshot) -> String {
    let scanned: Vec<String> = after
        .iter()
        .filter(|(_, (_, live))| *live >= BIG_TABLE_ROWS)
        .filter_map(|(table, (scans, live))| {
            let earlier = before.get(table).map_or(0, |(scans, _)| *scans);
            let delta = scans - earlier;
            (delta > 0).then(|| format!("{table} {delta} (of {live} rows)"))
        })
        .collect();
    let found = if scanned.is_empty() {
        "none".to_owned()
    } else {
        scanned.join(", ")
    };
    format!("  sequential scans of tables over {BIG_TABLE_ROWS} rows: {found}")
}
