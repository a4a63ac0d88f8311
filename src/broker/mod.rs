//! The broker's state machine: topics, publishers, subscriber sessions and
//! waiting pulls, owned by one thread and touched by nothing else.
//!
//! It knows no sockets. The server hands it a decoded frame body and an
//! [`Outbox`] — the write buffers of the connections — and the broker appends
//! encoded replies there. This keeps every rule of the protocol testable
//! without I/O, and leaves room for persistence later: a publish becomes "append
//! to the topic's log, then reply", with the log behind the same offsets.
//!
//! Waking waiting pulls is deferred to the end of the server's batch
//! ([`Broker::answer_ready`]), like Redis's `beforeSleep`: a burst of
//! publishes read in one go wakes each subscriber once, with everything that
//! arrived, instead of once per message.

mod pull;
pub mod session;
pub mod topic;

use crate::codec;
use crate::protocol::{
    ErrorCode, MAX_PULL_MESSAGES, MAX_PULL_WAIT_MS, MAX_TOPIC_NAME_BYTES, PAYLOAD_OVERHEAD_BYTES,
    PROTOCOL_VERSION, Payloads, Pull, Reply, Request, ServerInfo, Stats, validate_topic_name,
};
use crate::timers::Timers;
use bytes::Bytes;
use session::{IdGenerator, Parked, Session, SessionKey, Subscription};
use slab::Slab;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use topic::{Topic, TopicKey};

/// A connection, as the server numbers it (its slab key).
pub type ConnId = usize;

/// Where the broker writes replies: the connections' write buffers.
pub trait Outbox {
    /// The write buffer of a live connection; `None` if it is gone.
    fn buffer(&mut self, conn: ConnId) -> Option<&mut Vec<u8>>;
    /// Close the connection once what is already buffered has been sent.
    fn close(&mut self, conn: ConnId);
}

/// The bounds the broker enforces. Each is a `broker` flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_frame_bytes: usize,
    pub max_backlog_bytes: usize,
    pub max_backlog_messages: usize,
    pub max_topics: usize,
    pub max_subscribers_per_topic: usize,
    pub session_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: crate::protocol::DEFAULT_MAX_FRAME_BYTES,
            max_backlog_bytes: 64 * 1024 * 1024,
            max_backlog_messages: 1_000_000,
            max_topics: 100_000,
            max_subscribers_per_topic: 10_000,
            session_timeout: Duration::from_secs(60),
        }
    }
}

impl Limits {
    pub fn max_payload_bytes(&self) -> usize {
        self.max_frame_bytes.saturating_sub(PAYLOAD_OVERHEAD_BYTES)
    }
}

/// What one connection has done so far.
#[derive(Debug, Default, Clone, Copy)]
struct ClientState {
    handshaken: bool,
    publisher: Option<u64>,
    subscriber: Option<SessionKey>,
}

#[derive(Debug, Clone, Copy)]
enum BrokerTimer {
    PullDeadline(SessionKey),
    SessionExpiry(SessionKey),
}

/// A request refused: the code and a message for people.
#[derive(Debug)]
struct Failure {
    code: ErrorCode,
    message: String,
}

fn fail<T>(code: ErrorCode, message: impl Into<String>) -> Result<T, Failure> {
    Err(Failure {
        code,
        message: message.into(),
    })
}

#[derive(Debug, Default)]
struct Counters {
    connections: u64,
    connections_total: u64,
    publishers: u64,
    messages_in: u64,
    messages_out: u64,
    bytes_in: u64,
    bytes_out: u64,
    backlog_messages: u64,
    backlog_bytes: u64,
    subscriptions: u64,
    waiting_pulls: u64,
    errors: [u64; 32],
}

pub struct Broker {
    limits: Limits,
    started: Instant,
    clients: Vec<Option<ClientState>>,
    topics: Slab<Topic>,
    topic_names: HashMap<Box<str>, TopicKey>,
    sessions: Slab<Session>,
    session_ids: HashMap<u64, SessionKey>,
    ids: IdGenerator,
    next_publisher_id: u64,
    timers: Timers<BrokerTimer>,
    /// Sessions whose parked pull has something to deliver.
    ready: Vec<SessionKey>,
    counters: Counters,
    /// Reused by every pull to plan its reply.
    plan: Vec<pull::Group>,
}

impl Broker {
    pub fn new(limits: Limits, now: Instant) -> Self {
        Broker {
            limits,
            started: now,
            clients: Vec::new(),
            topics: Slab::new(),
            topic_names: HashMap::new(),
            sessions: Slab::new(),
            session_ids: HashMap::new(),
            ids: IdGenerator::from_entropy(),
            next_publisher_id: 1,
            timers: Timers::new(),
            ready: Vec::new(),
            counters: Counters::default(),
            plan: Vec::new(),
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// A new connection, before its handshake.
    pub fn connect(&mut self, conn: ConnId) {
        if self.clients.len() <= conn {
            self.clients.resize(conn + 1, None);
        }
        self.clients[conn] = Some(ClientState::default());
        self.counters.connections += 1;
        self.counters.connections_total += 1;
    }

    /// A connection is gone: its subscriber session (if any) is detached and
    /// will expire unless resumed.
    pub fn disconnect(&mut self, conn: ConnId, now: Instant) {
        let Some(client) = self.clients.get_mut(conn).and_then(Option::take) else {
            return;
        };
        self.counters.connections -= 1;
        if client.publisher.is_some() {
            self.counters.publishers -= 1;
        }
        if let Some(key) = client.subscriber {
            self.detach(key, now);
        }
    }

    /// Payload bytes retained now, over all topics.
    pub fn backlog_bytes(&self) -> u64 {
        self.counters.backlog_bytes
    }

    pub fn is_handshaken(&self, conn: ConnId) -> bool {
        self.client(conn).is_some_and(|c| c.handshaken)
    }

    fn client(&self, conn: ConnId) -> Option<&ClientState> {
        self.clients.get(conn).and_then(Option::as_ref)
    }

    fn client_mut(&mut self, conn: ConnId) -> Option<&mut ClientState> {
        self.clients.get_mut(conn).and_then(Option::as_mut)
    }

    /// Counts an error the server answered on its own (e.g. a connection
    /// refused before it had an id).
    pub fn count_error(&mut self, code: ErrorCode) {
        if let Some(slot) = self.counters.errors.get_mut(code as usize) {
            *slot += 1;
        }
    }

    /// Sends an error reply, and closes the connection if the code says so.
    pub fn send_error(
        &mut self,
        conn: ConnId,
        id: u64,
        code: ErrorCode,
        message: &str,
        out: &mut dyn Outbox,
    ) {
        self.count_error(code);
        if let Some(buf) = out.buffer(conn) {
            codec::encode_error(buf, id, code, message);
        }
        if code.closes_connection() {
            out.close(conn);
        }
    }

    /// Executes one frame body from `conn`.
    pub fn handle_frame(&mut self, conn: ConnId, body: &[u8], now: Instant, out: &mut dyn Outbox) {
        let Some(client) = self.client(conn).copied() else {
            return;
        };
        let (id, request) = match codec::decode_request(body) {
            Ok(decoded) => decoded,
            Err(e) => {
                // An undecodable first frame is not a handshake either.
                let code = if client.handshaken {
                    e.code()
                } else {
                    ErrorCode::HandshakeRequired
                };
                return self.send_error(conn, e.id.unwrap_or(0), code, &e.to_string(), out);
            }
        };
        let result = if client.handshaken {
            self.execute(conn, id, request, now, out)
        } else {
            self.handshake(conn, request)
        };
        match result {
            Ok(Some(reply)) => {
                if let Some(buf) = out.buffer(conn) {
                    codec::encode_reply(buf, id, &reply);
                }
            }
            Ok(None) => {}
            Err(Failure { code, message }) => self.send_error(conn, id, code, &message, out),
        }
    }

    fn handshake(&mut self, conn: ConnId, request: Request<'_>) -> Result<Option<Reply>, Failure> {
        let Request::Hello { version, .. } = request else {
            return fail(
                ErrorCode::HandshakeRequired,
                "the first request must be HELLO [1, id, version, client_name]",
            );
        };
        if version != PROTOCOL_VERSION {
            return fail(
                ErrorCode::UnsupportedVersion,
                format!(
                    "protocol version {version} is not supported; this server speaks {PROTOCOL_VERSION}"
                ),
            );
        }
        if let Some(client) = self.client_mut(conn) {
            client.handshaken = true;
        }
        Ok(Some(Reply::Hello(self.server_info())))
    }

    pub fn server_info(&self) -> ServerInfo {
        ServerInfo {
            version: PROTOCOL_VERSION,
            server: format!("courier {}", env!("CARGO_PKG_VERSION")),
            max_frame_bytes: self.limits.max_frame_bytes as u64,
            max_payload_bytes: self.limits.max_payload_bytes() as u64,
            max_topic_name_bytes: MAX_TOPIC_NAME_BYTES as u64,
            max_pull_messages: u64::from(MAX_PULL_MESSAGES),
            max_backlog_bytes: self.limits.max_backlog_bytes as u64,
            max_backlog_messages: self.limits.max_backlog_messages as u64,
            session_timeout_ms: self.limits.session_timeout.as_millis() as u64,
        }
    }

    fn execute(
        &mut self,
        conn: ConnId,
        id: u64,
        request: Request<'_>,
        now: Instant,
        out: &mut dyn Outbox,
    ) -> Result<Option<Reply>, Failure> {
        match request {
            Request::Hello { .. } => fail(
                ErrorCode::HandshakeRepeated,
                "HELLO was already done on this connection",
            ),
            Request::RegisterPublisher => self.register_publisher(conn).map(Some),
            Request::CreateTopic { topic } => {
                self.publisher(conn)?;
                self.create_topic(topic).map(|()| Some(Reply::Done))
            }
            Request::DeleteTopic { topic } => {
                self.publisher(conn)?;
                self.delete_topic(topic, out).map(|()| Some(Reply::Done))
            }
            Request::Publish { topic, payload } => {
                self.publisher(conn)?;
                self.publish(topic, PublishInput::One(payload)).map(Some)
            }
            Request::PublishBatch { topic, payloads } => {
                self.publisher(conn)?;
                self.publish(topic, PublishInput::Batch(payloads)).map(Some)
            }
            Request::RegisterSubscriber { resume } => {
                self.register_subscriber(conn, resume, now, out).map(Some)
            }
            Request::Subscribe { topic } => self.subscribe(conn, topic).map(Some),
            Request::Unsubscribe { topic } => self
                .unsubscribe(conn, topic, out)
                .map(|()| Some(Reply::Done)),
            Request::Pull(pull) => self.pull(conn, id, pull, now, out).map(|()| None),
            Request::Ack { topic, offset } => {
                self.ack(conn, topic, offset).map(|()| Some(Reply::Done))
            }
            Request::Stats => Ok(Some(Reply::Stats(self.stats(now)))),
        }
    }

    fn publisher(&self, conn: ConnId) -> Result<u64, Failure> {
        match self.client(conn).and_then(|c| c.publisher) {
            Some(id) => Ok(id),
            None => fail(
                ErrorCode::NotRegistered,
                "register a publisher on this connection first (REGISTER_PUBLISHER)",
            ),
        }
    }

    fn subscriber(&self, conn: ConnId) -> Result<SessionKey, Failure> {
        match self.client(conn).and_then(|c| c.subscriber) {
            Some(key) => Ok(key),
            None => fail(
                ErrorCode::NotRegistered,
                "register a subscriber on this connection first (REGISTER_SUBSCRIBER)",
            ),
        }
    }

    fn topic_key(&self, name: &str) -> Result<TopicKey, Failure> {
        if validate_topic_name(name).is_err() {
            // Echo at most the start of the name: an error reply must stay
            // small whatever the client sent.
            let shown: String = name.escape_debug().take(64).collect();
            let cut = if shown.len() < name.escape_debug().count() {
                "…"
            } else {
                ""
            };
            return fail(
                ErrorCode::InvalidTopicName,
                format!(
                    "invalid topic name \"{shown}{cut}\": use 1 to {MAX_TOPIC_NAME_BYTES} bytes of A-Z a-z 0-9 . _ -"
                ),
            );
        }
        match self.topic_names.get(name) {
            Some(&key) => Ok(key),
            None => fail(ErrorCode::UnknownTopic, format!("unknown topic '{name}'")),
        }
    }

    fn register_publisher(&mut self, conn: ConnId) -> Result<Reply, Failure> {
        let next = self.next_publisher_id;
        let Some(client) = self.clients.get_mut(conn).and_then(Option::as_mut) else {
            return fail(ErrorCode::NotRegistered, "connection is closing");
        };
        let publisher_id = match client.publisher {
            Some(id) => id,
            None => {
                client.publisher = Some(next);
                self.next_publisher_id += 1;
                self.counters.publishers += 1;
                next
            }
        };
        Ok(Reply::PublisherRegistered { publisher_id })
    }

    fn create_topic(&mut self, name: &str) -> Result<(), Failure> {
        match self.topic_key(name) {
            Ok(_) => fail(
                ErrorCode::TopicExists,
                format!("topic '{name}' already exists"),
            ),
            Err(Failure {
                code: ErrorCode::UnknownTopic,
                ..
            }) => {
                if self.topics.len() >= self.limits.max_topics {
                    return fail(
                        ErrorCode::TooManyTopics,
                        format!(
                            "the broker holds its maximum of {} topics",
                            self.limits.max_topics
                        ),
                    );
                }
                let key = self.topics.insert(Topic::new(name));
                self.topic_names.insert(name.into(), key);
                Ok(())
            }
            Err(other) => Err(other),
        }
    }

    fn delete_topic(&mut self, name: &str, out: &mut dyn Outbox) -> Result<(), Failure> {
        let key = self.topic_key(name)?;
        let topic = self.topics.remove(key);
        self.topic_names.remove(name);
        self.counters.backlog_messages -= topic.backlog_messages() as u64;
        self.counters.backlog_bytes -= topic.backlog_bytes() as u64;
        for session_key in topic.subscribers {
            let Some(session) = self.sessions.get_mut(session_key) else {
                continue;
            };
            if session.remove_subscription(key).is_some() {
                self.counters.subscriptions -= 1;
            }
            let ends_pull = session.parked.is_some_and(|p| p.covers(key));
            if ends_pull {
                self.answer_parked_with_error(
                    session_key,
                    ErrorCode::TopicDeleted,
                    &format!("topic '{name}' was deleted"),
                    out,
                );
            }
        }
        Ok(())
    }

    fn publish(&mut self, name: &str, input: PublishInput<'_>) -> Result<Reply, Failure> {
        let key = self.topic_key(name)?;
        let max_payload = self.limits.max_payload_bytes();
        let (count, bytes, largest) = input.measure();
        if largest > max_payload {
            return fail(
                ErrorCode::PayloadTooLarge,
                format!("a payload of {largest} bytes exceeds the maximum of {max_payload}"),
            );
        }
        let limits = &self.limits;
        let topic = &mut self.topics[key];
        let subscribers = topic.subscribers.len() as u64;
        self.counters.messages_in += count as u64;
        self.counters.bytes_in += bytes as u64;
        let first_offset = if subscribers == 0 {
            topic.skip(count as u64)
        } else {
            if !topic.has_room(
                count,
                bytes,
                limits.max_backlog_messages,
                limits.max_backlog_bytes,
            ) {
                self.counters.messages_in -= count as u64;
                self.counters.bytes_in -= bytes as u64;
                return fail(
                    ErrorCode::TopicFull,
                    format!(
                        "topic '{name}' holds {} messages / {} bytes not yet acknowledged by all subscribers (bounds {} / {}); retry later",
                        topic.backlog_messages(),
                        topic.backlog_bytes(),
                        limits.max_backlog_messages,
                        limits.max_backlog_bytes
                    ),
                );
            }
            let first = topic.next_offset();
            input.append_to(topic);
            self.counters.backlog_messages += count as u64;
            self.counters.backlog_bytes += bytes as u64;
            if count > 0 {
                self.wake_subscribers(key);
            }
            first
        };
        Ok(match input {
            PublishInput::One(_) => Reply::Published {
                offset: first_offset,
                subscribers,
            },
            PublishInput::Batch(_) => Reply::PublishedBatch {
                first_offset,
                count: count as u64,
                subscribers,
            },
        })
    }

    /// Queues the parked pulls that wait on `topic` to be answered at the end
    /// of the batch.
    fn wake_subscribers(&mut self, topic: TopicKey) {
        for &session_key in &self.topics[topic].subscribers {
            let Some(session) = self.sessions.get_mut(session_key) else {
                continue;
            };
            if let Some(parked) = &mut session.parked
                && !parked.queued
                && parked.covers(topic)
            {
                parked.queued = true;
                self.ready.push(session_key);
            }
        }
    }

    fn register_subscriber(
        &mut self,
        conn: ConnId,
        resume: Option<u64>,
        now: Instant,
        out: &mut dyn Outbox,
    ) -> Result<Reply, Failure> {
        // A pull this connection left waiting belongs to the session it is
        // about to let go of (or rewind): answer it now, empty.
        if let Some(current) = self.client(conn).and_then(|c| c.subscriber) {
            self.answer_parked_empty(current, out);
        }
        let key = match resume {
            None => {
                let id = self.ids.next_id();
                let key = self.sessions.insert(Session::new(id, conn));
                self.session_ids.insert(id, key);
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
        if let Some(client) = self.clients.get_mut(conn).and_then(Option::as_mut) {
            let previous = client.subscriber.replace(key);
            if let Some(previous) = previous.filter(|&p| p != key) {
                self.detach(previous, now);
            }
        }
        let session = &self.sessions[key];
        let topics = session
            .subscriptions()
            .iter()
            .filter_map(|s| self.topics.get(s.topic).map(|t| t.name.to_string()))
            .collect();
        Ok(Reply::SubscriberRegistered {
            subscriber_id: session.id,
            topics,
        })
    }

    /// Moves session `key` to `conn`, taking it from whoever held it, and
    /// rewinds it so unacknowledged messages are delivered again.
    fn take_over(&mut self, key: SessionKey, conn: ConnId, out: &mut dyn Outbox) {
        let previous = self.sessions[key].conn;
        if let Some(old) = previous.filter(|&old| old != conn) {
            self.answer_parked_with_error(
                key,
                ErrorCode::SessionTakenOver,
                "another connection resumed this subscriber",
                out,
            );
            if let Some(client) = self.client_mut(old) {
                client.subscriber = None;
            }
        }
        self.cancel_parked(key);
        let session = &mut self.sessions[key];
        if let Some(timer) = session.expiry.take() {
            self.timers.cancel(timer);
        }
        session.conn = Some(conn);
        session.rewind();
    }

    /// The session loses its connection; it expires unless resumed in time.
    fn detach(&mut self, key: SessionKey, now: Instant) {
        self.cancel_parked(key);
        let deadline = now + self.limits.session_timeout;
        let timer = self.timers.arm(deadline, BrokerTimer::SessionExpiry(key));
        let session = &mut self.sessions[key];
        session.conn = None;
        if let Some(old) = session.expiry.replace(timer) {
            self.timers.cancel(old);
        }
    }

    fn expire(&mut self, key: SessionKey) {
        let session = self.sessions.remove(key);
        self.session_ids.remove(&session.id);
        for sub in session.into_subscriptions() {
            self.leave_topic(key, sub);
        }
    }

    /// The topic's side of ending a subscription (the session's side is
    /// already done): it no longer lists the session nor waits for its
    /// acknowledgements.
    fn leave_topic(&mut self, session_key: SessionKey, sub: Subscription) {
        self.counters.subscriptions -= 1;
        if let Some(topic) = self.topics.get_mut(sub.topic) {
            topic.subscribers.retain(|&s| s != session_key);
            topic.remove_cursor(sub.acked);
        }
        self.release(sub.topic);
    }

    fn subscribe(&mut self, conn: ConnId, name: &str) -> Result<Reply, Failure> {
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
        let next_offset = topic.next_offset();
        topic.subscribers.push(session_key);
        topic.add_cursor(next_offset);
        session.add_subscription(Subscription {
            topic: topic_key,
            acked: next_offset,
            delivered: next_offset,
        });
        self.counters.subscriptions += 1;
        Ok(Reply::Subscribed { next_offset })
    }

    fn unsubscribe(
        &mut self,
        conn: ConnId,
        name: &str,
        out: &mut dyn Outbox,
    ) -> Result<(), Failure> {
        let session_key = self.subscriber(conn)?;
        let topic_key = self.topic_key(name)?;
        let Some(sub) = self.sessions[session_key].remove_subscription(topic_key) else {
            return fail(
                ErrorCode::NotSubscribed,
                format!("not subscribed to '{name}'"),
            );
        };
        self.leave_topic(session_key, sub);
        // A pull waiting on this topic alone can no longer get anything.
        if self.sessions[session_key]
            .parked
            .is_some_and(|p| p.topic == Some(topic_key))
        {
            self.answer_parked_empty(session_key, out);
        }
        Ok(())
    }

    fn ack(&mut self, conn: ConnId, name: &str, offset: u64) -> Result<(), Failure> {
        let session_key = self.subscriber(conn)?;
        let topic_key = self.topic_key(name)?;
        let Some(sub) = self.sessions[session_key].subscription_mut(topic_key) else {
            return fail(
                ErrorCode::NotSubscribed,
                format!("not subscribed to '{name}'"),
            );
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
        if offset > sub.acked {
            let from = std::mem::replace(&mut sub.acked, offset);
            self.topics[topic_key].move_cursor(from, offset);
            self.release(topic_key);
        }
        Ok(())
    }

    /// Drops what every subscriber of `topic` has acknowledged.
    fn release(&mut self, topic_key: TopicKey) {
        let Some(topic) = self.topics.get_mut(topic_key) else {
            return;
        };
        let floor = topic.floor();
        if floor > topic.base_offset() {
            let (messages, bytes) = (topic.backlog_messages(), topic.backlog_bytes());
            topic.release_below(floor);
            self.counters.backlog_messages -= (messages - topic.backlog_messages()) as u64;
            self.counters.backlog_bytes -= (bytes - topic.backlog_bytes()) as u64;
        }
    }

    fn pull(
        &mut self,
        conn: ConnId,
        id: u64,
        request: Pull<'_>,
        now: Instant,
        out: &mut dyn Outbox,
    ) -> Result<(), Failure> {
        let session_key = self.subscriber(conn)?;
        let topic = match request.topic {
            None => None,
            Some(name) => {
                let key = self.topic_key(name)?;
                if self.sessions[session_key].subscription(key).is_none() {
                    return fail(
                        ErrorCode::NotSubscribed,
                        format!("not subscribed to '{name}'"),
                    );
                }
                Some(key)
            }
        };
        // One waiting pull per subscriber: a newer one supersedes it.
        if self.sessions[session_key].parked.is_some() {
            self.answer_parked_empty(session_key, out);
        }
        if request.ack {
            self.ack_delivered(session_key, topic);
        }
        let mut parked = Parked {
            conn,
            request_id: id,
            topic,
            max_messages: request.max_messages.clamp(1, MAX_PULL_MESSAGES),
            max_bytes: request.max_bytes,
            timer: None,
            queued: false,
        };
        if self.deliver(session_key, &parked, out) > 0 {
            return Ok(());
        }
        let wait_ms = request.wait_ms.min(MAX_PULL_WAIT_MS);
        if wait_ms == 0 {
            write_empty_messages(out, conn, id);
            return Ok(());
        }
        parked.timer = Some(self.timers.arm(
            now + Duration::from_millis(u64::from(wait_ms)),
            BrokerTimer::PullDeadline(session_key),
        ));
        self.sessions[session_key].parked = Some(parked);
        self.counters.waiting_pulls += 1;
        Ok(())
    }

    /// `ack = true` on a pull: everything delivered on the pulled topics is
    /// acknowledged.
    fn ack_delivered(&mut self, session_key: SessionKey, topic: Option<TopicKey>) {
        for index in 0..self.sessions[session_key].subscriptions().len() {
            let sub = &mut self.sessions[session_key].subscriptions_mut()[index];
            if topic.is_none_or(|t| t == sub.topic) && sub.acked < sub.delivered {
                let from = std::mem::replace(&mut sub.acked, sub.delivered);
                let (topic_key, to) = (sub.topic, sub.acked);
                self.topics[topic_key].move_cursor(from, to);
                self.release(topic_key);
            }
        }
    }

    fn cancel_parked(&mut self, key: SessionKey) -> Option<Parked> {
        let parked = self.sessions.get_mut(key)?.parked.take()?;
        if let Some(timer) = parked.timer {
            self.timers.cancel(timer);
        }
        self.counters.waiting_pulls -= 1;
        Some(parked)
    }

    fn answer_parked_empty(&mut self, key: SessionKey, out: &mut dyn Outbox) {
        if let Some(parked) = self.cancel_parked(key) {
            write_empty_messages(out, parked.conn, parked.request_id);
        }
    }

    fn answer_parked_with_error(
        &mut self,
        key: SessionKey,
        code: ErrorCode,
        message: &str,
        out: &mut dyn Outbox,
    ) {
        if let Some(parked) = self.cancel_parked(key) {
            self.send_error(parked.conn, parked.request_id, code, message, out);
        }
    }

    /// Answers the parked pulls that publishes made ready during this batch.
    pub fn answer_ready(&mut self, out: &mut dyn Outbox) {
        let mut ready = std::mem::take(&mut self.ready);
        for key in ready.drain(..) {
            let Some(session) = self.sessions.get_mut(key) else {
                continue;
            };
            let Some(parked) = session.parked.as_mut() else {
                continue;
            };
            parked.queued = false;
            let parked = *parked;
            if self.deliver(key, &parked, out) > 0 {
                self.cancel_parked(key);
            }
        }
        self.ready = ready;
    }

    /// Time until the next broker deadline, if any.
    pub fn next_deadline(&self, now: Instant) -> Option<Duration> {
        self.timers.until_next(now)
    }

    /// Fires every deadline due at `now`.
    pub fn fire_timers(&mut self, now: Instant, out: &mut dyn Outbox) {
        while let Some((timer, event)) = self.timers.pop_due(now) {
            match event {
                BrokerTimer::PullDeadline(key) => {
                    let current = self
                        .sessions
                        .get(key)
                        .is_some_and(|s| s.parked.is_some_and(|p| p.timer == Some(timer)));
                    if current {
                        self.answer_parked_empty(key, out);
                    }
                }
                BrokerTimer::SessionExpiry(key) => {
                    let due = self
                        .sessions
                        .get(key)
                        .is_some_and(|s| s.expiry == Some(timer) && s.conn.is_none());
                    if due {
                        self.expire(key);
                    }
                }
            }
        }
    }

    /// Answers every parked pull with SHUTTING_DOWN (which closes its
    /// connection).
    pub fn shutdown(&mut self, out: &mut dyn Outbox) {
        let parked: Vec<SessionKey> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.parked.is_some())
            .map(|(key, _)| key)
            .collect();
        for key in parked {
            self.answer_parked_with_error(
                key,
                ErrorCode::ShuttingDown,
                "the broker is shutting down",
                out,
            );
        }
    }

    pub fn stats(&self, now: Instant) -> Stats {
        let c = &self.counters;
        Stats {
            uptime_ms: now.duration_since(self.started).as_millis() as u64,
            connections: c.connections,
            connections_total: c.connections_total,
            topics: self.topics.len() as u64,
            publishers: c.publishers,
            subscribers: self.sessions.len() as u64,
            subscriptions: c.subscriptions,
            waiting_pulls: c.waiting_pulls,
            messages_in: c.messages_in,
            messages_out: c.messages_out,
            bytes_in: c.bytes_in,
            bytes_out: c.bytes_out,
            backlog_messages: c.backlog_messages,
            backlog_bytes: c.backlog_bytes,
            errors: ErrorCode::ALL
                .iter()
                .filter_map(|&code| {
                    let n = c.errors.get(code as usize).copied().unwrap_or(0);
                    (n > 0).then(|| (code.name().to_string(), n))
                })
                .collect(),
        }
    }
}

fn write_empty_messages(out: &mut dyn Outbox, conn: ConnId, id: u64) {
    if let Some(buf) = out.buffer(conn) {
        let start = codec::write_messages_header(buf, id, 0);
        codec::end_frame(buf, start);
    }
}

/// A PUBLISH payload or a PUBLISH_BATCH's payloads, borrowed from the frame.
#[derive(Clone, Copy)]
enum PublishInput<'a> {
    One(&'a [u8]),
    Batch(Payloads<'a>),
}

impl PublishInput<'_> {
    /// (messages, payload bytes, largest payload)
    fn measure(&self) -> (usize, usize, usize) {
        match self {
            PublishInput::One(payload) => (1, payload.len(), payload.len()),
            PublishInput::Batch(payloads) => payloads.iter().fold((0, 0, 0), |(n, sum, max), p| {
                (n + 1, sum + p.len(), max.max(p.len()))
            }),
        }
    }

    /// Copies the payloads out of the read buffer, once: a batch is copied
    /// as one block and each message is a slice of it.
    fn append_to(&self, topic: &mut Topic) {
        match self {
            PublishInput::One(payload) => {
                topic.push(Bytes::copy_from_slice(payload));
            }
            PublishInput::Batch(payloads) => {
                let block = Bytes::copy_from_slice(payloads.encoded);
                let base = payloads.encoded.as_ptr() as usize;
                for payload in payloads.iter() {
                    let start = payload.as_ptr() as usize - base;
                    topic.push(block.slice(start..start + payload.len()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
