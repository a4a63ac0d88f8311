//! FETCH: reading a topic without a session — for inspection and tools.
//!
//! It creates no cursor and holds nothing back: what it reads is whatever
//! the topic still retains, and retention or acknowledgements may drop it
//! the next moment. Every read goes through [`Broker::read_range`], the one
//! place that turns (topic, offset, bounds) into messages with their append
//! times, so that a disk-backed backlog has one function to serve.

use super::Broker;
use super::failure::Failure;
use super::keys::TopicKey;
use crate::codec::{FETCHED_OVERHEAD, fetched_message_bound};
use crate::protocol::{Fetched, FetchedMessage, MAX_PULL_MESSAGES};

impl Broker {
    /// FETCH `[17, id, topic, offset, max_messages, max_bytes]`.
    pub(super) fn fetch(
        &self,
        name: &str,
        offset: u64,
        max_messages: u32,
        max_bytes: u32,
    ) -> Result<Fetched, Failure> {
        let key = self.topic_key(name)?;
        Ok(self.read_range(key, offset, max_messages, max_bytes as usize))
    }

    /// Messages of topic `key` from `from` (raised to the oldest retained;
    /// offsets holding no message are passed), at most `max_messages`
    /// (clamped to 1..=65,536) and `max_bytes` of payload — but always the
    /// first one, so a large message can be read — and as many as fit one
    /// reply frame.
    pub(super) fn read_range(
        &self,
        key: TopicKey,
        from: u64,
        max_messages: u32,
        max_bytes: usize,
    ) -> Fetched {
        let topic = &self.topics[key];
        let (earliest, end) = (topic.base_offset(), topic.next_offset());
        let mut room = self.limits.max_frame_bytes.saturating_sub(FETCHED_OVERHEAD);
        let mut bytes_left = max_bytes;
        let mut messages = Vec::new();
        let mut offset = from.clamp(earliest, end);
        let max_messages = max_messages.clamp(1, MAX_PULL_MESSAGES) as usize;
        while offset < end && messages.len() < max_messages {
            let Some(payload) = topic.get(offset) else {
                offset = topic.past_gap(offset).max(offset + 1);
                continue;
            };
            let cost = fetched_message_bound(payload.len());
            let first = messages.is_empty();
            if cost > room || (!first && payload.len() > bytes_left) {
                break;
            }
            room -= cost;
            bytes_left = bytes_left.saturating_sub(payload.len());
            messages.push(FetchedMessage {
                offset,
                time_ms: topic.times.time_of(offset),
                payload: payload.clone(),
            });
            offset += 1;
        }
        Fetched {
            messages,
            next_offset: offset,
            earliest_offset: earliest.min(end),
            end_offset: end,
        }
    }
}
