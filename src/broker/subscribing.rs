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
use crate::auth::GrantKind;
use crate::budget::Class;
use crate::codec;
use crate::codec::msgpack;
use crate::protocol::{ErrorCode, Position, Reply};
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
                let owner = self.user_name(conn).map(str::to_owned);
                let seq = self.log_record(&Record::SessionCreated {
                    session: id,
                    timeout_ms,
                    owner: owner.clone(),
                })?;
                let mut session = Session::new(id, conn);
                session.timeout = timeout_ms.map(Duration::from_millis);
                session.owner = owner.map(String::into_boxed_str);
                let key = self.sessions.insert(session);
                self.gate_on(seq, Undo::Session(key, id));
                self.session_ids.insert(id, key);
                self.budget.add(Class::Sessions, cost::SESSION);
                key
            }
            Some(id) => {
                // Another user's session answers as if it did not exist,
                // so ids cannot be probed for existence. Without users
                // anyone may do anything, so ownership is not enforced.
                let owned = |key: &SessionKey| {
                    !self.requires_users()
                        || self
                            .sessions
                            .get(*key)
                            .is_some_and(|s| s.owner.as_deref() == self.user_name(conn))
                };
                let Some(&key) = self.session_ids.get(&id).filter(|k| owned(k)) else {
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
        self.drop_cursor(key);
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
        self.drop_cursor_of(session_key, sub.topic);
        self.counters.subscriptions -= 1;
        self.budget.sub(Class::Subscriptions, cost::SUBSCRIPTION);
        if let Some(topic) = self.topics.get_mut(sub.topic) {
            topic.subscribers.remove(session_key);
            topic.waiting.remove(session_key);
            topic.remove_cursor(sub.acked);
        }
        self.release(sub.topic);
    }

    /// Subscribes from `position` (the topic's next offset for "new", the
    /// version 1 behaviour); subscribing again changes nothing and answers
    /// where the subscription stands.
    pub(super) fn subscribe(
        &mut self,
        conn: ConnId,
        name: &str,
        position: Position,
    ) -> Result<Reply, Failure> {
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
        // "new" is the end of what is stored: staged messages are
        // delivered to it once durable, as they were published after it
        // subscribed.
        let next_offset = self.start_offset(topic_key, position);
        let session = &self.sessions[session_key];
        let topic = &self.topics[topic_key];
        let record = Record::Subscribed {
            session: session.id,
            topic: topic.id,
            start_offset: next_offset,
        };
        let seq = self.log_record(&record)?;
        self.gate_on(seq, Undo::Subscription(session_key, topic_key));
        self.join_topic(session_key, topic_key, next_offset);
        self.cursor_placed(session_key, topic_key);
        Ok(Reply::Subscribed { next_offset })
    }

    /// SEEK: moves the subscription's cursor to `position` (clamped as a
    /// SUBSCRIBE's start is): acknowledged and delivered both, so what was
    /// in flight is forgotten and delivery goes on from there. Moving
    /// forward on an until-acked topic lets it forget what it passed; it
    /// cannot move back below what the topic still retains. Logged as a
    /// fact, not waited for: a crash before it is durable leaves the cursor
    /// where it was (at-least-once, as acknowledgements).
    pub(super) fn seek(
        &mut self,
        conn: ConnId,
        name: &str,
        position: Position,
    ) -> Result<Reply, Failure> {
        let session_key = self.subscriber(conn)?;
        let topic_key = self.topic_key(name)?;
        if self.sessions[session_key].subscription(topic_key).is_none() {
            return Err(Failure::not_subscribed(name));
        }
        let offset = self.start_offset(topic_key, position);
        self.place_cursor(session_key, topic_key, offset);
        let record = Record::Seeked {
            session: self.sessions[session_key].id,
            topic: self.topics[topic_key].id,
            offset,
        };
        self.log_fact(record);
        self.release(topic_key);
        Ok(Reply::Subscribed {
            next_offset: offset,
        })
    }

    /// Sets the cursor of (session, topic) to `offset`, acknowledged and
    /// delivered, keeping the topic's cursor counts and the indexes right
    /// (SEEK, and its replay).
    pub(super) fn place_cursor(
        &mut self,
        session_key: SessionKey,
        topic_key: TopicKey,
        offset: u64,
    ) {
        if self.shift_cursor(session_key, topic_key, offset, Session::set_cursor) {
            self.cursor_placed(session_key, topic_key);
        }
    }

    /// Moves the session's cursor on `topic_key` to `offset` with `step`
    /// (which returns where it was, if it moved) and the topic's cursor
    /// count with it; true if it moved. SEEK and ACK differ only in the
    /// step and in what follows.
    fn shift_cursor(
        &mut self,
        session_key: SessionKey,
        topic_key: TopicKey,
        offset: u64,
        step: fn(&mut Session, TopicKey, u64) -> Option<u64>,
    ) -> bool {
        self.work += 1;
        let Some(from) = step(&mut self.sessions[session_key], topic_key, offset) else {
            return false;
        };
        if let Some(topic) = self.topics.get_mut(topic_key) {
            topic.move_cursor(from, offset);
        }
        true
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
        if self.end_subscription(session_key, topic_key, out) {
            Ok(())
        } else {
            Err(Failure::not_subscribed(name))
        }
    }

    /// Ends one subscription (logged), and the pulls that waited on its
    /// topic alone. `false` if the session had no such subscription.
    fn end_subscription(
        &mut self,
        session_key: SessionKey,
        topic_key: TopicKey,
        out: &mut dyn Outbox,
    ) -> bool {
        let Some(sub) = self
            .sessions
            .get_mut(session_key)
            .and_then(|s| s.remove_subscription(topic_key))
        else {
            return false;
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
        true
    }

    /// After a reload of the users file: every subscription whose owner
    /// no longer has a `subscribe` grant on its topic (or no longer
    /// exists) ends, as by UNSUBSCRIBE, so a lost grant stops deliveries
    /// at once, also to pulls of every topic. One pass over the
    /// subscriptions of owned sessions, once per reload.
    pub(super) fn end_unpermitted_subscriptions(&mut self, out: &mut dyn Outbox) {
        let Some(users) = &self.users else { return };
        let mut ended = Vec::new();
        for (session_key, session) in self.sessions.iter() {
            let Some(owner) = session.owner.as_deref() else {
                continue;
            };
            let user = users.get(owner);
            for sub in session.subscriptions() {
                let allowed = self.topics.get(sub.topic).is_some_and(|topic| {
                    user.is_some_and(|u| u.may(GrantKind::Subscribe, Some(&topic.name)))
                });
                if !allowed {
                    ended.push((session_key, sub.topic));
                }
            }
        }
        for (session_key, topic_key) in ended {
            self.end_subscription(session_key, topic_key, out);
        }
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
        if self.shift_cursor(session_key, topic, offset, Session::acknowledge) {
            self.cursor_moved(session_key, topic);
            self.release(topic);
        }
    }

    /// Drops what `topic` no longer keeps: what every subscriber has
    /// acknowledged, or, on a retained topic, what fell outside its
    /// policy (see `super::retention`).
    pub(super) fn release(&mut self, topic_key: TopicKey) {
        if let Some(floor) = self.release_floor(topic_key) {
            self.forget_below(topic_key, floor);
        }
    }

    /// Drops every message of `topic` below `floor`, giving back what they
    /// held; held publishes may fit now.
    pub(super) fn forget_below(&mut self, topic_key: TopicKey, floor: u64) {
        let Some(topic) = self.topics.get_mut(topic_key) else {
            return;
        };
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
