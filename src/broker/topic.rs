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
//! # The memory cache (durable brokers)
//!
//! With a log, memory is only a cache of the newest messages: the queue
//! holds `[window, end_offset)`, and the retained offsets below it,
//! `[base, window)`, are on disk only ([`Topic::evict`] moves visible
//! messages there, oldest first). A cursor is just an offset, so a
//! subscriber behind `window` is served from the log (see
//! `super::disk`). Evicted messages keep no slot each: they are summed in
//! runs ([`Evicted`]: an end offset and the payload bytes below it, up to
//! [`RUN_MESSAGES`] messages or [`RUN_BYTES`] bytes a run), so that the
//! backlog's byte bound still holds on disk. A run partly acknowledged
//! counts whole until its last message is released: `backlog_bytes`
//! errs on the high side by at most one run.
//!
//! Which topic gives up memory when the cache (`--cache-bytes`) is full is
//! the broker's choice (`super::cache`): the topic holding the most cached
//! bytes evicts its oldest visible messages first. The newest messages
//! (what caught-up subscribers are about to read) and small topics stay in
//! memory; one large backlog pays for itself. Staged (not yet durable)
//! messages are never evicted: they are not on disk yet.
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

/// A run of evicted offsets: everything below `end` (from the previous
/// run's end, or the topic's base) and the payload bytes they hold.
#[derive(Debug, Clone, Copy)]
struct Evicted {
    end: u64,
    bytes: usize,
    /// Offsets it was given (some may be released since).
    offsets: u64,
}

/// Most offsets one run of evicted messages sums.
pub const RUN_MESSAGES: u64 = 4096;
/// Most payload bytes one run sums (a run takes at least one message).
pub const RUN_BYTES: usize = 1 << 20;

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
    /// The messages in memory, from offset `window` on.
    messages: VecDeque<Stored>,
    /// The oldest retained offset; `[base, window)` is on disk only.
    base: u64,
    window: u64,
    /// Runs of evicted offsets, oldest first, covering `[base, window)`.
    evicted: VecDeque<Evicted>,
    /// Payload bytes of every retained message, in memory or on disk.
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
            window: 0,
            evicted: VecDeque::new(),
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
        self.window + self.messages.len() as u64
    }

    /// The first offset held in memory: retained offsets below it are on
    /// disk only.
    pub fn window(&self) -> u64 {
        self.window
    }

    /// Whether `offset` is retained, holds a message (not a gap) and is on
    /// disk only.
    pub fn on_disk(&self, offset: u64) -> bool {
        offset >= self.base && offset < self.window && self.past_gap(offset) == offset
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
            // Nothing in memory: the gap joins the disk side (or, with
            // nothing retained at all, is simply passed).
            if self.base == self.window {
                self.base += count;
            }
            self.window += count;
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

    /// Retained offsets, in memory or on disk (gaps included).
    pub fn backlog_messages(&self) -> usize {
        (self.end_offset() - self.base) as usize
    }

    /// Messages held in memory (staged ones included).
    pub fn cached_messages(&self) -> usize {
        self.messages.len()
    }

    pub fn backlog_bytes(&self) -> usize {
        self.backlog_bytes
    }

    /// The message at `offset`, if held in memory (none in a gap, none
    /// on disk only).
    pub fn get(&self, offset: u64) -> Option<&Bytes> {
        if offset >= self.next_offset()
            || (!self.gaps.is_empty() && self.past_gap(offset) != offset)
        {
            return None;
        }
        let index = offset.checked_sub(self.window)?;
        self.messages
            .get(usize::try_from(index).ok()?)
            .map(|stored| &stored.payload)
    }

    /// The payload bytes `offset` holds, as the backlog counts them, and
    /// the offset after them: one message in memory (none for a gap), or,
    /// on disk, the whole evicted run holding `offset` (runs are summed,
    /// not kept per message).
    pub fn step_bytes(&self, offset: u64) -> (u64, usize) {
        if offset < self.window {
            let i = self.evicted.partition_point(|r| r.end <= offset);
            return match self.evicted.get(i) {
                Some(run) => (run.end, run.bytes),
                None => (self.window, 0),
            };
        }
        (offset + 1, self.get(offset).map_or(0, |m| m.len()))
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
        self.backlog_messages().saturating_add(count) <= max_messages
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
        debug_assert!(self.messages.is_empty() && self.base == self.window);
        let offset = self.base;
        self.base += count;
        self.window = self.base;
        offset
    }

    /// Moves the oldest visible messages out of memory (they are durable,
    /// so the log has them) until at least `charge` allocation bytes are
    /// freed or none is left; returns the bytes freed. Their payload bytes
    /// stay in the backlog, summed in runs.
    pub fn evict(&mut self, charge: usize) -> usize {
        let mut freed = 0;
        while freed < charge && self.messages.len() > self.staged {
            let Some(message) = self.messages.pop_front() else {
                break;
            };
            let bytes = message.payload.len();
            freed += message.charge;
            self.charged -= message.charge;
            match self.evicted.back_mut() {
                Some(run) if run.offsets < RUN_MESSAGES && run.bytes < RUN_BYTES => {
                    run.end += 1;
                    run.bytes += bytes;
                    run.offsets += 1;
                }
                _ => self.evicted.push_back(Evicted {
                    end: self.window + 1,
                    bytes,
                    offsets: 1,
                }),
            }
            self.window += 1;
        }
        self.shrink_queue();
        freed
    }

    /// A queue far below its capacity gives the slots back.
    fn shrink_queue(&mut self) {
        let (len, capacity) = (self.messages.len(), self.messages.capacity());
        if capacity > 1024 && len < capacity / 4 {
            self.messages.shrink_to((len * 2).max(64));
        }
    }

    /// Drops every message below `offset`.
    pub fn release_below(&mut self, offset: u64) {
        // The disk side first: whole runs only (see the module doc).
        let on_disk = offset.min(self.window);
        while let Some(run) = self.evicted.front() {
            if run.end > on_disk {
                break;
            }
            self.backlog_bytes -= run.bytes;
            self.evicted.pop_front();
        }
        self.base = self.base.max(on_disk);
        while self.window < offset {
            match self.messages.pop_front() {
                Some(message) => {
                    self.backlog_bytes -= message.payload.len();
                    self.charged -= message.charge;
                    self.window += 1;
                }
                None => {
                    self.window = offset;
                    break;
                }
            }
        }
        self.base = self.base.max(offset);
        while let Some(entry) = self.gaps.first_entry() {
            if *entry.get() > self.base {
                break;
            }
            entry.remove();
        }
        self.times.forget_below(self.base);
        // A drained burst should not pin its peak memory.
        self.shrink_queue();
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
    fn evicted_messages_stay_retained_and_counted_in_runs() {
        let mut topic = Topic::new("t");
        topic.add_cursor(0);
        for i in 0..10_000u64 {
            topic.push(Bytes::from(vec![(i % 251) as u8; 10]), 32);
        }
        topic.stage(100);
        // Everything visible goes; the staged stay (they are not on disk).
        let freed = topic.evict(usize::MAX);
        assert_eq!(freed, 9_900 * 32);
        assert_eq!(topic.window(), 9_900);
        assert_eq!(topic.cached_messages(), 100);
        assert_eq!(topic.backlog_messages(), 10_000);
        assert_eq!(topic.backlog_bytes(), 100_000);
        assert_eq!(topic.footprint().payloads, 100 * 32);
        assert!(topic.get(9_899).is_none() && topic.on_disk(9_899));
        assert!(
            !topic.on_disk(9_900) && topic.get(9_900).is_none(),
            "staged"
        );
        topic.make_visible(100);
        assert_eq!(topic.get(9_900).map(|b| b[0]), Some((9_900 % 251) as u8));
        // No slot per evicted message: runs of RUN_MESSAGES.
        assert_eq!(
            topic.evicted.len(),
            9_900usize.div_ceil(RUN_MESSAGES as usize)
        );
        // A release inside a run keeps the run's bytes until it is passed.
        topic.release_below(100);
        assert_eq!(topic.base_offset(), 100);
        assert_eq!(
            (topic.backlog_messages(), topic.backlog_bytes()),
            (9_900, 100_000)
        );
        topic.release_below(RUN_MESSAGES);
        assert_eq!(topic.backlog_bytes(), 100_000 - RUN_MESSAGES as usize * 10);
        assert!(!topic.on_disk(RUN_MESSAGES - 1));
        // Past the window, memory is released as before.
        topic.release_below(9_950);
        assert_eq!((topic.base_offset(), topic.window()), (9_950, 9_950));
        assert_eq!(topic.backlog_bytes(), 500);
        assert_eq!(topic.footprint().payloads, 50 * 32);
        assert_eq!(topic.evicted.len(), 0);
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
