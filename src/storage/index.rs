//! Where each topic's messages sit in the log, sparsely: one entry per
//! **span** — consecutive records of one topic in one segment, at most
//! [`SPAN_BYTES`] of log from the first record's start to the last one's
//! end — and the spans covering a range ([`Index::extents`]), which the disk
//! read path plans its reads with.
//!
//! Why sparse: one entry per `Messages` record made the index grow with the
//! number of publishes (single 128 B publishes cost more index than
//! payload), in memory, while the backlog itself is bounded only by disk.
//! A span costs one entry per 64 KiB of log at most per topic, whatever the
//! records in it: a single topic costs 16 entries per MiB of log. Records of
//! other topics interleave in the broker-wide log, so a span means "from
//! this record on, scan forward for this topic's records, up to here": the
//! reader walks every frame of the span's bytes (checksum and consecutive
//! sequence numbers) and takes only this topic's `Messages` records. The
//! cost of that walk is bounded: a span's bytes are at most
//! [`SPAN_BYTES`] (or one record, when that record alone is larger), so a
//! read passes over less than [`SPAN_BYTES`] of other records per span, plus
//! the part of its first span below the offset it starts from. The worst
//! case for memory is many topics interleaving record by record: then a span
//! holds one record, as the dense index did, at 56 bytes an entry.
//!
//! Per topic, the spans are a `VecDeque` in offset order (a topic's offsets
//! only grow, and its records are appended in order), so a lookup is a
//! binary search, a release of old segments pops from the front and a loss
//! (always the newest records) from the back. Spans go when their segment is
//! deleted, their topic is, or their records are reported lost; a span that
//! a loss cuts through is shortened to what was kept.
//!
//! [`Index::footprint`] is what the index holds in memory, counted by the
//! broker in its budget (`log_index`).

use super::record::TopicId;
use std::collections::{HashMap, VecDeque};
use std::mem::size_of;

/// Most bytes of log a span covers (unless its one record is larger): the
/// bound on what a read passes over per span, and the index's grain.
pub const SPAN_BYTES: u64 = 64 << 10;

/// Where a record starts: its segment (named by its first sequence number)
/// and byte offset there, with the record's own sequence number so a read
/// can check it found the right one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Location {
    pub segment: u64,
    pub offset: u64,
    pub seq: u64,
}

/// One span a range read goes through: it starts with a `Messages` record
/// of the topic at `at` holding `first_offset`, and its `len` bytes hold
/// every record of the topic with offsets up to `end_offset` (exclusive)
/// from there on, within one segment, other records between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub at: Location,
    pub len: u64,
    pub first_offset: u64,
    /// One past the last offset the span's records hold; after a loss cut
    /// the span short it may be higher (those offsets are a gap).
    pub end_offset: u64,
    /// A loss cut the span short: `end_offset` is only an upper bound, so
    /// a plan does not count its messages against its bound (it may hold
    /// none from where a read starts).
    pub cut: bool,
}

impl Extent {
    fn end(&self) -> u64 {
        self.at.offset + self.len
    }
}

/// The index; see the module doc.
#[derive(Debug, Default)]
pub struct Index {
    topics: HashMap<TopicId, VecDeque<Extent>>,
}

impl Index {
    /// Notes a `Messages` record of `count` payloads from `first_offset`,
    /// whose frame of `len` bytes starts at `at`: it joins the topic's last
    /// span if that is in the same segment and stays within [`SPAN_BYTES`],
    /// or starts a new one.
    pub fn insert(
        &mut self,
        topic: TopicId,
        first_offset: u64,
        count: u64,
        at: Location,
        len: u64,
    ) {
        if count == 0 {
            return;
        }
        let spans = self.topics.entry(topic).or_default();
        // A topic's offsets only grow; a record going back (the broker
        // never writes one) replaces the spans it would overlap, so the
        // spans stay in order and apart.
        while spans.back().is_some_and(|s| s.end_offset > first_offset) {
            spans.pop_back();
        }
        if let Some(last) = spans.back_mut()
            && last.at.segment == at.segment
            && at.offset >= last.end()
            && at.offset + len - last.at.offset <= SPAN_BYTES
        {
            last.len = at.offset + len - last.at.offset;
            last.end_offset = first_offset + count;
            return;
        }
        spans.push_back(Extent {
            at,
            len,
            first_offset,
            end_offset: first_offset + count,
            cut: false,
        });
    }

    /// The spans holding `topic`'s offsets from `from` up to `end`
    /// (exclusive), in order, until they may hold `max_messages` messages
    /// from `from` on or their bytes reach `max_bytes` (at least one span).
    /// Offsets no record holds (gaps) are simply not covered. This is the
    /// one planning function of the read path.
    pub fn extents(
        &self,
        topic: TopicId,
        from: u64,
        end: u64,
        max_messages: u64,
        max_bytes: u64,
    ) -> Vec<Extent> {
        let mut out = Vec::new();
        let Some(spans) = self.topics.get(&topic) else {
            return out;
        };
        let first = spans.partition_point(|s| s.end_offset <= from);
        let (mut messages, mut bytes) = (0, 0);
        for s in spans.range(first..) {
            if s.first_offset >= end
                || messages >= max_messages
                || (bytes >= max_bytes && !out.is_empty())
            {
                break;
            }
            if !s.cut {
                messages += s.end_offset.min(end) - s.first_offset.max(from);
            }
            bytes += s.len;
            out.push(*s);
        }
        out
    }

    /// The start of the span holding `offset` of `topic`: the record there
    /// has the span's first offset, and the record holding `offset` is at
    /// or after it (its sequence number is a lower bound, which is what
    /// release needs).
    pub fn locate(&self, topic: TopicId, offset: u64) -> Option<Location> {
        let spans = self.topics.get(&topic)?;
        let i = spans.partition_point(|s| s.end_offset <= offset);
        let s = spans.get(i)?;
        (s.first_offset <= offset).then_some(s.at)
    }

    /// Forgets a topic (it was deleted).
    pub fn remove_topic(&mut self, topic: TopicId) {
        self.topics.remove(&topic);
    }

    /// Forgets the spans below sequence number `seq`: the segments holding
    /// them were deleted (spans never cross segments, and segments go
    /// oldest first, so these are the front of each topic's spans).
    pub fn remove_below(&mut self, seq: u64) {
        for spans in self.topics.values_mut() {
            while spans.front().is_some_and(|s| s.at.seq < seq) {
                spans.pop_front();
            }
            // Follow the log down, not only up (the budget counts capacity).
            if spans.capacity() > 4 * spans.len().max(4) {
                spans.shrink_to(2 * spans.len());
            }
        }
        self.topics.retain(|_, s| !s.is_empty());
    }

    /// Forgets the records from sequence number `seq` on (they were lost).
    /// `cut`: where the record `seq` started (segment, byte offset), if
    /// known; a span running past it is cut back there. Not known, a span
    /// in the cut's segment that may hold a lost record goes whole: reads
    /// of what it held then fail, rather than read past the cut.
    pub fn remove_from(&mut self, seq: u64, cut: Option<(u64, u64)>, segment_of_seq: u64) {
        for spans in self.topics.values_mut() {
            // A span past the cut (by seq, or by byte when the cut is only
            // known to lie at or before record `seq`) goes whole.
            let past = |s: &Extent| {
                s.at.seq >= seq
                    || match cut {
                        Some((segment, offset)) => s.at.segment == segment && s.at.offset >= offset,
                        None => s.at.segment == segment_of_seq,
                    }
            };
            while spans.back().is_some_and(past) {
                spans.pop_back();
            }
            if let (Some(last), Some((segment, offset))) = (spans.back_mut(), cut)
                && last.at.segment == segment
                && last.end() > offset
            {
                last.len = offset - last.at.offset;
                last.cut = true;
            }
        }
        self.topics.retain(|_, s| !s.is_empty());
    }

    /// The number of spans indexed, for stats and tests.
    pub fn spans(&self) -> usize {
        self.topics.values().map(VecDeque::len).sum()
    }

    /// Bytes the index holds in memory: each topic's spans at their
    /// capacity (with the allocation's header), and the topic table at its
    /// capacity (a bucket is the pair and a control byte).
    pub fn footprint(&self) -> usize {
        const ALLOCATION_HEADER: usize = 16;
        let spans: usize = self
            .topics
            .values()
            .map(|s| s.capacity() * size_of::<Extent>() + ALLOCATION_HEADER)
            .sum();
        let table = self.topics.capacity() * (size_of::<(TopicId, VecDeque<Extent>)>() + 1);
        spans + table
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record of `len` bytes at byte `offset` of `segment`, seq `seq`.
    fn at(segment: u64, offset: u64, seq: u64) -> Location {
        Location {
            segment,
            offset,
            seq,
        }
    }

    fn firsts(v: &[Extent]) -> Vec<u64> {
        v.iter().map(|e| e.first_offset).collect()
    }

    #[test]
    fn records_of_a_topic_close_together_share_a_span() {
        let mut index = Index::default();
        // Topic 7 and 8 interleave, 100-byte records.
        for i in 0..10u64 {
            let topic = 7 + i % 2;
            index.insert(topic, i / 2 * 3, 3, at(1, 32 + i * 100, 1 + i), 100);
        }
        assert_eq!(index.spans(), 2);
        let spans = index.extents(7, 0, 100, 100, 1 << 20);
        assert_eq!(spans.len(), 1);
        assert_eq!(spans[0].at, at(1, 32, 1));
        // From the first of 7's records to the end of its last (the 9th).
        assert_eq!(spans[0].len, 900);
        assert_eq!((spans[0].first_offset, spans[0].end_offset), (0, 15));
        assert_eq!(index.locate(8, 14), Some(at(1, 132, 2)));
        assert_eq!(index.locate(8, 15), None);
        assert_eq!(index.locate(9, 0), None);
    }

    #[test]
    fn a_span_ends_at_its_byte_bound_and_at_a_segment_change() {
        let mut index = Index::default();
        let record = 1000;
        let per_span = SPAN_BYTES / record;
        let mut seq = 1;
        for i in 0..3 * per_span {
            index.insert(7, i, 1, at(1, 32 + i * record, seq), record);
            seq += 1;
        }
        assert_eq!(index.spans(), 3);
        // The next segment starts a span, however little the last holds.
        index.insert(7, 3 * per_span, 1, at(seq, 32, seq), record);
        assert_eq!(index.spans(), 4);
        let all = index.extents(7, 0, u64::MAX, u64::MAX, u64::MAX);
        assert_eq!(firsts(&all), vec![0, per_span, 2 * per_span, 3 * per_span]);
        assert!(all.iter().all(|s| s.len <= SPAN_BYTES));
        // A record larger than the bound is a span of its own.
        index.insert(
            7,
            3 * per_span + 1,
            1,
            at(seq, 32 + record, seq + 1),
            1 << 20,
        );
        assert_eq!(index.spans(), 5);
    }

    #[test]
    fn plans_stop_at_the_bounds_and_the_end_and_skip_gaps() {
        let mut index = Index::default();
        index.insert(7, 0, 3, at(1, 32, 1), 50);
        // A segment change, and a gap at offsets 3 and 4.
        index.insert(7, 5, 2, at(2, 32, 2), 40);
        index.insert(7, 7, 2, at(3, 32, 3), 40);
        assert_eq!(index.locate(7, 2), Some(at(1, 32, 1)));
        assert_eq!(index.locate(7, 3), None);
        assert_eq!(index.locate(7, 6), Some(at(2, 32, 2)));
        assert_eq!(firsts(&index.extents(7, 1, 10, 100, 1000)), vec![0, 5, 7]);
        assert_eq!(firsts(&index.extents(7, 3, 10, 100, 1000)), vec![5, 7]);
        assert_eq!(firsts(&index.extents(7, 0, 5, 100, 1000)), vec![0]);
        assert_eq!(firsts(&index.extents(7, 0, 10, 3, 1000)), vec![0]);
        assert_eq!(firsts(&index.extents(7, 0, 10, 100, 1)), vec![0]);
        assert_eq!(
            firsts(&index.extents(7, 9, 10, 100, 1000)),
            Vec::<u64>::new()
        );
    }

    #[test]
    fn deleted_segments_and_topics_take_their_spans() {
        let mut index = Index::default();
        index.insert(7, 0, 1, at(1, 32, 1), 50);
        index.insert(8, 0, 1, at(1, 82, 2), 50);
        index.insert(7, 1, 1, at(3, 32, 3), 50);
        index.remove_below(3);
        assert_eq!(index.locate(7, 0), None);
        assert_eq!(index.locate(8, 0), None);
        assert_eq!(index.locate(7, 1), Some(at(3, 32, 3)));
        assert_eq!(index.spans(), 1);
        index.remove_topic(7);
        assert_eq!(index.spans(), 0);
        assert_eq!(
            index.footprint(),
            index.topics.capacity() * (size_of::<(TopicId, VecDeque<Extent>)>() + 1)
        );
    }

    #[test]
    fn a_loss_cuts_the_spans_it_runs_through_back_to_what_was_kept() {
        let mut index = Index::default();
        for i in 0..6u64 {
            index.insert(7, i, 1, at(1, 32 + i * 100, 1 + i), 100);
        }
        index.insert(8, 0, 1, at(1, 632, 7), 100);
        // Records from seq 4 (byte 332) on are lost.
        index.remove_from(4, Some((1, 332)), 1);
        let spans = index.extents(7, 0, 10, 100, 1 << 20);
        assert_eq!(spans.len(), 1);
        assert_eq!(spans[0].len, 300);
        assert_eq!(index.locate(8, 0), None);
        // Unknown cut: the span that may hold lost records goes.
        index.remove_from(3, None, 1);
        assert_eq!(index.spans(), 0);
    }

    #[test]
    fn the_footprint_grows_with_spans_not_records() {
        let mut index = Index::default();
        for i in 0..100_000u64 {
            index.insert(7, i, 1, at(1, 32 + i * 150, 1 + i), 150);
        }
        let spans = (100_000 * 150u64).div_ceil(SPAN_BYTES) as usize;
        assert!(index.spans() <= spans + 1);
        assert!(index.footprint() <= 2 * spans * size_of::<Extent>() + 1024);
    }
}
