//! The publisher's side: the topic table (names to keys), creating and
//! deleting topics, and appending published messages.
//!
//! A publish only appends and marks the waiting pulls it may answer
//! ([`Broker::wake_subscribers`], which looks only at the subscribers that
//! were caught up); the pulls themselves are answered at the end of the
//! server's batch ([`Broker::answer_ready`]), so a burst of publishes wakes
//! each subscriber once. An until-acked topic without subscribers keeps
//! nothing: its offsets advance and the payloads are dropped, since no
//! cursor could ever reach them. A retained topic keeps them (see
//! `super::retention`); each message gets the broker's append time.
//!
//! Everything a topic holds is counted in the memory budget (`super::cost`
//! says how much each piece is): a topic when it is created, its messages as
//! they are stored and released (`cost::settle`). A publish is admitted or
//! refused at one point, [`Broker::admit_publish`]; `super::pending` turns
//! its retryable refusals into a hold and stores the publish with
//! [`Broker::store_publish`] once it fits.

use super::cost;
use super::failure::{Failure, fail};
use super::journal::Undo;
use super::journal::retention_record;
use super::keys::TopicKey;
use super::pull::Answer;
use super::retention::now_ms;
use super::topic::{Footprint, Topic};
use super::{Broker, Outbox};
use crate::budget::Class;
use crate::protocol::{ErrorCode, Payloads, Reply, Retention, validate_topic_name};
use crate::storage::{ProducerStamp, Record, TopicId};
use bytes::Bytes;

impl Broker {
    /// The topic called `name`: refused as invalid before it is looked up,
    /// so an unknown-topic message only ever echoes a valid name.
    pub(super) fn topic_key(&self, name: &str) -> Result<TopicKey, Failure> {
        check_topic_name(name)?;
        self.topic_names
            .get(name)
            .copied()
            .ok_or_else(|| Failure::unknown_topic(name))
    }

    /// Creates topic `name` with `retention`; its TopicRetention record
    /// follows TopicCreated, in the same round, so recovery never sees the
    /// topic without its policy.
    pub(super) fn create_topic(&mut self, name: &str, retention: Retention) -> Result<(), Failure> {
        check_topic_name(name)?;
        if self.topic_names.contains_key(name) {
            return fail(
                ErrorCode::TopicExists,
                format!("topic '{name}' already exists"),
            );
        }
        if self.topics.len() >= self.limits.max_topics {
            return fail(
                ErrorCode::TooManyTopics,
                format!(
                    "the broker holds its maximum of {} topics",
                    self.limits.max_topics
                ),
            );
        }
        let charge = cost::topic(name.len());
        if !self.budget.admits(charge) {
            return Err(Failure::broker_full(&self.budget));
        }
        let id = self.new_topic_id();
        let seq = self.log_record(&Record::TopicCreated {
            topic: id,
            name: name.to_owned(),
        })?;
        let mut seq = seq;
        if let Some(record) = retention_record(id, retention) {
            seq = self.log_record(&record)?.or(seq);
        }
        let key = self.insert_topic(name, id);
        self.topics[key].retention = retention;
        self.gate_on(seq, Undo::Topic(key, id));
        Ok(())
    }

    /// Adds topic `name` with durable id `id` to the tables (creation and
    /// recovery).
    pub(super) fn insert_topic(&mut self, name: &str, id: TopicId) -> TopicKey {
        let mut topic = Topic::new(name);
        topic.id = id;
        let key = self.topics.insert(topic);
        self.topic_names.insert(name.into(), key);
        self.topic_ids.insert(id, key);
        self.budget.add(Class::Topics, cost::topic(name.len()));
        key
    }

    /// Drops the topic with its backlog; pulls waiting on it are answered
    /// TOPIC_DELETED. O(its subscribers), which is what it removes.
    pub(super) fn delete_topic(&mut self, name: &str, out: &mut dyn Outbox) -> Result<(), Failure> {
        let key = self.topic_key(name)?;
        self.delete_held(key, name, out);
        let id = self.topics[key].id;
        let seq = self.log_change(Record::TopicDeleted { topic: id });
        self.gate_on(seq, Undo::Kept);
        self.remove_topic(key, name, Some(out));
        Ok(())
    }

    /// Drops topic `key` from the tables; pulls waiting on it are answered
    /// TOPIC_DELETED when there is an outbox (recovery has none, nor pulls).
    pub(super) fn remove_topic(
        &mut self,
        key: TopicKey,
        name: &str,
        mut out: Option<&mut dyn Outbox>,
    ) {
        let topic = self.topics.remove(key);
        self.forget_producers(key);
        if let Some(timer) = topic.retention_timer {
            self.timers.cancel(timer);
        }
        self.topic_names.remove(name);
        self.topic_ids.remove(&topic.id);
        self.counters.backlog_messages -= topic.backlog_messages() as u64;
        self.counters.backlog_bytes -= topic.backlog_bytes() as u64;
        self.budget.sub(Class::Topics, cost::topic(name.len()));
        cost::settle(&mut self.budget, topic.footprint(), Footprint::default());
        let deleted = format!("topic '{name}' was deleted");
        for session_key in topic.subscribers {
            self.work += 1;
            let Some(session) = self.sessions.get_mut(session_key) else {
                continue;
            };
            if session.remove_subscription(key).is_some() {
                self.counters.subscriptions -= 1;
                self.budget.sub(Class::Subscriptions, cost::SUBSCRIPTION);
            }
            self.drop_cursor_of(session_key, key);
            if let Some(out) = out.as_deref_mut() {
                self.end_parked(
                    session_key,
                    |p| p.covers(key),
                    Answer::Error(ErrorCode::TopicDeleted, &deleted),
                    out,
                );
            }
        }
    }

    /// Stores a publish that [`Broker::admit_publish`] admitted, and builds
    /// its reply; with the log's sequence number of its record, which the
    /// reply must wait for (`None` when the broker keeps no log). Refused
    /// only when the record is too large for the log. A publish numbered
    /// by a producer carries its `stamp` (see `super::producers`).
    pub(super) fn store_publish(
        &mut self,
        key: TopicKey,
        input: PublishInput<'_>,
        size: &Size,
        mut stamp: Option<ProducerStamp>,
    ) -> Result<(Reply, Option<u64>), Failure> {
        let Size { count, bytes, .. } = *size;
        let subscribers = self.topics[key].subscribers.len() as u64;
        let retained = self.topics[key].retention != Retention::UntilAcked;
        // Kept only for someone who may read it: an until-acked topic
        // without subscribers (and nothing staged before) just moves its
        // offsets.
        let keep = subscribers > 0 || self.topics[key].backlog_messages() > 0 || retained;
        let first_offset = self.topics[key].end_offset();
        let time_ms = self.topics[key].times.stamp(now_ms());
        if let Some(stamp) = &mut stamp {
            stamp.subscribers = subscribers;
        }
        let mut payloads = if keep || self.is_durable() {
            input.payloads()
        } else {
            Vec::new()
        };
        // The record borrows the payloads and gives them back, so the one
        // copy serves the log and the topic alike.
        let seq = if count == 0 {
            None
        } else {
            self.log_messages(key, first_offset, &mut payloads, time_ms, stamp.clone())?
        };
        if keep {
            let topic = &mut self.topics[key];
            let before = topic.footprint();
            if count > 0 {
                topic.times.record(first_offset, time_ms);
            }
            topic.make_room(count);
            for (i, payload) in payloads.into_iter().enumerate() {
                let charge = input.charge_of(i, count);
                topic.push(payload, charge);
            }
            cost::settle(&mut self.budget, before, topic.footprint());
            self.counters.backlog_messages += count as u64;
            self.counters.backlog_bytes += bytes as u64;
        } else {
            self.topics[key].skip(count as u64);
        }
        match seq {
            Some(seq) => self.track_unsynced(seq, key, if keep { count } else { 0 }),
            None if keep && count > 0 => self.wake_subscribers(key),
            None => {}
        }
        self.counters.messages_in += count as u64;
        self.counters.bytes_in += bytes as u64;
        if let Some(stamp) = &stamp
            && count > 0
        {
            self.note_stored(key, stamp, count as u64, first_offset, seq);
        }
        if retained {
            self.release(key);
            self.arm_retention(key);
        }
        let reply = match input {
            PublishInput::One(_) => Reply::Published {
                offset: first_offset,
                subscribers,
            },
            PublishInput::Batch(_) => Reply::PublishedBatch {
                first_offset,
                count: count as u64,
                subscribers,
            },
        };
        Ok((reply, seq))
    }

    /// Whether a publish of `size` may be stored in topic `key` now: the one
    /// point where a publish is refused. The refusals that room will cure
    /// (TOPIC_FULL, BROKER_FULL) are turned into a hold by the caller
    /// (`super::pending`), which asks again here when room may have
    /// appeared; the others are final. An until-acked topic without
    /// subscribers keeps nothing, so only the payload bound applies to it.
    /// A retained topic is first trimmed for room by the caller
    /// ([`Broker::trim_for_room`]).
    pub(super) fn admit_publish(&self, key: TopicKey, size: &Size) -> Result<(), Failure> {
        let limits = &self.limits;
        let max_payload = limits.max_payload_bytes();
        if size.largest > max_payload {
            return fail(
                ErrorCode::PayloadTooLarge,
                format!(
                    "a payload of {} bytes exceeds the maximum of {max_payload}",
                    size.largest
                ),
            );
        }
        self.admit_disk(size.bytes)?;
        let topic = &self.topics[key];
        if topic.subscribers.is_empty() && topic.retention == Retention::UntilAcked {
            return Ok(());
        }
        let name = &topic.name;
        if size.count > limits.max_backlog_messages || size.bytes > limits.max_backlog_bytes {
            return fail(
                ErrorCode::BatchTooLarge,
                format!(
                    "a batch of {} messages / {} bytes can never fit topic '{name}' (bounds {} / {}); split it",
                    size.count, size.bytes, limits.max_backlog_messages, limits.max_backlog_bytes
                ),
            );
        }
        if !topic.has_room(
            size.count,
            size.bytes,
            limits.max_backlog_messages,
            limits.max_backlog_bytes,
        ) {
            return fail(
                ErrorCode::TopicFull,
                format!(
                    "topic '{name}' holds {} messages / {} bytes not yet acknowledged by all subscribers (bounds {} / {}); retry later",
                    topic.backlog_messages(),
                    topic.backlog_bytes(),
                    limits.max_backlog_messages,
                    limits.max_backlog_bytes
                ),
            );
        }
        if !self
            .budget
            .admits(size.charge.saturating_add(topic.growth_for(size.count)))
        {
            return Err(Failure::broker_full(&self.budget));
        }
        Ok(())
    }
}

fn check_topic_name(name: &str) -> Result<(), Failure> {
    validate_topic_name(name).map_err(|_| Failure::invalid_topic_name(name))
}

/// A PUBLISH payload or a PUBLISH_BATCH's payloads, borrowed from the frame.
#[derive(Clone, Copy)]
pub(super) enum PublishInput<'a> {
    One(&'a [u8]),
    Batch(Payloads<'a>),
}

/// What a publish would store.
#[derive(Debug, Clone, Copy)]
pub(super) struct Size {
    count: usize,
    /// Payload bytes (the backlog bounds count these).
    pub(super) bytes: usize,
    largest: usize,
    /// Payload allocation bytes (the memory budget counts these).
    charge: usize,
}

impl Size {
    pub(super) fn count(&self) -> usize {
        self.count
    }

    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }
}

impl PublishInput<'_> {
    pub(super) fn measure(&self) -> Size {
        match self {
            PublishInput::One(payload) => Size {
                count: 1,
                bytes: payload.len(),
                largest: payload.len(),
                charge: cost::single_payload(payload.len()),
            },
            PublishInput::Batch(payloads) => {
                let (count, bytes, largest) =
                    payloads.iter().fold((0, 0, 0), |(n, sum, max), p| {
                        (n + 1, sum + p.len(), max.max(p.len()))
                    });
                let charge = if count == 0 {
                    0
                } else {
                    cost::batch_block(payloads.encoded.len())
                };
                Size {
                    count,
                    bytes,
                    largest,
                    charge,
                }
            }
        }
    }

    /// The same publish without its first `skip` messages (a producer's
    /// batch whose head was stored before, see `super::producers`).
    pub(super) fn skip(self, skip: u64) -> Self {
        match self {
            PublishInput::Batch(payloads) if skip > 0 => {
                let skip = u32::try_from(skip).unwrap_or(u32::MAX);
                PublishInput::Batch(crate::codec::skip_payloads(&payloads, skip))
            }
            other => other,
        }
    }

    /// Copies the payloads out of the read buffer, once: a batch is copied
    /// as one block and each message is a slice of it.
    fn payloads(&self) -> Vec<Bytes> {
        match self {
            PublishInput::One(payload) => vec![Bytes::copy_from_slice(payload)],
            PublishInput::Batch(payloads) => {
                let block = Bytes::copy_from_slice(payloads.encoded);
                let base = payloads.encoded.as_ptr() as usize;
                payloads
                    .iter()
                    .map(|payload| {
                        let start = payload.as_ptr() as usize - base;
                        block.slice(start..start + payload.len())
                    })
                    .collect()
            }
        }
    }

    /// What message `i` of the `count` [`PublishInput::payloads`] gives is
    /// charged: a batch's block is charged to its last message, which is
    /// released last.
    fn charge_of(&self, i: usize, count: usize) -> usize {
        match self {
            PublishInput::One(payload) => cost::single_payload(payload.len()),
            PublishInput::Batch(payloads) if i + 1 == count => {
                cost::batch_block(payloads.encoded.len())
            }
            PublishInput::Batch(_) => 0,
        }
    }
}
