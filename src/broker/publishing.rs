//! The publisher's side: the topic table (names to keys), creating and
//! deleting topics, and appending published messages.
//!
//! A publish only appends and marks the waiting pulls it may answer
//! ([`Broker::wake_subscribers`], which looks only at the subscribers that
//! were caught up); the pulls themselves are answered at the end of the
//! server's batch ([`Broker::answer_ready`]), so a burst of publishes wakes
//! each subscriber once. A topic without subscribers keeps nothing: its
//! offsets advance and the payloads are dropped, since no cursor could ever
//! reach them.
//!
//! Everything a topic holds is counted in the memory budget (`super::cost`
//! says how much each piece is): a topic when it is created, its messages as
//! they are stored and released (`cost::settle`). A publish that would be stored
//! is admitted or refused at one point, [`Broker::admit_publish`], so that
//! flow control can later turn its retryable refusals into a hold.

use super::cost;
use super::failure::{Failure, fail};
use super::keys::TopicKey;
use super::pull::Answer;
use super::topic::{Footprint, Topic};
use super::{Broker, Outbox};
use crate::budget::Class;
use crate::protocol::{ErrorCode, Payloads, Reply, validate_topic_name};
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

    pub(super) fn create_topic(&mut self, name: &str) -> Result<(), Failure> {
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
        let key = self.topics.insert(Topic::new(name));
        self.topic_names.insert(name.into(), key);
        self.budget.add(Class::Topics, charge);
        Ok(())
    }

    /// Drops the topic with its backlog; pulls waiting on it are answered
    /// TOPIC_DELETED. O(its subscribers), which is what it removes.
    pub(super) fn delete_topic(&mut self, name: &str, out: &mut dyn Outbox) -> Result<(), Failure> {
        let key = self.topic_key(name)?;
        let topic = self.topics.remove(key);
        self.topic_names.remove(name);
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
            self.end_parked(
                session_key,
                |p| p.covers(key),
                Answer::Error(ErrorCode::TopicDeleted, &deleted),
                out,
            );
        }
        Ok(())
    }

    pub(super) fn publish(
        &mut self,
        name: &str,
        input: PublishInput<'_>,
    ) -> Result<Reply, Failure> {
        let key = self.topic_key(name)?;
        let max_payload = self.limits.max_payload_bytes();
        let size = input.measure();
        let Size {
            count,
            bytes,
            largest,
            ..
        } = size;
        if largest > max_payload {
            return fail(
                ErrorCode::PayloadTooLarge,
                format!("a payload of {largest} bytes exceeds the maximum of {max_payload}"),
            );
        }
        let subscribers = self.topics[key].subscribers.len() as u64;
        let first_offset = if subscribers == 0 {
            self.topics[key].skip(count as u64)
        } else {
            self.admit_publish(key, &size)?;
            let topic = &mut self.topics[key];
            let before = topic.footprint();
            let first = topic.next_offset();
            topic.make_room(count);
            input.append_to(topic);
            cost::settle(&mut self.budget, before, topic.footprint());
            self.counters.backlog_messages += count as u64;
            self.counters.backlog_bytes += bytes as u64;
            if count > 0 {
                self.wake_subscribers(key);
            }
            first
        };
        self.counters.messages_in += count as u64;
        self.counters.bytes_in += bytes as u64;
        Ok(match input {
            PublishInput::One(_) => Reply::Published {
                offset: first_offset,
                subscribers,
            },
            PublishInput::Batch(_) => Reply::PublishedBatch {
                first_offset,
                count: count as u64,
                subscribers,
            },
        })
    }

    /// Whether a publish of `size` may be stored in topic `key` now: the one
    /// point where a publish that would be kept is refused. The refusals
    /// that are retryable (TOPIC_FULL, BROKER_FULL) are the ones flow
    /// control may turn into a hold, the request waiting here for room.
    fn admit_publish(&self, key: TopicKey, size: &Size) -> Result<(), Failure> {
        let limits = &self.limits;
        let topic = &self.topics[key];
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
struct Size {
    count: usize,
    /// Payload bytes (the backlog bounds count these).
    bytes: usize,
    largest: usize,
    /// Payload allocation bytes (the memory budget counts these).
    charge: usize,
}

impl PublishInput<'_> {
    fn measure(&self) -> Size {
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

    /// Copies the payloads out of the read buffer, once: a batch is copied
    /// as one block and each message is a slice of it. The block is charged
    /// to the last message, which is released last.
    fn append_to(&self, topic: &mut Topic) {
        match self {
            PublishInput::One(payload) => {
                topic.push(
                    Bytes::copy_from_slice(payload),
                    cost::single_payload(payload.len()),
                );
            }
            PublishInput::Batch(payloads) => {
                let block = Bytes::copy_from_slice(payloads.encoded);
                let base = payloads.encoded.as_ptr() as usize;
                let last = payloads.len().saturating_sub(1);
                for (i, payload) in payloads.iter().enumerate() {
                    let start = payload.as_ptr() as usize - base;
                    let charge = if i == last {
                        cost::batch_block(payloads.encoded.len())
                    } else {
                        0
                    };
                    topic.push(block.slice(start..start + payload.len()), charge);
                }
            }
        }
    }
}
