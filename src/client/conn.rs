//! The client's socket: frames out, frames in, and the rules for giving up.
//!
//! Requests are encoded into one reusable write buffer and written with one
//! `write_all`, so a pipeline of many requests costs one syscall. Replies are
//! read into a `BytesMut`; each complete frame is split off and frozen, so the
//! payloads of a pull reply are slices of the frame, never copies.
//!
//! Deadlines, not per-read timeouts: a reply must arrive whole before the
//! deadline, however many reads it takes. When a deadline passes, or the
//! socket fails, or the broker breaks the protocol, the connection is shut and
//! marked closed. A reply that might still come could not be matched safely
//! (was that publish stored? were those pulled messages delivered?), so the
//! only honest answer is a new connection.
//!
//! Replies to requests whose outcome nobody waits for any more (a pipeline
//! dropped before it finished) are "orphans": their ids are remembered and
//! their replies skipped, so they cannot be mistaken for a later answer.

use super::error::{Error, Result};
use super::stream::Stream;
use crate::codec;
use crate::protocol::{ErrorReply, FRAME_HEADER_LEN, Op, Reply, Request};
use bytes::{Buf, Bytes, BytesMut};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bytes asked of each `read` when no larger frame is known to be pending.
const READ_CHUNK: usize = 64 * 1024;

pub(super) struct Conn {
    stream: Stream,
    /// How long a reply may take (plus a pull's own wait); `None` waits forever.
    timeout: Option<Duration>,
    /// What the socket's read timeout is set to now, to skip needless syscalls.
    read_timeout: Option<Duration>,
    next_id: u64,
    /// Encoded requests not yet written.
    pub(super) out: Vec<u8>,
    input: BytesMut,
    /// Where small reads land before joining `input` (allocated on first use).
    scratch: Vec<u8>,
    /// Largest frame body either side may send (from HELLO once known).
    pub(super) max_frame: usize,
    /// Ids of requests whose replies are to be skipped.
    pub(super) orphans: Vec<u64>,
    closed: bool,
}

impl Conn {
    /// Opens the TCP connection, trying each resolved address in turn, and
    /// with `tls` (a configuration and the host name to verify) speaks TLS
    /// over it.
    pub(super) fn open(
        addr: impl ToSocketAddrs,
        connect_timeout: Option<Duration>,
        timeout: Option<Duration>,
        max_frame: usize,
        tls: Option<(Arc<rustls::ClientConfig>, &str)>,
    ) -> io::Result<Conn> {
        let mut last_error = None;
        let mut stream = None;
        for addr in addr.to_socket_addrs()? {
            let attempt = match connect_timeout {
                Some(limit) => TcpStream::connect_timeout(&addr, limit),
                None => TcpStream::connect(addr),
            };
            match attempt {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last_error = Some(e),
            }
        }
        let stream = match (stream, last_error) {
            (Some(stream), _) => stream,
            (None, Some(e)) => return Err(e),
            (None, None) => {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    "the name resolves to no address",
                ));
            }
        };
        // Requests are already gathered into one write; Nagle would only
        // delay the last one.
        stream.set_nodelay(true)?;
        stream.set_write_timeout(timeout)?;
        let stream = match tls {
            None => Stream::Plain(stream),
            Some((config, host)) => {
                // The handshake runs in the first write or read, which the
                // write timeout (and the reply deadline) bound.
                Stream::tls(stream, config, host)?
            }
        };
        Ok(Conn {
            stream,
            timeout,
            read_timeout: None,
            next_id: 1,
            out: Vec::with_capacity(READ_CHUNK),
            input: BytesMut::with_capacity(READ_CHUNK),
            scratch: Vec::new(),
            max_frame,
            orphans: Vec::new(),
            closed: false,
        })
    }

    /// Sends one request and waits for its reply. `extra` is how long the
    /// broker may legitimately hold the reply back (a pull's wait).
    pub(super) fn call(&mut self, request: &Request<'_>, extra: Duration) -> Result<Reply> {
        self.call_with(
            request.op(),
            |out, id| codec::encode_request(out, id, request),
            extra,
        )
    }

    /// Like [`Conn::call`], for a request of operation `op` that `encode`
    /// writes as a frame with the given id.
    pub(super) fn call_with(
        &mut self,
        op: Op,
        encode: impl FnOnce(&mut Vec<u8>, u64),
        extra: Duration,
    ) -> Result<Reply> {
        let id = self.queue_with(encode)?;
        self.flush()?;
        let deadline = self.deadline(extra);
        let (got, frame) = self.read_reply(deadline)?;
        if got == 0 {
            return Err(self.unattributed(&frame));
        }
        if got != id {
            return Err(self.fail(Error::Protocol(format!(
                "reply to request {got} while waiting for request {id}"
            ))));
        }
        self.decode(op, &frame)
    }

    /// Encodes a request into the write buffer; returns its id. A request
    /// over the frame limit is refused here, before anything is sent.
    pub(super) fn queue(&mut self, request: &Request<'_>) -> Result<u64> {
        self.queue_with(|out, id| codec::encode_request(out, id, request))
    }

    /// Like [`Conn::queue`], for a request that `encode` writes as a frame
    /// with the given id.
    pub(super) fn queue_with(&mut self, encode: impl FnOnce(&mut Vec<u8>, u64)) -> Result<u64> {
        if self.closed {
            return Err(Error::ConnectionClosed);
        }
        let id = self.next_id;
        self.next_id = self.next_id.checked_add(1).unwrap_or(1);
        let start = self.out.len();
        encode(&mut self.out, id);
        let len = self.out.len() - start - FRAME_HEADER_LEN;
        if len > self.max_frame {
            self.out.truncate(start);
            return Err(Error::FrameTooLarge {
                len,
                max: self.max_frame,
            });
        }
        Ok(id)
    }

    /// Writes every queued request.
    pub(super) fn flush(&mut self) -> Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let written = self.stream.write_all(&self.out);
        self.out.clear();
        written.map_err(|e| {
            let e = self.parting_words().unwrap_or_else(|| Error::from_io(e));
            self.fail(e)
        })
    }

    /// After a failed write: the broker may have said why before it closed
    /// the connection (`TOO_MANY_CONNECTIONS`, `SHUTTING_DOWN`…), which
    /// tells the caller more than "broken pipe". Reads only what has
    /// arrived already.
    fn parting_words(&mut self) -> Option<Error> {
        self.stream.tcp().set_nonblocking(true).ok()?;
        // Ends at WouldBlock, end of stream or an error.
        while self.fill(None).is_ok() {}
        while let Ok(Some((_, frame))) = self.buffered_reply() {
            if let Ok((_, Err(reply))) = codec::decode_reply(Op::Stats, &frame)
                && reply.code.closes_connection()
            {
                return Some(server_error(reply));
            }
        }
        None
    }

    /// When a reply sent now must have arrived, allowing `extra` on top of
    /// the timeout. `None` when there is no timeout (or it is too far off to
    /// represent).
    pub(super) fn deadline(&self, extra: Duration) -> Option<Instant> {
        let limit = self.timeout?.checked_add(extra)?;
        Instant::now().checked_add(limit)
    }

    /// The next reply, reading until it is complete or the deadline passes.
    pub(super) fn read_reply(&mut self, deadline: Option<Instant>) -> Result<(u64, Bytes)> {
        loop {
            if let Some(reply) = self.buffered_reply()? {
                return Ok(reply);
            }
            if let Err(e) = self.fill(deadline) {
                return Err(self.fail(e));
            }
        }
    }

    /// The next reply if it has arrived whole already; never blocks.
    pub(super) fn buffered_reply(&mut self) -> Result<Option<(u64, Bytes)>> {
        loop {
            let total = match codec::split_frame(&self.input, self.max_frame) {
                Ok(Some((_, total))) => total,
                Ok(None) => return Ok(None),
                Err(e) => {
                    return Err(self.fail(Error::Protocol(format!(
                        "reply frame of {} bytes is over the limit of {}",
                        e.len, e.max
                    ))));
                }
            };
            let mut frame = self.input.split_to(total);
            frame.advance(FRAME_HEADER_LEN);
            let frame = frame.freeze();
            let id = match codec::decode_reply_id(&frame) {
                Ok(id) => id,
                Err(e) => return Err(self.fail(e.into())),
            };
            let Some(orphan) = self.orphans.iter().position(|&o| o == id) else {
                return Ok(Some((id, frame)));
            };
            self.orphans.swap_remove(orphan);
            // Nobody waits for this outcome, but an error that closes the
            // connection is news for whoever uses it next.
            if let Ok((_, Err(reply))) = codec::decode_reply(Op::Stats, &frame)
                && reply.code.closes_connection()
            {
                return Err(self.fail(server_error(reply)));
            }
        }
    }

    /// Decodes a reply to a request of operation `op`. An error reply
    /// becomes `Error::Server`; one that closes the connection closes ours.
    pub(super) fn decode(&mut self, op: Op, frame: &Bytes) -> Result<Reply> {
        match codec::decode_reply(op, frame) {
            Ok((_, Ok(reply))) => Ok(reply),
            Ok((_, Err(reply))) => Err(self.fail(server_error(reply))),
            Err(e) => Err(self.fail(e.into())),
        }
    }

    /// The error in a reply with id 0: the broker's error that answers no
    /// request (PROTOCOL.md 3.4), after which it closes the connection. It
    /// ends whatever was waiting. Anything else with id 0 cannot be
    /// attributed to a request, so the conversation can no longer be
    /// trusted.
    pub(super) fn unattributed(&mut self, frame: &Bytes) -> Error {
        match codec::decode_reply(Op::Stats, frame) {
            Ok((_, Err(reply))) if reply.code.closes_connection() => self.fail(server_error(reply)),
            Ok((_, Err(reply))) => self.fail(Error::Protocol(format!(
                "error reply with id 0 that names no request: {}",
                server_error(reply)
            ))),
            Ok((_, Ok(_))) => self.fail(Error::Protocol(
                "a success reply carries id 0, which no request uses".into(),
            )),
            Err(e) => self.fail(e.into()),
        }
    }

    /// The error for a reply whose body does not match its request; decoding
    /// by operation makes this impossible unless the codec itself is wrong.
    pub(super) fn unexpected(&mut self, op: Op, reply: &Reply) -> Error {
        self.fail(Error::Protocol(format!(
            "unexpected reply to {op:?}: {reply:?}"
        )))
    }

    /// Records `e`; if it leaves the connection unusable, shuts it down so
    /// that no later call can read a stale reply.
    pub(super) fn fail(&mut self, e: Error) -> Error {
        if e.is_fatal() && !self.closed {
            self.closed = true;
            self.out.clear();
            self.input.clear();
            let _ = self.stream.tcp().shutdown(Shutdown::Both);
        }
        e
    }

    /// Reads once from the socket into the input buffer, waiting no later
    /// than `deadline`.
    fn fill(&mut self, deadline: Option<Instant>) -> Result<()> {
        // The socket timeout is the time left rounded up to 100 ms, so that
        // back-to-back calls find it already set instead of paying a
        // setsockopt each; a read may overrun the deadline by that much.
        let timeout = match deadline {
            None => None,
            Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => Some(Duration::from_millis(
                    u64::try_from(left.as_millis().div_ceil(100) * 100).unwrap_or(u64::MAX),
                )),
                _ => return Err(Error::Timeout),
            },
        };
        if timeout != self.read_timeout {
            self.stream
                .tcp()
                .set_read_timeout(timeout)
                .map_err(Error::Io)?;
            self.read_timeout = timeout;
        }
        // A large frame whose header is in is read straight into the input
        // (zeroing only bytes about to be overwritten); anything else goes
        // through a scratch buffer zeroed once, so that a 20-byte reply does
        // not cost a 64 KiB memset.
        let pending = self.pending_frame_bytes();
        let read = if pending > READ_CHUNK {
            let start = self.input.len();
            self.input.resize(start + pending, 0);
            let read = read_retrying(&mut self.stream, &mut self.input[start..]);
            self.input.truncate(start + *read.as_ref().unwrap_or(&0));
            read
        } else {
            if self.scratch.is_empty() {
                self.scratch = vec![0; READ_CHUNK];
            }
            let read = read_retrying(&mut self.stream, &mut self.scratch);
            let n = *read.as_ref().unwrap_or(&0);
            self.input.extend_from_slice(&self.scratch[..n]);
            read
        };
        match read {
            Ok(0) => Err(Error::ConnectionClosed),
            Ok(_) => Ok(()),
            Err(e) => Err(Error::from_io(e)),
        }
    }

    /// Bytes still missing from a frame whose header has arrived, so one
    /// read can take a large pull reply whole.
    fn pending_frame_bytes(&self) -> usize {
        match self.input.first_chunk::<FRAME_HEADER_LEN>() {
            Some(header) => {
                let len = u32::from_be_bytes(*header) as usize;
                (FRAME_HEADER_LEN + len.min(self.max_frame)).saturating_sub(self.input.len())
            }
            None => 0,
        }
    }
}

fn read_retrying(stream: &mut Stream, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match stream.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

fn server_error(reply: ErrorReply) -> Error {
    Error::Server {
        code: reply.code,
        message: reply.message,
    }
}
