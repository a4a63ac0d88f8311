//! The vocabulary of the wire protocol, shared by the broker and the client.
//!
//! Everything a peer can say is a value of a type in this file: operation
//! codes, error codes, requests and replies. PROTOCOL.md is the normative
//! description; the numbers here are the ones it lists, and they never change
//! meaning once published (new ones may be added). The byte-level encoding of
//! these types lives in `codec`.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// The protocol version this crate speaks. Version 2 added END_SESSION,
/// LIST_TOPICS and TOPIC_INFO; a broker answers any other version with
/// UNSUPPORTED_VERSION.
pub const PROTOCOL_VERSION: u64 = 2;

/// Bytes of the big-endian `u32` length prefix in front of every frame.
pub const FRAME_HEADER_LEN: usize = 4;

/// Default limit on a frame's body, in either direction.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 1024 * 1024;

/// Room a frame needs beyond its payload: the array header, operation, id and
/// a maximal topic name in a publish, or the same in a one-message pull reply.
/// The largest payload is `max_frame_bytes - PAYLOAD_OVERHEAD_BYTES`, which
/// guarantees that any message that could be published fits in a pull reply.
pub const PAYLOAD_OVERHEAD_BYTES: usize = 512;

/// Longest topic name, in bytes.
pub const MAX_TOPIC_NAME_BYTES: usize = 255;

/// Most messages one pull may return, whatever the request asks.
pub const MAX_PULL_MESSAGES: u32 = 65_536;

/// Longest a pull may wait, whatever the request asks (ms).
pub const MAX_PULL_WAIT_MS: u32 = 600_000;

/// Most topics one LIST_TOPICS page holds, whatever the request asks (it
/// may hold fewer: a page also stops where the frame would be full).
pub const MAX_LIST_TOPICS: u32 = 1000;

/// Operation codes: the first element of every request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Op {
    Hello = 1,
    RegisterPublisher = 2,
    CreateTopic = 3,
    DeleteTopic = 4,
    Publish = 5,
    PublishBatch = 6,
    RegisterSubscriber = 7,
    Subscribe = 8,
    Unsubscribe = 9,
    Pull = 10,
    Ack = 11,
    Stats = 12,
    EndSession = 13,
    ListTopics = 14,
    TopicInfo = 15,
    Seek = 16,
    Fetch = 17,
}

impl Op {
    pub fn from_code(code: u64) -> Option<Op> {
        Some(match code {
            1 => Op::Hello,
            2 => Op::RegisterPublisher,
            3 => Op::CreateTopic,
            4 => Op::DeleteTopic,
            5 => Op::Publish,
            6 => Op::PublishBatch,
            7 => Op::RegisterSubscriber,
            8 => Op::Subscribe,
            9 => Op::Unsubscribe,
            10 => Op::Pull,
            11 => Op::Ack,
            12 => Op::Stats,
            13 => Op::EndSession,
            14 => Op::ListTopics,
            15 => Op::TopicInfo,
            16 => Op::Seek,
            17 => Op::Fetch,
            _ => return None,
        })
    }

    /// The operation's name as PROTOCOL.md writes it (for messages).
    pub fn name(self) -> &'static str {
        match self {
            Op::Hello => "HELLO",
            Op::RegisterPublisher => "REGISTER_PUBLISHER",
            Op::CreateTopic => "CREATE_TOPIC",
            Op::DeleteTopic => "DELETE_TOPIC",
            Op::Publish => "PUBLISH",
            Op::PublishBatch => "PUBLISH_BATCH",
            Op::RegisterSubscriber => "REGISTER_SUBSCRIBER",
            Op::Subscribe => "SUBSCRIBE",
            Op::Unsubscribe => "UNSUBSCRIBE",
            Op::Pull => "PULL",
            Op::Ack => "ACK",
            Op::Stats => "STATS",
            Op::EndSession => "END_SESSION",
            Op::ListTopics => "LIST_TOPICS",
            Op::TopicInfo => "TOPIC_INFO",
            Op::Seek => "SEEK",
            Op::Fetch => "FETCH",
        }
    }
}

macro_rules! error_codes {
    ($($name:ident = $code:literal, $label:literal, $closes:literal, $retry:literal, $doc:literal;)*) => {
        /// Stable error codes carried in error replies. The meaning of a number
        /// never changes; see PROTOCOL.md for when each is sent.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u16)]
        pub enum ErrorCode {
            $(#[doc = $doc] $name = $code,)*
        }

        impl ErrorCode {
            /// Every code, in numeric order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$name,)*];

            pub fn from_code(code: u64) -> Option<ErrorCode> {
                match code {
                    $($code => Some(ErrorCode::$name),)*
                    _ => None,
                }
            }

            /// The SCREAMING_CASE name used in PROTOCOL.md and in stats.
            pub fn name(self) -> &'static str {
                match self { $(ErrorCode::$name => $label,)* }
            }

            /// True if the broker closes the connection after sending it.
            pub fn closes_connection(self) -> bool {
                match self { $(ErrorCode::$name => $closes,)* }
            }

            /// True if the same request may succeed later unchanged.
            pub fn is_retryable(self) -> bool {
                match self { $(ErrorCode::$name => $retry,)* }
            }
        }
    };
}

error_codes! {
    MalformedRequest = 1, "MALFORMED_REQUEST", false, false,
        "The frame is not a well-formed request (wrong shape or field type).";
    UnknownOperation = 2, "UNKNOWN_OPERATION", false, false,
        "The operation code is not one this server knows.";
    FrameTooLarge = 3, "FRAME_TOO_LARGE", true, false,
        "The length prefix exceeds the server's maximum frame size.";
    UnsupportedVersion = 4, "UNSUPPORTED_VERSION", true, false,
        "HELLO asked for a protocol version the server does not speak.";
    HandshakeRequired = 5, "HANDSHAKE_REQUIRED", true, false,
        "A request other than HELLO came before the handshake.";
    HandshakeRepeated = 6, "HANDSHAKE_REPEATED", false, false,
        "HELLO came after the handshake was already done.";
    NotRegistered = 7, "NOT_REGISTERED", false, false,
        "The operation needs a publisher (or subscriber) registered on this connection.";
    InvalidTopicName = 8, "INVALID_TOPIC_NAME", false, false,
        "The topic name is empty, too long, or has a character outside [A-Za-z0-9._-].";
    UnknownTopic = 9, "UNKNOWN_TOPIC", false, false,
        "No topic by that name exists.";
    TopicExists = 10, "TOPIC_EXISTS", false, false,
        "CREATE_TOPIC named a topic that already exists.";
    TopicFull = 11, "TOPIC_FULL", false, true,
        "The topic's backlog is at its bound; retry after subscribers catch up.";
    TopicDeleted = 12, "TOPIC_DELETED", false, false,
        "The topic was deleted while a pull waited on it.";
    NotSubscribed = 13, "NOT_SUBSCRIBED", false, false,
        "The subscriber is not subscribed to that topic.";
    UnknownSubscriber = 14, "UNKNOWN_SUBSCRIBER", false, false,
        "No subscriber session with that id exists (never did, or it expired).";
    PayloadTooLarge = 15, "PAYLOAD_TOO_LARGE", false, false,
        "A message payload exceeds the server's maximum payload size.";
    InvalidAck = 16, "INVALID_ACK", false, false,
        "ACK named an offset beyond what was delivered to this subscriber.";
    TooManyTopics = 17, "TOO_MANY_TOPICS", false, true,
        "The server holds its maximum number of topics.";
    TooManyConnections = 18, "TOO_MANY_CONNECTIONS", true, true,
        "The server holds its maximum number of connections.";
    SessionTakenOver = 19, "SESSION_TAKEN_OVER", false, false,
        "Another connection resumed this subscriber session.";
    Timeout = 20, "TIMEOUT", true, false,
        "The handshake, or a partly sent frame, took longer than the server allows.";
    ShuttingDown = 21, "SHUTTING_DOWN", true, true,
        "The server is shutting down.";
    TooManySubscribers = 22, "TOO_MANY_SUBSCRIBERS", false, true,
        "The topic holds its maximum number of subscribers.";
    BrokerFull = 23, "BROKER_FULL", false, true,
        "The broker's memory budget (--max-memory) has no room for the state this request would add.";
    BatchTooLarge = 24, "BATCH_TOO_LARGE", false, false,
        "A PUBLISH_BATCH holds more messages or bytes than a topic may ever retain.";
    TooManySessions = 25, "TOO_MANY_SESSIONS", false, true,
        "The broker holds its maximum number of subscriber sessions (--max-sessions).";
    TooManySubscriptions = 26, "TOO_MANY_SUBSCRIPTIONS", false, true,
        "The session holds its maximum number of subscriptions (--max-subscriptions-per-session).";
    StorageUnavailable = 27, "STORAGE_UNAVAILABLE", false, true,
        "The broker could not make the request durable (a write or fsync of its log failed); nothing of it was kept. Retry: the log starts a new segment.";
    SequenceGap = 28, "SEQUENCE_GAP", false, false,
        "A producer's publish numbered beyond its last stored sequence + 1; nothing was stored.";
    DuplicateSequence = 29, "DUPLICATE_SEQUENCE", false, false,
        "The publish's sequence was stored long ago (its offset is no longer remembered); it IS stored, once: treat it as done.";
    AuthFailed = 30, "AUTH_FAILED", true, false,
        "HELLO carried no credentials, or wrong ones, while the broker requires them (--users); sent after a short fixed delay. Also sent when the user is removed or its token replaced while connected.";
    Forbidden = 31, "FORBIDDEN", false, false,
        "The user may not do this operation on this topic; the message names both.";
    DiskFull = 32, "DISK_FULL", false, true,
        "The broker's log is at its bound on disk (--max-disk); nothing was stored. Retry after subscribers acknowledge and old segments are deleted.";
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a topic name is refused. Names are 1 to 255 bytes of `[A-Za-z0-9._-]`.
pub fn validate_topic_name(name: &str) -> Result<(), ErrorCode> {
    let ok = !name.is_empty()
        && name.len() <= MAX_TOPIC_NAME_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ErrorCode::InvalidTopicName)
    }
}

/// The payloads of a PUBLISH_BATCH, still in their encoded form.
///
/// Decoding checks every element once; iterating reads them again from the
/// frame, so a batch of thousands costs no allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Payloads<'a> {
    pub(crate) encoded: &'a [u8],
    pub(crate) count: u32,
}

impl<'a> Payloads<'a> {
    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        crate::codec::iter_payloads(self)
    }
}

/// One decoded request, borrowing its strings and payloads from the frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request<'a> {
    Hello {
        version: u64,
        client_name: &'a str,
        /// The optional 5th element (protocol version 2): who the client
        /// is, when the broker requires users. `None`: left out or `nil`.
        credentials: Option<Credentials<'a>>,
    },
    RegisterPublisher,
    CreateTopic {
        topic: &'a str,
    },
    DeleteTopic {
        topic: &'a str,
    },
    Publish {
        topic: &'a str,
        payload: &'a [u8],
    },
    PublishBatch {
        topic: &'a str,
        payloads: Payloads<'a>,
    },
    RegisterSubscriber {
        /// `None` registers a new subscriber; `Some(id)` resumes one.
        resume: Option<u64>,
        /// How long a new session is kept without a connection; `None`: the
        /// broker's `session_timeout_ms`. Above `max_session_timeout_ms` it
        /// is clamped. A resumed session keeps the timeout it was created
        /// with, so this is ignored there. Sent as an optional 4th element.
        timeout_ms: Option<u64>,
    },
    Subscribe {
        topic: &'a str,
    },
    Unsubscribe {
        topic: &'a str,
    },
    Pull(Pull<'a>),
    Ack {
        topic: &'a str,
        /// Everything below this offset is acknowledged.
        offset: u64,
    },
    Stats,
    /// Ends this connection's subscriber session now.
    EndSession,
    ListTopics {
        /// Start after this name (`None`: from the first topic).
        after: Option<&'a str>,
        /// At most this many topics; clamped to 1..=[`MAX_LIST_TOPICS`].
        limit: u32,
    },
    TopicInfo {
        topic: &'a str,
    },
    // The variants below carry protocol version 2's optional trailing
    // elements (ROUND4): a request that leaves them out decodes to the
    // plain variant above, so the version 1 shapes keep their variants.
    /// CREATE_TOPIC with a non-empty options map.
    CreateTopicWith {
        topic: &'a str,
        retention: Retention,
    },
    /// SUBSCRIBE with a start position.
    SubscribeFrom {
        topic: &'a str,
        position: Position,
    },
    /// REGISTER_PUBLISHER with a durable producer id (1..=255 bytes).
    RegisterProducer {
        producer_id: &'a str,
    },
    /// PUBLISH numbered by the connection's producer.
    PublishSeq {
        topic: &'a str,
        payload: &'a [u8],
        seq: u64,
    },
    /// PUBLISH_BATCH numbered `first_seq..first_seq + count`.
    PublishBatchSeq {
        topic: &'a str,
        payloads: Payloads<'a>,
        first_seq: u64,
    },
    /// Moves the subscription's cursor (op 16).
    Seek {
        topic: &'a str,
        position: Position,
    },
    /// Reads messages without a session (op 17).
    Fetch {
        topic: &'a str,
        offset: u64,
        max_messages: u32,
        max_bytes: u32,
    },
}

/// A topic's retention, from CREATE_TOPIC's options map. `UntilAcked`
/// (no map, or an empty one) is the version 1 behaviour: a message goes
/// once every subscriber acknowledged it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Retention {
    #[default]
    UntilAcked,
    /// Messages are kept whoever acknowledged them, and go oldest first
    /// once older than `retain_ms` or beyond `retain_bytes` of payload
    /// (0 = no bound of that kind).
    Keep { retain_ms: u64, retain_bytes: u64 },
}

/// Where a subscription starts, or where SEEK moves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// The next message published (`"new"`).
    New,
    /// The oldest message retained (`"earliest"`).
    Earliest,
    /// An exact offset, clamped to what is retained.
    Offset(u64),
    /// The first message appended at or after this Unix time, in ms
    /// (`{"time_ms": n}`).
    TimeMs(u64),
}

/// The longest producer id REGISTER_PUBLISHER accepts, in bytes.
pub const MAX_PRODUCER_ID_BYTES: usize = 255;

/// One message of a FETCH reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedMessage {
    pub offset: u64,
    /// The broker's append time, Unix ms.
    pub time_ms: u64,
    pub payload: Bytes,
}

/// The FETCH reply: messages from the asked offset (clamped to
/// `earliest_offset`), where to fetch next, and the topic's bounds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fetched {
    pub messages: Vec<FetchedMessage>,
    pub next_offset: u64,
    pub earliest_offset: u64,
    pub end_offset: u64,
}

impl<'a> Request<'a> {
    pub fn op(&self) -> Op {
        match self {
            Request::Hello { .. } => Op::Hello,
            Request::RegisterPublisher => Op::RegisterPublisher,
            Request::CreateTopic { .. } => Op::CreateTopic,
            Request::DeleteTopic { .. } => Op::DeleteTopic,
            Request::Publish { .. } => Op::Publish,
            Request::PublishBatch { .. } => Op::PublishBatch,
            Request::RegisterSubscriber { .. } => Op::RegisterSubscriber,
            Request::Subscribe { .. } => Op::Subscribe,
            Request::Unsubscribe { .. } => Op::Unsubscribe,
            Request::Pull(_) => Op::Pull,
            Request::Ack { .. } => Op::Ack,
            Request::Stats => Op::Stats,
            Request::EndSession => Op::EndSession,
            Request::ListTopics { .. } => Op::ListTopics,
            Request::TopicInfo { .. } => Op::TopicInfo,
            Request::CreateTopicWith { .. } => Op::CreateTopic,
            Request::SubscribeFrom { .. } => Op::Subscribe,
            Request::RegisterProducer { .. } => Op::RegisterPublisher,
            Request::PublishSeq { .. } => Op::Publish,
            Request::PublishBatchSeq { .. } => Op::PublishBatch,
            Request::Seek { .. } => Op::Seek,
            Request::Fetch { .. } => Op::Fetch,
        }
    }

    /// The topic the request names, if it names one (what permissions are
    /// checked against, see `auth::rule`).
    pub fn topic(&self) -> Option<&'a str> {
        match self {
            Request::CreateTopic { topic }
            | Request::DeleteTopic { topic }
            | Request::Publish { topic, .. }
            | Request::PublishBatch { topic, .. }
            | Request::Subscribe { topic }
            | Request::Unsubscribe { topic }
            | Request::Ack { topic, .. }
            | Request::TopicInfo { topic }
            | Request::CreateTopicWith { topic, .. }
            | Request::SubscribeFrom { topic, .. }
            | Request::PublishSeq { topic, .. }
            | Request::PublishBatchSeq { topic, .. }
            | Request::Seek { topic, .. }
            | Request::Fetch { topic, .. } => Some(topic),
            Request::Pull(pull) => pull.topic,
            Request::Hello { .. }
            | Request::RegisterPublisher
            | Request::RegisterProducer { .. }
            | Request::RegisterSubscriber { .. }
            | Request::Stats
            | Request::EndSession
            | Request::ListTopics { .. } => None,
        }
    }
}

/// HELLO's credentials: the map `{"user": str, "token": str}`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Credentials<'a> {
    pub user: &'a str,
    pub token: &'a str,
}

/// Never prints the token, so a credentials value can be logged or
/// shown in a failed assertion without leaking it.
impl fmt::Debug for Credentials<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("token", &"<hidden>")
            .finish()
    }
}

/// The arguments of a PULL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pull<'a> {
    /// One topic, or `None` for every topic the subscriber is subscribed to.
    pub topic: Option<&'a str>,
    /// At most this many messages (at least one is always allowed).
    pub max_messages: u32,
    /// At most this many payload bytes, except that one message is always
    /// returned when one is ready, whatever its size.
    pub max_bytes: u32,
    /// How long to wait when nothing is ready (0 = answer at once).
    pub wait_ms: u32,
    /// Acknowledge everything delivered so far (on the pulled topics) first.
    pub ack: bool,
}

/// What the server says about itself and its limits in reply to HELLO.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerInfo {
    pub version: u64,
    pub server: String,
    pub max_frame_bytes: u64,
    pub max_payload_bytes: u64,
    pub max_topic_name_bytes: u64,
    pub max_pull_messages: u64,
    pub max_backlog_bytes: u64,
    pub max_backlog_messages: u64,
    pub session_timeout_ms: u64,
    /// The output high-water mark: past it the broker stops executing the
    /// connection's requests until its replies drain to half. Absent (0)
    /// from a broker that predates it.
    #[serde(default)]
    pub max_output_bytes: u64,
    /// How long a publish to a full topic is held before it is refused
    /// (`--publish-hold`; 0: refused at once). Absent (0) from a broker that
    /// predates it.
    #[serde(default)]
    pub publish_hold_ms: u64,
    /// How many pulls one subscriber may have waiting at once; past it the
    /// oldest is answered empty. Absent (0) from a broker that predates it,
    /// which keeps one.
    #[serde(default)]
    pub max_waiting_pulls: u64,
    /// The longest session timeout REGISTER_SUBSCRIBER may ask for
    /// (`--max-session-timeout`); longer requests are clamped to it. Absent
    /// (0) from a broker that predates it: ask for no timeout there.
    #[serde(default)]
    pub max_session_timeout_ms: u64,
}

/// Counters reported by STATS.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Stats {
    pub uptime_ms: u64,
    pub connections: u64,
    pub connections_total: u64,
    pub topics: u64,
    pub publishers: u64,
    pub subscribers: u64,
    pub subscriptions: u64,
    pub waiting_pulls: u64,
    pub messages_in: u64,
    pub messages_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub backlog_messages: u64,
    pub backlog_bytes: u64,
    /// Error replies sent, by code name (only codes that occurred).
    pub errors: BTreeMap<String, u64>,
    /// Bytes counted against the memory budget, by class name (every class,
    /// zeros included; see [`crate::budget::Class`]).
    pub memory: BTreeMap<String, u64>,
    /// All classes together.
    pub memory_total: u64,
    /// `--max-memory`.
    pub memory_limit: u64,
    /// Publishes ever held for room (flow control) instead of refused.
    pub publishes_held: u64,
    /// Publishes held now.
    pub held_now: u64,
    /// Held publishes dropped because their connection closed.
    pub held_dropped: u64,
    /// Times a connection stopped being read because its held publishes
    /// passed the bound.
    pub held_input_pauses: u64,
    /// Messages moved out of the memory cache to be read back from the log
    /// (durable brokers; `--cache-bytes`).
    pub messages_evicted: u64,
    /// Range reads of the log done for subscribers behind the cache, and
    /// the messages they returned.
    pub disk_reads: u64,
    pub disk_messages_read: u64,
    /// Reads in flight or queued now.
    pub disk_reads_outstanding: u64,
    /// The log's bytes on disk (0 without a log).
    pub disk_bytes: u64,
}

/// One topic as LIST_TOPICS and TOPIC_INFO describe it. On the wire a map
/// keyed by field name, so that later fields are new keys an older client
/// skips.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicSummary {
    pub name: String,
    /// The offset the next published message will get.
    pub next_offset: u64,
    /// Messages retained, waiting for some subscriber's acknowledgement.
    pub backlog_messages: u64,
    /// Payload bytes of those messages.
    pub backlog_bytes: u64,
    /// Sessions subscribed to the topic.
    pub subscribers: u64,
    /// A retained topic's age bound in ms (0 = none); absent for an
    /// until-acked topic, as are the two below.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retain_ms: Option<u64>,
    /// A retained topic's size bound in payload bytes (0 = none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retain_bytes: Option<u64>,
    /// A retained topic's oldest retained offset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub earliest_offset: Option<u64>,
}

/// One page of LIST_TOPICS: topics in name order, and the `after` that asks
/// for the next page (`None` when this page ends the list).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicPage {
    pub topics: Vec<TopicSummary>,
    pub next: Option<String>,
}

/// Messages of one topic in a pull reply, at consecutive offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMessages {
    pub topic: String,
    pub first_offset: u64,
    pub payloads: Vec<Bytes>,
    /// Messages retention dropped unread between the subscriber's cursor
    /// and `first_offset` (the group's optional 4th element; 0 when absent).
    pub lost: u64,
}

/// The body of a successful reply, as a client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Hello(ServerInfo),
    PublisherRegistered {
        publisher_id: u64,
    },
    /// CREATE_TOPIC, DELETE_TOPIC, UNSUBSCRIBE, ACK and END_SESSION answer
    /// `nil`.
    Done,
    Published {
        offset: u64,
        subscribers: u64,
    },
    PublishedBatch {
        first_offset: u64,
        count: u64,
        subscribers: u64,
    },
    SubscriberRegistered {
        subscriber_id: u64,
        /// The session's topics, as many as fit in one frame.
        topics: Vec<String>,
        /// `true` when `topics` was cut to fit the frame: the session holds
        /// more subscriptions than it lists.
        more: bool,
    },
    Subscribed {
        next_offset: u64,
    },
    Messages(Vec<TopicMessages>),
    /// Boxed: it is by far the largest reply.
    Stats(Box<Stats>),
    Topics(TopicPage),
    TopicInfo(TopicSummary),
    Fetched(Fetched),
}

/// An error reply: a stable code and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorReply {
    pub code: ErrorCode,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_the_documented_rule() {
        for good in ["a", "my_topic", "orders.eu-west.v2", &"x".repeat(255)] {
            assert_eq!(validate_topic_name(good), Ok(()), "{good}");
        }
        for bad in ["", "has space", "slash/topic", "ünï", &"x".repeat(256)] {
            assert_eq!(
                validate_topic_name(bad),
                Err(ErrorCode::InvalidTopicName),
                "{bad}"
            );
        }
    }

    #[test]
    fn error_codes_round_trip_through_their_numbers() {
        for &code in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_code(code as u64), Some(code));
        }
        assert_eq!(ErrorCode::from_code(0), None);
    }

    #[test]
    fn op_codes_round_trip() {
        for code in 1..=17 {
            assert_eq!(Op::from_code(code).map(|op| op as u64), Some(code));
        }
        assert_eq!(Op::from_code(18), None);
    }
}
