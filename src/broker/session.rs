//! Subscriber sessions: cursors that outlive a connection.
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

use super::keys::{ConnId, TopicKey};
use crate::timers::TimerKey;
use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscription {
    pub topic: TopicKey,
    pub acked: u64,
    pub delivered: u64,
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
    /// The wait deadline; `None` until the pull is actually parked.
    pub timer: Option<TimerKey>,
    /// Already in the broker's list of pulls to answer after this batch.
    pub queued: bool,
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
    /// In a `Vec` for pulls to walk in turn; `index` finds one by topic in
    /// O(1), so a session with thousands of topics costs no quadratic work.
    subscriptions: Vec<Subscription>,
    index: HashMap<TopicKey, usize>,
    pub parked: Option<Parked>,
    /// Armed while no connection holds the session.
    pub expiry: Option<TimerKey>,
    /// Where the next all-topics pull starts: just after the last topic that
    /// delivered to the previous one, so busy topics take turns.
    pub turn: usize,
}

impl Session {
    pub fn new(id: u64, conn: ConnId) -> Self {
        Session {
            id,
            conn: Some(conn),
            subscriptions: Vec::new(),
            index: HashMap::new(),
            parked: None,
            expiry: None,
            turn: 0,
        }
    }

    pub fn subscriptions(&self) -> &[Subscription] {
        &self.subscriptions
    }

    pub fn subscriptions_mut(&mut self) -> &mut [Subscription] {
        &mut self.subscriptions
    }

    /// Ends the session, handing back what it was subscribed to.
    pub fn into_subscriptions(self) -> Vec<Subscription> {
        self.subscriptions
    }

    pub fn subscription(&self, topic: TopicKey) -> Option<&Subscription> {
        self.subscriptions.get(self.position(topic)?)
    }

    /// Where the subscription to `topic` sits in `subscriptions()`.
    pub fn position(&self, topic: TopicKey) -> Option<usize> {
        self.index.get(&topic).copied()
    }

    pub fn subscription_mut(&mut self, topic: TopicKey) -> Option<&mut Subscription> {
        let index = self.position(topic)?;
        self.subscriptions.get_mut(index)
    }

    /// Adds a subscription to a topic not yet subscribed.
    pub fn add_subscription(&mut self, sub: Subscription) {
        self.index.insert(sub.topic, self.subscriptions.len());
        self.subscriptions.push(sub);
    }

    pub fn remove_subscription(&mut self, topic: TopicKey) -> Option<Subscription> {
        let index = self.index.remove(&topic)?;
        let removed = self.subscriptions.swap_remove(index);
        if let Some(moved) = self.subscriptions.get(index) {
            self.index.insert(moved.topic, index);
        }
        Some(removed)
    }

    /// Everything delivered but not acknowledged will be delivered again.
    pub fn rewind(&mut self) {
        for sub in &mut self.subscriptions {
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
            session.add_subscription(Subscription {
                topic,
                acked: topic as u64,
                delivered: topic as u64,
            });
        }
        assert_eq!(session.remove_subscription(1).map(|s| s.acked), Some(1));
        assert_eq!(session.remove_subscription(1), None);
        for topic in [0, 2, 3, 4] {
            assert_eq!(session.subscription(topic).map(|s| s.topic), Some(topic));
        }
        assert_eq!(session.subscriptions().len(), 4);
    }

    #[test]
    fn rewind_returns_in_flight_messages() {
        let mut session = Session::new(1, 0);
        session.add_subscription(Subscription {
            topic: 3,
            acked: 5,
            delivered: 9,
        });
        session.rewind();
        assert_eq!(session.subscription(3).map(|s| s.delivered), Some(5));
    }
}
