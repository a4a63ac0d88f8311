//! The subscriber's side: sessions registered, resumed, taken over,
//! detached and expired; subscriptions made and ended; acknowledgements.
//!
//! A session outlives its connection (see [`super::session`]), so the
//! connection and the session are joined and parted here in one place each:
//! [`Broker::take_over`] joins (and rewinds what was in flight),
//! [`Broker::detach`] parts (and arms the expiry). Every path that moves an
//! acknowledged offset ends in [`Broker::release`], the one place where a
//! topic forgets what all its subscribers have processed.

use super::cost;
use super::failure::{Failure, fail};
use super::journal::Undo;
use super::keys::{ConnId, SessionKey, TopicKey};
use super::pull::Answer;
use super::session::{Session, Subscription};
use super::{Broker, BrokerTimer, NoOutbox, Outbox};
use crate::budget::Class;
use crate::codec;
use crate::codec::msgpack;
use crate::protocol::{ErrorCode, Reply};
use crate::storage::{Record, SessionEnd};
use std::time::{Duration, Instant};

impl Broker {
    /// A new session (`resume = None`) or an existing one moved to `conn`.
    /// `timeout_ms` is the new session's (clamped to the maximum); a
    /// resumed session keeps its own, since changing it would need a record
    /// of its own for little use.
    pub(super) fn register_subscriber(
        &mut self,
        conn: ConnId,
        resume: Option<u64>,
        timeout_ms: Option<u64>,
        now: Instant,
        out: &mut dyn Outbox,
    ) -> Result<Reply, Failure> {
        // The pulls this connection left waiting belong to the session it
        // is about to let go of (or rewind): answer them now, empty.
        if let Some(current) = self.client(conn).and_then(|c| c.subscriber) {
            self.end_all_parked(current, Answer::Empty, out);
        }
        let key = match resume {
            None => {
                self.admit_session()?;
                let id = self.new_session_id()?;
                let timeout_ms = timeout_ms.map(|ms| self.clamp_session_timeout(ms));
                let seq = self.log_record(&Record::SessionCreated {
                    session: id,
                    timeout_ms,
                })?;
                let mut session = Session::new(id, conn);
                session.timeout = timeout_ms.map(Duration::from_millis);
                let key = self.sessions.insert(session);
                self.gate_on(seq, Undo::Session(key, id));
                self.session_ids.insert(id, key);
                self.budget.add(Class::Sessions, cost::SESSION);
                key
            }
            Some(id) => {
                let Some(&key) = self.session_ids.get(&id) else {
                    return fail(
                        ErrorCode::UnknownSubscriber,
                        format!("no subscriber session {id} (it never existed or it expired)"),
                    );
                };
                self.take_over(key, conn, out);
                key
            }
        };
        // A connection holds one subscriber: the one it had is let go.
        if let Some(client) = self.client_mut(conn) {
            let previous = client.subscriber.replace(key);
            if let Some(previous) = previous.filter(|&p| p != key) {
                self.detach(previous, now);
            }
        }
        Ok(self.registered_reply(key))
    }

    /// A session timeout asked for, in ms, within `--max-session-timeout`.
    /// Clamped rather than refused: the client learns the maximum from
    /// HELLO, and a session kept for less than it asked is still useful.
    pub(super) fn clamp_session_timeout(&self, ms: u64) -> u64 {
        let max = u64::try_from(self.limits.max_session_timeout.as_millis()).unwrap_or(u64::MAX);
        ms.min(max)
    }

    /// How long session `key` is kept once detached.
    pub(super) fn session_timeout(&self, key: SessionKey) -> Duration {
        self.sessions[key]
            .timeout
            .unwrap_or(self.limits.session_timeout)
    }

    /// A new session needs room under `--max-sessions` and in the budget.
    fn admit_session(&self) -> Result<(), Failure> {
        let max = self.limits.max_sessions;
        if self.sessions.len() >= max {
            return fail(
                ErrorCode::TooManySessions,
                format!("the broker holds its maximum of {max} subscriber sessions"),
            );
        }
        if !self.budget.admits(cost::SESSION) {
            return Err(Failure::broker_full(&self.budget));
        }
        Ok(())
    }

    /// A fresh id from the operating system's random source, never 0 nor
    /// one in use. If the source fails, the registration is refused
    /// (BROKER_FULL, retryable): a guessable id would be worse.
    fn new_session_id(&mut self) -> Result<u64, Failure> {
        for _ in 0..8 {
            match self.ids.next_id() {
                Some(id) if !self.session_ids.contains_key(&id) => return Ok(id),
                Some(_) => continue,
                None => break,
            }
        }
        fail(
            ErrorCode::BrokerFull,
            "no session id could be drawn from the operating system's random source; retry later",
        )
    }

    /// The REGISTER_SUBSCRIBER reply: the session's topics, as many as fit
    /// in one frame (the rest are flagged with `more`), so that a session
    /// can always be resumed whatever it subscribed to.
    fn registered_reply(&mut self, key: SessionKey) -> Reply {
        let session = &self.sessions[key];
        // [id, [topic, ...], more]: the reply header at its widest (as a
        // pull reply's), then the array, a 9-byte id, a 5-byte list header
        // and the flag.
        let mut room = self
            .limits
            .max_frame_bytes
            .saturating_sub(codec::messages_header_len(u64::MAX) + 1 + 9 + 5 + 1);
        let mut topics = Vec::new();
        let mut more = false;
        let mut visited = 0;
        for sub in session.subscriptions() {
            visited += 1;
            let Some(topic) = self.topics.get(sub.topic) else {
                continue;
            };
            let cost = msgpack::str_len(topic.name.len());
            if cost > room {
                more = true;
                break;
            }
            room -= cost;
            topics.push(topic.name.to_string());
        }
        // The walk stops when the frame is full: it costs what the reply carries.
        let subscriber_id = session.id;
        self.work += visited;
        Reply::SubscriberRegistered {
            subscriber_id,
            topics,
            more,
        }
    }

    /// Moves session `key` to `conn`, taking it from whoever held it, and
    /// rewinds it so unacknowledged messages are delivered again.
    fn take_over(&mut self, key: SessionKey, conn: ConnId, out: &mut dyn Outbox) {
        let previous = self.sessions[key].conn;
        if let Some(old) = previous.filter(|&old| old != conn) {
            self.end_all_parked(
                key,
                Answer::Error(
                    ErrorCode::SessionTakenOver,
                    "another connection resumed this subscriber",
                ),
                out,
            );
            if let Some(client) = self.client_mut(old) {
                client.subscriber = None;
            }
        }
        self.end_all_parked(key, Answer::Silent, out);
        let session = &mut self.sessions[key];
        if let Some(timer) = session.expiry.take() {
            self.timers.cancel(timer);
        }
        session.conn = Some(conn);
        self.rewind(key);
    }

    /// The session loses its connection; it expires unless resumed in time.
    pub(super) fn detach(&mut self, key: SessionKey, now: Instant) {
        // The connection is gone: nobody to answer.
        self.end_all_parked(key, Answer::Silent, &mut NoOutbox);
        let deadline = now + self.session_timeout(key);
        let timer = self.timers.arm(deadline, BrokerTimer::SessionExpiry(key));
        let session = &mut self.sessions[key];
        session.conn = None;
        if let Some(old) = session.expiry.replace(timer) {
            self.timers.cancel(old);
        }
    }

    /// Ends a session (its expiry came, or END_SESSION, or recovery read
    /// its end): O(its subscriptions). `log` says whether to record it;
    /// the record's sequence number, if it was logged. The session is gone
    /// from memory at once whatever becomes of the record (see
    /// `Broker::log_change`).
    pub(super) fn expire(&mut self, key: SessionKey, reason: SessionEnd, log: bool) -> Option<u64> {
        let mut seq = None;
        if log {
            let session = self.sessions[key].id;
            seq = self.log_change(Record::SessionEnded { session, reason });
        }
        let session = self.sessions.remove(key);
        self.session_ids.remove(&session.id);
        self.budget.sub(Class::Sessions, cost::SESSION);
        for sub in session.into_subscriptions() {
            self.leave_topic(key, sub);
        }
        seq
    }

    /// The topic's side of ending a subscription (the session's side is
    /// already done): it no longer lists the session nor waits for its
    /// acknowledgements. O(log n) whatever the number of subscribers.
    pub(super) fn leave_topic(&mut self, session_key: SessionKey, sub: Subscription) {
        self.work += 1;
        self.counters.subscriptions -= 1;
        self.budget.sub(Class::Subscriptions, cost::SUBSCRIPTION);
        if let Some(topic) = self.topics.get_mut(sub.topic) {
            topic.subscribers.remove(session_key);
            topic.waiting.remove(session_key);
            topic.remove_cursor(sub.acked);
        }
        self.release(sub.topic);
    }

    /// Subscribes from the topic's next offset; subscribing again answers
    /// where the subscription stands.
    pub(super) fn subscribe(&mut self, conn: ConnId, name: &str) -> Result<Reply, Failure> {
        let session_key = self.subscriber(conn)?;
        let topic_key = self.topic_key(name)?;
        let session = &mut self.sessions[session_key];
        if let Some(sub) = session.subscription(topic_key) {
            return Ok(Reply::Subscribed {
                next_offset: sub.acked,
            });
        }
        let topic = &mut self.topics[topic_key];
        if topic.subscribers.len() >= self.limits.max_subscribers_per_topic {
            return fail(
                ErrorCode::TooManySubscribers,
                format!(
                    "topic '{name}' has its maximum of {} subscribers",
                    self.limits.max_subscribers_per_topic
                ),
            );
        }
        let max = self.limits.max_subscriptions_per_session;
        if session.subscriptions().len() >= max {
            return fail(
                ErrorCode::TooManySubscriptions,
                format!("this session holds its maximum of {max} subscriptions"),
            );
        }
        if !self.budget.admits(cost::SUBSCRIPTION) {
            return Err(Failure::broker_full(&self.budget));
        }
        // From the end of what is stored: staged messages are delivered to
        // it once durable, as they were published after it subscribed.
        let next_offset = topic.next_offset();
        let record = Record::Subscribed {
            session: session.id,
            topic: topic.id,
            start_offset: next_offset,
        };
        let seq = self.log_record(&record)?;
        self.gate_on(seq, Undo::Subscription(session_key, topic_key));
        self.join_topic(session_key, topic_key, next_offset);
        Ok(Reply::Subscribed { next_offset })
    }

    /// Subscribes the session to the topic from `offset` on, caught up:
    /// waiting for the next publish (recovery sets the indexes right
    /// afterwards, see `journal`).
    pub(super) fn join_topic(&mut self, session_key: SessionKey, topic_key: TopicKey, offset: u64) {
        let (Some(session), Some(topic)) = (
            self.sessions.get_mut(session_key),
            self.topics.get_mut(topic_key),
        ) else {
            return;
        };
        if session.subscription(topic_key).is_some() {
            return;
        }
        topic.subscribers.insert(session_key);
        topic.waiting.insert(session_key);
        topic.add_cursor(offset);
        session.add_subscription(topic_key, offset);
        self.counters.subscriptions += 1;
        self.budget.add(Class::Subscriptions, cost::SUBSCRIPTION);
    }

    pub(super) fn unsubscribe(
        &mut self,
        conn: ConnId,
        name: &str,
        out: &mut dyn Outbox,
    ) -> Result<(), Failure> {
        let session_key = self.subscriber(conn)?;
        let topic_key = self.topic_key(name)?;
        let Some(sub) = self.sessions[session_key].remove_subscription(topic_key) else {
            return Err(Failure::not_subscribed(name));
        };
        let record = Record::Unsubscribed {
            session: self.sessions[session_key].id,
            topic: self.topics[topic_key].id,
        };
        let seq = self.log_change(record);
        self.gate_on(seq, Undo::Kept);
        self.leave_topic(session_key, sub);
        // Pulls waiting on this topic alone can no longer get anything.
        self.end_parked(
            session_key,
            |p| p.topic == Some(topic_key),
            Answer::Empty,
            out,
        );
        Ok(())
    }

    pub(super) fn ack(&mut self, conn: ConnId, name: &str, offset: u64) -> Result<(), Failure> {
        let session_key = self.subscriber(conn)?;
        let topic_key = self.topic_key(name)?;
        let Some(sub) = self.sessions[session_key].subscription(topic_key) else {
            return Err(Failure::not_subscribed(name));
        };
        if offset > sub.delivered {
            return fail(
                ErrorCode::InvalidAck,
                format!(
                    "cannot acknowledge up to offset {offset} of '{name}': only offsets below {} were delivered",
                    sub.delivered
                ),
            );
        }
        // An ack up to a gap covers the gap (delivery has passed it).
        let offset = self.topics[topic_key].past_gap(offset).min(sub.delivered);
        self.acknowledge(session_key, topic_key, offset);
        Ok(())
    }

    /// `ack = true` on a pull: everything delivered on the pulled topics is
    /// acknowledged. Only topics with messages in flight are looked at, each
    /// of which a pull delivered to: O(1) each, not O(subscriptions).
    pub(super) fn ack_delivered(&mut self, session_key: SessionKey, topic: Option<TopicKey>) {
        let session = &mut self.sessions[session_key];
        match topic {
            Some(topic) => {
                if let Some(sub) = session.subscription(topic) {
                    let delivered = sub.delivered;
                    self.acknowledge(session_key, topic, delivered);
                }
            }
            None => {
                let mut in_flight = session.take_in_flight();
                for topic in in_flight.drain() {
                    let delivered = self.sessions[session_key]
                        .subscription(topic)
                        .map(|sub| sub.delivered);
                    if let Some(delivered) = delivered {
                        self.acknowledge(session_key, topic, delivered);
                    }
                }
                self.sessions[session_key].restore_in_flight(in_flight);
            }
        }
    }

    /// Moves the session's acknowledged offset on `topic` up to `offset`
    /// (at most what was delivered), and lets the topic forget what nobody
    /// needs any more.
    fn acknowledge(&mut self, session_key: SessionKey, topic: TopicKey, offset: u64) {
        self.work += 1;
        let Some(from) = self.sessions[session_key].acknowledge(topic, offset) else {
            return;
        };
        if let Some(entry) = self.topics.get_mut(topic) {
            entry.move_cursor(from, offset);
        }
        self.cursor_moved(session_key, topic);
        self.release(topic);
    }

    /// Drops what every subscriber of `topic` has acknowledged.
    pub(super) fn release(&mut self, topic_key: TopicKey) {
        let Some(topic) = self.topics.get_mut(topic_key) else {
            return;
        };
        let floor = topic.floor();
        if floor > topic.base_offset() {
            let (messages, bytes) = (topic.backlog_messages(), topic.backlog_bytes());
            let before = topic.footprint();
            topic.release_below(floor);
            cost::settle(&mut self.budget, before, topic.footprint());
            self.counters.backlog_messages -= (messages - topic.backlog_messages()) as u64;
            self.counters.backlog_bytes -= (bytes - topic.backlog_bytes()) as u64;
            self.room_in(topic_key);
        }
    }
}
