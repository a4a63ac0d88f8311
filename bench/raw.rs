//! A bare pipelined connection for topic requests, built on the library's
//! own codec — a stopgap.
//!
//! The client library pipelines only publishes (`Client::pipeline`); every
//! other request is one round trip. That bounds `create-topic` at
//! clients / round trip, which on a small machine says more about thread
//! wake-ups than about the broker. Until the library's `Pipeline` can carry
//! CREATE_TOPIC and DELETE_TOPIC, `create-topic --pipeline D` (D > 1) keeps
//! D of them in flight over this: the same `codec::encode_request` and
//! `decode_reply` the client uses, one write per batch of requests, replies
//! matched by id in order. It knows nothing else and should go when the
//! library can do it.

use bytes::BytesMut;
use courier::codec::{self, DecodedReply};
use courier::protocol::{FRAME_HEADER_LEN, Op, PROTOCOL_VERSION, Reply, Request};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

const READ_CHUNK: usize = 64 * 1024;

pub struct Raw {
    stream: TcpStream,
    out: Vec<u8>,
    input: BytesMut,
    chunk: Box<[u8]>,
    next_id: u64,
    max_frame: usize,
}

impl Raw {
    /// Connects, says HELLO and registers as a publisher.
    pub fn publisher(addr: &str, name: &str, timeout: Duration) -> Result<Raw, String> {
        let stream =
            TcpStream::connect(addr).map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        let configured = stream
            .set_nodelay(true)
            .and_then(|()| stream.set_read_timeout(Some(timeout)))
            .and_then(|()| stream.set_write_timeout(Some(timeout)));
        configured.map_err(|e| format!("cannot configure the socket: {e}"))?;
        let mut raw = Raw {
            stream,
            out: Vec::with_capacity(READ_CHUNK),
            input: BytesMut::with_capacity(READ_CHUNK),
            chunk: vec![0; READ_CHUNK].into_boxed_slice(),
            next_id: 1,
            max_frame: courier::protocol::DEFAULT_MAX_FRAME_BYTES,
        };
        let hello = Request::Hello {
            version: PROTOCOL_VERSION,
            client_name: name,
        };
        match raw.call(&hello)? {
            Reply::Hello(info) => {
                raw.max_frame = usize::try_from(info.max_frame_bytes).unwrap_or(usize::MAX);
            }
            other => return Err(format!("unexpected reply to HELLO: {other:?}")),
        }
        raw.call(&Request::RegisterPublisher)?;
        Ok(raw)
    }

    fn call(&mut self, request: &Request<'_>) -> Result<Reply, String> {
        let id = self.queue(request);
        self.flush()?;
        match self.reply(request.op())? {
            (got, Ok(reply)) if got == id => Ok(reply),
            (got, Ok(_)) => Err(format!("reply to request {got} while waiting for {id}")),
            (_, Err(e)) => Err(format!("{} ({})", e.message, e.code.name())),
        }
    }

    /// Encodes a request into the write buffer; returns its id.
    pub fn queue(&mut self, request: &Request<'_>) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        codec::encode_request(&mut self.out, id, request);
        id
    }

    pub fn flush(&mut self) -> Result<(), String> {
        let written = self.stream.write_all(&self.out);
        self.out.clear();
        written.map_err(|e| format!("write failed: {e}"))
    }

    /// The next reply, decoded as an answer to `op`; blocks until it is
    /// whole.
    pub fn reply(&mut self, op: Op) -> Result<DecodedReply, String> {
        loop {
            if let Some(reply) = self.buffered(op)? {
                return Ok(reply);
            }
            let n = loop {
                match self.stream.read(&mut self.chunk) {
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    other => break other,
                }
            };
            match n {
                Ok(0) => return Err("the broker closed the connection".into()),
                Ok(n) => self
                    .input
                    .extend_from_slice(self.chunk.get(..n).unwrap_or_default()),
                Err(e) => return Err(format!("read failed: {e}")),
            }
        }
    }

    /// The next reply if it has arrived whole already; never blocks.
    pub fn buffered(&mut self, op: Op) -> Result<Option<DecodedReply>, String> {
        let whole = codec::split_frame(&self.input, self.max_frame)
            .map_err(|e| format!("reply frame of {} bytes is over the limit", e.len))?;
        let Some((_, total)) = whole else {
            return Ok(None);
        };
        let mut frame = self.input.split_to(total);
        let body = frame.split_off(FRAME_HEADER_LEN).freeze();
        codec::decode_reply(op, &body)
            .map(Some)
            .map_err(|e| e.to_string())
    }
}
