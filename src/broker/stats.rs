//! The broker's counters and the STATS reply built from them.
//!
//! Counters are bumped where the event happens (a publish, a delivery, a
//! refusal) and never recomputed by walking the tables, so STATS costs the
//! same however many topics and sessions there are. Gauges that the tables
//! already know (how many topics, how many sessions) are read from them
//! instead of being counted twice. Memory by class is the budget's own
//! count (`crate::budget`), which the broker and the server keep as they go.

use super::Broker;
use crate::protocol::{ErrorCode, Stats};
use std::time::Instant;

#[derive(Debug, Default)]
pub(super) struct Counters {
    pub connections: u64,
    pub connections_total: u64,
    pub publishers: u64,
    pub messages_in: u64,
    pub messages_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub backlog_messages: u64,
    pub backlog_bytes: u64,
    pub subscriptions: u64,
    pub waiting_pulls: u64,
    /// Indexed by the numeric error code.
    pub errors: [u64; 32],
    /// Codes from 32 on.
    pub errors_high: [u64; 32],
}

impl Broker {
    /// Counts an error the server answered on its own (e.g. a connection
    /// refused before it had an id).
    pub fn count_error(&mut self, code: ErrorCode) {
        let n = code as usize;
        let slot = match n.checked_sub(32) {
            None => self.counters.errors.get_mut(n),
            Some(high) => self.counters.errors_high.get_mut(high),
        };
        if let Some(slot) = slot {
            *slot += 1;
        }
    }

    /// Payload bytes retained now, over all topics.
    pub fn backlog_bytes(&self) -> u64 {
        self.counters.backlog_bytes
    }

    pub fn stats(&self, now: Instant) -> Stats {
        let c = &self.counters;
        Stats {
            uptime_ms: now.duration_since(self.started).as_millis() as u64,
            connections: c.connections,
            connections_total: c.connections_total,
            topics: self.topics.len() as u64,
            publishers: c.publishers,
            subscribers: self.sessions.len() as u64,
            subscriptions: c.subscriptions,
            waiting_pulls: c.waiting_pulls,
            messages_in: c.messages_in,
            messages_out: c.messages_out,
            bytes_in: c.bytes_in,
            bytes_out: c.bytes_out,
            backlog_messages: c.backlog_messages,
            backlog_bytes: c.backlog_bytes,
            errors: ErrorCode::ALL
                .iter()
                .filter_map(|&code| {
                    let n = code as usize;
                    let n = match n.checked_sub(32) {
                        None => c.errors.get(n),
                        Some(high) => c.errors_high.get(high),
                    }
                    .copied()
                    .unwrap_or(0);
                    (n > 0).then(|| (code.name().to_string(), n))
                })
                .collect(),
            memory: self
                .budget
                .by_class()
                .map(|(class, bytes)| (class.name().to_string(), bytes as u64))
                .collect(),
            memory_total: self.budget.total() as u64,
            memory_limit: self.budget.limit() as u64,
            publishes_held: self.pending.held_total,
            held_now: self.pending.held_now,
            held_dropped: self.pending.held_dropped,
            held_input_pauses: self.pending.input_pauses,
            messages_evicted: self.cache.evicted,
            disk_reads: self.disk.reads,
            disk_messages_read: self.disk.messages_read,
            disk_reads_outstanding: self.reads_outstanding() as u64,
            disk_bytes: self.disk_bytes().unwrap_or(0),
        }
    }
}
