//! A connection speaking raw frames from `courier::codec`, for the abuses
//! the client library will not express: it sends one request at a time,
//! while an attacker wants many in flight, and it matches every reply,
//! while an attacker only counts them.

use super::Tally;
use crate::run::{Shared, Timeline};
use bytes::Bytes;
use courier::codec;
use courier::protocol::{ErrorCode, Op, Reply, Request};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Requests a raw attacker keeps in flight.
const RAW_WINDOW: usize = 64;
/// How long a raw attacker waits for a reply before calling it cut off.
const RAW_TIMEOUT: Duration = Duration::from_secs(30);

/// One raw connection, handshake done.
pub struct RawConn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl RawConn {
    pub fn hello(addr: &str, name: &str) -> Result<RawConn, String> {
        let stream =
            TcpStream::connect(addr).map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        let _ = stream.set_nodelay(true);
        stream
            .set_read_timeout(Some(RAW_TIMEOUT))
            .map_err(|e| format!("cannot set a timeout: {e}"))?;
        let mut raw = RawConn {
            stream,
            buf: Vec::new(),
        };
        raw.expect_ok(&Request::Hello {
            version: courier::PROTOCOL_VERSION,
            client_name: name,
            credentials: None,
        })?;
        Ok(raw)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.stream
            .write_all(bytes)
            .map_err(|e| format!("write failed: {e}"))
    }

    /// The next reply frame's body.
    fn read_frame(&mut self) -> Result<Bytes, String> {
        loop {
            let split = codec::split_frame(&self.buf, usize::MAX).map_err(|e| format!("{e:?}"))?;
            if let Some((body, used)) = split {
                let body = Bytes::copy_from_slice(body);
                self.buf.drain(..used);
                return Ok(body);
            }
            let mut chunk = [0u8; 64 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err("the broker closed the connection".into()),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("read failed: {e}")),
            }
        }
    }

    /// The next reply's error code (`None`: success).
    fn read_code(&mut self, op: Op) -> Result<Option<ErrorCode>, String> {
        let frame = self.read_frame()?;
        let (_, reply) = codec::decode_reply(op, &frame).map_err(|e| e.to_string())?;
        Ok(reply.err().map(|e| e.code))
    }

    pub fn expect_ok(&mut self, request: &Request<'_>) -> Result<Reply, String> {
        let mut frame = Vec::new();
        codec::encode_request(&mut frame, 1, request);
        self.write(&frame)?;
        let body = self.read_frame()?;
        match codec::decode_reply(request.op(), &body).map_err(|e| e.to_string())? {
            (_, Ok(reply)) => Ok(reply),
            (_, Err(e)) => Err(format!("{:?} refused: {}", request.op(), e.code)),
        }
    }

    /// Sends `requests` pipelined, a thousand at a time, and expects a
    /// success for each.
    pub fn all_ok<'a>(
        &mut self,
        requests: impl Iterator<Item = Request<'a>>,
    ) -> Result<(), String> {
        let mut requests = requests.peekable();
        while requests.peek().is_some() {
            let mut frames = Vec::new();
            let mut ops = Vec::new();
            for (id, request) in (1..).zip(requests.by_ref().take(1000)) {
                codec::encode_request(&mut frames, id, &request);
                ops.push(request.op());
            }
            self.write(&frames)?;
            for op in ops {
                if let Some(code) = self.read_code(op)? {
                    return Err(format!("{op:?} refused: {code}"));
                }
            }
        }
        Ok(())
    }

    /// Sends `request` over and over with [`RAW_WINDOW`] in flight until
    /// the run ends, then takes the replies still due.
    pub fn flood(
        &mut self,
        shared: &Shared,
        request: &Request<'_>,
        timeline: Timeline,
        tally: &mut Tally,
    ) {
        let op = request.op();
        let mut half = Vec::new();
        for id in 1..=(RAW_WINDOW / 2) as u64 {
            codec::encode_request(&mut half, id, request);
        }
        let mut in_flight = 0;
        let outcome = (|| {
            while shared.clock.now_ns() < timeline.stop_ns && !shared.aborted() {
                if in_flight <= RAW_WINDOW / 2 {
                    self.write(&half)?;
                    in_flight += RAW_WINDOW / 2;
                }
                let code = self.read_code(op)?;
                in_flight -= 1;
                tally.answered(code);
                if let Some(meter) = shared.meter(1) {
                    meter.add(1);
                }
            }
            while in_flight > 0 {
                let code = self.read_code(op)?;
                in_flight -= 1;
                tally.answered(code);
            }
            Ok::<(), String>(())
        })();
        tally.cut_off = outcome.err();
    }
}
