//! Building a pull reply straight from the topics' retained messages.
//!
//! A pull is planned first (which topics, from which offset, how many
//! messages), then written in one pass: the reply's array headers need the
//! counts up front, and planning against exact encoded sizes is what keeps
//! every reply within `max_frame_bytes`. Each payload is copied once, from
//! where the topic keeps it into the connection's write buffer.

use super::session::{Parked, SessionKey};
use super::topic::TopicKey;
use super::{Broker, ConnId, Outbox};
use crate::codec;
use crate::codec::msgpack;

/// The messages one topic contributes to a pull reply.
#[derive(Debug, Clone, Copy)]
pub(super) struct Group {
    topic: TopicKey,
    subscription: usize,
    from: u64,
    count: u32,
}

impl Broker {
    /// Writes a reply with what `parked` may take now; returns how many
    /// messages it carried (and writes nothing when that is 0).
    pub(super) fn deliver(
        &mut self,
        key: SessionKey,
        parked: &Parked,
        out: &mut dyn Outbox,
    ) -> u32 {
        let frame_bytes = self.plan_pull(key, parked);
        let delivered: u32 = self.plan.iter().map(|g| g.count).sum();
        if delivered > 0 {
            self.write_pull_reply(key, parked.conn, parked.request_id, frame_bytes, out);
        }
        delivered
    }

    /// Fills `self.plan`; returns the encoded size of the reply it describes.
    fn plan_pull(&mut self, key: SessionKey, parked: &Parked) -> usize {
        self.plan.clear();
        let session = &self.sessions[key];
        let subscriptions = session.subscriptions().len();
        let header = codec::messages_header_len(parked.request_id);
        let mut room = self.limits.max_frame_bytes.saturating_sub(header);
        let mut messages_left = parked.max_messages;
        let mut bytes_left = parked.max_bytes as usize;
        let mut first = true;
        'topics: for step in 0..subscriptions {
            let index = (session.turn + step) % subscriptions;
            let sub = session.subscriptions()[index];
            if !parked.covers(sub.topic) {
                continue;
            }
            let Some(topic) = self.topics.get(sub.topic) else {
                continue;
            };
            let mut used = codec::group_header_len(&topic.name, sub.delivered);
            let mut count = 0;
            let mut offset = sub.delivered;
            let mut full = false;
            while messages_left > 0 {
                let Some(message) = topic.get(offset) else {
                    break;
                };
                let cost = msgpack::bin_len(message.len());
                if used + cost > room || (!first && message.len() > bytes_left) {
                    full = true;
                    break;
                }
                used += cost;
                bytes_left = bytes_left.saturating_sub(message.len());
                messages_left -= 1;
                count += 1;
                offset += 1;
                first = false;
            }
            if count > 0 {
                self.plan.push(Group {
                    topic: sub.topic,
                    subscription: index,
                    from: sub.delivered,
                    count,
                });
                room -= used;
            }
            if full || messages_left == 0 {
                break 'topics;
            }
        }
        self.limits.max_frame_bytes - room
    }

    fn write_pull_reply(
        &mut self,
        key: SessionKey,
        conn: ConnId,
        request_id: u64,
        frame_bytes: usize,
        out: &mut dyn Outbox,
    ) {
        let session = &mut self.sessions[key];
        let Some(buf) = out.buffer(conn) else {
            return;
        };
        buf.reserve(frame_bytes);
        let start = codec::write_messages_header(buf, request_id, self.plan.len() as u32);
        for group in &self.plan {
            let Some(topic) = self.topics.get(group.topic) else {
                continue;
            };
            codec::write_group_header(buf, &topic.name, group.from, group.count);
            for offset in group.from..group.from + u64::from(group.count) {
                if let Some(message) = topic.get(offset) {
                    msgpack::write_bin(buf, message);
                    self.counters.bytes_out += message.len() as u64;
                }
            }
            self.counters.messages_out += u64::from(group.count);
            session.subscriptions_mut()[group.subscription].delivered += u64::from(group.count);
        }
        codec::end_frame(buf, start);
        // Topics take turns at being first in an all-topics pull.
        session.turn = (session.turn + 1) % session.subscriptions().len().max(1);
    }
}
