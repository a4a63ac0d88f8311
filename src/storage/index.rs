//! Where each topic's messages sit in the log: (topic, offset) → the record
//! holding it, and the records covering a range ([`Index::extents`]), which
//! the disk read path plans its reads with.
//!
//! One entry per `Messages` record, kept in a per-topic ordered map by first
//! offset, so a lookup is one `range` query. It is dense in records, not in
//! messages: a batch of a thousand payloads costs one entry. Entries go when
//! their segment is deleted, their topic is, or their record is reported
//! lost.

use super::record::TopicId;
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;

/// Where a record starts: its segment (named by its first sequence number)
/// and byte offset there, with the record's own sequence number so a read
/// can check it found the right one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Location {
    pub segment: u64,
    pub offset: u64,
    pub seq: u64,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    count: u64,
    at: Location,
    /// The record's whole frame, in bytes.
    len: u64,
}

/// One record a range read goes through: where it is, how long its frame
/// is, and the offsets it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub at: Location,
    pub len: u64,
    pub first_offset: u64,
    pub count: u64,
}

/// The index; see the module doc.
#[derive(Debug, Default)]
pub struct Index {
    topics: HashMap<TopicId, BTreeMap<u64, Entry>>,
}

impl Index {
    /// Notes a `Messages` record of `count` payloads from `first_offset`.
    pub fn insert(
        &mut self,
        topic: TopicId,
        first_offset: u64,
        count: u64,
        at: Location,
        len: u64,
    ) {
        if count > 0 {
            self.topics
                .entry(topic)
                .or_default()
                .insert(first_offset, Entry { count, at, len });
        }
    }

    /// The records holding `topic`'s offsets from `from` up to `end`
    /// (exclusive), in order, until they hold `max_messages` messages from
    /// `from` on or their frames `max_bytes` bytes (at least one record).
    /// Offsets no record holds (gaps) are simply not covered.
    pub fn extents(
        &self,
        topic: TopicId,
        from: u64,
        end: u64,
        max_messages: u64,
        max_bytes: u64,
    ) -> Vec<Extent> {
        let mut out = Vec::new();
        let Some(map) = self.topics.get(&topic) else {
            return out;
        };
        // The record holding `from`, if any, then those after it.
        let start = match map.range(..=from).next_back() {
            Some((&first, e)) if from < first + e.count => first,
            _ => from,
        };
        let (mut messages, mut bytes) = (0, 0);
        for (&first, e) in map.range(start..end.max(start)) {
            if messages >= max_messages || (bytes >= max_bytes && !out.is_empty()) {
                break;
            }
            messages += (first + e.count).min(end) - first.max(from);
            bytes += e.len;
            out.push(Extent {
                at: e.at,
                len: e.len,
                first_offset: first,
                count: e.count,
            });
        }
        out
    }

    /// The record holding `offset` of `topic`, and the payload's place in it.
    pub fn locate(&self, topic: TopicId, offset: u64) -> Option<(Location, u64)> {
        let (first, e) = self.topics.get(&topic)?.range(..=offset).next_back()?;
        let within = offset - first;
        (within < e.count).then_some((e.at, within))
    }

    /// Forgets a topic (it was deleted).
    pub fn remove_topic(&mut self, topic: TopicId) {
        self.topics.remove(&topic);
    }

    /// Forgets the records whose sequence numbers fall in `seqs`.
    pub fn remove_seqs(&mut self, seqs: Range<u64>) {
        for map in self.topics.values_mut() {
            map.retain(|_, e| !seqs.contains(&e.at.seq));
        }
        self.topics.retain(|_, m| !m.is_empty());
    }

    /// The number of records indexed, for stats and tests.
    pub fn records(&self) -> usize {
        self.topics.values().map(BTreeMap::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seq: u64) -> Location {
        Location {
            segment: 1,
            offset: seq * 100,
            seq,
        }
    }

    #[test]
    fn locates_inside_batches_and_nowhere_else() {
        let mut index = Index::default();
        index.insert(7, 0, 3, at(1), 50);
        index.insert(7, 5, 2, at(2), 40);
        assert_eq!(index.locate(7, 0), Some((at(1), 0)));
        assert_eq!(index.locate(7, 2), Some((at(1), 2)));
        assert_eq!(index.locate(7, 3), None);
        assert_eq!(index.locate(7, 6), Some((at(2), 1)));
        assert_eq!(index.locate(7, 7), None);
        assert_eq!(index.locate(8, 0), None);
        let firsts = |v: Vec<Extent>| v.iter().map(|e| e.first_offset).collect::<Vec<_>>();
        assert_eq!(firsts(index.extents(7, 1, 10, 100, 1000)), vec![0, 5]);
        assert_eq!(firsts(index.extents(7, 3, 10, 100, 1000)), vec![5]);
        assert_eq!(firsts(index.extents(7, 0, 5, 100, 1000)), vec![0]);
        assert_eq!(firsts(index.extents(7, 0, 10, 3, 1000)), vec![0]);
        assert_eq!(firsts(index.extents(7, 0, 10, 100, 1)), vec![0]);
        index.remove_seqs(1..2);
        assert_eq!(index.locate(7, 0), None);
        assert_eq!(index.records(), 1);
        index.remove_topic(7);
        assert_eq!(index.records(), 0);
    }
}
