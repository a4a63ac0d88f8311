//! Who has something to deliver, kept as two indexes so that a request pays
//! for what it touches and not for the size of the tables.
//!
//! Every subscription (session `s`, topic `t`) is in exactly one of two
//! places:
//! - `t.waiting` holds `s`: everything on `t` was delivered to `s`
//!   (`delivered == t.next_offset()`), and the next publish to `t` must say so;
//! - `s.ready` holds `t`: `delivered < t.next_offset()`, there is something to
//!   deliver, and a pull will find it there.
//!
//! The moves between them, and who pays for each:
//! - SUBSCRIBE puts `s` in `t.waiting`: O(1).
//! - PUBLISH to `t` moves all of `t.waiting` to their sessions' `ready`
//!   ([`Broker::wake_subscribers`]) and queues the parked pulls among them.
//!   A subscriber behind already is not looked at, so ten thousand detached
//!   sessions cost the first publish after they caught up and nothing after.
//!   Each entry drained was put there by a SUBSCRIBE, or by a pull that
//!   delivered that topic's last message ([`Broker::record_delivery`]), or is
//!   a parked pull on `t`: publish is O(1) plus O(parked pulls on `t`),
//!   amortised over the requests that caught up.
//! - A pull that delivers up to `t.next_offset()` moves `t` back to
//!   `t.waiting`: O(1) per topic in its reply.
//! - A resume rewinds only the topics with messages in flight
//!   ([`Broker::rewind`]), each of which a pull delivered: O(1) each.
//! - UNSUBSCRIBE, expiry and topic deletion remove the entry wherever it is:
//!   O(1) per subscription ended ([`super::keyset::KeySet`], and a `BTreeMap`
//!   by rank on the session's side, O(log n)).
//!
//! So an all-topics pull walks `s.ready` from its turn and every topic it
//! looks at has a message for it, but for the one that ends the reply when it
//! is full: O(log n + topics in the reply). An empty pull on a session with a
//! hundred thousand idle topics is one look at an empty map.
//!
//! `work` on the broker counts the entries these walks visit, for tests that
//! check the bounds by counting rather than timing.

use super::Broker;
use super::keys::{SessionKey, TopicKey};

impl Broker {
    /// A publish appended to `topic`: its caught-up subscribers are behind
    /// now, and the parked pulls among them are queued to be answered at the
    /// end of the batch.
    pub(super) fn wake_subscribers(&mut self, topic: TopicKey) {
        let Some(entry) = self.topics.get_mut(topic) else {
            return;
        };
        for session_key in entry.waiting.drain() {
            self.work += 1;
            let Some(session) = self.sessions.get_mut(session_key) else {
                continue;
            };
            session.set_ready(topic);
            // At most `max_waiting_pulls` to look at: O(1) per session woken.
            if !session.queued && session.parked.iter().any(|p| p.covers(topic)) {
                session.queued = true;
                self.ready.push(session_key);
            }
        }
    }

    /// `count` offsets of `topic` went out to the session (messages, and
    /// those reported lost to retention); if that was all
    /// of them, the session waits on the topic again.
    pub(super) fn record_delivery(&mut self, session_key: SessionKey, topic: TopicKey, count: u64) {
        self.work += 1;
        let Some(session) = self.sessions.get_mut(session_key) else {
            return;
        };
        let Some(delivered) = session.record_delivery(topic, count) else {
            return;
        };
        let Some(entry) = self.topics.get_mut(topic) else {
            return;
        };
        // A reply stops before a gap: the next one starts after it.
        let delivered = entry.past_gap(delivered);
        session.pass_gap(topic, delivered);
        if delivered >= entry.next_offset() {
            session.set_caught_up(topic);
            entry.waiting.insert(session_key);
        }
    }

    /// The subscribers of `topic` caught up at a gap's start (a lost
    /// write's) move past it, and stay caught up.
    pub(super) fn pass_gap_waiting(&mut self, topic: TopicKey) {
        let Some(entry) = self.topics.get_mut(topic) else {
            return;
        };
        let keys: Vec<SessionKey> = entry.waiting.iter().collect();
        let mut moved = Vec::new();
        for key in keys {
            self.work += 1;
            let Some(session) = self.sessions.get_mut(key) else {
                continue;
            };
            let Some(delivered) = session.subscription(topic).map(|sub| sub.delivered) else {
                continue;
            };
            let to = entry.past_gap(delivered);
            if let Some(from) = session.pass_gap(topic, to) {
                entry.move_cursor(from, to);
                moved.push(key);
            }
        }
        for key in moved {
            self.cursor_moved(key, topic);
        }
    }

    /// The session is delivered again what it had in flight: each such topic
    /// has something to deliver.
    pub(super) fn rewind(&mut self, session_key: SessionKey) {
        let Some(session) = self.sessions.get_mut(session_key) else {
            return;
        };
        let mut in_flight = session.take_in_flight();
        for topic in in_flight.drain() {
            self.work += 1;
            session.rewind(topic);
            // Rewound below `next_offset`, so behind: ready, if not already.
            if self
                .topics
                .get_mut(topic)
                .is_some_and(|entry| entry.waiting.remove(session_key))
            {
                session.set_ready(topic);
            }
        }
        session.restore_in_flight(in_flight);
    }

    /// Panics unless every subscription is in exactly the index its offsets
    /// say (see the module doc). The unit tests check it after every
    /// request, `courier::testing` after every batch; it costs the tables.
    #[cfg(any(test, feature = "testing"))]
    #[doc(hidden)]
    pub fn assert_indexes_consistent(&self) {
        let mut subscriptions = 0;
        for (session_key, session) in &self.sessions {
            for sub in session.subscriptions() {
                subscriptions += 1;
                let topic = &self.topics[sub.topic];
                assert!(topic.subscribers.contains(session_key));
                let behind = sub.delivered < topic.next_offset();
                assert_eq!(session.is_ready(sub.topic), behind, "{sub:?}");
                assert_eq!(topic.waiting.contains(session_key), !behind, "{sub:?}");
                let in_flight = sub.acked < sub.delivered;
                assert_eq!(session.has_in_flight(sub.topic), in_flight, "{sub:?}");
            }
        }
        let listed: usize = self.topics.iter().map(|(_, t)| t.subscribers.len()).sum();
        let waiting: usize = self.topics.iter().map(|(_, t)| t.waiting.len()).sum();
        assert_eq!(listed, subscriptions);
        assert!(waiting <= subscriptions);
    }
}
