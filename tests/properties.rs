//! Properties of the codec and the broker, checked over generated input.
//!
//! The unit tests in `codec` and `broker` pin one example of each rule; these
//! check the same promises over many generated cases:
//!
//! - the decoders never panic, whatever the bytes: framing, requests, replies;
//! - every request and every reply survives encode → decode unchanged, and a
//!   stream of requests cut at arbitrary points decodes to the same requests
//!   through the accumulate-and-split loop the server runs;
//! - the broker, fed well-formed, damaged and unframed input on a few
//!   connections that come and go while time passes, never panics; it writes
//!   only whole frames, none over `max_frame_bytes`, each a well-formed reply;
//!   it answers every request it executed exactly once (when the connection
//!   lives long enough); and it holds nothing once every client is gone and
//!   the sessions have expired.
//!
//! The checks themselves, and the harness that drives the broker, live in
//! `courier::testing`, shared with the fuzz targets in `fuzz/`, which drive
//! the same entry points without a bound; this file holds what is proptest's:
//! the strategies and the properties. Case counts are small so that the file
//! runs in seconds under `cargo test` (`PROPTEST_CASES=N` runs more). What
//! either finds is pinned at the end of this file as a plain `#[test]` with
//! its input inline (bytes, or the broker model's steps), kept once the bug
//! is fixed, which is why proptest's regression files are turned off: a
//! failing run must not write into the source tree.

use bytes::Bytes;
use courier::broker::{ConnId, Limits};
use courier::codec;
use courier::protocol::{
    ErrorCode, ErrorReply, FRAME_HEADER_LEN, Op, Position, Pull, Reply, Request, Retention,
    ServerInfo, Stats, TopicMessages,
};
use courier::testing::{
    ALL_OPS, Harness, INT_WIDTH_EDGES, Track, check_reply_body, check_request_body, check_split,
    framed, whole_frame,
};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::sample::{Index, select};
use std::time::{Duration, Instant};

/// `cases` cases unless `PROPTEST_CASES` asks for more (or fewer), and no
/// regression files.
fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------
// Requests, owned

/// An owned twin of [`Request`], which borrows from its frame: strategies
/// need values that own their data.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Req {
    Hello {
        version: u64,
        client_name: String,
    },
    RegisterPublisher,
    CreateTopic(String),
    DeleteTopic(String),
    Publish(String, Vec<u8>),
    PublishBatch(String, Vec<Vec<u8>>),
    RegisterSubscriber(Option<u64>),
    Subscribe(String),
    Unsubscribe(String),
    Pull {
        topic: Option<String>,
        max_messages: u32,
        max_bytes: u32,
        wait_ms: u32,
        ack: bool,
    },
    Ack(String, u64),
    Stats,
    EndSession,
    ListTopics(Option<String>, u32),
    TopicInfo(String),
    // Protocol version 2's shapes (their round trips are the codec's unit
    // tests; here they only need to convert).
    CreateTopicWith(String, Retention),
    SubscribeFrom(String, Position),
    RegisterProducer(String),
    PublishSeq(String, Vec<u8>, u64),
    PublishBatchSeq(String, Vec<Vec<u8>>, u64),
    Seek(String, Position),
    Fetch(String, u64, u32, u32),
}

impl Req {
    /// Appends this request's frame to `out`, through the crate's encoder.
    fn encode(&self, out: &mut Vec<u8>, id: u64) {
        let mut scratch = Vec::new();
        codec::encode_request(out, id, &self.to_request(&mut scratch));
    }

    /// The crate's borrowed [`Request`] for this one; `scratch` holds a
    /// batch's encoded payloads.
    fn to_request<'a>(&'a self, scratch: &'a mut Vec<u8>) -> Request<'a> {
        match self {
            Req::Hello {
                version,
                client_name,
            } => Request::Hello {
                version: *version,
                client_name,
                credentials: None,
            },
            Req::RegisterPublisher => Request::RegisterPublisher,
            Req::CreateTopic(topic) => Request::CreateTopic { topic },
            Req::DeleteTopic(topic) => Request::DeleteTopic { topic },
            Req::Publish(topic, payload) => Request::Publish { topic, payload },
            Req::PublishBatch(topic, payloads) => {
                let slices: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
                Request::PublishBatch {
                    topic,
                    payloads: codec::encode_payloads(scratch, &slices),
                }
            }
            Req::RegisterSubscriber(resume) => Request::RegisterSubscriber {
                resume: *resume,
                timeout_ms: None,
            },
            Req::Subscribe(topic) => Request::Subscribe { topic },
            Req::Unsubscribe(topic) => Request::Unsubscribe { topic },
            Req::Pull {
                topic,
                max_messages,
                max_bytes,
                wait_ms,
                ack,
            } => Request::Pull(Pull {
                topic: topic.as_deref(),
                max_messages: *max_messages,
                max_bytes: *max_bytes,
                wait_ms: *wait_ms,
                ack: *ack,
            }),
            Req::Ack(topic, offset) => Request::Ack {
                topic,
                offset: *offset,
            },
            Req::Stats => Request::Stats,
            Req::EndSession => Request::EndSession,
            Req::ListTopics(after, limit) => Request::ListTopics {
                after: after.as_deref(),
                limit: *limit,
            },
            Req::TopicInfo(topic) => Request::TopicInfo { topic },
            Req::CreateTopicWith(topic, retention) => Request::CreateTopicWith {
                topic,
                retention: *retention,
            },
            Req::SubscribeFrom(topic, position) => Request::SubscribeFrom {
                topic,
                position: *position,
            },
            Req::RegisterProducer(producer_id) => Request::RegisterProducer { producer_id },
            Req::PublishSeq(topic, payload, seq) => Request::PublishSeq {
                topic,
                payload,
                seq: *seq,
            },
            Req::PublishBatchSeq(topic, payloads, first_seq) => {
                let slices: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
                Request::PublishBatchSeq {
                    topic,
                    payloads: codec::encode_payloads(scratch, &slices),
                    first_seq: *first_seq,
                }
            }
            Req::Seek(topic, position) => Request::Seek {
                topic,
                position: *position,
            },
            Req::Fetch(topic, offset, max_messages, max_bytes) => Request::Fetch {
                topic,
                offset: *offset,
                max_messages: *max_messages,
                max_bytes: *max_bytes,
            },
        }
    }

    fn from_request(request: &Request<'_>) -> Req {
        match *request {
            Request::Hello {
                version,
                client_name,
                credentials: _,
            } => Req::Hello {
                version,
                client_name: client_name.to_owned(),
            },
            Request::RegisterPublisher => Req::RegisterPublisher,
            Request::CreateTopic { topic } => Req::CreateTopic(topic.to_owned()),
            Request::DeleteTopic { topic } => Req::DeleteTopic(topic.to_owned()),
            Request::Publish { topic, payload } => Req::Publish(topic.to_owned(), payload.to_vec()),
            Request::PublishBatch { topic, payloads } => {
                let list: Vec<Vec<u8>> = payloads.iter().map(<[u8]>::to_vec).collect();
                assert_eq!(
                    list.len(),
                    payloads.len(),
                    "a batch iterates over every payload"
                );
                Req::PublishBatch(topic.to_owned(), list)
            }
            Request::RegisterSubscriber { resume, .. } => Req::RegisterSubscriber(resume),
            Request::Subscribe { topic } => Req::Subscribe(topic.to_owned()),
            Request::Unsubscribe { topic } => Req::Unsubscribe(topic.to_owned()),
            Request::Pull(pull) => Req::Pull {
                topic: pull.topic.map(str::to_owned),
                max_messages: pull.max_messages,
                max_bytes: pull.max_bytes,
                wait_ms: pull.wait_ms,
                ack: pull.ack,
            },
            Request::Ack { topic, offset } => Req::Ack(topic.to_owned(), offset),
            Request::Stats => Req::Stats,
            Request::EndSession => Req::EndSession,
            Request::ListTopics { after, limit } => {
                Req::ListTopics(after.map(str::to_owned), limit)
            }
            Request::TopicInfo { topic } => Req::TopicInfo(topic.to_owned()),
            Request::CreateTopicWith { topic, retention } => {
                Req::CreateTopicWith(topic.to_owned(), retention)
            }
            Request::SubscribeFrom { topic, position } => {
                Req::SubscribeFrom(topic.to_owned(), position)
            }
            Request::RegisterProducer { producer_id } => {
                Req::RegisterProducer(producer_id.to_owned())
            }
            Request::PublishSeq {
                topic,
                payload,
                seq,
            } => Req::PublishSeq(topic.to_owned(), payload.to_vec(), seq),
            Request::PublishBatchSeq {
                topic,
                payloads,
                first_seq,
            } => Req::PublishBatchSeq(
                topic.to_owned(),
                payloads.iter().map(<[u8]>::to_vec).collect(),
                first_seq,
            ),
            Request::Seek { topic, position } => Req::Seek(topic.to_owned(), position),
            Request::Fetch {
                topic,
                offset,
                max_messages,
                max_bytes,
            } => Req::Fetch(topic.to_owned(), offset, max_messages, max_bytes),
        }
    }
}

// ---------------------------------------------------------------------------
// Strategies

fn int() -> BoxedStrategy<u64> {
    prop_oneof![
        3 => any::<u64>(),
        3 => 0..300u64,
        2 => select(INT_WIDTH_EDGES),
    ]
    .boxed()
}

/// Strings of every `str` width: fixstr, str 8, str 16 and (rarely) str 32.
fn text() -> BoxedStrategy<String> {
    prop_oneof![
        6 => "(?s).{0,40}",
        2 => "(?s).{28,300}",
        1 => (65_530usize..65_540).prop_map(|n| "x".repeat(n)),
    ]
    .boxed()
}

/// Payloads of every `bin` width: bin 8, bin 16 and (rarely) bin 32.
fn payload() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        6 => vec(any::<u8>(), 0..40),
        2 => vec(any::<u8>(), 250..300),
        1 => (65_530usize..65_540).prop_map(|n| vec![0xa5; n]),
    ]
    .boxed()
}

/// What requests are made of; each property picks its own.
struct Vocabulary {
    topic: BoxedStrategy<String>,
    payload: BoxedStrategy<Vec<u8>>,
    batch: std::ops::Range<usize>,
    int: BoxedStrategy<u64>,
    version: BoxedStrategy<u64>,
    /// How often each operation comes, in `ALL_OPS` order.
    weights: [u32; 15],
}

impl Vocabulary {
    /// Every encoded width, for round trips.
    fn wide() -> Self {
        Vocabulary {
            topic: text(),
            payload: payload(),
            batch: 0..20,
            int: int(),
            version: int(),
            weights: [1; 15],
        }
    }

    /// Small frames, for properties that handle many requests per case.
    fn narrow() -> Self {
        Vocabulary {
            topic: "(?s).{0,40}".boxed(),
            payload: prop_oneof![4 => vec(any::<u8>(), 0..40), 1 => vec(any::<u8>(), 250..300)]
                .boxed(),
            batch: 0..20,
            int: int(),
            version: int(),
            weights: [1; 15],
        }
    }

    /// Requests that mostly make sense to a broker with [`model_limits`]:
    /// a few topic names, small counts and offsets, the protocol's version, and
    /// payloads around `max_payload_bytes` (1536) now and then.
    fn broker() -> Self {
        Vocabulary {
            topic: prop_oneof![
                12 => select(&["a", "b", "c", "d"][..]).prop_map(str::to_owned),
                1 => Just(String::new()),
                1 => "(?s).{0,12}",
                // Escaped as six bytes each in an error message.
                1 => (200usize..300).prop_map(|n| "\u{1}".repeat(n)),
            ]
            .boxed(),
            payload: prop_oneof![
                12 => vec(any::<u8>(), 0..16),
                1 => vec(any::<u8>(), 1530..1545),
            ]
            .boxed(),
            batch: 0..5,
            int: prop_oneof![6 => 0..24u64, 1 => select(INT_WIDTH_EDGES)].boxed(),
            version: prop_oneof![9 => Just(courier::PROTOCOL_VERSION), 1 => int()].boxed(),
            // Mostly the traffic of a working system: publish, pull, ack.
            weights: [1, 2, 2, 1, 6, 3, 2, 3, 1, 6, 3, 1, 1, 1, 1],
        }
    }
}

fn request(v: &Vocabulary) -> BoxedStrategy<Req> {
    let topic = || v.topic.clone();
    let int = || v.int.clone();
    let int32 = || v.int.clone().prop_map(|n| n as u32);
    let ops = [
        (v.version.clone(), topic())
            .prop_map(|(version, client_name)| Req::Hello {
                version,
                client_name,
            })
            .boxed(),
        Just(Req::RegisterPublisher).boxed(),
        topic().prop_map(Req::CreateTopic).boxed(),
        topic().prop_map(Req::DeleteTopic).boxed(),
        (topic(), v.payload.clone())
            .prop_map(|(t, p)| Req::Publish(t, p))
            .boxed(),
        (topic(), vec(v.payload.clone(), v.batch.clone()))
            .prop_map(|(t, p)| Req::PublishBatch(t, p))
            .boxed(),
        proptest::option::of(int())
            .prop_map(Req::RegisterSubscriber)
            .boxed(),
        topic().prop_map(Req::Subscribe).boxed(),
        topic().prop_map(Req::Unsubscribe).boxed(),
        (
            proptest::option::of(topic()),
            int32(),
            int32(),
            int32(),
            any::<bool>(),
        )
            .prop_map(|(topic, max_messages, max_bytes, wait_ms, ack)| Req::Pull {
                topic,
                max_messages,
                max_bytes,
                wait_ms,
                ack,
            })
            .boxed(),
        (topic(), int()).prop_map(|(t, o)| Req::Ack(t, o)).boxed(),
        Just(Req::Stats).boxed(),
        Just(Req::EndSession).boxed(),
        (proptest::option::of(topic()), int32())
            .prop_map(|(after, limit)| Req::ListTopics(after, limit))
            .boxed(),
        topic().prop_map(Req::TopicInfo).boxed(),
    ];
    proptest::strategy::Union::new_weighted(v.weights.into_iter().zip(ops).collect()).boxed()
}

fn server_info() -> impl Strategy<Value = ServerInfo> {
    (prop::array::uniform12(int()), text()).prop_map(|(n, server)| ServerInfo {
        version: n[0],
        server,
        max_frame_bytes: n[1],
        max_payload_bytes: n[2],
        max_topic_name_bytes: n[3],
        max_pull_messages: n[4],
        max_backlog_bytes: n[5],
        max_backlog_messages: n[6],
        session_timeout_ms: n[7],
        max_output_bytes: n[8],
        publish_hold_ms: n[9],
        max_waiting_pulls: n[10],
        max_session_timeout_ms: n[11],
    })
}

fn stats() -> impl Strategy<Value = Stats> {
    (
        prop::array::uniform14(int()),
        btree_map("(?s).{0,30}", int(), 0..25),
        btree_map("(?s).{0,30}", int(), 0..10),
        (int(), int()),
        prop::array::uniform4(int()),
    )
        .prop_map(
            |(n, errors, memory, (memory_total, memory_limit), h)| Stats {
                uptime_ms: n[0],
                connections: n[1],
                connections_total: n[2],
                topics: n[3],
                publishers: n[4],
                subscribers: n[5],
                subscriptions: n[6],
                waiting_pulls: n[7],
                messages_in: n[8],
                messages_out: n[9],
                bytes_in: n[10],
                bytes_out: n[11],
                backlog_messages: n[12],
                backlog_bytes: n[13],
                errors,
                memory,
                memory_total,
                memory_limit,
                publishes_held: h[0],
                held_now: h[1],
                held_dropped: h[2],
                held_input_pauses: h[3],
                ..Stats::default()
            },
        )
}

fn group() -> impl Strategy<Value = TopicMessages> {
    (text(), int(), vec(payload().prop_map(Bytes::from), 0..20)).prop_map(
        |(topic, first_offset, payloads)| TopicMessages {
            topic,
            first_offset,
            payloads,
            lost: 0,
        },
    )
}

/// A success reply and the operation whose reply it is.
fn reply() -> BoxedStrategy<(Op, Reply)> {
    prop_oneof![
        server_info()
            .prop_map(|info| (Op::Hello, Reply::Hello(info)))
            .boxed(),
        stats()
            .prop_map(|stats| (Op::Stats, Reply::Stats(Box::new(stats))))
            .boxed(),
        int()
            .prop_map(|publisher_id| (
                Op::RegisterPublisher,
                Reply::PublisherRegistered { publisher_id }
            ))
            .boxed(),
        select(&[Op::CreateTopic, Op::DeleteTopic, Op::Unsubscribe, Op::Ack][..])
            .prop_map(|op| (op, Reply::Done))
            .boxed(),
        (int(), int())
            .prop_map(|(offset, subscribers)| (
                Op::Publish,
                Reply::Published {
                    offset,
                    subscribers
                }
            ))
            .boxed(),
        (int(), int(), int())
            .prop_map(|(first_offset, count, subscribers)| (
                Op::PublishBatch,
                Reply::PublishedBatch {
                    first_offset,
                    count,
                    subscribers
                }
            ))
            .boxed(),
        (int(), vec(text(), 0..20), any::<bool>())
            .prop_map(|(subscriber_id, topics, more)| (
                Op::RegisterSubscriber,
                Reply::SubscriberRegistered {
                    subscriber_id,
                    topics,
                    more
                }
            ))
            .boxed(),
        int()
            .prop_map(|next_offset| (Op::Subscribe, Reply::Subscribed { next_offset }))
            .boxed(),
        vec(group(), 0..5)
            .prop_map(|groups| (Op::Pull, Reply::Messages(groups)))
            .boxed(),
    ]
    .boxed()
}

/// One edit to an encoded value: what a buggy or hostile peer might send.
#[derive(Debug, Clone)]
enum Damage {
    Set(Index, u8),
    Insert(Index, u8),
    Remove(Index),
    Truncate(Index),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        4 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Damage::Set(i, b)),
        1 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Damage::Insert(i, b)),
        1 => any::<Index>().prop_map(Damage::Remove),
        1 => any::<Index>().prop_map(Damage::Truncate),
    ]
}

fn apply(bytes: &mut Vec<u8>, damage: &[Damage]) {
    for d in damage {
        let len = bytes.len();
        match d {
            Damage::Set(i, b) if len > 0 => bytes[i.index(len)] = *b,
            Damage::Insert(i, b) => bytes.insert(i.index(len + 1), *b),
            Damage::Remove(i) if len > 0 => {
                bytes.remove(i.index(len));
            }
            Damage::Truncate(i) => bytes.truncate(i.index(len + 1)),
            Damage::Set(..) | Damage::Remove(_) => {}
        }
    }
}

// ---------------------------------------------------------------------------
// (a), (c): requests

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn arbitrary_bytes_never_panic_split_frame_or_decode_request(
        bytes in vec(any::<u8>(), 0..200),
        max in prop_oneof![any::<usize>(), 0usize..300],
    ) {
        check_split(&bytes, max);
        check_request_body(&bytes);
    }

    #[test]
    fn damaged_requests_never_panic_decode_request(
        id in int(),
        request in request(&Vocabulary::narrow()),
        damage in vec(damage(), 1..5),
    ) {
        let mut frame = Vec::new();
        request.encode(&mut frame, id);
        let mut body = frame.split_off(FRAME_HEADER_LEN);
        apply(&mut body, &damage);
        check_request_body(&body);
        let framed = framed(&body);
        check_split(&framed, body.len());
        check_split(&framed[..framed.len() / 2], body.len());
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn every_request_round_trips(id in int(), request in request(&Vocabulary::wide())) {
        let mut frame = Vec::new();
        request.encode(&mut frame, id);
        let body = whole_frame(&frame);
        let (got_id, decoded) = codec::decode_request(&body).expect("a request we encoded");
        prop_assert_eq!(got_id, id);
        prop_assert_eq!(Req::from_request(&decoded), request);
        let mut again = Vec::new();
        codec::encode_request(&mut again, got_id, &decoded);
        prop_assert_eq!(again, frame, "what decodes encodes to the same bytes");
    }
}

// ---------------------------------------------------------------------------
// (b): a stream of requests, cut anywhere

proptest! {
    #![proptest_config(config(128))]

    /// The server's loop: append what a read returned, take every complete
    /// frame by advancing an offset, compact once per read.
    #[test]
    fn a_request_stream_cut_anywhere_decodes_to_the_requests_sent(
        requests in vec((any::<u64>(), request(&Vocabulary::narrow())), 1..30),
        reads in vec(prop_oneof![3 => 1usize..16, 1 => 1usize..4096], 1..24),
    ) {
        let mut stream = Vec::new();
        for (id, request) in &requests {
            request.encode(&mut stream, *id);
        }
        let mut input = Vec::new();
        let mut got = Vec::new();
        let mut fed = 0;
        for &read in reads.iter().cycle() {
            if fed == stream.len() {
                break;
            }
            let n = read.min(stream.len() - fed);
            input.extend_from_slice(&stream[fed..fed + n]);
            fed += n;
            let mut consumed = 0;
            while let Some((body, used)) =
                codec::split_frame(&input[consumed..], 1 << 20).expect("frames are small")
            {
                let (id, request) = codec::decode_request(body).expect("well-formed");
                got.push((id, Req::from_request(&request)));
                consumed += used;
            }
            input.drain(..consumed);
        }
        prop_assert!(input.is_empty(), "{} bytes left over", input.len());
        prop_assert_eq!(got, requests);
    }
}

// ---------------------------------------------------------------------------
// (d), (e): replies

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn every_reply_round_trips(id in int(), (op, reply) in reply()) {
        let mut frame = Vec::new();
        codec::encode_reply(&mut frame, id, &reply);
        let body = whole_frame(&frame);
        prop_assert_eq!(codec::decode_reply_id(&body), Ok(id));
        prop_assert_eq!(codec::decode_reply(op, &body), Ok((id, Ok(reply))));
    }

    #[test]
    fn every_error_reply_round_trips_whatever_the_operation(
        id in int(),
        code in select(ErrorCode::ALL),
        message in text(),
        op in select(&ALL_OPS[..]),
    ) {
        let mut frame = Vec::new();
        codec::encode_error(&mut frame, id, code, &message);
        let body = whole_frame(&frame);
        prop_assert_eq!(
            codec::decode_reply(op, &body),
            Ok((id, Err(ErrorReply { code, message })))
        );
    }
}

proptest! {
    #![proptest_config(config(384))]

    #[test]
    fn arbitrary_bytes_never_panic_decode_reply(bytes in vec(any::<u8>(), 0..200)) {
        let body = Bytes::from(bytes);
        for op in ALL_OPS {
            check_reply_body(op, &body);
        }
    }

    #[test]
    fn damaged_replies_never_panic_decode_reply(
        id in int(),
        (_, reply) in reply(),
        error in proptest::option::of((select(ErrorCode::ALL), "(?s).{0,40}")),
        damage in vec(damage(), 1..5),
    ) {
        let mut frame = Vec::new();
        match error {
            Some((code, message)) => codec::encode_error(&mut frame, id, code, &message),
            None => codec::encode_reply(&mut frame, id, &reply),
        }
        let mut body = frame.split_off(FRAME_HEADER_LEN);
        apply(&mut body, &damage);
        let body = Bytes::from(body);
        for op in ALL_OPS {
            check_reply_body(op, &body);
        }
    }
}

// ---------------------------------------------------------------------------
// (f): the broker, driven like the server drives it

const CONNS: usize = 4;

/// Small bounds, so that a few dozen steps reach them.
fn model_limits() -> Limits {
    Limits {
        max_frame_bytes: 2048,
        max_backlog_bytes: 3000,
        max_backlog_messages: 6,
        max_topics: 3,
        max_subscribers_per_topic: 2,
        session_timeout: Duration::from_millis(200),
        ..Limits::default()
    }
}

#[derive(Debug, Clone)]
enum Step {
    /// A new connection under this key (the old one, if any, goes first),
    /// usually followed by a HELLO.
    Connect {
        conn: ConnId,
        hello: bool,
    },
    Disconnect(ConnId),
    /// A well-formed request. A `RegisterSubscriber(Some(n))` resumes one of
    /// the sessions seen so far when there is one and `n % 4 != 0`.
    Send(ConnId, Req),
    /// A request whose body was damaged, framed with its true length.
    SendDamaged(ConnId, u32, Req, Vec<Damage>),
    /// Bytes that need not be framed at all.
    SendRaw(ConnId, Vec<u8>),
    /// Time passes, then the loop wakes up (end of batch).
    Wait(u16),
    /// The end of one poll-loop iteration: timers, ready pulls, closes.
    EndOfBatch,
}

fn step() -> impl Strategy<Value = Step> {
    let conn = || 0..CONNS;
    let request = || request(&Vocabulary::broker());
    prop_oneof![
        1 => (conn(), prop::bool::weighted(0.9))
            .prop_map(|(conn, hello)| Step::Connect { conn, hello }),
        1 => conn().prop_map(Step::Disconnect),
        30 => (request(), conn(), prop::bool::weighted(0.8)).prop_map(|(r, c, in_role)| {
            let conn = if in_role { role_of(&r, c) } else { c };
            Step::Send(conn, r)
        }),
        2 => (conn(), any::<u32>(), request(), vec(damage(), 1..4))
            .prop_map(|(c, id, r, d)| Step::SendDamaged(c, id, r, d)),
        1 => (conn(), vec(any::<u8>(), 0..12)).prop_map(|(c, b)| Step::SendRaw(c, b)),
        3 => (0..400u16).prop_map(Step::Wait),
        4 => Just(Step::EndOfBatch),
    ]
}

/// The connection that [`roles`] gave the part that sends `request` (`any`
/// picks among several, or for requests anyone sends).
fn role_of(request: &Req, any: ConnId) -> ConnId {
    match request {
        Req::RegisterPublisher
        | Req::CreateTopic(_)
        | Req::DeleteTopic(_)
        | Req::Publish(..)
        | Req::PublishBatch(..)
        | Req::CreateTopicWith(..)
        | Req::RegisterProducer(_)
        | Req::PublishSeq(..)
        | Req::PublishBatchSeq(..) => 0,
        Req::RegisterSubscriber(_)
        | Req::Subscribe(_)
        | Req::SubscribeFrom(..)
        | Req::Seek(..)
        | Req::Unsubscribe(_)
        | Req::Pull { .. }
        | Req::Ack(..)
        | Req::EndSession => 1 + any % 2,
        Req::Hello { .. }
        | Req::Stats
        | Req::ListTopics(..)
        | Req::TopicInfo(_)
        | Req::Fetch(..) => any,
    }
}

/// A start that random steps rarely reach alone: connection 0 publishes to
/// topics `a` and `b`; 1 subscribes to `a`, 2 to both; 3 has only said HELLO.
fn roles() -> Vec<Step> {
    let topic = |name: &str| name.to_owned();
    vec![
        Step::Send(0, Req::RegisterPublisher),
        Step::Send(0, Req::CreateTopic(topic("a"))),
        Step::Send(0, Req::CreateTopic(topic("b"))),
        Step::Send(1, Req::RegisterSubscriber(None)),
        Step::Send(1, Req::Subscribe(topic("a"))),
        Step::Send(2, Req::RegisterSubscriber(None)),
        Step::Send(2, Req::Subscribe(topic("a"))),
        Step::Send(2, Req::Subscribe(topic("b"))),
        Step::EndOfBatch,
    ]
}

/// The broker as the model drives it, its clock starting at `start`: the
/// harness under [`model_limits`] with [`CONNS`] connections, holding the
/// broker to answering each of the model's well-formed requests exactly once
/// (they carry the harness's tracked ids; damaged ones carry a `u32`).
fn model(start: Instant) -> Harness {
    Harness::new(model_limits(), CONNS, start, Track::Answers)
}

/// Takes `step`; see [`Step::Send`] for how a resume picks its session.
fn run(model: &mut Harness, step: &Step) {
    match step {
        Step::Connect { conn, hello } => model.connect(*conn, *hello),
        Step::Disconnect(conn) => model.disconnect(*conn),
        Step::Send(conn, Req::RegisterSubscriber(Some(n)))
            if !model.sessions().is_empty() && n % 4 != 0 =>
        {
            let id = model.sessions()[*n as usize % model.sessions().len()];
            send(model, *conn, &Req::RegisterSubscriber(Some(id)));
        }
        Step::Send(conn, request) => send(model, *conn, request),
        Step::SendDamaged(conn, id, request, damage) => {
            let mut frame = Vec::new();
            request.encode(&mut frame, u64::from(*id));
            let mut body = frame.split_off(FRAME_HEADER_LEN);
            apply(&mut body, damage);
            model.feed(*conn, &framed(&body));
        }
        Step::SendRaw(conn, bytes) => model.feed(*conn, bytes),
        Step::Wait(ms) => model.advance(Duration::from_millis(u64::from(*ms))),
        Step::EndOfBatch => model.end_of_batch(),
    }
}

fn send(model: &mut Harness, conn: ConnId, request: &Req) {
    let mut scratch = Vec::new();
    model.send(conn, &request.to_request(&mut scratch));
}

proptest! {
    #![proptest_config(config(96))]

    #[test]
    fn the_broker_survives_any_input_and_answers_every_request(
        set_up in prop::bool::weighted(0.8),
        steps in vec(step(), 1..120),
    ) {
        let mut model = model(Instant::now());
        let set_up = if set_up { roles() } else { Vec::new() };
        for step in set_up.iter().chain(&steps) {
            run(&mut model, step);
        }
        model.finish();
    }
}

// ---------------------------------------------------------------------------
// Regressions: what the properties and the fuzzers found, pinned.

/// Runs `steps` from the model's start (four connections, HELLO done) and
/// checks everything the broker property checks.
fn run_model(steps: &[Step]) {
    let mut model = model(Instant::now());
    for step in steps {
        run(&mut model, step);
    }
    model.finish();
}

fn pull_all(wait_ms: u32) -> Req {
    Req::Pull {
        topic: None,
        max_messages: 10,
        max_bytes: 1000,
        wait_ms,
        ack: false,
    }
}

/// A request well within `max_frame_bytes` that names an invalid topic is
/// answered within it too (PROTOCOL.md 1: "Replies never exceed
/// `max_frame_bytes` either"). The error reply once echoed the whole name,
/// escaped with `{:?}`, six bytes per control character; plain ASCII did it
/// too, with a name as long as the frame allows. It now echoes at most the
/// start of the name.
#[test]
fn regression_an_invalid_topic_name_does_not_make_a_reply_too_large() {
    run_model(&[
        Step::Send(0, Req::RegisterSubscriber(None)),
        Step::Send(0, Req::Unsubscribe("\u{1}".repeat(400))),
    ]);
    run_model(&[
        Step::Send(0, Req::RegisterSubscriber(None)),
        Step::Send(0, Req::Subscribe("x".repeat(2030))),
    ]);
}

/// A connection with a parked pull registers a subscriber again, new or
/// resuming the same session: the pull is still answered, since the client
/// waits for its reply (PROTOCOL.md 3.3). It once vanished with the session
/// it belonged to; the broker now answers it, empty, first.
#[test]
fn regression_reregistering_answers_the_parked_pull() {
    run_model(&[
        Step::Send(1, Req::RegisterSubscriber(None)),
        Step::Send(1, pull_all(1)),
        Step::Send(1, Req::RegisterSubscriber(None)),
    ]);
    // Resumes the session registered first: the model's only one.
    run_model(&[
        Step::Send(1, Req::RegisterSubscriber(None)),
        Step::Send(1, pull_all(1)),
        Step::Send(1, Req::RegisterSubscriber(Some(1))),
    ]);
}

/// The two map-shaped replies go through rmp-serde, which skips unknown keys
/// by recursing into their values. Nesting a hundred thousand deep must be
/// refused, not overflow the stack: rmp-serde's own limit (1024) overflowed
/// a 2 MiB test thread in a debug build, hence `set_max_depth` in
/// `codec::read_named`. Modest nesting under a future key still passes.
#[test]
fn deeply_nested_values_in_a_map_reply_do_not_overflow_the_stack() {
    let nested = |depth: usize| {
        let mut body = vec![0x93, 42, 0, 0x81, 0xa1, b'x'];
        body.extend(std::iter::repeat_n(0x91, depth));
        body.push(0xc0);
        Bytes::from(body)
    };
    assert!(codec::decode_reply(Op::Stats, &nested(100_000)).is_err());
    assert!(codec::decode_reply(Op::Hello, &nested(100_000)).is_err());
    assert_eq!(
        codec::decode_reply(Op::Stats, &nested(20)),
        Ok((42, Ok(Reply::Stats(Box::default()))))
    );
}

/// A connection registers a second subscriber: the session it lets go
/// expires by the broker's clock. `Broker::register_subscriber` once detached
/// it at `Instant::now()` instead of the `now` it was handed, so it expired
/// by the wall clock. Found by the `broker_frames` fuzzer. The model's clock
/// runs ten seconds behind the wall clock, so that the difference shows.
#[test]
fn regression_a_replaced_session_expires_on_the_brokers_clock() {
    let start = Instant::now()
        .checked_sub(Duration::from_secs(10))
        .expect("the monotonic clock has run for ten seconds");
    let mut model = model(start);
    run(&mut model, &Step::Send(1, Req::RegisterSubscriber(None)));
    run(&mut model, &Step::Send(1, Req::RegisterSubscriber(None)));
    model.everyone_leaves();
}
