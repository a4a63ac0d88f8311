//! Frames and their contents, as bytes: no I/O happens here.
//!
//! A frame is a 4-byte big-endian length followed by that many bytes of one
//! MessagePack value. [`split_frame`] answers "incomplete" (`Ok(None)`),
//! distinct from "invalid" (`Err`), and rejects an oversized length as soon as
//! the 4 header bytes are in, before a byte of the body is buffered.
//!
//! Requests are arrays `[op, id, args…]`; replies are `[id, 0, body]` on
//! success and `[id, code, message]` on error. Both directions are encoded and
//! decoded here so that the broker and the client cannot disagree, and so the
//! round trip can be tested in one place. The broker writes pull replies piece
//! by piece from its own storage (see [`write_messages_header`]) so that a
//! payload is copied straight from where it is kept into the socket buffer.

use crate::msgpack::{self, ReadError, Reader};
use crate::protocol::{
    ErrorCode, ErrorReply, FRAME_HEADER_LEN, Op, Payloads, Pull, Reply, Request, Stats,
    TopicMessages,
};
use bytes::Bytes;
use std::fmt;

/// A length prefix larger than the receiver accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameTooLarge {
    pub len: usize,
    pub max: usize,
}

/// Looks for one complete frame at the start of `buf`.
///
/// Returns the body and the total bytes the frame occupies (header included),
/// `Ok(None)` while more bytes are needed, or an error as soon as the header
/// announces a body larger than `max_body`.
pub fn split_frame(buf: &[u8], max_body: usize) -> Result<Option<(&[u8], usize)>, FrameTooLarge> {
    let Some(header) = buf.first_chunk::<FRAME_HEADER_LEN>() else {
        return Ok(None);
    };
    let len = u32::from_be_bytes(*header) as usize;
    if len > max_body {
        return Err(FrameTooLarge { len, max: max_body });
    }
    let total = FRAME_HEADER_LEN + len;
    Ok(buf.get(FRAME_HEADER_LEN..total).map(|body| (body, total)))
}

/// Reserves a length prefix; returns where the frame starts in `out`.
pub fn begin_frame(out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER_LEN]);
    start
}

/// Fills in the length prefix reserved by [`begin_frame`].
pub fn end_frame(out: &mut [u8], start: usize) {
    let len = out.len() - start - FRAME_HEADER_LEN;
    // Bodies are bounded by max_frame_bytes, far below u32::MAX.
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    out[start..start + FRAME_HEADER_LEN].copy_from_slice(&len.to_be_bytes());
}

/// Why a request body could not be decoded. Carries the request id when it
/// could be read, so that the error reply can still name the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    pub id: Option<u64>,
    pub code: ErrorCode,
    pub message: String,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for DecodeError {}

fn malformed(id: Option<u64>, message: impl Into<String>) -> DecodeError {
    DecodeError {
        id,
        code: ErrorCode::MalformedRequest,
        message: message.into(),
    }
}

/// Names of the arguments each operation takes after `[op, id`, for errors.
fn signature(op: Op) -> &'static str {
    match op {
        Op::Hello => "HELLO [1, id, version, client_name]",
        Op::RegisterPublisher => "REGISTER_PUBLISHER [2, id]",
        Op::CreateTopic => "CREATE_TOPIC [3, id, topic]",
        Op::DeleteTopic => "DELETE_TOPIC [4, id, topic]",
        Op::Publish => "PUBLISH [5, id, topic, payload]",
        Op::PublishBatch => "PUBLISH_BATCH [6, id, topic, [payload, ...]]",
        Op::RegisterSubscriber => "REGISTER_SUBSCRIBER [7, id, subscriber_id or nil]",
        Op::Subscribe => "SUBSCRIBE [8, id, topic]",
        Op::Unsubscribe => "UNSUBSCRIBE [9, id, topic]",
        Op::Pull => "PULL [10, id, topic or nil, max_messages, max_bytes, wait_ms, ack]",
        Op::Ack => "ACK [11, id, topic, offset]",
        Op::Stats => "STATS [12, id]",
    }
}

fn arity(op: Op) -> u32 {
    match op {
        Op::RegisterPublisher | Op::Stats => 2,
        Op::CreateTopic
        | Op::DeleteTopic
        | Op::RegisterSubscriber
        | Op::Subscribe
        | Op::Unsubscribe => 3,
        Op::Hello | Op::Publish | Op::PublishBatch | Op::Ack => 4,
        Op::Pull => 7,
    }
}

/// Decodes one request body (the bytes after the length prefix).
pub fn decode_request(body: &[u8]) -> Result<(u64, Request<'_>), DecodeError> {
    let mut r = Reader::new(body);
    let len = r
        .read_array_len()
        .map_err(|_| malformed(None, "a request must be a MessagePack array [op, id, ...]"))?;
    if len < 2 {
        return Err(malformed(None, "a request must be an array [op, id, ...]"));
    }
    let op_code = r
        .read_u64()
        .map_err(|e| malformed(None, format!("element 0 (op): {e}")))?;
    let id = r
        .read_u64()
        .map_err(|e| malformed(None, format!("element 1 (id): {e}")))?;
    let Some(op) = Op::from_code(op_code) else {
        return Err(DecodeError {
            id: Some(id),
            code: ErrorCode::UnknownOperation,
            message: format!("unknown operation {op_code}"),
        });
    };
    let known_id = id;
    let id = Some(id);
    if len != arity(op) {
        return Err(malformed(
            id,
            format!("{} has {} elements, got {len}", signature(op), arity(op)),
        ));
    }
    let field = |index: u32, name: &'static str| {
        move |e: ReadError| {
            malformed(
                id,
                format!("{}: element {index} ({name}): {e}", signature(op)),
            )
        }
    };
    let request = match op {
        Op::Hello => Request::Hello {
            version: r.read_u64().map_err(field(2, "version"))?,
            client_name: r.read_str().map_err(field(3, "client_name"))?,
        },
        Op::RegisterPublisher => Request::RegisterPublisher,
        Op::CreateTopic => Request::CreateTopic {
            topic: r.read_str().map_err(field(2, "topic"))?,
        },
        Op::DeleteTopic => Request::DeleteTopic {
            topic: r.read_str().map_err(field(2, "topic"))?,
        },
        Op::Publish => Request::Publish {
            topic: r.read_str().map_err(field(2, "topic"))?,
            payload: r.read_payload().map_err(field(3, "payload"))?,
        },
        Op::PublishBatch => {
            let topic = r.read_str().map_err(field(2, "topic"))?;
            let count = r.read_array_len().map_err(field(3, "payloads"))?;
            let start = r.position();
            for _ in 0..count {
                r.read_payload().map_err(field(3, "payloads"))?;
            }
            Request::PublishBatch {
                topic,
                payloads: Payloads {
                    encoded: &body[start..r.position()],
                    count,
                },
            }
        }
        Op::RegisterSubscriber => Request::RegisterSubscriber {
            resume: if r.read_nil().map_err(field(2, "subscriber_id"))? {
                None
            } else {
                Some(r.read_u64().map_err(field(2, "subscriber_id"))?)
            },
        },
        Op::Subscribe => Request::Subscribe {
            topic: r.read_str().map_err(field(2, "topic"))?,
        },
        Op::Unsubscribe => Request::Unsubscribe {
            topic: r.read_str().map_err(field(2, "topic"))?,
        },
        Op::Pull => Request::Pull(Pull {
            topic: if r.read_nil().map_err(field(2, "topic"))? {
                None
            } else {
                Some(r.read_str().map_err(field(2, "topic"))?)
            },
            max_messages: r.read_u32().map_err(field(3, "max_messages"))?,
            max_bytes: r.read_u32().map_err(field(4, "max_bytes"))?,
            wait_ms: r.read_u32().map_err(field(5, "wait_ms"))?,
            ack: r.read_bool().map_err(field(6, "ack"))?,
        }),
        Op::Ack => Request::Ack {
            topic: r.read_str().map_err(field(2, "topic"))?,
            offset: r.read_u64().map_err(field(3, "offset"))?,
        },
        Op::Stats => Request::Stats,
    };
    if !r.is_empty() {
        return Err(malformed(
            id,
            format!("{} trailing bytes after the request", r.rest().len()),
        ));
    }
    Ok((known_id, request))
}

/// Appends one complete request frame to `out`.
pub fn encode_request(out: &mut Vec<u8>, id: u64, request: &Request<'_>) {
    let start = begin_frame(out);
    let op = request.op();
    msgpack::write_array_len(out, arity(op));
    msgpack::write_u64(out, op as u64);
    msgpack::write_u64(out, id);
    match request {
        Request::Hello {
            version,
            client_name,
        } => {
            msgpack::write_u64(out, *version);
            msgpack::write_str(out, client_name);
        }
        Request::RegisterPublisher | Request::Stats => {}
        Request::CreateTopic { topic }
        | Request::DeleteTopic { topic }
        | Request::Subscribe { topic }
        | Request::Unsubscribe { topic } => msgpack::write_str(out, topic),
        Request::Publish { topic, payload } => {
            msgpack::write_str(out, topic);
            msgpack::write_bin(out, payload);
        }
        Request::PublishBatch { topic, payloads } => {
            msgpack::write_str(out, topic);
            msgpack::write_array_len(out, payloads.count);
            out.extend_from_slice(payloads.encoded);
        }
        Request::RegisterSubscriber { resume } => match resume {
            Some(id) => msgpack::write_u64(out, *id),
            None => msgpack::write_nil(out),
        },
        Request::Pull(pull) => {
            match pull.topic {
                Some(topic) => msgpack::write_str(out, topic),
                None => msgpack::write_nil(out),
            }
            msgpack::write_u64(out, u64::from(pull.max_messages));
            msgpack::write_u64(out, u64::from(pull.max_bytes));
            msgpack::write_u64(out, u64::from(pull.wait_ms));
            msgpack::write_bool(out, pull.ack);
        }
        Request::Ack { topic, offset } => {
            msgpack::write_str(out, topic);
            msgpack::write_u64(out, *offset);
        }
    }
    end_frame(out, start);
}

/// Appends a PUBLISH_BATCH request frame, writing each payload straight into
/// `out` (the same bytes as [`encode_request`] with [`encode_payloads`],
/// without the intermediate copy).
pub fn encode_publish_batch(out: &mut Vec<u8>, id: u64, topic: &str, payloads: &[&[u8]]) {
    let start = begin_frame(out);
    msgpack::write_array_len(out, arity(Op::PublishBatch));
    msgpack::write_u64(out, Op::PublishBatch as u64);
    msgpack::write_u64(out, id);
    msgpack::write_str(out, topic);
    msgpack::write_array_len(out, len_u32(payloads.len()));
    for payload in payloads {
        msgpack::write_bin(out, payload);
    }
    end_frame(out, start);
}

/// Encodes payloads in the form [`Payloads`] borrows, for building a
/// PUBLISH_BATCH request.
pub fn encode_payloads<'a>(scratch: &'a mut Vec<u8>, payloads: &[&[u8]]) -> Payloads<'a> {
    scratch.clear();
    for payload in payloads {
        msgpack::write_bin(scratch, payload);
    }
    Payloads {
        encoded: scratch,
        count: u32::try_from(payloads.len()).unwrap_or(u32::MAX),
    }
}

/// Writes `[id, 0, ` — the start of every success reply; the body follows.
fn write_ok_header(out: &mut Vec<u8>, id: u64) {
    msgpack::write_array_len(out, 3);
    msgpack::write_u64(out, id);
    msgpack::write_u64(out, 0);
}

/// Appends one complete error reply frame.
pub fn encode_error(out: &mut Vec<u8>, id: u64, code: ErrorCode, message: &str) {
    let start = begin_frame(out);
    msgpack::write_array_len(out, 3);
    msgpack::write_u64(out, id);
    msgpack::write_u64(out, code as u64);
    msgpack::write_str(out, message);
    end_frame(out, start);
}

/// Appends one complete success reply frame. (Pull replies are normally
/// written piecewise by the broker; `Reply::Messages` is here for symmetry
/// and tests.)
pub fn encode_reply(out: &mut Vec<u8>, id: u64, reply: &Reply) {
    let start = begin_frame(out);
    write_ok_header(out, id);
    match reply {
        Reply::Hello(info) => write_named(out, info),
        Reply::Stats(stats) => write_named(out, stats),
        Reply::PublisherRegistered { publisher_id } => msgpack::write_u64(out, *publisher_id),
        Reply::Done => msgpack::write_nil(out),
        Reply::Published {
            offset,
            subscribers,
        } => {
            msgpack::write_array_len(out, 2);
            msgpack::write_u64(out, *offset);
            msgpack::write_u64(out, *subscribers);
        }
        Reply::PublishedBatch {
            first_offset,
            count,
            subscribers,
        } => {
            msgpack::write_array_len(out, 3);
            msgpack::write_u64(out, *first_offset);
            msgpack::write_u64(out, *count);
            msgpack::write_u64(out, *subscribers);
        }
        Reply::SubscriberRegistered {
            subscriber_id,
            topics,
            more,
        } => {
            msgpack::write_array_len(out, 3);
            msgpack::write_u64(out, *subscriber_id);
            msgpack::write_array_len(out, len_u32(topics.len()));
            for topic in topics {
                msgpack::write_str(out, topic);
            }
            msgpack::write_bool(out, *more);
        }
        Reply::Subscribed { next_offset } => msgpack::write_u64(out, *next_offset),
        Reply::Messages(groups) => {
            msgpack::write_array_len(out, len_u32(groups.len()));
            for group in groups {
                write_group_header(
                    out,
                    &group.topic,
                    group.first_offset,
                    len_u32(group.payloads.len()),
                );
                for payload in &group.payloads {
                    msgpack::write_bin(out, payload);
                }
            }
        }
    }
    end_frame(out, start);
}

fn len_u32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

fn write_named<T: serde::Serialize>(out: &mut Vec<u8>, value: &T) {
    // Serializing plain structs of integers, strings and maps into a Vec
    // cannot fail; an empty map keeps the frame well-formed if it ever did.
    let mut body = Vec::new();
    if rmp_serde::encode::write_named(&mut body, value).is_err() {
        body = vec![0x80];
    }
    out.extend_from_slice(&body);
}

/// Starts a pull reply frame: `[id, 0, [` with `groups` groups to follow.
/// Returns the frame start for [`end_frame`].
pub fn write_messages_header(out: &mut Vec<u8>, id: u64, groups: u32) -> usize {
    let start = begin_frame(out);
    write_ok_header(out, id);
    msgpack::write_array_len(out, groups);
    start
}

/// Starts one group of a pull reply: `[topic, first_offset, [` with `count`
/// payloads to follow, each written with [`msgpack::write_bin`].
pub fn write_group_header(out: &mut Vec<u8>, topic: &str, first_offset: u64, count: u32) {
    msgpack::write_array_len(out, 3);
    msgpack::write_str(out, topic);
    msgpack::write_u64(out, first_offset);
    msgpack::write_array_len(out, count);
}

/// Encoded size of [`write_messages_header`] (length prefix included), taking
/// the widest group count.
pub fn messages_header_len(id: u64) -> usize {
    FRAME_HEADER_LEN + 1 + msgpack::u64_len(id) + 1 + 5
}

/// Encoded size of a group header, taking the widest message count.
pub fn group_header_len(topic: &str, first_offset: u64) -> usize {
    1 + msgpack::str_len(topic.len()) + msgpack::u64_len(first_offset) + 5
}

/// Why a reply could not be decoded: the peer broke the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyDecodeError {
    pub message: String,
}

impl fmt::Display for ReplyDecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ReplyDecodeError {}

fn bad_reply(what: &str, e: impl fmt::Display) -> ReplyDecodeError {
    ReplyDecodeError {
        message: format!("malformed reply: {what}: {e}"),
    }
}

/// The id and status of a reply, read before the body is interpreted (the
/// body's shape depends on which request the id belongs to).
pub fn decode_reply_id(body: &[u8]) -> Result<u64, ReplyDecodeError> {
    read_reply_id(&mut Reader::new(body))
}

/// Reads `[id, ` of a reply, leaving the reader at the status.
fn read_reply_id(r: &mut Reader<'_>) -> Result<u64, ReplyDecodeError> {
    let len = r.read_array_len().map_err(|e| bad_reply("frame", e))?;
    if len != 3 {
        return Err(bad_reply("frame", format!("array of {len}, expected 3")));
    }
    r.read_u64().map_err(|e| bad_reply("id", e))
}

/// A decoded reply: the request id and either the body or the error.
pub type DecodedReply = (u64, Result<Reply, ErrorReply>);

/// Decodes a whole reply to a request of operation `op`. `frame` is the
/// frame body; payloads in a pull reply are slices of it, not copies.
pub fn decode_reply(op: Op, frame: &Bytes) -> Result<DecodedReply, ReplyDecodeError> {
    let mut r = Reader::new(frame);
    let id = read_reply_id(&mut r)?;
    let status = r.read_u64().map_err(|e| bad_reply("status", e))?;
    if status != 0 {
        let code = ErrorCode::from_code(status)
            .ok_or_else(|| bad_reply("status", format!("unknown error code {status}")))?;
        let message = r.read_str().map_err(|e| bad_reply("error message", e))?;
        expect_end(&r)?;
        return Ok((
            id,
            Err(ErrorReply {
                code,
                message: message.to_owned(),
            }),
        ));
    }
    let reply = match op {
        Op::Hello => Reply::Hello(read_named(&mut r, "server info")?),
        Op::Stats => Reply::Stats(read_named::<Stats>(&mut r, "stats")?),
        Op::RegisterPublisher => Reply::PublisherRegistered {
            publisher_id: r.read_u64().map_err(|e| bad_reply("publisher id", e))?,
        },
        Op::CreateTopic | Op::DeleteTopic | Op::Unsubscribe | Op::Ack => {
            if !r.read_nil().map_err(|e| bad_reply("body", e))? {
                return Err(bad_reply("body", "expected nil"));
            }
            Reply::Done
        }
        Op::Publish => {
            expect_array(&mut r, 2, "publish result")?;
            Reply::Published {
                offset: r.read_u64().map_err(|e| bad_reply("offset", e))?,
                subscribers: r.read_u64().map_err(|e| bad_reply("subscribers", e))?,
            }
        }
        Op::PublishBatch => {
            expect_array(&mut r, 3, "batch result")?;
            Reply::PublishedBatch {
                first_offset: r.read_u64().map_err(|e| bad_reply("first offset", e))?,
                count: r.read_u64().map_err(|e| bad_reply("count", e))?,
                subscribers: r.read_u64().map_err(|e| bad_reply("subscribers", e))?,
            }
        }
        Op::RegisterSubscriber => {
            expect_array(&mut r, 3, "subscriber")?;
            let subscriber_id = r.read_u64().map_err(|e| bad_reply("subscriber id", e))?;
            let count = r.read_array_len().map_err(|e| bad_reply("topics", e))?;
            let mut topics = Vec::new();
            for _ in 0..count {
                topics.push(r.read_str().map_err(|e| bad_reply("topic", e))?.to_owned());
            }
            let more = r.read_bool().map_err(|e| bad_reply("more", e))?;
            Reply::SubscriberRegistered {
                subscriber_id,
                topics,
                more,
            }
        }
        Op::Subscribe => Reply::Subscribed {
            next_offset: r.read_u64().map_err(|e| bad_reply("next offset", e))?,
        },
        Op::Pull => Reply::Messages(read_groups(&mut r, frame)?),
    };
    expect_end(&r)?;
    Ok((id, Ok(reply)))
}

fn read_groups(r: &mut Reader<'_>, frame: &Bytes) -> Result<Vec<TopicMessages>, ReplyDecodeError> {
    let groups = r.read_array_len().map_err(|e| bad_reply("groups", e))?;
    let mut out = Vec::with_capacity(groups.min(1024) as usize);
    for _ in 0..groups {
        expect_array(r, 3, "group")?;
        let topic = r.read_str().map_err(|e| bad_reply("topic", e))?.to_owned();
        let first_offset = r.read_u64().map_err(|e| bad_reply("first offset", e))?;
        let count = r.read_array_len().map_err(|e| bad_reply("payloads", e))?;
        let mut payloads = Vec::with_capacity(count.min(65_536) as usize);
        for _ in 0..count {
            let payload = r.read_bin().map_err(|e| bad_reply("payload", e))?;
            payloads.push(frame.slice_ref(payload));
        }
        out.push(TopicMessages {
            topic,
            first_offset,
            payloads,
        });
    }
    Ok(out)
}

fn expect_array(r: &mut Reader<'_>, len: u32, what: &str) -> Result<(), ReplyDecodeError> {
    match r.read_array_len() {
        Ok(n) if n == len => Ok(()),
        Ok(n) => Err(bad_reply(what, format!("array of {n}, expected {len}"))),
        Err(e) => Err(bad_reply(what, e)),
    }
}

fn expect_end(r: &Reader<'_>) -> Result<(), ReplyDecodeError> {
    if r.is_empty() {
        Ok(())
    } else {
        Err(bad_reply("frame", "trailing bytes"))
    }
}

fn read_named<T: serde::de::DeserializeOwned>(
    r: &mut Reader<'_>,
    what: &str,
) -> Result<T, ReplyDecodeError> {
    let rest = r.rest();
    // `&[u8]` as a reader advances past what it consumed, which tells where
    // the map ended.
    let mut de = rmp_serde::Deserializer::new(rest);
    // Unknown keys are skipped by recursion: keep a hostile nesting from
    // overflowing the stack (rmp-serde's default of 1024 does in debug builds).
    de.set_max_depth(32);
    let value = serde::Deserialize::deserialize(&mut de).map_err(|e| bad_reply(what, e))?;
    let used = rest.len() - de.get_ref().len();
    *r = Reader::new(&rest[used..]);
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{every_reply, every_request};

    #[test]
    fn every_request_round_trips() {
        let mut scratch = Vec::new();
        for (id, request) in every_request(&mut scratch).into_iter().enumerate() {
            let mut out = Vec::new();
            encode_request(&mut out, id as u64 * 1000, &request);
            let (body, used) = split_frame(&out, 1 << 20).unwrap().unwrap();
            assert_eq!(used, out.len());
            assert_eq!(decode_request(body), Ok((id as u64 * 1000, request)));
        }
    }

    #[test]
    fn a_direct_batch_encoding_equals_the_generic_one() {
        let payloads: [&[u8]; 3] = [b"a", b"", &[0xff; 300]];
        let mut scratch = Vec::new();
        let mut generic = Vec::new();
        encode_request(
            &mut generic,
            9,
            &Request::PublishBatch {
                topic: "t",
                payloads: encode_payloads(&mut scratch, &payloads),
            },
        );
        let mut direct = Vec::new();
        encode_publish_batch(&mut direct, 9, "t", &payloads);
        assert_eq!(direct, generic);
    }

    #[test]
    fn batch_payloads_iterate_in_order() {
        let mut scratch = Vec::new();
        let payloads = encode_payloads(&mut scratch, &[b"a", b"bb", b"ccc"]);
        let got: Vec<&[u8]> = payloads.iter().collect();
        assert_eq!(got, vec![&b"a"[..], b"bb", b"ccc"]);
    }

    #[test]
    fn a_frame_split_at_every_byte_is_incomplete_until_whole() {
        let mut stream = Vec::new();
        encode_request(
            &mut stream,
            7,
            &Request::Publish {
                topic: "news",
                payload: b"hello",
            },
        );
        let whole = stream.len();
        encode_request(&mut stream, 8, &Request::Stats);
        for cut in 0..whole {
            assert_eq!(split_frame(&stream[..cut], 1 << 20), Ok(None), "cut {cut}");
        }
        let (body, used) = split_frame(&stream, 1 << 20).unwrap().unwrap();
        assert_eq!(used, whole);
        assert!(matches!(
            decode_request(body),
            Ok((7, Request::Publish { topic: "news", .. }))
        ));
        let (body, _) = split_frame(&stream[used..], 1 << 20).unwrap().unwrap();
        assert_eq!(decode_request(body), Ok((8, Request::Stats)));
    }

    #[test]
    fn an_oversized_length_is_refused_from_the_header_alone() {
        let header = 2_000_000u32.to_be_bytes();
        assert_eq!(
            split_frame(&header, 1 << 20),
            Err(FrameTooLarge {
                len: 2_000_000,
                max: 1 << 20
            })
        );
    }

    #[test]
    fn bad_requests_get_typed_errors_with_the_id_when_known() {
        let cases: &[(&[u8], Option<u64>, ErrorCode)] = &[
            (&[0xc0], None, ErrorCode::MalformedRequest),
            (&[0x91, 0x01], None, ErrorCode::MalformedRequest),
            (&[0x92, 0x63, 0x05], Some(5), ErrorCode::UnknownOperation),
            (&[0x92, 0x05, 0x05], Some(5), ErrorCode::MalformedRequest),
            // PUBLISH whose topic is an integer.
            (
                &[0x94, 0x05, 0x09, 0x01, 0xc4, 0x00],
                Some(9),
                ErrorCode::MalformedRequest,
            ),
            // STATS with a trailing byte after the array.
            (
                &[0x92, 0x0c, 0x01, 0x00],
                Some(1),
                ErrorCode::MalformedRequest,
            ),
            // PULL with a negative max_messages.
            (
                &[0x97, 0x0a, 0x02, 0xc0, 0xff, 0x01, 0x00, 0xc2],
                Some(2),
                ErrorCode::MalformedRequest,
            ),
        ];
        for (body, id, code) in cases {
            let err = decode_request(body).unwrap_err();
            assert_eq!((err.id, err.code), (*id, *code), "{body:02x?}");
        }
    }

    #[test]
    fn every_reply_round_trips() {
        for (op, reply) in every_reply() {
            let mut out = Vec::new();
            encode_reply(&mut out, 42, &reply);
            let (body, _) = split_frame(&out, 1 << 20).unwrap().unwrap();
            let body = Bytes::copy_from_slice(body);
            assert_eq!(decode_reply(op, &body), Ok((42, Ok(reply))), "{op:?}");
        }
    }

    #[test]
    fn error_replies_round_trip() {
        let mut out = Vec::new();
        encode_error(&mut out, 9, ErrorCode::TopicFull, "topic t is full");
        let (body, _) = split_frame(&out, 1 << 20).unwrap().unwrap();
        let body = Bytes::copy_from_slice(body);
        assert_eq!(
            decode_reply(Op::Publish, &body),
            Ok((
                9,
                Err(ErrorReply {
                    code: ErrorCode::TopicFull,
                    message: "topic t is full".into()
                })
            ))
        );
    }

    #[test]
    fn piecewise_pull_reply_sizes_are_upper_bounds() {
        let mut out = Vec::new();
        let start = write_messages_header(&mut out, u64::MAX, 1);
        assert!(out.len() - start <= messages_header_len(u64::MAX));
        let before = out.len();
        write_group_header(&mut out, &"t".repeat(255), u64::MAX, 70_000);
        assert!(out.len() - before <= group_header_len(&"t".repeat(255), u64::MAX));
    }
}
