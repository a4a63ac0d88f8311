//! A blocking client over `std::net`, for the commands, the bench tool and
//! tests.
//!
//! The programs that use it are sequential — publish, pull, print — so a
//! blocking API with no runtime is the simplest thing that serves them. Each
//! method of [`Client`] sends one request and waits for its reply; with one
//! request in flight, a reply is matched by checking that its id is the one
//! sent (a parked pull's late reply, PROTOCOL.md 3.3, cannot happen: the pull
//! call itself waits for it). Throughput comes from [`Pipeline`], which keeps
//! many publishes (and topic creations and deletions) in flight on the same
//! connection, and latency from [`Pulls`], which keeps several pulls in
//! flight so that the broker never waits for the next one.
//!
//! Layout: `conn` owns the socket and the frame buffers, `pipeline` the
//! requests in flight, `pulls` the pipelined pulls, `error` the error type,
//! `addr` the default port, `reconnect` the back-off and resume after a lost
//! connection.
//! This file holds the operations, which only build requests and unpack
//! replies.

mod addr;
mod conn;
mod error;
mod pipeline;
mod pulls;
mod reconnect;
mod stream;

pub use self::addr::{DEFAULT_PORT, with_default_port};
pub use self::error::{Error, Result, io_message};
pub use self::pipeline::{Completion, Outcome, Pipeline};
pub use self::pulls::{MAX_PULL_DEPTH, Pulls};
pub use self::reconnect::Reconnect;
pub use crate::protocol::{
    Fetched, FetchedMessage, Position, Retention, ServerInfo, Stats, TopicMessages, TopicPage,
    TopicSummary,
};

use self::conn::Conn;
use crate::codec;
use crate::protocol::{
    Credentials, DEFAULT_MAX_FRAME_BYTES, MAX_PULL_WAIT_MS, Op, PROTOCOL_VERSION, Pull, Reply,
    Request,
};
use bytes::Bytes;
use std::fmt;
use std::net::ToSocketAddrs;
use std::sync::Arc;
use std::time::Duration;

/// How a [`Client`] connects and how long it waits.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Sent in HELLO; the broker shows it in its logs.
    pub name: String,
    /// How long to wait for a reply (for a pull, on top of its own wait).
    /// `None` waits forever. After a timeout the connection is closed.
    pub timeout: Option<Duration>,
    /// How long to wait for the TCP connection to open. `None` leaves it to
    /// the operating system.
    pub connect_timeout: Option<Duration>,
    /// Sent in HELLO to a broker that requires users (`--users`).
    pub credentials: Option<UserToken>,
    /// Speak TLS, verifying the broker with this configuration (see
    /// [`crate::tls::client_config`]) against the host of the address.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// A user name and its token, as `courier user add` printed it.
#[derive(Clone, PartialEq, Eq)]
pub struct UserToken {
    pub user: String,
    pub token: String,
}

/// Never prints the token.
impl fmt::Debug for UserToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserToken")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            name: "courier-client".to_owned(),
            timeout: Some(Duration::from_secs(30)),
            connect_timeout: Some(Duration::from_secs(10)),
            credentials: None,
            tls: None,
        }
    }
}

/// Where a published message was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// The message's offset in its topic.
    pub offset: u64,
    /// How many subscribers it was queued for (0: it was dropped).
    pub subscribers: u64,
}

/// Where a batch of messages was stored: offsets `first_offset ..
/// first_offset + count`, in the order sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishedBatch {
    pub first_offset: u64,
    pub count: u64,
    pub subscribers: u64,
}

/// A subscriber session, as registered or resumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Pass it to [`Client::resume_subscriber`] to continue later.
    pub id: u64,
    /// The topics the session is subscribed to (empty when new), as many
    /// as fit in one reply frame.
    pub topics: Vec<String>,
    /// `true` when the session has more subscriptions than `topics` lists
    /// (PROTOCOL.md 4.7).
    pub more: bool,
}

/// The arguments of a pull. See PROTOCOL.md 4.10.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullOptions {
    /// One subscribed topic, or `None` for all of them.
    pub topic: Option<String>,
    /// At most this many messages.
    pub max_messages: u32,
    /// At most this many payload bytes, though one message always comes.
    pub max_bytes: u32,
    /// How long the broker may wait for a message when none is ready.
    pub wait: Duration,
    /// Acknowledge everything delivered so far on the pulled topics first.
    pub ack: bool,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            topic: None,
            max_messages: 1000,
            max_bytes: 1 << 20,
            wait: Duration::ZERO,
            ack: false,
        }
    }
}

/// The messages one pull returned, grouped by topic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    groups: Vec<TopicMessages>,
}

/// One message of a [`Batch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    pub topic: &'a str,
    pub offset: u64,
    /// A slice of the reply frame; clone it (cheaply) to keep it.
    pub payload: &'a Bytes,
}

impl Batch {
    /// Number of messages, all topics together.
    pub fn len(&self) -> usize {
        self.groups.iter().map(|g| g.payloads.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.groups.iter().all(|g| g.payloads.is_empty())
    }

    /// Every message, topic by topic, in offset order within a topic.
    pub fn iter(&self) -> impl Iterator<Item = Message<'_>> {
        self.groups.iter().flat_map(|group| {
            (group.first_offset..)
                .zip(&group.payloads)
                .map(|(offset, payload)| Message {
                    topic: &group.topic,
                    offset,
                    payload,
                })
        })
    }

    pub fn groups(&self) -> &[TopicMessages] {
        &self.groups
    }

    pub fn into_groups(self) -> Vec<TopicMessages> {
        self.groups
    }

    /// The topics on which retention overtook the subscriber's cursor, with
    /// how many messages it dropped unread just before the group's first
    /// offset (protocol version 2). A batch may report a loss and carry no
    /// message.
    pub fn losses(&self) -> impl Iterator<Item = (&str, u64, u64)> {
        self.groups
            .iter()
            .filter(|g| g.lost > 0)
            .map(|g| (g.topic.as_str(), g.first_offset, g.lost))
    }
}

/// A connection to the broker, with the handshake done.
///
/// Every method sends one request and blocks until its reply; an error reply
/// is [`Error::Server`] and leaves the client usable unless
/// [`Error::is_fatal`] says otherwise. For many requests in flight at once,
/// see [`Client::pipeline`].
///
/// ```no_run
/// use courier::client::{Client, PullOptions};
/// use std::time::Duration;
///
/// # fn main() -> courier::client::Result<()> {
/// let mut publisher = Client::connect("localhost:5555")?;
/// publisher.register_publisher()?;
/// publisher.create_topic("news")?;
///
/// let mut subscriber = Client::connect("localhost:5555")?;
/// subscriber.register_subscriber()?;
/// subscriber.subscribe("news")?;
///
/// let published = publisher.send("news", b"Hello, world!")?;
/// println!("offset {}", published.offset);
///
/// let pull = PullOptions { wait: Duration::from_secs(5), ..PullOptions::default() };
/// for message in subscriber.pull(&pull)?.iter() {
///     println!("{} {}: {:?}", message.topic, message.offset, message.payload);
/// }
/// # Ok(())
/// # }
/// ```
pub struct Client {
    conn: Conn,
    info: ServerInfo,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("server", &self.info.server)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects with default [`ClientOptions`] and does the handshake.
    pub fn connect(addr: impl ToSocketAddrs + fmt::Display) -> Result<Client> {
        Client::connect_with(addr, ClientOptions::default())
    }

    /// Connects and does the handshake.
    pub fn connect_with(
        addr: impl ToSocketAddrs + fmt::Display,
        options: ClientOptions,
    ) -> Result<Client> {
        let shown = addr.to_string();
        let tls = options
            .tls
            .clone()
            .map(|config| (config, stream::host_of(&shown)));
        let mut conn = Conn::open(
            &addr,
            options.connect_timeout,
            options.timeout,
            DEFAULT_MAX_FRAME_BYTES,
            tls,
        )
        .map_err(|source| Error::Connect {
            addr: shown.clone(),
            source,
        })?;
        let hello = Request::Hello {
            version: PROTOCOL_VERSION,
            client_name: &options.name,
            credentials: options.credentials.as_ref().map(|c| Credentials {
                user: &c.user,
                token: &c.token,
            }),
        };
        let info = match conn.call(&hello, Duration::ZERO)? {
            Reply::Hello(info) => info,
            other => return Err(conn.unexpected(Op::Hello, &other)),
        };
        conn.max_frame = usize::try_from(info.max_frame_bytes).unwrap_or(usize::MAX);
        Ok(Client { conn, info })
    }

    /// What the broker said about itself in the handshake.
    /// How long the broker may hold a publish to a full topic before it
    /// answers (`publish_hold_ms` from HELLO): replies to publishes may be
    /// that much later than the timeout alone allows.
    pub fn publish_hold(&self) -> Duration {
        Duration::from_millis(self.server_info().publish_hold_ms)
    }

    pub fn server_info(&self) -> &ServerInfo {
        &self.info
    }

    /// Makes this connection a publisher; returns the publisher id.
    pub fn register_publisher(&mut self) -> Result<u64> {
        match self.call(&Request::RegisterPublisher)? {
            Reply::PublisherRegistered { publisher_id } => Ok(publisher_id),
            other => Err(self.conn.unexpected(Op::RegisterPublisher, &other)),
        }
    }

    pub fn create_topic(&mut self, topic: &str) -> Result<()> {
        self.call_done(&Request::CreateTopic { topic })
    }

    /// Creates a topic with `retention` (protocol version 2; `UntilAcked`
    /// sends the version 1 request).
    pub fn create_topic_with(&mut self, topic: &str, retention: Retention) -> Result<()> {
        match retention {
            Retention::UntilAcked => self.create_topic(topic),
            retention => self.call_done(&Request::CreateTopicWith { topic, retention }),
        }
    }

    /// Makes this connection a publisher identified durably as
    /// `producer_id` (1 to 255 bytes), whose numbered publishes
    /// ([`Client::send_seq`], [`Pipeline::send_batch_seq`]) the broker
    /// stores at most once. Protocol version 2.
    pub fn register_producer(&mut self, producer_id: &str) -> Result<u64> {
        match self.call(&Request::RegisterProducer { producer_id })? {
            Reply::PublisherRegistered { publisher_id } => Ok(publisher_id),
            other => Err(self.conn.unexpected(Op::RegisterPublisher, &other)),
        }
    }

    /// Publishes one message numbered `seq` by this connection's producer.
    /// A resend of a stored seq is answered with the original offset
    /// (or DUPLICATE_SEQUENCE once too old to remember), never stored again.
    pub fn send_seq(&mut self, topic: &str, payload: &[u8], seq: u64) -> Result<Published> {
        self.publish(&Request::PublishSeq {
            topic,
            payload,
            seq,
        })
    }

    /// Reads `topic` from `offset` without a session: nothing is held back
    /// for it (protocol version 2). Pass the reply's `next_offset` to read
    /// on.
    pub fn fetch(
        &mut self,
        topic: &str,
        offset: u64,
        max_messages: u32,
        max_bytes: u32,
    ) -> Result<Fetched> {
        let request = Request::Fetch {
            topic,
            offset,
            max_messages,
            max_bytes,
        };
        match self.call(&request)? {
            Reply::Fetched(fetched) => Ok(fetched),
            other => Err(self.conn.unexpected(Op::Fetch, &other)),
        }
    }

    pub fn delete_topic(&mut self, topic: &str) -> Result<()> {
        self.call_done(&Request::DeleteTopic { topic })
    }

    /// Publishes one message. A full topic holds it (up to the broker's
    /// `publish_hold_ms`, which the reply's deadline allows for) rather than
    /// refusing it at once.
    pub fn send(&mut self, topic: &str, payload: &[u8]) -> Result<Published> {
        self.publish(&Request::Publish { topic, payload })
    }

    /// One PUBLISH, numbered or not, allowing for the broker's hold.
    fn publish(&mut self, request: &Request<'_>) -> Result<Published> {
        let hold = self.publish_hold();
        match self.conn.call(request, hold)? {
            Reply::Published {
                offset,
                subscribers,
            } => Ok(Published {
                offset,
                subscribers,
            }),
            other => Err(self.conn.unexpected(Op::Publish, &other)),
        }
    }

    /// Publishes several messages to one topic, all or nothing (held like
    /// [`Client::send`] while the topic is full).
    pub fn send_batch(&mut self, topic: &str, payloads: &[&[u8]]) -> Result<PublishedBatch> {
        let hold = self.publish_hold();
        let reply = self.conn.call_with(
            Op::PublishBatch,
            |out, id| codec::encode_publish_batch(out, id, topic, payloads),
            hold,
        )?;
        match reply {
            Reply::PublishedBatch {
                first_offset,
                count,
                subscribers,
            } => Ok(PublishedBatch {
                first_offset,
                count,
                subscribers,
            }),
            other => Err(self.conn.unexpected(Op::PublishBatch, &other)),
        }
    }

    /// Starts a new subscriber session on this connection; returns its id.
    pub fn register_subscriber(&mut self) -> Result<u64> {
        self.register(None, None).map(|session| session.id)
    }

    /// Starts a new subscriber session kept for `timeout` without a
    /// connection (clamped by the broker to its `max_session_timeout_ms`);
    /// returns its id. Protocol version 2.
    pub fn register_subscriber_for(&mut self, timeout: Duration) -> Result<u64> {
        let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        self.register(None, Some(ms)).map(|session| session.id)
    }

    /// Takes over an existing subscriber session: its subscriptions, and
    /// redelivery of everything it had not acknowledged.
    pub fn resume_subscriber(&mut self, id: u64) -> Result<Session> {
        self.register(Some(id), None)
    }

    fn register(&mut self, resume: Option<u64>, timeout_ms: Option<u64>) -> Result<Session> {
        match self.call(&Request::RegisterSubscriber { resume, timeout_ms })? {
            Reply::SubscriberRegistered {
                subscriber_id,
                topics,
                more,
            } => Ok(Session {
                id: subscriber_id,
                topics,
                more,
            }),
            other => Err(self.conn.unexpected(Op::RegisterSubscriber, &other)),
        }
    }

    /// Subscribes; returns the offset of the first message that will come.
    pub fn subscribe(&mut self, topic: &str) -> Result<u64> {
        match self.call(&Request::Subscribe { topic })? {
            Reply::Subscribed { next_offset } => Ok(next_offset),
            other => Err(self.conn.unexpected(Op::Subscribe, &other)),
        }
    }

    /// Subscribes from `position` (protocol version 2); returns where the
    /// subscription starts, after the broker's clamp to what it retains.
    pub fn subscribe_from(&mut self, topic: &str, position: Position) -> Result<u64> {
        let request = match position {
            Position::New => Request::Subscribe { topic },
            position => Request::SubscribeFrom { topic, position },
        };
        match self.call(&request)? {
            Reply::Subscribed { next_offset } => Ok(next_offset),
            other => Err(self.conn.unexpected(Op::Subscribe, &other)),
        }
    }

    /// Moves this session's cursor on `topic` to `position`; returns where
    /// it landed. What was in flight is forgotten.
    pub fn seek(&mut self, topic: &str, position: Position) -> Result<u64> {
        match self.call(&Request::Seek { topic, position })? {
            Reply::Subscribed { next_offset } => Ok(next_offset),
            other => Err(self.conn.unexpected(Op::Seek, &other)),
        }
    }

    pub fn unsubscribe(&mut self, topic: &str) -> Result<()> {
        self.call_done(&Request::Unsubscribe { topic })
    }

    /// Fetches messages, waiting up to `options.wait` for the first one. An
    /// empty batch means nothing arrived in time.
    pub fn pull(&mut self, options: &PullOptions) -> Result<Batch> {
        let wait_ms = u32::try_from(options.wait.as_millis())
            .unwrap_or(u32::MAX)
            .min(MAX_PULL_WAIT_MS);
        let request = Request::Pull(Pull {
            topic: options.topic.as_deref(),
            max_messages: options.max_messages,
            max_bytes: options.max_bytes,
            wait_ms,
            ack: options.ack,
        });
        let wait = Duration::from_millis(u64::from(wait_ms));
        match self.conn.call(&request, wait)? {
            Reply::Messages(groups) => Ok(Batch { groups }),
            other => Err(self.conn.unexpected(Op::Pull, &other)),
        }
    }

    /// Acknowledges every message of `topic` below `offset`.
    pub fn ack(&mut self, topic: &str, offset: u64) -> Result<()> {
        self.call_done(&Request::Ack { topic, offset })
    }

    pub fn stats(&mut self) -> Result<Stats> {
        match self.call(&Request::Stats)? {
            Reply::Stats(stats) => Ok(*stats),
            other => Err(self.conn.unexpected(Op::Stats, &other)),
        }
    }

    /// Ends this connection's subscriber session now: its subscriptions go
    /// and the topics may forget what only it held. The connection may
    /// register a subscriber again afterwards.
    pub fn end_session(&mut self) -> Result<()> {
        self.call_done(&Request::EndSession)
    }

    /// One page of topics in name order, after `after` (`None`: from the
    /// start), at most `limit` of them (clamped to 1..=1000; the broker may
    /// return fewer to fit a frame). Pass the page's `next` as `after` for
    /// the following page; it is `None` on the last one.
    pub fn list_topics(&mut self, after: Option<&str>, limit: u32) -> Result<TopicPage> {
        match self.call(&Request::ListTopics { after, limit })? {
            Reply::Topics(page) => Ok(page),
            other => Err(self.conn.unexpected(Op::ListTopics, &other)),
        }
    }

    pub fn topic_info(&mut self, topic: &str) -> Result<TopicSummary> {
        match self.call(&Request::TopicInfo { topic })? {
            Reply::TopicInfo(info) => Ok(info),
            other => Err(self.conn.unexpected(Op::TopicInfo, &other)),
        }
    }

    /// Starts pipelining publishes and topic requests, with up to `depth`
    /// in flight (at least 1). See [`Pipeline`].
    pub fn pipeline(&mut self, depth: usize) -> Pipeline<'_> {
        Pipeline::new(self, depth)
    }

    /// Starts a stream of pulls with `options`, keeping `depth` of them in
    /// flight (1 to [`MAX_PULL_DEPTH`]; more than the broker's
    /// `max_waiting_pulls` makes it answer the oldest empty). Batches come
    /// in order; what the caller declares processed is acknowledged with
    /// the next pull. See [`Pulls`].
    pub fn pulls(&mut self, options: PullOptions, depth: usize) -> Pulls<'_> {
        Pulls::new(self, options, depth)
    }

    fn call(&mut self, request: &Request<'_>) -> Result<Reply> {
        self.conn.call(request, Duration::ZERO)
    }

    /// For the operations whose success body is `nil`.
    fn call_done(&mut self, request: &Request<'_>) -> Result<()> {
        match self.call(request)? {
            Reply::Done => Ok(()),
            other => Err(self.conn.unexpected(request.op(), &other)),
        }
    }
}
