//! The broker's side of the durable log: what it records, what it learns
//! back, and how it rebuilds itself from a log at start.
//!
//! The broker stays free of I/O. It writes each change of durable state as
//! a [`Record`] to a [`Journal`] — the server hands it the storage
//! [`Log`], which implements the trait; a broker that keeps no log has none
//! and builds no records. Once per loop round the server calls
//! [`Broker::flush_journal`] (group commit: one batch, one fsync, for the
//! round), and when the writer reports back, [`Broker::poll_journal`]
//! applies the reports:
//!
//! - **Durable**: published messages are staged in their topic (see
//!   `super::topic`) until the record holding them is durable; then they
//!   become visible and wake the subscribers waiting for them. So a
//!   subscriber never sees a message that a crash could take back.
//! - **Lost** (a failed write or fsync): the staged messages of every lost
//!   record are dropped unseen and their offsets become a gap (see
//!   `super::topic`): an offset is never given to another message. Lost
//!   records are always the newest ones (the log writes nothing after a
//!   failure until the next append starts a new segment), so they are the
//!   back of each topic's staged messages. An empty Messages record at the
//!   topic's end keeps the gap across a restart.
//!
//! Requests that change state other than publishes are **gated**: the
//! request appends its record, makes its change, and its reply waits for
//! the record ([`Broker::gate_on`], [`Broker::gate_reply`]). If the record
//! is lost, the reply is STORAGE_UNAVAILABLE and the change is settled by
//! its [`Undo`]: a creation (topic, session, subscription) is taken back,
//! since nothing may be built on what the log lacks; a deletion or an end
//! (topic deleted, unsubscribed, session ended or expired) stays made —
//! other clients may have seen it — and its record is owed, appended again
//! ahead of the next record the broker logs. Until that write succeeds a
//! restart brings the object back; the client was told so.
//!
//! Space: at each segment roll the flush appends a checkpoint (the live
//! topics and sessions as fresh records) and, once it is durable, releases
//! the segments below the newest checkpoint that no retained message needs
//! (STORAGE.md §7).
//!
//! Acknowledged cursors are logged lazily: an ack marks the cursor dirty and
//! the flush appends one `Acked` record per dirty cursor, never waited for.
//! A crash may then redeliver what was acknowledged since the last flush —
//! at-least-once, never a loss.
//!
//! Recovery ([`Broker::replay`], then [`Broker::finish_recovery`]) applies
//! the records in order as facts: topics with their durable ids, messages
//! (kept only while some subscriber has not acknowledged them), sessions
//! (detached, their expiry restarting at recovery), subscriptions and
//! cursors.

use super::cost;
use super::failure::{Failure, fail};
use super::keys::{ConnId, SessionKey, TopicKey};
use super::pull::Answer;
use super::session::Session;
use super::{Broker, BrokerTimer, Outbox};
use crate::budget::Class;
use crate::codec;
use crate::protocol::ErrorCode;
use crate::protocol::Reply;
use crate::protocol::Retention;
use crate::storage::{
    AppendError, Event, Extent, Log, ProducerStamp, Record, SessionEnd, SessionId, TopicId,
};
use bytes::Bytes;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Where the broker writes its records: the storage [`Log`] in a server, a
/// log over a simulated disk in tests.
pub trait Journal: Send {
    /// Appends one record to the current batch; returns its sequence number.
    fn append(&mut self, record: &Record) -> Result<u64, AppendError>;
    /// Hands the batch to the writer (once per loop round).
    fn flush(&mut self);
    /// What the writer has reported since the last call.
    fn poll(&mut self) -> Vec<Event>;
    /// The sequence number the next append gets.
    fn next_seq(&self) -> u64;
    /// The first sequence number of the segment being written.
    fn active_segment(&self) -> u64;
    /// A sequence number at or below that of the record holding `offset`
    /// of `topic`, in the same segment (the start of its index span).
    fn locate_seq(&self, topic: TopicId, offset: u64) -> Option<u64>;
    /// No record below `seq` is needed: whole segments below it go.
    /// Returns how many segments were released.
    fn release_below(&mut self, seq: u64) -> usize;
    /// The records holding `topic`'s offsets `from..end`, bounded (see
    /// [`Log::plan_read`]); a journal that cannot be read back has none.
    fn plan_read(
        &self,
        _topic: TopicId,
        _from: u64,
        _end: u64,
        _max_messages: u64,
        _max_bytes: u64,
    ) -> Vec<Extent> {
        Vec::new()
    }
    /// The log's bytes on disk, if the journal knows them.
    fn disk_bytes(&self) -> Option<u64> {
        None
    }
    /// Bytes the journal's read-back index holds in memory (the broker
    /// counts them as `log_index`).
    fn index_bytes(&self) -> usize {
        0
    }
}

impl Journal for Log {
    fn append(&mut self, record: &Record) -> Result<u64, AppendError> {
        Log::append(self, record)
    }

    fn flush(&mut self) {
        Log::flush(self)
    }

    fn poll(&mut self) -> Vec<Event> {
        Log::poll(self)
    }

    fn next_seq(&self) -> u64 {
        Log::next_seq(self)
    }

    fn active_segment(&self) -> u64 {
        Log::active_segment(self)
    }

    fn locate_seq(&self, topic: TopicId, offset: u64) -> Option<u64> {
        Log::locate(self, topic, offset).map(|at| at.seq)
    }

    fn release_below(&mut self, seq: u64) -> usize {
        Log::release_below(self, seq).len()
    }

    fn plan_read(
        &self,
        topic: TopicId,
        from: u64,
        end: u64,
        max_messages: u64,
        max_bytes: u64,
    ) -> Vec<Extent> {
        Log::plan_read(self, topic, from, end, max_messages, max_bytes)
    }

    fn disk_bytes(&self) -> Option<u64> {
        Some(Log::disk_bytes(self))
    }

    fn index_bytes(&self) -> usize {
        Log::index_bytes(self)
    }
}

/// A checkpoint written but not yet durable, and the release it allows.
#[derive(Debug, Clone, Copy)]
struct PendingRelease {
    /// The seq just past the checkpoint's last record.
    end: u64,
    /// What may be released once `end` is durable.
    below: u64,
}

/// A `Messages` record not yet reported durable, and what waits on it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Unsynced {
    seq: u64,
    topic: TopicKey,
    /// The topic's id, so that a deleted topic whose key was reused by a
    /// new one is not mistaken for it.
    topic_id: TopicId,
    /// Messages staged in the topic (0 when the topic kept none: it had no
    /// subscribers).
    staged: usize,
}

/// What becomes of a gated request when its record is lost.
#[derive(Debug, Clone, Copy)]
pub(super) enum Undo {
    /// A new topic: removed, as CREATE_TOPIC promises nothing is created
    /// (whatever was published to it meanwhile was lost with it: a loss
    /// takes every record after the first lost one).
    Topic(TopicKey, TopicId),
    /// A new session: ended, and let go by its connection, so that nothing
    /// is built on a session the log does not have.
    Session(SessionKey, SessionId),
    /// A new subscription: removed, so that a retried SUBSCRIBE logs it
    /// again.
    Subscription(SessionKey, TopicKey),
    /// A change that stays made (a topic deleted, a subscription or a
    /// session ended): undoing it would take back what other clients
    /// already saw. Its record is owed instead (see [`JournalState::owed`]).
    Kept,
}

/// A gated request's reply waiting for its record to be durable.
#[derive(Debug)]
pub(super) struct Gated {
    seq: u64,
    /// `None` once the connection is gone: the undo still applies.
    conn: Option<ConnId>,
    id: u64,
    reply: Reply,
    undo: Undo,
}

/// The broker's journal state.
#[derive(Default)]
pub(super) struct JournalState {
    pub(super) journal: Option<Box<dyn Journal>>,
    /// Oldest first, as the log numbers them.
    unsynced: VecDeque<Unsynced>,
    /// Cursors acknowledged since the last flush.
    dirty_cursors: Vec<(SessionKey, TopicKey)>,
    /// The id the next topic gets.
    pub(super) next_topic_id: TopicId,
    /// Everything below this sequence number is durable (or lost).
    durable_through: u64,
    /// Set by the request being executed when its reply must wait.
    gate: Option<(u64, Undo)>,
    /// Replies waiting for their record, in seq order.
    gated: VecDeque<Gated>,
    /// Records of changes that stay made whatever the disk does (see
    /// [`Broker::log_change`]), not yet durable: (seq, record), oldest
    /// first.
    changes: VecDeque<(u64, Record)>,
    /// Such records the log lost: appended again, in order, ahead of the
    /// next record the broker logs (which starts a new segment), so the
    /// log ends up saying what the broker's state says once a write
    /// succeeds, and a later record (a new subscription to the same topic)
    /// is never replayed before them.
    owed: Vec<Record>,
    /// First seqs of the checkpoints written, oldest first (see
    /// [`Broker::checkpoint`]).
    checkpoints: VecDeque<u64>,
    /// The segment the last checkpoint ended in: the next one is due once
    /// the log has rolled past it.
    checkpoint_segment: u64,
    pending_release: Option<PendingRelease>,
    /// Segments released so far.
    segments_released: u64,
}

/// What recovery rebuilt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovered {
    pub records: u64,
    pub topics: u64,
    pub messages: u64,
    pub sessions: u64,
    pub subscriptions: u64,
    /// Records that named a topic or session that no longer existed
    /// (harmless: their object was deleted later in the log).
    pub orphans: u64,
}

use super::retention::now_ms;

impl Broker {
    /// From now on every change of durable state goes to `journal`.
    pub fn set_journal(&mut self, journal: Box<dyn Journal>) {
        self.journal.journal = Some(journal);
        self.settle_index();
    }

    /// Recounts the log's read-back index in the budget (`log_index`).
    /// Once per round, not per append: it changes by a span per 64 KiB of
    /// a topic's log, and the recount is two sums over the topics.
    fn settle_index(&mut self) {
        if let Some(journal) = &self.journal.journal {
            self.budget.set(Class::LogIndex, journal.index_bytes());
        }
    }

    pub fn is_durable(&self) -> bool {
        self.journal.journal.is_some()
    }

    /// How many log segments checkpoints have released so far.
    pub fn segments_released(&self) -> u64 {
        self.journal.segments_released
    }

    /// Everything below this sequence number was reported durable or lost.
    pub fn log_position(&self) -> u64 {
        self.journal.durable_through
    }

    /// The record just appended for a new session or subscription: the
    /// reply to the request waits until it is durable (see
    /// [`Broker::gate_reply`]).
    pub(super) fn gate_on(&mut self, seq: Option<u64>, undo: Undo) {
        self.journal.gate = seq.map(|seq| (seq, undo));
    }

    /// The reply to request `id` of `conn`: returned to be written now,
    /// unless the request appended a record it must wait for.
    pub(super) fn gate_reply(&mut self, conn: ConnId, id: u64, reply: Reply) -> Option<Reply> {
        let Some((seq, undo)) = self.journal.gate.take() else {
            return Some(reply);
        };
        if seq < self.journal.durable_through {
            return Some(reply);
        }
        self.journal.gated.push_back(Gated {
            seq,
            conn: Some(conn),
            id,
            reply,
            undo,
        });
        None
    }

    /// `conn` is gone: its gated replies go nowhere (its key may be
    /// reused), but their undo still applies if their record is lost.
    pub(super) fn drop_gated(&mut self, conn: ConnId) {
        for gated in &mut self.journal.gated {
            if gated.conn == Some(conn) {
                gated.conn = None;
            }
        }
    }

    /// Whether replies still wait for the disk: publishes stored but not
    /// durable, or gated requests (a clean shutdown waits for them).
    pub fn awaits_disk(&self) -> bool {
        !self.journal.gated.is_empty() || self.pending_stored()
    }

    /// Appends `record`, after the owed records if there are any.
    fn append(&mut self, record: &Record) -> Option<Result<u64, AppendError>> {
        let state = &mut self.journal;
        let journal = state.journal.as_mut()?;
        for owed in std::mem::take(&mut state.owed) {
            match journal.append(&owed) {
                Ok(seq) => state.changes.push_back((seq, owed)),
                Err(e) => log::error!("cannot log {owed:?}: {e:?}"),
            }
        }
        Some(journal.append(record))
    }

    /// Appends `record` if the broker keeps a log; its sequence number.
    pub(super) fn log_record(&mut self, record: &Record) -> Result<Option<u64>, Failure> {
        match self.append(record) {
            None => Ok(None),
            Some(Ok(seq)) => Ok(Some(seq)),
            Some(Err(AppendError::TooLarge { body_bytes })) => fail(
                ErrorCode::BatchTooLarge,
                format!(
                    "a record of {body_bytes} bytes exceeds the log's maximum of {}; split the batch",
                    crate::storage::MAX_BODY_LEN
                ),
            ),
        }
    }

    /// A record nobody waits for and nothing is owed for if it is lost
    /// (an acknowledged cursor, a checkpoint's): small, so never too large.
    pub(super) fn log_fact(&mut self, record: Record) {
        if let Some(Err(e)) = self.append(&record) {
            log::error!("cannot log {record:?}: {e:?}");
        }
    }

    /// The record of a change made in memory whatever becomes of it (a
    /// topic deleted, a subscription or session ended, a gap): if the log
    /// loses it, it is owed and appended again ahead of the next record
    /// (see [`JournalState::owed`]). Its sequence number, for a reply to
    /// wait for ([`Undo::Kept`]).
    pub(super) fn log_change(&mut self, record: Record) -> Option<u64> {
        match self.append(&record)? {
            Ok(seq) => {
                self.journal.changes.push_back((seq, record));
                Some(seq)
            }
            Err(e) => {
                log::error!("cannot log {record:?}: {e:?}");
                None
            }
        }
    }

    /// The durable topic id for a new topic, if the broker keeps a log.
    pub(super) fn new_topic_id(&mut self) -> TopicId {
        let id = self.journal.next_topic_id.max(1);
        self.journal.next_topic_id = id + 1;
        id
    }

    /// Logs the messages `payloads` published to `key` from offset
    /// `first_offset` at `timestamp_ms`, numbered by `producer` if set,
    /// and leaves `payloads` as they were (the record only borrows them,
    /// with no reference count touched); `staged` of them are kept in the
    /// topic, invisible until durable. Returns the record's sequence number.
    pub(super) fn log_messages(
        &mut self,
        key: TopicKey,
        first_offset: u64,
        payloads: &mut Vec<Bytes>,
        timestamp_ms: u64,
        producer: Option<ProducerStamp>,
    ) -> Result<Option<u64>, Failure> {
        if self.journal.journal.is_none() {
            return Ok(None);
        }
        let topic_id = self.topics[key].id;
        let record = Record::Messages {
            topic: topic_id,
            first_offset,
            timestamp_ms,
            payloads: std::mem::take(payloads),
            producer,
        };
        let logged = self.log_record(&record);
        if let Record::Messages { payloads: back, .. } = record {
            *payloads = back;
        }
        logged
    }

    /// The record `seq` holds `staged` messages staged in topic `key`.
    pub(super) fn track_unsynced(&mut self, seq: u64, key: TopicKey, staged: usize) {
        let topic_id = self.topics[key].id;
        self.topics[key].stage(staged);
        self.journal.unsynced.push_back(Unsynced {
            seq,
            topic: key,
            topic_id,
            staged,
        });
    }

    /// An acknowledgement moved the cursor of `session` on `topic`.
    pub(super) fn cursor_moved(&mut self, session: SessionKey, topic: TopicKey) {
        if self.journal.journal.is_some() {
            self.journal.dirty_cursors.push((session, topic));
        }
    }

    /// Hands the records appended so far to the writer, and nothing else:
    /// for the server to start the disk early in a round, before work
    /// (answering pulls) that appends nothing it must wait for. The
    /// round's [`Broker::flush_journal`] still follows.
    pub fn hand_over_journal(&mut self) {
        if let Some(journal) = &mut self.journal.journal {
            journal.flush();
        }
    }

    /// Appends the dirty cursors and hands the round's records to the
    /// writer: once per loop round, before the loop sleeps.
    pub fn flush_journal(&mut self) {
        if self.journal.journal.is_none() {
            return;
        }
        // The round's pulls were answered from memory; what is left over
        // the cache goes now.
        self.evict_over_cache();
        let mut dirty = std::mem::take(&mut self.journal.dirty_cursors);
        dirty.sort_unstable();
        dirty.dedup();
        for &(session_key, topic_key) in &dirty {
            let Some(session) = self.sessions.get(session_key) else {
                continue;
            };
            let (Some(sub), Some(topic)) =
                (session.subscription(topic_key), self.topics.get(topic_key))
            else {
                continue;
            };
            let record = Record::Acked {
                session: session.id,
                topic: topic.id,
                offset: sub.acked,
            };
            self.log_fact(record);
        }
        dirty.clear();
        self.journal.dirty_cursors = dirty;
        self.checkpoint_if_due();
        if let Some(journal) = &mut self.journal.journal {
            journal.flush();
        }
        self.settle_index();
    }

    /// Applies what the writer reported: durable messages become visible
    /// (their subscribers are woken, to be answered by
    /// [`Broker::answer_ready`]); lost ones are dropped unseen.
    pub fn poll_journal(&mut self, out: &mut dyn Outbox) -> Vec<Event> {
        let Some(journal) = &mut self.journal.journal else {
            return Vec::new();
        };
        let events = journal.poll();
        for event in &events {
            match event {
                Event::Durable { through } => {
                    self.changes_durable(*through);
                    self.made_durable(*through);
                    self.producers_durable(*through);
                    self.release_segments(*through);
                    self.durable_through(through.saturating_sub(1), out);
                    self.release_gated(*through, out);
                }
                Event::Lost(loss) => {
                    log::error!(
                        "the log lost records {}..{}: {:?}; they are answered STORAGE_UNAVAILABLE",
                        loss.seqs.start,
                        loss.seqs.end,
                        loss.error
                    );
                    self.changes_lost_from(loss.seqs.start);
                    self.messages_lost_from(loss.seqs.start, loss.seqs.end);
                    self.producers_lost_from(loss.seqs.start);
                    self.checkpoints_lost_from(loss.seqs.start);
                    self.replies_lost_from(loss.seqs.start, out);
                    self.gated_lost_from(loss.seqs.start, out);
                }
                Event::RemoveFailed { .. } => {}
            }
        }
        events
    }

    /// Writes a checkpoint when the log has rolled since the last one and
    /// no earlier checkpoint still waits to be durable. A checkpoint is the
    /// live metadata as fresh records: for each topic, TopicCreated and an
    /// empty Messages record at its lowest retained offset (so a replay
    /// starting here gives the topic its offsets back); for each session,
    /// SessionCreated, then Subscribed and Acked at its acknowledged offset
    /// for each subscription. It is appended after the round's Acked
    /// records, so it and everything before it describe the state at this
    /// moment; the release it allows is worked out now and made once the
    /// checkpoint is durable (see [`Broker::release_segments`]).
    fn checkpoint_if_due(&mut self) {
        let Some(journal) = &self.journal.journal else {
            return;
        };
        if self.journal.pending_release.is_some()
            || journal.active_segment() <= self.journal.checkpoint_segment
        {
            return;
        }
        let start = journal.next_seq();
        // The oldest record some subscriber may still read.
        let mut oldest_needed = u64::MAX;
        for (_, topic) in self.topics.iter() {
            // A gap at the front has no record; the first message after
            // it does.
            let first = topic.past_gap(topic.base_offset());
            if first < topic.end_offset() {
                let seq = journal.locate_seq(topic.id, first).unwrap_or(0);
                oldest_needed = oldest_needed.min(seq);
            }
        }
        let mut records = Vec::new();
        for (_, topic) in self.topics.iter() {
            records.push(Record::TopicCreated {
                topic: topic.id,
                name: topic.name.to_string(),
            });
            records.extend(retention_record(topic.id, topic.retention));
            records.push(Record::Messages {
                topic: topic.id,
                first_offset: topic.base_offset(),
                timestamp_ms: now_ms(),
                payloads: Vec::new(),
                producer: None,
            });
        }
        self.producer_checkpoint(&mut records);
        for (_, session) in self.sessions.iter() {
            // The session's own timeout goes with it, or it would be lost
            // once the segment that first recorded it is released.
            records.push(Record::SessionCreated {
                session: session.id,
                timeout_ms: session.timeout.map(|t| t.as_millis() as u64),
                owner: session.owner.as_deref().map(str::to_owned),
            });
            for sub in session.subscriptions() {
                let Some(topic) = self.topics.get(sub.topic) else {
                    continue;
                };
                records.push(Record::Subscribed {
                    session: session.id,
                    topic: topic.id,
                    start_offset: sub.acked,
                });
                records.push(Record::Acked {
                    session: session.id,
                    topic: topic.id,
                    offset: sub.acked,
                });
            }
        }
        for record in records {
            self.log_fact(record);
        }
        let Some(journal) = &self.journal.journal else {
            return;
        };
        self.journal.checkpoints.push_back(start);
        self.journal.checkpoint_segment = journal.active_segment();
        // Replaying from a checkpoint at or below every needed record
        // rebuilds the state: the newest such checkpoint bounds the release.
        let below = self
            .journal
            .checkpoints
            .iter()
            .rev()
            .copied()
            .find(|&c| c <= oldest_needed)
            .unwrap_or(0);
        self.journal.pending_release = Some(PendingRelease {
            end: journal.next_seq(),
            below,
        });
    }

    /// The pending checkpoint is durable by `through`: the segments below
    /// its release point go, and so do the checkpoints they held.
    fn release_segments(&mut self, through: u64) {
        let Some(pending) = self.journal.pending_release else {
            return;
        };
        if pending.end > through {
            return;
        }
        self.journal.pending_release = None;
        if pending.below == 0 {
            return;
        }
        if let Some(journal) = &mut self.journal.journal {
            let released = journal.release_below(pending.below) as u64;
            self.journal.segments_released += released;
            if released > 0 && self.limits.max_disk_bytes.is_some() {
                self.room_everywhere();
            }
        }
        while self
            .journal
            .checkpoints
            .front()
            .is_some_and(|&c| c < pending.below)
        {
            self.journal.checkpoints.pop_front();
        }
    }

    /// Records from `start` on were lost: so were the checkpoints among
    /// them, and the release a lost checkpoint promised.
    fn checkpoints_lost_from(&mut self, start: u64) {
        while self.journal.checkpoints.back().is_some_and(|&c| c >= start) {
            self.journal.checkpoints.pop_back();
        }
        if self.journal.pending_release.is_some_and(|p| p.end > start) {
            self.journal.pending_release = None;
            // Due again at the next roll, which the next append after a
            // loss starts; not at once, or a disk that keeps failing would
            // be sent a checkpoint every round with nothing else to do.
            if let Some(journal) = &self.journal.journal {
                self.journal.checkpoint_segment = journal.active_segment();
            }
        }
    }

    fn release_gated(&mut self, through: u64, out: &mut dyn Outbox) {
        while self.journal.gated.front().is_some_and(|g| g.seq < through) {
            let Some(gated) = self.journal.gated.pop_front() else {
                break;
            };
            if let Some(buf) = gated.conn.and_then(|conn| out.buffer(conn)) {
                codec::encode_reply(buf, gated.id, &gated.reply);
            }
        }
    }

    /// The gated requests whose records were lost: each is undone (see
    /// [`Undo`]) and answered STORAGE_UNAVAILABLE, oldest first.
    fn gated_lost_from(&mut self, start: u64, out: &mut dyn Outbox) {
        let mut lost = Vec::new();
        while self.journal.gated.back().is_some_and(|g| g.seq >= start) {
            lost.extend(self.journal.gated.pop_back());
        }
        for gated in lost.into_iter().rev() {
            let failure = match gated.undo {
                Undo::Topic(key, id) => {
                    if let Some(topic) = self.topics.get(key).filter(|t| t.id == id) {
                        // As a deletion would: held publishes and parked
                        // pulls on it are answered, nothing is left behind.
                        let name = topic.name.to_string();
                        self.delete_held(key, &name, out);
                        self.remove_topic(key, &name, Some(out));
                    }
                    Failure::storage_unavailable()
                }
                Undo::Session(key, id) => {
                    if let Some(session) = self.sessions.get(key).filter(|s| s.id == id) {
                        let holder = session.conn;
                        self.end_all_parked(key, Answer::Empty, out);
                        if let Some(client) = holder.and_then(|conn| self.client_mut(conn))
                            && client.subscriber == Some(key)
                        {
                            client.subscriber = None;
                        }
                        self.expire(key, SessionEnd::Closed, false);
                    }
                    Failure::storage_unavailable()
                }
                Undo::Subscription(session_key, topic_key) => {
                    if let Some(sub) = self
                        .sessions
                        .get_mut(session_key)
                        .and_then(|s| s.remove_subscription(topic_key))
                    {
                        self.leave_topic(session_key, sub);
                    }
                    Failure::storage_unavailable()
                }
                Undo::Kept => Failure::new(
                    ErrorCode::StorageUnavailable,
                    "done, but the broker's log could not write it: it is written again with \
                     the broker's next record, and a restart before then may undo it",
                ),
            };
            if let Some(conn) = gated.conn {
                self.send_error(conn, gated.id, failure.code, &failure.message, out);
            }
        }
    }

    fn changes_durable(&mut self, through: u64) {
        while self.journal.changes.front().is_some_and(|c| c.0 < through) {
            self.journal.changes.pop_front();
        }
    }

    /// The change records from `start` on were lost: they are owed. Of a
    /// topic's gap records only the newest is kept, since it says what the
    /// older ones did: a disk that keeps failing under publishers does not
    /// make the owed list grow with every loss.
    fn changes_lost_from(&mut self, start: u64) {
        let at = self.journal.changes.partition_point(|c| c.0 < start);
        let lost = self.journal.changes.drain(at..).map(|(_, record)| record);
        let owed = &mut self.journal.owed;
        owed.extend(lost);
        let mut gaps: Vec<TopicId> = Vec::new();
        let mut kept: Vec<Record> = Vec::with_capacity(owed.len());
        for record in owed.drain(..).rev() {
            if let Record::Messages { topic, .. } = &record {
                if gaps.contains(topic) {
                    continue;
                }
                gaps.push(*topic);
            }
            kept.push(record);
        }
        kept.reverse();
        *owed = kept;
    }

    fn made_durable(&mut self, through: u64) {
        self.journal.durable_through = self.journal.durable_through.max(through);
        while let Some(&entry) = self.journal.unsynced.front() {
            if entry.seq >= through {
                break;
            }
            self.journal.unsynced.pop_front();
            let Some(topic) = self.topics.get_mut(entry.topic) else {
                continue;
            };
            if topic.id != entry.topic_id || entry.staged == 0 {
                continue;
            }
            topic.make_visible(entry.staged);
            let retained = topic.retention != Retention::UntilAcked;
            self.cache_listing(entry.topic);
            self.wake_subscribers(entry.topic);
            if retained {
                // Visible now, so counted against its size bound.
                self.release(entry.topic);
            }
        }
    }

    /// Every record from `start` on that is not yet durable is lost: the
    /// writer drops everything after a failure until a new segment, which
    /// only an append after this report starts.
    fn messages_lost_from(&mut self, start: u64, end: u64) {
        self.journal.durable_through = self.journal.durable_through.max(end);
        // Per topic, the lost records' staged messages are the back of its
        // staged ones: lost as one run.
        let mut hit: Vec<(TopicKey, usize)> = Vec::new();
        while let Some(&entry) = self.journal.unsynced.back() {
            if entry.seq < start {
                break;
            }
            self.journal.unsynced.pop_back();
            if self
                .topics
                .get(entry.topic)
                .is_none_or(|topic| topic.id != entry.topic_id)
            {
                continue;
            }
            match hit.iter_mut().find(|(key, _)| *key == entry.topic) {
                Some((_, staged)) => *staged += entry.staged,
                None => hit.push((entry.topic, entry.staged)),
            }
        }
        for &(key, staged) in &hit {
            let topic = &mut self.topics[key];
            let before = topic.footprint();
            let (messages, bytes) = (topic.backlog_messages(), topic.backlog_bytes());
            topic.lose_staged(staged);
            cost::settle(&mut self.budget, before, topic.footprint());
            self.counters.backlog_messages += topic.backlog_messages() as u64;
            self.counters.backlog_messages -= messages as u64;
            self.counters.backlog_bytes -= (bytes - topic.backlog_bytes()) as u64;
        }
        let hit: Vec<TopicKey> = hit.into_iter().map(|(key, _)| key).collect();
        for key in hit {
            self.pass_gap_waiting(key);
            // The lost offsets stay lost after a restart too: a record at
            // the topic's end tells recovery where the next message goes.
            let topic = &self.topics[key];
            let record = Record::Messages {
                topic: topic.id,
                first_offset: topic.end_offset(),
                timestamp_ms: now_ms(),
                payloads: Vec::new(),
                producer: None,
            };
            self.log_change(record);
        }
    }

    /// Applies one recovered record. Records are facts: one that names
    /// something already gone is counted and skipped.
    pub fn replay(&mut self, record: Record, recovered: &mut Recovered) {
        recovered.records += 1;
        let applied = match record {
            Record::TopicCreated { topic, name } => self.replay_topic(topic, &name),
            Record::TopicDeleted { topic } => self.topic_by_id(topic).is_some_and(|key| {
                let name = self.topics[key].name.to_string();
                self.remove_topic(key, &name, None);
                true
            }),
            Record::Messages {
                topic,
                first_offset,
                timestamp_ms,
                payloads,
                producer,
            } => self.topic_by_id(topic).is_some_and(|key| {
                let count = payloads.len() as u64;
                let applied = self.replay_messages(key, first_offset, payloads, timestamp_ms);
                if let Some(stamp) = producer {
                    self.replay_produced(key, first_offset, count, stamp);
                }
                applied
            }),
            Record::TopicRetention {
                topic,
                retain_ms,
                retain_bytes,
            } => self.topic_by_id(topic).is_some_and(|key| {
                self.topics[key].retention = Retention::Keep {
                    retain_ms,
                    retain_bytes,
                };
                true
            }),
            Record::Seeked {
                session,
                topic,
                offset,
            } => match (self.session_ids.get(&session), self.topic_by_id(topic)) {
                (Some(&s), Some(t)) => {
                    let topic = &self.topics[t];
                    let offset = offset.clamp(topic.base_offset(), topic.next_offset());
                    self.place_cursor(s, t, offset);
                    self.release(t);
                    true
                }
                _ => false,
            },
            Record::ProducerState {
                topic,
                producer,
                last_seq,
            } => self.topic_by_id(topic).is_some_and(|key| {
                self.recover_producer(key, &producer, last_seq);
                true
            }),
            Record::SessionCreated {
                session,
                timeout_ms,
                owner,
            } => {
                if !self.session_ids.contains_key(&session) {
                    // Clamped again: the broker may restart with a lower
                    // maximum than the one the session was created under.
                    let mut detached = Session::detached(session);
                    detached.timeout =
                        timeout_ms.map(|ms| Duration::from_millis(self.clamp_session_timeout(ms)));
                    detached.owner = owner.map(String::into_boxed_str);
                    let key = self.sessions.insert(detached);
                    self.session_ids.insert(session, key);
                    self.budget.add(Class::Sessions, cost::SESSION);
                }
                true
            }
            Record::Subscribed {
                session,
                topic,
                start_offset,
            } => match (self.session_ids.get(&session), self.topic_by_id(topic)) {
                (Some(&s), Some(t)) => {
                    self.join_topic(s, t, start_offset);
                    true
                }
                _ => false,
            },
            Record::Unsubscribed { session, topic } => {
                match (self.session_ids.get(&session), self.topic_by_id(topic)) {
                    (Some(&s), Some(t)) => {
                        if let Some(sub) = self.sessions[s].remove_subscription(t) {
                            self.leave_topic(s, sub);
                        }
                        true
                    }
                    _ => false,
                }
            }
            Record::SessionEnded { session, .. } => match self.session_ids.get(&session) {
                Some(&key) => {
                    self.expire(key, SessionEnd::Expired, false);
                    true
                }
                None => false,
            },
            Record::Acked {
                session,
                topic,
                offset,
            } => match (self.session_ids.get(&session), self.topic_by_id(topic)) {
                (Some(&s), Some(t)) => {
                    let end = self.topics[t].next_offset();
                    let offset = offset.min(end);
                    if let Some(from) = self.sessions[s].recover_cursor(t, offset) {
                        self.topics[t].move_cursor(from, offset);
                        self.release(t);
                    }
                    true
                }
                _ => false,
            },
        };
        if !applied {
            recovered.orphans += 1;
        }
    }

    fn topic_by_id(&self, id: TopicId) -> Option<TopicKey> {
        self.topic_ids.get(&id).copied()
    }

    fn replay_topic(&mut self, id: TopicId, name: &str) -> bool {
        self.journal.next_topic_id = self.journal.next_topic_id.max(id + 1);
        if let Some(&key) = self.topic_ids.get(&id) {
            // A checkpoint's repeat of a live topic.
            return *self.topics[key].name == *name;
        }
        if self.topic_names.contains_key(name) {
            return false;
        }
        self.insert_topic(name, id);
        true
    }

    fn replay_messages(
        &mut self,
        key: TopicKey,
        first_offset: u64,
        payloads: Vec<Bytes>,
        timestamp_ms: u64,
    ) -> bool {
        let topic = &mut self.topics[key];
        let end = topic.end_offset();
        let count = payloads.len();
        if first_offset + (count as u64) <= end {
            // Already applied (a checkpoint's repeat).
            return true;
        }
        let before = topic.footprint();
        let (messages, bytes) = (topic.backlog_messages(), topic.backlog_bytes());
        if first_offset > end {
            // Offsets the log never kept (a lost write's): a gap, never
            // given to another message.
            topic.push_gap(first_offset - end);
        }
        let skip = (topic.end_offset() - first_offset) as usize;
        let fresh = payloads.into_iter().skip(skip);
        if topic.subscribers.is_empty()
            && topic.backlog_messages() == 0
            && topic.retention == Retention::UntilAcked
        {
            topic.skip(fresh.len() as u64);
        } else {
            if fresh.len() > 0 {
                let at = topic.end_offset();
                topic.times.record(at, timestamp_ms);
            }
            topic.make_room(fresh.len());
            for payload in fresh {
                let charge = cost::single_payload(payload.len());
                topic.push(payload, charge);
            }
        }
        cost::settle(&mut self.budget, before, topic.footprint());
        self.counters.backlog_messages += topic.backlog_messages() as u64;
        self.counters.backlog_messages -= messages as u64;
        self.counters.backlog_bytes += (topic.backlog_bytes() - bytes) as u64;
        // Subscribers a checkpoint placed past them need none of them.
        self.release(key);
        // A backlog larger than the cache is recovered into the log's
        // keeping, not into memory.
        self.cache_listing(key);
        self.evict_over_cache();
        self.wake_subscribers(key);
        true
    }

    /// After the last record: every session is detached, its expiry
    /// starting now; every subscription is ready or waiting as its cursor
    /// says. Returns what was rebuilt.
    pub fn finish_recovery(&mut self, now: Instant, recovered: &mut Recovered) {
        let keys: Vec<SessionKey> = self.sessions.iter().map(|(key, _)| key).collect();
        for &key in &keys {
            let topics: Vec<TopicKey> = self.sessions[key]
                .subscriptions()
                .iter()
                .map(|sub| sub.topic)
                .collect();
            for topic_key in topics {
                let session = &mut self.sessions[key];
                // A cursor at a gap's start (a lost write's) passes it.
                if let (Some(sub), Some(topic)) = (
                    session.subscription(topic_key),
                    self.topics.get_mut(topic_key),
                ) {
                    let to = topic.past_gap(sub.delivered);
                    if let Some(from) = session.pass_gap(topic_key, to) {
                        topic.move_cursor(from, to);
                    }
                }
                let (Some(delivered), Some(topic)) = (
                    session.subscription(topic_key).map(|sub| sub.delivered),
                    self.topics.get_mut(topic_key),
                ) else {
                    continue;
                };
                if delivered < topic.next_offset() {
                    topic.waiting.remove(key);
                    session.set_ready(topic_key);
                } else {
                    topic.waiting.insert(key);
                    session.set_caught_up(topic_key);
                }
            }
        }
        for key in keys {
            let deadline = now + self.session_timeout(key);
            let timer = self.timers.arm(deadline, BrokerTimer::SessionExpiry(key));
            let session = &mut self.sessions[key];
            session.conn = None;
            if let Some(old) = session.expiry.replace(timer) {
                self.timers.cancel(old);
            }
        }
        self.arm_all_retention();
        recovered.topics = self.topics.len() as u64;
        recovered.sessions = self.sessions.len() as u64;
        recovered.subscriptions = self.counters.subscriptions;
        recovered.messages = self.counters.backlog_messages;
    }
}

/// The record that gives a retained topic its policy (none for until-acked).
pub(super) fn retention_record(topic: TopicId, retention: Retention) -> Option<Record> {
    match retention {
        Retention::UntilAcked => None,
        Retention::Keep {
            retain_ms,
            retain_bytes,
        } => Some(Record::TopicRetention {
            topic,
            retain_ms,
            retain_bytes,
        }),
    }
}
