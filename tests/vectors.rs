//! tests/vectors.json, checked against the Rust codec: for every vector,
//! decoding its bytes gives its value (as `protocol` types), and encoding
//! that value gives exactly its bytes (unless the vector is a longer form the
//! broker only accepts). The file's bytes come from a writer of their own
//! (clients/python/tools/gen_vectors.py), and the vectors taken from
//! PROTOCOL.md must appear in it verbatim, so this is the codec against two
//! independent sources, not against itself.
//!
//! Every frame PROTOCOL.md shows must also be a vector, so a new example
//! in the document needs its vector (clients/python/tools/gen_vectors.py).
//!
//! Vectors marked `pending` are shapes of changes not merged here yet: each
//! is checked by a decode and re-encode when the codec reads it, and listed
//! as skipped when it does not, so that they turn into checks by themselves
//! once the codec learns the shapes (then drop `pending` to make them strict).

use bytes::Bytes;
use courier::codec::{self, decode_reply, decode_request, encode_error, encode_reply, split_frame};
use courier::protocol::{
    Credentials, ErrorCode, ErrorReply, Fetched, FetchedMessage, Op, Position, Pull, Reply,
    Request, Retention, ServerInfo, Stats, TopicMessages, TopicPage, TopicSummary,
};
use serde_json::Value as Json;

const FILE: &str = include_str!("vectors.json");
const PROTOCOL: &str = include_str!("../PROTOCOL.md");

/// A vector's value, read from the file's JSON encoding (its "schema").
#[derive(Debug, Clone, PartialEq)]
enum V {
    Nil,
    Bool(bool),
    Int(u64),
    Str(String),
    Bin(Vec<u8>),
    Array(Vec<V>),
    Map(Vec<(V, V)>),
}

fn value(j: &Json) -> V {
    match j {
        Json::Null => V::Nil,
        Json::Bool(b) => V::Bool(*b),
        Json::Number(n) => {
            let n = n.as_u64().expect("an unsigned integer");
            assert!(
                n < 1 << 53,
                "{n}: integers from 2^53 on are {{\"int\": ...}}"
            );
            V::Int(n)
        }
        Json::String(s) => V::Str(s.clone()),
        Json::Array(items) => V::Array(items.iter().map(value).collect()),
        Json::Object(o) => {
            assert_eq!(o.len(), 1, "a tagged value has one key: {o:?}");
            match o.iter().next() {
                Some((k, Json::String(s))) if k == "int" => V::Int(s.parse().expect("decimal")),
                Some((k, Json::String(s))) if k == "bin" => V::Bin(unhex(s)),
                Some((k, Json::Array(pairs))) if k == "map" => V::Map(
                    pairs
                        .iter()
                        .map(|p| match p.as_array().map(Vec::as_slice) {
                            Some([k, v]) => (value(k), value(v)),
                            _ => panic!("a map pair is [key, value]: {p}"),
                        })
                        .collect(),
                ),
                _ => panic!("unknown tagged value {o:?}"),
            }
        }
    }
}

fn unhex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    assert!(digits.len().is_multiple_of(2), "odd hex {s}");
    digits
        .chunks(2)
        .map(|pair| {
            let text = std::str::from_utf8(pair).expect("ascii");
            u8::from_str_radix(text, 16).expect("hex digit")
        })
        .collect()
}

/// A map value as JSON, for the reply structs' serde `Deserialize`.
fn as_json(v: &V) -> Json {
    match v {
        V::Nil => Json::Null,
        V::Bool(b) => Json::Bool(*b),
        V::Int(n) => Json::from(*n),
        V::Str(s) => Json::String(s.clone()),
        V::Array(items) => Json::Array(items.iter().map(as_json).collect()),
        V::Map(pairs) => Json::Object(
            pairs
                .iter()
                .map(|(k, v)| match k {
                    V::Str(k) => (k.clone(), as_json(v)),
                    _ => panic!("map keys are str"),
                })
                .collect(),
        ),
        V::Bin(_) => panic!("no bin inside a map reply"),
    }
}

fn from_map<T: serde::de::DeserializeOwned>(v: &V) -> T {
    serde_json::from_value(as_json(v)).expect("the map has the struct's keys")
}

fn int(v: &V) -> u64 {
    match v {
        V::Int(n) => *n,
        _ => panic!("expected an integer, got {v:?}"),
    }
}

fn u32_of(v: &V) -> u32 {
    u32::try_from(int(v)).expect("a 32-bit field")
}

fn text(v: &V) -> &str {
    match v {
        V::Str(s) => s,
        _ => panic!("expected a str, got {v:?}"),
    }
}

fn opt_text(v: &V) -> Option<&str> {
    match v {
        V::Nil => None,
        v => Some(text(v)),
    }
}

fn opt_int(v: &V) -> Option<u64> {
    match v {
        V::Nil => None,
        v => Some(int(v)),
    }
}

/// A payload: `bin`, or a `str` (which the broker accepts as bytes).
fn bytes_of(v: &V) -> &[u8] {
    match v {
        V::Bin(b) => b,
        V::Str(s) => s.as_bytes(),
        _ => panic!("expected a payload, got {v:?}"),
    }
}

fn items(v: &V) -> &[V] {
    match v {
        V::Array(items) => items,
        _ => panic!("expected an array, got {v:?}"),
    }
}

/// The request a vector's value means. `scratch` holds a batch's encoded
/// payloads, which `Request::PublishBatch` borrows.
fn request<'a>(v: &'a V, scratch: &'a mut Vec<u8>) -> (u64, ExpectedRequest<'a>) {
    let a = items(v);
    let op = Op::from_code(int(&a[0])).expect("a known op");
    let id = int(&a[1]);
    let req = match (op, &a[2..]) {
        (Op::Hello, [version, name]) => Request::Hello {
            version: int(version),
            client_name: text(name),
            credentials: None,
        },
        (Op::Hello, [version, name, credentials]) => Request::Hello {
            version: int(version),
            client_name: text(name),
            credentials: match credentials {
                V::Nil => None,
                map => Some(Credentials {
                    user: text(key(map, "user")),
                    token: text(key(map, "token")),
                }),
            },
        },
        (Op::RegisterPublisher, []) => Request::RegisterPublisher,
        (Op::RegisterPublisher, [producer]) => match opt_text(producer) {
            None => Request::RegisterPublisher,
            Some(producer_id) => Request::RegisterProducer { producer_id },
        },
        (Op::CreateTopic, [t]) => Request::CreateTopic { topic: text(t) },
        (Op::CreateTopic, [t, options]) => match options {
            V::Nil => Request::CreateTopic { topic: text(t) },
            V::Map(pairs) if pairs.is_empty() => Request::CreateTopic { topic: text(t) },
            map => Request::CreateTopicWith {
                topic: text(t),
                retention: Retention::Keep {
                    retain_ms: opt_key(map, "retain_ms").map_or(0, int),
                    retain_bytes: opt_key(map, "retain_bytes").map_or(0, int),
                },
            },
        },
        (Op::DeleteTopic, [t]) => Request::DeleteTopic { topic: text(t) },
        (Op::Publish, [t, payload]) => Request::Publish {
            topic: text(t),
            payload: bytes_of(payload),
        },
        (Op::Publish, [t, payload, seq]) => Request::PublishSeq {
            topic: text(t),
            payload: bytes_of(payload),
            seq: int(seq),
        },
        (Op::PublishBatch, [t, list]) => {
            let payloads: Vec<&[u8]> = items(list).iter().map(bytes_of).collect();
            Request::PublishBatch {
                topic: text(t),
                payloads: codec::encode_payloads(scratch, &payloads),
            }
        }
        (Op::PublishBatch, [t, list, first_seq]) => {
            let payloads: Vec<&[u8]> = items(list).iter().map(bytes_of).collect();
            Request::PublishBatchSeq {
                topic: text(t),
                payloads: codec::encode_payloads(scratch, &payloads),
                first_seq: int(first_seq),
            }
        }
        (Op::Subscribe, [t, V::Nil]) => Request::Subscribe { topic: text(t) },
        (Op::Subscribe, [t, at]) => Request::SubscribeFrom {
            topic: text(t),
            position: position(at),
        },
        (Op::Seek, [t, at]) => Request::Seek {
            topic: text(t),
            position: position(at),
        },
        (Op::Fetch, [t, offset, max_messages, max_bytes]) => Request::Fetch {
            topic: text(t),
            offset: int(offset),
            max_messages: u32_of(max_messages),
            max_bytes: u32_of(max_bytes),
        },
        (Op::RegisterSubscriber, [resume]) => Request::RegisterSubscriber {
            resume: opt_int(resume),
            timeout_ms: None,
        },
        (Op::RegisterSubscriber, [resume, timeout]) => Request::RegisterSubscriber {
            resume: opt_int(resume),
            timeout_ms: opt_int(timeout),
        },
        (Op::Subscribe, [t]) => Request::Subscribe { topic: text(t) },
        (Op::Unsubscribe, [t]) => Request::Unsubscribe { topic: text(t) },
        (Op::Pull, [t, max_messages, max_bytes, wait_ms, V::Bool(ack)]) => Request::Pull(Pull {
            topic: opt_text(t),
            max_messages: u32_of(max_messages),
            max_bytes: u32_of(max_bytes),
            wait_ms: u32_of(wait_ms),
            ack: *ack,
        }),
        (Op::Ack, [t, offset]) => Request::Ack {
            topic: text(t),
            offset: int(offset),
        },
        (Op::Stats, []) => Request::Stats,
        (Op::EndSession, []) => Request::EndSession,
        (Op::ListTopics, [after, limit]) => Request::ListTopics {
            after: opt_text(after),
            limit: u32_of(limit),
        },
        (Op::TopicInfo, [t]) => Request::TopicInfo { topic: text(t) },
        (op, args) => panic!("no request {op:?} with arguments {args:?}"),
    };
    (id, ExpectedRequest::Exact(req))
}

/// What a request vector must decode to.
#[derive(Debug)]
enum ExpectedRequest<'a> {
    Exact(Request<'a>),
}

/// The value of `name` in a map value, if there.
fn opt_key<'a>(map: &'a V, name: &str) -> Option<&'a V> {
    let V::Map(pairs) = map else {
        panic!("expected a map, got {map:?}")
    };
    pairs
        .iter()
        .find(|(k, _)| matches!(k, V::Str(s) if s == name))
        .map(|(_, v)| v)
}

fn key<'a>(map: &'a V, name: &str) -> &'a V {
    opt_key(map, name).unwrap_or_else(|| panic!("no key {name} in {map:?}"))
}

/// A start position (4.19).
fn position(v: &V) -> Position {
    match v {
        V::Str(s) if s == "new" => Position::New,
        V::Str(s) if s == "earliest" => Position::Earliest,
        V::Int(offset) => Position::Offset(*offset),
        map => Position::TimeMs(int(key(map, "time_ms"))),
    }
}

/// The reply a vector's value means, to a request of `op`.
fn reply(op: Op, v: &V) -> (u64, Expected) {
    let [id, status, body] = items(v) else {
        panic!("a reply is [id, status, body]: {v:?}")
    };
    let id = int(id);
    if int(status) != 0 {
        let code = ErrorCode::from_code(int(status)).expect("a known code");
        let message = text(body).to_owned();
        return (id, Expected::Exact(Err(ErrorReply { code, message })));
    }
    let ints = |v: &V| items(v).iter().map(int).collect::<Vec<_>>();
    let reply = match op {
        Op::Hello => Reply::Hello(from_map::<ServerInfo>(body)),
        Op::Stats => Reply::Stats(Box::new(from_map::<Stats>(body))),
        Op::ListTopics => Reply::Topics(from_map::<TopicPage>(body)),
        Op::TopicInfo => Reply::TopicInfo(from_map::<TopicSummary>(body)),
        Op::RegisterPublisher => Reply::PublisherRegistered {
            publisher_id: int(body),
        },
        Op::CreateTopic | Op::DeleteTopic | Op::Unsubscribe | Op::Ack | Op::EndSession => {
            assert_eq!(body, &V::Nil);
            Reply::Done
        }
        Op::Publish => match ints(body)[..] {
            [offset, subscribers] => Reply::Published {
                offset,
                subscribers,
            },
            _ => panic!("{body:?}"),
        },
        Op::PublishBatch => match ints(body)[..] {
            [first_offset, count, subscribers] => Reply::PublishedBatch {
                first_offset,
                count,
                subscribers,
            },
            _ => panic!("{body:?}"),
        },
        Op::RegisterSubscriber => match items(body) {
            [sid, topics, V::Bool(more)] => Reply::SubscriberRegistered {
                subscriber_id: int(sid),
                topics: items(topics).iter().map(|t| text(t).to_owned()).collect(),
                more: *more,
            },
            _ => panic!("{body:?}"),
        },
        Op::Subscribe | Op::Seek => Reply::Subscribed {
            next_offset: int(body),
        },
        Op::Fetch => Reply::Fetched(Fetched {
            messages: items(key(body, "messages"))
                .iter()
                .map(|m| match items(m) {
                    [offset, time_ms, payload] => FetchedMessage {
                        offset: int(offset),
                        time_ms: int(time_ms),
                        payload: Bytes::copy_from_slice(bytes_of(payload)),
                    },
                    _ => panic!("{m:?}"),
                })
                .collect(),
            next_offset: int(key(body, "next_offset")),
            earliest_offset: int(key(body, "earliest_offset")),
            end_offset: int(key(body, "end_offset")),
        }),
        Op::Pull => return (id, Expected::Groups(groups(body))),
    };
    (id, Expected::Exact(Ok(reply)))
}

/// A pull reply's groups as `(topic, first_offset, payloads, lost)`
/// (`lost` 0 when the group has 3 elements): compared field by field, so
/// that the test does not depend on every field of `TopicMessages`.
type Groups = Vec<(String, u64, Vec<Vec<u8>>, u64)>;

fn groups(body: &V) -> Groups {
    items(body)
        .iter()
        .map(|group| match items(group) {
            [topic, first, payloads, lost @ ..] => (
                text(topic).to_owned(),
                int(first),
                items(payloads)
                    .iter()
                    .map(|p| bytes_of(p).to_vec())
                    .collect(),
                lost.first().map_or(0, int),
            ),
            _ => panic!("{group:?}"),
        })
        .collect()
}

fn decoded_groups(groups: &[TopicMessages]) -> Groups {
    groups
        .iter()
        .map(|g| {
            let payloads = g.payloads.iter().map(|p| p.to_vec()).collect();
            (g.topic.clone(), g.first_offset, payloads, g.lost)
        })
        .collect()
}

/// What a reply vector must decode to.
#[derive(Debug)]
enum Expected {
    Exact(Result<Reply, ErrorReply>),
    Groups(Groups),
}

struct Vector {
    name: String,
    kind: String,
    op: u64,
    value: V,
    bytes: Vec<u8>,
    hex: String,
    canonical: bool,
    source: Option<String>,
    pending: bool,
}

fn vectors() -> Vec<Vector> {
    let file: Json = serde_json::from_str(FILE).expect("vectors.json is JSON");
    assert!(file["schema"].is_object(), "the file documents its schema");
    file["vectors"]
        .as_array()
        .expect("a vectors array")
        .iter()
        .map(|v| Vector {
            name: v["name"].as_str().expect("name").to_owned(),
            kind: v["kind"].as_str().expect("kind").to_owned(),
            op: v["op"].as_u64().expect("op"),
            value: value(&v["value"]),
            bytes: unhex(v["hex"].as_str().expect("hex")),
            hex: v["hex"].as_str().expect("hex").to_owned(),
            canonical: v["canonical"].as_bool().unwrap_or(true),
            source: v["source"].as_str().map(str::to_owned),
            pending: v.get("pending").is_some(),
        })
        .collect()
}

/// The frame's body: the vector's bytes must be exactly one frame.
fn body(v: &Vector) -> &[u8] {
    let (body, used) = split_frame(&v.bytes, usize::MAX)
        .expect("length prefix")
        .expect("a whole frame");
    assert_eq!(
        used,
        v.bytes.len(),
        "{}: one frame, nothing after it",
        v.name
    );
    body
}

fn check_request(v: &Vector) {
    let mut scratch = Vec::new();
    let (id, expected) = request(&v.value, &mut scratch);
    let (decoded_id, decoded) = decode_request(body(v)).expect("the codec reads it");
    assert_eq!(decoded_id, id, "{}", v.name);
    match (&expected, &decoded) {
        (ExpectedRequest::Exact(expected), decoded) => assert_eq!(decoded, expected, "{}", v.name),
    }
    if v.canonical {
        // The decoded request equals the vector's value, so encoding it is
        // encoding that value.
        let mut out = Vec::new();
        codec::encode_request(&mut out, id, &decoded);
        assert_eq!(out, v.bytes, "{}: encoding", v.name);
    }
}

fn encode_decoded(id: u64, decoded: &Result<Reply, ErrorReply>) -> Vec<u8> {
    let mut out = Vec::new();
    match decoded {
        Ok(reply) => encode_reply(&mut out, id, reply),
        Err(e) => encode_error(&mut out, id, e.code, &e.message),
    }
    out
}

fn check_reply(v: &Vector) {
    let op = Op::from_code(v.op).expect("a known op");
    let (id, expected) = reply(op, &v.value);
    let frame = Bytes::copy_from_slice(body(v));
    let (decoded_id, decoded) = decode_reply(op, &frame).expect("the codec reads it");
    assert_eq!(decoded_id, id, "{}", v.name);
    match (&expected, &decoded) {
        (Expected::Exact(expected), decoded) => assert_eq!(decoded, expected, "{}", v.name),
        (Expected::Groups(expected), Ok(Reply::Messages(groups))) => {
            assert_eq!(&decoded_groups(groups), expected, "{}", v.name)
        }
        (Expected::Groups(_), other) => panic!("{}: decoded as {other:?}", v.name),
    }
    if v.canonical {
        // The decoded value equals the vector's, so encoding it is encoding
        // the vector's value.
        assert_eq!(
            encode_decoded(id, &decoded),
            v.bytes,
            "{}: encoding",
            v.name
        );
    }
}

/// A pending vector: `Some(())` if the codec reads it (and then re-encodes
/// it to the same bytes), `None` if it does not know the shape yet.
fn check_pending(v: &Vector) -> Option<()> {
    let body = body(v);
    let reencoded = if v.kind == "request" {
        let (id, req) = decode_request(body).ok()?;
        let mut out = Vec::new();
        codec::encode_request(&mut out, id, &req);
        out
    } else {
        let op = Op::from_code(v.op)?;
        let (id, decoded) = decode_reply(op, &Bytes::copy_from_slice(body)).ok()?;
        encode_decoded(id, &decoded)
    };
    if v.canonical {
        assert_eq!(reencoded, v.bytes, "{}: re-encoding", v.name);
    }
    Some(())
}

#[test]
fn every_vector_decodes_to_its_value_and_encodes_to_its_bytes() {
    let mut skipped = Vec::new();
    let mut checked = 0;
    for v in vectors() {
        if v.pending {
            match check_pending(&v) {
                Some(()) => checked += 1,
                None => skipped.push(v.name),
            }
            continue;
        }
        match v.kind.as_str() {
            "request" => check_request(&v),
            "reply" => check_reply(&v),
            other => panic!("{}: unknown kind {other}", v.name),
        }
        checked += 1;
    }
    println!(
        "{checked} vectors checked; {} pending vectors the codec does not read yet: {skipped:?}",
        skipped.len()
    );
    assert!(checked >= 90, "only {checked} vectors checked");
}

#[test]
fn the_protocol_examples_are_verbatim_in_protocol_md() {
    let doc = PROTOCOL.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut from_doc = 0;
    for v in vectors() {
        let Some(source) = &v.source else { continue };
        assert!(source.starts_with("PROTOCOL.md"), "{}: {source}", v.name);
        // A pending example may come from a branch's PROTOCOL.md not merged
        // here; every_frame_protocol_md_shows_is_a_vector covers it after.
        if v.canonical && !v.pending {
            assert!(
                doc.contains(&v.hex),
                "{}: {} is not in PROTOCOL.md",
                v.name,
                v.hex
            );
            from_doc += 1;
        }
    }
    assert!(from_doc >= 40, "{from_doc} vectors from PROTOCOL.md");
}

#[test]
fn every_operation_and_error_code_has_vectors() {
    let all = vectors();
    for code in 1..=u64::MAX {
        let Some(op) = Op::from_code(code) else { break };
        for kind in ["request", "reply"] {
            assert!(
                all.iter()
                    .any(|v| v.kind == kind && v.op == code && v.canonical),
                "no {kind} vector for {op:?}"
            );
        }
    }
    for &code in ErrorCode::ALL {
        let has = all.iter().any(|v| {
            v.kind == "reply"
                && matches!(&v.value, V::Array(a) if a.get(1) == Some(&V::Int(code as u64)))
        });
        assert!(has, "no reply vector for {code}");
    }
}

/// Whether `line` is nothing but space-separated pairs of hex digits.
fn is_hex_line(line: &str) -> bool {
    let line = line.trim();
    !line.is_empty()
        && line
            .split(' ')
            .all(|b| b.len() == 2 && b.bytes().all(|c| c.is_ascii_hexdigit()))
}

/// Every whole frame PROTOCOL.md shows: hex code blocks (split at their
/// length prefixes) and inline hex that is exactly one frame.
fn frames_in_protocol_md() -> Vec<String> {
    let mut frames = Vec::new();
    let mut split = |bytes: &[u8], whole_only: bool| {
        let mut rest = bytes;
        while let Ok(Some((_, used))) = split_frame(rest, usize::MAX) {
            if whole_only && used != rest.len() {
                return;
            }
            let hex: Vec<String> = rest[..used].iter().map(|b| format!("{b:02x}")).collect();
            frames.push(hex.join(" "));
            rest = &rest[used..];
        }
    };
    for block in PROTOCOL.split("```").skip(1).step_by(2) {
        let lines: Vec<&str> = block.lines().filter(|l| !l.trim().is_empty()).collect();
        if !lines.is_empty() && lines.iter().all(|l| is_hex_line(l)) {
            split(&unhex(&lines.join(" ")), false);
        }
    }
    for inline in PROTOCOL.split('`').skip(1).step_by(2) {
        if is_hex_line(inline) && inline.len() >= 14 {
            split(&unhex(inline), true);
        }
    }
    frames
}

#[test]
fn every_frame_protocol_md_shows_is_a_vector() {
    let hexes: Vec<String> = vectors().into_iter().map(|v| v.hex).collect();
    let frames = frames_in_protocol_md();
    assert!(frames.len() >= 40, "{} frames found", frames.len());
    for frame in frames {
        assert!(
            hexes.contains(&frame),
            "PROTOCOL.md shows {frame}, which tests/vectors.json lacks \
             (run python3 clients/python/tools/gen_vectors.py after adding it there)"
        );
    }
}
