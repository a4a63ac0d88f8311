//! Support code for the property tests (`tests/properties.rs`) and the fuzz
//! targets (`fuzz/`): the checks made on whatever decodes, one request and
//! one reply of every kind, and [`Harness`], a broker driven the way the
//! server drives it and checked as it goes.
//!
//! Not part of the stable API, hence `#[doc(hidden)]`. It lives in the
//! library rather than under `tests/` because the fuzz crate, a workspace of
//! its own, depends on courier alone: this is the one place that both it and
//! the integration tests can reach, so that each check is written once.
//! Everything here reports what it finds by panicking, which is how a test or
//! a fuzz target fails; nothing the broker, the server or the client runs
//! calls into it.

use crate::broker::{Broker, ConnId, Limits, Outbox};
use crate::codec::{self, FrameTooLarge};
use crate::protocol::{
    ErrorCode, ErrorReply, FRAME_HEADER_LEN, Fetched, FetchedMessage, MAX_PULL_WAIT_MS, Op,
    PROTOCOL_VERSION, Position, Pull, Reply, Request, Retention, ServerInfo, Stats, TopicMessages,
    TopicPage, TopicSummary,
};
use bytes::Bytes;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Every operation, in the order of their codes.
pub const ALL_OPS: [Op; 15] = [
    Op::Hello,
    Op::RegisterPublisher,
    Op::CreateTopic,
    Op::DeleteTopic,
    Op::Publish,
    Op::PublishBatch,
    Op::RegisterSubscriber,
    Op::Subscribe,
    Op::Unsubscribe,
    Op::Pull,
    Op::Ack,
    Op::Stats,
    Op::EndSession,
    Op::ListTopics,
    Op::TopicInfo,
];

/// The edges of MessagePack's integer widths: the largest value of each
/// width and the smallest of the next.
pub const INT_WIDTH_EDGES: &[u64] = &[
    0,
    0x7f,
    0x80,
    0xff,
    0x100,
    0xffff,
    0x1_0000,
    0xffff_ffff,
    0x1_0000_0000,
    u64::MAX,
];

// ---------------------------------------------------------------------------
// Samples

/// One request of every kind, both forms of REGISTER_SUBSCRIBER and of PULL
/// included, with integers at the edges of their widths; `scratch` holds the
/// batch's payloads.
pub fn every_request(scratch: &mut Vec<u8>) -> Vec<Request<'_>> {
    let payloads = codec::encode_payloads(scratch, &[b"one", b"", &[0, 255, 7]]);
    vec![
        Request::Hello {
            version: PROTOCOL_VERSION,
            client_name: "test",
            credentials: None,
        },
        Request::RegisterPublisher,
        Request::CreateTopic { topic: "t" },
        Request::DeleteTopic { topic: "t" },
        Request::Publish {
            topic: "t",
            payload: &[0, 1, 2, 255],
        },
        Request::PublishBatch {
            topic: "t",
            payloads,
        },
        Request::RegisterSubscriber {
            resume: None,
            timeout_ms: None,
        },
        Request::RegisterSubscriber {
            resume: Some(u64::MAX),
            timeout_ms: None,
        },
        Request::RegisterSubscriber {
            resume: None,
            timeout_ms: Some(7 * 24 * 3600 * 1000),
        },
        Request::Subscribe { topic: "t" },
        Request::Unsubscribe { topic: "t" },
        Request::Pull(Pull {
            topic: None,
            max_messages: 10,
            max_bytes: 1 << 20,
            wait_ms: 500,
            ack: true,
        }),
        Request::Pull(Pull {
            topic: Some("t"),
            max_messages: 1,
            max_bytes: 0,
            wait_ms: 0,
            ack: false,
        }),
        Request::Ack {
            topic: "t",
            offset: 1 << 40,
        },
        Request::Stats,
        Request::EndSession,
        Request::ListTopics {
            after: None,
            limit: 100,
        },
        Request::ListTopics {
            after: Some("t"),
            limit: u32::MAX,
        },
        Request::TopicInfo { topic: "t" },
        // Protocol version 2's trailing elements and operations.
        Request::CreateTopicWith {
            topic: "t",
            retention: Retention::Keep {
                retain_ms: 86_400_000,
                retain_bytes: 1 << 30,
            },
        },
        Request::CreateTopicWith {
            topic: "t",
            retention: Retention::Keep {
                retain_ms: 0,
                retain_bytes: 0,
            },
        },
        Request::SubscribeFrom {
            topic: "t",
            position: Position::New,
        },
        Request::SubscribeFrom {
            topic: "t",
            position: Position::Earliest,
        },
        Request::SubscribeFrom {
            topic: "t",
            position: Position::Offset(u64::MAX),
        },
        Request::SubscribeFrom {
            topic: "t",
            position: Position::TimeMs(1_764_576_000_000),
        },
        Request::RegisterProducer {
            producer_id: "orders-feed",
        },
        Request::PublishSeq {
            topic: "t",
            payload: b"numbered",
            seq: 1,
        },
        Request::PublishBatchSeq {
            topic: "t",
            payloads,
            first_seq: u64::MAX - 2,
        },
        Request::Seek {
            topic: "t",
            position: Position::Offset(0),
        },
        Request::Seek {
            topic: "t",
            position: Position::TimeMs(0),
        },
        Request::Fetch {
            topic: "t",
            offset: 1 << 40,
            max_messages: u32::MAX,
            max_bytes: 0,
        },
    ]
}

/// One success reply of every shape, each with an operation it answers
/// (`Done` answers four; CREATE_TOPIC stands for them).
pub fn every_reply() -> Vec<(Op, Reply)> {
    let info = ServerInfo {
        version: PROTOCOL_VERSION,
        server: "courier 0.1.0".into(),
        max_frame_bytes: 1 << 20,
        max_payload_bytes: (1 << 20) - 512,
        max_topic_name_bytes: 255,
        max_pull_messages: 65536,
        max_backlog_bytes: 1 << 26,
        max_backlog_messages: 1 << 20,
        session_timeout_ms: 60_000,
        max_output_bytes: 1 << 24,
        publish_hold_ms: 5000,
        max_waiting_pulls: 4,
        max_session_timeout_ms: 7 * 24 * 3600 * 1000,
    };
    let mut stats = Stats {
        messages_in: 5,
        ..Stats::default()
    };
    stats.errors.insert("TOPIC_FULL".into(), 2);
    let topic = TopicSummary {
        name: "t".into(),
        next_offset: 7,
        backlog_messages: 2,
        backlog_bytes: 1 << 33,
        subscribers: 1,
        retain_ms: None,
        retain_bytes: None,
        earliest_offset: None,
    };
    let retained = TopicSummary {
        retain_ms: Some(86_400_000),
        retain_bytes: Some(0),
        earliest_offset: Some(3),
        ..topic.clone()
    };
    vec![
        (Op::Hello, Reply::Hello(info)),
        (Op::Stats, Reply::Stats(Box::new(stats))),
        (
            Op::RegisterPublisher,
            Reply::PublisherRegistered { publisher_id: 3 },
        ),
        (Op::CreateTopic, Reply::Done),
        (
            Op::Publish,
            Reply::Published {
                offset: 17,
                subscribers: 2,
            },
        ),
        (
            Op::PublishBatch,
            Reply::PublishedBatch {
                first_offset: 1,
                count: 2,
                subscribers: 3,
            },
        ),
        (
            Op::RegisterSubscriber,
            Reply::SubscriberRegistered {
                subscriber_id: 99,
                topics: vec!["a".into(), "b".into()],
                more: true,
            },
        ),
        (Op::Subscribe, Reply::Subscribed { next_offset: 4 }),
        (
            Op::Pull,
            Reply::Messages(vec![TopicMessages {
                topic: "t".into(),
                first_offset: 10,
                payloads: vec![Bytes::from_static(b"x"), Bytes::from_static(&[0, 1])],
                lost: 0,
            }]),
        ),
        (
            Op::Pull,
            Reply::Messages(vec![
                TopicMessages {
                    topic: "t".into(),
                    first_offset: 10,
                    payloads: Vec::new(),
                    lost: 7,
                },
                TopicMessages {
                    topic: "u".into(),
                    first_offset: 1 << 40,
                    payloads: vec![Bytes::from_static(b"y")],
                    lost: u64::MAX,
                },
            ]),
        ),
        (Op::Seek, Reply::Subscribed { next_offset: 9 }),
        (
            Op::Fetch,
            Reply::Fetched(Fetched {
                messages: vec![
                    FetchedMessage {
                        offset: 3,
                        time_ms: 1_764_576_000_000,
                        payload: Bytes::from_static(b"a"),
                    },
                    FetchedMessage {
                        offset: 4,
                        time_ms: u64::MAX,
                        payload: Bytes::new(),
                    },
                ],
                next_offset: 5,
                earliest_offset: 3,
                end_offset: 9,
            }),
        ),
        (Op::Fetch, Reply::Fetched(Fetched::default())),
        (Op::TopicInfo, Reply::TopicInfo(retained)),
        (
            Op::ListTopics,
            Reply::Topics(TopicPage {
                topics: vec![topic.clone()],
                next: Some("t".into()),
            }),
        ),
        (Op::ListTopics, Reply::Topics(TopicPage::default())),
        (Op::TopicInfo, Reply::TopicInfo(topic)),
    ]
}

// ---------------------------------------------------------------------------
// Frames and what decodes from them

/// `body` behind a length prefix that tells its true length.
pub fn framed(body: &[u8]) -> Vec<u8> {
    let len = u32::try_from(body.len()).expect("a test body fits a length prefix");
    let mut frame = len.to_be_bytes().to_vec();
    frame.extend_from_slice(body);
    frame
}

/// The body of `frame`, which must be exactly one whole frame.
pub fn whole_frame(frame: &[u8]) -> Bytes {
    match codec::split_frame(frame, usize::MAX) {
        Ok(Some((body, used))) if used == frame.len() => Bytes::copy_from_slice(body),
        other => panic!("not one whole frame: {other:?}"),
    }
}

/// `split_frame` on `buf` answers exactly what the header says, and never
/// panics. Returns the frame's body and length when a whole one is there.
pub fn check_split(buf: &[u8], max: usize) -> Option<(&[u8], usize)> {
    let header = buf
        .first_chunk::<FRAME_HEADER_LEN>()
        .map(|h| u32::from_be_bytes(*h) as usize);
    match codec::split_frame(buf, max) {
        Ok(Some((body, used))) => {
            assert_eq!(Some(body.len()), header);
            assert_eq!(used, FRAME_HEADER_LEN + body.len());
            assert!(body.len() <= max);
            assert_eq!(body, &buf[FRAME_HEADER_LEN..used]);
            Some((body, used))
        }
        Ok(None) => {
            if let Some(len) = header {
                assert!(len <= max && buf.len() < FRAME_HEADER_LEN + len);
            }
            None
        }
        Err(FrameTooLarge { len, max: reported }) => {
            assert_eq!((Some(len), reported), (header, max));
            assert!(len > max);
            None
        }
    }
}

/// `stream` as the server reads it: frames split off the front until one is
/// incomplete or its length prefix is over `max`, each split and each body
/// checked.
pub fn check_request_stream(stream: &[u8], max: usize) {
    let mut rest = stream;
    while let Some((body, used)) = check_split(rest, max) {
        check_request_body(body);
        rest = &rest[used..];
    }
}

/// Decoding a request body never panics; an error has a request-level code,
/// carrying the id whenever the operation was recognised; a request that
/// decodes encodes to bytes that decode to the same request.
pub fn check_request_body(body: &[u8]) {
    match codec::decode_request(body) {
        Ok((id, request)) => {
            if let Request::PublishBatch { payloads, .. } = request {
                assert_eq!(
                    payloads.iter().count(),
                    payloads.len(),
                    "a batch iterates over every payload"
                );
            }
            let mut again = Vec::new();
            codec::encode_request(&mut again, id, &request);
            let again = whole_frame(&again);
            assert_eq!(codec::decode_request(&again), Ok((id, request)));
        }
        Err(e) => match e.code() {
            ErrorCode::MalformedRequest => {}
            ErrorCode::UnknownOperation => assert!(e.id.is_some()),
            other => panic!("decode_request answered {other:?}"),
        },
    }
}

/// Decoding a reply to `op` never panics, agrees with `decode_reply_id`, and
/// what decodes re-encodes to something that decodes the same.
pub fn check_reply_body(op: Op, body: &Bytes) {
    let Ok((id, result)) = codec::decode_reply(op, body) else {
        return;
    };
    assert_eq!(codec::decode_reply_id(body), Ok(id));
    let mut again = Vec::new();
    match &result {
        Ok(reply) => codec::encode_reply(&mut again, id, reply),
        Err(ErrorReply { code, message }) => codec::encode_error(&mut again, id, *code, message),
    }
    assert_eq!(
        codec::decode_reply(op, &whole_frame(&again)),
        Ok((id, result))
    );
}

// ---------------------------------------------------------------------------
// The broker, driven like the server drives it

/// [`Harness::send`] numbers requests from here up. Generated input, damaged
/// or not, does not realistically decode to an id this large, so a reply
/// that carries one answers exactly one request the harness sent.
pub const FIRST_TRACKED_ID: u64 = 1 << 40;

/// What the harness holds the broker to, besides writing only whole,
/// well-formed replies within `max_frame_bytes` and holding nothing once
/// everyone has gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Track {
    /// Every request executed with an id from [`FIRST_TRACKED_ID`] up is
    /// answered exactly once, by a reply of its operation's shape, unless
    /// its connection goes first. Sound only when no other input picks ids
    /// that large.
    Answers,
    /// Nothing more: each reply need only fit some operation. For input that
    /// picks its ids freely, as a fuzzer does (two requests with one id would
    /// look like one answered twice).
    Nothing,
}

/// The connections' write buffers, handed out as the server's outbox does:
/// only to connections that are open (closing ones included).
struct Sockets(Vec<Socket>);

#[derive(Default)]
struct Socket {
    output: Vec<u8>,
    open: bool,
    closing: bool,
}

impl Outbox for Sockets {
    fn buffer(&mut self, conn: ConnId) -> Option<&mut Vec<u8>> {
        self.0
            .get_mut(conn)
            .filter(|socket| socket.open)
            .map(|socket| &mut socket.output)
    }

    fn close(&mut self, conn: ConnId) {
        if let Some(socket) = self.0.get_mut(conn).filter(|socket| socket.open) {
            socket.closing = true;
        }
    }
}

/// A broker and the little of the server that matters to it: per-connection
/// input and output buffers, the clock, and which connections are open.
///
/// Each method that drives the broker ends by reading what it wrote, as the
/// clients would, and checking every reply, so a bad one is caught at the
/// step that made it. Connections are keys `0..conns`; others panic.
pub struct Harness {
    broker: Broker,
    sockets: Sockets,
    input: Vec<Vec<u8>>,
    now: Instant,
    limits: Limits,
    track: Track,
    next_id: u64,
    /// Requests executed and not yet answered: (conn, id) → op.
    pending: HashMap<(ConnId, u64), Op>,
    /// Subscriber ids from REGISTER_SUBSCRIBER replies, for resuming.
    sessions: Vec<u64>,
}

impl Harness {
    /// A broker under `limits`, its clock starting at `start`, with
    /// connections `0..conns` open and past their HELLO.
    pub fn new(limits: Limits, conns: usize, start: Instant, track: Track) -> Self {
        let mut harness = Harness {
            broker: Broker::new(limits.clone(), start),
            sockets: Sockets((0..conns).map(|_| Socket::default()).collect()),
            input: vec![Vec::new(); conns],
            now: start,
            limits,
            track,
            next_id: FIRST_TRACKED_ID,
            pending: HashMap::new(),
            sessions: Vec::new(),
        };
        for conn in 0..conns {
            harness.connect(conn, true);
        }
        harness.end_of_batch();
        harness
    }

    /// Subscriber ids the broker has handed out so far (under
    /// [`Track::Answers`] only: otherwise replies are not tied to requests).
    pub fn sessions(&self) -> &[u64] {
        &self.sessions
    }

    /// A new connection under key `conn` (the old one is closed first),
    /// which says HELLO if `hello`.
    pub fn connect(&mut self, conn: ConnId, hello: bool) {
        self.disconnect(conn);
        self.broker.connect(conn);
        self.sockets.0[conn].open = true;
        if hello {
            let hello = Request::Hello {
                version: PROTOCOL_VERSION,
                client_name: "harness",
                credentials: None,
            };
            self.send(conn, &hello);
        }
    }

    /// The connection under `conn`, if open, closes; what it was waiting for
    /// is no longer owed.
    pub fn disconnect(&mut self, conn: ConnId) {
        if !self.sockets.0[conn].open {
            return;
        }
        self.collect();
        self.broker.disconnect(conn, self.now);
        let socket = &mut self.sockets.0[conn];
        socket.open = false;
        socket.closing = false;
        self.input[conn].clear();
        self.collect();
        self.pending.retain(|&(c, _), _| c != conn);
    }

    /// `request`, framed with the next tracked id, read from `conn`.
    pub fn send(&mut self, conn: ConnId, request: &Request<'_>) {
        let mut frame = Vec::new();
        codec::encode_request(&mut frame, self.next_id, request);
        self.next_id += 1;
        self.feed(conn, &frame);
    }

    /// Bytes read from `conn`, handled as the server does: every complete
    /// frame executed, nothing read from a closing connection, an oversized
    /// length prefix refused from the header alone.
    pub fn feed(&mut self, conn: ConnId, bytes: &[u8]) {
        let socket = &self.sockets.0[conn];
        if !socket.open || socket.closing {
            return;
        }
        let mut input = std::mem::take(&mut self.input[conn]);
        input.extend_from_slice(bytes);
        let mut consumed = 0;
        loop {
            match codec::split_frame(&input[consumed..], self.limits.max_frame_bytes) {
                Ok(Some((body, used))) => {
                    self.expect_answer(conn, body);
                    self.broker
                        .handle_frame(conn, body, self.now, &mut self.sockets);
                    consumed += used;
                    if self.sockets.0[conn].closing {
                        break;
                    }
                }
                Ok(None) => break,
                Err(FrameTooLarge { len, max }) => {
                    let message = format!("frame of {len} bytes exceeds the maximum of {max}");
                    self.broker.send_error(
                        conn,
                        0,
                        ErrorCode::FrameTooLarge,
                        &message,
                        &mut self.sockets,
                    );
                    break;
                }
            }
        }
        input.drain(..consumed);
        self.input[conn] = input;
        self.collect();
    }

    /// Time passes; then the end of a loop iteration.
    pub fn advance(&mut self, by: Duration) {
        self.now += by;
        self.end_of_batch();
    }

    /// What the server does after each batch of events: fire due timers,
    /// answer pulls made ready, close the connections marked for closing.
    pub fn end_of_batch(&mut self) {
        self.broker.fire_timers(self.now, &mut self.sockets);
        self.broker.answer_ready(&mut self.sockets);
        self.broker.assert_indexes_consistent();
        self.collect();
        for conn in 0..self.sockets.0.len() {
            if self.sockets.0[conn].closing {
                self.disconnect(conn);
            }
        }
    }

    /// Every request executed on a connection that is still open is
    /// answered once its pull (or held publish) could have waited no
    /// longer; then [`everyone_leaves`](Self::everyone_leaves).
    pub fn finish(&mut self) {
        self.end_of_batch();
        let longest =
            Duration::from_millis(u64::from(MAX_PULL_WAIT_MS)).max(self.limits.publish_hold);
        self.advance(longest + Duration::from_millis(1));
        let mut unanswered: Vec<_> = self.pending.iter().map(|(&k, &op)| (k, op)).collect();
        unanswered.sort_by_key(|&(k, _)| k);
        assert!(
            unanswered.is_empty(),
            "executed but never answered: {unanswered:?}"
        );
        self.everyone_leaves();
    }

    /// Every connection closes; a session timeout later the broker must hold
    /// nothing.
    pub fn everyone_leaves(&mut self) {
        for conn in 0..self.sockets.0.len() {
            self.disconnect(conn);
        }
        self.advance(self.limits.session_timeout + Duration::from_millis(1));
        let stats = self.broker.stats(self.now);
        let held = [
            ("connections", stats.connections),
            ("publishers", stats.publishers),
            ("subscribers", stats.subscribers),
            ("subscriptions", stats.subscriptions),
            ("waiting_pulls", stats.waiting_pulls),
            ("backlog_messages", stats.backlog_messages),
            ("backlog_bytes", stats.backlog_bytes),
            ("held_now", stats.held_now),
            (
                "held_requests",
                stats.memory.get("held_requests").copied().unwrap_or(0),
            ),
        ];
        assert!(held.iter().all(|&(_, n)| n == 0), "still held: {held:?}");
    }

    /// Notes that the frame `body`, about to be executed on `conn`, is owed
    /// an answer. Any frame whose id can be read is answered with it; an
    /// error reply fits every operation, so an undecodable one counts as a
    /// STATS.
    fn expect_answer(&mut self, conn: ConnId, body: &[u8]) {
        if self.track != Track::Answers {
            return;
        }
        let (id, op) = match codec::decode_request(body) {
            Ok((id, request)) => (Some(id), request.op()),
            Err(e) => (e.id, Op::Stats),
        };
        if let Some(id) = id.filter(|&id| id >= FIRST_TRACKED_ID) {
            self.pending.insert((conn, id), op);
        }
    }

    /// Reads everything written so far, as the clients would: whole frames
    /// within `max_frame_bytes`, each checked.
    fn collect(&mut self) {
        for conn in 0..self.sockets.0.len() {
            let output = std::mem::take(&mut self.sockets.0[conn].output);
            let mut rest = &output[..];
            while !rest.is_empty() {
                let (body, used) = match codec::split_frame(rest, self.limits.max_frame_bytes) {
                    Ok(Some(frame)) => frame,
                    Ok(None) => panic!("connection {conn}: output ends inside a frame"),
                    Err(e) => panic!(
                        "connection {conn}: a reply of {} bytes, over max_frame_bytes {}: {:?}",
                        e.len,
                        e.max,
                        String::from_utf8_lossy(&rest[..rest.len().min(200)])
                    ),
                };
                self.check_reply(conn, &Bytes::copy_from_slice(body));
                rest = &rest[used..];
            }
        }
    }

    /// A reply read from `conn` is a reply; one to a tracked request answers
    /// a request the connection is waiting for, in that request's shape.
    fn check_reply(&mut self, conn: ConnId, body: &Bytes) {
        let id = codec::decode_reply_id(body)
            .unwrap_or_else(|e| panic!("connection {conn}: not a reply ({e}): {body:02x?}"));
        if self.track != Track::Answers || id < FIRST_TRACKED_ID {
            // Answers damaged input or no request: it must still be a reply
            // to something. Decoded as every operation, not just until one
            // fits, so that the fuzzer sees every decoder take real replies.
            let fits = ALL_OPS
                .iter()
                .filter(|&&op| codec::decode_reply(op, body).is_ok())
                .count();
            assert!(
                fits > 0,
                "connection {conn}: reply {id} fits no operation: {body:02x?}"
            );
            return;
        }
        let Some(op) = self.pending.remove(&(conn, id)) else {
            panic!("connection {conn}: reply to request {id}, which it is not waiting for");
        };
        match codec::decode_reply(op, body) {
            Ok((_, Ok(Reply::SubscriberRegistered { subscriber_id, .. }))) => {
                self.sessions.push(subscriber_id);
            }
            Ok(_) => {}
            Err(e) => panic!("connection {conn}: reply to {op:?} {id}: {e}"),
        }
    }
}
