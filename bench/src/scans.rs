//! Sequential scans of big tables while a phase ran: a saga-path lookup no
//! index serves reads a whole table that grows with every saga, a cost the
//! bench's small tables hide (one such lookup took 52 ms at 1,000,000 rows
//! and 0.2 ms with its index). Small tables are left out: for a few pages a
//! sequential scan is the planner's right choice.
//!
//! The same snapshots count the rows each table had written (inserted,
//! updated, deleted) and its indexes: an insert, and an update that is not
//! HOT, also writes an entry in every full index (and in each partial
//! index whose predicate the new row meets), which is where a saga's
//! writes cost beyond the rows themselves.

use std::collections::BTreeMap;

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, Row};

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

/// One table's counters in `pg_stat_user_tables`, and its indexes.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TableCounts {
    seq_scans: i64,
    live_rows: i64,
    inserted: i64,
    updated: i64,
    /// Updates that wrote no index entries (heap-only tuples).
    hot_updated: i64,
    deleted: i64,
    full_indexes: i64,
    partial_indexes: i64,
}

/// Per `service.table`.
type Snapshot = BTreeMap<String, TableCounts>;

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
            let rows = sqlx::query(
                "SELECT t.relname::text AS table_name, t.seq_scan, t.n_live_tup, t.n_tup_ins,
                        t.n_tup_upd, t.n_tup_hot_upd, t.n_tup_del,
                        (SELECT count(*) FROM pg_index i
                         WHERE i.indrelid = t.relid AND i.indpred IS NULL) AS full_indexes,
                        (SELECT count(*) FROM pg_index i
                         WHERE i.indrelid = t.relid AND i.indpred IS NOT NULL) AS partial_indexes
                 FROM pg_stat_user_tables t",
            )
            .fetch_all(&mut *connection)
            .await?;
            for row in rows {
                let table: String = row.try_get("table_name")?;
                let counts = TableCounts {
                    seq_scans: row.try_get("seq_scan")?,
                    live_rows: row.try_get("n_live_tup")?,
                    inserted: row.try_get("n_tup_ins")?,
                    updated: row.try_get("n_tup_upd")?,
                    hot_updated: row.try_get("n_tup_hot_upd")?,
                    deleted: row.try_get("n_tup_del")?,
                    full_indexes: row.try_get("full_indexes")?,
                    partial_indexes: row.try_get("partial_indexes")?,
                };
                snapshot.insert(format!("{service}.{table}"), counts);
            }
        }
        Ok(snapshot)
    }
}

/// The line saying which big tables were scanned between two snapshots.
pub(crate) fn line(before: &Snapshot, after: &Snapshot) -> String {
    let scanned: Vec<String> = after
        .iter()
        .filter(|(_, counts)| counts.live_rows >= BIG_TABLE_ROWS)
        .filter_map(|(table, counts)| {
            let earlier = before.get(table).map_or(0, |counts| counts.seq_scans);
            let delta = counts.seq_scans - earlier;
            (delta > 0).then(|| format!("{table} {delta} (of {} rows)", counts.live_rows))
        })
        .collect();
    let found = if scanned.is_empty() {
        "none".to_owned()
    } else {
        scanned.join(", ")
    };
    format!("  sequential scans of tables over {BIG_TABLE_ROWS} rows: {found}")
}

/// The lines saying what each table had written per saga between two
/// snapshots, most index entries first: rows inserted, updated (of them
/// HOT) and deleted, the table's indexes, and the entries written in its
/// full indexes (one per insert or non-HOT update in each; a delete
/// writes none until vacuum; partial indexes are left out, since which
/// rows meet their predicates is not counted).
pub(crate) fn writes_lines(before: &Snapshot, after: &Snapshot, sagas: usize) -> Vec<String> {
    if sagas == 0 {
        return Vec::new();
    }
    let per_saga = |count: i64| count as f64 / sagas as f64;
    // Per table written to: (full-index entries, rows written, its line).
    let mut tables: Vec<(f64, f64, String)> = after
        .iter()
        .filter_map(|(table, counts)| {
            let earlier = before.get(table).copied().unwrap_or_default();
            let inserted = counts.inserted - earlier.inserted;
            let updated = counts.updated - earlier.updated;
            let hot = counts.hot_updated - earlier.hot_updated;
            let deleted = counts.deleted - earlier.deleted;
            let rows = inserted + updated + deleted;
            if rows == 0 {
                return None;
            }
            let entries = per_saga((inserted + updated - hot) * counts.full_indexes);
            let line = format!(
                "    {table}: inserted {:.2}, updated {:.2} (HOT {:.2}), deleted {:.2}; indexes {} full + {} partial, {entries:.1} full-index entries",
                per_saga(inserted),
                per_saga(updated),
                per_saga(hot),
                per_saga(deleted),
                counts.full_indexes,
                counts.partial_indexes
            );
            Some((entries, per_saga(rows), line))
        })
        .collect();
    tables.sort_by(|a, b| b.0.total_cmp(&a.0));
    let rows: f64 = tables.iter().map(|(_, rows, _)| rows).sum();
    let entries: f64 = tables.iter().map(|(entries, _, _)| entries).sum();
    let mut lines = vec![format!(
        "  rows written per saga: {rows:.1}, full-index entries {entries:.1}, by table:"
    )];
    lines.extend(tables.into_iter().map(|(_, _, line)| line));
    lines
}
