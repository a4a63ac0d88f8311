//! The loop's own timers (the broker keeps its own for pulls and sessions):
//! the guards that keep one client from holding resources for nothing, and
//! the housekeeping that lets memory follow load down.
//!
//! - Handshake: a connection must complete HELLO within `handshake_timeout`.
//! - Partial frame (the slowloris guard): a frame must finish arriving within
//!   `frame_timeout` of its first byte. One timer per connection at most; when
//!   it fires early (frames completed meanwhile) it is re-armed for the frame
//!   now arriving rather than a new timer armed per frame.
//! - Accept retry: after EMFILE and the like, accept again shortly.
//! - Housekeeping: once a second, return memory to the system if
//!   connections closed or the backlog shrank.
//!
//! Timers name a connection by slab key *and* serial, so a timer armed for a
//! closed connection never fires on the one that reuses its key.

use super::event_loop::EventLoop;
use crate::broker::ConnId;
use crate::connection::BufferPool;
use crate::log_limited;
use crate::protocol::ErrorCode;
use log::Level;
use std::time::{Duration, Instant};

/// Timers of the loop itself.
#[derive(Debug, Clone, Copy)]
pub(super) enum LoopTimer {
    Handshake { key: ConnId, serial: u64 },
    PartialFrame { key: ConnId, serial: u64 },
    RetryAccept,
    Housekeeping,
}

/// How often the loop considers returning freed memory to the system.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(1);

/// What housekeeping compares against.
#[derive(Debug, Default)]
pub(super) struct Housekeeping {
    /// Connections closed since the last housekeeping.
    closed: usize,
    /// Retained bytes at the last housekeeping.
    backlog: u64,
}

impl Housekeeping {
    pub(super) fn connection_closed(&mut self) {
        self.closed += 1;
    }
}

impl EventLoop {
    pub(super) fn start_housekeeping(&mut self, now: Instant) {
        self.timers
            .arm(now + HOUSEKEEPING_INTERVAL, LoopTimer::Housekeeping);
    }

    pub(super) fn arm_handshake_timeout(&mut self, key: ConnId, serial: u64, now: Instant) {
        self.timers.arm(
            now + self.config.handshake_timeout,
            LoopTimer::Handshake { key, serial },
        );
    }

    /// Arms the slowloris guard for a connection that has `partial` frame
    /// bytes buffered; `completed` says whether a frame finished this round
    /// (so the partial one began now).
    pub(super) fn track_partial_frame(
        &mut self,
        key: ConnId,
        partial: bool,
        completed: bool,
        now: Instant,
    ) {
        let timeout = self.config.frame_timeout;
        let Some(connection) = self.table.get_mut(key) else {
            return;
        };
        if !partial {
            connection.partial_since = None;
            return;
        }
        if completed || connection.partial_since.is_none() {
            connection.partial_since = Some(now);
        }
        if !connection.partial_timer_armed {
            connection.partial_timer_armed = true;
            let serial = connection.serial;
            self.timers
                .arm(now + timeout, LoopTimer::PartialFrame { key, serial });
        }
    }

    pub(super) fn fire_timers(&mut self, now: Instant) {
        while let Some((_, timer)) = self.timers.pop_due(now) {
            match timer {
                LoopTimer::RetryAccept => self.accept(now),
                LoopTimer::Housekeeping => {
                    self.housekeeping();
                    self.start_housekeeping(now);
                }
                LoopTimer::Handshake { key, serial } => {
                    let live = self
                        .table
                        .get(key)
                        .is_some_and(|c| c.serial == serial && !c.is_closing());
                    if live && !self.broker.is_handshaken(key) {
                        self.time_out(key, "no HELLO within the handshake timeout", now);
                    }
                }
                LoopTimer::PartialFrame { key, serial } => {
                    let Some(connection) = self.table.get_mut(key) else {
                        continue;
                    };
                    if connection.serial != serial || connection.is_closing() {
                        continue;
                    }
                    connection.partial_timer_armed = false;
                    let Some(since) = connection.partial_since else {
                        continue;
                    };
                    let deadline = since + self.config.frame_timeout;
                    if deadline <= now {
                        self.time_out(key, "a frame took too long to arrive", now);
                    } else {
                        connection.partial_timer_armed = true;
                        self.timers
                            .arm(deadline, LoopTimer::PartialFrame { key, serial });
                    }
                }
            }
        }
    }

    /// Returns memory to the system after connections closed or the backlog
    /// shrank by a megabyte or more, so resident size follows load down.
    fn housekeeping(&mut self) {
        let backlog = self.broker.backlog_bytes();
        let last = &mut self.housekeeping;
        let shrank = last.backlog.saturating_sub(backlog) >= 1 << 20;
        if last.closed > 0 || shrank {
            self.pool = BufferPool::default();
            crate::memory::release_free_memory();
        }
        last.closed = 0;
        last.backlog = backlog;
    }

    /// Tells the client why and closes it (`TIMEOUT` closes the connection).
    fn time_out(&mut self, key: ConnId, why: &str, now: Instant) {
        log_limited!(
            self.bad_input_log,
            now,
            Level::Info,
            "{}: {why}; closing",
            self.label(key)
        );
        let (mut outbox, broker) = self.outbox();
        broker.send_error(key, 0, ErrorCode::Timeout, why, &mut outbox);
    }
}
