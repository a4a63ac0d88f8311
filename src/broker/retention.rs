//! Retention and positions: how far a topic may forget, when messages
//! leave by age, and where a start position (SUBSCRIBE, SEEK) lands.
//!
//! An until-acked topic forgets below its slowest acknowledgement
//! ([`super::topic::Topic::floor`]), as in version 1. A retained topic
//! (CREATE_TOPIC's `retain_ms` / `retain_bytes`) ignores acknowledgements:
//! its floor is the oldest message inside the policy
//! ([`Broker::release_floor`]), so it keeps messages with no subscriber at
//! all, and drops the oldest once they fall outside it, acknowledged or
//! not. Both end in the same release (`Broker::forget_below`), so retention
//! changes only *which* offset the topic forgets below, never how messages
//! are stored — a disk-backed backlog keeps this file unchanged.
//!
//! Age is measured on [`Times`], the broker's append time of each batch
//! (the time the `Messages` record carries), kept non-decreasing so that a
//! clock stepping back cannot reorder it. One timer per retained topic
//! fires when its oldest message expires, so an idle topic forgets on time
//! without any sweep over all topics.
//!
//! At the backlog bounds (`--max-backlog-bytes` / `-messages`) a retained
//! topic drops its oldest messages *that every subscriber has acknowledged*
//! to make room for a publish ([`Broker::trim_for_room`]); messages some
//! subscriber still has to process are not dropped for room, and the
//! publish is then held and refused TOPIC_FULL as on an until-acked topic.
//!
//! A subscriber whose cursor retention overtook is told on its next pull
//! how many messages it lost (`super::pull`).

use super::keys::{SessionKey, TopicKey};
use super::topic::Topic;
use super::{Broker, BrokerTimer};
use crate::protocol::{Position, Retention};
use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The broker's wall clock in Unix ms (append times, age bounds).
pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Append times of a topic's retained messages: one entry per run of
/// offsets appended at the same time, first offset → time, both growing.
#[derive(Debug, Default)]
pub struct Times {
    runs: VecDeque<(u64, u64)>,
}

/// What one entry costs in the budget.
const TIME_ENTRY: usize = 16;

impl Times {
    /// Messages from `offset` on were appended at `time_ms` (raised to the
    /// last time if the clock stepped back). Returns the time kept.
    pub fn record(&mut self, offset: u64, time_ms: u64) -> u64 {
        match self.runs.back() {
            Some(&(_, last)) if time_ms <= last => last,
            _ => {
                self.runs.push_back((offset, time_ms));
                time_ms
            }
        }
    }

    /// The time a batch appended now gets: `now_ms`, or the last time if
    /// the clock stepped back.
    pub fn stamp(&self, now_ms: u64) -> u64 {
        self.runs
            .back()
            .map_or(now_ms, |&(_, last)| now_ms.max(last))
    }

    /// Offsets below `base` are gone: so are the runs that end before it.
    pub fn forget_below(&mut self, base: u64) {
        while self.runs.len() > 1 && self.runs[1].0 <= base {
            self.runs.pop_front();
        }
        if self.runs.len() == 1 && self.runs[0].0 < base {
            // Kept: it still dates the messages from `base` on, if any.
            self.runs[0].0 = base;
        }
    }

    /// The append time of `offset` (0 if none was recorded).
    pub fn time_of(&self, offset: u64) -> u64 {
        let after = self.runs.partition_point(|&(start, _)| start <= offset);
        after
            .checked_sub(1)
            .and_then(|i| self.runs.get(i))
            .map_or(0, |&(_, time)| time)
    }

    /// The first offset appended at or after `time_ms`, if any.
    pub fn first_at_or_after(&self, time_ms: u64) -> Option<u64> {
        let index = self.runs.partition_point(|&(_, time)| time < time_ms);
        self.runs.get(index).map(|&(start, _)| start)
    }

    /// The time of the oldest run.
    pub fn oldest(&self) -> Option<u64> {
        self.runs.front().map(|&(_, time)| time)
    }

    pub fn footprint(&self) -> usize {
        self.runs.capacity() * TIME_ENTRY
    }
}

/// The oldest offset of `topic` inside its retention at `now_ms`, never
/// past what is visible (staged messages wait for the log).
fn policy_floor(topic: &Topic, retain_ms: u64, retain_bytes: u64, now_ms: u64) -> u64 {
    let end = topic.next_offset();
    let mut floor = topic.base_offset();
    if retain_ms > 0 {
        let cutoff = now_ms.saturating_sub(retain_ms);
        floor = floor.max(topic.times.first_at_or_after(cutoff).unwrap_or(end));
    }
    if retain_bytes > 0 {
        floor = floor.max(bytes_floor(
            topic,
            topic.base_offset(),
            end,
            true,
            |bytes| bytes <= retain_bytes as usize,
        ));
    }
    floor.min(end)
}

/// The lowest offset from `from` (at most `end`) such that the payload
/// bytes from it to the back of the topic satisfy `fits`. Costs one step
/// per message passed in memory, and one per run of evicted messages on
/// disk (summed in runs, see `super::topic`), which are then dropped.
///
/// `keep_edge`: a run is dropped only if what follows it still does not
/// fit, so a run straddling the bound stays whole — the retention policy's
/// rule that no message inside it is dropped, at the price of keeping up
/// to one run more. Without it (making room) the run goes.
fn bytes_floor(
    topic: &Topic,
    from: u64,
    end: u64,
    keep_edge: bool,
    fits: impl Fn(usize) -> bool,
) -> u64 {
    let mut bytes = topic.backlog_bytes();
    let mut offset = topic.base_offset();
    // Messages below `from` are counted in the backlog too.
    while offset < from {
        let (next, held) = topic.step_bytes(offset);
        bytes = bytes.saturating_sub(held);
        offset = next;
    }
    while offset < end && !fits(bytes) {
        let (next, held) = topic.step_bytes(offset);
        let after = bytes.saturating_sub(held);
        if keep_edge && next > offset + 1 && fits(after) {
            break;
        }
        bytes = after;
        offset = next;
    }
    offset.min(end.max(from))
}

impl Broker {
    /// The offset topic `key` may forget below now: the slowest
    /// acknowledgement for an until-acked topic, the policy's oldest
    /// message for a retained one.
    pub(super) fn release_floor(&self, key: TopicKey) -> Option<u64> {
        let topic = self.topics.get(key)?;
        Some(match topic.retention {
            Retention::UntilAcked => topic.floor(),
            Retention::Keep {
                retain_ms,
                retain_bytes,
            } => policy_floor(topic, retain_ms, retain_bytes, now_ms()),
        })
    }

    /// Makes room in retained topic `key` for `count` messages of `bytes`
    /// by dropping its oldest messages that every subscriber acknowledged
    /// (all of them, if it has none). Until-acked topics are left alone.
    pub(super) fn trim_for_room(&mut self, key: TopicKey, count: usize, bytes: usize) {
        let Some(topic) = self.topics.get(key) else {
            return;
        };
        if topic.retention == Retention::UntilAcked {
            return;
        }
        let (max_messages, max_bytes) = (
            self.limits.max_backlog_messages,
            self.limits.max_backlog_bytes,
        );
        if topic.has_room(count, bytes, max_messages, max_bytes) {
            return;
        }
        let limit = topic.floor().min(topic.next_offset());
        let by_count = topic
            .base_offset()
            .saturating_add((topic.backlog_messages() + count).saturating_sub(max_messages) as u64);
        let from = by_count.min(limit);
        let target = bytes_floor(topic, from, limit, false, |held| held + bytes <= max_bytes);
        self.forget_below(key, target);
    }

    /// Arms the age timer of retained topic `key` for its oldest message,
    /// if it has an age bound, messages, and no timer yet.
    pub(super) fn arm_retention(&mut self, key: TopicKey) {
        let Some(topic) = self.topics.get(key) else {
            return;
        };
        let Retention::Keep { retain_ms, .. } = topic.retention else {
            return;
        };
        if retain_ms == 0 || topic.retention_timer.is_some() || topic.backlog_messages() == 0 {
            return;
        }
        let Some(oldest) = topic.times.oldest() else {
            return;
        };
        let due_in = oldest.saturating_add(retain_ms).saturating_sub(now_ms());
        // A millisecond late rather than early: the message is then surely
        // outside the policy when the timer fires.
        let deadline = Instant::now() + Duration::from_millis(due_in + 1);
        let timer = self.timers.arm(deadline, BrokerTimer::Retention(key));
        self.topics[key].retention_timer = Some(timer);
    }

    /// The age timer of `key` fired: what expired goes, and the timer is
    /// armed again for the next oldest message.
    pub(super) fn retention_due(&mut self, key: TopicKey, timer: crate::timers::TimerKey) {
        match self.topics.get_mut(key) {
            Some(topic) if topic.retention_timer == Some(timer) => topic.retention_timer = None,
            // A deleted topic's timer, its key perhaps reused.
            _ => return,
        }
        self.release(key);
        self.arm_retention(key);
    }

    /// Arms every retained topic's age timer (after recovery).
    pub(super) fn arm_all_retention(&mut self) {
        let keys: Vec<TopicKey> = self.topics.iter().map(|(key, _)| key).collect();
        for key in keys {
            self.arm_retention(key);
        }
    }

    /// Where `position` lands in topic `key`, clamped to what it retains
    /// and can show: `earliest_offset..=next_offset`. A time past every
    /// message lands at `next_offset` (the next message published).
    pub(super) fn start_offset(&self, key: TopicKey, position: Position) -> u64 {
        let topic = &self.topics[key];
        let (earliest, end) = (topic.past_gap(topic.base_offset()), topic.next_offset());
        let earliest = earliest.min(end);
        let wanted = match position {
            Position::New => end,
            Position::Earliest => earliest,
            Position::Offset(offset) => offset,
            Position::TimeMs(ms) => topic.times.first_at_or_after(ms).unwrap_or(end),
        };
        // A start inside a gap (offsets that hold no message) is its end.
        topic.past_gap(wanted.clamp(earliest, end)).min(end)
    }

    /// A subscription's delivered offset was set from outside delivery
    /// (a start position, SEEK): it goes to the index its offsets say
    /// (`super::waiting`), and its parked pulls are queued if it now has
    /// something to deliver.
    pub(super) fn cursor_placed(&mut self, session_key: SessionKey, topic_key: TopicKey) {
        let (Some(session), Some(topic)) = (
            self.sessions.get_mut(session_key),
            self.topics.get_mut(topic_key),
        ) else {
            return;
        };
        let Some(delivered) = session.subscription(topic_key).map(|sub| sub.delivered) else {
            return;
        };
        if delivered < topic.next_offset() {
            topic.waiting.remove(session_key);
            session.set_ready(topic_key);
            if !session.queued && session.parked.iter().any(|p| p.covers(topic_key)) {
                session.queued = true;
                self.ready.push(session_key);
            }
        } else {
            session.set_caught_up(topic_key);
            topic.waiting.insert(session_key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn times_answer_by_run_and_never_go_back() {
        let mut times = Times::default();
        assert_eq!(times.record(0, 100), 100);
        assert_eq!(times.record(3, 200), 200);
        assert_eq!(times.record(5, 150), 200, "a clock step back is raised");
        assert_eq!(times.record(6, 300), 300);
        assert_eq!(
            (
                times.time_of(0),
                times.time_of(2),
                times.time_of(5),
                times.time_of(9)
            ),
            (100, 100, 200, 300)
        );
        assert_eq!(times.first_at_or_after(0), Some(0));
        assert_eq!(times.first_at_or_after(101), Some(3));
        assert_eq!(times.first_at_or_after(300), Some(6));
        assert_eq!(times.first_at_or_after(301), None);
        times.forget_below(4);
        assert_eq!((times.oldest(), times.time_of(4)), (Some(200), 200));
        times.forget_below(7);
        assert_eq!(times.first_at_or_after(0), Some(7));
    }

    #[test]
    fn the_policy_floor_keeps_the_newest_bytes_and_ages() {
        let mut topic = Topic::new("t");
        for i in 0..10u64 {
            topic.push(Bytes::from(vec![0; 10]), 0);
            topic.times.record(i, 1000 + i * 100);
        }
        // Size: the newest 35 bytes are 3 whole messages.
        assert_eq!(policy_floor(&topic, 0, 35, 0), 7);
        assert_eq!(policy_floor(&topic, 0, 30, 0), 7);
        assert_eq!(policy_floor(&topic, 0, 1000, 0), 0);
        // Age at t = 1950 with 500 ms: messages appended at 1450 or later.
        assert_eq!(policy_floor(&topic, 500, 0, 1950), 5);
        // Both: the higher floor wins; never past the visible end.
        assert_eq!(policy_floor(&topic, 500, 15, 1950), 9);
        assert_eq!(policy_floor(&topic, 1, 0, 1_000_000), 10);
        topic.stage(2);
        assert_eq!(policy_floor(&topic, 1, 0, 1_000_000), 8);
    }
}
