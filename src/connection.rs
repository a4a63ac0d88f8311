//! One client's socket with its own read and write buffers.
//!
//! The read side is a flat buffer with a consumed offset: bytes are read into
//! the free tail, complete frames are decoded in place (borrowed, not copied),
//! and the leftover partial frame is moved to the front only when the tail runs
//! out. The buffer grows only when one frame needs more room than it has, and
//! then geometrically (doubling, capped by the frame's announced length and the
//! frame limit), so it follows the bytes that actually arrived: a header
//! announcing a megabyte pins at most twice what was sent, not the megabyte.
//!
//! The write side is a `Vec` that replies are appended to, plus how much of it
//! the socket has taken: short writes just leave the rest for the next
//! writable event, and write interest is requested only while bytes remain.
//! Once half of it is sent the unsent tail moves to the front, and a buffer
//! much larger than what it holds shrinks, so a client that reads steadily
//! but never lets its buffer empty does not keep a buffer sized by its past.
//!
//! Buffers are lent by a [`BufferPool`] while a connection has bytes in
//! flight and returned when it goes quiet, so ten thousand idle connections
//! cost a few hundred bytes each, not a buffer each. Each connection counts
//! the capacity of the buffers it holds in the broker's [`Budget`]
//! (`ReadBuffers`, `WriteBuffers`) through [`Connection::account`]; the
//! pool's idle buffers are not counted — the pool is small (at most
//! [`POOL_SIZE`] buffers of each kind) and emptied by housekeeping.
//!
//! TLS (a listener with a certificate): the connection holds a rustls
//! `ServerConnection` beside its socket. Reads go socket → rustls →
//! the same read buffer, writes the same write buffer → rustls → socket, in
//! chunks of at most [`TLS_CHUNK`] so rustls never holds more than one
//! chunk of records; the plaintext path is one `if` away and copies
//! nothing more than before. rustls's own buffers are not visible, so they
//! are counted at their bound: [`TLS_READ_STATE`] per connection on the
//! read side, and [`TLS_CHUNK`] on the write side while records wait. A
//! peer whose bytes are not TLS (a plaintext client) gets an alert and an
//! immediate close.

use crate::budget::{Budget, Class};
use crate::codec::{self, FrameTooLarge};
use crate::protocol::FRAME_HEADER_LEN;
use mio::Interest;
use mio::net::TcpStream;
use rustls::ServerConnection;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::Instant;

/// Most plaintext handed to rustls at once, and its buffer limit: one
/// chunk of encrypted records waits in rustls at most.
pub const TLS_CHUNK: usize = 64 * 1024;
/// What rustls holds per connection on the read side, at most: a record
/// being reassembled (16 KiB plus overhead), the plaintext decrypted and
/// not yet taken (bounded by rustls at 16 KiB), and its session state.
pub const TLS_READ_STATE: usize = 40 * 1024;

/// Size of a pooled read buffer; also the most read in one `read` call.
pub const READ_BUFFER_BYTES: usize = 64 * 1024;
/// Write buffers larger than this go back to the allocator, not the pool.
const POOLED_WRITE_BUFFER_MAX: usize = 1024 * 1024;
/// A write buffer whose capacity exceeds both this and twice what it holds
/// is shrunk after a flush.
const WRITE_SHRINK_FLOOR: usize = 256 * 1024;
/// Buffers kept for reuse, per kind.
pub const POOL_SIZE: usize = 64;

/// Spare buffers shared by all connections of one loop.
#[derive(Debug, Default)]
pub struct BufferPool {
    read: Vec<Vec<u8>>,
    write: Vec<Vec<u8>>,
}

impl BufferPool {
    fn take_read(&mut self) -> Vec<u8> {
        self.read
            .pop()
            .unwrap_or_else(|| vec![0; READ_BUFFER_BYTES])
    }

    fn give_read(&mut self, buf: Vec<u8>) {
        if buf.len() == READ_BUFFER_BYTES && self.read.len() < POOL_SIZE {
            self.read.push(buf);
        }
    }

    pub fn take_write(&mut self) -> Vec<u8> {
        self.write.pop().unwrap_or_default()
    }

    fn give_write(&mut self, mut buf: Vec<u8>) {
        if buf.capacity() <= POOLED_WRITE_BUFFER_MAX && self.write.len() < POOL_SIZE {
            buf.clear();
            self.write.push(buf);
        }
    }
}

/// Bytes read from the socket and not yet consumed as frames.
#[derive(Debug, Default)]
pub struct Input {
    /// Always fully initialised; `start..end` holds unconsumed bytes.
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Input {
    pub fn unread(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// The next complete frame's body and total length, if one is buffered.
    pub fn next_frame(&self, max_body: usize) -> Result<Option<(&[u8], usize)>, FrameTooLarge> {
        codec::split_frame(self.unread(), max_body)
    }

    /// Makes room for the next read: reuses the consumed front, and grows
    /// only when the frame being received cannot fit otherwise.
    fn make_room(&mut self, pool: &mut BufferPool, max_body: usize) {
        if self.buf.is_empty() {
            self.buf = pool.take_read();
        }
        if self.end < self.buf.len() {
            return;
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.end < self.buf.len() {
                return;
            }
        }
        // Full of one unfinished frame: grow towards it, doubling, so the
        // buffer follows what arrived rather than what was announced. A
        // length over the limit is not grown for; executing frames refuses it.
        if let Some(header) = self.unread().first_chunk::<FRAME_HEADER_LEN>() {
            let len = u32::from_be_bytes(*header) as usize;
            let wanted = FRAME_HEADER_LEN + len;
            if len <= max_body && wanted > self.buf.len() {
                let grown = wanted.min(self.buf.len().saturating_mul(2));
                self.buf.resize(grown, 0);
            }
        }
    }

    fn release(&mut self, pool: &mut BufferPool) {
        if self.start == self.end && !self.buf.is_empty() {
            pool.give_read(std::mem::take(&mut self.buf));
            self.start = 0;
            self.end = 0;
        }
    }
}

/// How a round of reading ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadStatus {
    /// The socket has nothing more for now.
    Drained,
    /// The buffer filled up; process frames and read again.
    BufferFull,
    /// The peer closed its side.
    Closed,
}

pub struct Connection {
    pub socket: TcpStream,
    /// The TLS session, on a TLS listener.
    tls: Option<Box<ServerConnection>>,
    /// TLS records read from the socket and not yet handed to rustls:
    /// rustls reads at most 4 KiB per call, so the socket is read here in
    /// [`READ_BUFFER_BYTES`] gulps (a pooled read buffer, returned once
    /// empty) and rustls is fed from memory — a quarter of the syscalls.
    tls_in: Input,
    /// The peer's address, kept for log lines.
    pub peer: SocketAddr,
    /// Distinguishes this connection from earlier ones with the same key,
    /// so that a timer armed for one never fires on another.
    pub serial: u64,
    pub input: Input,
    output: Vec<u8>,
    written: usize,
    interest: Interest,
    /// When the frame now partly buffered began to arrive.
    pub partial_since: Option<Instant>,
    pub partial_timer_armed: bool,
    /// Listed in the loop's set of connections with output to flush. Private
    /// with `closing` so that each flag changes only together with the
    /// loop's list it mirrors (see `server::table`).
    dirty: bool,
    /// Closing: read nothing more, flush what is buffered, then close.
    closing: bool,
    /// Buffer capacity last counted in the budget: (read, write).
    counted: (usize, usize),
    /// Output passed the high-water mark: its requests wait until it drains.
    pub paused: bool,
    /// The peer shut its write side: execute what came, flush, then close.
    pub input_ended: bool,
    /// Last time the socket took a byte, or output began to wait; the output
    /// timeout counts from here.
    pub last_progress: Instant,
    /// Bytes written to the socket ever, and of them how many the peer had
    /// taken at the last look ([`Connection::note_delivery`]).
    sent_total: u64,
    delivered: u64,
    pub output_timer_armed: bool,
    /// Closing, everything sent and the write side shut: input is read and
    /// discarded until the peer closes or the linger time passes.
    pub lingering: bool,
}

impl Connection {
    pub fn new(socket: TcpStream, peer: SocketAddr, serial: u64) -> Self {
        Connection {
            socket,
            tls: None,
            tls_in: Input::default(),
            peer,
            serial,
            input: Input::default(),
            output: Vec::new(),
            written: 0,
            interest: Interest::READABLE,
            partial_since: None,
            partial_timer_armed: false,
            dirty: false,
            closing: false,
            counted: (0, 0),
            paused: false,
            input_ended: false,
            last_progress: Instant::now(),
            sent_total: 0,
            delivered: 0,
            output_timer_armed: false,
            lingering: false,
        }
    }

    /// A connection that speaks TLS with `config`.
    pub fn new_tls(
        socket: TcpStream,
        peer: SocketAddr,
        serial: u64,
        config: std::sync::Arc<rustls::ServerConfig>,
    ) -> Result<Self, rustls::Error> {
        let mut tls = ServerConnection::new(config)?;
        tls.set_buffer_limit(Some(TLS_CHUNK));
        let mut connection = Connection::new(socket, peer, serial);
        connection.tls = Some(Box::new(tls));
        Ok(connection)
    }

    /// TLS records (handshake messages, alerts) wait to be written: the
    /// loop must flush even with no reply queued.
    pub fn wants_flush(&self) -> bool {
        self.tls.as_ref().is_some_and(|tls| tls.wants_write())
    }

    /// What rustls holds, as counted (see the module doc): (read, write).
    fn tls_held(&self) -> (usize, usize) {
        match &self.tls {
            None => (0, 0),
            Some(tls) => (
                TLS_READ_STATE + self.tls_in.buf.capacity(),
                if tls.wants_write() { TLS_CHUNK } else { 0 },
            ),
        }
    }

    /// Brings the budget's `ReadBuffers` and `WriteBuffers` in line with the
    /// buffers this connection holds now.
    pub fn account(&mut self, budget: &mut Budget) {
        let tls = self.tls_held();
        let now = (
            self.input.buf.capacity() + tls.0,
            self.output.capacity() + tls.1,
        );
        recount(budget, Class::ReadBuffers, self.counted.0, now.0);
        recount(budget, Class::WriteBuffers, self.counted.1, now.1);
        self.counted = now;
    }

    /// Gives back everything [`account`](Self::account) counted, as the
    /// connection goes; the bytes its buffers held.
    pub fn unaccount(&mut self, budget: &mut Budget) -> usize {
        budget.sub(Class::ReadBuffers, self.counted.0);
        budget.sub(Class::WriteBuffers, self.counted.1);
        let tls = self.tls_held();
        let held = self.input.buf.capacity() + self.output.capacity() + tls.0 + tls.1;
        self.counted = (0, 0);
        held
    }

    /// Reads and drops whatever the peer still sends, for a lingering close.
    /// `Ok(true)` once the peer has closed.
    pub fn discard_input(&mut self) -> io::Result<bool> {
        let mut sink = [0u8; 4096];
        loop {
            match self.socket.read(&mut sink) {
                Ok(0) => return Ok(true),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Marks the connection as having output to flush. `true` when it was
    /// not marked yet, so the caller lists it exactly once.
    pub fn mark_dirty(&mut self) -> bool {
        !std::mem::replace(&mut self.dirty, true)
    }

    /// Clears the mark as the caller takes the connection off its list.
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    /// Marks the connection as closing. `true` when it was not closing yet,
    /// so the caller lists it exactly once.
    pub fn begin_close(&mut self) -> bool {
        !std::mem::replace(&mut self.closing, true)
    }

    /// Closing: nothing more is read or executed.
    pub fn is_closing(&self) -> bool {
        self.closing
    }

    /// Reads until the socket would block or the buffer is full.
    /// `peer_closed`: the readiness event already reported the peer's close.
    pub fn fill(
        &mut self,
        pool: &mut BufferPool,
        max_body: usize,
        peer_closed: bool,
    ) -> io::Result<(ReadStatus, usize)> {
        if self.tls.is_some() {
            return self.fill_tls(pool, max_body);
        }
        let mut total = 0;
        loop {
            self.input.make_room(pool, max_body);
            let free = &mut self.input.buf[self.input.end..];
            let free_len = free.len();
            if free.is_empty() {
                return Ok((ReadStatus::BufferFull, total));
            }
            match self.socket.read(free) {
                Ok(0) => return Ok((ReadStatus::Closed, total)),
                Ok(n) => {
                    self.input.end += n;
                    total += n;
                    // A short read emptied the socket's queue: data arriving
                    // later raises a new edge, so the `WouldBlock` read that
                    // would confirm it can be saved (one syscall per event).
                    // Not when the peer's close was already signalled: that
                    // edge is spent, so read on until the 0 that shows it.
                    if n < free_len && !peer_closed {
                        return Ok((ReadStatus::Drained, total));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Ok((ReadStatus::Drained, total));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// [`fill`](Self::fill) through TLS: first the plaintext rustls
    /// already holds, then records from the socket until it would block.
    /// (No short-read shortcut: rustls may hold plaintext the socket's edge
    /// will not announce again.) A peer that does not speak TLS is an
    /// `InvalidData` error, after the alert is sent.
    fn fill_tls(
        &mut self,
        pool: &mut BufferPool,
        max_body: usize,
    ) -> io::Result<(ReadStatus, usize)> {
        let Connection {
            socket,
            tls,
            input,
            tls_in,
            ..
        } = self;
        let Some(tls) = tls else {
            return Ok((ReadStatus::Drained, 0));
        };
        let mut total = 0;
        loop {
            loop {
                input.make_room(pool, max_body);
                let free = &mut input.buf[input.end..];
                if free.is_empty() {
                    return Ok((ReadStatus::BufferFull, total));
                }
                match tls.reader().read(free) {
                    Ok(0) => return Ok((ReadStatus::Closed, total)),
                    Ok(n) => {
                        input.end += n;
                        total += n;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                        return Ok((ReadStatus::Closed, total));
                    }
                    Err(e) => return Err(e),
                }
            }
            if tls_in.unread().is_empty() {
                tls_in.release(pool);
                if tls_in.buf.is_empty() {
                    tls_in.buf = pool.take_read();
                }
                match socket.read(&mut tls_in.buf) {
                    Ok(0) => return Ok((ReadStatus::Closed, total)),
                    Ok(n) => {
                        tls_in.start = 0;
                        tls_in.end = n;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        tls_in.release(pool);
                        return Ok((ReadStatus::Drained, total));
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            }
            let mut records = tls_in.unread();
            let taken = tls.read_tls(&mut records)?;
            if taken == 0 {
                // rustls took nothing from a non-empty slice: it is not
                // TLS it can buffer (reading on would spin).
                return Err(io::ErrorKind::InvalidData.into());
            }
            tls_in.consume(taken);
            if let Err(e) = tls.process_new_packets() {
                // Best effort: the alert says why, then the loop closes.
                let _ = tls.write_tls(socket);
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
        }
    }

    /// The buffer replies are appended to.
    pub fn output(&mut self, pool: &mut BufferPool) -> &mut Vec<u8> {
        if self.output.capacity() == 0 {
            self.output = pool.take_write();
        }
        if self.pending_output() == 0 {
            // Output begins to wait: the output timeout counts from now.
            self.last_progress = Instant::now();
        }
        &mut self.output
    }

    /// Bytes queued and not yet taken by the socket.
    pub fn pending_output(&self) -> usize {
        self.output.len() - self.written
    }

    /// Writes as much as the socket takes. `Ok(true)` when all was sent.
    /// A partial write moves the unsent tail to the front once half the
    /// buffer is sent, and shrinks a buffer far larger than its content.
    pub fn flush(&mut self, pool: &mut BufferPool, now: Instant) -> io::Result<bool> {
        let before = self.written;
        let result = self.write_out();
        if self.written > before {
            self.last_progress = now;
        }
        match result {
            Ok(true) => {
                self.written = 0;
                pool.give_write(std::mem::take(&mut self.output));
                Ok(true)
            }
            Ok(false) => {
                if self.written * 2 >= self.output.len() {
                    self.output.drain(..self.written);
                    self.written = 0;
                }
                let held = self.output.len();
                if self.output.capacity() > WRITE_SHRINK_FLOOR.max(held.saturating_mul(2)) {
                    self.output.shrink_to(WRITE_SHRINK_FLOOR.max(held));
                }
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Gives back what a write buffer holds beyond `cap` (the high-water
    /// mark plus one frame): appending past the mark doubles a `Vec`, and a
    /// paused connection must not keep twice the mark while it drains.
    pub fn trim_output(&mut self, cap: usize) {
        if self.output.capacity() > cap {
            self.output.shrink_to(cap.max(self.output.len()));
        }
    }

    fn write_out(&mut self) -> io::Result<bool> {
        if self.tls.is_some() {
            return self.write_out_tls();
        }
        while self.written < self.output.len() {
            match self.socket.write(&self.output[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.written += n;
                    self.sent_total += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// [`write_out`](Self::write_out) through TLS: records rustls holds go
    /// out first, then the next chunk of the write buffer is encrypted.
    /// Done only when both are empty.
    fn write_out_tls(&mut self) -> io::Result<bool> {
        let Connection {
            socket,
            tls,
            output,
            written,
            sent_total,
            ..
        } = self;
        let Some(tls) = tls else {
            return Ok(true);
        };
        loop {
            while tls.wants_write() {
                match tls.write_tls(socket) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => *sent_total += n as u64,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            let Some(rest) = output.get(*written..).filter(|rest| !rest.is_empty()) else {
                return Ok(true);
            };
            let chunk = rest.get(..TLS_CHUNK).unwrap_or(rest);
            match tls.writer().write(chunk)? {
                // Still handshaking: the plaintext waits in our buffer.
                0 => return Ok(false),
                n => *written += n,
            }
        }
    }

    /// Shuts the write side for a lingering close; a TLS peer gets its
    /// close_notify first (best effort: the socket may be full).
    pub fn shutdown_write(&mut self) {
        if let Some(tls) = &mut self.tls {
            tls.send_close_notify();
            let _ = tls.write_tls(&mut self.socket);
        }
        let _ = self.socket.shutdown(std::net::Shutdown::Write);
    }

    /// Counts as progress what the peer took out of the kernel's send queue
    /// since the last look: a slow reader behind large socket buffers drains
    /// that queue long before the kernel lets the broker write again.
    pub fn note_delivery(&mut self, now: Instant) {
        let Some(unsent) = crate::os::unsent_in_kernel(&self.socket) else {
            return;
        };
        let delivered = self.sent_total.saturating_sub(unsent as u64);
        if delivered > self.delivered {
            self.delivered = delivered;
            self.last_progress = now;
        }
    }

    /// Returns idle buffers to the pool.
    pub fn release_buffers(&mut self, pool: &mut BufferPool) {
        self.input.release(pool);
    }

    /// The interest this connection needs now, if different from what is
    /// registered (so the caller reregisters only on change).
    pub fn interest_change(&mut self) -> Option<Interest> {
        let wanted = if self.pending_output() > 0 || self.wants_flush() {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        if wanted == self.interest {
            None
        } else {
            self.interest = wanted;
            Some(wanted)
        }
    }
}

fn recount(budget: &mut Budget, class: Class, was: usize, now: usize) {
    if now > was {
        budget.add(class, now - was);
    } else {
        budget.sub(class, was - now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(body_len: usize) -> Vec<u8> {
        let mut f = (body_len as u32).to_be_bytes().to_vec();
        f.resize(FRAME_HEADER_LEN + body_len, 7);
        f
    }

    fn filled(bytes: &[u8]) -> Input {
        let mut buf = vec![0; READ_BUFFER_BYTES];
        buf[..bytes.len()].copy_from_slice(bytes);
        Input {
            buf,
            start: 0,
            end: bytes.len(),
        }
    }

    #[test]
    fn a_buffer_full_of_complete_frames_is_left_as_it_is() {
        let mut pool = BufferPool::default();
        let mut stream = Vec::new();
        while stream.len() < READ_BUFFER_BYTES {
            stream.extend_from_slice(&frame(100));
        }
        let mut input = filled(&stream[..READ_BUFFER_BYTES]);
        input.make_room(&mut pool, 1 << 20);
        assert_eq!(input.buf.len(), READ_BUFFER_BYTES);
        assert_eq!(input.unread(), &stream[..READ_BUFFER_BYTES]);
    }

    #[test]
    fn one_unfinished_large_frame_grows_the_buffer_as_its_bytes_arrive() {
        let mut pool = BufferPool::default();
        let big = frame(200_000);
        let mut input = filled(&big[..READ_BUFFER_BYTES]);
        input.make_room(&mut pool, 1 << 20);
        assert_eq!(input.buf.len(), 2 * READ_BUFFER_BYTES);
        input.buf[READ_BUFFER_BYTES..].fill(7);
        input.end = input.buf.len();
        input.make_room(&mut pool, 1 << 20);
        assert_eq!(input.buf.len(), big.len().min(4 * READ_BUFFER_BYTES));
        // Over the limit: no growth; executing frames refuses it.
        let mut input = filled(&big[..READ_BUFFER_BYTES]);
        input.make_room(&mut pool, 100_000);
        assert_eq!(input.buf.len(), READ_BUFFER_BYTES);
    }

    #[test]
    fn consumed_bytes_make_room_by_moving_the_rest_to_the_front() {
        let mut pool = BufferPool::default();
        let mut stream = frame(READ_BUFFER_BYTES - 104);
        stream.extend_from_slice(&frame(200)[..100]);
        let mut input = filled(&stream);
        input.consume(READ_BUFFER_BYTES - 100);
        input.make_room(&mut pool, 1 << 20);
        assert_eq!(input.unread(), &frame(200)[..100]);
        assert_eq!(input.start, 0);
    }

    /// A connection over loopback whose peer reads nothing, and that peer.
    fn pair() -> (Connection, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let client =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (server_side, peer) = listener.accept().expect("accept");
        server_side.set_nonblocking(true).expect("nonblocking");
        let connection = Connection::new(TcpStream::from_std(server_side), peer, 1);
        (connection, client)
    }

    #[test]
    fn a_write_buffer_keeps_only_its_unsent_tail_and_is_counted_exactly() {
        let (mut connection, mut client) = pair();
        let mut pool = BufferPool::default();
        let mut budget = Budget::new(1 << 30, 0);
        // More than the socket takes, so a tail stays unsent.
        let chunk = vec![9u8; 1 << 20];
        for _ in 0..32 {
            connection.output(&mut pool).extend_from_slice(&chunk);
        }
        connection.account(&mut budget);
        assert_eq!(
            budget.used(Class::WriteBuffers),
            connection.output.capacity()
        );
        assert!(!connection.flush(&mut pool, Instant::now()).expect("flush"));
        connection.account(&mut budget);
        // Sent bytes are moved out once they are half the buffer, so at
        // least half of what it holds is still to send.
        assert!(connection.written * 2 < connection.output.len());
        assert_eq!(
            budget.used(Class::WriteBuffers),
            connection.output.capacity()
        );
        // The peer reads everything; the buffer shrinks as it drains.
        let mut sink = vec![0u8; 1 << 20];
        let mut drained = false;
        for _ in 0..10_000 {
            let _ = client.read(&mut sink).expect("read");
            if connection.flush(&mut pool, Instant::now()).expect("flush") {
                drained = true;
                break;
            }
            // The allocation follows the unsent bytes down.
            let (capacity, pending) = (connection.output.capacity(), connection.pending_output());
            assert!(
                capacity <= WRITE_SHRINK_FLOOR.max(4 * pending),
                "capacity {capacity} for {pending} unsent bytes"
            );
        }
        assert!(drained, "all sent");
        connection.account(&mut budget);
        assert_eq!(budget.used(Class::WriteBuffers), 0);
        connection.unaccount(&mut budget);
        assert_eq!(budget.total(), 0);
    }

    #[test]
    fn a_read_buffer_is_counted_until_the_connection_goes() {
        let (mut connection, mut client) = pair();
        let mut pool = BufferPool::default();
        let mut budget = Budget::new(1 << 30, 0);
        client.write_all(&frame(200_000)[..100_000]).expect("write");
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        while connection.input.unread().len() < 100_000 && Instant::now() < deadline {
            connection.fill(&mut pool, 1 << 20, false).expect("fill");
        }
        connection.account(&mut budget);
        let held = connection.input.buf.capacity();
        // Grown by doubling towards the frame, not to its announced size.
        assert!((100_000..200_000).contains(&held), "{held}");
        assert_eq!(budget.used(Class::ReadBuffers), held);
        assert_eq!(connection.unaccount(&mut budget), held);
        assert_eq!(budget.total(), 0);
    }
}
