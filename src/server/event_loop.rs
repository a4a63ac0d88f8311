//! The poll loop itself. Each iteration:
//!
//! 1. poll, sleeping no longer than the earliest timer;
//! 2. accept until `WouldBlock`; read each readable connection until
//!    `WouldBlock` (or a per-event budget, after which the connection is
//!    rescheduled by hand — edges do not fire twice), decoding and executing
//!    every complete frame, with replies appended to write buffers;
//! 3. fire due timers (see [`guards`](super::guards) for the loop's own);
//! 4. answer the waiting pulls that this iteration's publishes woke;
//! 5. flush every connection with new output, asking for `WRITABLE` only
//!    while bytes remain;
//! 6. close the connections marked for closing — never in the middle of a
//!    batch, so a reused slab key cannot receive a stale event.
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
    /// Connections that stopped reading at their budget, to resume.
    again: Vec<ConnId>,
    /// For lines a client can cause at will (bad frames, timeouts).
    pub(super) bad_input_log: RateLimit,
    pub(super) housekeeping: Housekeeping,
}

impl EventLoop {
    pub(super) fn new(server: Server) -> Self {
        let now = Instant::now();
        EventLoop {
            poll: server.poll,
            listener: server.listener,
            broker: Broker::new(server.config.limits.clone(), now),
            config: server.config,
            shutdown: server.shutdown,
            signals: server.signals,
            table: Table::default(),
            pool: BufferPool::default(),
            timers: Timers::new(),
            next_serial: 0,
            again: Vec::new(),
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
            for key in std::mem::take(&mut self.again) {
                self.read_from(key, now, true);
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(now),
                    WAKER => {}
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
        if let Some(signals) = &mut self.signals
            && signals.pending().next().is_some()
        {
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
                Err(e) => {
                    // EMFILE and friends: try again shortly rather than spin.
                    log::error!("accept failed: {e}; retrying in 100 ms");
                    self.timers
                        .arm(now + Duration::from_millis(100), LoopTimer::RetryAccept);
                    return;
                }
            }
        }
    }

    fn admit(&mut self, mut socket: TcpStream, peer: SocketAddr, now: Instant) {
        if self.table.len() >= self.config.max_connections {
            let mut frame = Vec::new();
            let message = format!(
                "the broker holds its maximum of {} connections",
                self.config.max_connections
            );
            codec::encode_error(&mut frame, 0, ErrorCode::TooManyConnections, &message);
            // Best effort: a fresh socket's buffer takes a small frame whole.
            let _ = socket.write(&frame);
            self.broker.count_error(ErrorCode::TooManyConnections);
            log_limited!(
                self.bad_input_log,
                now,
                Level::Warn,
                "refused {peer}: {message}"
            );
            return;
        }
        let _ = socket.set_nodelay(true);
        let key = self.table.next_key();
        if let Err(e) =
            self.poll
                .registry()
                .register(&mut socket, token_of(key), Interest::READABLE)
        {
            log::error!("cannot register {peer}: {e}");
            return;
        }
        self.next_serial += 1;
        let serial = self.next_serial;
        self.table.insert(Connection::new(socket, peer, serial));
        self.broker.connect(key);
        self.arm_handshake_timeout(key, serial, now);
        log::debug!("{}: accepted", self.label(key));
    }

    /// Reads what the connection has and executes every complete frame.
    /// `peer_closed` is the event's report that the peer has closed.
    fn read_from(&mut self, key: ConnId, now: Instant, peer_closed: bool) {
        let max_frame = self.config.limits.max_frame_bytes;
        let mut budget = READ_BUDGET_BYTES;
        loop {
            let Some(connection) = self.table.get_mut(key) else {
                return;
            };
            if connection.is_closing() {
                return;
            }
            let (status, read) = match connection.fill(&mut self.pool, max_frame, peer_closed) {
                Ok(result) => result,
                Err(e) => {
                    log::debug!("{}: read error: {e}", self.label(key));
                    self.table.close(key, Close::Now);
                    return;
                }
            };
            budget = budget.saturating_sub(read);
            self.execute_frames(key, now);
            match status {
                ReadStatus::Drained => break,
                ReadStatus::Closed => {
                    self.table.close(key, Close::Now);
                    break;
                }
                ReadStatus::BufferFull if budget == 0 => {
                    self.again.push(key);
                    break;
                }
                ReadStatus::BufferFull => {}
            }
        }
        if let Some(connection) = self.table.get_mut(key) {
            connection.release_buffers(&mut self.pool);
        }
    }

    fn execute_frames(&mut self, key: ConnId, now: Instant) {
        let max_frame = self.config.limits.max_frame_bytes;
        let max_output = self.config.max_output_bytes;
        let Some(connection) = self.table.get_mut(key) else {
            return;
        };
        // The input is moved out while the broker borrows frames from it and
        // writes into any connection's output, this one's included.
        let mut input = std::mem::take(&mut connection.input);
        let was_handshaken = self.broker.is_handshaken(key);
        let mut completed = false;
        loop {
            match input.next_frame(max_frame) {
                Ok(Some((body, used))) => {
                    let (mut outbox, broker) = self.outbox();
                    broker.handle_frame(key, body, now, &mut outbox);
                    input.consume(used);
                    completed = true;
                }
                Ok(None) => break,
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
                    break;
                }
            }
            let Some(connection) = self.table.get(key) else {
                break;
            };
            if connection.is_closing() {
                break;
            }
            let pending = connection.pending_output();
            if pending > max_output {
                log::warn!(
                    "{}: {pending} bytes of replies unread (limit {max_output}); disconnecting",
                    self.label(key)
                );
                self.table.close(key, Close::Now);
                break;
            }
        }
        if !was_handshaken && self.broker.is_handshaken(key) {
            log::debug!("{}: connected", self.label(key));
        }
        let Some(connection) = self.table.get_mut(key) else {
            return;
        };
        let partial = !input.unread().is_empty();
        connection.input = input;
        self.track_partial_frame(key, partial, completed, now);
    }

    fn end_of_batch(&mut self, now: Instant) {
        self.fire_timers(now);
        let (mut outbox, broker) = self.outbox();
        broker.fire_timers(now, &mut outbox);
        broker.answer_ready(&mut outbox);
        self.flush_dirty();
        self.close_marked(now);
    }

    fn flush_dirty(&mut self) {
        let max_output = self.config.max_output_bytes;
        for key in self.table.take_dirty() {
            let Some(connection) = self.table.get_mut(key) else {
                continue;
            };
            let outcome = match connection.flush(&mut self.pool) {
                Ok(_) if connection.pending_output() > max_output => Err(format!(
                    "{} bytes of replies unread",
                    connection.pending_output()
                )),
                Ok(_) => match connection.interest_change() {
                    Some(interest) => self
                        .poll
                        .registry()
                        .reregister(&mut connection.socket, token_of(key), interest)
                        .map_err(|e| format!("reregister failed: {e}")),
                    None => Ok(()),
                },
                Err(e) => Err(format!("write error: {e}")),
            };
            if let Err(why) = outcome {
                log::debug!("{}: {why}; disconnecting", self.label(key));
                self.table.close(key, Close::Now);
            }
        }
    }

    fn close_marked(&mut self, now: Instant) {
        for key in self.table.take_closing() {
            // One last try at sending the error that caused the close.
            if let Some(connection) = self.table.get_mut(key) {
                let _ = connection.flush(&mut self.pool);
            }
            self.remove(key, now);
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
            let _ = self.poll.registry().deregister(&mut connection.socket);
            self.broker.disconnect(key, now);
            self.housekeeping.connection_closed();
        }
    }
}
