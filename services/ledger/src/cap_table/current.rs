//! Today's cap tables kept in this process's memory, so the common read (the
//! current table, a page at a time) costs neither Postgres nor Redis.
//!
//! Freshness: every change to a company's ledger bumps its `ledgers` row,
//! every change to its equity projection its `projection_versions` row, and
//! both rows' triggers NOTIFY `LEDGER_CHANGED_CHANNEL` with the company id
//! at commit. A listener on a connection of its own drops the
//! company's table when that arrives; this process's own gRPC commands drop
//! it themselves right after their commit, so a caller reads its own writes
//! at once. A table loaded while a change was committing is never kept: each
//! load takes a [`Stamp`] before its snapshot and stores only if no change
//! (and no listener reconnect, which may have missed notifications) happened
//! since. While the listener is not connected nothing is served from memory.
//! Other replicas' reads may trail a commit by the notification's delivery.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::NaiveDate;
use qapmap_runtime::server::StopSignal;
use sqlx::PgPool;
use sqlx::postgres::{PgListener, PgPoolOptions};
use uuid::Uuid;

/// Where the `ledgers` and `projection_versions` triggers announce a
/// company's change (see the migrations).
pub const LEDGER_CHANGED_CHANNEL: &str = "qapmap_ledger_changed";

/// The most rows kept across companies (~0.6 KiB each: the protobuf bytes
/// and the figures past dates are derived from):
/// bounds memory whatever the number of companies read.
pub const MAX_CACHED_ROWS: usize = 50_000;
/// Companies whose change counters are remembered before they are reset.
const MAX_TRACKED_COMPANIES: usize = 100_000;
const RECONNECT_DELAY: Duration = Duration::from_millis(500);

/// When a table was loaded, in terms of the changes this process has seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Bumped whenever notifications may have been missed (listener reconnect).
    epoch: u64,
    /// The company's changes seen in this epoch.
    changes: u64,
}

#[derive(Debug)]
struct Cached<T> {
    stamp: Stamp,
    as_of: NaiveDate,
    rows: usize,
    table: Arc<T>,
}

#[derive(Debug)]
struct State<T> {
    listening: bool,
    epoch: u64,
    changes: HashMap<Uuid, u64>,
    tables: HashMap<Uuid, Cached<T>>,
    rows: usize,
}

impl<T> Default for State<T> {
    fn default() -> Self {
        Self {
            listening: false,
            epoch: 0,
            changes: HashMap::new(),
            tables: HashMap::new(),
            rows: 0,
        }
    }
}

impl<T> State<T> {
    fn stamp(&self, company_id: Uuid) -> Stamp {
        Stamp {
            epoch: self.epoch,
            changes: self.changes.get(&company_id).copied().unwrap_or(0),
        }
    }

    fn forget_everything(&mut self) {
        self.epoch += 1;
        self.changes.clear();
        self.tables.clear();
        self.rows = 0;
    }

    fn remove(&mut self, company_id: Uuid) {
        if let Some(old) = self.tables.remove(&company_id) {
            self.rows -= old.rows;
        }
    }
}

/// The in-memory current cap tables, in whatever form the reader serves
/// them (`T`); cheap to clone (shared).
#[derive(Debug)]
pub struct CurrentTables<T> {
    state: Arc<Mutex<State<T>>>,
}

impl<T> Clone for CurrentTables<T> {
    fn clone(&self) -> Self {
        Self {
            state: self.state.clone(),
        }
    }
}

impl<T> Default for CurrentTables<T> {
    fn default() -> Self {
        Self {
            state: Arc::default(),
        }
    }
}

impl<T> CurrentTables<T> {
    fn state(&self) -> MutexGuard<'_, State<T>> {
        // A panic elsewhere while holding the lock leaves plain maps behind;
        // dropping them all is always safe.
        self.state.lock().unwrap_or_else(|poisoned| {
            let mut state = poisoned.into_inner();
            state.forget_everything();
            state
        })
    }

    /// Take before loading a table; `None` while memory cannot be trusted.
    pub fn stamp(&self, company_id: Uuid) -> Option<Stamp> {
        let state = self.state();
        state.listening.then(|| state.stamp(company_id))
    }

    /// The table for `as_of` if nothing changed since it was loaded.
    pub fn get(&self, company_id: Uuid, as_of: NaiveDate) -> Option<Arc<T>> {
        let state = self.state();
        if !state.listening {
            return None;
        }
        let cached = state.tables.get(&company_id)?;
        (cached.as_of == as_of && cached.stamp == state.stamp(company_id))
            .then(|| cached.table.clone())
    }

    /// Keeps `table` (of `rows` rows) unless the company changed since
    /// `stamp` was taken.
    pub fn put(
        &self,
        company_id: Uuid,
        stamp: Stamp,
        as_of: NaiveDate,
        rows: usize,
        table: Arc<T>,
    ) {
        let mut state = self.state();
        if !state.listening || state.stamp(company_id) != stamp {
            return;
        }
        state.remove(company_id);
        if rows > MAX_CACHED_ROWS {
            return;
        }
        if state.rows + rows > MAX_CACHED_ROWS {
            // Simple and bounded: start over rather than track recency.
            state.tables.clear();
            state.rows = 0;
        }
        state.rows += rows;
        state.tables.insert(
            company_id,
            Cached {
                stamp,
                as_of,
                rows,
                table,
            },
        );
    }

    /// The company's ledger or projection changed (a notification, or a
    /// command of this process after its commit).
    pub fn changed(&self, company_id: Uuid) {
        let mut state = self.state();
        if state.changes.len() >= MAX_TRACKED_COMPANIES && !state.changes.contains_key(&company_id)
        {
            state.forget_everything();
        }
        *state.changes.entry(company_id).or_insert(0) += 1;
        state.remove(company_id);
    }

    fn listening(&self, listening: bool) {
        let mut state = self.state();
        state.forget_everything();
        state.listening = listening;
    }

    /// Listens for changes until `stop`, on a connection of its own (the
    /// service pool stays whole), reconnecting after a loss.
    pub async fn listen(self, pool: &PgPool, mut stop: StopSignal) {
        let listener_pool = PgPoolOptions::new()
            .max_connections(1)
            .connect_lazy_with((*pool.connect_options()).clone());
        while !stop.is_stopped() {
            match self.listen_once(&listener_pool, &mut stop).await {
                Ok(()) => break,
                Err(error) => {
                    self.listening(false);
                    tracing::warn!(error.message = %error, "cap-table change listener lost; serving from Postgres until it is back");
                }
            }
            tokio::select! {
                _ = stop.stopped() => break,
                _ = tokio::time::sleep(RECONNECT_DELAY) => {}
            }
        }
        self.listening(false);
    }

    /// `Ok` on stop; `Err` when the connection failed (notifications may be lost).
    async fn listen_once(&self, pool: &PgPool, stop: &mut StopSignal) -> sqlx::Result<()> {
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(LEDGER_CHANGED_CHANNEL).await?;
        self.listening(true);
        loop {
            let notification = tokio::select! {
                _ = stop.stopped() => return Ok(()),
                received = listener.try_recv() => received?,
            };
            let Some(notification) = notification else {
                return Err(sqlx::Error::Protocol(
                    "listener connection closed".to_owned(),
                ));
            };
            match notification.payload().parse::<Uuid>() {
                Ok(company_id) => self.changed(company_id),
                // Not ours to interpret: be safe.
                Err(_) => self.listening(true),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Tables = CurrentTables<String>;

    fn table() -> Arc<String> {
        Arc::new("a table".to_owned())
    }

    fn day(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 1, d).expect("date")
    }

    #[test]
    fn nothing_is_kept_or_served_while_not_listening() {
        let tables = Tables::default();
        let company = Uuid::now_v7();
        assert_eq!(tables.stamp(company), None);
        tables.listening(true);
        let stamp = tables.stamp(company).expect("listening");
        tables.put(company, stamp, day(1), 3, table());
        assert!(tables.get(company, day(1)).is_some());
        tables.listening(false);
        assert!(tables.get(company, day(1)).is_none());
    }

    #[test]
    fn a_change_after_the_stamp_means_the_load_is_not_kept() {
        let tables = Tables::default();
        tables.listening(true);
        let company = Uuid::now_v7();
        let other = Uuid::now_v7();
        let stamp = tables.stamp(company).expect("listening");
        tables.changed(company);
        tables.put(company, stamp, day(1), 3, table());
        assert!(
            tables.get(company, day(1)).is_none(),
            "loaded before the change"
        );

        let stamp = tables.stamp(company).expect("listening");
        tables.put(company, stamp, day(1), 3, table());
        tables.changed(other);
        assert!(
            tables.get(company, day(1)).is_some(),
            "another company's change"
        );
        assert!(tables.get(company, day(2)).is_none(), "another date");
        tables.changed(company);
        assert!(
            tables.get(company, day(1)).is_none(),
            "dropped by its change"
        );
    }

    #[test]
    fn a_reconnect_invalidates_loads_that_began_before_it() {
        let tables = Tables::default();
        tables.listening(true);
        let company = Uuid::now_v7();
        let stamp = tables.stamp(company).expect("listening");
        tables.listening(false);
        tables.listening(true);
        tables.put(company, stamp, day(1), 1, table());
        assert!(tables.get(company, day(1)).is_none());
    }

    #[test]
    fn memory_stays_bounded() {
        let tables = Tables::default();
        tables.listening(true);
        let big = MAX_CACHED_ROWS / 2 + 1;
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        tables.put(a, tables.stamp(a).expect("stamp"), day(1), big, table());
        tables.put(b, tables.stamp(b).expect("stamp"), day(1), big, table());
        assert!(tables.get(b, day(1)).is_some());
        assert!(
            tables.get(a, day(1)).is_none(),
            "evicted to stay under the bound"
        );
        assert!(tables.state().rows <= MAX_CACHED_ROWS);
    }
}
