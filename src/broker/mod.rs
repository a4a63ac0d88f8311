//! The broker's state machine: topics, publishers, subscriber sessions and
//! waiting pulls, owned by one thread and touched by nothing else.
//!
//! It knows no sockets. The server hands it a decoded frame body and an
//! [`Outbox`] — the write buffers of the connections — and the broker appends
//! encoded replies there. This keeps every rule of the protocol testable
//! without I/O. Durability goes the same way: the broker writes records to
//! a [`Journal`] (the storage log, in a server) and learns back what is
//! durable; it never touches a file itself (see `journal`).
//!
//! Waking waiting pulls is deferred to the end of the server's batch
//! ([`Broker::answer_ready`]), like Redis's `beforeSleep`: a burst of
//! publishes read in one go wakes each subscriber once, with everything that
//! arrived, instead of once per message.
//!
//! # Layout
//!
//! One [`Broker`] owns every table; its methods are spread over the files
//! below by job, each an `impl Broker` block, so that a change to one rule
//! reads one file. The data types (`topic`, `session`) know nothing of the
//! broker and are tested alone.
//!
//! - this file: the [`Broker`] itself, the [`Outbox`] it writes to, its
//!   [`Limits`], request dispatch and timers.
//! - `keys`: the keys of the tables, shared by everything below.
//! - `failure`: why a request is refused — a code to match and a message.
//! - `cost`: what each piece of state costs in the memory budget, so that
//!   adding and dropping it charge the same and tests can recount it.
//! - `clients`: connections, the handshake, roles taken.
//! - `publishing`: the topic table, topic creation and deletion, publishes.
//! - `pending`: publish replies that wait — held for room, or stored and
//!   waiting for the disk — released per connection and topic in order.
//! - `subscribing`: sessions and their lifecycle, subscriptions, acks.
//! - `pull`: pulls answered, parked, woken, and their replies built.
//! - `cache`: the memory cache of a durable broker — which topic evicts
//!   when `--cache-bytes` is full.
//! - `disk`: reading evicted messages back off the loop thread, for
//!   subscribers behind the cache ([`Broker::read_range`]).
//! - `stats`: counters and the STATS reply.
//! - `waiting`: which subscriptions have something to deliver — a topic's
//!   caught-up subscribers, a session's ready topics — and the cost argument
//!   that each request pays only for what it touches.
//! - `admin`: LIST_TOPICS, TOPIC_INFO and END_SESSION.
//! - `journal`: the records written to the durable log, the writer's
//!   reports applied (visibility, losses), and recovery from a log.
//! - `topic`: one topic's retained messages and acknowledgement floor.
//! - `session`: one session's subscriptions and its waiting pulls.
//! - `keyset`: the set that topics keep their subscribers in.
//! - `retention`: how far a topic may forget (until acked, or by age and
//!   size), append times, start positions.
//! - `fetch`: FETCH, reading a topic without a session.
//! - `producers`: idempotent producers' last seqs and recent replies.

mod admin;
mod cache;
mod clients;
mod cost;
mod disk;
mod failure;
mod fetch;
mod journal;
pub mod keys;
mod keyset;
mod pending;
mod producers;
mod publishing;
mod pull;
mod retention;
pub mod session;
mod stats;
mod subscribing;
pub mod topic;
mod waiting;

pub use clients::{AUTH_FAILURE_DELAY, AuthFailure, AuthFailureReason, MAX_CLIENT_NAME_BYTES};
pub use disk::{MAX_READS_IN_FLIGHT, READER_THREADS};
pub use journal::{Journal, Recovered};
pub use keys::ConnId;

use crate::budget::Budget;
use crate::codec;
use crate::protocol::{ErrorCode, PAYLOAD_OVERHEAD_BYTES, Position, Reply, Request, Retention};
use crate::timers::Timers;
use clients::ClientState;
use failure::{Failure, fail};
use keys::{SessionKey, TopicKey};
use pending::Pending;
use publishing::PublishInput;
use session::{IdGenerator, Session};
use slab::Slab;
use stats::Counters;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};
use topic::Topic;

/// Where the broker writes replies: the connections' write buffers.
pub trait Outbox {
    /// The write buffer of a live connection; `None` if it is gone.
    fn buffer(&mut self, conn: ConnId) -> Option<&mut Vec<u8>>;
    /// Close the connection once what is already buffered has been sent.
    fn close(&mut self, conn: ConnId);
}

/// An outbox for paths with nobody to answer: it holds no connection.
struct NoOutbox;

impl Outbox for NoOutbox {
    fn buffer(&mut self, _: ConnId) -> Option<&mut Vec<u8>> {
        None
    }
    fn close(&mut self, _: ConnId) {}
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
    /// The longest session timeout REGISTER_SUBSCRIBER may ask for; longer
    /// requests are clamped to it.
    pub max_session_timeout: Duration,
    /// Everything held on clients' behalf, together (see [`crate::budget`]).
    pub max_memory: usize,
    /// Subscriber sessions, attached or detached, together.
    pub max_sessions: usize,
    /// Subscriptions one session may hold.
    pub max_subscriptions_per_session: usize,
    /// A connection's output high-water mark: past it, its requests wait
    /// until its replies drain to half (the server's flow control; told to
    /// clients in HELLO).
    pub max_output_bytes: usize,
    /// How long a publish to a full topic (or a full broker) is held before
    /// it is refused with TOPIC_FULL (BROKER_FULL); zero refuses at once.
    pub publish_hold: Duration,
    /// Pulls one subscriber may have waiting at once (told in HELLO).
    pub max_waiting_pulls: usize,
    /// A durable broker's memory cache: payload bytes kept in memory, all
    /// topics together; older visible messages are evicted and read back
    /// from the log (see `cache`). Ignored without a log.
    pub cache_bytes: usize,
    /// The log's bytes on disk at most (`None`: no bound). Past it,
    /// publishes are held, then refused DISK_FULL.
    pub max_disk_bytes: Option<u64>,
}

/// `--max-backlog-bytes` of a durable broker, whose backlog is on disk.
pub const DURABLE_MAX_BACKLOG_BYTES: usize = 1 << 30;
/// `--max-backlog-messages` of a durable broker.
pub const DURABLE_MAX_BACKLOG_MESSAGES: usize = 16_000_000;
/// `--cache-bytes`: a quarter of the default `--max-memory`.
pub const DEFAULT_CACHE_BYTES: usize = 256 << 20;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: crate::protocol::DEFAULT_MAX_FRAME_BYTES,
            max_backlog_bytes: 64 * 1024 * 1024,
            max_backlog_messages: 1_000_000,
            max_topics: 100_000,
            max_subscribers_per_topic: 10_000,
            session_timeout: Duration::from_secs(60),
            max_session_timeout: Duration::from_secs(7 * 24 * 3600),
            max_memory: 1 << 30,
            max_sessions: 100_000,
            // As many as there may be topics: one session may follow all.
            max_subscriptions_per_session: 100_000,
            max_output_bytes: 16 * 1024 * 1024,
            publish_hold: Duration::from_secs(5),
            max_waiting_pulls: 4,
            cache_bytes: DEFAULT_CACHE_BYTES,
            max_disk_bytes: None,
        }
    }
}

impl Limits {
    pub fn max_payload_bytes(&self) -> usize {
        self.max_frame_bytes.saturating_sub(PAYLOAD_OVERHEAD_BYTES)
    }

    /// Held publish bytes past which a connection is not read any more.
    pub fn max_held_bytes(&self) -> usize {
        HELD_FRAMES * self.max_frame_bytes
    }
}

/// The share of `max_memory` kept for replies: state stops growing at
/// 15/16 of the budget, so pulls and acks still work when it is full.
const RESERVE_FRACTION: usize = 16;

/// A connection may have this many frames' worth of publishes held before
/// it is not read any more: enough to keep a pipeline full, few enough that
/// TCP soon pushes back.
const HELD_FRAMES: usize = 4;

#[derive(Debug, Clone, Copy)]
enum BrokerTimer {
    PullDeadline(SessionKey),
    SessionExpiry(SessionKey),
    PublishHold {
        conn: ConnId,
        topic: TopicKey,
        serial: u64,
    },
    /// A refused HELLO's AUTH_FAILED is due.
    AuthFailed(ConnId),
    /// A retained topic's oldest message leaves by age.
    Retention(TopicKey),
}

pub struct Broker {
    limits: Limits,
    started: Instant,
    clients: Vec<Option<ClientState>>,
    topics: Slab<Topic>,
    /// Sorted, so that LIST_TOPICS pages in name order.
    topic_names: BTreeMap<Box<str>, TopicKey>,
    /// Durable topic ids (see `journal`) to keys.
    topic_ids: HashMap<crate::storage::TopicId, TopicKey>,
    journal: journal::JournalState,
    sessions: Slab<Session>,
    session_ids: HashMap<u64, SessionKey>,
    ids: IdGenerator,
    next_publisher_id: u64,
    timers: Timers<BrokerTimer>,
    /// Sessions whose parked pulls have something to take.
    ready: Vec<SessionKey>,
    counters: Counters,
    /// Reused by every pull to plan its reply.
    plan: Vec<pull::Group>,
    /// What the broker and its connections hold, against `max_memory`.
    budget: Budget,
    /// Publish replies that wait (held for room, or for the disk).
    pending: Pending,
    /// Idempotent producers' last seqs and recent replies.
    producers: producers::Producers,
    /// Reads of the log for subscribers behind the cache.
    disk: disk::DiskReads,
    /// Which topics hold the cached messages.
    cache: cache::Cache,
    /// Table entries visited (subscriptions, subscribers, sessions), for
    /// tests that check each request's work by counting it; one add per
    /// visit is noise beside the visit itself.
    work: u64,
    /// The users and their grants, when the broker requires them.
    users: Option<crate::auth::Users>,
    /// Refused authentications, until the server logs them.
    auth_failures: Vec<AuthFailure>,
}

impl Broker {
    pub fn new(limits: Limits, now: Instant) -> Self {
        Broker {
            started: now,
            clients: Vec::new(),
            topics: Slab::new(),
            topic_names: BTreeMap::new(),
            topic_ids: HashMap::new(),
            journal: journal::JournalState::default(),
            sessions: Slab::new(),
            session_ids: HashMap::new(),
            ids: IdGenerator::from_os(),
            next_publisher_id: 1,
            timers: Timers::new(),
            ready: Vec::new(),
            counters: Counters::default(),
            plan: Vec::new(),
            budget: Budget::new(limits.max_memory, limits.max_memory / RESERVE_FRACTION),
            work: 0,
            pending: Pending::new(limits.max_held_bytes()),
            users: None,
            auth_failures: Vec::new(),
            producers: producers::Producers::default(),
            disk: disk::DiskReads::default(),
            cache: cache::Cache::default(),
            limits,
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The memory budget: the broker counts its state in it, the server its
    /// connections' buffers.
    pub fn budget(&self) -> &Budget {
        &self.budget
    }

    pub fn budget_mut(&mut self) -> &mut Budget {
        &mut self.budget
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
        let Some(handshaken) = self.client(conn).map(ClientState::handshaken) else {
            return;
        };
        // Refused, waiting out the delay: nothing more is executed.
        if self.auth_failing(conn) {
            return;
        }
        let (id, request) = match codec::decode_request(body) {
            Ok(decoded) => decoded,
            Err(e) => {
                // An undecodable first frame is not a handshake either.
                let code = if handshaken {
                    e.code()
                } else {
                    ErrorCode::HandshakeRequired
                };
                return self.send_error(conn, e.id.unwrap_or(0), code, &e.to_string(), out);
            }
        };
        let result = if handshaken {
            self.execute(conn, id, request, now, out)
        } else {
            self.handshake(conn, id, request, now)
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

    /// One request after the handshake. `Ok(None)` means the reply is not
    /// written yet (a parked pull, a held publish) or was written directly
    /// (a pull's messages).
    fn execute(
        &mut self,
        conn: ConnId,
        id: u64,
        request: Request<'_>,
        now: Instant,
        out: &mut dyn Outbox,
    ) -> Result<Option<Reply>, Failure> {
        if let Some(user) = self.client(conn).and_then(|c| c.user.as_deref())
            && !crate::auth::permits(user, request.op(), request.topic())
        {
            return fail(
                ErrorCode::Forbidden,
                forbidden_message(&user.name, &request),
            );
        }
        match request {
            Request::Hello { .. } => fail(
                ErrorCode::HandshakeRepeated,
                "HELLO was already done on this connection",
            ),
            Request::RegisterPublisher => self.register_publisher(conn, None).map(Some),
            Request::RegisterProducer { producer_id } => {
                self.register_publisher(conn, Some(producer_id)).map(Some)
            }
            Request::CreateTopic { topic } => {
                self.publisher(conn)?;
                self.create_topic(topic, Retention::UntilAcked)?;
                Ok(self.gate_reply(conn, id, Reply::Done))
            }
            Request::CreateTopicWith { topic, retention } => {
                self.publisher(conn)?;
                self.create_topic(topic, retention)?;
                Ok(self.gate_reply(conn, id, Reply::Done))
            }
            Request::DeleteTopic { topic } => {
                self.publisher(conn)?;
                self.delete_topic(topic, out)?;
                Ok(self.gate_reply(conn, id, Reply::Done))
            }
            Request::Publish { topic, payload } => {
                self.publisher(conn)?;
                let input = PublishInput::One(payload);
                self.publish_request(conn, id, topic, input, None, now, out)
            }
            Request::PublishBatch { topic, payloads } => {
                self.publisher(conn)?;
                let input = PublishInput::Batch(payloads);
                self.publish_request(conn, id, topic, input, None, now, out)
            }
            Request::PublishSeq {
                topic,
                payload,
                seq,
            } => {
                self.publisher(conn)?;
                let input = PublishInput::One(payload);
                self.publish_request(conn, id, topic, input, Some(seq), now, out)
            }
            Request::PublishBatchSeq {
                topic,
                payloads,
                first_seq,
            } => {
                self.publisher(conn)?;
                let input = PublishInput::Batch(payloads);
                self.publish_request(conn, id, topic, input, Some(first_seq), now, out)
            }
            Request::RegisterSubscriber { resume, timeout_ms } => {
                let reply = self.register_subscriber(conn, resume, timeout_ms, now, out)?;
                Ok(self.gate_reply(conn, id, reply))
            }
            Request::Subscribe { topic } => {
                let reply = self.subscribe(conn, topic, Position::New)?;
                Ok(self.gate_reply(conn, id, reply))
            }
            Request::SubscribeFrom { topic, position } => {
                let reply = self.subscribe(conn, topic, position)?;
                Ok(self.gate_reply(conn, id, reply))
            }
            Request::Seek { topic, position } => self.seek(conn, topic, position).map(Some),
            Request::Fetch {
                topic,
                offset,
                max_messages,
                max_bytes,
            } => self
                .fetch(conn, id, topic, offset, max_messages, max_bytes)
                .map(|f| f.map(Reply::Fetched)),
            Request::Unsubscribe { topic } => {
                self.unsubscribe(conn, topic, out)?;
                Ok(self.gate_reply(conn, id, Reply::Done))
            }
            Request::Pull(pull) => self.pull(conn, id, pull, now, out).map(|()| None),
            Request::Ack { topic, offset } => {
                self.ack(conn, topic, offset).map(|()| Some(Reply::Done))
            }
            Request::Stats => Ok(Some(Reply::Stats(Box::new(self.stats(now))))),
            Request::EndSession => {
                self.end_session(conn, out)?;
                Ok(self.gate_reply(conn, id, Reply::Done))
            }
            Request::ListTopics { after, limit } => {
                let user = self.client(conn).and_then(|c| c.user.clone());
                let visible = |name: &str| user.as_deref().is_none_or(|u| u.sees(name));
                Ok(Some(Reply::Topics(self.list_topics(after, limit, visible))))
            }
            Request::TopicInfo { topic } => {
                self.topic_info(topic).map(|t| Some(Reply::TopicInfo(t)))
            }
        }
    }

    /// Time until the next broker deadline, if any.
    pub fn next_deadline(&self, now: Instant) -> Option<Duration> {
        self.timers.until_next(now)
    }

    /// Fires every deadline due at `now`. A timer whose owner has moved on
    /// (the pull was answered, the session resumed) is recognised by its key
    /// and ignored.
    pub fn fire_timers(&mut self, now: Instant, out: &mut dyn Outbox) {
        while let Some((timer, event)) = self.timers.pop_due(now) {
            match event {
                BrokerTimer::PullDeadline(key) => self.pull_deadline(key, timer, out),
                BrokerTimer::SessionExpiry(key) => {
                    let due = self
                        .sessions
                        .get(key)
                        .is_some_and(|s| s.expiry == Some(timer) && s.conn.is_none());
                    if due {
                        self.expire(key, crate::storage::SessionEnd::Expired, true);
                    }
                }
                BrokerTimer::PublishHold {
                    conn,
                    topic,
                    serial,
                } => self.hold_expired(conn, topic, serial, out),
                BrokerTimer::AuthFailed(conn) => self.auth_delay_over(conn, timer, out),
                BrokerTimer::Retention(topic) => self.retention_due(topic, timer),
            }
        }
    }
}

/// FORBIDDEN's text: who, which operation, which topic (or "any topic"
/// for an operation checked against every pattern).
fn forbidden_message(user: &str, request: &Request<'_>) -> String {
    let op = request.op();
    let name = op.name();
    match (request.topic(), crate::auth::rule(op)) {
        (Some(topic), _) => format!("user {user} may not {name} on topic {topic}"),
        (None, crate::auth::Rule::OnTopic(kind) | crate::auth::Rule::Anywhere(kind)) => {
            format!(
                "user {user} may not {name}: it needs a {} grant",
                kind.name()
            )
        }
        (None, _) => format!("user {user} may not {name}"),
    }
}

#[cfg(test)]
mod tests;
