//! One memory budget for everything the broker holds on clients' behalf.
//!
//! Per-object limits (a topic's backlog, a connection's unread output) do not
//! bound the whole: many topics, many connections or many sessions each within
//! their limit can still add up to more memory than the machine has. So every
//! byte the broker allocates because a client asked for it is counted here, by
//! class, against one number (`--max-memory`), the way Redis's `maxmemory`
//! counts its dataset and client buffers together and `INFO memory` breaks the
//! total down.
//!
//! The owner is the broker's single thread: the broker counts its state
//! (payloads, message handles, topics, sessions, subscriptions, held
//! requests), the server counts connection buffers, both through
//! [`Budget::add`] and [`Budget::sub`]. Nothing here allocates or locks.
//!
//! Two thresholds, so that a full broker can still drain:
//! - requests that would *grow state* (publish, create a topic, a session, a
//!   subscription) are admitted only below `limit - reserve`
//!   ([`Budget::admits`]);
//! - replies and the buffers that carry them may use the reserve
//!   ([`Budget::admits_output`]), so that pulls and acks, which are what
//!   shrink the backlog, keep working when the broker is full.
//!
//! And one share: unread output (write buffers) may take at most a quarter of
//! the limit ([`Budget::output_full`]); past it the server stops executing
//! requests of the connections holding the most. Without that share, clients
//! that never read their replies could fill the budget with output and make
//! every other client's publish BROKER_FULL.

use std::fmt;

/// What a counted byte is held for. STATS reports each class by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Class {
    /// Retained payloads, at their real allocation (a batch's shared block
    /// counts until its last message is released).
    Payloads,
    /// Per-message bookkeeping beside the payload (handles, queue slots).
    Messages,
    /// Topics: names, tables, per-topic indexes.
    Topics,
    /// Subscriber sessions and their per-session indexes.
    Sessions,
    /// Subscriptions: a session's cursor on a topic, both sides of it.
    Subscriptions,
    /// Connections' read buffers.
    ReadBuffers,
    /// Connections' write buffers (replies not yet sent).
    WriteBuffers,
    /// Requests held by flow control (waiting for room, or for the disk).
    HeldRequests,
    /// Payloads read back from the log for subscribers behind the memory
    /// cache: reads in flight (at their bound) and what they returned.
    DiskReads,
    /// The durable log's read-back index (one entry per span of a topic's
    /// records, see `storage::index`): it grows with the backlog on disk,
    /// so it is held on the backlog's behalf. Recounted once per round.
    LogIndex,
}

impl Class {
    /// Every class, in the order STATS lists them.
    pub const ALL: [Class; 10] = [
        Class::Payloads,
        Class::Messages,
        Class::Topics,
        Class::Sessions,
        Class::Subscriptions,
        Class::ReadBuffers,
        Class::WriteBuffers,
        Class::HeldRequests,
        Class::DiskReads,
        Class::LogIndex,
    ];

    /// The snake_case name used in STATS and PROTOCOL.md.
    pub fn name(self) -> &'static str {
        match self {
            Class::Payloads => "payloads",
            Class::Messages => "messages",
            Class::Topics => "topics",
            Class::Sessions => "sessions",
            Class::Subscriptions => "subscriptions",
            Class::ReadBuffers => "read_buffers",
            Class::WriteBuffers => "write_buffers",
            Class::HeldRequests => "held_requests",
            Class::DiskReads => "disk_reads",
            Class::LogIndex => "log_index",
        }
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Unread output may take `1 / OUTPUT_SHARE` of the limit.
const OUTPUT_SHARE: usize = 4;

/// Bytes held, by class, against one limit with a reserve for replies.
#[derive(Debug, Clone)]
pub struct Budget {
    limit: usize,
    reserve: usize,
    used: [usize; Class::ALL.len()],
    total: usize,
    /// The largest `total` since [`Budget::take_peak`] last ran.
    peak: usize,
}

impl Budget {
    /// A budget of `limit` bytes, of which the last `reserve` are kept for
    /// replies (`reserve` is capped at half the limit).
    pub fn new(limit: usize, reserve: usize) -> Self {
        Budget {
            limit,
            reserve: reserve.min(limit / 2),
            used: [0; Class::ALL.len()],
            total: 0,
            peak: 0,
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    pub fn reserve(&self) -> usize {
        self.reserve
    }

    /// Bytes counted in every class together.
    pub fn total(&self) -> usize {
        self.total
    }

    pub fn used(&self, class: Class) -> usize {
        self.used[class as usize]
    }

    /// Every class with its bytes, in [`Class::ALL`] order.
    pub fn by_class(&self) -> impl Iterator<Item = (Class, usize)> + '_ {
        Class::ALL.iter().map(|&class| (class, self.used(class)))
    }

    pub fn add(&mut self, class: Class, bytes: usize) {
        self.used[class as usize] += bytes;
        self.total += bytes;
        self.peak = self.peak.max(self.total);
    }

    /// How far the total fell from its peak since the last call: what was
    /// freed, even by a burst that came and went between two looks (the
    /// server returns memory to the system after enough was freed).
    pub fn take_peak(&mut self) -> usize {
        let fallen = self.peak - self.total;
        self.peak = self.total;
        fallen
    }

    /// Gives back bytes counted by [`Budget::add`]. Giving back more than
    /// was counted is a bookkeeping bug: it saturates at zero (and asserts in
    /// debug builds) rather than wrapping.
    pub fn sub(&mut self, class: Class, bytes: usize) {
        let slot = &mut self.used[class as usize];
        debug_assert!(*slot >= bytes, "{class}: releasing {bytes} of {slot}");
        let released = bytes.min(*slot);
        *slot -= released;
        self.total -= released;
    }

    /// Replaces a class's count by `bytes` (for owners that recount).
    pub fn set(&mut self, class: Class, bytes: usize) {
        let slot = &mut self.used[class as usize];
        self.total = self.total - *slot + bytes;
        *slot = bytes;
        self.peak = self.peak.max(self.total);
    }

    /// Whether state may grow by `bytes`: stays below the limit less the
    /// reply reserve.
    pub fn admits(&self, bytes: usize) -> bool {
        self.total.saturating_add(bytes) <= self.limit - self.reserve
    }

    /// Whether output (replies, their buffers) may grow by `bytes`: may use
    /// the reserve, up to the limit itself.
    pub fn admits_output(&self, bytes: usize) -> bool {
        self.total.saturating_add(bytes) <= self.limit
    }

    /// Most bytes unread output (write buffers) may hold together.
    pub fn output_cap(&self) -> usize {
        self.limit / OUTPUT_SHARE
    }

    /// Whether unread output is at its share of the budget, or the budget
    /// itself is spent: then connections holding much output must wait.
    pub fn output_full(&self) -> bool {
        self.used(Class::WriteBuffers) >= self.output_cap() || self.total >= self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_add_up_to_the_total() {
        let mut budget = Budget::new(1000, 100);
        budget.add(Class::Payloads, 300);
        budget.add(Class::WriteBuffers, 200);
        budget.sub(Class::Payloads, 100);
        budget.set(Class::ReadBuffers, 50);
        assert_eq!(budget.total(), 450);
        assert_eq!(budget.used(Class::Payloads), 200);
        let sum: usize = budget.by_class().map(|(_, n)| n).sum();
        assert_eq!(sum, budget.total());
    }

    #[test]
    fn growth_stops_at_the_reserve_and_output_at_the_limit() {
        let mut budget = Budget::new(1000, 100);
        budget.add(Class::Topics, 850);
        assert!(budget.admits(50));
        assert!(!budget.admits(51));
        assert!(budget.admits_output(150));
        assert!(!budget.admits_output(151));
    }

    #[test]
    fn output_is_full_at_its_share_or_at_the_limit() {
        let mut budget = Budget::new(1000, 100);
        budget.add(Class::WriteBuffers, 249);
        assert!(!budget.output_full());
        budget.add(Class::WriteBuffers, 1);
        assert!(budget.output_full());
        budget.sub(Class::WriteBuffers, 250);
        budget.add(Class::Payloads, 1000);
        assert!(budget.output_full());
    }

    #[test]
    fn a_burst_between_two_looks_counts_as_freed() {
        let mut budget = Budget::new(1000, 100);
        budget.add(Class::Payloads, 600);
        budget.sub(Class::Payloads, 500);
        assert_eq!(budget.take_peak(), 500);
        assert_eq!(budget.take_peak(), 0);
    }

    #[test]
    fn the_reserve_is_at_most_half_the_limit() {
        assert_eq!(Budget::new(100, 90).reserve(), 50);
    }

    #[test]
    fn every_class_has_a_distinct_name() {
        let names: std::collections::HashSet<_> = Class::ALL.iter().map(|c| c.name()).collect();
        assert_eq!(names.len(), Class::ALL.len());
    }
}
