//! Deadlines in time order, for a single-threaded loop.
//!
//! The loop sleeps in `poll` until the earliest deadline, then pops everything
//! that is due. Timers are cancelled explicitly (a woken pull removes its
//! timeout) rather than left to fire and be ignored, so the set holds only
//! live deadlines however many pulls park and wake per second. A `BTreeMap`
//! keyed by (deadline, sequence) gives ordered pops and O(log n) cancels with
//! no extra bookkeeping; the sequence keeps equal deadlines distinct.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Identifies one armed timer, for cancelling it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimerKey {
    deadline: Instant,
    seq: u64,
}

impl TimerKey {
    pub fn deadline(&self) -> Instant {
        self.deadline
    }
}

/// A set of deadlines, each carrying an event of type `E`.
#[derive(Debug)]
pub struct Timers<E> {
    armed: BTreeMap<TimerKey, E>,
    next_seq: u64,
}

impl<E> Default for Timers<E> {
    fn default() -> Self {
        Timers {
            armed: BTreeMap::new(),
            next_seq: 0,
        }
    }
}

impl<E> Timers<E> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn arm(&mut self, deadline: Instant, event: E) -> TimerKey {
        let key = TimerKey {
            deadline,
            seq: self.next_seq,
        };
        self.next_seq += 1;
        self.armed.insert(key, event);
        key
    }

    /// Removes a timer; cancelling one that already fired is harmless.
    pub fn cancel(&mut self, key: TimerKey) -> Option<E> {
        self.armed.remove(&key)
    }

    /// Removes and returns the earliest event due at `now`, if any, with the
    /// key it was armed under.
    pub fn pop_due(&mut self, now: Instant) -> Option<(TimerKey, E)> {
        let entry = self.armed.first_entry()?;
        if entry.key().deadline <= now {
            Some(entry.remove_entry())
        } else {
            None
        }
    }

    /// Time until the earliest deadline (zero if one is due), or `None` when
    /// nothing is armed.
    pub fn until_next(&self, now: Instant) -> Option<Duration> {
        self.armed
            .keys()
            .next()
            .map(|key| key.deadline.saturating_duration_since(now))
    }

    pub fn len(&self) -> usize {
        self.armed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.armed.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_events_pop_in_deadline_order_and_cancelled_ones_never() {
        let start = Instant::now();
        let mut timers = Timers::new();
        timers.arm(start + Duration::from_millis(30), "c");
        let b = timers.arm(start + Duration::from_millis(20), "b");
        timers.arm(start + Duration::from_millis(10), "a");
        timers.arm(start + Duration::from_millis(10), "a2");
        assert_eq!(timers.cancel(b), Some("b"));
        assert_eq!(timers.cancel(b), None);

        assert_eq!(timers.pop_due(start), None);
        assert_eq!(timers.until_next(start), Some(Duration::from_millis(10)));
        let later = start + Duration::from_millis(25);
        assert_eq!(timers.pop_due(later).map(|(_, e)| e), Some("a"));
        assert_eq!(timers.pop_due(later).map(|(_, e)| e), Some("a2"));
        assert_eq!(timers.pop_due(later), None);
        assert_eq!(timers.len(), 1);
        assert_eq!(timers.until_next(later), Some(Duration::from_millis(5)));
    }
}
