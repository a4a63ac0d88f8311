//! The records of the log — one per change of durable broker state — and
//! their bodies as bytes.
//!
//! Each variant is a fact, not a command, so replaying it twice (a
//! checkpoint repeats the metadata, see STORAGE.md) is harmless when the
//! owner applies it as "make this so". Every integer is little-endian;
//! STORAGE.md lists the fields of each kind. The frame around a body (its
//! length, checksum and sequence number) is in `frame`.

use bytes::Bytes;

/// A topic's durable identity. The broker assigns it and never reuses it,
/// so records of a deleted topic cannot be mistaken for a later topic of the
/// same name.
pub type TopicId = u64;
/// A subscriber session's id, as the protocol shows it.
pub type SessionId = u64;

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// The client closed it.
    Closed,
    /// It expired without a connection.
    Expired,
}

/// One durable change of broker state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    TopicCreated {
        topic: TopicId,
        name: String,
    },
    TopicDeleted {
        topic: TopicId,
    },
    /// Payloads published to `topic`, at offsets `first_offset..`.
    Messages {
        topic: TopicId,
        first_offset: u64,
        timestamp_ms: u64,
        payloads: Vec<Bytes>,
        /// Set when an idempotent producer numbered the publish: in the
        /// same record as the messages, so a crash can never keep one
        /// without the other. Absent from the body when `None` (format 1
        /// bodies read the same).
        producer: Option<ProducerStamp>,
    },
    SessionCreated {
        session: SessionId,
        /// The timeout the session asked for, in ms; `None` follows the
        /// broker's default. Absent from the body when `None`, so logs
        /// written before the field existed read the same.
        timeout_ms: Option<u64>,
        /// The user who owns the session (`--users`). Absent from the body
        /// when `None`; when present the timeout is always written before
        /// it (`u64::MAX` for "none": timeouts are clamped far below), so
        /// the body's length tells the three shapes apart and older logs
        /// read the same.
        owner: Option<String>,
    },
    Subscribed {
        session: SessionId,
        topic: TopicId,
        start_offset: u64,
    },
    Unsubscribed {
        session: SessionId,
        topic: TopicId,
    },
    SessionEnded {
        session: SessionId,
        reason: SessionEnd,
    },
    /// Every offset below `offset` is acknowledged.
    Acked {
        session: SessionId,
        topic: TopicId,
        offset: u64,
    },
    /// The topic keeps its messages by this policy (0 = no bound of that
    /// kind) instead of until acknowledged. Follows its TopicCreated.
    TopicRetention {
        topic: TopicId,
        retain_ms: u64,
        retain_bytes: u64,
    },
    /// SEEK: the cursor stands at `offset`, acknowledged and delivered,
    /// whichever way it moved.
    Seeked {
        session: SessionId,
        topic: TopicId,
        offset: u64,
    },
    /// A checkpoint's copy of a producer's last stored seq on a topic.
    ProducerState {
        topic: TopicId,
        producer: String,
        last_seq: u64,
    },
}

/// Who numbered a `Messages` record's publish: the producer id, the seq of
/// its first message, and the reply's subscriber count, so that recovery
/// can answer a resend with the original reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerStamp {
    pub producer: String,
    pub first_seq: u64,
    pub subscribers: u64,
}

/// Why a body with a valid checksum does not decode: a bug or a newer
/// format, never a torn write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    UnknownKind(u8),
    /// The body ends before its fields do, or goes on after them.
    BadLength,
    /// A topic name that is not UTF-8.
    BadName,
    BadReason(u8),
}

/// SessionCreated's timeout slot when an owner follows and no timeout
/// was asked for.
const NO_TIMEOUT: u64 = u64::MAX;

const TOPIC_CREATED: u8 = 1;
const TOPIC_DELETED: u8 = 2;
const MESSAGES: u8 = 3;
const SESSION_CREATED: u8 = 4;
const SUBSCRIBED: u8 = 5;
const UNSUBSCRIBED: u8 = 6;
const SESSION_ENDED: u8 = 7;
const ACKED: u8 = 8;
const TOPIC_RETENTION: u8 = 9;
const SEEKED: u8 = 10;
const PRODUCER_STATE: u8 = 11;

impl Record {
    /// The kind byte of the frame.
    pub fn kind(&self) -> u8 {
        match self {
            Record::TopicCreated { .. } => TOPIC_CREATED,
            Record::TopicDeleted { .. } => TOPIC_DELETED,
            Record::Messages { .. } => MESSAGES,
            Record::SessionCreated { .. } => SESSION_CREATED,
            Record::Subscribed { .. } => SUBSCRIBED,
            Record::Unsubscribed { .. } => UNSUBSCRIBED,
            Record::SessionEnded { .. } => SESSION_ENDED,
            Record::Acked { .. } => ACKED,
            Record::TopicRetention { .. } => TOPIC_RETENTION,
            Record::Seeked { .. } => SEEKED,
            Record::ProducerState { .. } => PRODUCER_STATE,
        }
    }

    /// Appends the body (the fields, without the frame) to `out`.
    /// Lengths that do not fit their field are caught by the caller
    /// ([`Record::body_len`] is checked against the frame limit first, and
    /// names and payloads are far below `u32::MAX` once it passes).
    pub fn encode_body(&self, out: &mut Vec<u8>) {
        let put = |out: &mut Vec<u8>, v: u64| out.extend_from_slice(&v.to_le_bytes());
        match self {
            Record::TopicCreated { topic, name } => {
                put(out, *topic);
                out.extend_from_slice(&(name.len() as u32).to_le_bytes());
                out.extend_from_slice(name.as_bytes());
            }
            Record::TopicDeleted { topic } => put(out, *topic),
            Record::Messages {
                topic,
                first_offset,
                timestamp_ms,
                payloads,
                producer,
            } => {
                put(out, *topic);
                put(out, *first_offset);
                put(out, *timestamp_ms);
                out.extend_from_slice(&(payloads.len() as u32).to_le_bytes());
                for p in payloads {
                    out.extend_from_slice(&(p.len() as u32).to_le_bytes());
                    out.extend_from_slice(p);
                }
                if let Some(stamp) = producer {
                    put_name(out, &stamp.producer);
                    put(out, stamp.first_seq);
                    put(out, stamp.subscribers);
                }
            }
            Record::SessionCreated {
                session,
                timeout_ms,
                owner,
            } => {
                put(out, *session);
                match (timeout_ms, owner) {
                    (None, None) => {}
                    (Some(ms), None) => put(out, *ms),
                    (ms, Some(owner)) => {
                        put(out, ms.unwrap_or(NO_TIMEOUT));
                        out.extend_from_slice(&(owner.len() as u32).to_le_bytes());
                        out.extend_from_slice(owner.as_bytes());
                    }
                }
            }
            Record::Subscribed {
                session,
                topic,
                start_offset,
            } => {
                put(out, *session);
                put(out, *topic);
                put(out, *start_offset);
            }
            Record::Unsubscribed { session, topic } => {
                put(out, *session);
                put(out, *topic);
            }
            Record::SessionEnded { session, reason } => {
                put(out, *session);
                out.push(match reason {
                    SessionEnd::Closed => 0,
                    SessionEnd::Expired => 1,
                });
            }
            Record::Acked {
                session,
                topic,
                offset,
            }
            | Record::Seeked {
                session,
                topic,
                offset,
            } => {
                put(out, *session);
                put(out, *topic);
                put(out, *offset);
            }
            Record::TopicRetention {
                topic,
                retain_ms,
                retain_bytes,
            } => {
                put(out, *topic);
                put(out, *retain_ms);
                put(out, *retain_bytes);
            }
            Record::ProducerState {
                topic,
                producer,
                last_seq,
            } => {
                put(out, *topic);
                put_name(out, producer);
                put(out, *last_seq);
            }
        }
    }

    /// The length of the body [`Record::encode_body`] writes, computed
    /// without writing it so oversized records are refused before copying.
    pub fn body_len(&self) -> usize {
        match self {
            Record::TopicCreated { name, .. } => 12 + name.len(),
            Record::Messages {
                payloads, producer, ..
            } => {
                28 + payloads.iter().map(|p| 4 + p.len()).sum::<usize>()
                    + producer.as_ref().map_or(0, |s| 4 + s.producer.len() + 16)
            }
            Record::SessionCreated {
                timeout_ms, owner, ..
            } => match owner {
                None => 8 + timeout_ms.map_or(0, |_| 8),
                Some(owner) => 20 + owner.len(),
            },
            Record::ProducerState { producer, .. } => 20 + producer.len(),
            Record::TopicDeleted { .. } => 8,
            Record::Unsubscribed { .. } => 16,
            Record::SessionEnded { .. } => 9,
            Record::Subscribed { .. }
            | Record::Acked { .. }
            | Record::Seeked { .. }
            | Record::TopicRetention { .. } => 24,
        }
    }

    /// The topic of a `Messages` body, read without decoding the rest: a
    /// reader scanning the log for one topic passes over the others' records
    /// at the cost of their checksum alone.
    pub fn messages_topic(kind: u8, body: &[u8]) -> Option<TopicId> {
        let head: [u8; 8] = body.get(..8)?.try_into().ok()?;
        (kind == MESSAGES).then(|| u64::from_le_bytes(head))
    }

    /// Decodes a body of the given kind; it must be consumed exactly.
    pub fn decode(kind: u8, body: &[u8]) -> Result<Record, BodyError> {
        let mut r = Reader { rest: body };
        let record = match kind {
            TOPIC_CREATED => {
                let topic = r.u64()?;
                let len = r.u32()? as usize;
                let name = std::str::from_utf8(r.take(len)?).map_err(|_| BodyError::BadName)?;
                Record::TopicCreated {
                    topic,
                    name: name.to_owned(),
                }
            }
            TOPIC_DELETED => Record::TopicDeleted { topic: r.u64()? },
            MESSAGES => {
                let topic = r.u64()?;
                let first_offset = r.u64()?;
                let timestamp_ms = r.u64()?;
                let count = r.u32()? as usize;
                // Each payload takes at least its 4-byte length, so a count
                // larger than that cannot be honest; refuse it before
                // reserving memory for it.
                if count > r.rest.len() / 4 {
                    return Err(BodyError::BadLength);
                }
                let mut payloads = Vec::with_capacity(count);
                for _ in 0..count {
                    let len = r.u32()? as usize;
                    payloads.push(Bytes::copy_from_slice(r.take(len)?));
                }
                let producer = match r.rest.is_empty() {
                    true => None,
                    false => Some(ProducerStamp {
                        producer: r.name()?,
                        first_seq: r.u64()?,
                        subscribers: r.u64()?,
                    }),
                };
                Record::Messages {
                    topic,
                    first_offset,
                    timestamp_ms,
                    payloads,
                    producer,
                }
            }
            SESSION_CREATED => {
                let session = r.u64()?;
                let timeout_ms = match r.rest.is_empty() {
                    true => None,
                    false => Some(r.u64()?),
                };
                let owner = match r.rest.is_empty() {
                    true => None,
                    false => {
                        let len = r.u32()? as usize;
                        let name =
                            std::str::from_utf8(r.take(len)?).map_err(|_| BodyError::BadName)?;
                        Some(name.to_owned())
                    }
                };
                let timeout_ms = match (timeout_ms, &owner) {
                    (Some(NO_TIMEOUT), Some(_)) => None,
                    (ms, _) => ms,
                };
                Record::SessionCreated {
                    session,
                    timeout_ms,
                    owner,
                }
            }
            SUBSCRIBED => Record::Subscribed {
                session: r.u64()?,
                topic: r.u64()?,
                start_offset: r.u64()?,
            },
            UNSUBSCRIBED => Record::Unsubscribed {
                session: r.u64()?,
                topic: r.u64()?,
            },
            SESSION_ENDED => {
                let session = r.u64()?;
                let reason = match r.take(1)? {
                    [0] => SessionEnd::Closed,
                    [1] => SessionEnd::Expired,
                    [other, ..] => return Err(BodyError::BadReason(*other)),
                    [] => return Err(BodyError::BadLength),
                };
                Record::SessionEnded { session, reason }
            }
            ACKED => Record::Acked {
                session: r.u64()?,
                topic: r.u64()?,
                offset: r.u64()?,
            },
            TOPIC_RETENTION => Record::TopicRetention {
                topic: r.u64()?,
                retain_ms: r.u64()?,
                retain_bytes: r.u64()?,
            },
            SEEKED => Record::Seeked {
                session: r.u64()?,
                topic: r.u64()?,
                offset: r.u64()?,
            },
            PRODUCER_STATE => Record::ProducerState {
                topic: r.u64()?,
                producer: r.name()?,
                last_seq: r.u64()?,
            },
            other => return Err(BodyError::UnknownKind(other)),
        };
        if r.rest.is_empty() {
            Ok(record)
        } else {
            Err(BodyError::BadLength)
        }
    }
}

/// A length-prefixed UTF-8 string (a producer id).
fn put_name(out: &mut Vec<u8>, name: &str) {
    out.extend_from_slice(&(name.len() as u32).to_le_bytes());
    out.extend_from_slice(name.as_bytes());
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], BodyError> {
        if n > self.rest.len() {
            return Err(BodyError::BadLength);
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn u32(&mut self) -> Result<u32, BodyError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn name(&mut self) -> Result<String, BodyError> {
        let len = self.u32()? as usize;
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| BodyError::BadName)
    }

    fn u64(&mut self) -> Result<u64, BodyError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
}
