//! Reading the log back for subscribers behind the memory cache, off the
//! loop thread.
//!
//! A durable broker keeps only the newest messages of each topic in memory
//! (see `super::topic` and `super::cache`); a subscriber whose cursor is
//! below a topic's window is served from the log. The loop plans the read
//! with the log's index and hands it to the reader threads
//! ([`ReadService`]); they read and check the records and wake the loop,
//! which applies the result in [`Broker::poll_reads`]. The general request
//! is [`Broker::read_range`]: "topic T from offset F, up to N messages or B
//! bytes, for owner O" — pulls use it now, and any other reader of old
//! messages (a FETCH, a replay) is one more [`ReadOwner`].
//!
//! A session's reads land in its [`DiskCursor`]: the payloads read back for
//! one topic from its delivery point on, which its pulls take as they take
//! messages from memory (`super::pull`), and its one read in flight. Rules:
//! - one read in flight per session; a pull whose first message is on disk
//!   and not in the cursor starts it (or waits for the one in flight), and
//!   the session's pulls behind it that cover that topic wait too, so that
//!   they keep their order (PROTOCOL.md 4.10; pulls of other topics go on);
//!   a waiting pull has no deadline until the read is back — it has
//!   messages coming;
//! - a reply takes at most [`DISK_REPLY_BYTES`] from the cursor, so that a
//!   catch-up goes out in slices between which the loop serves others;
//! - one reply from a cursor per session per loop round: the session's
//!   other pulls are served the next round (the loop is woken for it), so
//!   that a catch-up alternates with everyone else's work;
//! - readahead: once a pull has taken from the cursor and less than half a
//!   read is left in it, the next read starts while the reply goes out;
//! - at most [`MAX_READS_IN_FLIGHT`] reads broker-wide are at the reader
//!   threads; the others queue in order (one per session at most, so the
//!   queue is bounded by the sessions). A read is counted in the memory
//!   budget (`disk_reads`) at its bound while in flight, and at what it
//!   returned while it sits in a cursor; one starts only if the budget
//!   admits it as output (reads are what drain the backlog, so like
//!   replies they may use the reserve).
//! - a cursor goes when its session does, its topic is deleted or
//!   unsubscribed, or a pull needs another range; a read that comes back
//!   for a cursor that has gone is dropped, its charge given back.
//!
//! A read that fails (I/O, a checksum, a record not where the index said)
//! answers the pull waiting for it STORAGE_UNAVAILABLE (retryable) and is
//! logged; nothing unchecked is ever delivered.

use super::cost;
use super::keys::{ConnId, SessionKey, TopicKey};
use super::pull::Answer;
use super::{Broker, BrokerTimer, Outbox};
use crate::budget::Class;
use crate::logging::RateLimit;
use crate::protocol::{ErrorCode, MAX_PULL_MESSAGES};
use crate::storage::{ReadChunk, ReadDone, ReadJob, ReadService, TopicId};
use bytes::Bytes;
use std::collections::{HashMap, HashSet, VecDeque};
use std::mem::size_of;
use std::time::{Duration, Instant};

/// Reads at the reader threads at once, broker-wide.
pub const MAX_READS_IN_FLIGHT: usize = 8;
/// Reader threads a durable broker starts.
pub const READER_THREADS: usize = 1;
/// Payload bytes one read of a session asks for (at least a frame's worth:
/// see [`Broker::session_read_bytes`]).
const READ_BYTES: usize = 1 << 20;

/// Most payload bytes one pull reply takes from a cursor (one message at
/// least): a catching-up subscriber's replies come in slices this size, so
/// that the loop turns to other clients between them.
pub const DISK_REPLY_BYTES: usize = 64 << 10;

/// What one payload held in a cursor costs besides its allocation.
const CURSOR_SLOT: usize = size_of::<(u64, Bytes)>();

/// Who a read is for: where its result goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOwner {
    /// A session's cursor (its pulls).
    Session(SessionKey),
    /// A FETCH, answered with what the read returns (`super::fetch`).
    Fetch(super::fetch::FetchRead),
}

/// A read submitted or queued.
#[derive(Debug)]
struct Slot {
    owner: ReadOwner,
    /// Taken when submitted.
    job: Option<ReadJob>,
    /// Budget bytes held while in flight.
    reserved: usize,
}

/// The broker's reads; see the module doc.
pub(super) struct DiskReads {
    service: Option<ReadService>,
    next_id: u64,
    slots: HashMap<u64, Slot>,
    /// Ids waiting for a place at the reader threads, oldest first.
    queued: VecDeque<u64>,
    in_flight: usize,
    /// Reads done, and payloads they returned, since start.
    pub(super) reads: u64,
    pub(super) messages_read: u64,
    /// The last pull reply planned took messages from a cursor.
    pub(super) took_disk: bool,
    /// Sessions with more to take from their cursor, served next round.
    deferred: Vec<SessionKey>,
    /// Connections with a FETCH waiting for its read (one each).
    pub(super) fetching: HashSet<ConnId>,
    /// Failed reads are logged at most this often (a damaged segment could
    /// fail every read of every catching-up subscriber).
    failures: RateLimit,
}

impl Default for DiskReads {
    fn default() -> Self {
        DiskReads {
            service: None,
            next_id: 0,
            slots: HashMap::new(),
            queued: VecDeque::new(),
            in_flight: 0,
            reads: 0,
            messages_read: 0,
            took_disk: false,
            deferred: Vec::new(),
            fetching: HashSet::new(),
            failures: RateLimit::new(10, Duration::from_secs(10)),
        }
    }
}

/// A session's messages read back for one topic; see the module doc.
#[derive(Debug)]
pub struct DiskCursor {
    topic: TopicKey,
    topic_id: TopicId,
    /// Ascending offsets, from the session's delivery point on.
    payloads: VecDeque<(u64, Bytes)>,
    /// Where the next read of this topic starts.
    end: u64,
    /// The read in flight, if any.
    pending: Option<u64>,
    /// Budget bytes the payloads hold.
    charge: usize,
    /// Bytes of payload held.
    bytes: usize,
    /// A pull waits for the read in flight: the session's pulls are not
    /// served (nor given deadlines) until it is back.
    pub(super) stalled: bool,
}

impl DiskCursor {
    /// The payload at `offset` of `topic`, if this cursor holds it.
    pub(super) fn get(&self, topic: TopicKey, topic_id: TopicId, offset: u64) -> Option<&Bytes> {
        if self.topic != topic || self.topic_id != topic_id {
            return None;
        }
        let &(front, _) = self.payloads.front()?;
        let guess = usize::try_from(offset.checked_sub(front)?).ok()?;
        match self.payloads.get(guess) {
            Some((o, payload)) if *o == offset => Some(payload),
            // Offsets skip over gaps: search.
            _ => self
                .payloads
                .binary_search_by_key(&offset, |(o, _)| *o)
                .ok()
                .and_then(|i| self.payloads.get(i))
                .map(|(_, payload)| payload),
        }
    }
}

impl Broker {
    /// Reads go to `service` from now on, and the memory cache is bounded
    /// (`--cache-bytes`): messages beyond it are evicted to be read back.
    pub fn set_reads(&mut self, service: ReadService) {
        self.disk.service = Some(service);
    }

    /// Whether old messages can be read back from the log.
    pub(super) fn reads_disk(&self) -> bool {
        self.disk.service.is_some()
    }

    /// The read path: `topic`'s messages from offset `from` up to its
    /// memory window, at most `max_messages` of them or `max_bytes` payload
    /// bytes (at least one), read off the loop thread for `owner`. Offsets
    /// at or above the window are in memory, for the caller to take there.
    /// Returns the read's id (the result goes to the owner, see
    /// [`Broker::poll_reads`]), or `None` when there is nothing on disk to
    /// read from `from` or no log to read.
    pub(super) fn read_range(
        &mut self,
        topic: TopicKey,
        from: u64,
        max_messages: usize,
        max_bytes: usize,
        owner: ReadOwner,
    ) -> Option<u64> {
        let entry = self.topics.get(topic)?;
        let (topic_id, end) = (entry.id, entry.window());
        if from >= end || self.disk.service.is_none() {
            return None;
        }
        let journal = self.journal.journal.as_ref()?;
        let extents = journal.plan_read(topic_id, from, end, max_messages as u64, max_bytes as u64);
        self.disk.next_id += 1;
        let id = self.disk.next_id;
        // The bound: what it may return (it stops past `max_bytes` by at
        // most one payload, which a frame bounds), each with its slot.
        let planned: u64 = extents.iter().map(|e| e.len).sum();
        let reserved = (max_bytes.saturating_add(self.limits.max_frame_bytes))
            .min(planned as usize)
            + max_messages.min(READ_BYTES / 16) * CURSOR_SLOT;
        let job = ReadJob {
            id,
            topic: topic_id,
            extents,
            from,
            max_messages,
            max_bytes,
        };
        self.disk.slots.insert(
            id,
            Slot {
                owner,
                job: Some(job),
                reserved,
            },
        );
        self.disk.queued.push_back(id);
        self.start_reads();
        Some(id)
    }

    /// Submits queued reads while there is a place at the reader threads
    /// and room in the budget, in order.
    fn start_reads(&mut self) {
        while self.disk.in_flight < MAX_READS_IN_FLIGHT {
            let Some(&id) = self.disk.queued.front() else {
                return;
            };
            let Some(slot) = self.disk.slots.get_mut(&id) else {
                self.disk.queued.pop_front();
                continue;
            };
            if !self.budget.admits_output(slot.reserved) {
                return;
            }
            self.disk.queued.pop_front();
            self.budget.add(Class::DiskReads, slot.reserved);
            if let (Some(job), Some(service)) = (slot.job.take(), self.disk.service.as_mut()) {
                service.submit(job);
                self.disk.in_flight += 1;
            }
        }
    }

    /// Applies the reads the reader threads finished: each goes to its
    /// owner, whose waiting pulls are then served. Called once per loop
    /// round, like [`Broker::poll_journal`].
    pub fn poll_reads(&mut self, now: Instant, out: &mut dyn Outbox) {
        if self.disk.service.is_none() {
            return;
        }
        for key in std::mem::take(&mut self.disk.deferred) {
            self.serve_parked(key, out);
            self.arm_unarmed(key, now, out);
        }
        let Some(service) = self.disk.service.as_mut() else {
            return;
        };
        for done in service.poll() {
            self.disk.in_flight = self.disk.in_flight.saturating_sub(1);
            let Some(slot) = self.disk.slots.remove(&done.id) else {
                continue;
            };
            self.budget.sub(Class::DiskReads, slot.reserved);
            self.disk.reads += 1;
            match slot.owner {
                ReadOwner::Session(key) => self.session_read_done(key, done, now, out),
                ReadOwner::Fetch(read) => {
                    let chunks = done.result.map_err(|e| format!("{e:?}"));
                    self.fetch_read_done(read, chunks, out);
                }
            }
        }
        self.start_reads();
    }

    /// A pull reply was served from the session's cursor; if more of its
    /// pulls wait (at `index` on), they are served next round, so that one
    /// catch-up's slices alternate with other clients' work instead of
    /// filling the round. Returns whether it deferred them (and woke the
    /// loop for that round).
    pub(super) fn defer_disk_serving(&mut self, key: SessionKey, index: usize) -> bool {
        let waiting = self
            .sessions
            .get(key)
            .is_some_and(|s| s.parked.len() > index);
        if !waiting {
            return false;
        }
        if !self.disk.deferred.contains(&key) {
            self.disk.deferred.push(key);
        }
        if let Some(service) = &self.disk.service {
            service.wake();
        }
        true
    }

    /// Payload bytes one read of a session asks for.
    fn session_read_bytes(&self) -> usize {
        READ_BYTES.max(self.limits.max_frame_bytes)
    }

    /// Starts one read of `topic` from `from` for session `key`: a pull's
    /// worth of messages, [`Broker::session_read_bytes`] of payload.
    fn session_read(&mut self, key: SessionKey, topic: TopicKey, from: u64) -> Option<u64> {
        let bytes = self.session_read_bytes();
        self.read_range(
            topic,
            from,
            MAX_PULL_MESSAGES as usize,
            bytes,
            ReadOwner::Session(key),
        )
    }

    /// A session's read is back: its payloads join the cursor (or the
    /// failure answers the pull waiting for it), and its pulls are served.
    fn session_read_done(
        &mut self,
        key: SessionKey,
        done: ReadDone,
        now: Instant,
        out: &mut dyn Outbox,
    ) {
        let Some(cursor) = self
            .sessions
            .get_mut(key)
            .and_then(|s| s.disk.as_deref_mut())
            .filter(|c| c.pending == Some(done.id))
        else {
            return;
        };
        cursor.pending = None;
        cursor.stalled = false;
        let (topic, topic_id) = (cursor.topic, cursor.topic_id);
        let live = self.topics.get(topic).is_some_and(|t| t.id == topic_id);
        let failure = match done.result {
            Ok(chunks) if live => self.fill_cursor(key, chunks),
            Ok(_) => {
                self.drop_cursor(key);
                None
            }
            Err(e) => Some(format!("{e:?}")),
        };
        if let Some(why) = failure {
            crate::log_limited!(
                self.disk.failures,
                now,
                log::Level::Error,
                "reading topic {topic_id} back from the log failed: {why}; the pull is answered STORAGE_UNAVAILABLE"
            );
            self.drop_cursor(key);
            let message = "the broker could not read these messages back from its log; retry";
            let waiting = self
                .sessions
                .get(key)
                .and_then(|s| s.parked.iter().position(|p| p.covers(topic)));
            if let Some(parked) = waiting.and_then(|i| self.sessions[key].parked.remove(i)) {
                self.finish(
                    parked,
                    Answer::Error(ErrorCode::StorageUnavailable, message),
                    out,
                );
            }
        }
        self.serve_parked(key, out);
        self.arm_unarmed(key, now, out);
    }

    /// Adds what a read returned to the session's cursor; a read that
    /// returned nothing where the index promised messages is a failure.
    fn fill_cursor(&mut self, key: SessionKey, chunks: Vec<ReadChunk>) -> Option<String> {
        let cursor = self.sessions.get_mut(key)?.disk.as_deref_mut()?;
        let mut charge = 0;
        let mut count = 0;
        for chunk in chunks {
            for (i, payload) in chunk.payloads.into_iter().enumerate() {
                let offset = chunk.first_offset + i as u64;
                if offset < cursor.end {
                    continue;
                }
                charge += cost::single_payload(payload.len()) + CURSOR_SLOT;
                cursor.bytes += payload.len();
                cursor.payloads.push_back((offset, payload));
                cursor.end = offset + 1;
                count += 1;
            }
        }
        cursor.charge += charge;
        self.budget.add(Class::DiskReads, charge);
        self.disk.messages_read += count;
        if count == 0 {
            return Some(format!(
                "no record holds offset {} though the index planned one",
                cursor.end
            ));
        }
        None
    }

    /// Drops the session's cursor, giving its charge back (a read in
    /// flight for it is dropped when it comes back).
    pub(super) fn drop_cursor(&mut self, key: SessionKey) {
        if let Some(cursor) = self.sessions.get_mut(key).and_then(|s| s.disk.take()) {
            self.budget.sub(Class::DiskReads, cursor.charge);
        }
    }

    /// The session no longer follows `topic`: a cursor for it goes.
    pub(super) fn drop_cursor_of(&mut self, key: SessionKey, topic: TopicKey) {
        let held = self
            .sessions
            .get(key)
            .and_then(|s| s.disk.as_ref())
            .is_some_and(|c| c.topic == topic);
        if held {
            self.drop_cursor(key);
        }
    }

    /// A pull of the session found `topic`'s next message, at `from`, on
    /// disk and not in the cursor. `stall`: it found nothing else, so it
    /// waits for the read (with the pulls behind it). Starts the read if
    /// the session has none in flight; returns whether the session now
    /// waits for one.
    pub(super) fn want_disk(
        &mut self,
        key: SessionKey,
        topic: TopicKey,
        from: u64,
        stall: bool,
    ) -> bool {
        let Some(session) = self.sessions.get_mut(key) else {
            return false;
        };
        if let Some(cursor) = session.disk.as_deref_mut() {
            if cursor.pending.is_some() {
                cursor.stalled |= stall;
                return cursor.stalled;
            }
            let useful = cursor.topic == topic || !cursor.payloads.is_empty();
            if !stall && useful && cursor.topic != topic {
                // Another topic's messages are still to be taken first.
                return false;
            }
        }
        self.drop_cursor(key);
        let Some(topic_id) = self.topics.get(topic).map(|t| t.id) else {
            return false;
        };
        let id = self.session_read(key, topic, from);
        let Some(session) = self.sessions.get_mut(key) else {
            return false;
        };
        session.disk = Some(Box::new(DiskCursor {
            topic,
            topic_id,
            payloads: VecDeque::new(),
            end: from,
            pending: id,
            charge: 0,
            bytes: 0,
            stalled: stall && id.is_some(),
        }));
        stall && id.is_some()
    }

    /// After a pull took messages: what the session has delivered leaves
    /// its cursor, and if less than half a read is left the next read
    /// starts now (readahead), while the reply goes out.
    pub(super) fn after_delivery(&mut self, key: SessionKey) {
        let read_bytes = self.session_read_bytes();
        let Some(session) = self.sessions.get_mut(key) else {
            return;
        };
        let Some(topic) = session.disk.as_ref().map(|c| c.topic) else {
            return;
        };
        let Some(delivered) = session.subscription(topic).map(|sub| sub.delivered) else {
            return self.drop_cursor(key);
        };
        let Some(cursor) = session.disk.as_deref_mut() else {
            return;
        };
        let mut freed = 0;
        while let Some((offset, payload)) = cursor.payloads.front() {
            if *offset >= delivered {
                break;
            }
            freed += cost::single_payload(payload.len()) + CURSOR_SLOT;
            cursor.bytes -= payload.len();
            cursor.payloads.pop_front();
        }
        cursor.charge -= freed;
        self.budget.sub(Class::DiskReads, freed);
        let (topic, from, idle) = (
            cursor.topic,
            cursor.end.max(delivered),
            cursor.pending.is_none(),
        );
        let low = cursor.bytes < read_bytes / 2;
        let behind = self
            .topics
            .get(topic)
            .is_some_and(|t| t.id == cursor.topic_id && from < t.window());
        if idle && low && behind {
            let id = self.session_read(key, topic, from);
            if let Some(cursor) = self
                .sessions
                .get_mut(key)
                .and_then(|s| s.disk.as_deref_mut())
            {
                cursor.pending = id;
                cursor.end = from;
            }
        }
    }

    /// Gives a deadline to each of the session's waiting pulls that has
    /// none (they came while it waited for a disk read, or just now), or
    /// answers it `[]` at once if it may not wait; not to those behind a
    /// read still in flight (they cover its topic).
    pub(super) fn arm_unarmed(&mut self, key: SessionKey, now: Instant, out: &mut dyn Outbox) {
        if self.disk.deferred.contains(&key) {
            // Served next round first (it has messages waiting), armed then.
            return;
        }
        let mut index = 0;
        loop {
            let Some(session) = self.sessions.get_mut(key) else {
                return;
            };
            let stalled = session.disk.as_ref().filter(|c| c.stalled).map(|c| c.topic);
            let Some(parked) = session.parked.get(index).copied() else {
                return;
            };
            if parked.timer.is_some() || stalled.is_some_and(|t| parked.covers(t)) {
                index += 1;
                continue;
            }
            if parked.wait_ms == 0 {
                session.parked.remove(index);
                self.finish(parked, Answer::Empty, out);
                continue;
            }
            let timer = self.timers.arm(
                now + Duration::from_millis(u64::from(parked.wait_ms)),
                BrokerTimer::PullDeadline(key),
            );
            if let Some(p) = self.sessions[key].parked.get_mut(index) {
                p.timer = Some(timer);
            }
            index += 1;
        }
    }

    /// The log's bytes on disk, if the broker keeps a log.
    pub(super) fn disk_bytes(&self) -> Option<u64> {
        self.journal.journal.as_ref()?.disk_bytes()
    }

    /// Whether `bytes` more payload fit `--max-disk` (checked against the
    /// log's size now; the records of a round may pass it by one round's
    /// publishes). DISK_FULL is held like TOPIC_FULL (`super::pending`)
    /// and tried again when segments are deleted.
    pub(super) fn admit_disk(&self, bytes: usize) -> Result<(), super::failure::Failure> {
        let (Some(max), Some(used)) = (self.limits.max_disk_bytes, self.disk_bytes()) else {
            return Ok(());
        };
        if used.saturating_add(bytes as u64) > max {
            return super::failure::fail(
                ErrorCode::DiskFull,
                format!(
                    "the log holds {used} bytes on disk (--max-disk {max}); retry after subscribers acknowledge"
                ),
            );
        }
        Ok(())
    }

    /// The topic whose read the session's pulls that cover it wait for.
    pub(super) fn stalled_topic(&self, key: SessionKey) -> Option<TopicKey> {
        let cursor = self.sessions.get(key)?.disk.as_ref()?;
        cursor.stalled.then_some(cursor.topic)
    }

    /// The reads in flight and queued, for STATS.
    pub(super) fn reads_outstanding(&self) -> usize {
        self.disk.slots.len()
    }
}
