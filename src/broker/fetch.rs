//! FETCH: reading a topic without a session — for inspection and tools.
//!
//! It creates no cursor and holds nothing back: what it reads is whatever
//! the topic still retains, and retention or acknowledgements may drop it
//! the next moment.
//!
//! A FETCH from offsets still in memory is answered at once
//! ([`Broker::read_cached`]). One that starts below a durable topic's
//! memory window (the messages the cache evicted, see `super::topic`) is
//! read off the loop thread through the one disk read path,
//! [`Broker::read_range`] with [`ReadOwner::Fetch`], and answered when the
//! read is back ([`Broker::fetch_read_done`]), with what the read returned
//! — up to the window, so such a reply may hold fewer messages than asked
//! even where more follow: the client fetches again from `next_offset`.
//! While its read is out, the connection's input is not read
//! ([`Broker::fetching`]), so a client cannot queue unbounded reads and
//! its replies keep their order; other connections are not held up.

use super::Broker;
use super::Outbox;
use super::disk::ReadOwner;
use super::failure::Failure;
use super::keys::{ConnId, TopicKey};
use crate::codec::{self, FETCHED_OVERHEAD, fetched_message_bound};
use crate::protocol::{ErrorCode, Fetched, FetchedMessage, MAX_PULL_MESSAGES, Reply};
use crate::storage::{ReadChunk, TopicId};

/// A FETCH waiting for its disk read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchRead {
    pub conn: ConnId,
    pub id: u64,
    pub topic: TopicKey,
    pub topic_id: TopicId,
    pub from: u64,
    pub max_messages: u32,
    pub max_bytes: usize,
}

/// Fills a FETCH reply within its bounds: at most `max_messages`, at most
/// `max_bytes` of payload (but always the first), and one frame.
struct Filler {
    room: usize,
    bytes_left: usize,
    max_messages: usize,
    messages: Vec<FetchedMessage>,
}

impl Filler {
    fn new(max_frame_bytes: usize, max_messages: u32, max_bytes: usize) -> Self {
        Filler {
            room: max_frame_bytes.saturating_sub(FETCHED_OVERHEAD),
            bytes_left: max_bytes,
            max_messages: max_messages.clamp(1, MAX_PULL_MESSAGES) as usize,
            messages: Vec::new(),
        }
    }

    fn full(&self) -> bool {
        self.messages.len() >= self.max_messages
    }

    /// Takes the message if it fits; `false` ends the reply.
    fn take(&mut self, offset: u64, time_ms: u64, payload: &bytes::Bytes) -> bool {
        let cost = fetched_message_bound(payload.len());
        let first = self.messages.is_empty();
        if self.full() || cost > self.room || (!first && payload.len() > self.bytes_left) {
            return false;
        }
        self.room -= cost;
        self.bytes_left = self.bytes_left.saturating_sub(payload.len());
        self.messages.push(FetchedMessage {
            offset,
            time_ms,
            payload: payload.clone(),
        });
        true
    }
}

impl Broker {
    /// FETCH `[17, id, topic, offset, max_messages, max_bytes]`: the reply,
    /// or `None` when it waits for a disk read (answered later).
    pub(super) fn fetch(
        &mut self,
        conn: ConnId,
        id: u64,
        name: &str,
        offset: u64,
        max_messages: u32,
        max_bytes: u32,
    ) -> Result<Option<Fetched>, Failure> {
        let key = self.topic_key(name)?;
        let topic = &self.topics[key];
        // Past a gap first: the log holds no record for it, so a read
        // starting there would return nothing.
        let from = topic.past_gap(offset.clamp(topic.base_offset(), topic.next_offset()));
        if from < topic.window() && self.reads_disk() {
            let read = FetchRead {
                conn,
                id,
                topic: key,
                topic_id: topic.id,
                from,
                max_messages,
                max_bytes: (max_bytes as usize).min(self.limits.max_frame_bytes),
            };
            let count = max_messages.clamp(1, MAX_PULL_MESSAGES) as usize;
            let owner = ReadOwner::Fetch(read);
            if self
                .read_range(key, from, count, read.max_bytes, owner)
                .is_some()
            {
                self.disk.fetching.insert(conn);
                return Ok(None);
            }
        }
        Ok(Some(self.read_cached(
            key,
            from,
            max_messages,
            max_bytes as usize,
        )))
    }

    /// Whether `conn` has a FETCH waiting for the disk: its input waits
    /// too (see the module doc).
    pub(super) fn fetching(&self, conn: ConnId) -> bool {
        !self.disk.fetching.is_empty() && self.disk.fetching.contains(&conn)
    }

    /// A FETCH's disk read is back (`chunks`, or why it failed): answers
    /// it and lets its connection's input be read again.
    pub(super) fn fetch_read_done(
        &mut self,
        read: FetchRead,
        chunks: Result<Vec<ReadChunk>, String>,
        out: &mut dyn Outbox,
    ) {
        if !self.disk.fetching.remove(&read.conn) {
            return; // The connection went.
        }
        self.resume_input(read.conn);
        let live = self
            .topics
            .get(read.topic)
            .filter(|t| t.id == read.topic_id);
        let Some(topic) = live else {
            let message = "the topic was deleted while the fetch read the log";
            self.send_error(read.conn, read.id, ErrorCode::TopicDeleted, message, out);
            return;
        };
        let mut fill = Filler::new(
            self.limits.max_frame_bytes,
            read.max_messages,
            read.max_bytes,
        );
        let mut next = read.from;
        let chunks = match chunks {
            Ok(chunks) => chunks,
            Err(why) => {
                log::error!("a FETCH's read of topic {} failed: {why}", read.topic_id);
                let message = "the broker could not read these messages back from its log; retry";
                self.send_error(
                    read.conn,
                    read.id,
                    ErrorCode::StorageUnavailable,
                    message,
                    out,
                );
                return;
            }
        };
        self.disk.messages_read += chunks.iter().map(|c| c.payloads.len() as u64).sum::<u64>();
        'chunks: for chunk in &chunks {
            for (i, payload) in chunk.payloads.iter().enumerate() {
                let offset = chunk.first_offset + i as u64;
                if offset < next {
                    continue;
                }
                if !fill.take(offset, chunk.timestamp_ms, payload) {
                    break 'chunks;
                }
                next = offset + 1;
            }
        }
        if fill.messages.is_empty() {
            // The index promised a record at `from` (never a gap, see
            // `fetch`): nothing back means the log did not have it.
            log::error!(
                "a FETCH's read of topic {} returned nothing at offset {}",
                read.topic_id,
                read.from
            );
            let message = "the broker could not read these messages back from its log; retry";
            self.send_error(
                read.conn,
                read.id,
                ErrorCode::StorageUnavailable,
                message,
                out,
            );
            return;
        }
        let end = topic.next_offset();
        let reply = Reply::Fetched(Fetched {
            messages: fill.messages,
            next_offset: next.max(topic.base_offset()).min(end),
            earliest_offset: topic.base_offset().min(end),
            end_offset: end,
        });
        if let Some(buf) = out.buffer(read.conn) {
            codec::encode_reply(buf, read.id, &reply);
        }
    }

    /// Messages of topic `key` held in memory from `from` (raised to the
    /// oldest retained; offsets holding no message are passed), at most
    /// `max_messages` (clamped to 1..=65,536) and `max_bytes` of payload —
    /// but always the first one, so a large message can be read — and as
    /// many as fit one reply frame.
    pub(super) fn read_cached(
        &self,
        key: TopicKey,
        from: u64,
        max_messages: u32,
        max_bytes: usize,
    ) -> Fetched {
        let topic = &self.topics[key];
        let (earliest, end) = (topic.base_offset(), topic.next_offset());
        let mut fill = Filler::new(self.limits.max_frame_bytes, max_messages, max_bytes);
        let mut offset = from.clamp(earliest, end).max(topic.window());
        while offset < end && !fill.full() {
            let Some(payload) = topic.get(offset) else {
                offset = topic.past_gap(offset).max(offset + 1);
                continue;
            };
            if !fill.take(offset, topic.times.time_of(offset), payload) {
                break;
            }
            offset += 1;
        }
        Fetched {
            messages: fill.messages,
            next_offset: offset,
            earliest_offset: earliest.min(end),
            end_offset: end,
        }
    }
}
