//! Pipelined requests: publishes (PUBLISH, PUBLISH_BATCH) and topic changes
//! (CREATE_TOPIC, DELETE_TOPIC), many in flight on one connection.
//!
//! A blocking call waits a round trip per request; a pipeline does not. It
//! encodes requests into the connection's write buffer, writes them in one
//! syscall when the buffer has grown or `depth` requests are outstanding, and
//! reads replies only when it must make room (or when asked to finish). The
//! caller learns each request's outcome as a [`Completion`], tagged with the
//! sequence number the queuing call ([`Pipeline::send`],
//! [`Pipeline::create_topic`], …) returned.
//!
//! The contract that makes it safe to use for data that must not be lost:
//! every tag `send` returns is reported in exactly one completion — stored,
//! refused with a code, or failed with the connection (outcome unknown: the
//! broker may or may not have stored it). A `send` that returns `Err` queued
//! nothing and issued no tag. The same holds for every queuing call: a topic
//! created or deleted, refused (`TOPIC_EXISTS`, `UNKNOWN_TOPIC`…), or cut off
//! with the connection.
//!
//! No retry or reordering is needed for a full topic: the broker holds the
//! publishes until there is room and stores one connection's publishes to a
//! topic in the order sent (PROTOCOL.md 3.3, 4.5). A `TOPIC_FULL` completion
//! means the topic stayed full for the broker's `publish_hold_ms`; every
//! publish to that topic queued behind it gets `TOPIC_FULL` too, so a caller
//! that resends them all, in tag order, keeps their order.
//!
//! A completion's result is an [`Outcome`] that names what was done, so one
//! stream of completions serves a mix of requests; a caller that only
//! publishes gets only [`Outcome::Published`].
//!
//! Replies are matched by id: those to publishes to one topic come in the
//! order sent, but a held publish's reply may be overtaken by others (a
//! publish to another topic, a topic request), so completions come in the
//! order replies arrive, which is tag order per topic only. A reply for a
//! request not in flight is caught as a protocol violation rather than
//! credited to the wrong tag.

use super::error::{Error, Result};
use super::{Client, PublishedBatch};
use crate::codec;
use crate::protocol::{Op, Reply, Request};
use bytes::Bytes;
use std::collections::VecDeque;

/// Buffered request bytes that are written without waiting for `depth`.
const FLUSH_BYTES: usize = 64 * 1024;

/// The outcome of one pipelined request.
#[derive(Debug, Clone)]
pub struct Completion {
    /// The sequence number the queuing call returned: 0, 1, 2, … in the
    /// order queued, whatever the request.
    pub tag: u64,
    /// How many messages the request carried (0 for a topic request).
    pub messages: u32,
    /// What the request did, or why not. On [`Error::is_retryable`]
    /// (`TOPIC_FULL` after the broker's hold, say) nothing was done.
    pub result: Result<Outcome>,
}

impl Completion {
    pub fn is_ok(&self) -> bool {
        self.result.is_ok()
    }

    /// True if the request was refused for now and may be sent again as is
    /// (resend a topic's refused publishes in tag order to keep their order).
    pub fn is_retryable(&self) -> bool {
        self.result.as_ref().is_err_and(Error::is_retryable)
    }
}

/// What a pipelined request did. Each request has one possible outcome: a
/// publish is `Published`, a CREATE_TOPIC `Created`, a DELETE_TOPIC
/// `Deleted`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Where the messages were stored (a single message is a batch of one).
    Published(PublishedBatch),
    /// The topic exists now.
    Created,
    /// The topic and what it retained are gone.
    Deleted,
}

impl Outcome {
    /// Where a publish stored its messages; `None` for a topic request.
    pub fn published(&self) -> Option<PublishedBatch> {
        match *self {
            Outcome::Published(stored) => Some(stored),
            Outcome::Created | Outcome::Deleted => None,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct InFlight {
    id: u64,
    tag: u64,
    op: Op,
    messages: u32,
}

/// Publishes, creates and deletes topics with up to `depth` requests in
/// flight. Made by [`Client::pipeline`]; the client is borrowed until the
/// pipeline is dropped.
///
/// Requests are written when the buffer passes 64 KiB, when `depth` are
/// outstanding, or on [`flush`](Pipeline::flush), [`wait_all`](Pipeline::wait_all)
/// and [`finish`](Pipeline::finish). Take outcomes with
/// [`completions`](Pipeline::completions) as you go; they accumulate until
/// taken. Dropping a pipeline sends what was buffered but forgets the
/// outcomes still due.
///
/// ```no_run
/// # use courier::client::{Client, Outcome};
/// # fn main() -> courier::client::Result<()> {
/// let mut client = Client::connect("localhost:5555")?;
/// client.register_publisher()?;
/// let mut pipeline = client.pipeline(16);
/// pipeline.create_topic("news")?;
/// let lines: [&[u8]; 3] = [b"one", b"two", b"three"];
/// for chunk in lines.chunks(2) {
///     pipeline.send_batch("news", chunk)?;
///     for done in pipeline.completions() {
///         println!("request {}: {:?}", done.tag, done.result);
///     }
/// }
/// for done in pipeline.finish() {
///     match done.result {
///         Ok(Outcome::Published(stored)) => {
///             println!("batch {} at offset {}", done.tag, stored.first_offset)
///         }
///         Ok(other) => println!("request {}: {other:?}", done.tag),
///         Err(e) => println!("request {} failed: {e}", done.tag),
///     }
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Pipeline<'c> {
    client: &'c mut Client,
    depth: usize,
    next_tag: u64,
    in_flight: VecDeque<InFlight>,
    done: VecDeque<Completion>,
}

impl<'c> Pipeline<'c> {
    pub(super) fn new(client: &'c mut Client, depth: usize) -> Pipeline<'c> {
        let depth = depth.max(1);
        Pipeline {
            client,
            depth,
            next_tag: 0,
            in_flight: VecDeque::with_capacity(depth),
            done: VecDeque::with_capacity(depth),
        }
    }

    /// Queues one PUBLISH; returns its tag. Blocks while `depth` requests
    /// are outstanding.
    pub fn send(&mut self, topic: &str, payload: &[u8]) -> Result<u64> {
        self.queue(&Request::Publish { topic, payload }, 1)
    }

    /// Queues one PUBLISH_BATCH (all or nothing); returns its tag. Blocks
    /// while `depth` requests are outstanding.
    pub fn send_batch(&mut self, topic: &str, payloads: &[&[u8]]) -> Result<u64> {
        self.make_room()?;
        let id = self.client.conn.queue_with(|out, id| {
            codec::encode_publish_batch(out, id, topic, payloads);
        })?;
        let messages = u32::try_from(payloads.len()).unwrap_or(u32::MAX);
        Ok(self.track(id, Op::PublishBatch, messages))
    }

    /// Queues one PUBLISH_BATCH numbered from `first_seq` by the
    /// connection's producer ([`Client::register_producer`]); returns its
    /// tag. A resent batch the broker already stored completes with its
    /// original offsets.
    pub fn send_batch_seq(
        &mut self,
        topic: &str,
        payloads: &[&[u8]],
        first_seq: u64,
    ) -> Result<u64> {
        self.make_room()?;
        let id = self.client.conn.queue_with(|out, id| {
            codec::encode_publish_batch_seq(out, id, topic, payloads, first_seq);
        })?;
        let messages = u32::try_from(payloads.len()).unwrap_or(u32::MAX);
        Ok(self.track(id, Op::PublishBatch, messages))
    }

    /// Queues one CREATE_TOPIC; returns its tag, whose outcome is
    /// [`Outcome::Created`] or the refusal (`TOPIC_EXISTS`…). Blocks while
    /// `depth` requests are outstanding.
    pub fn create_topic(&mut self, topic: &str) -> Result<u64> {
        self.queue(&Request::CreateTopic { topic }, 0)
    }

    /// Queues one DELETE_TOPIC; returns its tag, whose outcome is
    /// [`Outcome::Deleted`] or the refusal (`UNKNOWN_TOPIC`…). Blocks while
    /// `depth` requests are outstanding.
    pub fn delete_topic(&mut self, topic: &str) -> Result<u64> {
        self.queue(&Request::DeleteTopic { topic }, 0)
    }

    /// Queues a request that carries `messages` messages; returns its tag.
    fn queue(&mut self, request: &Request<'_>, messages: u32) -> Result<u64> {
        self.make_room()?;
        let id = self.client.conn.queue(request)?;
        Ok(self.track(id, request.op(), messages))
    }

    /// Writes every buffered request now, without waiting for replies.
    pub fn flush(&mut self) -> Result<()> {
        let written = self.client.conn.flush();
        written.map_err(|e| self.abort(e))
    }

    /// Writes everything and waits until every request has its completion.
    pub fn wait_all(&mut self) -> Result<()> {
        self.flush()?;
        while !self.in_flight.is_empty() {
            self.receive()?;
        }
        Ok(())
    }

    /// Outcomes that arrived and were not taken yet, in the order their
    /// replies came (tag order among publishes to one topic). Each is
    /// taken as the iterator reaches it; those it does not reach stay for
    /// the next call (unlike a drain, dropping it early loses nothing, and
    /// it costs nothing when there is nothing to take).
    pub fn completions(&mut self) -> impl Iterator<Item = Completion> + '_ {
        std::iter::from_fn(|| self.done.pop_front())
    }

    /// Requests sent or buffered whose outcome has not arrived.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Waits for every outstanding request and returns all the completions
    /// not yet taken. A connection failure does not make this fail: it is
    /// the outcome of each request it cut off.
    pub fn finish(mut self) -> Vec<Completion> {
        // An error here has already become those requests' completions.
        let _ = self.wait_all();
        std::mem::take(&mut self.done).into()
    }

    fn track(&mut self, id: u64, op: Op, messages: u32) -> u64 {
        let tag = self.next_tag;
        self.next_tag += 1;
        self.in_flight.push_back(InFlight {
            id,
            tag,
            op,
            messages,
        });
        tag
    }

    /// Blocks until a request can be queued without waiting: fewer than
    /// `depth` outstanding, and the write buffer below its flush size.
    /// [`send`](Pipeline::send) does this itself; call it first to learn the
    /// moment a request can really leave (to timestamp it, say).
    pub fn wait_for_room(&mut self) -> Result<()> {
        self.make_room()
    }

    fn make_room(&mut self) -> Result<()> {
        if self.client.conn.out.len() >= FLUSH_BYTES {
            self.flush()?;
        }
        while self.in_flight.len() >= self.depth {
            self.flush()?;
            self.receive()?;
        }
        Ok(())
    }

    /// Waits for one reply, then takes every other that has arrived whole.
    fn receive(&mut self) -> Result<()> {
        // A publish may be held by a full topic up to the broker's hold.
        let hold = self.client.publish_hold();
        let conn = &mut self.client.conn;
        let deadline = conn.deadline(hold);
        let first = conn.read_reply(deadline);
        let (id, frame) = first.map_err(|e| self.abort(e))?;
        self.complete(id, &frame)?;
        loop {
            let next = self.client.conn.buffered_reply();
            match next.map_err(|e| self.abort(e))? {
                Some((id, frame)) => self.complete(id, &frame)?,
                None => return Ok(()),
            }
        }
    }

    fn complete(&mut self, id: u64, frame: &Bytes) -> Result<()> {
        if id == 0 {
            // Names no request, so it ends them all.
            let e = self.client.conn.unattributed(frame);
            return Err(self.abort(e));
        }
        // Replies mostly come in the order sent (a held publish's may be
        // overtaken): the oldest is the usual match, and taking it from the
        // front costs no shuffling.
        let request = match self.in_flight.iter().position(|f| f.id == id) {
            Some(0) => self.in_flight.pop_front(),
            Some(p) => self.in_flight.remove(p),
            None => None,
        };
        let Some(request) = request else {
            let e = self.client.conn.fail(Error::Protocol(format!(
                "reply to request {id}, which is not in flight"
            )));
            return Err(self.abort(e));
        };
        let conn = &mut self.client.conn;
        let result = conn
            .decode(request.op, frame)
            .and_then(|reply| match (request.op, reply) {
                (
                    Op::Publish,
                    Reply::Published {
                        offset,
                        subscribers,
                    },
                ) => Ok(Outcome::Published(PublishedBatch {
                    first_offset: offset,
                    count: 1,
                    subscribers,
                })),
                (
                    Op::PublishBatch,
                    Reply::PublishedBatch {
                        first_offset,
                        count,
                        subscribers,
                    },
                ) => Ok(Outcome::Published(PublishedBatch {
                    first_offset,
                    count,
                    subscribers,
                })),
                (Op::CreateTopic, Reply::Done) => Ok(Outcome::Created),
                (Op::DeleteTopic, Reply::Done) => Ok(Outcome::Deleted),
                (op, other) => Err(conn.unexpected(op, &other)),
            });
        let fatal = result.as_ref().err().filter(|e| e.is_fatal()).cloned();
        self.done.push_back(Completion {
            tag: request.tag,
            messages: request.messages,
            result,
        });
        match fatal {
            Some(e) => Err(self.abort(e)),
            None => Ok(()),
        }
    }

    /// The connection is gone: that is the outcome of every request still
    /// in flight.
    fn abort(&mut self, e: Error) -> Error {
        let e = self.client.conn.fail(e);
        for request in self.in_flight.drain(..) {
            self.done.push_back(Completion {
                tag: request.tag,
                messages: request.messages,
                result: Err(e.clone()),
            });
        }
        e
    }
}

impl Drop for Pipeline<'_> {
    fn drop(&mut self) {
        // What was buffered is sent, as the caller asked; the replies still
        // due belong to nobody now and must not be read as someone else's.
        let conn = &mut self.client.conn;
        if conn.flush().is_ok() {
            conn.orphans.extend(self.in_flight.iter().map(|f| f.id));
        }
    }
}
