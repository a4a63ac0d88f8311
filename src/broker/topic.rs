//! One topic: its retained messages, addressed by offset, and its subscribers.
//!
//! Messages are kept in a `VecDeque<Bytes>` that starts at offset `base`, so
//! offset `o` lives at index `o - base` and the next message gets
//! `base + len`. A message is dropped from the front once every subscriber has
//! acknowledged it, so memory follows the slowest subscriber. This offset
//! addressing is what a per-topic append-only log will use later: a cursor is
//! just an offset, whether the message is in memory or on disk.
//!
//! Each retained message costs one queue slot ([`Stored`]: a `Bytes` handle
//! and the payload bytes charged to it) beyond its payload. Payloads that
//! arrived in one batch share one allocation, charged to the batch's last
//! message, so that the charge is given back when the block is really freed
//! (see `super::cost`). [`Topic::footprint`] is what the topic holds, which
//! the broker keeps counted in its memory budget.
//!
//! Its subscribers are kept twice: all of them, and those that have been
//! delivered everything (`waiting`), which are the only ones a publish has
//! to tell (see [`super::waiting`]). Both are [`KeySet`]s, so a subscriber
//! joins or leaves in O(1) however many others there are.
//!
//! With a durable log, the newest messages may be stored but not yet
//! durable: they are `staged` at the back of the queue, counted and charged
//! like the others but invisible — [`Topic::next_offset`] (what pulls,
//! subscriptions and the waiting indexes see) stops before them, and
//! [`Topic::end_offset`] is where the next publish goes. A durable report
//! makes them visible from the front ([`Topic::make_visible`]); a lost write
//! turns them into a **gap** ([`Topic::lose_staged`]).
//!
//! A gap is a run of offsets that hold no message: a lost write's (its
//! offsets are never given to another message, so an offset always names
//! one message or none), or offsets recovery found missing from the log.
//! Their queue slots stay, with empty payloads and no charge, so offset
//! addressing stays `o - base`; `gaps` lists the runs, [`Topic::get`]
//! returns nothing for them, and a subscriber's delivery passes over them
//! ([`Topic::past_gap`]).
//!
//! A topic's [`Retention`] decides how far it may forget (see
//! `super::retention`, which computes that floor and keeps `times`, the
//! broker's append time of each batch); this file only stores messages.

use super::cost::MESSAGE_SLOT;
use super::keys::SessionKey;
use super::keyset::KeySet;
use super::retention::Times;
use crate::protocol::Retention;
use crate::timers::TimerKey;
use bytes::Bytes;
use std::collections::{BTreeMap, VecDeque};

/// One retained message: its payload and the allocation bytes charged to
/// it (the whole block for a batch's last message, 0 for the others).
#[derive(Debug)]
pub struct Stored {
    payload: Bytes,
    charge: usize,
}

/// What a topic's retained messages hold, in budget bytes, by class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Footprint {
    /// Payload allocations.
    pub payloads: usize,
    /// Queue slots, at the queue's capacity.
    pub slots: usize,
}

#[derive(Debug)]
pub struct Topic {
    pub name: Box<str>,
    /// The durable topic id: assigned once, never reused (0 when the broker
    /// keeps no log).
    pub id: u64,
    /// Messages at the back of the queue not yet durable, so not visible.
    staged: usize,
    messages: VecDeque<Stored>,
    base: u64,
    backlog_bytes: usize,
    /// The sum of the retained messages' charges.
    charged: usize,
    /// Sessions subscribed to this topic (each session also lists the topic).
    pub subscribers: KeySet<SessionKey>,
    /// The subscribers delivered up to `next_offset`, whom the next publish
    /// makes ready; the others already know they are behind.
    pub waiting: KeySet<SessionKey>,
    /// How many subscribers have acknowledged up to each offset. The first
    /// key is how far the topic may forget, found in O(log n) however many
    /// subscribers there are.
    acked: BTreeMap<u64, u32>,
    /// Runs of offsets that hold no message: start → end (exclusive).
    gaps: BTreeMap<u64, u64>,
    /// Until-acked, or kept by age and size whoever acknowledged.
    pub retention: Retention,
    /// The append time of each batch still retained.
    pub times: Times,
    /// The deadline at which the oldest message leaves by age, if armed.
    pub retention_timer: Option<TimerKey>,
}

impl Topic {
    pub fn new(name: &str) -> Self {
        Topic {
            name: name.into(),
            id: 0,
            staged: 0,
            messages: VecDeque::new(),
            base: 0,
            backlog_bytes: 0,
            charged: 0,
            subscribers: KeySet::default(),
            waiting: KeySet::default(),
            acked: BTreeMap::new(),
            gaps: BTreeMap::new(),
            retention: Retention::UntilAcked,
            times: Times::default(),
            retention_timer: None,
        }
    }

    /// A subscriber's acknowledged offset starts at `offset`.
    pub fn add_cursor(&mut self, offset: u64) {
        *self.acked.entry(offset).or_default() += 1;
    }

    /// A subscriber whose acknowledged offset was `offset` leaves.
    pub fn remove_cursor(&mut self, offset: u64) {
        if let Some(count) = self.acked.get_mut(&offset) {
            *count -= 1;
            if *count == 0 {
                self.acked.remove(&offset);
            }
        }
    }

    /// A subscriber acknowledged from `from` up to `to`.
    pub fn move_cursor(&mut self, from: u64, to: u64) {
        self.remove_cursor(from);
        self.add_cursor(to);
    }

    /// Below this offset every subscriber has acknowledged everything (an
    /// until-acked topic forgets below it; a retained one uses
    /// `super::retention`'s floor instead).
    pub fn floor(&self) -> u64 {
        self.acked
            .keys()
            .next()
            .copied()
            .unwrap_or_else(|| self.next_offset())
    }

    /// The end of what readers see: every message below it is durable (or
    /// the broker keeps no log).
    pub fn next_offset(&self) -> u64 {
        self.end_offset() - self.staged as u64
    }

    /// The offset the next published message will get.
    pub fn end_offset(&self) -> u64 {
        self.base + self.messages.len() as u64
    }

    /// The last `count` messages pushed wait for the log before readers
    /// see them.
    pub fn stage(&mut self, count: usize) {
        self.staged += count;
    }

    /// The oldest `count` staged messages are durable: readers see them.
    pub fn make_visible(&mut self, count: usize) {
        self.staged = self.staged.saturating_sub(count);
    }

    /// The newest `count` staged messages were lost by the log: they are
    /// dropped unseen and their offsets become a gap, never given to
    /// another message.
    pub fn lose_staged(&mut self, count: usize) {
        let count = count.min(self.staged);
        for _ in 0..count {
            if let Some(message) = self.messages.pop_back() {
                self.backlog_bytes -= message.payload.len();
                self.charged -= message.charge;
                self.staged -= 1;
            }
        }
        // A loss takes every record from some point on, and every record
        // before it was reported durable first, so no staged message is
        // left. Were one left, the gap would sit after it: it stays staged
        // (unseen) rather than shown out of order.
        let left = self.staged;
        self.push_gap(count as u64);
        if left > 0 {
            self.staged += count;
        }
    }

    /// Appends `count` offsets that hold no message.
    pub fn push_gap(&mut self, count: u64) {
        if count == 0 {
            return;
        }
        let start = self.end_offset();
        if self.messages.is_empty() && self.staged == 0 {
            self.base += count;
        } else {
            for _ in 0..count {
                self.messages.push_back(Stored {
                    payload: Bytes::new(),
                    charge: 0,
                });
            }
        }
        let end = start + count;
        // Joined to a gap that ends where this one starts.
        let start = match self.gaps.range(..start).next_back() {
            Some((&s, &e)) if e == start => s,
            _ => start,
        };
        self.gaps.insert(start, end);
    }

    /// `offset`, or the end of the gap it falls in.
    pub fn past_gap(&self, offset: u64) -> u64 {
        match self.gaps.range(..=offset).next_back() {
            Some((_, &end)) if offset < end => end,
            _ => offset,
        }
    }

    /// The oldest offset still retained (equal to `next_offset` when empty).
    pub fn base_offset(&self) -> u64 {
        self.base
    }

    pub fn backlog_messages(&self) -> usize {
        self.messages.len()
    }

    pub fn backlog_bytes(&self) -> usize {
        self.backlog_bytes
    }

    /// The message at `offset`, if still retained (none in a gap).
    pub fn get(&self, offset: u64) -> Option<&Bytes> {
        if offset >= self.next_offset()
            || (!self.gaps.is_empty() && self.past_gap(offset) != offset)
        {
            return None;
        }
        let index = offset.checked_sub(self.base)?;
        self.messages
            .get(usize::try_from(index).ok()?)
            .map(|stored| &stored.payload)
    }

    /// What the retained messages hold now (their append times with the
    /// slots).
    pub fn footprint(&self) -> Footprint {
        Footprint {
            payloads: self.charged,
            slots: self.messages.capacity() * MESSAGE_SLOT + self.times.footprint(),
        }
    }

    /// The queue capacity that `count` more messages need: the current one
    /// if they fit, else doubled (or just enough, if more).
    fn capacity_for(&self, count: usize) -> usize {
        let (len, capacity) = (self.messages.len(), self.messages.capacity());
        let needed = len.saturating_add(count);
        if needed <= capacity {
            capacity
        } else {
            needed.max(capacity.saturating_mul(2)).max(4)
        }
    }

    /// Slot bytes that storing `count` more messages adds, as
    /// [`Topic::make_room`] will grow the queue.
    pub fn growth_for(&self, count: usize) -> usize {
        (self.capacity_for(count) - self.messages.capacity()) * MESSAGE_SLOT
    }

    /// Grows the queue for `count` more messages, as
    /// [`Topic::growth_for`] predicted.
    pub fn make_room(&mut self, count: usize) {
        let capacity = self.capacity_for(count);
        if capacity > self.messages.capacity() {
            self.messages.reserve_exact(capacity - self.messages.len());
        }
    }

    /// Whether `count` more messages of `bytes` payload bytes fit the bounds.
    pub fn has_room(
        &self,
        count: usize,
        bytes: usize,
        max_messages: usize,
        max_bytes: usize,
    ) -> bool {
        self.messages.len().saturating_add(count) <= max_messages
            && self.backlog_bytes.saturating_add(bytes) <= max_bytes
    }

    /// Appends a message, charged `charge` allocation bytes, and returns
    /// its offset.
    pub fn push(&mut self, payload: Bytes, charge: usize) -> u64 {
        let offset = self.end_offset();
        self.backlog_bytes += payload.len();
        self.charged += charge;
        self.messages.push_back(Stored { payload, charge });
        offset
    }

    /// Gives an offset to a message that nobody will read (no subscribers).
    pub fn skip(&mut self, count: u64) -> u64 {
        debug_assert!(self.messages.is_empty());
        let offset = self.base;
        self.base += count;
        offset
    }

    /// Drops every message below `offset`.
    pub fn release_below(&mut self, offset: u64) {
        while self.base < offset {
            match self.messages.pop_front() {
                Some(message) => {
                    self.backlog_bytes -= message.payload.len();
                    self.charged -= message.charge;
                    self.base += 1;
                }
                None => {
                    self.base = offset;
                    break;
                }
            }
        }
        while let Some(entry) = self.gaps.first_entry() {
            if *entry.get() > self.base {
                break;
            }
            entry.remove();
        }
        self.times.forget_below(self.base);
        if self.messages.is_empty() && self.messages.capacity() > 1024 {
            // A drained burst should not pin its peak memory.
            self.messages.shrink_to(64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_survive_release_from_the_front() {
        let mut topic = Topic::new("t");
        for i in 0..5u8 {
            assert_eq!(topic.push(Bytes::from(vec![i; 10]), 0), u64::from(i));
        }
        assert_eq!(topic.backlog_bytes(), 50);
        topic.release_below(3);
        assert_eq!(topic.base_offset(), 3);
        assert_eq!(topic.get(2), None);
        assert_eq!(topic.get(3).map(|b| b[0]), Some(3));
        assert_eq!(topic.backlog_bytes(), 20);
        assert_eq!(topic.next_offset(), 5);
        topic.release_below(5);
        assert_eq!(topic.backlog_messages(), 0);
        assert_eq!(topic.skip(2), 5);
        assert_eq!(topic.next_offset(), 7);
    }

    #[test]
    fn the_floor_is_the_slowest_acknowledgement() {
        let mut topic = Topic::new("t");
        for _ in 0..4 {
            topic.push(Bytes::from_static(b"x"), 0);
        }
        assert_eq!(topic.floor(), 4);
        topic.add_cursor(1);
        topic.add_cursor(1);
        topic.add_cursor(3);
        assert_eq!(topic.floor(), 1);
        topic.move_cursor(1, 2);
        assert_eq!(topic.floor(), 1);
        topic.move_cursor(1, 4);
        assert_eq!(topic.floor(), 2);
        topic.remove_cursor(2);
        assert_eq!(topic.floor(), 3);
    }

    #[test]
    fn the_queue_grows_as_predicted_and_charges_follow_release() {
        let mut topic = Topic::new("t");
        for round in 0..20 {
            let count = 1 + round * 37;
            let predicted = topic.growth_for(count);
            let before = topic.footprint().slots;
            topic.make_room(count);
            assert_eq!(topic.footprint().slots - before, predicted, "round {round}");
            for i in 0..count {
                topic.push(Bytes::from_static(b"p"), usize::from(i + 1 == count) * 48);
            }
        }
        assert_eq!(topic.footprint().payloads, 20 * 48);
        topic.release_below(topic.next_offset() - 1);
        assert_eq!(topic.footprint().payloads, 48);
        topic.release_below(topic.next_offset());
        assert_eq!(topic.footprint().payloads, 0);
        assert!(topic.footprint().slots <= 64 * MESSAGE_SLOT);
    }

    #[test]
    fn room_is_checked_against_both_bounds() {
        let mut topic = Topic::new("t");
        topic.push(Bytes::from_static(b"12345"), 0);
        assert!(topic.has_room(1, 5, 2, 10));
        assert!(!topic.has_room(1, 6, 2, 10));
        assert!(!topic.has_room(2, 1, 2, 10));
    }

    #[test]
    fn lost_messages_leave_a_gap_that_reads_and_deliveries_pass() {
        let mut topic = Topic::new("t");
        topic.add_cursor(0);
        for i in 0..5u8 {
            topic.push(Bytes::from(vec![i]), 1);
        }
        topic.stage(2);
        assert_eq!(topic.next_offset(), 3);
        topic.lose_staged(2);
        // The lost offsets are seen past, hold nothing, and are not reused.
        assert_eq!((topic.next_offset(), topic.end_offset()), (5, 5));
        assert_eq!(topic.backlog_bytes(), 3);
        assert!(topic.get(3).is_none() && topic.get(4).is_none());
        assert_eq!(topic.get(2).map(|b| b[0]), Some(2));
        assert_eq!(
            (topic.past_gap(3), topic.past_gap(4), topic.past_gap(2)),
            (5, 5, 2)
        );
        assert_eq!(topic.push(Bytes::from_static(b"x"), 1), 5);
        topic.release_below(5);
        assert_eq!(topic.past_gap(3), 3, "released gaps are forgotten");
    }
}
