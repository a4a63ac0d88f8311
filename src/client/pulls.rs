//! Pipelined pulls: a subscriber's stream of batches with several pulls in
//! flight, so that the next one is already waiting in the broker when it
//! answers the last (PROTOCOL.md 4.10, "Several pulls in flight").
//!
//! With one pull at a time, a message that arrives while the next pull is
//! on its way waits a round trip. [`Pulls`] keeps `depth` pulls outstanding
//! and hands their replies back in the order they were sent.
//!
//! Acknowledgement is exact: `ack = true` on a pull would acknowledge what
//! the broker delivered to the pulls before it, which the caller may not
//! have processed yet, so the pulls sent here never carry it. Instead the
//! caller says what it has processed ([`Pulls::processed`],
//! [`Pulls::processed_batch`]), and a cumulative ACK per topic goes out in
//! the same write as the next pull: no round trip of its own, and nothing
//! acknowledged that the caller did not hand back. A process killed at any
//! point loses nothing: what it had not declared processed comes again when
//! its session is resumed.
//!
//! With one pull in flight (`depth` 1) there is a cheaper exact way, and it
//! is taken when it applies: when the next pull is sent, no other pull is in
//! flight, so everything the session was delivered has been handed to the
//! caller; if the caller declared all of it processed, the pull carries
//! `ack = true` instead of ACK requests, and the broker sends no ACK reply
//! to wake the caller for. (So a stream should see every delivery of its
//! session: start it before pulling any other way.)
//!
//! The replies to those ACKs are read as they come, between pull replies. An
//! ACK refused because its topic is gone (`UNKNOWN_TOPIC`, `NOT_SUBSCRIBED`)
//! has nothing left to acknowledge and is ignored; any other refusal is the
//! caller's mistake (`INVALID_ACK`) and is returned by the next call.
//!
//! Dropping a `Pulls` sends the ACKs of what was declared processed, without
//! waiting for them, and leaves its pulls waiting in the broker; their
//! replies are skipped by the connection (its "orphans"), and what they
//! carried was not acknowledged, so it is delivered again on resume.

use super::conn::Conn;
use super::error::{Error, Result};
use super::{Batch, Client, PullOptions};
use crate::ErrorCode;
use crate::protocol::{MAX_PULL_WAIT_MS, Op, Pull, Reply, Request};
use bytes::Bytes;
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// The most pulls one [`Pulls`] keeps in flight, whatever it is asked; the
/// broker's own bound (`max_waiting_pulls` in HELLO) may be lower.
pub const MAX_PULL_DEPTH: usize = 64;

/// A subscriber's pipelined pulls; see the module doc. Made by
/// [`Client::pulls`].
///
/// ```no_run
/// use courier::client::{Client, PullOptions};
/// use std::time::Duration;
///
/// # fn main() -> courier::client::Result<()> {
/// let mut client = Client::connect("localhost:5555")?;
/// client.register_subscriber()?;
/// client.subscribe("news")?;
/// let options = PullOptions { wait: Duration::from_secs(5), ..PullOptions::default() };
/// let mut pulls = client.pulls(options, 4);
/// loop {
///     let batch = pulls.next_batch()?;
///     for message in batch.iter() {
///         println!("{} {}: {:?}", message.topic, message.offset, message.payload);
///     }
///     // Acknowledged with the next pull, in the same write.
///     pulls.processed_batch(&batch);
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct Pulls<'c> {
    client: &'c mut Client,
    options: PullOptions,
    depth: usize,
    /// Pulls sent, oldest first, each with its reply once it came.
    in_flight: VecDeque<InFlightPull>,
    /// ACKs sent whose reply has not come: id and topic.
    acks: VecDeque<(u64, String)>,
    /// Per topic, the offset below which everything was processed and not
    /// yet sent as an ACK.
    processed: BTreeMap<String, u64>,
    /// Per topic, the offset after the last message handed to the caller,
    /// while not all of it was acknowledged: what `ack = true` would cover.
    handed: BTreeMap<String, u64>,
    /// An ACK refusal to report at the next call.
    ack_failure: Option<Error>,
}

#[derive(Debug)]
struct InFlightPull {
    id: u64,
    /// When its reply must have come: its own wait plus the client timeout,
    /// counted from when it was sent (the broker arms its wait then too).
    deadline: Option<Instant>,
    reply: Option<Result<Batch>>,
}

impl<'c> Pulls<'c> {
    pub(super) fn new(client: &'c mut Client, options: PullOptions, depth: usize) -> Pulls<'c> {
        // More than the broker keeps waiting would have it answer the
        // oldest empty, over and over; a broker that predates the bound
        // (0) keeps one.
        let keeps = usize::try_from(client.info.max_waiting_pulls).unwrap_or(usize::MAX);
        let depth = depth.clamp(1, MAX_PULL_DEPTH).min(keeps.max(1));
        Pulls {
            client,
            options: PullOptions {
                ack: false,
                ..options
            },
            depth,
            in_flight: VecDeque::with_capacity(depth),
            acks: VecDeque::new(),
            processed: BTreeMap::new(),
            handed: BTreeMap::new(),
            ack_failure: None,
        }
    }

    /// How many pulls are kept in flight: as asked, within 1 to
    /// [`MAX_PULL_DEPTH`] and the broker's `max_waiting_pulls`.
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// The options of the pulls sent from now on (`ack` is ignored: the
    /// stream sets it only when that is exact, see the module doc). Pulls already in flight keep theirs.
    pub fn options_mut(&mut self) -> &mut PullOptions {
        &mut self.options
    }

    /// Everything of `topic` below `next_offset` was processed; it is
    /// acknowledged with the next pull sent (cumulative: a lower offset than
    /// one given before changes nothing).
    pub fn processed(&mut self, topic: &str, next_offset: u64) {
        match self.processed.get_mut(topic) {
            Some(offset) => *offset = (*offset).max(next_offset),
            None => {
                self.processed.insert(topic.to_owned(), next_offset);
            }
        }
    }

    /// Every message of `batch` was processed.
    pub fn processed_batch(&mut self, batch: &Batch) {
        for group in batch.groups() {
            let count = group.payloads.len() as u64;
            // A loss report alone moves the cursor too: acknowledging up
            // to its first offset lets the loss be forgotten.
            if count > 0 || group.lost > 0 {
                self.processed(&group.topic, group.first_offset + count);
            }
        }
    }

    /// The next batch, in the order the pulls were sent; an empty one means
    /// that pull's wait ended with nothing. Before waiting, the pulls in
    /// flight are topped up to `depth`, in one write with the ACKs of what
    /// was declared processed. An error reply to a pull (`TOPIC_DELETED`,
    /// `SESSION_TAKEN_OVER`, …) is that pull's outcome; the others stay in
    /// flight unless the error closes the connection.
    pub fn next_batch(&mut self) -> Result<Batch> {
        self.report_ack_failure()?;
        // Nothing in flight, and all that was handed out processed: the pull
        // itself acknowledges it.
        let ack_on_pull = self.in_flight.is_empty()
            && self
                .handed
                .iter()
                .all(|(topic, &next)| self.processed.get(topic).is_some_and(|&p| p >= next));
        if ack_on_pull {
            self.processed.clear();
            self.handed.clear();
        } else {
            self.send_acks()?;
        }
        while self.in_flight.len() < self.depth {
            let ack = ack_on_pull && self.in_flight.is_empty();
            self.send_pull(ack)?;
        }
        self.client.conn.flush()?;
        loop {
            if let Some(front) = self.in_flight.front_mut()
                && let Some(reply) = front.reply.take()
            {
                self.in_flight.pop_front();
                if let Ok(batch) = &reply {
                    self.hand_out(batch);
                }
                return reply;
            }
            let deadline = self.in_flight.front().and_then(|p| p.deadline);
            self.receive(deadline)?;
        }
    }

    /// Sends the ACKs of what was declared processed now, without a pull,
    /// and waits until the broker has answered every ACK sent: once this
    /// returns, all of it is acknowledged (or its topic was gone). For the
    /// end of a run; pull replies arriving meanwhile are kept for
    /// [`Pulls::next_batch`].
    pub fn acknowledge(&mut self) -> Result<()> {
        self.send_acks()?;
        self.client.conn.flush()?;
        while !self.acks.is_empty() {
            let deadline = self.client.conn.deadline(Duration::ZERO);
            self.receive(deadline)?;
        }
        self.report_ack_failure()
    }

    /// Asks whether this session is still subscribed to `topic`, with a
    /// no-op ACK at offset 0 answered in order with everything else:
    /// `Ok(false)` when the topic is gone or not subscribed.
    pub fn is_subscribed(&mut self, topic: &str) -> Result<bool> {
        let id = self.client.conn.queue(&Request::Ack { topic, offset: 0 })?;
        self.client.conn.flush()?;
        let deadline = self.client.conn.deadline(Duration::ZERO);
        loop {
            let (got, frame) = self.read(deadline)?;
            if got != id {
                self.dispatch(got, &frame)?;
                continue;
            }
            return match self.client.conn.decode(Op::Ack, &frame) {
                Ok(Reply::Done) => Ok(true),
                Err(e) if gone(&e) => Ok(false),
                Err(e) => Err(e),
                Ok(other) => Err(self.client.conn.unexpected(Op::Ack, &other)),
            };
        }
    }

    fn report_ack_failure(&mut self) -> Result<()> {
        match self.ack_failure.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Notes what `batch` delivered, for the `ack = true` check.
    fn hand_out(&mut self, batch: &Batch) {
        for group in batch.groups() {
            let next = group.first_offset + group.payloads.len() as u64;
            match self.handed.get_mut(&group.topic) {
                Some(offset) => *offset = (*offset).max(next),
                None => {
                    self.handed.insert(group.topic.clone(), next);
                }
            }
        }
    }

    fn send_acks(&mut self) -> Result<()> {
        for (topic, offset) in std::mem::take(&mut self.processed) {
            if self.handed.get(&topic).is_some_and(|&next| offset >= next) {
                self.handed.remove(&topic);
            }
            let id = self.client.conn.queue(&Request::Ack {
                topic: &topic,
                offset,
            })?;
            self.acks.push_back((id, topic));
        }
        Ok(())
    }

    fn send_pull(&mut self, ack: bool) -> Result<()> {
        let o = &self.options;
        let wait_ms = u32::try_from(o.wait.as_millis())
            .unwrap_or(u32::MAX)
            .min(MAX_PULL_WAIT_MS);
        let id = self.client.conn.queue(&Request::Pull(Pull {
            topic: o.topic.as_deref(),
            max_messages: o.max_messages,
            max_bytes: o.max_bytes,
            wait_ms,
            ack,
        }))?;
        let deadline = self
            .client
            .conn
            .deadline(Duration::from_millis(u64::from(wait_ms)));
        self.in_flight.push_back(InFlightPull {
            id,
            deadline,
            reply: None,
        });
        Ok(())
    }

    fn read(&mut self, deadline: Option<Instant>) -> Result<(u64, Bytes)> {
        let (id, frame) = self.client.conn.read_reply(deadline)?;
        if id == 0 {
            return Err(self.client.conn.unattributed(&frame));
        }
        Ok((id, frame))
    }

    /// Reads one reply and files it.
    fn receive(&mut self, deadline: Option<Instant>) -> Result<()> {
        let (id, frame) = self.read(deadline)?;
        self.dispatch(id, &frame)
    }

    /// Files a reply: a pull's, kept for [`Pulls::next_batch`]; an ACK's, checked.
    fn dispatch(&mut self, id: u64, frame: &Bytes) -> Result<()> {
        let conn: &mut Conn = &mut self.client.conn;
        if let Some(pull) = self.in_flight.iter_mut().find(|p| p.id == id) {
            let reply = match conn.decode(Op::Pull, frame) {
                Ok(Reply::Messages(groups)) => Ok(Batch { groups }),
                Ok(other) => Err(conn.unexpected(Op::Pull, &other)),
                Err(e) => Err(e),
            };
            let fatal = reply.as_ref().err().filter(|e| e.is_fatal()).cloned();
            pull.reply = Some(reply);
            return fatal.map_or(Ok(()), Err);
        }
        if let Some(at) = self.acks.iter().position(|(ack, _)| *ack == id) {
            self.acks.remove(at);
            return match conn.decode(Op::Ack, frame) {
                Ok(Reply::Done) => Ok(()),
                Err(e) if gone(&e) => Ok(()),
                Err(e) if e.is_fatal() => Err(e),
                Err(e) => {
                    self.ack_failure.get_or_insert(e);
                    Ok(())
                }
                Ok(other) => Err(conn.unexpected(Op::Ack, &other)),
            };
        }
        Err(conn.fail(Error::Protocol(format!(
            "reply to request {id}, which is not in flight"
        ))))
    }
}

impl Drop for Pulls<'_> {
    fn drop(&mut self) {
        // What was declared processed is acknowledged, without waiting (use
        // `acknowledge` to know it was); the replies still due belong to
        // nobody now and must not be read as someone else's.
        let _ = self.send_acks();
        let conn = &mut self.client.conn;
        if conn.flush().is_ok() {
            conn.orphans.extend(
                self.in_flight
                    .iter()
                    .filter(|p| p.reply.is_none())
                    .map(|p| p.id),
            );
            conn.orphans.extend(self.acks.iter().map(|(id, _)| *id));
        }
    }
}

/// The refusal of a request about a topic this session no longer reads.
fn gone(e: &Error) -> bool {
    matches!(
        e.code(),
        Some(ErrorCode::UnknownTopic | ErrorCode::NotSubscribed)
    )
}
