//! The relays running in this process, by database, so that a writer whose
//! database's leading relay runs beside it can wake that relay itself after
//! its commit instead of by NOTIFY. A NOTIFY holds a cluster-wide lock
//! through its transaction's commit, so notifying transactions commit one at
//! a time (measured here: 8 writers committed 6,080/s plain, 1,957/s with a
//! NOTIFY each).
//!
//! Only the relay that leads its database (holds the relay lock, see
//! [`crate::relay`]) is handed out: a writer in a process whose relay does
//! not lead keeps its NOTIFY, which the leader, wherever it runs, hears.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};

use sqlx::PgPool;
use tokio::sync::Notify;

/// A database as a process's pools name it: host, port, database.
type DatabaseKey = (String, u16, String);

static LOCAL_RELAYS: LazyLock<Mutex<HashMap<DatabaseKey, Vec<Weak<LocalRelay>>>>> =
    LazyLock::new(Default::default);

/// One running relay's wake-up and whether it leads its database.
#[derive(Debug, Default)]
pub struct LocalRelay {
    wake: Notify,
    leading: AtomicBool,
}

impl LocalRelay {
    /// Starts a round of the relay. A wake-up that comes while it is in a
    /// round is kept for its next wait, so none is lost.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    pub(crate) async fn woken(&self) {
        self.wake.notified().await;
    }

    pub(crate) fn set_leading(&self, leading: bool) {
        self.leading.store(leading, Ordering::Relaxed);
    }

    fn leads(&self) -> bool {
        self.leading.load(Ordering::Relaxed)
    }
}

fn database_key(pool: &PgPool) -> DatabaseKey {
    let options = pool.connect_options();
    (
        options.get_host().to_owned(),
        options.get_port(),
        options.get_database().unwrap_or_default().to_owned(),
    )
}

fn relays() -> std::sync::MutexGuard<'static, HashMap<DatabaseKey, Vec<Weak<LocalRelay>>>> {
    LOCAL_RELAYS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Registers a relay of `pool`'s database; it stays registered while the
/// returned handle lives.
pub(crate) fn register(pool: &PgPool) -> Arc<LocalRelay> {
    let relay = Arc::new(LocalRelay::default());
    let mut relays = relays();
    let entries = relays.entry(database_key(pool)).or_default();
    entries.retain(|entry| entry.strong_count() > 0);
    entries.push(Arc::downgrade(&relay));
    relay
}

/// The relay of `pool`'s database that runs in this process and leads, if
/// there is one. A writer that gets one may leave the NOTIFY out of its
/// transaction (`SET LOCAL qapmap.relay_wake = 'local'`, see
/// [`crate::notify_relay_sql`]) and must call [`LocalRelay::wake`] after its
/// commit. Should the relay lose the lead meanwhile (its connection lost),
/// the new leader still finds the rows within its poll interval.
pub fn leading(pool: &PgPool) -> Option<Arc<LocalRelay>> {
    relays()
        .get(&database_key(pool))?
        .iter()
        .filter_map(Weak::upgrade)
        .find(|relay| relay.leads())
}
