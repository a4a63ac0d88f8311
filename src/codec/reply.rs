//! Replies as bytes: `[id, 0, body]` on success, `[id, code, message]` on
//! error.
//!
//! The broker encodes ([`encode_reply`], [`encode_error`]; pull replies are
//! written piecewise, see `pull_reply`), the client decodes. A reply's body
//! has no tag of its own: its shape follows from the operation of the
//! request it answers, so the client reads the id first
//! ([`decode_reply_id`]), finds the request, and then decodes the whole
//! reply for that operation ([`decode_reply`]). Payloads in a decoded pull
//! reply are slices of the frame's `Bytes`, not copies. The handshake,
//! stats, topic-list and topic-info bodies are maps, read with rmp-serde so
//! that unknown keys from a newer broker are skipped.

use super::msgpack::{self, ReadError, Reader, len_u32};
use super::pull_reply::{write_group_header, write_lost, write_lost_group_header};
use super::{begin_frame, end_frame};
use crate::protocol::{
    ErrorCode, ErrorReply, Fetched, FetchedMessage, Op, Reply, Stats, TopicMessages, TopicPage,
    TopicSummary,
};
use bytes::Bytes;
use std::fmt;

/// Writes `[id, 0, ` — the start of every success reply; the body follows.
pub(super) fn write_ok_header(out: &mut Vec<u8>, id: u64) {
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
        Reply::Topics(page) => write_named(out, page),
        Reply::TopicInfo(topic) => write_named(out, topic),
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
                let count = len_u32(group.payloads.len());
                if group.lost > 0 {
                    write_lost_group_header(out, &group.topic, group.first_offset, count);
                } else {
                    write_group_header(out, &group.topic, group.first_offset, count);
                }
                for payload in &group.payloads {
                    msgpack::write_bin(out, payload);
                }
                if group.lost > 0 {
                    write_lost(out, group.lost);
                }
            }
        }
        Reply::Fetched(fetched) => write_fetched(out, fetched),
    }
    end_frame(out, start);
}

/// The FETCH body: `{"messages": [[offset, time_ms, payload], ...],
/// "next_offset": n, "earliest_offset": n, "end_offset": n}`.
fn write_fetched(out: &mut Vec<u8>, fetched: &Fetched) {
    write_fetched_header(out, len_u32(fetched.messages.len()));
    for message in &fetched.messages {
        write_fetched_message(out, message.offset, message.time_ms, &message.payload);
    }
    write_fetched_tail(out, fetched);
}

/// `{"messages": [` with `count` messages to follow; the broker writes a
/// FETCH reply piecewise with these three, like a pull reply.
pub fn write_fetched_header(out: &mut Vec<u8>, count: u32) {
    msgpack::write_map_len(out, 4);
    msgpack::write_str(out, "messages");
    msgpack::write_array_len(out, count);
}

/// One `[offset, time_ms, payload]`.
pub fn write_fetched_message(out: &mut Vec<u8>, offset: u64, time_ms: u64, payload: &[u8]) {
    msgpack::write_array_len(out, 3);
    msgpack::write_u64(out, offset);
    msgpack::write_u64(out, time_ms);
    msgpack::write_bin(out, payload);
}

/// The encoded size of [`write_fetched_message`] at its widest integers.
pub fn fetched_message_bound(len: usize) -> usize {
    1 + 9 + 9 + msgpack::bin_len(len)
}

/// The most a FETCH reply takes beside its messages: the frame and reply
/// headers, the map and its keys, an array32 header, three integers.
pub const FETCHED_OVERHEAD: usize = 4 + 1 + 9 + 1 + 1 + 9 + 5 + 3 * (16 + 9);

/// The keys after the messages (the `messages` array is complete).
pub fn write_fetched_tail(out: &mut Vec<u8>, fetched: &Fetched) {
    msgpack::write_str(out, "next_offset");
    msgpack::write_u64(out, fetched.next_offset);
    msgpack::write_str(out, "earliest_offset");
    msgpack::write_u64(out, fetched.earliest_offset);
    msgpack::write_str(out, "end_offset");
    msgpack::write_u64(out, fetched.end_offset);
}

/// The most bytes one topic's entry takes in a LIST_TOPICS reply: a map of
/// five fixstr keys (60 bytes with their headers), four integers of at most
/// 9 bytes, and the name with a header of at most 2 (names are at most 255
/// bytes), plus a retained topic's three keys (`retain_ms`, `retain_bytes`,
/// `earliest_offset`: 39 bytes with their headers, three integers). The
/// broker cuts a page by this bound, so the reply fits a frame whatever the
/// counters hold.
pub fn topic_summary_bound(name: &str) -> usize {
    1 + 60 + 4 * 9 + 2 + name.len() + 39 + 3 * 9
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

/// Which part of a reply an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyField {
    /// The reply's own array `[id, status, body]`.
    Frame,
    Id,
    Status,
    ErrorMessage,
    ServerInfo,
    Stats,
    TopicPage,
    TopicInfo,
    PublisherId,
    /// The `nil` that answers CREATE_TOPIC, DELETE_TOPIC, UNSUBSCRIBE, ACK.
    Done,
    PublishResult,
    BatchResult,
    SubscriberResult,
    Offset,
    FirstOffset,
    Count,
    Subscribers,
    SubscriberId,
    NextOffset,
    Topics,
    /// REGISTER_SUBSCRIBER's flag that the topic list was cut to fit.
    More,
    Groups,
    Group,
    Topic,
    Payloads,
    Payload,
    /// A pull group's count of messages lost to retention.
    Lost,
    /// The FETCH reply's map.
    Fetched,
    /// A fetched message's append time.
    TimeMs,
}

impl fmt::Display for ReplyField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReplyField::Frame => "frame",
            ReplyField::Id => "id",
            ReplyField::Status => "status",
            ReplyField::ErrorMessage => "error message",
            ReplyField::ServerInfo => "server info",
            ReplyField::Stats => "stats",
            ReplyField::TopicPage => "topic page",
            ReplyField::TopicInfo => "topic info",
            ReplyField::PublisherId => "publisher id",
            ReplyField::Done => "body",
            ReplyField::PublishResult => "publish result",
            ReplyField::BatchResult => "batch result",
            ReplyField::SubscriberResult => "subscriber",
            ReplyField::Offset => "offset",
            ReplyField::FirstOffset => "first offset",
            ReplyField::Count => "count",
            ReplyField::Subscribers => "subscribers",
            ReplyField::SubscriberId => "subscriber id",
            ReplyField::NextOffset => "next offset",
            ReplyField::Topics => "topics",
            ReplyField::More => "more",
            ReplyField::Groups => "groups",
            ReplyField::Group => "group",
            ReplyField::Topic => "topic",
            ReplyField::Payloads => "payloads",
            ReplyField::Payload => "payload",
            ReplyField::Lost => "lost",
            ReplyField::Fetched => "fetch result",
            ReplyField::TimeMs => "time_ms",
        })
    }
}

/// Why a reply could not be decoded: the peer broke the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyDecodeError {
    /// An array has the wrong number of elements.
    WrongLength {
        field: ReplyField,
        expected: u32,
        got: u32,
    },
    /// A value could not be read as what the reply needs there.
    BadField { field: ReplyField, error: ReadError },
    /// The status is neither 0 nor a known error code.
    UnknownErrorCode(u64),
    /// A map-shaped body (server info, stats) does not deserialize; `detail`
    /// is rmp-serde's account of why.
    BadMap { field: ReplyField, detail: String },
    /// Bytes follow the reply's array.
    TrailingBytes { count: usize },
}

impl fmt::Display for ReplyDecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("malformed reply: ")?;
        match self {
            ReplyDecodeError::WrongLength {
                field,
                expected,
                got,
            } => write!(f, "{field}: array of {got}, expected {expected}"),
            ReplyDecodeError::BadField { field, error } => write!(f, "{field}: {error}"),
            ReplyDecodeError::UnknownErrorCode(code) => {
                write!(f, "status: unknown error code {code}")
            }
            ReplyDecodeError::BadMap { field, detail } => write!(f, "{field}: {detail}"),
            ReplyDecodeError::TrailingBytes { count } => write!(f, "{count} trailing bytes"),
        }
    }
}

impl std::error::Error for ReplyDecodeError {}

/// For `map_err`: a read error at `field`.
fn bad(field: ReplyField) -> impl Fn(ReadError) -> ReplyDecodeError {
    move |error| ReplyDecodeError::BadField { field, error }
}

/// The id and status of a reply, read before the body is interpreted (the
/// body's shape depends on which request the id belongs to).
pub fn decode_reply_id(body: &[u8]) -> Result<u64, ReplyDecodeError> {
    read_reply_id(&mut Reader::new(body))
}

/// Reads `[id, ` of a reply, leaving the reader at the status.
fn read_reply_id(r: &mut Reader<'_>) -> Result<u64, ReplyDecodeError> {
    expect_array(r, 3, ReplyField::Frame)?;
    r.read_u64().map_err(bad(ReplyField::Id))
}

/// A decoded reply: the request id and either the body or the error.
pub type DecodedReply = (u64, Result<Reply, ErrorReply>);

/// Decodes a whole reply to a request of operation `op`. `frame` is the
/// frame body; payloads in a pull reply are slices of it, not copies.
pub fn decode_reply(op: Op, frame: &Bytes) -> Result<DecodedReply, ReplyDecodeError> {
    let mut r = Reader::new(frame);
    let id = read_reply_id(&mut r)?;
    let status = r.read_u64().map_err(bad(ReplyField::Status))?;
    if status != 0 {
        let code =
            ErrorCode::from_code(status).ok_or(ReplyDecodeError::UnknownErrorCode(status))?;
        let message = r.read_str().map_err(bad(ReplyField::ErrorMessage))?;
        expect_end(&r)?;
        return Ok((
            id,
            Err(ErrorReply {
                code,
                message: message.to_owned(),
            }),
        ));
    }
    let u64_at = |r: &mut Reader<'_>, field| r.read_u64().map_err(bad(field));
    let reply = match op {
        Op::Hello => Reply::Hello(read_named(&mut r, ReplyField::ServerInfo)?),
        Op::Stats => Reply::Stats(Box::new(read_named::<Stats>(&mut r, ReplyField::Stats)?)),
        Op::ListTopics => Reply::Topics(read_named::<TopicPage>(&mut r, ReplyField::TopicPage)?),
        Op::TopicInfo => {
            Reply::TopicInfo(read_named::<TopicSummary>(&mut r, ReplyField::TopicInfo)?)
        }
        Op::RegisterPublisher => Reply::PublisherRegistered {
            publisher_id: u64_at(&mut r, ReplyField::PublisherId)?,
        },
        Op::CreateTopic | Op::DeleteTopic | Op::Unsubscribe | Op::Ack | Op::EndSession => {
            r.read_nil().map_err(bad(ReplyField::Done))?;
            Reply::Done
        }
        Op::Publish => {
            expect_array(&mut r, 2, ReplyField::PublishResult)?;
            Reply::Published {
                offset: u64_at(&mut r, ReplyField::Offset)?,
                subscribers: u64_at(&mut r, ReplyField::Subscribers)?,
            }
        }
        Op::PublishBatch => {
            expect_array(&mut r, 3, ReplyField::BatchResult)?;
            Reply::PublishedBatch {
                first_offset: u64_at(&mut r, ReplyField::FirstOffset)?,
                count: u64_at(&mut r, ReplyField::Count)?,
                subscribers: u64_at(&mut r, ReplyField::Subscribers)?,
            }
        }
        Op::RegisterSubscriber => {
            expect_array(&mut r, 3, ReplyField::SubscriberResult)?;
            let subscriber_id = u64_at(&mut r, ReplyField::SubscriberId)?;
            let count = r.read_array_len().map_err(bad(ReplyField::Topics))?;
            let mut topics = Vec::new();
            for _ in 0..count {
                topics.push(r.read_str().map_err(bad(ReplyField::Topic))?.to_owned());
            }
            let more = r.read_bool().map_err(bad(ReplyField::More))?;
            Reply::SubscriberRegistered {
                subscriber_id,
                topics,
                more,
            }
        }
        Op::Fetch => Reply::Fetched(read_fetched(&mut r, frame)?),
        Op::Subscribe | Op::Seek => Reply::Subscribed {
            next_offset: u64_at(&mut r, ReplyField::NextOffset)?,
        },
        Op::Pull => Reply::Messages(read_groups(&mut r, frame)?),
    };
    expect_end(&r)?;
    Ok((id, Ok(reply)))
}

fn read_groups(r: &mut Reader<'_>, frame: &Bytes) -> Result<Vec<TopicMessages>, ReplyDecodeError> {
    let groups = r.read_array_len().map_err(bad(ReplyField::Groups))?;
    let mut out = Vec::with_capacity(groups.min(1024) as usize);
    for _ in 0..groups {
        let len = r.read_array_len().map_err(bad(ReplyField::Group))?;
        if !(3..=4).contains(&len) {
            return Err(ReplyDecodeError::WrongLength {
                field: ReplyField::Group,
                expected: 3,
                got: len,
            });
        }
        let topic = r.read_str().map_err(bad(ReplyField::Topic))?.to_owned();
        let first_offset = r.read_u64().map_err(bad(ReplyField::FirstOffset))?;
        let count = r.read_array_len().map_err(bad(ReplyField::Payloads))?;
        let mut payloads = Vec::with_capacity(count.min(65_536) as usize);
        for _ in 0..count {
            let payload = r.read_bin().map_err(bad(ReplyField::Payload))?;
            payloads.push(frame.slice_ref(payload));
        }
        let lost = match len {
            4 => r.read_u64().map_err(bad(ReplyField::Lost))?,
            _ => 0,
        };
        out.push(TopicMessages {
            topic,
            first_offset,
            payloads,
            lost,
        });
    }
    Ok(out)
}

/// A FETCH body (see [`write_fetched`]); keys in any order, unknown ones
/// (a newer broker's) skipped, each known one required.
fn read_fetched(r: &mut Reader<'_>, frame: &Bytes) -> Result<Fetched, ReplyDecodeError> {
    let field = ReplyField::Fetched;
    let len = r.read_map_len().map_err(bad(field))?;
    let mut fetched = Fetched::default();
    let (mut messages, mut next, mut earliest, mut end) = (false, false, false, false);
    for _ in 0..len {
        let key = r.read_str().map_err(bad(field))?;
        match key {
            "messages" => {
                let count = r.read_array_len().map_err(bad(ReplyField::Payloads))?;
                fetched.messages.reserve(count.min(65_536) as usize);
                for _ in 0..count {
                    expect_array(r, 3, ReplyField::Payloads)?;
                    let offset = r.read_u64().map_err(bad(ReplyField::Offset))?;
                    let time_ms = r.read_u64().map_err(bad(ReplyField::TimeMs))?;
                    let payload = r.read_bin().map_err(bad(ReplyField::Payload))?;
                    fetched.messages.push(FetchedMessage {
                        offset,
                        time_ms,
                        payload: frame.slice_ref(payload),
                    });
                }
                messages = true;
            }
            "next_offset" => {
                fetched.next_offset = r.read_u64().map_err(bad(ReplyField::NextOffset))?;
                next = true;
            }
            "earliest_offset" => {
                fetched.earliest_offset = r.read_u64().map_err(bad(ReplyField::Offset))?;
                earliest = true;
            }
            "end_offset" => {
                fetched.end_offset = r.read_u64().map_err(bad(ReplyField::Offset))?;
                end = true;
            }
            _ => {
                let _: serde::de::IgnoredAny = read_named(r, field)?;
            }
        }
    }
    if !(messages && next && earliest && end) {
        return Err(ReplyDecodeError::BadMap {
            field,
            detail: "a key of messages, next_offset, earliest_offset, end_offset is missing"
                .to_owned(),
        });
    }
    Ok(fetched)
}

fn expect_array(r: &mut Reader<'_>, len: u32, field: ReplyField) -> Result<(), ReplyDecodeError> {
    match r.read_array_len().map_err(bad(field))? {
        n if n == len => Ok(()),
        got => Err(ReplyDecodeError::WrongLength {
            field,
            expected: len,
            got,
        }),
    }
}

fn expect_end(r: &Reader<'_>) -> Result<(), ReplyDecodeError> {
    if r.is_empty() {
        Ok(())
    } else {
        Err(ReplyDecodeError::TrailingBytes {
            count: r.rest().len(),
        })
    }
}

fn read_named<T: serde::de::DeserializeOwned>(
    r: &mut Reader<'_>,
    field: ReplyField,
) -> Result<T, ReplyDecodeError> {
    let rest = r.rest();
    // `&[u8]` as a reader advances past what it consumed, which tells where
    // the map ended.
    let mut de = rmp_serde::Deserializer::new(rest);
    // Unknown keys are skipped by recursion: keep a hostile nesting from
    // overflowing the stack (rmp-serde's default of 1024 does in debug builds).
    de.set_max_depth(32);
    let value = serde::Deserialize::deserialize(&mut de).map_err(|e| ReplyDecodeError::BadMap {
        field,
        detail: e.to_string(),
    })?;
    let used = rest.len() - de.get_ref().len();
    *r = Reader::new(rest.get(used..).unwrap_or_default());
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::msgpack::Expected;
    use crate::codec::split_frame;
    use crate::testing::every_reply;

    fn body(frame: &[u8]) -> Bytes {
        let (body, _) = split_frame(frame, 1 << 20).unwrap().unwrap();
        Bytes::copy_from_slice(body)
    }

    #[test]
    fn every_reply_round_trips() {
        for (op, reply) in every_reply() {
            let mut out = Vec::new();
            encode_reply(&mut out, 42, &reply);
            assert_eq!(decode_reply(op, &body(&out)), Ok((42, Ok(reply))), "{op:?}");
        }
    }

    #[test]
    fn a_topic_entry_never_exceeds_its_bound() {
        let name = "n".repeat(255);
        let topic = TopicSummary {
            name: name.clone(),
            next_offset: u64::MAX,
            backlog_messages: u64::MAX,
            backlog_bytes: u64::MAX,
            subscribers: u64::MAX,
            retain_ms: Some(u64::MAX),
            retain_bytes: Some(u64::MAX),
            earliest_offset: Some(u64::MAX),
        };
        let mut one = Vec::new();
        write_named(&mut one, &topic);
        assert_eq!(one.len(), topic_summary_bound(&name));
        // The rest of a page (frame header, `[id, 0, {"topics": [...],
        // "next": name}]`) fits the room the broker keeps beside entries.
        let page = TopicPage {
            topics: vec![topic.clone(), topic],
            next: Some(name.clone()),
        };
        let mut out = Vec::new();
        encode_reply(&mut out, u64::MAX, &Reply::Topics(page));
        let overhead = out.len() - 2 * topic_summary_bound(&name);
        assert!(
            overhead <= crate::protocol::PAYLOAD_OVERHEAD_BYTES,
            "{overhead}"
        );
    }

    #[test]
    fn error_replies_round_trip() {
        let mut out = Vec::new();
        encode_error(&mut out, 9, ErrorCode::TopicFull, "topic t is full");
        assert_eq!(
            decode_reply(Op::Publish, &body(&out)),
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
    fn bad_replies_get_typed_errors() {
        use ReplyDecodeError::*;
        let cases: &[(Op, &[u8], ReplyDecodeError)] = &[
            (
                Op::Stats,
                &[0x92, 0x01, 0x00],
                WrongLength {
                    field: ReplyField::Frame,
                    expected: 3,
                    got: 2,
                },
            ),
            (
                Op::Stats,
                &[0x93, 0xa0, 0x00, 0x80],
                BadField {
                    field: ReplyField::Id,
                    error: ReadError::WrongType(Expected::UInt),
                },
            ),
            (Op::Stats, &[0x93, 0x01, 0x7f, 0xa0], UnknownErrorCode(127)),
            (
                Op::Ack,
                &[0x93, 0x01, 0x00, 0x01],
                BadField {
                    field: ReplyField::Done,
                    error: ReadError::WrongType(Expected::Nil),
                },
            ),
            (
                Op::Ack,
                &[0x93, 0x01, 0x00, 0xc0, 0xc0],
                TrailingBytes { count: 1 },
            ),
            (
                Op::Publish,
                &[0x93, 0x01, 0x00, 0x93, 0x00, 0x00, 0x00],
                WrongLength {
                    field: ReplyField::PublishResult,
                    expected: 2,
                    got: 3,
                },
            ),
            // A pull reply whose payload is a str: the broker writes bin.
            (
                Op::Pull,
                &[0x93, 0x01, 0x00, 0x91, 0x93, 0xa1, b't', 0x00, 0x91, 0xa0],
                BadField {
                    field: ReplyField::Payload,
                    error: ReadError::WrongType(Expected::Bin),
                },
            ),
        ];
        for (op, frame, expected) in cases {
            let frame = Bytes::copy_from_slice(frame);
            assert_eq!(decode_reply(*op, &frame).as_ref(), Err(expected), "{op:?}");
        }
        let not_a_map = Bytes::from_static(&[0x93, 0x01, 0x00, 0x01]);
        assert!(matches!(
            decode_reply(Op::Stats, &not_a_map),
            Err(BadMap {
                field: ReplyField::Stats,
                ..
            })
        ));
    }
}
