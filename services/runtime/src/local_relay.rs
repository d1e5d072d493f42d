//! The relays running in this process, by database, so that a writer whose
//! database's relay runs beside it can wake that relay itself after its
//! commit instead of by NOTIFY. A NOTIFY holds a cluster-wide lock through
//! its transaction's commit, so notifying transactions commit one at a time
//! (measured here with pgbench, 8 clients, one insert per transaction:
//! 16,038 commits/s plain, 5,317/s with a NOTIFY each).
//!
//! Relays in other processes hear nothing of such a commit; they find its
//! rows at their next round or poll. A local relay that finds the round
//! lock taken by another relay looks again shortly (see [`crate::relay`]).
//!
//! A relay also keeps here the ids of rows it published whose marks
//! (`published_at`) are not written yet. A consumer batch of the same
//! database borrows them ([`LocalRelay::lend_marks`]) and writes them in
//! its own transaction, so on a busy service the marks cost no commit of
//! their own; the relay commits them itself only when no batch took them
//! within [`crate::relay::MARK_DELAY`].

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, Weak};
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::Notify;
use tokio::time::Instant;

/// A database as a process's pools name it: host, port, database.
type DatabaseKey = (String, u16, String);

type Registry = HashMap<DatabaseKey, Vec<Weak<LocalRelay>>>;

static LOCAL_RELAYS: LazyLock<Mutex<Registry>> = LazyLock::new(Default::default);

/// One running relay's wake-up, and its published rows still to mark.
#[derive(Debug, Default)]
pub struct LocalRelay {
    wake: Notify,
    marks: Mutex<MarkBook>,
}

/// Published rows not marked yet: waiting, or lent to a consumer batch
/// whose transaction writes them.
#[derive(Debug, Default)]
struct MarkBook {
    waiting: Vec<i64>,
    /// When the oldest waiting id was published.
    since: Option<Instant>,
    /// Some waiting ids came back from a failed write: due at once.
    overdue: bool,
    lent: HashMap<u64, Vec<i64>>,
    next_loan: u64,
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

    fn book(&self) -> MutexGuard<'_, MarkBook> {
        self.marks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Rows just published, to be marked.
    pub(crate) fn add_marks(&self, ids: Vec<i64>) {
        if ids.is_empty() {
            return;
        }
        let mut book = self.book();
        book.since.get_or_insert_with(Instant::now);
        book.waiting.extend(ids);
    }

    /// Every published row not marked yet (waiting or lent): a claim leaves
    /// them out, so they are not published again.
    pub(crate) fn unmarked(&self) -> Vec<i64> {
        let book = self.book();
        let mut ids = book.waiting.clone();
        book.lent.values().for_each(|lent| ids.extend(lent));
        ids
    }

    /// How long until the waiting marks are due (`None` when none wait):
    /// zero once the oldest has waited `delay`, or when `max` wait.
    pub(crate) fn marks_due_in(&self, delay: Duration, max: usize) -> Option<Duration> {
        let book = self.book();
        let since = book.since?;
        if book.overdue || book.waiting.len() >= max {
            return Some(Duration::ZERO);
        }
        Some(delay.saturating_sub(since.elapsed()))
    }

    /// Takes the waiting marks, for the relay to write itself.
    pub(crate) fn take_marks(&self) -> Vec<i64> {
        let mut book = self.book();
        book.since = None;
        book.overdue = false;
        std::mem::take(&mut book.waiting)
    }

    /// Puts back marks whose writing failed: due at once.
    pub(crate) fn return_marks(&self, ids: Vec<i64>) {
        if ids.is_empty() {
            return;
        }
        let mut book = self.book();
        book.since.get_or_insert_with(Instant::now);
        book.overdue = true;
        book.waiting.extend(ids);
    }

    /// Lends the waiting marks to a transaction that writes them; `None`
    /// when none wait. Until the loan is settled (its transaction
    /// committed) the ids stay out of claims; a loan dropped unsettled
    /// gives them back, due at once.
    pub fn lend_marks(self: &Arc<Self>) -> Option<MarksLoan> {
        let mut book = self.book();
        if book.waiting.is_empty() {
            return None;
        }
        let ids = std::mem::take(&mut book.waiting);
        book.since = None;
        book.overdue = false;
        let loan = book.next_loan;
        book.next_loan += 1;
        book.lent.insert(loan, ids.clone());
        Some(MarksLoan {
            relay: Arc::clone(self),
            loan,
            ids,
            settled: false,
        })
    }
}

/// Marks lent to a transaction ([`LocalRelay::lend_marks`]).
#[derive(Debug)]
pub struct MarksLoan {
    relay: Arc<LocalRelay>,
    loan: u64,
    ids: Vec<i64>,
    settled: bool,
}

impl MarksLoan {
    pub fn ids(&self) -> &[i64] {
        &self.ids
    }

    /// The transaction that wrote the marks committed.
    pub fn settle(mut self) {
        self.relay.book().lent.remove(&self.loan);
        self.settled = true;
    }
}

impl Drop for MarksLoan {
    fn drop(&mut self) {
        if !self.settled {
            let ids = self.relay.book().lent.remove(&self.loan);
            self.relay.return_marks(ids.unwrap_or_default());
        }
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

fn registry() -> MutexGuard<'static, Registry> {
    LOCAL_RELAYS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Registers a relay of `pool`'s database; it stays registered while the
/// returned handle lives.
pub(crate) fn register(pool: &PgPool) -> Arc<LocalRelay> {
    let relay = Arc::new(LocalRelay::default());
    let mut registry = registry();
    let entries = registry.entry(database_key(pool)).or_default();
    entries.retain(|entry| entry.strong_count() > 0);
    entries.push(Arc::downgrade(&relay));
    relay
}

/// The relays of `pool`'s database running in this process (empty when
/// none does). A writer that gets some may leave the NOTIFY out of its
/// transaction (`SET LOCAL qapmap.relay_wake = 'local'`, see
/// [`crate::notify_relay_sql`]) and must wake them all after its commit.
pub fn running(pool: &PgPool) -> Vec<Arc<LocalRelay>> {
    registry()
        .get(&database_key(pool))
        .map(|entries| entries.iter().filter_map(Weak::upgrade).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DELAY: Duration = Duration::from_secs(60);

    #[test]
    fn lent_marks_stay_out_of_claims_until_settled() {
        let relay = Arc::new(LocalRelay::default());
        relay.add_marks(vec![1, 2]);
        let loan = relay.lend_marks().expect("marks wait");
        assert_eq!(loan.ids(), [1, 2]);
        relay.add_marks(vec![3]);
        let mut unmarked = relay.unmarked();
        unmarked.sort_unstable();
        assert_eq!(unmarked, [1, 2, 3], "lent ids are still left out of claims");
        loan.settle();
        assert_eq!(relay.unmarked(), [3]);
        assert_eq!(relay.take_marks(), [3]);
        assert!(relay.lend_marks().is_none(), "nothing left to lend");
        assert_eq!(relay.marks_due_in(DELAY, 100), None);
    }

    #[test]
    fn a_loan_dropped_unsettled_gives_its_marks_back_due_at_once() {
        let relay = Arc::new(LocalRelay::default());
        relay.add_marks(vec![7]);
        assert!(relay.marks_due_in(DELAY, 100).expect("one waits") > Duration::ZERO);
        drop(relay.lend_marks().expect("marks wait"));
        assert_eq!(relay.unmarked(), [7]);
        assert_eq!(relay.marks_due_in(DELAY, 100), Some(Duration::ZERO));
        assert_eq!(relay.take_marks(), [7]);
        assert_eq!(relay.marks_due_in(DELAY, 100), None);
    }
}
