//! The poll loop: the only module that knows mio.
//!
//! One thread, one `mio::Poll`, a slab of connections. Each iteration:
//!
//! 1. poll, sleeping no longer than the earliest timer;
//! 2. accept until `WouldBlock`; read each readable connection until
//!    `WouldBlock` (or a per-event budget, after which the connection is
//!    rescheduled by hand — edges do not fire twice), decoding and executing
//!    every complete frame, with replies appended to write buffers;
//! 3. fire due timers (pull deadlines, session expiry, handshake and
//!    partial-frame timeouts);
//! 4. answer the waiting pulls that this iteration's publishes woke;
//! 5. flush every connection with new output, asking for `WRITABLE` only
//!    while bytes remain;
//! 6. close the connections marked for closing — never in the middle of a
//!    batch, so a reused slab key cannot receive a stale event.
//!
//! mio is edge-triggered: every readiness is drained or remembered. Errors on
//! one connection close that connection; nothing a client does returns from
//! the loop.

use crate::broker::{self, Broker, ConnId, Limits};
use crate::codec;
use crate::connection::{BufferPool, Connection, ReadStatus};
use crate::log::RateLimited;
use crate::protocol::ErrorCode;
use crate::timers::Timers;
use crate::{log_debug, log_error, log_info, log_warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
const SIGNALS: Token = Token(2);
const FIRST_CONNECTION: usize = 3;

fn token_of(key: ConnId) -> Token {
    Token(key + FIRST_CONNECTION)
}

fn key_of(token: Token) -> ConnId {
    token.0 - FIRST_CONNECTION
}

/// Most bytes read from one connection before others get a turn.
const READ_BUDGET_BYTES: usize = 1024 * 1024;

/// Everything the broker can be told at start.
#[derive(Debug, Clone)]
pub struct Config {
    pub addr: SocketAddr,
    pub limits: Limits,
    /// Connections beyond this get `TOO_MANY_CONNECTIONS` and are closed.
    pub max_connections: usize,
    /// A client whose unread replies exceed this is disconnected.
    pub max_output_bytes: usize,
    /// Time allowed from accept to a completed HELLO.
    pub handshake_timeout: Duration,
    /// Time allowed for one frame to arrive once its first byte has.
    pub frame_timeout: Duration,
    /// How long shutdown waits for write buffers to drain.
    pub shutdown_grace: Duration,
    /// Stop on SIGINT and SIGTERM (the `broker` binary sets this).
    pub handle_signals: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            addr: SocketAddr::from(([127, 0, 0, 1], 5555)),
            limits: Limits::default(),
            max_connections: 16_384,
            max_output_bytes: 16 * 1024 * 1024,
            handshake_timeout: Duration::from_secs(10),
            frame_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(5),
            handle_signals: false,
        }
    }
}

/// Asks a running server to stop, from any thread.
#[derive(Clone)]
pub struct ShutdownHandle {
    flag: Arc<AtomicBool>,
    waker: Arc<Waker>,
}

impl ShutdownHandle {
    pub fn shutdown(&self) {
        self.flag.store(true, Ordering::SeqCst);
        // If the wake fails the loop still sees the flag at its next timer.
        let _ = self.waker.wake();
    }
}

/// Timers of the loop itself (the broker keeps its own).
#[derive(Debug, Clone, Copy)]
enum LoopTimer {
    Handshake { key: ConnId, serial: u64 },
    PartialFrame { key: ConnId, serial: u64 },
    RetryAccept,
    Housekeeping,
}

/// How often the loop considers returning freed memory to the system.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(1);

/// A bound, not yet running, broker.
pub struct Server {
    poll: Poll,
    listener: Option<TcpListener>,
    local_addr: SocketAddr,
    config: Config,
    shutdown: ShutdownHandle,
    signals: Option<signal_hook_mio::v1_0::Signals>,
}

impl Server {
    /// Binds the listening socket; `run` then serves it.
    pub fn bind(config: Config) -> io::Result<Server> {
        if config.limits.max_backlog_bytes < config.limits.max_frame_bytes {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "max backlog bytes must be at least the max frame bytes, or a full batch could never be published",
            ));
        }
        let poll = Poll::new()?;
        let mut listener = TcpListener::bind(config.addr)?;
        let local_addr = listener.local_addr()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let signals = if config.handle_signals {
            let mut signals = signal_hook_mio::v1_0::Signals::new([
                signal_hook::consts::SIGINT,
                signal_hook::consts::SIGTERM,
            ])?;
            poll.registry()
                .register(&mut signals, SIGNALS, Interest::READABLE)?;
            Some(signals)
        } else {
            None
        };
        Ok(Server {
            poll,
            listener: Some(listener),
            local_addr,
            config,
            shutdown: ShutdownHandle {
                flag: Arc::new(AtomicBool::new(false)),
                waker,
            },
            signals,
        })
    }

    /// The address actually bound (with the real port when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// Serves until shut down. Returns after waiting pulls were answered and
    /// write buffers flushed (or the grace period ran out).
    pub fn run(self) -> io::Result<()> {
        EventLoop::new(self).run()
    }
}

/// A server running on its own thread, for tests and the bench tool.
pub struct RunningServer {
    addr: SocketAddr,
    handle: ShutdownHandle,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl RunningServer {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.handle.clone()
    }

    /// Shuts down and waits for the loop to finish.
    pub fn stop(mut self) -> io::Result<()> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> io::Result<()> {
        self.handle.shutdown();
        match self.thread.take() {
            Some(thread) => thread
                .join()
                .map_err(|_| io::Error::other("broker thread panicked"))?,
            None => Ok(()),
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        let _ = self.stop_inner();
    }
}

/// Binds and runs a broker on a new thread.
pub fn spawn(config: Config) -> io::Result<RunningServer> {
    let server = Server::bind(config)?;
    let addr = server.local_addr();
    let handle = server.shutdown_handle();
    let thread = std::thread::Builder::new()
        .name("courier-broker".into())
        .spawn(move || server.run())?;
    Ok(RunningServer {
        addr,
        handle,
        thread: Some(thread),
    })
}

/// The broker's view of the connections' write buffers.
struct Outbox<'a> {
    connections: &'a mut Slab<Connection>,
    pool: &'a mut BufferPool,
    dirty: &'a mut Vec<ConnId>,
    closing: &'a mut Vec<ConnId>,
}

impl broker::Outbox for Outbox<'_> {
    fn buffer(&mut self, conn: ConnId) -> Option<&mut Vec<u8>> {
        let connection = self.connections.get_mut(conn)?;
        if !connection.dirty {
            connection.dirty = true;
            self.dirty.push(conn);
        }
        Some(connection.output(self.pool))
    }

    fn close(&mut self, conn: ConnId) {
        if let Some(connection) = self.connections.get_mut(conn)
            && !connection.closing
        {
            connection.closing = true;
            self.closing.push(conn);
        }
    }
}

struct EventLoop {
    poll: Poll,
    listener: Option<TcpListener>,
    config: Config,
    shutdown: ShutdownHandle,
    signals: Option<signal_hook_mio::v1_0::Signals>,
    connections: Slab<Connection>,
    pool: BufferPool,
    broker: Broker,
    timers: Timers<LoopTimer>,
    next_serial: u64,
    /// Connections with output to flush at the end of the iteration.
    dirty: Vec<ConnId>,
    /// Connections to close at the end of the iteration (after a last flush).
    closing: Vec<ConnId>,
    /// Connections to close at once, without flushing.
    dropping: Vec<ConnId>,
    /// Connections that stopped reading at their budget, to resume.
    again: Vec<ConnId>,
    bad_input_log: RateLimited,
    /// Connections closed since the last housekeeping.
    closed_since_housekeeping: usize,
    /// Retained bytes at the last housekeeping.
    backlog_at_housekeeping: u64,
}

impl EventLoop {
    fn new(server: Server) -> Self {
        let now = Instant::now();
        EventLoop {
            poll: server.poll,
            listener: server.listener,
            broker: Broker::new(server.config.limits.clone(), now),
            config: server.config,
            shutdown: server.shutdown,
            signals: server.signals,
            connections: Slab::new(),
            pool: BufferPool::default(),
            timers: Timers::new(),
            next_serial: 0,
            dirty: Vec::new(),
            closing: Vec::new(),
            dropping: Vec::new(),
            again: Vec::new(),
            bad_input_log: RateLimited::new(10, Duration::from_secs(10)),
            closed_since_housekeeping: 0,
            backlog_at_housekeeping: 0,
        }
    }

    fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        self.timers.arm(
            Instant::now() + HOUSEKEEPING_INTERVAL,
            LoopTimer::Housekeeping,
        );
        while !self.shutdown.flag.load(Ordering::SeqCst) {
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
                            self.mark_dirty(key);
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
            log_info!("signal received, shutting down");
            self.shutdown.flag.store(true, Ordering::SeqCst);
        }
    }

    fn outbox(&mut self) -> (Outbox<'_>, &mut Broker) {
        (
            Outbox {
                connections: &mut self.connections,
                pool: &mut self.pool,
                dirty: &mut self.dirty,
                closing: &mut self.closing,
            },
            &mut self.broker,
        )
    }

    fn accept(&mut self, now: Instant) {
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
                    log_error!("accept failed: {e}; retrying in 100 ms");
                    self.timers
                        .arm(now + Duration::from_millis(100), LoopTimer::RetryAccept);
                    return;
                }
            }
        }
    }

    fn admit(&mut self, mut socket: TcpStream, peer: SocketAddr, now: Instant) {
        if self.connections.len() >= self.config.max_connections {
            let mut frame = Vec::new();
            let message = format!(
                "the broker holds its maximum of {} connections",
                self.config.max_connections
            );
            codec::encode_error(&mut frame, 0, ErrorCode::TooManyConnections, &message);
            // Best effort: a fresh socket's buffer takes a small frame whole.
            let _ = socket.write(&frame);
            self.broker.count_error(ErrorCode::TooManyConnections);
            log_warn!("refused {peer}: {message}");
            return;
        }
        let _ = socket.set_nodelay(true);
        let entry = self.connections.vacant_entry();
        let key = entry.key();
        if let Err(e) =
            self.poll
                .registry()
                .register(&mut socket, token_of(key), Interest::READABLE)
        {
            log_error!("cannot register {peer}: {e}");
            return;
        }
        self.next_serial += 1;
        let serial = self.next_serial;
        entry.insert(Connection::new(socket, serial));
        self.broker.connect(key);
        self.timers.arm(
            now + self.config.handshake_timeout,
            LoopTimer::Handshake { key, serial },
        );
        log_debug!("accepted {peer} as connection {key}");
    }

    fn mark_dirty(&mut self, key: ConnId) {
        if let Some(connection) = self.connections.get_mut(key)
            && !connection.dirty
        {
            connection.dirty = true;
            self.dirty.push(key);
        }
    }

    fn drop_connection(&mut self, key: ConnId) {
        if let Some(connection) = self.connections.get_mut(key)
            && !connection.closing
        {
            connection.closing = true;
            self.dropping.push(key);
        }
    }

    /// Reads what the connection has and executes every complete frame.
    /// `peer_closed` is the event's report that the peer has closed.
    fn read_from(&mut self, key: ConnId, now: Instant, peer_closed: bool) {
        let max_frame = self.config.limits.max_frame_bytes;
        let mut budget = READ_BUDGET_BYTES;
        loop {
            let Some(connection) = self.connections.get_mut(key) else {
                return;
            };
            if connection.closing {
                return;
            }
            let (status, read) = match connection.fill(&mut self.pool, max_frame, peer_closed) {
                Ok(result) => result,
                Err(e) => {
                    log_debug!("connection {key}: read error: {e}");
                    self.drop_connection(key);
                    return;
                }
            };
            budget = budget.saturating_sub(read);
            self.execute_frames(key, now);
            match status {
                ReadStatus::Drained => break,
                ReadStatus::Closed => {
                    self.drop_connection(key);
                    break;
                }
                ReadStatus::BufferFull if budget == 0 => {
                    self.again.push(key);
                    break;
                }
                ReadStatus::BufferFull => {}
            }
        }
        if let Some(connection) = self.connections.get_mut(key) {
            connection.release_buffers(&mut self.pool);
        }
    }

    fn execute_frames(&mut self, key: ConnId, now: Instant) {
        let max_frame = self.config.limits.max_frame_bytes;
        let max_output = self.config.max_output_bytes;
        let Some(connection) = self.connections.get_mut(key) else {
            return;
        };
        // The input is moved out while the broker borrows frames from it and
        // writes into any connection's output, this one's included.
        let mut input = std::mem::take(&mut connection.input);
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
                    self.bad_input_log.write(
                        now,
                        crate::log::Level::Warn,
                        format_args!("connection {key}: {message}"),
                    );
                    let (mut outbox, broker) = self.outbox();
                    broker.send_error(key, 0, ErrorCode::FrameTooLarge, &message, &mut outbox);
                    break;
                }
            }
            let Some(connection) = self.connections.get(key) else {
                break;
            };
            if connection.closing {
                break;
            }
            if connection.pending_output() > max_output {
                log_warn!(
                    "connection {key}: {} bytes of replies unread (limit {max_output}); disconnecting",
                    connection.pending_output()
                );
                self.drop_connection(key);
                break;
            }
        }
        let Some(connection) = self.connections.get_mut(key) else {
            return;
        };
        let partial = !input.unread().is_empty();
        connection.input = input;
        self.track_partial_frame(key, partial, completed, now);
    }

    /// Arms the slowloris guard: a frame must finish arriving within
    /// `frame_timeout` of its first byte.
    fn track_partial_frame(&mut self, key: ConnId, partial: bool, completed: bool, now: Instant) {
        let timeout = self.config.frame_timeout;
        let Some(connection) = self.connections.get_mut(key) else {
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

    fn end_of_batch(&mut self, now: Instant) {
        self.fire_timers(now);
        let (mut outbox, broker) = self.outbox();
        broker.fire_timers(now, &mut outbox);
        broker.answer_ready(&mut outbox);
        self.flush_dirty();
        self.close_marked(now);
    }

    fn fire_timers(&mut self, now: Instant) {
        while let Some((_, timer)) = self.timers.pop_due(now) {
            match timer {
                LoopTimer::RetryAccept => self.accept(now),
                LoopTimer::Housekeeping => {
                    self.housekeeping();
                    self.timers
                        .arm(now + HOUSEKEEPING_INTERVAL, LoopTimer::Housekeeping);
                }
                LoopTimer::Handshake { key, serial } => {
                    let live = self
                        .connections
                        .get(key)
                        .is_some_and(|c| c.serial == serial && !c.closing);
                    if live && !self.broker.is_handshaken(key) {
                        self.time_out(key, "no HELLO within the handshake timeout", now);
                    }
                }
                LoopTimer::PartialFrame { key, serial } => {
                    let Some(connection) = self.connections.get_mut(key) else {
                        continue;
                    };
                    if connection.serial != serial || connection.closing {
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
        let shrank = self.backlog_at_housekeeping.saturating_sub(backlog) >= 1 << 20;
        if self.closed_since_housekeeping > 0 || shrank {
            self.pool = BufferPool::default();
            crate::memory::release_free_memory();
        }
        self.closed_since_housekeeping = 0;
        self.backlog_at_housekeeping = backlog;
    }

    fn time_out(&mut self, key: ConnId, why: &str, now: Instant) {
        self.bad_input_log.write(
            now,
            crate::log::Level::Info,
            format_args!("connection {key}: {why}; closing"),
        );
        let (mut outbox, broker) = self.outbox();
        broker.send_error(key, 0, ErrorCode::Timeout, why, &mut outbox);
    }

    fn flush_dirty(&mut self) {
        let max_output = self.config.max_output_bytes;
        for key in std::mem::take(&mut self.dirty) {
            let Some(connection) = self.connections.get_mut(key) else {
                continue;
            };
            connection.dirty = false;
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
                log_debug!("connection {key}: {why}; disconnecting");
                self.drop_connection(key);
            }
        }
    }

    fn close_marked(&mut self, now: Instant) {
        for key in std::mem::take(&mut self.closing) {
            // One last try at sending the error that caused the close.
            if let Some(connection) = self.connections.get_mut(key) {
                let _ = connection.flush(&mut self.pool);
            }
            self.remove(key, now);
        }
        for key in std::mem::take(&mut self.dropping) {
            self.remove(key, now);
        }
    }

    fn remove(&mut self, key: ConnId, now: Instant) {
        if let Some(mut connection) = self.connections.try_remove(key) {
            let _ = self.poll.registry().deregister(&mut connection.socket);
            self.broker.disconnect(key, now);
            self.closed_since_housekeeping += 1;
            log_debug!("connection {key} closed");
        }
    }

    /// Stops accepting, answers waiting pulls, tells every client, and
    /// flushes for at most the grace period.
    fn drain_for_shutdown(mut self) -> io::Result<()> {
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        let (mut outbox, broker) = self.outbox();
        broker.shutdown(&mut outbox);
        // Connections whose waiting pull was just answered are closing;
        // every other one is told with id 0.
        let keys: Vec<ConnId> = self
            .connections
            .iter()
            .filter(|(_, c)| !c.closing)
            .map(|(key, _)| key)
            .collect();
        for key in keys {
            let (mut outbox, broker) = self.outbox();
            broker.send_error(
                key,
                0,
                ErrorCode::ShuttingDown,
                "the broker is shutting down",
                &mut outbox,
            );
        }
        let deadline = Instant::now() + self.config.shutdown_grace;
        let mut events = Events::with_capacity(1024);
        loop {
            for key in std::mem::take(&mut self.closing) {
                if let Some(connection) = self.connections.get_mut(key) {
                    match connection.flush(&mut self.pool) {
                        Ok(false) => {
                            self.closing.push(key);
                            if let Some(interest) = connection.interest_change() {
                                let _ = self.poll.registry().reregister(
                                    &mut connection.socket,
                                    token_of(key),
                                    interest,
                                );
                            }
                        }
                        _ => self.remove(key, Instant::now()),
                    }
                }
            }
            let now = Instant::now();
            if self.closing.is_empty() || now >= deadline {
                break;
            }
            match self.poll.poll(&mut events, Some(deadline - now)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let unflushed = self.closing.len();
        if unflushed > 0 {
            log_warn!(
                "{unflushed} connections still had unsent replies at the end of the grace period"
            );
        }
        Ok(())
    }
}
