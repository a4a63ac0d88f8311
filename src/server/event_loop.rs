//! The poll loop itself. Each iteration:
//!
//! 1. poll, sleeping no longer than the earliest timer (not at all while
//!    connections wait for another turn); if the log's writer woke it,
//!    apply its reports and send the replies they release first;
//! 2. accept until `WouldBlock`; serve each readable connection (and each
//!    one rescheduled from the last turn): execute the frames it has
//!    buffered and read more, with replies appended to write buffers;
//! 3. fire the loop's own timers (see [`guards`](super::guards));
//! 4. apply the log writer's reports (messages made durable become
//!    visible), hand the round's log records to the writer (group commit,
//!    before the pulls are answered so the disk works meanwhile), answer
//!    the waiting pulls that this iteration's publishes woke, then fire the
//!    broker's timers — in that order, so a pull whose deadline falls in
//!    the turn that published for it gets the message — and flush the
//!    journal (lazy cursors, a checkpoint, what answering and timers
//!    appended);
//! 5. flush every connection with new output, asking for `WRITABLE` only
//!    while bytes remain;
//! 6. close the connections marked for closing — never in the middle of a
//!    batch, so a reused slab key cannot receive a stale event.
//!
//! Fair work: one turn serves a connection at most [`WORK_REQUESTS`]
//! requests or [`WORK_REPLY_BYTES`] of replies (and reads at most
//! [`READ_BUDGET_BYTES`]); then it goes on the `again` list and the loop
//! polls without sleeping, so the others get their turn first.
//!
//! Output flow control: a connection whose unsent output reaches
//! `max_output_bytes` (the high-water mark), or holds more than
//! [`GLOBAL_PAUSE_FLOOR`] while unread output is at its share of the memory
//! budget ([`Budget::output_full`](crate::budget::Budget::output_full)), is
//! paused — it executes and reads nothing — until its output drains to half
//! the mark; then it is rescheduled by hand (edges do not fire twice). Its
//! unread requests wait in its read buffer and the kernel's, and TCP pushes
//! back on the client. One whose socket takes no byte for the output
//! timeout is disconnected (see [`guards`](super::guards)).
//!
//! Input flow control works the same way: a connection whose held publishes
//! (waiting for room in a full topic) pass their bound is paused
//! ([`Broker::wants_input`]) until the broker lists it in
//! [`Broker::take_resumable`], drained after each batch.
//!
//! Closing: after the peer's half-close every frame received is executed,
//! its parked pull answered, and the connection closes once its output is
//! sent. A closing connection is flushed until everything is sent (or it
//! stalls), then its write side is shut and its input read and discarded
//! until the peer closes (a lingering close), so unread input does not turn
//! into a reset that destroys the last replies.
//!
//! mio is edge-triggered: every readiness is drained or remembered. The loop
//! dispatches frames to the broker and interprets nothing in them.

use super::guards::{Housekeeping, LoopTimer};
use super::shutdown::ShutdownHandle;
use super::table::{Close, Label, Outbox, Table};
use super::{LISTENER, SIGNALS, Server, WAKER, key_of, token_of};
use crate::broker::{Broker, ConnId};
use crate::codec;
use crate::connection::{BufferPool, Connection, ReadStatus};
use crate::log_limited;
use crate::logging::RateLimit;
use crate::protocol::ErrorCode;
use crate::timers::Timers;
use log::Level;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Most bytes read from one connection before others get a turn.
const READ_BUDGET_BYTES: usize = 1024 * 1024;
/// Most requests one connection executes in one turn of the loop.
const WORK_REQUESTS: usize = 64;
/// Most reply bytes one connection's requests produce in one turn.
const WORK_REPLY_BYTES: usize = 256 * 1024;
/// When the budget is at its output cap, connections with more unread
/// output than this stop executing; those below it go on, so a client that
/// reads its replies is served while the ones that do not are held.
const GLOBAL_PAUSE_FLOOR: usize = 64 * 1024;

/// Why a connection stopped executing frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// No complete frame left in its read buffer.
    Idle,
    /// Its turn's work budget is spent: reschedule it.
    Budget,
    /// Its output is over the high-water mark (or the global cap), or its
    /// held publishes pass their bound: it waits for its output to drain or
    /// the broker to admit them.
    Paused,
    /// It is closing.
    Closing,
}

/// What one connection may still do in this turn.
struct Work {
    requests: usize,
    reply_bytes: usize,
}

impl Work {
    fn new() -> Self {
        Work {
            requests: WORK_REQUESTS,
            reply_bytes: WORK_REPLY_BYTES,
        }
    }

    fn spent(&self) -> bool {
        self.requests == 0 || self.reply_bytes == 0
    }
}

pub(super) struct EventLoop {
    pub(super) poll: Poll,
    pub(super) listener: Option<TcpListener>,
    pub(super) config: super::Config,
    pub(super) shutdown: ShutdownHandle,
    signals: Option<signal_hook_mio::v1_0::Signals>,
    pub(super) table: Table,
    pub(super) pool: BufferPool,
    pub(super) broker: Broker,
    pub(super) timers: Timers<LoopTimer>,
    next_serial: u64,
    /// Connections to serve again next turn (work budget spent, or output
    /// drained after a pause), with their serial so a reused key is skipped.
    pub(super) again: Vec<(ConnId, u64)>,
    /// A descriptor held in reserve: on EMFILE it is closed to accept the
    /// newcomer and tell it `TOO_MANY_CONNECTIONS`, then reopened.
    spare_fd: Option<std::fs::File>,
    /// For lines a client can cause at will (bad frames, timeouts).
    pub(super) bad_input_log: RateLimit,
    pub(super) housekeeping: Housekeeping,
}

impl EventLoop {
    pub(super) fn new(server: Server) -> Self {
        EventLoop {
            poll: server.poll,
            listener: server.listener,
            broker: server.broker,
            config: server.config,
            shutdown: server.shutdown,
            signals: server.signals,
            table: Table::default(),
            pool: BufferPool::default(),
            timers: Timers::new(),
            next_serial: 0,
            again: Vec::new(),
            spare_fd: std::fs::File::open("/dev/null").ok(),
            bad_input_log: RateLimit::new(10, Duration::from_secs(10)),
            housekeeping: Housekeeping::default(),
        }
    }

    pub(super) fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        self.start_housekeeping(Instant::now());
        while !self.shutdown.is_requested() {
            let timeout = if self.again.is_empty() {
                self.next_timeout()
            } else {
                Some(Duration::ZERO)
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let now = Instant::now();
            // The writer's wake first: the replies it releases go out before
            // this round reads more, so publishers waiting for them are not
            // kept waiting behind the round's reading and executing.
            if events.iter().any(|e| e.token() == WAKER) {
                self.settle_journal(now);
            }
            for (key, serial) in std::mem::take(&mut self.again) {
                if self.table.get(key).is_some_and(|c| c.serial == serial) {
                    self.read_from(key, now, true);
                }
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(now),
                    WAKER => {} // settled above
                    SIGNALS => self.take_signals(),
                    token => {
                        let key = key_of(token);
                        if event.is_writable() {
                            self.table.mark_dirty(key);
                        }
                        let closed = event.is_read_closed() || event.is_error();
                        if event.is_readable() || closed {
                            self.read_from(key, now, closed);
                        }
                    }
                }
            }
            self.end_of_batch(Instant::now());
        }
        self.drain_for_shutdown()
    }

    fn next_timeout(&self) -> Option<Duration> {
        let now = Instant::now();
        match (self.timers.until_next(now), self.broker.next_deadline(now)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn take_signals(&mut self) {
        let Some(signals) = &mut self.signals else {
            return;
        };
        let (mut stop, mut reload) = (false, false);
        for signal in signals.pending() {
            match signal {
                signal_hook::consts::SIGHUP => reload = true,
                _ => stop = true,
            }
        }
        if reload {
            self.reload_users();
        }
        if stop {
            log::info!("signal received, shutting down");
            self.shutdown.request();
        }
    }

    /// The broker, and its view of the connections' write buffers.
    pub(super) fn outbox(&mut self) -> (Outbox<'_>, &mut Broker) {
        (
            Outbox {
                table: &mut self.table,
                pool: &mut self.pool,
            },
            &mut self.broker,
        )
    }

    /// How log lines name connection `key`.
    pub(super) fn label(&self, key: ConnId) -> Label<'_> {
        Label::new(key, &self.table, &self.broker)
    }

    pub(super) fn accept(&mut self, now: Instant) {
        loop {
            let Some(listener) = &self.listener else {
                return;
            };
            match listener.accept() {
                Ok((socket, peer)) => self.admit(socket, peer, now),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_out_of_descriptors(&e) && self.spare_fd.is_some() => {
                    self.refuse_without_descriptors(now);
                    self.timers
                        .arm(now + Duration::from_millis(100), LoopTimer::RetryAccept);
                    return;
                }
                Err(e) => {
                    // EMFILE and friends: try again shortly rather than spin.
                    log_limited!(
                        self.bad_input_log,
                        now,
                        Level::Error,
                        "accept failed: {e}; retrying in 100 ms"
                    );
                    self.timers
                        .arm(now + Duration::from_millis(100), LoopTimer::RetryAccept);
                    return;
                }
            }
        }
    }

    /// Out of descriptors: frees the spare one to accept the newcomer, tells
    /// it `TOO_MANY_CONNECTIONS`, closes it, and takes the spare back (as
    /// libuv and nginx do), so a client learns why instead of hanging.
    fn refuse_without_descriptors(&mut self, now: Instant) {
        self.spare_fd = None;
        if let Some(listener) = &self.listener
            && let Ok((socket, peer)) = listener.accept()
        {
            let message = "the broker is out of file descriptors";
            self.refuse(socket, peer, message, now);
        }
        self.spare_fd = std::fs::File::open("/dev/null").ok();
    }

    fn refuse(&mut self, mut socket: TcpStream, peer: SocketAddr, message: &str, now: Instant) {
        let mut frame = Vec::new();
        codec::encode_error(&mut frame, 0, ErrorCode::TooManyConnections, message);
        // Best effort: a fresh socket's buffer takes a small frame whole.
        let _ = socket.write(&frame);
        self.broker.count_error(ErrorCode::TooManyConnections);
        log_limited!(
            self.bad_input_log,
            now,
            Level::Warn,
            "refused {peer}: {message}"
        );
    }

    fn admit(&mut self, mut socket: TcpStream, peer: SocketAddr, now: Instant) {
        if self.table.len() >= self.config.max_connections {
            let message = format!(
                "the broker holds its maximum of {} connections",
                self.config.max_connections
            );
            self.refuse(socket, peer, &message, now);
            return;
        }
        let _ = socket.set_nodelay(true);
        let key = self.table.next_key();
        if let Err(e) =
            self.poll
                .registry()
                .register(&mut socket, token_of(key), Interest::READABLE)
        {
            log_limited!(
                self.bad_input_log,
                now,
                Level::Error,
                "cannot register {peer}: {e}"
            );
            return;
        }
        self.next_serial += 1;
        let serial = self.next_serial;
        let connection = match &self.config.tls {
            None => Connection::new(socket, peer, serial),
            Some(tls) => match Connection::new_tls(socket, peer, serial, tls.clone()) {
                Ok(connection) => connection,
                Err(e) => {
                    log_limited!(self.bad_input_log, now, Level::Error, "TLS for {peer}: {e}");
                    return;
                }
            },
        };
        self.table.insert(connection);
        self.broker.connect(key);
        self.arm_handshake_timeout(key, serial, now);
        log::debug!("{}: accepted", self.label(key));
    }

    /// Executes the frames the connection has buffered and reads more,
    /// until the socket is drained, its turn's work is spent (then it is
    /// rescheduled: the edge will not fire again), or its output is over the
    /// high-water mark (then it waits, unread input pushing back on the
    /// client through TCP, until its output drains). `peer_closed` is the
    /// event's report that the peer has closed.
    fn read_from(&mut self, key: ConnId, now: Instant, peer_closed: bool) {
        let max_frame = self.config.limits.max_frame_bytes;
        let mut read_budget = READ_BUDGET_BYTES;
        let mut work = Work::new();
        let mut drained = false;
        loop {
            let Some(connection) = self.table.get_mut(key) else {
                return;
            };
            if connection.is_closing() {
                if connection.lingering {
                    self.linger(key);
                }
                return;
            }
            match self.execute_frames(key, now, &mut work) {
                Stop::Idle => {}
                Stop::Budget => {
                    self.reschedule(key);
                    break;
                }
                Stop::Paused | Stop::Closing => break,
            }
            let Some(connection) = self.table.get_mut(key) else {
                return;
            };
            if connection.input_ended {
                self.end_of_input(key);
                break;
            }
            if drained {
                break;
            }
            if read_budget == 0 {
                self.reschedule(key);
                break;
            }
            let filled = connection.fill(&mut self.pool, max_frame, peer_closed);
            // TLS handshake records to answer with, though no reply is.
            let tls_flush = connection.wants_flush();
            match filled {
                Ok((status, read)) => {
                    read_budget = read_budget.saturating_sub(read);
                    match status {
                        ReadStatus::Drained => drained = true,
                        ReadStatus::Closed => connection.input_ended = true,
                        ReadStatus::BufferFull => {}
                    }
                    if tls_flush {
                        self.table.mark_dirty(key);
                    }
                }
                Err(e) => {
                    log::debug!("{}: read error: {e}", self.label(key));
                    self.table.close(key, Close::Now);
                    return;
                }
            }
        }
        if let Some(connection) = self.table.get_mut(key) {
            connection.release_buffers(&mut self.pool);
            connection.account(self.broker.budget_mut());
        }
    }

    /// The broker admitted enough of a connection's held publishes to read
    /// it again.
    fn resume(&mut self, key: ConnId) {
        let Some(connection) = self.table.get_mut(key) else {
            return;
        };
        if connection.paused && !connection.is_closing() {
            connection.paused = false;
            self.reschedule(key);
        }
    }

    fn reschedule(&mut self, key: ConnId) {
        if let Some(connection) = self.table.get(key) {
            self.again.push((key, connection.serial));
        }
    }

    /// The peer shut its write side and every complete frame it sent was
    /// executed: its parked pull is answered (empty), and it closes once its
    /// replies are sent.
    fn end_of_input(&mut self, key: ConnId) {
        log::debug!("{}: end of input", self.label(key));
        let (mut outbox, broker) = self.outbox();
        broker.end_of_input(key, &mut outbox);
        self.table.close(key, Close::AfterFlush);
    }

    /// Whether the connection must wait for its output to drain before it
    /// executes more: over its own high-water mark, or holding more than a
    /// little unread output while the budget is at its output cap.
    fn over_output_limit(&self, pending: usize) -> bool {
        pending >= self.config.limits.max_output_bytes
            || (pending > GLOBAL_PAUSE_FLOOR && self.broker.budget().output_full())
    }

    /// Whether a paused connection's output has drained enough to resume:
    /// below the low-water mark (half the high-water mark), and not among
    /// those the global cap holds.
    fn may_resume(&self, pending: usize) -> bool {
        pending <= self.config.limits.max_output_bytes / 2
            && (pending <= GLOBAL_PAUSE_FLOOR || !self.broker.budget().output_full())
    }

    fn execute_frames(&mut self, key: ConnId, now: Instant, work: &mut Work) -> Stop {
        let Some(connection) = self.table.get_mut(key) else {
            return Stop::Closing;
        };
        // The input is moved out while the broker borrows frames from it and
        // writes into any connection's output, this one's included.
        let mut input = std::mem::take(&mut connection.input);
        let was_handshaken = self.broker.is_handshaken(key);
        let mut completed = false;
        let stop = loop {
            let Some(connection) = self.table.get(key) else {
                break Stop::Closing;
            };
            if connection.is_closing() {
                break Stop::Closing;
            }
            let before = connection.pending_output();
            if self.over_output_limit(before) || !self.broker.wants_input(key) {
                if let Some(connection) = self.table.get_mut(key) {
                    connection.paused = true;
                }
                break Stop::Paused;
            }
            if work.spent() {
                break Stop::Budget;
            }
            let max_frame = self.frame_limit(key);
            match input.next_frame(max_frame) {
                Ok(Some((body, used))) => {
                    let (mut outbox, broker) = self.outbox();
                    broker.handle_frame(key, body, now, &mut outbox);
                    input.consume(used);
                    completed = true;
                    let after = self.table.get(key).map_or(0, |c| c.pending_output());
                    work.requests -= 1;
                    work.reply_bytes = work
                        .reply_bytes
                        .saturating_sub(after.saturating_sub(before));
                }
                Ok(None) => break Stop::Idle,
                Err(too_large) => {
                    let message = format!(
                        "frame of {} bytes exceeds the maximum of {}",
                        too_large.len, too_large.max
                    );
                    log_limited!(
                        self.bad_input_log,
                        now,
                        Level::Warn,
                        "{}: {message}",
                        self.label(key)
                    );
                    let (mut outbox, broker) = self.outbox();
                    broker.send_error(key, 0, ErrorCode::FrameTooLarge, &message, &mut outbox);
                    break Stop::Closing;
                }
            }
        };
        if !was_handshaken && self.broker.is_handshaken(key) {
            log::debug!("{}: connected", self.label(key));
        }
        let Some(connection) = self.table.get_mut(key) else {
            return Stop::Closing;
        };
        let partial = !input.unread().is_empty();
        connection.input = input;
        // Frames waiting behind a pause or a spent budget are not a slow
        // frame: the slowloris guard watches only bytes still to arrive.
        let waiting = stop != Stop::Idle && stop != Stop::Closing;
        self.track_partial_frame(key, partial && !waiting, completed, now);
        stop
    }

    /// The largest frame `key` may send now: small until a broker that
    /// requires users has accepted its HELLO.
    fn frame_limit(&self, key: ConnId) -> usize {
        let max = self.config.limits.max_frame_bytes;
        if self.broker.requires_users() && !self.broker.is_handshaken(key) {
            max.min(super::PRE_AUTH_MAX_FRAME_BYTES)
        } else {
            max
        }
    }

    /// Applies the log writer's reports and sends the replies they
    /// release at once: first the publish replies (their publishers are
    /// waiting to send more, which the disk's next round needs), then the
    /// pulls woken by what became visible.
    fn settle_journal(&mut self, now: Instant) {
        let (mut outbox, broker) = self.outbox();
        broker.poll_journal(&mut outbox);
        self.flush_dirty(now);
        let (mut outbox, broker) = self.outbox();
        broker.answer_ready(&mut outbox);
        self.flush_dirty(now);
    }

    fn end_of_batch(&mut self, now: Instant) {
        self.fire_timers(now);
        self.log_auth_failures(now);
        // The log's reports first: messages made durable are visible to
        // the pulls answered next.
        let (mut outbox, broker) = self.outbox();
        broker.poll_journal(&mut outbox);
        // Disk reads back: the pulls waiting for them are answered.
        broker.poll_reads(now, &mut outbox);
        // Group commit: the records of the round's requests go to the
        // writer as one batch now, so the disk works while the pulls are
        // answered; what answering and timers append (and the lazy
        // cursors) go with the round's flush below, never left for a later
        // round, which may be a long sleep away.
        broker.hand_over_journal();
        // Ready pulls first: a pull whose deadline falls in the turn that
        // published for it gets the message, not an empty reply.
        broker.answer_ready(&mut outbox);
        broker.fire_timers(now, &mut outbox);
        broker.flush_journal();
        for key in self.broker.take_resumable() {
            self.resume(key);
        }
        self.flush_dirty(now);
        self.close_marked(now);
    }

    pub(super) fn flush_dirty(&mut self, now: Instant) {
        for key in self.table.take_dirty() {
            self.flush_one(key, now);
        }
    }

    /// Writes what the socket takes; resumes a paused connection whose
    /// output drained; arms its output timeout while output waits; and
    /// for a closing one, once all is sent, begins the lingering close.
    pub(super) fn flush_one(&mut self, key: ConnId, now: Instant) {
        let Some(connection) = self.table.get_mut(key) else {
            return;
        };
        let flushed = connection.flush(&mut self.pool, now);
        let limits = &self.config.limits;
        connection.trim_output(limits.max_output_bytes + limits.max_frame_bytes);
        connection.account(self.broker.budget_mut());
        let Some(connection) = self.table.get_mut(key) else {
            return;
        };
        let sent = match flushed {
            Ok(sent) => sent,
            Err(e) => {
                log::debug!("{}: write error: {e}; disconnecting", self.label(key));
                self.table.close(key, Close::Now);
                return;
            }
        };
        if let Some(interest) = connection.interest_change()
            && let Err(e) =
                self.poll
                    .registry()
                    .reregister(&mut connection.socket, token_of(key), interest)
        {
            log::debug!("{}: reregister failed: {e}; disconnecting", self.label(key));
            self.table.close(key, Close::Now);
            return;
        }
        let pending = connection.pending_output();
        let closing = connection.is_closing();
        if sent && closing {
            // After the peer's half-close every request it sent is answered:
            // publishes still held (or waiting for the disk) keep the
            // connection until their replies are written and flushed.
            let input_ended = self.table.get(key).is_some_and(|c| c.input_ended);
            if !(input_ended && self.broker.awaits_replies(key)) {
                self.begin_linger(key, now);
            }
            return;
        }
        if !sent {
            self.arm_output_timeout(key);
        }
        let paused = self.table.get(key).is_some_and(|c| c.paused);
        if paused && !closing && self.may_resume(pending) {
            if let Some(connection) = self.table.get_mut(key) {
                connection.paused = false;
            }
            self.reschedule(key);
        }
    }

    /// Everything is sent to a closing connection: shut the write side (the
    /// client sees the close after the last reply) and read and discard
    /// what it still sends, so unread input does not make the kernel answer
    /// with a reset that destroys replies the client has not read yet.
    fn begin_linger(&mut self, key: ConnId, now: Instant) {
        let Some(connection) = self.table.get_mut(key) else {
            return;
        };
        if connection.lingering {
            return;
        }
        connection.lingering = true;
        connection.last_progress = now;
        connection.shutdown_write();
        self.arm_output_timeout(key);
        self.linger(key);
    }

    /// Reads and discards a lingering connection's input; lists it for
    /// removal once the peer has closed.
    fn linger(&mut self, key: ConnId) {
        let Some(connection) = self.table.get_mut(key) else {
            return;
        };
        if !matches!(connection.discard_input(), Ok(false)) {
            self.table.drop_closing(key);
        }
    }

    fn close_marked(&mut self, now: Instant) {
        for key in self.table.take_closing() {
            self.flush_one(key, now);
        }
        for key in self.table.take_dropping() {
            self.remove(key, now);
        }
    }

    pub(super) fn remove(&mut self, key: ConnId, now: Instant) {
        if self.table.get(key).is_none() {
            return;
        }
        log::debug!("{}: closed", self.label(key));
        if let Some(mut connection) = self.table.remove(key) {
            let buffers = connection.unaccount(self.broker.budget_mut());
            let _ = self.poll.registry().deregister(&mut connection.socket);
            self.broker.disconnect(key, now);
            self.housekeeping.connection_closed(buffers);
        }
    }
}

/// EMFILE or ENFILE: the process or the system is out of descriptors.
fn is_out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}
