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
//! drops them from the back ([`Topic::drop_staged`]).

use super::cost::MESSAGE_SLOT;
use super::keys::SessionKey;
use super::keyset::KeySet;
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

    /// Below this offset every subscriber has acknowledged everything.
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
    /// dropped unseen and their offsets given to the next publish (nobody
    /// saw them, and the log never replays a lost record once it has
    /// written past it).
    pub fn drop_staged(&mut self, count: usize) {
        for _ in 0..count.min(self.staged) {
            if let Some(message) = self.messages.pop_back() {
                self.backlog_bytes -= message.payload.len();
                self.charged -= message.charge;
                self.staged -= 1;
            }
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

    /// The message at `offset`, if still retained.
    pub fn get(&self, offset: u64) -> Option<&Bytes> {
        if offset >= self.next_offset() {
            return None;
        }
        let index = offset.checked_sub(self.base)?;
        self.messages
            .get(usize::try_from(index).ok()?)
            .map(|stored| &stored.payload)
    }

    /// What the retained messages hold now.
    pub fn footprint(&self) -> Footprint {
        Footprint {
            payloads: self.charged,
            slots: self.messages.capacity() * MESSAGE_SLOT,
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
}
