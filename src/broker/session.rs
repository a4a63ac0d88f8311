//! Subscriber sessions: cursors that outlive a connection, and the pulls
//! waiting on them.
//!
//! A session has, per subscribed topic, two offsets: `acked` (everything below
//! it is processed; the topic may forget it) and `delivered` (everything below
//! it was sent on the current connection). Between the two lie messages in
//! flight. Resuming a session on a new connection sets `delivered` back to
//! `acked`, which is what makes delivery at-least-once across reconnects while
//! staying exactly-once within one connection.
//!
//! The session lists its topics and each topic lists its sessions, so that
//! ending either costs only what it had (as Redis keeps client→channels beside
//! channel→clients).
//!
//! Beside the subscriptions, two indexes let a pull pay only for what it
//! takes (see [`super::waiting`] for who keeps them true):
//! - `ready`: the topics with something left to deliver (`delivered` below
//!   the topic's next offset), by rank — the order of subscribing — so that
//!   an all-topics pull walks only those, from its turn on.
//! - `in_flight`: the topics with messages delivered and not acknowledged,
//!   which an acknowledging pull and a resume touch, and nothing else.

use super::keys::{ConnId, TopicKey};
use super::keyset::KeySet;
use crate::timers::TimerKey;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscription {
    pub topic: TopicKey,
    pub acked: u64,
    pub delivered: u64,
    /// Its place in the session's order of subscriptions: unique within the
    /// session, and rising, so removals never reorder the rest.
    pub rank: u64,
}

/// A pull waiting for messages.
#[derive(Debug, Clone, Copy)]
pub struct Parked {
    pub conn: ConnId,
    pub request_id: u64,
    /// `None` waits on every subscribed topic.
    pub topic: Option<TopicKey>,
    pub max_messages: u32,
    pub max_bytes: u32,
    /// How long it may wait once nothing is ready for it (clamped).
    pub wait_ms: u32,
    /// The wait deadline; `None` until the pull is actually parked, and
    /// while its session waits for a disk read (see `super::disk`).
    pub timer: Option<TimerKey>,
}

impl Parked {
    pub fn covers(&self, topic: TopicKey) -> bool {
        self.topic.is_none_or(|t| t == topic)
    }
}

#[derive(Debug)]
pub struct Session {
    pub id: u64,
    pub conn: Option<ConnId>,
    /// In a `Vec` to hand back whole; `index` finds one by topic in O(1), so
    /// a session with thousands of topics costs no quadratic work.
    subscriptions: Vec<Subscription>,
    index: HashMap<TopicKey, usize>,
    /// The rank the next subscription gets.
    next_rank: u64,
    /// Rank to topic, for the subscriptions with something to deliver.
    ready: BTreeMap<u64, TopicKey>,
    /// Topics with `acked < delivered`.
    in_flight: KeySet<TopicKey>,
    /// The pulls waiting, oldest first: at most `max_waiting_pulls` once a
    /// request is done (see [`super::pull`] for the rules).
    pub parked: VecDeque<Parked>,
    /// Already in the broker's list of sessions whose parked pulls have
    /// something to take after this batch.
    pub queued: bool,
    /// Armed while no connection holds the session.
    pub expiry: Option<TimerKey>,
    /// How long it is kept without a connection, as REGISTER_SUBSCRIBER
    /// asked (already clamped); `None` follows `--session-timeout`, so a
    /// session that asked nothing follows the broker's setting across
    /// restarts.
    pub timeout: Option<Duration>,
    /// The rank where the next all-topics pull starts: just after the last
    /// topic that delivered to the previous one, so busy topics take turns.
    pub turn: u64,
    /// The user who created the session when the broker requires users
    /// (`None` without `--users`); only that user may resume it.
    pub owner: Option<Box<str>>,
    /// Messages read back from the log for one topic, and the read in
    /// flight (see `super::disk`).
    pub disk: Option<Box<super::disk::DiskCursor>>,
}

impl Session {
    pub fn new(id: u64, conn: ConnId) -> Self {
        Session {
            id,
            conn: Some(conn),
            subscriptions: Vec::new(),
            index: HashMap::new(),
            next_rank: 0,
            ready: BTreeMap::new(),
            in_flight: KeySet::default(),
            parked: VecDeque::new(),
            queued: false,
            expiry: None,
            timeout: None,
            owner: None,
            turn: 0,
            disk: None,
        }
    }

    /// A session rebuilt from the log: no connection holds it yet.
    pub fn detached(id: u64) -> Self {
        let mut session = Session::new(id, 0);
        session.conn = None;
        session
    }

    /// Recovery: the cursor of `topic` stands at `offset`, acknowledged and
    /// delivered (nothing is in flight after a restart). Returns where the
    /// acknowledged offset was, if it moved.
    pub fn recover_cursor(&mut self, topic: TopicKey, offset: u64) -> Option<u64> {
        let sub = self.subscription_mut(topic)?;
        if offset <= sub.acked {
            return None;
        }
        sub.delivered = offset;
        Some(std::mem::replace(&mut sub.acked, offset))
    }

    pub fn subscriptions(&self) -> &[Subscription] {
        &self.subscriptions
    }

    /// Ends the session, handing back what it was subscribed to.
    pub fn into_subscriptions(self) -> Vec<Subscription> {
        self.subscriptions
    }

    pub fn subscription(&self, topic: TopicKey) -> Option<&Subscription> {
        self.subscriptions.get(*self.index.get(&topic)?)
    }

    fn subscription_mut(&mut self, topic: TopicKey) -> Option<&mut Subscription> {
        let index = *self.index.get(&topic)?;
        self.subscriptions.get_mut(index)
    }

    /// Subscribes to a topic not yet subscribed, from `offset` on, which is
    /// where the topic stands: nothing is ready.
    pub fn add_subscription(&mut self, topic: TopicKey, offset: u64) {
        self.index.insert(topic, self.subscriptions.len());
        self.subscriptions.push(Subscription {
            topic,
            acked: offset,
            delivered: offset,
            rank: self.next_rank,
        });
        self.next_rank += 1;
    }

    pub fn remove_subscription(&mut self, topic: TopicKey) -> Option<Subscription> {
        let index = self.index.remove(&topic)?;
        let removed = self.subscriptions.swap_remove(index);
        if let Some(moved) = self.subscriptions.get(index) {
            self.index.insert(moved.topic, index);
        }
        self.ready.remove(&removed.rank);
        self.in_flight.remove(topic);
        Some(removed)
    }

    /// `topic` has something to deliver again.
    pub fn set_ready(&mut self, topic: TopicKey) {
        if let Some(rank) = self.subscription(topic).map(|sub| sub.rank) {
            self.ready.insert(rank, topic);
        }
    }

    /// Everything on `topic` was delivered.
    pub fn set_caught_up(&mut self, topic: TopicKey) {
        if let Some(rank) = self.subscription(topic).map(|sub| sub.rank) {
            self.ready.remove(&rank);
        }
    }

    pub fn has_in_flight(&self, topic: TopicKey) -> bool {
        self.in_flight.contains(topic)
    }

    pub fn is_ready(&self, topic: TopicKey) -> bool {
        self.subscription(topic)
            .is_some_and(|sub| self.ready.contains_key(&sub.rank))
    }

    /// The ready topics in rank order, starting at rank `from` and wrapping
    /// round: O(log n) to start, then O(1) per topic taken.
    pub fn ready_from(&self, from: u64) -> impl Iterator<Item = TopicKey> + '_ {
        self.ready
            .range(from..)
            .chain(self.ready.range(..from))
            .map(|(_, &topic)| topic)
    }

    /// `count` more messages of `topic` were sent; returns the new
    /// `delivered`.
    pub fn record_delivery(&mut self, topic: TopicKey, count: u64) -> Option<u64> {
        let sub = self.subscription_mut(topic)?;
        sub.delivered += count;
        let delivered = sub.delivered;
        if count > 0 {
            self.in_flight.insert(topic);
        }
        Some(delivered)
    }

    /// Moves the acknowledged offset of `topic` up to `offset`, which the
    /// caller checked is at most `delivered`; returns where it was, if it
    /// moved.
    pub fn acknowledge(&mut self, topic: TopicKey, offset: u64) -> Option<u64> {
        let sub = self.subscription_mut(topic)?;
        if offset <= sub.acked {
            return None;
        }
        let from = std::mem::replace(&mut sub.acked, offset);
        if sub.acked >= sub.delivered {
            self.in_flight.remove(topic);
        }
        Some(from)
    }

    /// Takes the topics with messages in flight out of the index, for the
    /// caller to acknowledge or rewind each; put the set back with
    /// [`Session::restore_in_flight`] to keep its allocation.
    pub fn take_in_flight(&mut self) -> KeySet<TopicKey> {
        std::mem::take(&mut self.in_flight)
    }

    pub fn restore_in_flight(&mut self, emptied: KeySet<TopicKey>) {
        debug_assert!(emptied.is_empty() && self.in_flight.is_empty());
        self.in_flight = emptied;
    }

    /// Everything delivered but not acknowledged on `topic` will be
    /// delivered again (the caller took it out of `in_flight`).
    /// Delivery of `topic` moves on to `to`, past offsets that hold no
    /// message; so does the acknowledged offset if nothing was in flight.
    /// Returns where the acknowledged offset was, if it moved.
    pub fn pass_gap(&mut self, topic: TopicKey, to: u64) -> Option<u64> {
        let sub = self.subscription_mut(topic)?;
        if to <= sub.delivered {
            return None;
        }
        let moved = sub.acked == sub.delivered;
        sub.delivered = to;
        moved.then(|| std::mem::replace(&mut sub.acked, to))
    }

    /// SEEK: the cursor of `topic` stands at `offset`, acknowledged and
    /// delivered, nothing in flight. Returns where the acknowledged offset
    /// was.
    pub fn set_cursor(&mut self, topic: TopicKey, offset: u64) -> Option<u64> {
        let sub = self.subscription_mut(topic)?;
        sub.delivered = offset;
        let from = std::mem::replace(&mut sub.acked, offset);
        self.in_flight.remove(topic);
        Some(from)
    }

    pub fn rewind(&mut self, topic: TopicKey) {
        if let Some(sub) = self.subscription_mut(topic) {
            sub.delivered = sub.acked;
        }
    }
}

/// Session ids: 64 bits drawn from the operating system's random source
/// (`getrandom`: `getrandom(2)` on Linux), so that knowing one's own ids says
/// nothing about anyone else's. The broker rejects an id already in use; 0 is
/// never given (clients may use it as "none").
///
/// The source is a plain function so that tests can make it fail; when it
/// does, [`IdGenerator::next_id`] says so (`None`) instead of falling back to
/// something predictable.
#[derive(Debug)]
pub struct IdGenerator {
    source: fn() -> Option<u64>,
}

impl IdGenerator {
    pub fn new(source: fn() -> Option<u64>) -> Self {
        IdGenerator { source }
    }

    /// Ids from the operating system.
    pub fn from_os() -> Self {
        Self::new(os_random)
    }

    /// A non-zero random id, or `None` if the source failed.
    pub fn next_id(&mut self) -> Option<u64> {
        // Zero comes once in 2^64 draws; a second draw is enough.
        (0..2).find_map(|_| (self.source)().filter(|&id| id != 0))
    }
}

/// Eight bytes from the operating system's random source.
fn os_random() -> Option<u64> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).ok()?;
    Some(u64::from_le_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_are_distinct_and_not_sequential() {
        let mut ids = IdGenerator::from_os();
        let taken: Vec<u64> = (0..10_000).filter_map(|_| ids.next_id()).collect();
        assert_eq!(taken.len(), 10_000);
        assert_eq!(taken.iter().collect::<HashSet<_>>().len(), taken.len());
        assert!(taken.windows(2).all(|w| w[1] != w[0].wrapping_add(1)));
        assert!(!taken.contains(&0));
    }

    #[test]
    fn a_failing_source_gives_no_id_and_zero_is_never_given() {
        assert_eq!(IdGenerator::new(|| None).next_id(), None);
        assert_eq!(IdGenerator::new(|| Some(0)).next_id(), None);
    }

    #[test]
    fn subscriptions_are_found_by_topic_after_removals() {
        let mut session = Session::new(1, 0);
        for topic in 0..5 {
            session.add_subscription(topic, topic as u64);
        }
        assert_eq!(session.remove_subscription(1).map(|s| s.acked), Some(1));
        assert_eq!(session.remove_subscription(1), None);
        for topic in [0, 2, 3, 4] {
            assert_eq!(session.subscription(topic).map(|s| s.topic), Some(topic));
        }
        assert_eq!(session.subscriptions().len(), 4);
    }

    #[test]
    fn ready_topics_come_in_subscription_order_from_the_turn() {
        let mut session = Session::new(1, 0);
        for topic in [7, 3, 9, 1] {
            session.add_subscription(topic, 0);
        }
        for topic in [1, 7, 9] {
            session.set_ready(topic);
        }
        let from =
            |session: &Session, rank| -> Vec<TopicKey> { session.ready_from(rank).collect() };
        assert_eq!(from(&session, 0), vec![7, 9, 1]);
        assert_eq!(from(&session, 2), vec![9, 1, 7]);
        assert_eq!(from(&session, 4), vec![7, 9, 1]);
        // Removing a subscription does not reorder the others.
        session.remove_subscription(7);
        session.set_caught_up(1);
        assert_eq!(from(&session, 0), vec![9]);
        assert!(!session.is_ready(1) && session.is_ready(9));
    }

    #[test]
    fn in_flight_topics_are_those_delivered_beyond_the_ack() {
        let mut session = Session::new(1, 0);
        session.add_subscription(3, 5);
        session.add_subscription(4, 0);
        assert_eq!(session.record_delivery(3, 4), Some(9));
        assert_eq!(session.acknowledge(3, 7), Some(5));
        assert_eq!(session.acknowledge(3, 6), None);
        let mut in_flight = session.take_in_flight();
        assert_eq!(in_flight.drain().collect::<Vec<_>>(), vec![3]);
        session.restore_in_flight(in_flight);
        session.rewind(3);
        assert_eq!(session.subscription(3).map(|s| s.delivered), Some(7));
        session.record_delivery(4, 2);
        assert_eq!(session.acknowledge(4, 2), Some(0));
        assert!(session.take_in_flight().is_empty());
    }
}
