//! The loop's own timers (the broker keeps its own for pulls and sessions):
//! the guards that keep one client from holding resources for nothing, and
//! the housekeeping that lets memory follow load down.
//!
//! - Handshake: a connection must complete HELLO within `handshake_timeout`.
//! - Partial frame (the slowloris guard): a frame must finish arriving within
//!   `frame_timeout` of its first byte. One timer per connection at most; when
//!   it fires early (frames completed meanwhile) it is re-armed for the frame
//!   now arriving rather than a new timer armed per frame.
//! - Output: a connection whose socket took no byte for `output_timeout`
//!   while it had output waiting is disconnected (its session stays
//!   resumable); one that reads at any speed never is. A closing
//!   connection gets [`CLOSE_LINGER`] instead: for its last replies to be
//!   taken, then, after its write side is shut, for the peer to close.
//! - Accept retry: after EMFILE and the like, accept again shortly.
//! - Housekeeping: at most once a second, return memory to the system if
//!   enough was freed (`malloc_trim` walks the whole heap: on a heap of a
//!   few hundred megabytes it costs milliseconds of the loop's time, so it
//!   is not run for a single small close; its cost is logged at debug).
//!
//! Timers name a connection by slab key *and* serial, so a timer armed for a
//! closed connection never fires on the one that reuses its key.

use super::event_loop::EventLoop;
use super::table::Close;
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
    Output { key: ConnId, serial: u64 },
    RetryAccept,
    Housekeeping,
}

/// How often the loop considers returning freed memory to the system.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(1);

/// How long a closing connection is kept for its last replies to be taken,
/// and then for the peer to close after the write side is shut.
pub(super) const CLOSE_LINGER: Duration = Duration::from_secs(2);
/// Freed bytes (buffers of closed connections, backlog) that make
/// housekeeping return memory to the system.
const TRIM_AFTER_BYTES: u64 = 1 << 20;
/// Closed connections that do so whatever their buffers held (each leaves
/// its broker state and small allocations behind).
const TRIM_AFTER_CLOSES: usize = 256;

/// What housekeeping compares against.
#[derive(Debug, Default)]
pub(super) struct Housekeeping {
    /// Connections closed since the last housekeeping.
    closed: usize,
    /// Buffer bytes those connections held.
    freed: u64,
    /// Retained bytes at the last housekeeping.
    backlog: u64,
}

impl Housekeeping {
    pub(super) fn connection_closed(&mut self, buffer_bytes: usize) {
        self.closed += 1;
        self.freed += buffer_bytes as u64;
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
                LoopTimer::Output { key, serial } => self.check_output(key, serial, now),
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

    /// Arms the output timer of a connection with output waiting, unless
    /// one is armed already (it re-arms itself while output keeps moving).
    pub(super) fn arm_output_timeout(&mut self, key: ConnId) {
        let limit = self.output_limit(key);
        let Some(connection) = self.table.get_mut(key) else {
            return;
        };
        if !connection.output_timer_armed {
            connection.output_timer_armed = true;
            let serial = connection.serial;
            self.timers.arm(
                connection.last_progress + limit,
                LoopTimer::Output { key, serial },
            );
        }
    }

    /// The time a connection may go without progress: the output timeout,
    /// or the linger time once it is closing (unless it is closing because
    /// its peer ended its input — then its replies get the output timeout).
    fn output_limit(&self, key: ConnId) -> Duration {
        match self.table.get(key) {
            Some(c) if c.is_closing() && (c.lingering || !c.input_ended) => {
                CLOSE_LINGER.min(self.config.output_timeout)
            }
            _ => self.config.output_timeout,
        }
    }

    fn check_output(&mut self, key: ConnId, serial: u64, now: Instant) {
        let limit = self.output_limit(key);
        let Some(connection) = self.table.get_mut(key) else {
            return;
        };
        if connection.serial != serial {
            return;
        }
        connection.output_timer_armed = false;
        let waiting = connection.pending_output() > 0 || connection.lingering;
        if !waiting {
            return;
        }
        connection.note_delivery(now);
        let deadline = connection.last_progress + limit;
        if deadline > now {
            connection.output_timer_armed = true;
            self.timers.arm(deadline, LoopTimer::Output { key, serial });
            return;
        }
        if connection.lingering {
            self.table.drop_closing(key);
            return;
        }
        let pending = connection.pending_output();
        log_limited!(
            self.bad_input_log,
            now,
            Level::Info,
            "{}: no reply byte taken in {:?} with {pending} bytes unsent; disconnecting",
            self.label(key),
            limit
        );
        self.table.close(key, Close::Now);
    }

    /// Returns memory to the system after enough was freed — closed
    /// connections' buffers, many closes, or the budget falling a megabyte
    /// from its peak since the last look (a burst retained and acknowledged
    /// within one interval counts too) — so resident size follows load
    /// down, at most once per interval.
    fn housekeeping(&mut self) {
        let backlog = self.broker.backlog_bytes();
        let fallen = self.broker.budget_mut().take_peak() as u64;
        let last = &mut self.housekeeping;
        let freed = (last.freed + last.backlog.saturating_sub(backlog)).max(fallen);
        if freed >= TRIM_AFTER_BYTES || last.closed >= TRIM_AFTER_CLOSES {
            self.pool = BufferPool::default();
            let started = Instant::now();
            crate::os::release_free_memory();
            log::debug!(
                "returned free memory to the system in {:?} ({} closes, {freed} bytes freed)",
                started.elapsed(),
                last.closed
            );
        }
        last.closed = 0;
        last.freed = 0;
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
