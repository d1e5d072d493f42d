//! The later messages of a partition key, held in memory behind a message
//! of that key that will be retried, so they cannot overtake it.
//!
//! Why not nak them as well: a nak spends a JetStream delivery, so messages
//! queued behind a long-failing one would use up their deliveries with it
//! (dead-lettered without ever running). And each nak'd message comes back
//! on its own timer, so a pull can meet the failed message alone while the
//! next pull brings the ones behind it. A message of the key that arrives
//! later, in another batch, would not even know there is one to wait for.
//!
//! Instead the active worker keeps them unacknowledged (progress acks stop
//! JetStream from redelivering them) until the failed message comes back.
//! They then join its batch, behind it, in stream order. If it retries
//! again they are held again; once it lands or becomes a dead letter, they
//! go on. A hold whose failed message does not come back in time (its nak
//! lost, say) lets its messages go at [`Hold::release_at`]. When the
//! worker stops or loses its lock, it naks what it holds, timed to come
//! back just after the failed message.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long after the failed message is due the held ones come back when
/// a worker gives them back (stop, lost lock).
pub(crate) const GIVE_BACK_MARGIN: Duration = Duration::from_millis(500);
/// Extra wait for a failed message beyond its retry delay and the ack wait
/// before its hold lets the others go.
const RELEASE_SLACK: Duration = Duration::from_secs(1);

/// What the holds need to know of a message.
pub(crate) trait Keyed {
    fn partition_key(&self) -> Option<&str>;
    fn message_id(&self) -> &str;
    /// Its stream sequence: the order of the key's messages.
    fn sequence(&self) -> u64;
}

/// A key's messages held behind the one to retry (the blocker).
#[derive(Debug)]
struct Hold<M> {
    blocker_id: String,
    blocker_sequence: u64,
    /// When the blocker's retry is due.
    blocker_due: Instant,
    /// When the held messages go on even if the blocker has not come back.
    release_at: Instant,
    /// In stream order.
    followers: Vec<M>,
}

/// What [`KeyHolds::admit`] lets through.
#[derive(Debug)]
pub(crate) struct Admitted<M> {
    /// To handle now, in stream order.
    pub(crate) batch: Vec<M>,
    /// Messages of held keys that found the holds full: to nak with the
    /// delay given, so they come back after the message they wait for.
    pub(crate) overflow: Vec<(M, Duration)>,
    /// Incoming messages newly held.
    pub(crate) held: usize,
}

/// The holds of one active worker.
#[derive(Debug)]
pub(crate) struct KeyHolds<M> {
    holds: HashMap<String, Hold<M>>,
    held: usize,
    /// The most messages held at once; past it, a message is nak'd as
    /// before (JetStream's `max_ack_pending` counts the held ones).
    limit: usize,
}

impl<M: Keyed> KeyHolds<M> {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            holds: HashMap::new(),
            held: 0,
            limit,
        }
    }

    /// Messages held now.
    pub(crate) fn held(&self) -> usize {
        self.held
    }

    /// The batch to handle, in stream order: the incoming messages that no
    /// hold keeps, with the held messages of every key whose blocker came
    /// back in `incoming` or whose hold ran out. A message of a held key
    /// later than its blocker is held instead, or when the holds are full
    /// given back with a delay to be nak'd with (its blocker's due time).
    pub(crate) fn admit(&mut self, incoming: Vec<M>, now: Instant) -> Admitted<M> {
        let mut batch = Vec::with_capacity(incoming.len());
        let mut overflow = Vec::new();
        let mut newly_held = 0;
        let released: Vec<String> = self
            .holds
            .iter()
            .filter(|(_, hold)| {
                hold.release_at <= now
                    || incoming
                        .iter()
                        .any(|message| message.message_id() == hold.blocker_id)
            })
            .map(|(key, _)| key.clone())
            .collect();
        for key in released {
            if let Some(hold) = self.holds.remove(&key) {
                if hold.release_at <= now && !hold.followers.is_empty() {
                    tracing::warn!(partition_key = %key, blocker = %hold.blocker_id, held = hold.followers.len(), "the message to retry did not come back in time; its key's later messages go on");
                }
                self.held -= hold.followers.len();
                batch.extend(hold.followers);
            }
        }
        for message in incoming {
            match message
                .partition_key()
                .and_then(|key| self.holds.get_mut(key))
            {
                Some(hold) if message.sequence() > hold.blocker_sequence => {
                    if self.held < self.limit {
                        let added = hold.keep(message);
                        self.held += added;
                        newly_held += added;
                    } else {
                        let delay = hold.blocker_due.saturating_duration_since(now);
                        overflow.push((message, delay + GIVE_BACK_MARGIN));
                    }
                }
                _ => batch.push(message),
            }
        }
        // Stable: a message and its redelivery keep their arrival order.
        batch.sort_by_key(Keyed::sequence);
        Admitted {
            batch,
            overflow,
            held: newly_held,
        }
    }

    /// `message` will be retried after `delay`: it holds its key's later
    /// messages from now on. Given back to be nak'd, unless it is itself
    /// behind an earlier message of its key held already (a batch whose
    /// commit failed retries all its messages): then it is held, and
    /// `None` is returned.
    pub(crate) fn retry(
        &mut self,
        message: M,
        delay: Duration,
        ack_wait: Duration,
        now: Instant,
    ) -> Option<M> {
        let Some(key) = message.partition_key() else {
            return Some(message);
        };
        let blocker_due = now + delay;
        let release_at = blocker_due + ack_wait + RELEASE_SLACK;
        match self.holds.get_mut(key) {
            None => {
                let hold = Hold {
                    blocker_id: message.message_id().to_owned(),
                    blocker_sequence: message.sequence(),
                    blocker_due,
                    release_at,
                    followers: Vec::new(),
                };
                self.holds.insert(key.to_owned(), hold);
                Some(message)
            }
            // An earlier message of the key fails too: it becomes the one
            // to wait for, and the former blocker is held when it returns.
            Some(hold)
                if message.sequence() <= hold.blocker_sequence || self.held >= self.limit =>
            {
                if message.sequence() < hold.blocker_sequence {
                    hold.blocker_id = message.message_id().to_owned();
                    hold.blocker_sequence = message.sequence();
                    hold.blocker_due = blocker_due;
                    hold.release_at = release_at;
                }
                Some(message)
            }
            Some(hold) => {
                self.held += hold.keep(message);
                None
            }
        }
    }

    /// Holds `message` behind the message of its key that will be retried.
    /// Given back (to be nak'd) when its key has no hold or the holds are
    /// full.
    pub(crate) fn defer(&mut self, message: M) -> Option<M> {
        if self.held >= self.limit {
            return Some(message);
        }
        match message
            .partition_key()
            .and_then(|key| self.holds.get_mut(key))
        {
            Some(hold) if message.sequence() > hold.blocker_sequence => {
                self.held += hold.keep(message);
                None
            }
            _ => Some(message),
        }
    }

    /// True when a hold has run out, so its messages should be handled
    /// even if nothing new arrives.
    pub(crate) fn any_due(&self, now: Instant) -> bool {
        self.holds.values().any(|hold| hold.release_at <= now)
    }

    /// Every message held, for progress acks.
    pub(crate) fn held_messages(&self) -> impl Iterator<Item = &M> {
        self.holds.values().flat_map(|hold| hold.followers.iter())
    }

    /// Empties the holds: each message with the delay after which it
    /// should come back (just after its blocker is due).
    pub(crate) fn give_back(&mut self, now: Instant) -> Vec<(M, Duration)> {
        self.held = 0;
        self.holds
            .drain()
            .flat_map(|(_, hold)| {
                let delay = hold.blocker_due.saturating_duration_since(now) + GIVE_BACK_MARGIN;
                hold.followers
                    .into_iter()
                    .map(move |message| (message, delay))
            })
            .collect()
    }
}

impl<M: Keyed> Hold<M> {
    /// Adds `message` in stream order; a redelivery of a message held
    /// already replaces it (the newest delivery is the one to answer).
    /// Returns how many more messages are held (0 or 1).
    fn keep(&mut self, message: M) -> usize {
        if let Some(same) = self
            .followers
            .iter_mut()
            .find(|held| held.message_id() == message.message_id())
        {
            *same = message;
            return 0;
        }
        let at = self
            .followers
            .partition_point(|held| held.sequence() < message.sequence());
        self.followers.insert(at, message);
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq)]
    struct Message {
        key: &'static str,
        id: String,
        sequence: u64,
    }

    impl Keyed for Message {
        fn partition_key(&self) -> Option<&str> {
            Some(self.key)
        }
        fn message_id(&self) -> &str {
            &self.id
        }
        fn sequence(&self) -> u64 {
            self.sequence
        }
    }

    fn message(key: &'static str, sequence: u64) -> Message {
        Message {
            key,
            id: format!("{key}-{sequence}"),
            sequence,
        }
    }

    fn sequences(batch: &[Message]) -> Vec<u64> {
        batch.iter().map(|message| message.sequence).collect()
    }

    const DELAY: Duration = Duration::from_millis(500);
    const ACK_WAIT: Duration = Duration::from_secs(5);

    #[test]
    fn later_messages_of_a_key_wait_for_its_failed_message_and_join_its_batch_in_order() {
        let now = Instant::now();
        let mut holds = KeyHolds::new(10);
        let batch = holds
            .admit(vec![message("a", 1), message("b", 2)], now)
            .batch;
        assert_eq!(sequences(&batch), [1, 2]);
        assert!(holds.retry(message("a", 1), DELAY, ACK_WAIT, now).is_some());

        // Later messages of "a" arrive without it: held. "b" goes on.
        let admitted = holds.admit(vec![message("a", 4), message("b", 5), message("a", 3)], now);
        assert_eq!(sequences(&admitted.batch), [5]);
        assert_eq!(admitted.held, 2);
        assert_eq!(holds.held(), 2);

        // It comes back: all three, in stream order.
        let batch = holds
            .admit(vec![message("a", 1), message("b", 6)], now + DELAY)
            .batch;
        assert_eq!(sequences(&batch), [1, 3, 4, 6]);
        assert_eq!(holds.held(), 0);
    }

    #[test]
    fn messages_deferred_in_the_failed_messages_batch_are_held_not_given_back() {
        let now = Instant::now();
        let mut holds = KeyHolds::new(10);
        assert!(holds.retry(message("a", 1), DELAY, ACK_WAIT, now).is_some());
        assert_eq!(holds.defer(message("a", 2)), None);
        // Without a hold on its key, a deferral is nak'd as before.
        assert_eq!(holds.defer(message("b", 3)), Some(message("b", 3)));
        assert_eq!(holds.held(), 1);
    }

    #[test]
    fn an_earlier_failed_message_becomes_the_one_to_wait_for() {
        let now = Instant::now();
        let mut holds = KeyHolds::new(10);
        // A failed commit retries every message of the batch, in order.
        assert!(holds.retry(message("a", 1), DELAY, ACK_WAIT, now).is_some());
        assert_eq!(holds.retry(message("a", 2), DELAY, ACK_WAIT, now), None);
        // An earlier message of the key, redelivered late, fails too.
        let batch = holds.admit(vec![message("a", 0)], now).batch;
        assert_eq!(sequences(&batch), [0]);
        assert!(holds.retry(message("a", 0), DELAY, ACK_WAIT, now).is_some());
        // The former blocker returns first: it is held too.
        assert!(
            holds
                .admit(vec![message("a", 1)], now + DELAY)
                .batch
                .is_empty()
        );
        let batch = holds.admit(vec![message("a", 0)], now + DELAY).batch;
        assert_eq!(sequences(&batch), [0, 1, 2]);
    }

    #[test]
    fn a_redelivery_of_a_held_message_replaces_it() {
        let now = Instant::now();
        let mut holds = KeyHolds::new(10);
        holds.retry(message("a", 1), DELAY, ACK_WAIT, now);
        assert!(holds.admit(vec![message("a", 2)], now).batch.is_empty());
        assert!(holds.admit(vec![message("a", 2)], now).batch.is_empty());
        assert_eq!(holds.held(), 1);
    }

    #[test]
    fn a_hold_whose_message_does_not_come_back_lets_the_others_go() {
        let now = Instant::now();
        let mut holds = KeyHolds::new(10);
        holds.retry(message("a", 1), DELAY, ACK_WAIT, now);
        assert_eq!(holds.defer(message("a", 2)), None);
        assert!(!holds.any_due(now + DELAY + ACK_WAIT));
        let late = now + DELAY + ACK_WAIT + RELEASE_SLACK;
        assert!(holds.any_due(late));
        assert_eq!(sequences(&holds.admit(Vec::new(), late).batch), [2]);
        assert_eq!(holds.held(), 0);
    }

    #[test]
    fn past_the_limit_messages_are_given_back_to_be_nakd() {
        let now = Instant::now();
        let mut holds = KeyHolds::new(1);
        holds.retry(message("a", 1), DELAY, ACK_WAIT, now);
        assert_eq!(holds.defer(message("a", 2)), None);
        assert_eq!(holds.defer(message("a", 3)), Some(message("a", 3)));
        assert_eq!(
            holds.retry(message("a", 4), DELAY, ACK_WAIT, now),
            Some(message("a", 4))
        );
        // Arriving later, it is nak'd to come back after its blocker.
        let admitted = holds.admit(vec![message("a", 5)], now + Duration::from_millis(100));
        assert!(admitted.batch.is_empty());
        assert_eq!(
            admitted.overflow,
            [(
                message("a", 5),
                Duration::from_millis(400) + GIVE_BACK_MARGIN
            )]
        );
    }

    #[test]
    fn given_back_messages_come_back_just_after_their_blocker() {
        let now = Instant::now();
        let mut holds = KeyHolds::new(10);
        holds.retry(message("a", 1), DELAY, ACK_WAIT, now);
        holds.defer(message("a", 2));
        let given = holds.give_back(now + Duration::from_millis(200));
        assert_eq!(
            given,
            [(
                message("a", 2),
                Duration::from_millis(300) + GIVE_BACK_MARGIN
            )]
        );
        assert_eq!(holds.held(), 0);
        assert_eq!(holds.held_messages().count(), 0);
    }
}
