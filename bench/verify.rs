//! Checking what was measured: every acknowledged message reached every
//! subscriber of its topic, once, in the order its publisher sent it.
//!
//! Each (subscriber, topic, publisher) is a stream whose sequence numbers
//! should arrive as 0, 1, 2, … A subscriber's [`Tracker`] follows each
//! stream with one expected number: a match moves it on; a higher number
//! leaves a gap (remembered); a lower one is a late arrival into a gap
//! (reordered) or else a duplicate. Nothing is kept per message.
//!
//! A gap is not always a loss. A publisher never resends a sequence number:
//! when the broker refuses a request with `TOPIC_FULL`, that request's
//! numbers are recorded as refused and the messages go out again under new
//! numbers. (Resending the same numbers could not keep order, because
//! requests already in flight behind the refused one may be stored before
//! the retry.) So at the end, [`check`] sets each stream's gaps against its
//! publisher's refused ranges: a gap the broker refused is expected, any
//! other missing number is lost, and a refused number that arrived anyway is
//! an extra.

use crate::layout::Layout;
use crate::payload::Header;
use std::collections::HashMap;

/// Gaps one subscriber remembers before giving up on exact verification. A
/// healthy run has one gap per refused request, which the publishers' backoff
/// keeps to a few hundred a second.
const MAX_GAPS: usize = 1_000_000;

/// What one publisher issued on one topic.
#[derive(Debug, Clone, Default)]
pub struct Issued {
    pub publisher: usize,
    pub topic: usize,
    /// Sequence numbers `0..issued` were sent (or refused).
    pub issued: u64,
    /// How many of them the broker acknowledged.
    pub accepted: u64,
    /// The ranges it refused (retryable errors), in order.
    pub refused: Vec<(u64, u64)>,
}

#[derive(Debug, Clone, Default)]
struct Stream {
    next: u64,
    reordered: u64,
    gaps: Vec<(u64, u64)>,
}

/// One subscriber's view of its streams.
#[derive(Debug, Clone)]
pub struct Tracker {
    layout: Layout,
    /// The subscriber's topics (global indexes), ascending.
    topics: Vec<usize>,
    streams: Vec<Stream>,
    /// The offset the next group of each topic should start at.
    next_offset: Vec<u64>,
    pub received: u64,
    pub duplicated: u64,
    /// Messages from a publisher that does not publish to that topic, or
    /// without a readable header.
    pub misrouted: u64,
    /// Pull groups that did not start where the previous one ended.
    pub offset_breaks: u64,
    gaps: usize,
    overflowed: bool,
}

impl Tracker {
    /// `topics` ascending, with the offset SUBSCRIBE returned for each.
    pub fn new(layout: Layout, topics: Vec<usize>, first_offsets: Vec<u64>) -> Tracker {
        Tracker {
            layout,
            streams: vec![Stream::default(); topics.len() * layout.slots()],
            topics,
            next_offset: first_offsets,
            received: 0,
            duplicated: 0,
            misrouted: 0,
            offset_breaks: 0,
            gaps: 0,
            overflowed: false,
        }
    }

    /// A pull group of `len` messages on topic `local` starting at
    /// `first_offset`.
    pub fn group(&mut self, local: usize, first_offset: u64, len: u64) {
        if let Some(next) = self.next_offset.get_mut(local) {
            if *next != first_offset {
                self.offset_breaks += 1;
            }
            *next = first_offset + len;
        }
    }

    /// A message that could not be read as a bench message.
    pub fn unreadable(&mut self) {
        self.received += 1;
        self.misrouted += 1;
    }

    pub fn message(&mut self, local: usize, header: Header) {
        self.received += 1;
        let publisher = header.publisher as usize;
        let stream = self
            .topics
            .get(local)
            .filter(|&&topic| self.layout.publishes_to(publisher, topic))
            .and_then(|_| {
                let index = local * self.layout.slots() + self.layout.slot(publisher);
                self.streams.get_mut(index)
            });
        let Some(stream) = stream else {
            self.misrouted += 1;
            return;
        };
        let seq = header.seq;
        if seq == stream.next {
            stream.next += 1;
        } else if seq > stream.next {
            if self.gaps < MAX_GAPS {
                stream.gaps.push((stream.next, seq));
                self.gaps += 1;
            } else {
                self.overflowed = true;
            }
            stream.next = seq + 1;
        } else if in_ranges(&stream.gaps, seq) {
            stream.reordered += 1;
        } else {
            self.duplicated += 1;
        }
    }
}

/// The outcome of a run's verification.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Deliveries that should have happened: each acknowledged message once
    /// per subscriber of its topic.
    pub expected: u64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub reordered: u64,
    /// Refused (or never issued) messages that were delivered anyway.
    pub extra: u64,
    pub misrouted: u64,
    pub offset_breaks: u64,
    /// Too many gaps to remember: the counts above may be incomplete.
    pub overflowed: bool,
}

impl Verdict {
    /// One line per kind of failure; empty when the run verified.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let kinds = [
            (self.lost, "deliveries lost"),
            (self.duplicated, "deliveries duplicated"),
            (self.reordered, "deliveries out of order"),
            (self.extra, "deliveries of messages the broker had refused"),
            (
                self.misrouted,
                "deliveries unreadable or on a topic their publisher did not publish to",
            ),
            (
                self.offset_breaks,
                "pulls that did not start at the offset where the previous one ended",
            ),
        ];
        for (count, what) in kinds {
            if count > 0 {
                problems.push(format!("{count} {what}"));
            }
        }
        if self.overflowed {
            problems.push("too many gaps to verify exactly (over a million)".to_owned());
        }
        problems
    }
}

/// Sets what the subscribers saw against what the publishers issued.
pub fn check(layout: &Layout, issued: &[Issued], trackers: &[Tracker]) -> Verdict {
    let by_stream: HashMap<(usize, usize), &Issued> =
        issued.iter().map(|i| ((i.publisher, i.topic), i)).collect();
    let none = Issued::default();
    let mut v = Verdict::default();
    for tracker in trackers {
        v.delivered += tracker.received;
        v.duplicated += tracker.duplicated;
        v.misrouted += tracker.misrouted;
        v.offset_breaks += tracker.offset_breaks;
        v.overflowed |= tracker.overflowed;
        for (local, &topic) in tracker.topics.iter().enumerate() {
            for publisher in (0..layout.publishers).filter(|&p| layout.publishes_to(p, topic)) {
                let record = by_stream.get(&(publisher, topic)).copied().unwrap_or(&none);
                let index = local * layout.slots() + layout.slot(publisher);
                let Some(stream) = tracker.streams.get(index) else {
                    continue;
                };
                v.expected += record.accepted;
                let tail = (stream.next < record.issued).then_some((stream.next, record.issued));
                let gaps = || stream.gaps.iter().copied().chain(tail);
                let missing: u64 = gaps().map(|(from, to)| to - from).sum();
                let refused_missing = overlap(gaps(), &record.refused);
                let refused: u64 = record.refused.iter().map(|(from, to)| to - from).sum();
                v.lost += (missing - refused_missing).saturating_sub(stream.reordered);
                v.reordered += stream.reordered;
                v.extra += refused - refused_missing + stream.next.saturating_sub(record.issued);
            }
        }
    }
    v
}

/// Whether `value` lies in one of `ranges` (half-open, sorted, disjoint).
fn in_ranges(ranges: &[(u64, u64)], value: u64) -> bool {
    let after = ranges.partition_point(|&(_, to)| to <= value);
    ranges.get(after).is_some_and(|&(from, _)| from <= value)
}

/// How many values the two sets of sorted, disjoint ranges share.
fn overlap(a: impl Iterator<Item = (u64, u64)>, b: &[(u64, u64)]) -> u64 {
    let mut shared = 0;
    let mut b = b.iter().copied().peekable();
    for (from, to) in a {
        while let Some(&(b_from, b_to)) = b.peek() {
            shared += to.min(b_to).saturating_sub(from.max(b_from));
            if b_to <= to {
                b.next();
            } else {
                break;
            }
        }
    }
    shared
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: Layout = Layout {
        publishers: 1,
        subscribers: 1,
        topics: 1,
    };

    fn seen(seqs: &[u64]) -> Tracker {
        let mut tracker = Tracker::new(ONE, vec![0], vec![0]);
        for &seq in seqs {
            let header = Header {
                publisher: 0,
                seq,
                sent_ns: 0,
            };
            tracker.message(0, header);
        }
        tracker
    }

    fn issued(issued: u64, refused: Vec<(u64, u64)>) -> Vec<Issued> {
        let accepted = issued - refused.iter().map(|(a, b)| b - a).sum::<u64>();
        vec![Issued {
            publisher: 0,
            topic: 0,
            issued,
            accepted,
            refused,
        }]
    }

    #[test]
    fn a_clean_stream_verifies() {
        let v = check(&ONE, &issued(4, vec![]), &[seen(&[0, 1, 2, 3])]);
        assert!(v.problems().is_empty(), "{v:?}");
        assert_eq!((v.expected, v.delivered), (4, 4));
    }

    #[test]
    fn a_refused_range_is_not_a_loss() {
        let v = check(&ONE, &issued(6, vec![(2, 4)]), &[seen(&[0, 1, 4, 5])]);
        assert!(v.problems().is_empty(), "{v:?}");
        assert_eq!(v.expected, 4);
    }

    #[test]
    fn losses_duplicates_reorders_and_extras_are_counted() {
        let lost = check(&ONE, &issued(5, vec![]), &[seen(&[0, 2, 3])]);
        assert_eq!(lost.lost, 2, "one gap, one missing tail: {lost:?}");
        let dup = check(&ONE, &issued(3, vec![]), &[seen(&[0, 1, 1, 2])]);
        assert_eq!((dup.duplicated, dup.lost), (1, 0));
        let late = check(&ONE, &issued(3, vec![]), &[seen(&[0, 2, 1])]);
        assert_eq!((late.reordered, late.lost), (1, 0));
        let extra = check(&ONE, &issued(3, vec![(1, 2)]), &[seen(&[0, 1, 2])]);
        assert_eq!((extra.extra, extra.lost), (1, 0));
    }

    #[test]
    fn offsets_must_follow_on() {
        let mut tracker = Tracker::new(ONE, vec![0], vec![5]);
        tracker.group(0, 5, 3);
        tracker.group(0, 8, 1);
        assert_eq!(tracker.offset_breaks, 0);
        tracker.group(0, 10, 1);
        assert_eq!(tracker.offset_breaks, 1);
    }

    #[test]
    fn overlap_of_ranges() {
        let a = [(0, 10), (20, 30)];
        assert_eq!(overlap(a.into_iter(), &[(5, 25)]), 10);
        assert_eq!(overlap(a.into_iter(), &[(10, 20)]), 0);
        assert_eq!(overlap(a.into_iter(), &[(0, 2), (3, 4), (29, 40)]), 4);
    }
}
