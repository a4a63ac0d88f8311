//! Pulls: answering at once, parking until messages arrive or the wait
//! ends, and building the reply straight from the topics' retained messages.
//!
//! A subscriber may have several pulls waiting, so that while the broker
//! answers one the next is already there (no round trip between two
//! replies). They wait on the session, oldest first, as [`Parked`] entries,
//! at most `max_waiting_pulls` of them (announced in HELLO). The rules:
//! - a new pull joins the back of the queue; the queue is then served
//!   ([`Broker::serve_parked`]): each waiting pull, oldest first, takes what
//!   is ready for it, so a pull never overtakes an older one that could have
//!   taken the same messages, and a burst larger than one pull's bounds is
//!   split over the waiting pulls in order, in the same turn;
//! - a new pull that finds nothing and may not wait (`wait_ms = 0`) is
//!   answered `[]` at once; otherwise it waits with its own deadline;
//! - past `max_waiting_pulls`, the oldest waiting pull is answered `[]` to
//!   make room (it had nothing to take, or serving would have answered it).
//!
//! Every path that ends waits — a deadline, an unsubscribe, a take-over,
//! deletion, END_SESSION, the end of a connection's input, shutdown — goes
//! through [`Broker::end_parked`], which picks the pulls concerned and
//! answers each. The queue is short and bounded, so looking through it is
//! O(1) per request, and a publish costs O(1) per session it wakes.
//!
//! A reply is planned first (which topics, from which offset, how many
//! messages), then written in one pass: the reply's array headers need the
//! counts up front, and planning against exact encoded sizes is what keeps
//! every reply within `max_frame_bytes`. Each payload is copied once, from
//! where the topic keeps it into the connection's write buffer.
//!
//! A subscriber whose cursor retention overtook (`super::retention`) gets
//! its group from the oldest retained offset, with the count it lost as
//! the group's 4th element — even with no message to go with it — so that
//! nothing is dropped silently.
//!
//! An all-topics pull walks the session's ready topics (those with something
//! to deliver, see [`super::waiting`]) once in subscription order, starting
//! at its turn, and the next one starts after the last topic that delivered:
//! idle topics pass their turn to the next busy one, and busy topics
//! alternate. Idle topics are not in that walk at all, so it costs O(log n)
//! plus the topics in the reply, however many the session subscribes to; a
//! one-topic pull looks at its own subscription only.

use super::disk::DiskCursor;
use super::failure::Failure;
use super::keys::{ConnId, SessionKey, TopicKey};
use super::session::{Parked, Subscription};
use super::topic::Topic;
use super::{Broker, Outbox};
use crate::codec;
use crate::codec::msgpack;
use crate::protocol::{ErrorCode, MAX_PULL_MESSAGES, MAX_PULL_WAIT_MS, Pull};
use crate::timers::TimerKey;
use slab::Slab;
use std::time::Instant;

/// How the waiting pulls that [`Broker::end_parked`] ends are answered.
#[derive(Debug, Clone, Copy)]
pub(super) enum Answer<'a> {
    /// `[]`: nothing arrived.
    Empty,
    Error(ErrorCode, &'a str),
    /// No reply: the connection is gone or answers them otherwise.
    Silent,
}

impl Broker {
    pub(super) fn pull(
        &mut self,
        conn: ConnId,
        id: u64,
        request: Pull<'_>,
        now: Instant,
        out: &mut dyn Outbox,
    ) -> Result<(), Failure> {
        let session_key = self.subscriber(conn)?;
        let topic = match request.topic {
            None => None,
            Some(name) => {
                let key = self.topic_key(name)?;
                if self.sessions[session_key].subscription(key).is_none() {
                    return Err(Failure::not_subscribed(name));
                }
                Some(key)
            }
        };
        if request.ack {
            self.ack_delivered(session_key, topic);
        }
        let parked = Parked {
            conn,
            request_id: id,
            topic,
            max_messages: request.max_messages.clamp(1, MAX_PULL_MESSAGES),
            max_bytes: request.max_bytes,
            wait_ms: request.wait_ms.min(MAX_PULL_WAIT_MS),
            timer: None,
        };
        // It joins the queue behind the pulls already waiting, which take
        // what is ready first; with none waiting this is the plain "answer
        // now if something is ready".
        self.sessions[session_key].parked.push_back(parked);
        self.counters.waiting_pulls += 1;
        self.serve_parked(session_key, out);
        // Still there, it found nothing: it waits with its deadline, or is
        // answered `[]` if it may not wait — unless the session waits for
        // a disk read, which it waits behind (see `super::disk`).
        self.arm_unarmed(session_key, now, out);
        // Past the bound, the oldest makes room; it had nothing to take.
        while self.sessions[session_key].parked.len() > self.limits.max_waiting_pulls {
            if let Some(oldest) = self.sessions[session_key].parked.pop_front() {
                self.finish(oldest, Answer::Empty, out);
            }
        }
        Ok(())
    }

    /// Answers the session's waiting pulls, oldest first, with what is ready
    /// for each; those that find nothing keep waiting. O(waiting pulls) plus
    /// the messages delivered.
    pub(super) fn serve_parked(&mut self, key: SessionKey, out: &mut dyn Outbox) {
        let mut index = 0;
        loop {
            let Some(parked) = self.sessions.get(key).and_then(|s| s.parked.get(index)) else {
                return;
            };
            let parked = *parked;
            if self.stalled_topic(key).is_some_and(|t| parked.covers(t)) {
                // Behind a disk read of a topic it covers: it keeps its
                // place, and has no deadline until the read is back (see
                // `super::disk`).
                if let Some(timer) = self
                    .sessions
                    .get_mut(key)
                    .and_then(|s| s.parked.get_mut(index))
                    .and_then(|p| p.timer.take())
                {
                    self.timers.cancel(timer);
                }
                index += 1;
                continue;
            }
            if self.deliver(key, &parked, out) == 0 {
                // If it now waits for a read, the first branch takes it.
                if !self.stalled_topic(key).is_some_and(|t| parked.covers(t)) {
                    index += 1;
                }
                continue;
            }
            if let Some(session) = self.sessions.get_mut(key) {
                session.parked.remove(index);
            }
            // Answered by the delivery.
            self.finish(parked, Answer::Silent, out);
            if self.disk.took_disk && self.defer_disk_serving(key, index) {
                // One slice from the disk per turn: the rest next round.
                return;
            }
        }
    }

    /// Ends the session's waiting pulls that `which` picks, in the order
    /// they came, answering each as `answer` says; the others keep their
    /// places.
    pub(super) fn end_parked(
        &mut self,
        key: SessionKey,
        which: impl Fn(&Parked) -> bool,
        answer: Answer<'_>,
        out: &mut dyn Outbox,
    ) {
        let mut index = 0;
        loop {
            let Some(session) = self.sessions.get_mut(key) else {
                return;
            };
            let Some(&parked) = session.parked.get(index) else {
                return;
            };
            if !which(&parked) {
                index += 1;
                continue;
            }
            session.parked.remove(index);
            self.finish(parked, answer, out);
        }
    }

    /// A pull taken out of its session's queue: it no longer waits, and is
    /// answered as `answer` says.
    pub(super) fn finish(&mut self, parked: Parked, answer: Answer<'_>, out: &mut dyn Outbox) {
        self.counters.waiting_pulls -= 1;
        if let Some(timer) = parked.timer {
            self.timers.cancel(timer);
        }
        match answer {
            Answer::Empty => write_empty_messages(out, parked.conn, parked.request_id),
            Answer::Error(code, message) => {
                self.send_error(parked.conn, parked.request_id, code, message, out);
            }
            Answer::Silent => {}
        }
    }

    /// Every waiting pull of the session, ended.
    pub(super) fn end_all_parked(
        &mut self,
        key: SessionKey,
        answer: Answer<'_>,
        out: &mut dyn Outbox,
    ) {
        self.end_parked(key, |_| true, answer, out);
    }

    /// A pull's deadline came: it alone is answered `[]`.
    pub(super) fn pull_deadline(&mut self, key: SessionKey, timer: TimerKey, out: &mut dyn Outbox) {
        self.end_parked(key, |p| p.timer == Some(timer), Answer::Empty, out);
    }

    /// Answers the parked pulls that publishes made ready during this batch.
    pub fn answer_ready(&mut self, out: &mut dyn Outbox) {
        // Held publishes first, so that pulls get what they admit.
        self.admit_held(out);
        let mut ready = std::mem::take(&mut self.ready);
        for key in ready.drain(..) {
            self.work += 1;
            let Some(session) = self.sessions.get_mut(key) else {
                continue;
            };
            session.queued = false;
            self.serve_parked(key, out);
        }
        self.ready = ready;
    }

    /// Answers every parked pull with SHUTTING_DOWN (which closes its
    /// connection).
    pub fn shutdown(&mut self, out: &mut dyn Outbox) {
        let parked: Vec<SessionKey> = self
            .sessions
            .iter()
            .filter(|(_, s)| !s.parked.is_empty())
            .map(|(key, _)| key)
            .collect();
        self.work += self.sessions.len() as u64;
        for key in parked {
            self.end_all_parked(
                key,
                Answer::Error(ErrorCode::ShuttingDown, "the broker is shutting down"),
                out,
            );
        }
    }
}

/// The messages one topic contributes to a pull reply.
#[derive(Debug, Clone, Copy)]
pub(super) struct Group {
    topic: TopicKey,
    rank: u64,
    from: u64,
    count: u32,
    /// Messages retention dropped between the cursor and `from`.
    lost: u64,
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
        let (frame_bytes, wants_disk, took_disk) = self.plan_pull(key, parked);
        self.disk.took_disk = took_disk;
        // A group that only reports a loss counts as something to answer.
        let delivered: u32 = self
            .plan
            .iter()
            .map(|g| g.count + u32::from(g.lost > 0))
            .sum();
        if delivered > 0 {
            self.write_pull_reply(key, parked, frame_bytes, out);
            self.after_delivery(key);
        }
        if let Some((topic, from)) = wants_disk {
            self.want_disk(key, topic, from, delivered == 0);
        }
        delivered
    }

    /// Fills `self.plan`; returns the encoded size of the reply it
    /// describes, and the first topic it passed over because its next
    /// message is on disk and not in the session's cursor (with that
    /// message's offset).
    fn plan_pull(
        &mut self,
        key: SessionKey,
        parked: &Parked,
    ) -> (usize, Option<(TopicKey, u64)>, bool) {
        self.plan.clear();
        let session = &self.sessions[key];
        let header = codec::messages_header_len(parked.request_id);
        let mut plan = Planner {
            topics: &self.topics,
            cursor: session.disk.as_deref(),
            wants_disk: None,
            disk_room: super::disk::DISK_REPLY_BYTES,
            groups: &mut self.plan,
            room: self.limits.max_frame_bytes.saturating_sub(header),
            messages_left: parked.max_messages,
            bytes_left: parked.max_bytes as usize,
            first: true,
            visited: 0,
        };
        match parked.topic {
            None => {
                for topic in session.ready_from(session.turn) {
                    let Some(sub) = session.subscription(topic) else {
                        continue;
                    };
                    if !plan.take(sub) {
                        break;
                    }
                }
            }
            Some(topic) => {
                if let Some(sub) = session.subscription(topic) {
                    plan.take(sub);
                }
            }
        }
        let (room, visited, wants_disk) = (plan.room, plan.visited, plan.wants_disk);
        let took_disk = plan.disk_room < super::disk::DISK_REPLY_BYTES;
        self.work += visited;
        (self.limits.max_frame_bytes - room, wants_disk, took_disk)
    }

    fn write_pull_reply(
        &mut self,
        key: SessionKey,
        parked: &Parked,
        frame_bytes: usize,
        out: &mut dyn Outbox,
    ) {
        let Some(buf) = out.buffer(parked.conn) else {
            return;
        };
        let cursor = self.sessions.get(key).and_then(|s| s.disk.as_deref());
        buf.reserve(frame_bytes);
        let start = codec::write_messages_header(buf, parked.request_id, self.plan.len() as u32);
        for group in &self.plan {
            let Some(topic) = self.topics.get(group.topic) else {
                continue;
            };
            if group.lost > 0 {
                codec::write_lost_group_header(buf, &topic.name, group.from, group.count);
            } else {
                codec::write_group_header(buf, &topic.name, group.from, group.count);
            }
            for offset in group.from..group.from + u64::from(group.count) {
                if let Some(message) = message_at(topic, group.topic, cursor, offset) {
                    msgpack::write_bin(buf, message);
                    self.counters.bytes_out += message.len() as u64;
                }
            }
            if group.lost > 0 {
                codec::write_lost(buf, group.lost);
            }
            self.counters.messages_out += u64::from(group.count);
        }
        codec::end_frame(buf, start);
        let plan = std::mem::take(&mut self.plan);
        for group in &plan {
            self.record_delivery(key, group.topic, u64::from(group.count) + group.lost);
        }
        // Topics take turns at being first in an all-topics pull: the next
        // one starts after the last topic that delivered, so the turn of an
        // idle topic passes to the next busy one instead of falling back to
        // whichever busy topic the walk wraps round to.
        if parked.topic.is_none()
            && let Some(last) = plan.last()
        {
            self.sessions[key].turn = last.rank + 1;
        }
        self.plan = plan;
    }
}

/// One reply being planned: what is left of its bounds, and the groups so
/// far.
struct Planner<'a> {
    topics: &'a Slab<Topic>,
    /// Messages the session has read back from the log.
    cursor: Option<&'a DiskCursor>,
    /// The first topic passed over for a disk read, and from where.
    wants_disk: Option<(TopicKey, u64)>,
    /// Payload bytes the reply may still take from the cursor.
    disk_room: usize,
    groups: &'a mut Vec<Group>,
    room: usize,
    messages_left: u32,
    bytes_left: usize,
    /// No message taken yet: the first one goes even if larger than
    /// `max_bytes`, or a large message could never be pulled.
    first: bool,
    /// Subscriptions looked at, for the broker's `work` count.
    visited: u64,
}

impl Planner<'_> {
    /// Takes what fits from `sub`'s topic; false once the reply is full.
    fn take(&mut self, sub: &Subscription) -> bool {
        self.visited += 1;
        let Some(topic) = self.topics.get(sub.topic) else {
            return true;
        };
        // Retention may have dropped what the cursor points at: delivery
        // resumes at the oldest retained offset, and says what was lost.
        let from = sub
            .delivered
            .max(topic.base_offset().min(topic.next_offset()));
        let lost = from - sub.delivered;
        let mut used = codec::group_header_len(&topic.name, from) + msgpack::u64_len(lost);
        let mut count = 0;
        let mut offset = from;
        let mut full = false;
        while self.messages_left > 0 {
            let Some(message) = message_at(topic, sub.topic, self.cursor, offset) else {
                if topic.on_disk(offset) {
                    self.wants_disk.get_or_insert((sub.topic, offset));
                }
                break;
            };
            let cost = msgpack::bin_len(message.len());
            let from_disk = offset < topic.window();
            if used + cost > self.room
                || (!self.first && message.len() > self.bytes_left)
                || (!self.first && from_disk && message.len() > self.disk_room)
            {
                full = true;
                break;
            }
            if from_disk {
                self.disk_room = self.disk_room.saturating_sub(message.len());
            }
            used += cost;
            self.bytes_left = self.bytes_left.saturating_sub(message.len());
            self.messages_left -= 1;
            count += 1;
            offset += 1;
            self.first = false;
        }
        if count > 0 || (lost > 0 && used <= self.room) {
            self.groups.push(Group {
                topic: sub.topic,
                rank: sub.rank,
                from,
                count,
                lost,
            });
            self.room -= used;
        }
        !(full || self.messages_left == 0)
    }
}

/// The message at `offset` of `topic` (key `key`): in memory, or for an
/// offset below the memory window, in the session's cursor.
fn message_at<'a>(
    topic: &'a Topic,
    key: TopicKey,
    cursor: Option<&'a DiskCursor>,
    offset: u64,
) -> Option<&'a bytes::Bytes> {
    if offset < topic.window() {
        cursor?.get(key, topic.id, offset)
    } else {
        topic.get(offset)
    }
}

fn write_empty_messages(out: &mut dyn Outbox, conn: ConnId, id: u64) {
    if let Some(buf) = out.buffer(conn) {
        let start = codec::write_messages_header(buf, id, 0);
        codec::end_frame(buf, start);
    }
}
