//! Idempotent producers: per (producer id, topic), the last stored seq and
//! the replies of the recent publishes, so that a publish resent after a
//! lost connection is answered with its original offsets and never stored
//! twice (PROTOCOL.md §4.x, like Kafka's idempotent producer).
//!
//! # When a seq is decided
//!
//! At store time, never at arrival: [`Broker::check_seq`] runs right before
//! a publish would be stored, both for one that fits at once and for a
//! held one being admitted (`super::pending`). So a resend queued behind
//! its own held original on one connection is decided after the original
//! was stored (a duplicate then), and one arriving on another connection
//! while the original waits for the disk is a duplicate whose reply waits
//! for the log too (`Dedup::Duplicate`'s `wait`): a resend is never
//! answered before what it repeats is durable.
//!
//! `last` advances when the publish is stored. If the log then loses the
//! record, [`Broker::producers_lost_from`] puts `last` back, since the
//! publish was answered STORAGE_UNAVAILABLE and will be resent. The seq is
//! durable *in the same record as the messages* (`ProducerStamp` on
//! `Record::Messages`), so a crash never keeps one without the other;
//! checkpoints copy `last` (`Record::ProducerState`); recovery rebuilds
//! `last` and the window from both.
//!
//! # Bounds
//!
//! - Each pair remembers its last [`WINDOW`] publishes' replies. An older
//!   resend is answered DUPLICATE_SEQUENCE ("stored, offset forgotten").
//! - At most [`MAX_PRODUCERS`] pairs broker-wide. Past it, the least
//!   recently used pair is forgotten: its next publish counts as a pair
//!   never seen (stored whatever its seq) — the same trade as Kafka's
//!   producer-id expiry. Entries go with their topic.
//! - Every pair is charged to the memory budget (class `topics`: it is
//!   per-topic state); a new pair the budget cannot take is BROKER_FULL.

use super::cost;
use super::failure::{Failure, fail};
use super::keys::TopicKey;
use super::publishing::PublishInput;
use super::{Broker, ConnId};
use crate::budget::Class;
use crate::protocol::{ErrorCode, Reply};
use crate::storage::{ProducerStamp, Record, TopicId};
use std::collections::{BTreeMap, HashMap, VecDeque};

/// Publishes per pair whose replies are remembered.
pub const WINDOW: usize = 64;
/// (producer, topic) pairs remembered broker-wide.
pub const MAX_PRODUCERS: usize = 16_384;

/// A pair's fixed cost beside its id: the entry, its map slots, its LRU
/// slot.
const PAIR_BYTES: usize = 160;
/// One remembered publish.
const REMEMBERED_BYTES: usize = 40;

/// One remembered publish: enough to rebuild its reply.
#[derive(Debug, Clone, Copy)]
struct Remembered {
    first_seq: u64,
    count: u64,
    first_offset: u64,
    subscribers: u64,
    /// The log record holding it (`None` once recovered or memory-only).
    log_seq: Option<u64>,
}

#[derive(Debug)]
struct Pair {
    last_seq: u64,
    window: VecDeque<Remembered>,
    /// Its place in the LRU order.
    tick: u64,
    topic_id: TopicId,
}

impl Pair {
    fn charge(id: &str) -> usize {
        PAIR_BYTES + cost::allocation(id.len()) + WINDOW * REMEMBERED_BYTES
    }
}

/// A stored publish whose record is not yet durable: what to put back if
/// the log loses it.
#[derive(Debug)]
struct Unsynced {
    log_seq: u64,
    topic: TopicKey,
    topic_id: TopicId,
    producer: Box<str>,
    previous_last: u64,
}

#[derive(Debug, Default)]
pub(super) struct Producers {
    pairs: HashMap<TopicKey, HashMap<Box<str>, Pair>>,
    lru: BTreeMap<u64, (TopicKey, Box<str>)>,
    tick: u64,
    unsynced: VecDeque<Unsynced>,
    count: usize,
}

/// What a numbered publish is, decided at store time.
#[derive(Debug)]
pub(super) enum Dedup {
    /// Store it, stamped, without its first `skip` messages (a batch whose
    /// head repeats seqs already stored).
    Fresh { stamp: ProducerStamp, skip: u64 },
    /// Already stored: answer `reply`, after log seq `wait` if set.
    Duplicate {
        reply: Box<Reply>,
        wait: Option<u64>,
    },
}

/// The original reply's numbers for seqs `seq..=end`, if the window
/// remembers both ends and they were stored at consecutive offsets (one
/// publish, or several with nothing else published between them).
fn remembered(window: &VecDeque<Remembered>, seq: u64, end: u64) -> Option<Remembered> {
    let offset_of = |s: u64| {
        window
            .iter()
            .find(|r| r.first_seq <= s && s < r.first_seq + r.count)
            .map(|r| (r.first_offset + (s - r.first_seq), r))
    };
    let (first, entry) = offset_of(seq)?;
    let (last, newest) = offset_of(end)?;
    (last - first == end - seq).then_some(Remembered {
        first_seq: seq,
        count: end - seq + 1,
        first_offset: first,
        subscribers: entry.subscribers,
        // The newest record of the range: the reply waits for it.
        log_seq: newest.log_seq.max(entry.log_seq),
    })
}

impl Broker {
    /// Decides a publish of `count` messages numbered from `seq` by the
    /// producer of `conn` on topic `key`; `batch` says which reply shape a
    /// duplicate gets. Refusals: SEQUENCE_GAP (nothing stored),
    /// DUPLICATE_SEQUENCE (stored long ago), MALFORMED_REQUEST (no producer
    /// id on the connection).
    pub(super) fn check_seq(
        &mut self,
        conn: ConnId,
        key: TopicKey,
        seq: u64,
        count: u64,
        batch: bool,
    ) -> Result<Dedup, Failure> {
        let Some(producer) = self.client(conn).and_then(|c| c.producer.clone()) else {
            return fail(
                ErrorCode::MalformedRequest,
                "a seq needs a producer id: REGISTER_PUBLISHER [2, id, producer_id] first",
            );
        };
        let stamp = ProducerStamp {
            producer: producer.to_string(),
            first_seq: seq,
            // Set as it is stored (`Broker::store_publish`).
            subscribers: 0,
        };
        let Some(pair) = self
            .producers
            .pairs
            .get(&key)
            .and_then(|pairs| pairs.get(&*producer))
        else {
            return Ok(Dedup::Fresh { stamp, skip: 0 });
        };
        let last = pair.last_seq;
        let end = seq.saturating_add(count.max(1) - 1);
        if seq == last.saturating_add(1) {
            return Ok(Dedup::Fresh { stamp, skip: 0 });
        }
        if seq > last {
            return fail(
                ErrorCode::SequenceGap,
                format!(
                    "seq {seq} of producer '{producer}' skips ahead: the last stored is {last}, so the next must be {}",
                    last + 1
                ),
            );
        }
        if end > last {
            // A batch whose head was stored (its boundaries differ from the
            // publishes that stored it): only the tail is new.
            let skip = last + 1 - seq;
            let stamp = ProducerStamp {
                first_seq: last + 1,
                ..stamp
            };
            return Ok(Dedup::Fresh { stamp, skip });
        }
        let Some(hit) = remembered(&pair.window, seq, end) else {
            return fail(
                ErrorCode::DuplicateSequence,
                format!(
                    "seq {seq} of producer '{producer}' was stored before (the last stored is {last}); its offset is no longer remembered"
                ),
            );
        };
        let reply = if batch {
            Reply::PublishedBatch {
                first_offset: hit.first_offset,
                count: hit.count,
                subscribers: hit.subscribers,
            }
        } else {
            Reply::Published {
                offset: hit.first_offset,
                subscribers: hit.subscribers,
            }
        };
        // Not before the original is durable: waiting for everything
        // logged so far covers it and keeps replies in log order.
        let wait = match (hit.log_seq, &self.journal.journal) {
            (Some(original), Some(journal)) if original >= self.log_position() => {
                Some(journal.next_seq().saturating_sub(1).max(original))
            }
            _ => None,
        };
        Ok(Dedup::Duplicate {
            reply: Box::new(reply),
            wait,
        })
    }

    /// What a publish numbered `seq` is: `None` when it is not numbered
    /// (or is an empty batch, which stores nothing); a fresh one also
    /// needs room in the budget if its pair is new.
    pub(super) fn number_publish(
        &mut self,
        conn: ConnId,
        key: TopicKey,
        seq: Option<u64>,
        input: &PublishInput<'_>,
    ) -> Result<Option<Dedup>, Failure> {
        let Some(seq) = seq else {
            return Ok(None);
        };
        let (count, batch) = match input {
            PublishInput::One(_) => (1, false),
            PublishInput::Batch(payloads) => (payloads.len() as u64, true),
        };
        if count == 0 {
            return Ok(None);
        }
        let dedup = self.check_seq(conn, key, seq, count, batch)?;
        if matches!(dedup, Dedup::Fresh { .. }) {
            self.admits_pair(conn, key)?;
        }
        Ok(Some(dedup))
    }

    /// A numbered publish was stored at `first_offset..+count` (its record
    /// is `log_seq`): the pair's last seq and window move on.
    pub(super) fn note_stored(
        &mut self,
        key: TopicKey,
        stamp: &ProducerStamp,
        count: u64,
        first_offset: u64,
        log_seq: Option<u64>,
    ) {
        let topic_id = self.topics.get(key).map_or(0, |t| t.id);
        let previous_last = self.touch_pair(key, &stamp.producer, topic_id);
        let Some(pair) = self
            .producers
            .pairs
            .get_mut(&key)
            .and_then(|pairs| pairs.get_mut(stamp.producer.as_str()))
        else {
            return;
        };
        pair.last_seq = stamp.first_seq + count - 1;
        if pair.window.len() == WINDOW {
            pair.window.pop_front();
        }
        pair.window.push_back(Remembered {
            first_seq: stamp.first_seq,
            count,
            first_offset,
            subscribers: stamp.subscribers,
            log_seq,
        });
        if let Some(log_seq) = log_seq {
            self.producers.unsynced.push_back(Unsynced {
                log_seq,
                topic: key,
                topic_id,
                producer: stamp.producer.as_str().into(),
                previous_last,
            });
        }
    }

    /// The pair (key, producer), made most recently used, created if new
    /// (evicting the least recently used past the bound); returns its last
    /// seq before this publish.
    fn touch_pair(&mut self, key: TopicKey, producer: &str, topic_id: TopicId) -> u64 {
        self.producers.tick += 1;
        let tick = self.producers.tick;
        if let Some(pair) = self
            .producers
            .pairs
            .get_mut(&key)
            .and_then(|pairs| pairs.get_mut(producer))
        {
            let old = std::mem::replace(&mut pair.tick, tick);
            let last = pair.last_seq;
            if let Some(entry) = self.producers.lru.remove(&old) {
                self.producers.lru.insert(tick, entry);
            }
            return last;
        }
        while self.producers.count >= MAX_PRODUCERS {
            let Some((_, (topic, name))) = self.producers.lru.pop_first() else {
                break;
            };
            self.drop_pair(topic, &name);
        }
        self.budget.add(Class::Topics, Pair::charge(producer));
        self.producers.count += 1;
        self.producers.lru.insert(tick, (key, producer.into()));
        self.producers.pairs.entry(key).or_default().insert(
            producer.into(),
            Pair {
                last_seq: 0,
                window: VecDeque::new(),
                tick,
                topic_id,
            },
        );
        0
    }

    fn drop_pair(&mut self, key: TopicKey, producer: &str) {
        let Some(pairs) = self.producers.pairs.get_mut(&key) else {
            return;
        };
        if let Some(pair) = pairs.remove(producer) {
            self.producers.lru.remove(&pair.tick);
            self.producers.count -= 1;
            self.budget.sub(Class::Topics, Pair::charge(producer));
        }
        if pairs.is_empty() {
            self.producers.pairs.remove(&key);
        }
    }

    /// Whether a new pair may be created: the budget has room for it (the
    /// LRU bound makes room by itself).
    pub(super) fn admits_pair(&self, conn: ConnId, key: TopicKey) -> Result<(), Failure> {
        let Some(producer) = self.client(conn).and_then(|c| c.producer.as_deref()) else {
            return Ok(());
        };
        let known = self
            .producers
            .pairs
            .get(&key)
            .is_some_and(|pairs| pairs.contains_key(producer));
        if known || self.budget.admits(Pair::charge(producer)) {
            Ok(())
        } else {
            Err(Failure::broker_full(&self.budget))
        }
    }

    /// Topic `key` is gone: so are its pairs.
    pub(super) fn forget_producers(&mut self, key: TopicKey) {
        let Some(pairs) = self.producers.pairs.remove(&key) else {
            return;
        };
        for (name, pair) in pairs {
            self.producers.lru.remove(&pair.tick);
            self.producers.count -= 1;
            self.budget.sub(Class::Topics, Pair::charge(&name));
        }
    }

    /// Records below `through` are durable: nothing to put back for them.
    pub(super) fn producers_durable(&mut self, through: u64) {
        while self
            .producers
            .unsynced
            .front()
            .is_some_and(|u| u.log_seq < through)
        {
            self.producers.unsynced.pop_front();
        }
    }

    /// The log lost every record from `start` on: the publishes they held
    /// were answered STORAGE_UNAVAILABLE, so their pairs' last seq goes
    /// back and their replies are forgotten.
    pub(super) fn producers_lost_from(&mut self, start: u64) {
        while self
            .producers
            .unsynced
            .back()
            .is_some_and(|u| u.log_seq >= start)
        {
            let Some(lost) = self.producers.unsynced.pop_back() else {
                break;
            };
            let Some(pair) = self
                .producers
                .pairs
                .get_mut(&lost.topic)
                .and_then(|pairs| pairs.get_mut(&*lost.producer))
                .filter(|pair| pair.topic_id == lost.topic_id)
            else {
                continue;
            };
            pair.last_seq = pair.last_seq.min(lost.previous_last);
            pair.window
                .retain(|r| r.log_seq.is_none_or(|seq| seq < start));
        }
    }

    /// Recovery: a `Messages` record numbered by `stamp` (whether or not
    /// its messages are still retained).
    pub(super) fn replay_produced(
        &mut self,
        key: TopicKey,
        first_offset: u64,
        count: u64,
        stamp: ProducerStamp,
    ) {
        if count == 0 {
            return;
        }
        let last = self.recover_producer(key, &stamp.producer, 0);
        if stamp.first_seq + count - 1 > last {
            self.note_stored(key, &stamp, count, first_offset, None);
        }
    }

    /// Recovery: the pair's last seq is at least `last_seq` (a checkpoint's
    /// copy); returns it.
    pub(super) fn recover_producer(&mut self, key: TopicKey, producer: &str, last_seq: u64) -> u64 {
        let topic_id = self.topics.get(key).map_or(0, |t| t.id);
        self.touch_pair(key, producer, topic_id);
        match self
            .producers
            .pairs
            .get_mut(&key)
            .and_then(|pairs| pairs.get_mut(producer))
        {
            Some(pair) => {
                pair.last_seq = pair.last_seq.max(last_seq);
                pair.last_seq
            }
            None => 0,
        }
    }

    /// A checkpoint's copies of every pair's last seq.
    pub(super) fn producer_checkpoint(&self, records: &mut Vec<Record>) {
        for (&key, pairs) in &self.producers.pairs {
            let Some(topic) = self.topics.get(key) else {
                continue;
            };
            for (name, pair) in pairs {
                records.push(Record::ProducerState {
                    topic: topic.id,
                    producer: name.to_string(),
                    last_seq: pair.last_seq,
                });
            }
        }
    }

    /// What the producer table holds, for the budget recount.
    #[cfg(test)]
    pub(super) fn producers_footprint(&self) -> usize {
        self.producers
            .pairs
            .values()
            .flat_map(|pairs| pairs.keys())
            .map(|name| Pair::charge(name))
            .sum()
    }
}
