//! Requests as bytes: `[op, id, args…]`, decoded strictly, encoded shortest.
//!
//! The broker decodes with [`decode_request`], the client encodes with
//! [`encode_request`] (or [`encode_publish_batch`], which writes payloads
//! straight into the output), and both sides use the same arity table, so
//! they cannot disagree. Decoding borrows every string and payload from the
//! frame. Its errors are plain values ([`DecodeError`]): which request (when
//! its id could be read), which operation, and a [`DecodeErrorKind`] saying
//! what was wrong where; the text of an error reply is derived from them.
//!
//! Topic and client names must be `str` holding UTF-8; payloads may be `bin`
//! or a `str` holding any bytes (see [`Reader::read_payload`]).

use super::frame::{begin_frame, end_frame};
use super::msgpack::{self, Expected, ReadError, Reader, len_u32};
use crate::protocol::{
    Credentials, ErrorCode, MAX_PRODUCER_ID_BYTES, Op, Payloads, Position, Pull, Request, Retention,
};
use std::fmt;

/// Which element of a request an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestField {
    Op,
    Id,
    Version,
    ClientName,
    Topic,
    Payload,
    /// The array of a PUBLISH_BATCH's payloads, as a whole.
    Payloads,
    /// One payload of a PUBLISH_BATCH, counted from 0.
    BatchPayload(u32),
    SubscriberId,
    /// REGISTER_SUBSCRIBER: the session timeout asked for (optional).
    SessionTimeout,
    MaxMessages,
    MaxBytes,
    WaitMs,
    Ack,
    Offset,
    /// LIST_TOPICS: the name to list after.
    After,
    /// LIST_TOPICS: the most topics to return.
    Limit,
    /// HELLO: the credentials map (optional).
    Credentials,
    /// HELLO: a key of the credentials map that is not `user` or `token`,
    /// or one given twice.
    CredentialsKey,
    /// CREATE_TOPIC: the options map (optional, version 2).
    Options,
    /// SUBSCRIBE and SEEK: the start position (optional for SUBSCRIBE).
    Position,
    /// REGISTER_PUBLISHER: the producer id (optional, version 2).
    ProducerId,
    /// PUBLISH's seq, PUBLISH_BATCH's first_seq (optional, version 2).
    Seq,
    /// FETCH's max_messages and max_bytes (one place later than PULL's).
    FetchMaxMessages,
    FetchMaxBytes,
}

impl RequestField {
    /// The field's index in the request array (the same in every operation
    /// that has it).
    pub fn index(self) -> u32 {
        match self {
            RequestField::Op => 0,
            RequestField::Id => 1,
            RequestField::Version
            | RequestField::Topic
            | RequestField::SubscriberId
            | RequestField::ProducerId
            | RequestField::After => 2,
            RequestField::ClientName
            | RequestField::Payload
            | RequestField::Payloads
            | RequestField::BatchPayload(_)
            | RequestField::MaxMessages
            | RequestField::Offset
            | RequestField::SessionTimeout
            | RequestField::Options
            | RequestField::Position
            | RequestField::Limit => 3,
            RequestField::MaxBytes
            | RequestField::Credentials
            | RequestField::CredentialsKey
            | RequestField::Seq
            | RequestField::FetchMaxMessages => 4,
            RequestField::WaitMs | RequestField::FetchMaxBytes => 5,
            RequestField::Ack => 6,
        }
    }

    fn name(self) -> &'static str {
        match self {
            RequestField::Op => "op",
            RequestField::Id => "id",
            RequestField::Version => "version",
            RequestField::ClientName => "client_name",
            RequestField::Topic => "topic",
            RequestField::Payload => "payload",
            RequestField::Payloads | RequestField::BatchPayload(_) => "payloads",
            RequestField::SubscriberId => "subscriber_id",
            RequestField::SessionTimeout => "timeout_ms",
            RequestField::MaxMessages => "max_messages",
            RequestField::MaxBytes => "max_bytes",
            RequestField::WaitMs => "wait_ms",
            RequestField::Ack => "ack",
            RequestField::Offset => "offset",
            RequestField::After => "after",
            RequestField::Limit => "limit",
            RequestField::Credentials => "credentials",
            RequestField::CredentialsKey => "credentials: exactly the keys \"user\" and \"token\"",
            RequestField::Options => "options",
            RequestField::Position => "position",
            RequestField::ProducerId => "producer_id",
            RequestField::Seq => "seq",
            RequestField::FetchMaxMessages => "max_messages",
            RequestField::FetchMaxBytes => "max_bytes",
        }
    }
}

impl fmt::Display for RequestField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "element {} ({})", self.index(), self.name())?;
        if let RequestField::BatchPayload(i) = self {
            write!(f, ", payload {i}")?;
        }
        Ok(())
    }
}

/// What was wrong with a request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeErrorKind {
    /// The body is not a MessagePack array (or not even a whole header).
    NotAnArray,
    /// The array is too short to hold `[op, id]`.
    TooShort { len: u32 },
    /// The operation code is not one this server knows.
    UnknownOperation(u64),
    /// The array does not have the operation's number of elements.
    /// `expected` is the arity with every optional trailing element
    /// left out; `optional` says how many may follow it.
    WrongArity {
        expected: u32,
        optional: u32,
        got: u32,
    },
    /// An element could not be read as what the operation needs there.
    BadField {
        field: RequestField,
        error: ReadError,
    },
    /// Bytes follow the request's array.
    TrailingBytes { count: usize },
    /// A map (CREATE_TOPIC's options, a `{"time_ms": n}` position) has a
    /// key the protocol does not define there, or one twice.
    BadKey { field: RequestField },
    /// A string-valued element holds a value the protocol does not define
    /// (a position other than "new"/"earliest", an empty or too long
    /// producer id, a seq of 0).
    BadValue { field: RequestField },
}

impl DecodeErrorKind {
    /// The code of the error reply: only an unknown operation has its own.
    pub fn code(self) -> ErrorCode {
        match self {
            DecodeErrorKind::UnknownOperation(_) => ErrorCode::UnknownOperation,
            _ => ErrorCode::MalformedRequest,
        }
    }
}

impl fmt::Display for DecodeErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeErrorKind::NotAnArray => {
                f.write_str("a request must be a MessagePack array [op, id, ...]")
            }
            DecodeErrorKind::TooShort { len } => write!(
                f,
                "a request must be an array [op, id, ...], got {len} elements"
            ),
            DecodeErrorKind::UnknownOperation(op) => write!(f, "unknown operation {op}"),
            DecodeErrorKind::WrongArity {
                expected,
                optional: 0,
                got,
            } => write!(f, "expected {expected} elements, got {got}"),
            DecodeErrorKind::WrongArity {
                expected,
                optional,
                got,
            } => write!(
                f,
                "expected {expected} to {} elements, got {got}",
                expected + optional
            ),
            DecodeErrorKind::BadField { field, error } => write!(f, "{field}: {error}"),
            DecodeErrorKind::TrailingBytes { count } => {
                write!(f, "{count} trailing bytes after the request")
            }
            DecodeErrorKind::BadKey { field } => {
                write!(f, "{field}: an unknown or repeated key")
            }
            DecodeErrorKind::BadValue { field } => {
                write!(f, "{field}: a value the protocol does not define")
            }
        }
    }
}

/// Why a request body could not be decoded. Carries the request id and the
/// operation when they could be read, so that the error reply can still
/// name the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeError {
    pub id: Option<u64>,
    pub op: Option<Op>,
    pub kind: DecodeErrorKind,
}

impl DecodeError {
    /// MALFORMED_REQUEST, or UNKNOWN_OPERATION.
    pub fn code(&self) -> ErrorCode {
        self.kind.code()
    }
}

/// The text of the error reply: the operation's signature when it is
/// known, then what was wrong.
impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.op {
            Some(op) => write!(f, "{}: {}", signature(op), self.kind),
            None => self.kind.fmt(f),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Names of the arguments each operation takes after `[op, id`, for errors.
fn signature(op: Op) -> &'static str {
    match op {
        Op::Hello => "HELLO [1, id, version, client_name(, credentials or nil)]",
        Op::RegisterPublisher => "REGISTER_PUBLISHER [2, id(, producer_id)]",
        Op::CreateTopic => "CREATE_TOPIC [3, id, topic(, options or nil)]",
        Op::DeleteTopic => "DELETE_TOPIC [4, id, topic]",
        Op::Publish => "PUBLISH [5, id, topic, payload(, seq)]",
        Op::PublishBatch => "PUBLISH_BATCH [6, id, topic, [payload, ...](, first_seq)]",
        Op::RegisterSubscriber => {
            "REGISTER_SUBSCRIBER [7, id, subscriber_id or nil(, timeout_ms or nil)]"
        }
        Op::Subscribe => "SUBSCRIBE [8, id, topic(, position)]",
        Op::Unsubscribe => "UNSUBSCRIBE [9, id, topic]",
        Op::Pull => "PULL [10, id, topic or nil, max_messages, max_bytes, wait_ms, ack]",
        Op::Ack => "ACK [11, id, topic, offset]",
        Op::Stats => "STATS [12, id]",
        Op::EndSession => "END_SESSION [13, id]",
        Op::ListTopics => "LIST_TOPICS [14, id, after or nil, limit]",
        Op::TopicInfo => "TOPIC_INFO [15, id, topic]",
        Op::Seek => "SEEK [16, id, topic, position]",
        Op::Fetch => "FETCH [17, id, topic, offset, max_messages, max_bytes]",
    }
}

/// The number of elements of a request of `op` without its optional
/// trailing ones (see [`optional_args`]).
fn arity(op: Op) -> u32 {
    match op {
        Op::RegisterPublisher | Op::Stats | Op::EndSession => 2,
        Op::TopicInfo
        | Op::CreateTopic
        | Op::DeleteTopic
        | Op::RegisterSubscriber
        | Op::Subscribe
        | Op::Unsubscribe => 3,
        Op::Hello | Op::Publish | Op::PublishBatch | Op::Ack | Op::ListTopics | Op::Seek => 4,
        Op::Fetch => 6,
        Op::Pull => 7,
    }
}

/// How many elements may follow [`arity`]'s, each optional (protocol
/// version 2 added REGISTER_SUBSCRIBER's session timeout this way, so a
/// request without it keeps its version 1 shape).
fn optional_args(op: Op) -> u32 {
    match op {
        Op::RegisterSubscriber
        | Op::Hello
        | Op::CreateTopic
        | Op::Subscribe
        | Op::RegisterPublisher
        | Op::Publish
        | Op::PublishBatch => 1,
        _ => 0,
    }
}

/// Decodes one request body (the bytes after the length prefix).
pub fn decode_request(body: &[u8]) -> Result<(u64, Request<'_>), DecodeError> {
    let mut r = Reader::new(body);
    let error = |id, op, kind| DecodeError { id, op, kind };
    let bad = |field| move |error| DecodeErrorKind::BadField { field, error };

    let len = r
        .read_array_len()
        .map_err(|_| error(None, None, DecodeErrorKind::NotAnArray))?;
    if len < 2 {
        return Err(error(None, None, DecodeErrorKind::TooShort { len }));
    }
    let op_code = r
        .read_u64()
        .map_err(|e| error(None, None, bad(RequestField::Op)(e)))?;
    let id = r
        .read_u64()
        .map_err(|e| error(None, None, bad(RequestField::Id)(e)))?;
    let Some(op) = Op::from_code(op_code) else {
        return Err(error(
            Some(id),
            None,
            DecodeErrorKind::UnknownOperation(op_code),
        ));
    };
    if len < arity(op) || len > arity(op) + optional_args(op) {
        let kind = DecodeErrorKind::WrongArity {
            expected: arity(op),
            optional: optional_args(op),
            got: len,
        };
        return Err(error(Some(id), Some(op), kind));
    }
    let extra = len - arity(op);
    let request =
        decode_args(op, extra, &mut r, body).map_err(|kind| error(Some(id), Some(op), kind))?;
    if !r.is_empty() {
        let kind = DecodeErrorKind::TrailingBytes {
            count: r.rest().len(),
        };
        return Err(error(Some(id), Some(op), kind));
    }
    Ok((id, request))
}

/// Reads the arguments of `op` from `r`, positioned after `[op, id`;
/// `extra` optional elements follow the required ones.
fn decode_args<'a>(
    op: Op,
    extra: u32,
    r: &mut Reader<'a>,
    body: &'a [u8],
) -> Result<Request<'a>, DecodeErrorKind> {
    let bad = |field| move |error| DecodeErrorKind::BadField { field, error };
    let topic = |r: &mut Reader<'a>| r.read_str().map_err(bad(RequestField::Topic));
    Ok(match op {
        Op::Hello => Request::Hello {
            version: r.read_u64().map_err(bad(RequestField::Version))?,
            client_name: r.read_str().map_err(bad(RequestField::ClientName))?,
            credentials: match extra {
                0 => None,
                _ => read_credentials(r)?,
            },
        },
        Op::RegisterPublisher => match extra {
            0 => Request::RegisterPublisher,
            _ => match read_producer_id(r)? {
                None => Request::RegisterPublisher,
                Some(producer_id) => Request::RegisterProducer { producer_id },
            },
        },
        Op::CreateTopic => {
            let topic = topic(r)?;
            match extra {
                0 => Request::CreateTopic { topic },
                _ => match read_options(r)? {
                    Retention::UntilAcked => Request::CreateTopic { topic },
                    retention => Request::CreateTopicWith { topic, retention },
                },
            }
        }
        Op::DeleteTopic => Request::DeleteTopic { topic: topic(r)? },
        Op::Publish => {
            let topic = topic(r)?;
            let payload = r.read_payload().map_err(bad(RequestField::Payload))?;
            match read_seq(r, extra)? {
                None => Request::Publish { topic, payload },
                Some(seq) => Request::PublishSeq {
                    topic,
                    payload,
                    seq,
                },
            }
        }
        Op::PublishBatch => {
            let topic = topic(r)?;
            let count = r.read_array_len().map_err(bad(RequestField::Payloads))?;
            let start = r.position();
            for i in 0..count {
                r.read_payload()
                    .map_err(bad(RequestField::BatchPayload(i)))?;
            }
            let payloads = Payloads {
                encoded: body.get(start..r.position()).unwrap_or_default(),
                count,
            };
            match read_seq(r, extra)? {
                None => Request::PublishBatch { topic, payloads },
                Some(first_seq) => Request::PublishBatchSeq {
                    topic,
                    payloads,
                    first_seq,
                },
            }
        }
        Op::RegisterSubscriber => Request::RegisterSubscriber {
            resume: r.read_opt_u64().map_err(bad(RequestField::SubscriberId))?,
            timeout_ms: match extra {
                0 => None,
                _ => r
                    .read_opt_u64()
                    .map_err(bad(RequestField::SessionTimeout))?,
            },
        },
        Op::Subscribe => {
            let topic = topic(r)?;
            match extra {
                0 => Request::Subscribe { topic },
                _ => match read_opt_position(r)? {
                    None => Request::Subscribe { topic },
                    Some(position) => Request::SubscribeFrom { topic, position },
                },
            }
        }
        Op::Unsubscribe => Request::Unsubscribe { topic: topic(r)? },
        Op::Pull => Request::Pull(Pull {
            topic: r.read_opt_str().map_err(bad(RequestField::Topic))?,
            max_messages: r.read_u32().map_err(bad(RequestField::MaxMessages))?,
            max_bytes: r.read_u32().map_err(bad(RequestField::MaxBytes))?,
            wait_ms: r.read_u32().map_err(bad(RequestField::WaitMs))?,
            ack: r.read_bool().map_err(bad(RequestField::Ack))?,
        }),
        Op::Ack => Request::Ack {
            topic: topic(r)?,
            offset: r.read_u64().map_err(bad(RequestField::Offset))?,
        },
        Op::Stats => Request::Stats,
        Op::EndSession => Request::EndSession,
        Op::ListTopics => Request::ListTopics {
            after: r.read_opt_str().map_err(bad(RequestField::After))?,
            limit: r.read_u32().map_err(bad(RequestField::Limit))?,
        },
        Op::TopicInfo => Request::TopicInfo { topic: topic(r)? },
        Op::Seek => {
            let topic = topic(r)?;
            match read_opt_position(r)? {
                Some(position) => Request::Seek { topic, position },
                None => {
                    let error = msgpack::ReadError::WrongType(msgpack::Expected::Position);
                    return Err(bad(RequestField::Position)(error));
                }
            }
        }
        Op::Fetch => Request::Fetch {
            topic: topic(r)?,
            offset: r.read_u64().map_err(bad(RequestField::Offset))?,
            max_messages: r.read_u32().map_err(bad(RequestField::FetchMaxMessages))?,
            max_bytes: r.read_u32().map_err(bad(RequestField::FetchMaxBytes))?,
        },
    })
}

/// HELLO's credentials: `nil`, or a map of exactly the two `str` keys
/// `"user"` and `"token"` (in either order) with `str` values.
fn read_credentials<'a>(r: &mut Reader<'a>) -> Result<Option<Credentials<'a>>, DecodeErrorKind> {
    let bad = |field| move |error| DecodeErrorKind::BadField { field, error };
    let Some(len) = r
        .read_opt_map_len()
        .map_err(bad(RequestField::Credentials))?
    else {
        return Ok(None);
    };
    let wrong_key = DecodeErrorKind::BadField {
        field: RequestField::CredentialsKey,
        error: ReadError::WrongType(Expected::Str),
    };
    if len != 2 {
        return Err(wrong_key);
    }
    let (mut user, mut token) = (None, None);
    for _ in 0..len {
        let key = r.read_str().map_err(bad(RequestField::CredentialsKey))?;
        let value = r.read_str().map_err(bad(RequestField::Credentials))?;
        let slot = match key {
            "user" => &mut user,
            "token" => &mut token,
            _ => return Err(wrong_key),
        };
        if slot.replace(value).is_some() {
            return Err(wrong_key);
        }
    }
    match (user, token) {
        (Some(user), Some(token)) => Ok(Some(Credentials { user, token })),
        _ => Err(wrong_key),
    }
}

fn bad_at(field: RequestField) -> impl Fn(ReadError) -> DecodeErrorKind {
    move |error| DecodeErrorKind::BadField { field, error }
}

/// REGISTER_PUBLISHER's producer id: `nil` (left out) or a str of
/// 1..=[`MAX_PRODUCER_ID_BYTES`] bytes.
fn read_producer_id<'a>(r: &mut Reader<'a>) -> Result<Option<&'a str>, DecodeErrorKind> {
    let id = r.read_opt_str().map_err(bad_at(RequestField::ProducerId))?;
    match id {
        Some(id) if id.is_empty() || id.len() > MAX_PRODUCER_ID_BYTES => {
            Err(DecodeErrorKind::BadValue {
                field: RequestField::ProducerId,
            })
        }
        other => Ok(other),
    }
}

/// PUBLISH's seq or PUBLISH_BATCH's first_seq when present: `nil` (left
/// out) or an integer >= 1.
fn read_seq(r: &mut Reader<'_>, extra: u32) -> Result<Option<u64>, DecodeErrorKind> {
    if extra == 0 {
        return Ok(None);
    }
    match r.read_opt_u64().map_err(bad_at(RequestField::Seq))? {
        Some(0) => Err(DecodeErrorKind::BadValue {
            field: RequestField::Seq,
        }),
        other => Ok(other),
    }
}

/// CREATE_TOPIC's options: `nil` or a map with `str` keys, each known key
/// once, each value an unsigned integer. No known key means until-acked.
fn read_options(r: &mut Reader<'_>) -> Result<Retention, DecodeErrorKind> {
    let field = RequestField::Options;
    let Some(len) = r.read_opt_map_len().map_err(bad_at(field))? else {
        return Ok(Retention::UntilAcked);
    };
    if len == 0 {
        return Ok(Retention::UntilAcked);
    }
    let (mut retain_ms, mut retain_bytes) = (None, None);
    for _ in 0..len {
        let key = r.read_str().map_err(bad_at(field))?;
        let slot = match key {
            "retain_ms" => &mut retain_ms,
            "retain_bytes" => &mut retain_bytes,
            _ => return Err(DecodeErrorKind::BadKey { field }),
        };
        if slot.is_some() {
            return Err(DecodeErrorKind::BadKey { field });
        }
        *slot = Some(r.read_u64().map_err(bad_at(field))?);
    }
    Ok(Retention::Keep {
        retain_ms: retain_ms.unwrap_or(0),
        retain_bytes: retain_bytes.unwrap_or(0),
    })
}

/// A start position, or `nil` (left out): `"new"`, `"earliest"`, an
/// unsigned offset, or the map `{"time_ms": uint}`.
fn read_opt_position(r: &mut Reader<'_>) -> Result<Option<Position>, DecodeErrorKind> {
    let field = RequestField::Position;
    let wrong = || DecodeErrorKind::BadField {
        field,
        error: ReadError::WrongType(msgpack::Expected::Position),
    };
    if r.next_is_str() {
        return match r.read_str().map_err(bad_at(field))? {
            "new" => Ok(Some(Position::New)),
            "earliest" => Ok(Some(Position::Earliest)),
            _ => Err(DecodeErrorKind::BadValue { field }),
        };
    }
    if r.next_is_map() {
        if r.read_map_len().map_err(bad_at(field))? != 1
            || r.read_str().map_err(bad_at(field))? != "time_ms"
        {
            return Err(DecodeErrorKind::BadKey { field });
        }
        return Ok(Some(Position::TimeMs(r.read_u64().map_err(bad_at(field))?)));
    }
    match r.read_opt_u64() {
        Ok(offset) => Ok(offset.map(Position::Offset)),
        Err(ReadError::WrongType(_)) => Err(wrong()),
        Err(error) => Err(DecodeErrorKind::BadField { field, error }),
    }
}

/// The payloads of a batch, read again from their checked encoding.
pub(crate) fn iter_payloads<'a>(payloads: &Payloads<'a>) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut reader = Reader::new(payloads.encoded);
    (0..payloads.count).map_while(move |_| reader.read_payload().ok())
}

/// The payloads of a batch after its first `skip` (an idempotent
/// producer's batch that repeats some already stored), borrowing the same
/// checked encoding.
pub(crate) fn skip_payloads<'a>(payloads: &Payloads<'a>, skip: u32) -> Payloads<'a> {
    let skip = skip.min(payloads.count);
    let mut reader = Reader::new(payloads.encoded);
    for _ in 0..skip {
        if reader.read_payload().is_err() {
            break;
        }
    }
    Payloads {
        encoded: reader.rest(),
        count: payloads.count - skip,
    }
}

/// Writes `[len, op, id` — the start of every request; `extra` optional
/// elements will follow the required ones.
fn write_request_header(out: &mut Vec<u8>, op: Op, extra: u32, id: u64) {
    msgpack::write_array_len(out, arity(op) + extra);
    msgpack::write_u64(out, op as u64);
    msgpack::write_u64(out, id);
}

/// Appends one complete request frame to `out`.
pub fn encode_request(out: &mut Vec<u8>, id: u64, request: &Request<'_>) {
    let start = begin_frame(out);
    // An absent optional element is left out, not sent as nil, so a
    // request that does not use it keeps the shape older brokers read.
    let extra = match request {
        Request::RegisterSubscriber {
            timeout_ms: Some(_),
            ..
        }
        | Request::Hello {
            credentials: Some(_),
            ..
        }
        | Request::CreateTopicWith { .. }
        | Request::SubscribeFrom { .. }
        | Request::RegisterProducer { .. }
        | Request::PublishSeq { .. }
        | Request::PublishBatchSeq { .. } => 1,
        _ => 0,
    };
    write_request_header(out, request.op(), extra, id);
    match request {
        Request::Hello {
            version,
            client_name,
            credentials,
        } => {
            msgpack::write_u64(out, *version);
            msgpack::write_str(out, client_name);
            if let Some(credentials) = credentials {
                msgpack::write_map_len(out, 2);
                msgpack::write_str(out, "user");
                msgpack::write_str(out, credentials.user);
                msgpack::write_str(out, "token");
                msgpack::write_str(out, credentials.token);
            }
        }
        Request::RegisterPublisher | Request::Stats | Request::EndSession => {}
        Request::TopicInfo { topic }
        | Request::CreateTopic { topic }
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
        Request::RegisterSubscriber { resume, timeout_ms } => {
            write_opt_u64(out, *resume);
            if let Some(ms) = timeout_ms {
                msgpack::write_u64(out, *ms);
            }
        }
        Request::Pull(pull) => {
            write_opt_str(out, pull.topic);
            msgpack::write_u64(out, u64::from(pull.max_messages));
            msgpack::write_u64(out, u64::from(pull.max_bytes));
            msgpack::write_u64(out, u64::from(pull.wait_ms));
            msgpack::write_bool(out, pull.ack);
        }
        Request::Ack { topic, offset } => {
            msgpack::write_str(out, topic);
            msgpack::write_u64(out, *offset);
        }
        Request::ListTopics { after, limit } => {
            write_opt_str(out, *after);
            msgpack::write_u64(out, u64::from(*limit));
        }
        Request::CreateTopicWith { topic, retention } => {
            msgpack::write_str(out, topic);
            write_options(out, *retention);
        }
        Request::SubscribeFrom { topic, position } | Request::Seek { topic, position } => {
            msgpack::write_str(out, topic);
            write_position(out, *position);
        }
        Request::RegisterProducer { producer_id } => msgpack::write_str(out, producer_id),
        Request::PublishSeq {
            topic,
            payload,
            seq,
        } => {
            msgpack::write_str(out, topic);
            msgpack::write_bin(out, payload);
            msgpack::write_u64(out, *seq);
        }
        Request::PublishBatchSeq {
            topic,
            payloads,
            first_seq,
        } => {
            msgpack::write_str(out, topic);
            msgpack::write_array_len(out, payloads.count);
            out.extend_from_slice(payloads.encoded);
            msgpack::write_u64(out, *first_seq);
        }
        Request::Fetch {
            topic,
            offset,
            max_messages,
            max_bytes,
        } => {
            msgpack::write_str(out, topic);
            msgpack::write_u64(out, *offset);
            msgpack::write_u64(out, u64::from(*max_messages));
            msgpack::write_u64(out, u64::from(*max_bytes));
        }
    }
    end_frame(out, start);
}

/// CREATE_TOPIC's options map: the keys whose bound is set (0 means none,
/// so it is left out), or `retain_ms` 0 alone for a topic that keeps
/// everything — a map with no key would mean until-acked, which sends no
/// map at all.
fn write_options(out: &mut Vec<u8>, retention: Retention) {
    let (retain_ms, retain_bytes) = match retention {
        Retention::UntilAcked => (0, 0),
        Retention::Keep {
            retain_ms,
            retain_bytes,
        } => (retain_ms, retain_bytes),
    };
    let keys = [("retain_ms", retain_ms), ("retain_bytes", retain_bytes)];
    let set = keys.iter().filter(|(_, v)| *v > 0).count();
    if set == 0 {
        msgpack::write_map_len(out, 1);
        msgpack::write_str(out, "retain_ms");
        msgpack::write_u64(out, 0);
        return;
    }
    msgpack::write_map_len(out, set as u32);
    for (key, value) in keys.into_iter().filter(|(_, v)| *v > 0) {
        msgpack::write_str(out, key);
        msgpack::write_u64(out, value);
    }
}

pub(crate) fn write_position(out: &mut Vec<u8>, position: Position) {
    match position {
        Position::New => msgpack::write_str(out, "new"),
        Position::Earliest => msgpack::write_str(out, "earliest"),
        Position::Offset(offset) => msgpack::write_u64(out, offset),
        Position::TimeMs(ms) => {
            msgpack::write_map_len(out, 1);
            msgpack::write_str(out, "time_ms");
            msgpack::write_u64(out, ms);
        }
    }
}

/// PUBLISH_BATCH with a first_seq, payloads written straight into `out`
/// (as [`encode_publish_batch`]).
pub fn encode_publish_batch_seq(
    out: &mut Vec<u8>,
    id: u64,
    topic: &str,
    payloads: &[&[u8]],
    first_seq: u64,
) {
    let start = begin_frame(out);
    write_request_header(out, Op::PublishBatch, 1, id);
    msgpack::write_str(out, topic);
    msgpack::write_array_len(out, len_u32(payloads.len()));
    for payload in payloads {
        msgpack::write_bin(out, payload);
    }
    msgpack::write_u64(out, first_seq);
    end_frame(out, start);
}

fn write_opt_u64(out: &mut Vec<u8>, value: Option<u64>) {
    match value {
        Some(value) => msgpack::write_u64(out, value),
        None => msgpack::write_nil(out),
    }
}

fn write_opt_str(out: &mut Vec<u8>, text: Option<&str>) {
    match text {
        Some(text) => msgpack::write_str(out, text),
        None => msgpack::write_nil(out),
    }
}

/// Appends a PUBLISH_BATCH request frame, writing each payload straight into
/// `out` (the same bytes as [`encode_request`] with [`encode_payloads`],
/// without the intermediate copy).
pub fn encode_publish_batch(out: &mut Vec<u8>, id: u64, topic: &str, payloads: &[&[u8]]) {
    let start = begin_frame(out);
    write_request_header(out, Op::PublishBatch, 0, id);
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
        count: len_u32(payloads.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::msgpack::Expected;
    use crate::codec::split_frame;
    use crate::testing::every_request;

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

    /// A request body, then the id, operation and kind of its error, and
    /// the code of the error reply.
    type Case<'a> = (
        &'a [u8],
        Option<u64>,
        Option<Op>,
        DecodeErrorKind,
        ErrorCode,
    );

    fn bad(field: RequestField, error: ReadError) -> DecodeErrorKind {
        DecodeErrorKind::BadField { field, error }
    }

    #[test]
    fn bad_requests_get_typed_errors_with_the_id_when_known() {
        use DecodeErrorKind::*;
        use ErrorCode::{MalformedRequest as Malformed, UnknownOperation as Unknown};
        let publish = Some(Op::Publish);
        let cases: &[Case] = &[
            (&[0xc0], None, None, NotAnArray, Malformed),
            (&[], None, None, NotAnArray, Malformed),
            (&[0x91, 0x01], None, None, TooShort { len: 1 }, Malformed),
            (
                &[0x92, 0xa0, 0x05],
                None,
                None,
                bad(RequestField::Op, ReadError::WrongType(Expected::UInt)),
                Malformed,
            ),
            (
                &[0x92, 0x05, 0xff],
                None,
                None,
                bad(RequestField::Id, ReadError::OutOfRange),
                Malformed,
            ),
            (
                &[0x92, 0x63, 0x05],
                Some(5),
                None,
                UnknownOperation(99),
                Unknown,
            ),
            (
                &[0x92, 0x05, 0x05],
                Some(5),
                publish,
                WrongArity {
                    expected: 4,
                    optional: 1,
                    got: 2,
                },
                Malformed,
            ),
            // PUBLISH whose topic is an integer.
            (
                &[0x94, 0x05, 0x09, 0x01, 0xc4, 0x00],
                Some(9),
                publish,
                bad(RequestField::Topic, ReadError::WrongType(Expected::Str)),
                Malformed,
            ),
            // PUBLISH whose payload is cut short.
            (
                &[0x94, 0x05, 0x09, 0xa1, b't', 0xc4, 0x05, 0x00],
                Some(9),
                publish,
                bad(RequestField::Payload, ReadError::Truncated),
                Malformed,
            ),
            // STATS with a trailing byte after the array.
            (
                &[0x92, 0x0c, 0x01, 0x00],
                Some(1),
                Some(Op::Stats),
                TrailingBytes { count: 1 },
                Malformed,
            ),
            // PULL with a negative max_messages.
            (
                &[0x97, 0x0a, 0x02, 0xc0, 0xff, 0x01, 0x00, 0xc2],
                Some(2),
                Some(Op::Pull),
                bad(RequestField::MaxMessages, ReadError::OutOfRange),
                Malformed,
            ),
            // PULL whose ack is an integer.
            (
                &[0x97, 0x0a, 0x02, 0xc0, 0x01, 0x01, 0x00, 0x01],
                Some(2),
                Some(Op::Pull),
                bad(RequestField::Ack, ReadError::WrongType(Expected::Bool)),
                Malformed,
            ),
            // PUBLISH_BATCH whose second payload is an integer.
            (
                &[0x94, 0x06, 0x03, 0xa1, b't', 0x92, 0xc4, 0x00, 0x07],
                Some(3),
                Some(Op::PublishBatch),
                bad(
                    RequestField::BatchPayload(1),
                    ReadError::WrongType(Expected::Payload),
                ),
                Malformed,
            ),
        ];
        for &(body, id, op, expected, code) in cases {
            let e = decode_request(body).expect_err("an undecodable request");
            assert_eq!(
                (e.id, e.op, e.kind, e.code()),
                (id, op, expected, code),
                "{body:02x?}"
            );
        }
    }

    /// `[op, 1, …]` as a request body with the given arguments.
    fn request(op: Op, args: &[&[u8]]) -> Vec<u8> {
        let mut body = vec![0x90 | (2 + args.len() as u8), op as u8, 0x01];
        for arg in args {
            body.extend_from_slice(arg);
        }
        body
    }

    #[test]
    fn version_2_trailing_elements_decode_exactly() {
        fn ok(body: &[u8]) -> Result<Request<'_>, DecodeErrorKind> {
            decode_request(body).map(|(_, r)| r).map_err(|e| e.kind)
        }
        // nil or an empty options map is the version 1 CREATE_TOPIC.
        for options in [&b"\xc0"[..], b"\x80"] {
            assert_eq!(
                ok(&request(Op::CreateTopic, &[b"\xa1t", options])),
                Ok(Request::CreateTopic { topic: "t" })
            );
        }
        assert_eq!(
            ok(&request(
                Op::CreateTopic,
                &[b"\xa1t", b"\x81\xa9retain_ms\xcd\x03\xe8"]
            )),
            Ok(Request::CreateTopicWith {
                topic: "t",
                retention: Retention::Keep {
                    retain_ms: 1000,
                    retain_bytes: 0
                }
            })
        );
        let positions: [(&[u8], Position); 4] = [
            (b"\xa3new", Position::New),
            (b"\xa8earliest", Position::Earliest),
            (b"\x07", Position::Offset(7)),
            (b"\x81\xa7time_ms\x09", Position::TimeMs(9)),
        ];
        for (bytes, position) in positions {
            assert_eq!(
                ok(&request(Op::Subscribe, &[b"\xa1t", bytes])),
                Ok(Request::SubscribeFrom {
                    topic: "t",
                    position
                })
            );
            assert_eq!(
                ok(&request(Op::Seek, &[b"\xa1t", bytes])),
                Ok(Request::Seek {
                    topic: "t",
                    position
                })
            );
        }
        assert_eq!(
            ok(&request(Op::Subscribe, &[b"\xa1t", b"\xc0"])),
            Ok(Request::Subscribe { topic: "t" })
        );
        assert_eq!(
            ok(&request(Op::RegisterPublisher, &[b"\xa1p"])),
            Ok(Request::RegisterProducer { producer_id: "p" })
        );
        assert_eq!(
            ok(&request(Op::Publish, &[b"\xa1t", b"\xc4\x01x", b"\x05"])),
            Ok(Request::PublishSeq {
                topic: "t",
                payload: b"x",
                seq: 5
            })
        );
        assert_eq!(
            ok(&request(
                Op::Fetch,
                &[b"\xa1t", b"\x00", b"\x0a", b"\xcd\x04\x00"]
            )),
            Ok(Request::Fetch {
                topic: "t",
                offset: 0,
                max_messages: 10,
                max_bytes: 1024
            })
        );
    }

    #[test]
    fn version_2_elements_of_the_wrong_shape_are_malformed() {
        use ReadError::WrongType;
        let field = |f| move |e| bad(f, e);
        let options = field(RequestField::Options);
        let position = field(RequestField::Position);
        let cases: Vec<(Vec<u8>, DecodeErrorKind)> = vec![
            // Options: not a map, an unknown key, a repeated key, a
            // non-integer value, a non-str key.
            (
                request(Op::CreateTopic, &[b"\xa1t", b"\x01"]),
                options(WrongType(Expected::NilOrMap)),
            ),
            (
                request(Op::CreateTopic, &[b"\xa1t", b"\x81\xa3ttl\x01"]),
                DecodeErrorKind::BadKey {
                    field: RequestField::Options,
                },
            ),
            (
                request(
                    Op::CreateTopic,
                    &[b"\xa1t", b"\x82\xa9retain_ms\x01\xa9retain_ms\x02"],
                ),
                DecodeErrorKind::BadKey {
                    field: RequestField::Options,
                },
            ),
            (
                request(Op::CreateTopic, &[b"\xa1t", b"\x81\xa9retain_ms\xa11"]),
                options(WrongType(Expected::UInt)),
            ),
            (
                request(Op::CreateTopic, &[b"\xa1t", b"\x81\x01\x01"]),
                options(WrongType(Expected::Str)),
            ),
            // Positions: another string, a negative offset, a bool, a map
            // with another key.
            (
                request(Op::Subscribe, &[b"\xa1t", b"\xa6latest"]),
                DecodeErrorKind::BadValue {
                    field: RequestField::Position,
                },
            ),
            (
                request(Op::Seek, &[b"\xa1t", b"\xff"]),
                position(ReadError::OutOfRange),
            ),
            (
                request(Op::Seek, &[b"\xa1t", b"\xc3"]),
                position(WrongType(Expected::Position)),
            ),
            (
                request(Op::Seek, &[b"\xa1t", b"\xc0"]),
                position(WrongType(Expected::Position)),
            ),
            (
                request(Op::Subscribe, &[b"\xa1t", b"\x81\xa4time\x01"]),
                DecodeErrorKind::BadKey {
                    field: RequestField::Position,
                },
            ),
            // A producer id that is empty or not a str; a seq of 0 or a str.
            (
                request(Op::RegisterPublisher, &[b"\xa0"]),
                DecodeErrorKind::BadValue {
                    field: RequestField::ProducerId,
                },
            ),
            (
                request(Op::RegisterPublisher, &[b"\x01"]),
                field(RequestField::ProducerId)(WrongType(Expected::NilOrStr)),
            ),
            (
                request(Op::Publish, &[b"\xa1t", b"\xc4\x00", b"\x00"]),
                DecodeErrorKind::BadValue {
                    field: RequestField::Seq,
                },
            ),
            (
                request(Op::PublishBatch, &[b"\xa1t", b"\x90", b"\xa11"]),
                field(RequestField::Seq)(WrongType(Expected::NilOrUInt)),
            ),
            // FETCH with a negative max_bytes.
            (
                request(Op::Fetch, &[b"\xa1t", b"\x00", b"\x01", b"\xff"]),
                field(RequestField::FetchMaxBytes)(ReadError::OutOfRange),
            ),
        ];
        for (body, expected) in cases {
            let e = decode_request(&body).expect_err("a malformed version 2 element");
            assert_eq!(
                (e.kind, e.code()),
                (expected, ErrorCode::MalformedRequest),
                "{body:02x?}"
            );
        }
        // One element too many, for every operation with a new element.
        let too_many: [(Op, &[&[u8]]); 6] = [
            (Op::CreateTopic, &[b"\xa1t", b"\xc0", b"\xc0"]),
            (Op::Subscribe, &[b"\xa1t", b"\x00", b"\xc0"]),
            (Op::RegisterPublisher, &[b"\xa1p", b"\xc0"]),
            (Op::Publish, &[b"\xa1t", b"\xc4\x00", b"\x01", b"\xc0"]),
            (Op::Seek, &[b"\xa1t", b"\x00", b"\xc0"]),
            (Op::Fetch, &[b"\xa1t", b"\x00", b"\x01", b"\x01", b"\xc0"]),
        ];
        for (op, args) in too_many {
            let e = decode_request(&request(op, args)).expect_err("one element too many");
            assert!(
                matches!(e.kind, DecodeErrorKind::WrongArity { .. }),
                "{op:?}: {e:?}"
            );
            assert_eq!(e.code(), ErrorCode::MalformedRequest);
        }
    }

    #[test]
    fn a_str_payload_is_taken_as_bytes_even_when_not_utf8() {
        let body = request(Op::Publish, &[b"\xa1t", b"\xa3\xff\xfe\x00"]);
        assert_eq!(
            decode_request(&body),
            Ok((
                1,
                Request::Publish {
                    topic: "t",
                    payload: b"\xff\xfe\x00"
                }
            ))
        );
        // In a batch, mixed with bin, in a str8 and a bin16.
        let body = request(
            Op::PublishBatch,
            &[b"\xa1t", b"\x93\xa2\xc3\x28\xd9\x01\x80\xc5\x00\x01z"],
        );
        let Ok((1, Request::PublishBatch { topic, payloads })) = decode_request(&body) else {
            panic!("{:?}", decode_request(&body));
        };
        assert_eq!(topic, "t");
        let got: Vec<&[u8]> = payloads.iter().collect();
        assert_eq!(got, [&b"\xc3\x28"[..], b"\x80", b"z"]);
    }

    #[test]
    fn names_must_be_utf8_str_not_bin() {
        let not_utf8 = bad(RequestField::Topic, ReadError::InvalidUtf8);
        let a_bin = bad(RequestField::Topic, ReadError::WrongType(Expected::Str));
        let cases = [
            (request(Op::Publish, &[b"\xa1\xff", b"\xc4\x00"]), not_utf8),
            (request(Op::Publish, &[b"\xc4\x01t", b"\xc4\x00"]), a_bin),
            (request(Op::Subscribe, &[b"\xc4\x01t"]), a_bin),
            (request(Op::CreateTopic, &[b"\xa1\xff"]), not_utf8),
            (request(Op::Ack, &[b"\xc4\x01t", b"\x00"]), a_bin),
            (request(Op::PublishBatch, &[b"\xc4\x01t", b"\x90"]), a_bin),
            (
                request(
                    Op::Pull,
                    &[b"\xc4\x01t", b"\x01", b"\x01", b"\x00", b"\xc2"],
                ),
                bad(
                    RequestField::Topic,
                    ReadError::WrongType(Expected::NilOrStr),
                ),
            ),
            (
                request(Op::Hello, &[b"\x01", b"\xc4\x01c"]),
                bad(
                    RequestField::ClientName,
                    ReadError::WrongType(Expected::Str),
                ),
            ),
            (
                request(Op::Hello, &[b"\x01", b"\xa2\xc3\x28"]),
                bad(RequestField::ClientName, ReadError::InvalidUtf8),
            ),
        ];
        for (body, expected) in cases {
            let e = decode_request(&body).expect_err("a bad name");
            assert_eq!(
                (e.kind, e.code()),
                (expected, ErrorCode::MalformedRequest),
                "{body:02x?}"
            );
        }
    }

    #[test]
    fn non_shortest_headers_and_every_integer_width_decode() {
        // PUBLISH_BATCH as array16, op and id as uint8 and int16, the topic
        // as str16, the payload array as array32, payloads as str32 and bin32.
        let body = [
            &[0xdc, 0x00, 0x04, 0xcc, 0x06, 0xd1, 0x01, 0x00][..],
            &[0xda, 0x00, 0x01, b't'],
            &[0xdd, 0x00, 0x00, 0x00, 0x02],
            &[0xdb, 0x00, 0x00, 0x00, 0x01, b'a'],
            &[0xc6, 0x00, 0x00, 0x00, 0x01, b'b'],
        ]
        .concat();
        let Ok((256, Request::PublishBatch { topic, payloads })) = decode_request(&body) else {
            panic!("{:?}", decode_request(&body));
        };
        assert_eq!(topic, "t");
        assert_eq!(payloads.iter().collect::<Vec<_>>(), [b"a", b"b"]);

        // ACK with the offset in every width, signed ones included.
        let offsets: [&[u8]; 9] = [
            &[0x07],
            &[0xcc, 0x07],
            &[0xcd, 0x00, 0x07],
            &[0xce, 0x00, 0x00, 0x00, 0x07],
            &[0xcf, 0, 0, 0, 0, 0, 0, 0, 0x07],
            &[0xd0, 0x07],
            &[0xd1, 0x00, 0x07],
            &[0xd2, 0x00, 0x00, 0x00, 0x07],
            &[0xd3, 0, 0, 0, 0, 0, 0, 0, 0x07],
        ];
        for offset in offsets {
            let body = request(Op::Ack, &[b"\xd9\x01t", offset]);
            assert_eq!(
                decode_request(&body),
                Ok((
                    1,
                    Request::Ack {
                        topic: "t",
                        offset: 7
                    }
                )),
                "{offset:02x?}"
            );
        }
    }

    #[test]
    fn hello_credentials_are_nil_or_exactly_user_and_token() {
        let hello = |credentials: &[u8]| request(Op::Hello, &[b"\x02", b"\xa1c", credentials]);
        let body = hello(b"\x82\xa5token\xa1t\xa4user\xa1u");
        let ok = decode_request(&body).expect("ok");
        let Request::Hello { credentials, .. } = ok.1 else {
            panic!("{ok:?}");
        };
        assert_eq!(
            credentials,
            Some(Credentials {
                user: "u",
                token: "t"
            })
        );
        let body = hello(b"\xc0");
        let nil = decode_request(&body).expect("nil");
        assert!(matches!(
            nil.1,
            Request::Hello {
                credentials: None,
                ..
            }
        ));
        for bad in [
            &b"\x01"[..],
            b"\x81\xa4user\xa1u",
            b"\x83\xa4user\xa1u\xa5token\xa1t\xa1x\xa1y",
            b"\x82\xa4user\xa1u\xa4user\xa1v",
            b"\x82\xa4user\xa1u\xa4name\xa1t",
            b"\x82\xa4user\xc4\x01u\xa5token\xa1t",
        ] {
            let e = decode_request(&hello(bad)).expect_err("malformed");
            assert_eq!(e.code(), ErrorCode::MalformedRequest, "{bad:02x?}");
        }
        // Encoding writes what decoding reads.
        let mut out = Vec::new();
        let request = Request::Hello {
            version: 2,
            client_name: "c",
            credentials: Some(Credentials {
                user: "u",
                token: "t",
            }),
        };
        encode_request(&mut out, 1, &request);
        assert_eq!(decode_request(&out[4..]), Ok((1, request)));
    }
}
