//! Publish replies that wait: the one mechanism behind both flow control
//! (a publish HELD until its topic or the memory budget has room) and
//! durability (a publish STORED but not answered until the log has it on
//! disk).
//!
//! # The rule
//!
//! Per connection and per topic there is a FIFO of publish replies not yet
//! sent ([`Queue`]), in request order. An entry is
//! - **held**: the publish is not stored yet; a copy of its payload block
//!   waits here (counted in the budget class `HeldRequests`) until the topic
//!   and the budget admit it, or until its `--publish-hold` deadline;
//! - **stored**: the publish is stored and its reply is built; it is sent
//!   once the log's durable position reaches the entry's sequence number
//!   (`seq: None` means "nothing to wait for", the memory-only case);
//! - **failed**: a refusal that must not overtake the entries ahead of it.
//!
//! Replies leave a queue only from its front, so replies to one topic's
//! publishes on one connection are sent strictly in request order. Nothing
//! else waits for them: other replies (pulls, acks, publishes to other
//! topics) are written at once and may overtake them, and clients match
//! replies by id (PROTOCOL.md §3.3). Held entries are always a suffix of a
//! queue: a publish arriving while its queue holds one is held behind it
//! without being tried, so a later publish can never be stored before an
//! earlier one.
//!
//! # Admission and fairness
//!
//! Each topic with held publishes has a FIFO of the connections holding
//! them ([`Pending::turns`]). When room may have appeared — an acknowledgement
//! released messages ([`Broker::room_in`]), or memory was freed while some
//! topic waits for it — the topic is listed for the next admission round,
//! which runs at the end of the server's batch, before waiting pulls are
//! answered (so what it admits is delivered in the same turn). A round
//! admits the first held publish of the connection at the front of the
//! topic's FIFO, moves that connection to the back, and goes on until a
//! publish does not fit: connections take turns, and the cost is one
//! admission check per publish admitted plus one per topic tried. No round
//! ever walks all connections.
//!
//! # Bounds
//!
//! A connection whose held bytes pass [`Pending::input_bound`] (4 frames) is
//! not read any further ([`Broker::wants_input`]); once admissions bring it
//! back under, it is listed in [`Broker::take_resumable`] for the server to
//! reschedule. Below the bound the connection keeps being read, so a client
//! that publishes to and pulls from the same full topic still gets its pulls
//! and acks executed, and its acks are what make the room.
//!
//! # Hooks for the durable log
//!
//! - Every publish is stored by [`Broker::store_publish`], from one of two
//!   places: [`Broker::publish_request`] (it fitted at once; it then calls
//!   [`Broker::answer_publish`]) and `Broker::try_admit` (a held one was
//!   admitted; its entry is replaced in place by `Pending::place`). A
//!   memory-only broker passes `seq: None`; with the durable log it is
//!   `Some(n)`, the log sequence number of the publish's last record, and
//!   the reply waits for it.
//! - [`Broker::answer_publish`]`(conn, topic, id, result, seq, out)` answers
//!   at once when nothing on (conn, topic) is ahead and `seq` is durable,
//!   and otherwise queues the reply (or a refusal) behind the others.
//! - [`Broker::durable_through`]`(seq, out)` releases every stored entry
//!   with a sequence number up to `seq`, each queue from its front. Stored
//!   entries are indexed in a FIFO by sequence number (`Pending::stored`), so
//!   this costs what it releases. Sequence numbers must grow in the order
//!   publishes are stored.
//! - [`Broker::replies_lost_from`]`(seq, out)` turns the stored entries from `seq`
//!   on into STORAGE_UNAVAILABLE refusals (the log lost their records).
//! - On disconnect every entry is dropped (held ones are counted in
//!   `held_dropped`); stored ones stay stored, only their replies are lost.

use super::failure::Failure;
use super::keys::{ConnId, TopicKey};
use super::producers::Dedup;
use super::publishing::PublishInput;
use super::{Broker, BrokerTimer, Outbox};
use crate::budget::Class;
use crate::codec;
use crate::protocol::{ErrorCode, Payloads, Reply};
use crate::timers::TimerKey;
use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Instant;

/// The maps here are keyed by slab keys (connections, topics): small
/// integers the broker hands out, never chosen by a client, so a keyed hash
/// (SipHash, a few lookups per publish) buys nothing. A multiply in the
/// style of FxHash spreads them over the high bits the table uses.
#[derive(Default, Clone, Copy)]
struct SlabKeyHasher(u64);

impl Hasher for SlabKeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type SlabKeyMap<K, V> = HashMap<K, V, BuildHasherDefault<SlabKeyHasher>>;

/// What an entry costs beside its payload block: the entry, its queue slot,
/// its timer.
const ENTRY_BYTES: usize = 128;

/// A publish waiting to be stored: a copy of its payload block, because the
/// read buffer it came from moves on.
#[derive(Debug, Clone)]
struct HeldPublish {
    block: Bytes,
    /// `Some(count)` for a PUBLISH_BATCH: `block` is its encoded payloads.
    batch: Option<u32>,
    /// A producer's seq: decided when the publish is admitted, not before
    /// (see `super::producers`).
    seq: Option<u64>,
}

impl HeldPublish {
    fn copy(input: &PublishInput<'_>, seq: Option<u64>) -> Self {
        match input {
            PublishInput::One(payload) => HeldPublish {
                block: Bytes::copy_from_slice(payload),
                batch: None,
                seq,
            },
            PublishInput::Batch(payloads) => HeldPublish {
                block: Bytes::copy_from_slice(payloads.encoded),
                batch: Some(payloads.count),
                seq,
            },
        }
    }

    fn input(&self) -> PublishInput<'_> {
        match self.batch {
            None => PublishInput::One(&self.block),
            Some(count) => PublishInput::Batch(Payloads {
                encoded: &self.block,
                count,
            }),
        }
    }

    fn charge(&self) -> usize {
        self.block.len() + ENTRY_BYTES
    }
}

#[derive(Debug)]
enum Entry {
    Held {
        id: u64,
        publish: HeldPublish,
        timer: TimerKey,
        serial: u64,
    },
    Stored {
        id: u64,
        reply: Reply,
        seq: Option<u64>,
    },
    Failed {
        id: u64,
        failure: Failure,
    },
}

/// One connection's waiting publish replies on one topic.
#[derive(Debug, Default)]
struct Queue {
    entries: VecDeque<Entry>,
    /// How many entries (a suffix) are held.
    held: usize,
    /// Whether the connection is in the topic's turn FIFO.
    in_turns: bool,
}

impl Queue {
    fn first_held(&self) -> Option<usize> {
        (self.held > 0).then(|| self.entries.len() - self.held)
    }
}

#[derive(Debug, Default, Clone)]
struct ConnPending {
    held_bytes: usize,
    /// Topics this connection has a queue on.
    topics: Vec<TopicKey>,
    /// Reading stopped at the held-bytes bound; resume when below.
    blocked: bool,
}

/// Every waiting publish reply, with the indexes that make each event cost
/// what it touches.
#[derive(Debug, Default)]
pub(super) struct Pending {
    queues: SlabKeyMap<(ConnId, TopicKey), Queue>,
    /// Per topic, the connections with held publishes on it, in turn order.
    turns: SlabKeyMap<TopicKey, VecDeque<ConnId>>,
    conns: Vec<ConnPending>,
    /// Topics where room may have appeared since the last round.
    retry: Vec<TopicKey>,
    /// Topics whose next held publish waits for memory, and the budget total
    /// when it was refused: retried once the total is lower.
    memory: Vec<TopicKey>,
    memory_mark: usize,
    /// Connections back under the held-bytes bound, for the server.
    resumable: Vec<ConnId>,
    /// Stored entries waiting for the disk: (seq, conn, topic), in seq order.
    stored: VecDeque<(u64, ConnId, TopicKey)>,
    /// The log's durable position (everything up to it is on disk).
    durable: u64,
    next_serial: u64,
    /// A connection is not read while its held bytes exceed this.
    pub input_bound: usize,
    pub held_total: u64,
    pub held_now: u64,
    pub held_dropped: u64,
    pub input_pauses: u64,
}

impl Pending {
    pub fn new(input_bound: usize) -> Self {
        Pending {
            input_bound,
            ..Pending::default()
        }
    }

    /// Whether a publish on (conn, topic) must wait behind a held one. The
    /// emptiness test first keeps the common case (nothing waits anywhere)
    /// free of hashing.
    fn holds(&self, conn: ConnId, topic: TopicKey) -> bool {
        !self.queues.is_empty() && self.queues.get(&(conn, topic)).is_some_and(|q| q.held > 0)
    }

    /// Whether a reply on (conn, topic) must queue behind others.
    fn queued(&self, conn: ConnId, topic: TopicKey) -> bool {
        !self.queues.is_empty()
            && self
                .queues
                .get(&(conn, topic))
                .is_some_and(|q| !q.entries.is_empty())
    }

    fn conn_mut(&mut self, conn: ConnId) -> &mut ConnPending {
        if self.conns.len() <= conn {
            self.conns.resize(conn + 1, ConnPending::default());
        }
        &mut self.conns[conn]
    }

    fn queue_mut(&mut self, conn: ConnId, topic: TopicKey) -> &mut Queue {
        if !self.queues.contains_key(&(conn, topic)) {
            self.conn_mut(conn).topics.push(topic);
        }
        self.queues.entry((conn, topic)).or_default()
    }

    /// Appends a stored or failed entry; only ever behind stored or failed
    /// ones, since held entries are a suffix (a publish behind a held one is
    /// held itself).
    fn push(&mut self, conn: ConnId, topic: TopicKey, entry: Entry) {
        if let Entry::Stored { seq: Some(seq), .. } = entry {
            self.stored.push_back((seq, conn, topic));
        }
        let queue = self.queue_mut(conn, topic);
        debug_assert_eq!(queue.held, 0, "a reply queued behind a held publish");
        queue.entries.push_back(entry);
    }

    /// Replaces the (just admitted) entry at `index` with its stored reply.
    fn place(&mut self, conn: ConnId, topic: TopicKey, index: usize, entry: Entry) {
        if let Entry::Stored { seq: Some(seq), .. } = entry {
            self.stored.push_back((seq, conn, topic));
        }
        if let Some(slot) = self
            .queues
            .get_mut(&(conn, topic))
            .and_then(|q| q.entries.get_mut(index))
        {
            *slot = entry;
        }
    }

    fn push_held(&mut self, conn: ConnId, topic: TopicKey, entry: Entry, charge: usize) {
        let queue = self.queue_mut(conn, topic);
        queue.entries.push_back(entry);
        queue.held += 1;
        if !queue.in_turns {
            queue.in_turns = true;
            self.turns.entry(topic).or_default().push_back(conn);
        }
        self.conn_mut(conn).held_bytes += charge;
        self.held_total += 1;
        self.held_now += 1;
    }

    /// Held bytes of `conn` went down by `charge`: list it for the server
    /// if that brought it back under the bound.
    fn unhold(&mut self, conn: ConnId, charge: usize) {
        self.held_now -= 1;
        let bound = self.input_bound;
        let state = self.conn_mut(conn);
        state.held_bytes -= charge.min(state.held_bytes);
        if state.blocked && state.held_bytes <= bound {
            state.blocked = false;
            self.resumable.push(conn);
        }
    }

    /// The connection whose turn it is on `topic`, with its first held
    /// entry's index; connections left with nothing held leave the FIFO.
    fn next_turn(&mut self, topic: TopicKey) -> Option<(ConnId, usize)> {
        let turns = self.turns.get_mut(&topic)?;
        while let Some(&conn) = turns.front() {
            if let Some(queue) = self.queues.get_mut(&(conn, topic)) {
                if let Some(index) = queue.first_held() {
                    return Some((conn, index));
                }
                queue.in_turns = false;
                if queue.entries.is_empty() {
                    self.queues.remove(&(conn, topic));
                    forget_topic(&mut self.conns, conn, topic);
                }
            }
            turns.pop_front();
        }
        self.turns.remove(&topic);
        None
    }

    /// `conn` had its turn on `topic`: to the back of the FIFO.
    fn rotate(&mut self, topic: TopicKey) {
        if let Some(turns) = self.turns.get_mut(&topic)
            && let Some(conn) = turns.pop_front()
        {
            turns.push_back(conn);
        }
    }

    /// Pops the entries at the front of (conn, topic) that may be sent.
    fn pop_ready(&mut self, conn: ConnId, topic: TopicKey) -> Option<Entry> {
        let durable = self.durable;
        let queue = self.queues.get_mut(&(conn, topic))?;
        let ready = match queue.entries.front() {
            Some(Entry::Stored { seq, .. }) => seq.is_none_or(|s| s <= durable),
            Some(Entry::Failed { .. }) => true,
            Some(Entry::Held { .. }) | None => false,
        };
        let entry = if ready {
            queue.entries.pop_front()
        } else {
            None
        };
        if queue.entries.is_empty() && !queue.in_turns {
            self.queues.remove(&(conn, topic));
            forget_topic(&mut self.conns, conn, topic);
        }
        entry
    }
}

/// `conn` has no queue on `topic` any more.
fn forget_topic(conns: &mut [ConnPending], conn: ConnId, topic: TopicKey) {
    if let Some(state) = conns.get_mut(conn)
        && let Some(i) = state.topics.iter().position(|&t| t == topic)
    {
        state.topics.swap_remove(i);
    }
}

impl Broker {
    /// Executes a PUBLISH or PUBLISH_BATCH: stores it and answers, holds it
    /// while its topic or the budget has no room, or refuses it. `Ok(None)`:
    /// the reply waits in the connection's queue for the topic. A `seq`
    /// (an idempotent producer's) is decided right before storing: a
    /// duplicate is answered with the original reply, never stored.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn publish_request(
        &mut self,
        conn: ConnId,
        id: u64,
        name: &str,
        input: PublishInput<'_>,
        seq: Option<u64>,
        now: Instant,
        out: &mut dyn Outbox,
    ) -> Result<Option<Reply>, Failure> {
        let key = self.topic_key(name)?;
        // Behind a held publish, a publish waits its turn without being
        // tried, even one that fits, and even one that room will not cure:
        // that one is refused when its turn comes, in its place.
        if !self.pending.holds(conn, key) {
            let (input, stamp) = match self.number_publish(conn, key, seq, &input) {
                Err(refusal) => return self.answer_publish(conn, key, id, Err(refusal), None, out),
                Ok(Some(Dedup::Duplicate { reply, wait })) => {
                    return self.answer_publish(conn, key, id, Ok(*reply), wait, out);
                }
                Ok(Some(Dedup::Fresh { stamp, skip })) => (input.skip(skip), Some(stamp)),
                Ok(None) => (input, None),
            };
            let size = input.measure();
            self.trim_for_room(key, size.count(), size.bytes());
            let refusal = match self.admit_publish(key, &size) {
                Ok(()) => {
                    let (result, seq) = match self.store_publish(key, input, &size, stamp) {
                        Ok((reply, seq)) => (Ok(reply), seq),
                        Err(failure) => (Err(failure), None),
                    };
                    return self.answer_publish(conn, key, id, result, seq, out);
                }
                Err(refusal) => refusal,
            };
            if !holdable(refusal.code) || self.limits.publish_hold.is_zero() {
                return self.answer_publish(conn, key, id, Err(refusal), None, out);
            }
            if refusal.code == ErrorCode::BrokerFull {
                self.wait_for_memory(key);
            }
        }
        let publish = HeldPublish::copy(&input, seq);
        let charge = publish.charge();
        if !self.budget.admits_output(charge) {
            let refusal = Failure::broker_full(&self.budget);
            return self.answer_publish(conn, key, id, Err(refusal), None, out);
        }
        self.budget.add(Class::HeldRequests, charge);
        let serial = self.pending.next_serial;
        self.pending.next_serial += 1;
        let timer = self.timers.arm(
            now + self.limits.publish_hold,
            BrokerTimer::PublishHold {
                conn,
                topic: key,
                serial,
            },
        );
        let entry = Entry::Held {
            id,
            publish,
            timer,
            serial,
        };
        self.pending.push_held(conn, key, entry, charge);
        Ok(None)
    }

    /// Answers a publish on (conn, topic): at once if nothing on that queue
    /// is ahead of it and it waits for no disk (the reply is returned for
    /// the caller to write), otherwise behind the others. A stored publish
    /// passes the log sequence number it waits for as `seq`.
    pub(super) fn answer_publish(
        &mut self,
        conn: ConnId,
        topic: TopicKey,
        id: u64,
        result: Result<Reply, Failure>,
        seq: Option<u64>,
        out: &mut dyn Outbox,
    ) -> Result<Option<Reply>, Failure> {
        let waits = seq.is_some_and(|s| s > self.pending.durable);
        if !waits && !self.pending.queued(conn, topic) {
            return result.map(Some);
        }
        let entry = match result {
            Ok(reply) => Entry::Stored { id, reply, seq },
            Err(failure) => Entry::Failed { id, failure },
        };
        self.pending.push(conn, topic, entry);
        self.send_ready(conn, topic, out);
        Ok(None)
    }

    /// Whether stored publishes still wait for the disk to be answered.
    pub(super) fn pending_stored(&self) -> bool {
        !self.pending.stored.is_empty()
    }

    /// The log has everything up to `seq` on disk: sends the stored replies
    /// that waited for it, each queue in order.
    pub fn durable_through(&mut self, seq: u64, out: &mut dyn Outbox) {
        self.pending.durable = self.pending.durable.max(seq);
        while let Some(&(s, conn, topic)) = self.pending.stored.front() {
            if s > seq {
                break;
            }
            self.pending.stored.pop_front();
            self.send_ready(conn, topic, out);
        }
    }

    /// The log lost every record from `start` on that was not yet durable
    /// (see `super::journal`): the stored replies waiting for them become
    /// STORAGE_UNAVAILABLE, still in request order on their queue.
    pub(super) fn replies_lost_from(&mut self, start: u64, out: &mut dyn Outbox) {
        while let Some(&(seq, conn, topic)) = self.pending.stored.back() {
            if seq < start {
                break;
            }
            self.pending.stored.pop_back();
            let Some(queue) = self.pending.queues.get_mut(&(conn, topic)) else {
                continue;
            };
            for entry in queue.entries.iter_mut() {
                if let Entry::Stored {
                    id, seq: Some(s), ..
                } = entry
                    && *s == seq
                {
                    let failure = Failure::storage_unavailable();
                    *entry = Entry::Failed { id: *id, failure };
                    break;
                }
            }
            self.send_ready(conn, topic, out);
        }
    }

    /// Writes the replies at the front of (conn, topic) that may go.
    fn send_ready(&mut self, conn: ConnId, topic: TopicKey, out: &mut dyn Outbox) {
        while let Some(entry) = self.pending.pop_ready(conn, topic) {
            match entry {
                Entry::Stored { id, reply, .. } => {
                    if let Some(buf) = out.buffer(conn) {
                        codec::encode_reply(buf, id, &reply);
                    }
                }
                Entry::Failed { id, failure } => {
                    self.send_error(conn, id, failure.code, &failure.message, out);
                }
                Entry::Held { .. } => {}
            }
        }
    }

    /// Room may have appeared in `topic` (messages were released): its
    /// held publishes are tried in the next round.
    pub(super) fn room_in(&mut self, topic: TopicKey) {
        if self.pending.turns.contains_key(&topic) {
            self.pending.retry.push(topic);
        }
    }

    /// Room may have appeared everywhere (log segments were deleted, under
    /// `--max-disk`): every topic's held publishes are tried next round.
    pub(super) fn room_everywhere(&mut self) {
        let topics: Vec<TopicKey> = self.pending.turns.keys().copied().collect();
        self.pending.retry.extend(topics);
    }

    fn wait_for_memory(&mut self, topic: TopicKey) {
        if self.pending.memory.is_empty() || self.budget.total() < self.pending.memory_mark {
            self.pending.memory_mark = self.budget.total();
        }
        if !self.pending.memory.contains(&topic) {
            self.pending.memory.push(topic);
        }
    }

    /// One admission round (end of the server's batch): the topics where
    /// room may have appeared, and those waiting for memory if the budget
    /// went down since they were refused.
    pub(super) fn admit_held(&mut self, out: &mut dyn Outbox) {
        if !self.pending.memory.is_empty() && self.budget.total() < self.pending.memory_mark {
            let memory = std::mem::take(&mut self.pending.memory);
            self.pending.retry.extend(memory);
        }
        let mut retry = std::mem::take(&mut self.pending.retry);
        for topic in retry.drain(..) {
            self.admit_topic(topic, out);
        }
        if self.pending.retry.is_empty() {
            self.pending.retry = retry;
        }
    }

    /// Admits `topic`'s held publishes, connections taking turns, until one
    /// does not fit.
    fn admit_topic(&mut self, topic: TopicKey, out: &mut dyn Outbox) {
        while let Some((conn, index)) = self.pending.next_turn(topic) {
            self.work += 1;
            match self.try_admit(conn, topic, index) {
                Ok(()) => {
                    self.pending.rotate(topic);
                    self.send_ready(conn, topic, out);
                }
                Err(refusal) => {
                    if refusal.code == ErrorCode::BrokerFull {
                        self.wait_for_memory(topic);
                    }
                    return;
                }
            }
        }
    }

    /// Stores the held entry at `index` of (conn, topic) if it fits now;
    /// its reply then waits in place for those ahead of it.
    fn try_admit(&mut self, conn: ConnId, topic: TopicKey, index: usize) -> Result<(), Failure> {
        let Some(Entry::Held { publish, .. }) = self
            .pending
            .queues
            .get(&(conn, topic))
            .and_then(|q| q.entries.get(index))
        else {
            return Ok(());
        };
        let publish = publish.clone();
        let charge = publish.charge();
        // Its seq is decided now, in its turn: a duplicate of one stored
        // ahead of it is answered with that one's reply.
        let (input, stamp) = match self.number_publish(conn, topic, publish.seq, &publish.input()) {
            Err(refusal) => {
                self.fail_held_at(conn, topic, index, refusal);
                return Ok(());
            }
            Ok(Some(Dedup::Duplicate { reply, wait })) => {
                self.unhold_at(conn, topic, index, charge);
                let entry = Entry::Stored {
                    id: self.held_id(conn, topic, index),
                    reply: *reply,
                    seq: wait,
                };
                self.pending.place(conn, topic, index, entry);
                return Ok(());
            }
            Ok(Some(Dedup::Fresh { stamp, skip })) => (publish.input().skip(skip), Some(stamp)),
            Ok(None) => (publish.input(), None),
        };
        let size = input.measure();
        self.trim_for_room(topic, size.count(), size.bytes());
        // The held copy is given back as the message is stored.
        self.budget.sub(Class::HeldRequests, charge);
        let refusal = self.admit_publish(topic, &size).err();
        if let Some(refusal) = refusal {
            if holdable(refusal.code) {
                self.budget.add(Class::HeldRequests, charge);
                return Err(refusal);
            }
            // Room will not cure it (a too large payload held behind
            // another): it alone is refused, in its place.
            self.budget.add(Class::HeldRequests, charge);
            self.fail_held_at(conn, topic, index, refusal);
            return Ok(());
        }
        let id = self.held_id(conn, topic, index);
        self.unhold_at(conn, topic, index, 0);
        self.pending.unhold(conn, charge);
        let entry = match self.store_publish(topic, input, &size, stamp) {
            Ok((reply, seq)) => Entry::Stored { id, reply, seq },
            Err(failure) => Entry::Failed { id, failure },
        };
        self.pending.place(conn, topic, index, entry);
        Ok(())
    }

    /// The request id of the held entry at `index` of (conn, topic).
    fn held_id(&self, conn: ConnId, topic: TopicKey, index: usize) -> u64 {
        match self
            .pending
            .queues
            .get(&(conn, topic))
            .and_then(|q| q.entries.get(index))
        {
            Some(Entry::Held { id, .. }) => *id,
            _ => 0,
        }
    }

    /// The held entry at `index` of (conn, topic) is no longer held (its
    /// reply is placed next): its timer goes, and `budget_charge` of held
    /// bytes is given back to the budget (0 when the caller already did).
    fn unhold_at(&mut self, conn: ConnId, topic: TopicKey, index: usize, budget_charge: usize) {
        let Some(queue) = self.pending.queues.get_mut(&(conn, topic)) else {
            return;
        };
        let Some(Entry::Held { timer, publish, .. }) = queue.entries.get(index) else {
            return;
        };
        let (timer, charge) = (*timer, publish.charge());
        queue.held -= 1;
        self.timers.cancel(timer);
        if budget_charge > 0 {
            self.budget.sub(Class::HeldRequests, budget_charge);
            self.pending.unhold(conn, charge);
        }
    }

    /// A held publish's deadline: if it still does not fit, it and every
    /// publish held behind it on (conn, topic) are refused with the same
    /// failure, in order, so that a retry cannot reorder them.
    pub(super) fn hold_expired(
        &mut self,
        conn: ConnId,
        topic: TopicKey,
        serial: u64,
        out: &mut dyn Outbox,
    ) {
        let current = self.pending.queues.get(&(conn, topic)).and_then(|q| {
            let index = q.first_held()?;
            match q.entries.get(index) {
                Some(Entry::Held { serial: s, .. }) if *s == serial => Some(index),
                _ => None,
            }
        });
        let Some(index) = current else {
            return;
        };
        match self.try_admit(conn, topic, index) {
            Ok(()) => {}
            Err(refusal) => self.fail_held(conn, topic, &refusal),
        }
        self.send_ready(conn, topic, out);
    }

    /// Turns the held entry at `index` of (conn, topic) into `refusal`.
    fn fail_held_at(&mut self, conn: ConnId, topic: TopicKey, index: usize, refusal: Failure) {
        let Some(queue) = self.pending.queues.get_mut(&(conn, topic)) else {
            return;
        };
        let Some(slot) = queue.entries.get_mut(index) else {
            return;
        };
        let Entry::Held {
            id, publish, timer, ..
        } = slot
        else {
            return;
        };
        let (charge, timer) = (publish.charge(), *timer);
        *slot = Entry::Failed {
            id: *id,
            failure: refusal,
        };
        queue.held -= 1;
        self.timers.cancel(timer);
        self.budget.sub(Class::HeldRequests, charge);
        self.pending.unhold(conn, charge);
    }

    /// Turns every held entry of (conn, topic) into `refusal`.
    fn fail_held(&mut self, conn: ConnId, topic: TopicKey, refusal: &Failure) {
        let Some(queue) = self.pending.queues.get_mut(&(conn, topic)) else {
            return;
        };
        let start = queue.entries.len() - queue.held;
        queue.held = 0;
        let mut released = Vec::new();
        for slot in queue.entries.iter_mut().skip(start) {
            let Entry::Held {
                id, publish, timer, ..
            } = slot
            else {
                continue;
            };
            released.push((publish.charge(), *timer));
            let failure = Failure::new(refusal.code, refusal.message.clone());
            *slot = Entry::Failed { id: *id, failure };
        }
        for (charge, timer) in released {
            self.timers.cancel(timer);
            self.budget.sub(Class::HeldRequests, charge);
            self.pending.unhold(conn, charge);
        }
    }

    /// The topic is being deleted: its held publishes are answered
    /// TOPIC_DELETED, after the replies ahead of them.
    pub(super) fn delete_held(&mut self, topic: TopicKey, name: &str, out: &mut dyn Outbox) {
        let Some(conns) = self.pending.turns.remove(&topic) else {
            return;
        };
        let refusal = Failure::new(
            ErrorCode::TopicDeleted,
            format!("topic '{name}' was deleted"),
        );
        for conn in conns {
            self.work += 1;
            if let Some(queue) = self.pending.queues.get_mut(&(conn, topic)) {
                queue.in_turns = false;
            }
            self.fail_held(conn, topic, &refusal);
            self.send_ready(conn, topic, out);
        }
    }

    /// The connection is gone: its waiting replies are dropped. O(its
    /// queues and the turn FIFOs of their topics).
    pub(super) fn drop_pending(&mut self, conn: ConnId) {
        let Some(state) = self.pending.conns.get_mut(conn) else {
            return;
        };
        let topics = std::mem::take(&mut state.topics);
        state.blocked = false;
        for topic in topics {
            let Some(queue) = self.pending.queues.remove(&(conn, topic)) else {
                continue;
            };
            if queue.in_turns
                && let Some(turns) = self.pending.turns.get_mut(&topic)
            {
                turns.retain(|&c| c != conn);
            }
            for entry in queue.entries {
                if let Entry::Held { publish, timer, .. } = entry {
                    let charge = publish.charge();
                    self.timers.cancel(timer);
                    self.budget.sub(Class::HeldRequests, charge);
                    self.pending.unhold(conn, charge);
                    self.pending.held_dropped += 1;
                }
            }
        }
        self.pending.resumable.retain(|&c| c != conn);
        if let Some(state) = self.pending.conns.get_mut(conn) {
            state.held_bytes = 0;
        }
    }

    /// Whether the server should read and execute more of `conn`'s input:
    /// not while its held publishes pass the bound (TCP then pushes back on
    /// the publisher), nor while a FETCH of it waits for the disk
    /// (`super::fetch`). Reading resumes when [`Broker::take_resumable`] lists
    /// the connection.
    pub fn wants_input(&mut self, conn: ConnId) -> bool {
        if self.fetching(conn) {
            return false;
        }
        let bound = self.pending.input_bound;
        let Some(state) = self.pending.conns.get_mut(conn) else {
            return true;
        };
        if state.held_bytes <= bound {
            return true;
        }
        if !state.blocked {
            state.blocked = true;
            self.pending.input_pauses += 1;
        }
        false
    }

    /// Whether publish replies of `conn` still wait (held for room, or for
    /// the disk): a connection whose input ended stays until they are sent.
    pub fn awaits_replies(&self, conn: ConnId) -> bool {
        self.pending.conns.get(conn).is_some_and(|state| {
            state.topics.iter().any(|&topic| {
                self.pending
                    .queues
                    .get(&(conn, topic))
                    .is_some_and(|queue| !queue.entries.is_empty())
            })
        })
    }

    /// Connections that [`Broker::wants_input`] refused and that may be read
    /// again: the server reschedules them.
    pub fn take_resumable(&mut self) -> Vec<ConnId> {
        std::mem::take(&mut self.pending.resumable)
    }

    /// Something other than held publishes that kept `conn`'s input
    /// waiting is over (a FETCH's disk read): list it for the server.
    pub(super) fn resume_input(&mut self, conn: ConnId) {
        self.pending.resumable.push(conn);
    }
}

/// The refusals a publish is held for instead: those that room will cure.
fn holdable(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::TopicFull | ErrorCode::BrokerFull | ErrorCode::DiskFull
    )
}
