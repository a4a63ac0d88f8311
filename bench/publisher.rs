//! A publisher's loop, in its two shapes: pipelined (as fast as the broker
//! acknowledges, `depth` requests in flight) and paced (a fixed schedule,
//! up to `depth` in flight, latency counted from the intended send time).
//!
//! Both keep the same books ([`Books`]): which sequence numbers were issued
//! on each topic, which the broker acknowledged, which it refused. A full
//! topic does not refuse: the broker holds the publish until there is room
//! (PROTOCOL.md 4.5), which paces the loop through its pipeline, so no
//! backoff is needed. A refusal that may pass (`TOPIC_FULL` after the
//! broker's `--publish-hold`) is still no loss: it is counted as a retry
//! (reported, and expected to be 0), its numbers are set aside as refused
//! and the loop goes on issuing new ones (see `verify` for why numbers are
//! never reused). Any other error ends the run.
//!
//! Per message, nothing is allocated and no syscall made: a frame of
//! `--batch` payloads has only its headers rewritten, and the client library
//! writes a pipeline's requests together.

use crate::payload::Frames;
use crate::report;
use crate::run::{Fault, Shared, Timeline};
use crate::verify::Issued;
use courier::client::{self, Client, Completion, PublishedBatch};
use hdrhistogram::Histogram;
use std::collections::VecDeque;
use std::time::Duration;

/// Below this much time to wait, the paced loop spins instead of sleeping:
/// a sleep overshoots by tens of microseconds, which would be measured as
/// latency.
pub const SPIN_NS: u64 = 100_000;

/// What to do when the broker refuses with a retryable error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFull {
    Retry,
    /// Stop publishing (the retained scenario measures up to the limit).
    Stop,
}

/// What one publisher is to do.
#[derive(Debug, Clone)]
pub struct Spec {
    pub index: usize,
    /// (global topic index, name), visited in turn.
    pub topics: Vec<(usize, String)>,
    /// How many subscribers each topic has: every acknowledgement must say
    /// so (the subscribers all subscribed before the start).
    pub subscribers: Vec<u64>,
    /// Whether this is the topic's only publisher, so its offsets must be
    /// consecutive rather than merely increasing.
    pub sole: Vec<bool>,
    pub size: usize,
    pub batch: usize,
    pub depth: usize,
    /// Paced publishers sharing a rate start this fraction of an interval
    /// apart, so their sends do not bunch up.
    pub phase: f64,
    /// Messages to have acknowledged within the measured window.
    pub quota: u64,
    pub on_full: OnFull,
}

/// What one publisher did.
#[derive(Debug)]
pub struct Outcome {
    pub issued: Vec<Issued>,
    /// Per request, nanoseconds; measured window only.
    pub latency: Histogram<u64>,
    /// How late paced sends went out (paced only).
    pub lag: Option<Histogram<u64>>,
    pub measured: u64,
    pub measured_requests: u64,
    pub measured_bytes: u64,
    pub last_ns: u64,
    pub accepted: u64,
    pub requests: u64,
    pub retries: u64,
    /// Acknowledgements that named the wrong number of subscribers.
    pub subscriber_mismatches: u64,
    /// Acknowledged offsets that went backwards (or, for a sole publisher,
    /// skipped).
    pub offset_breaks: u64,
    /// The broker refused and `OnFull::Stop` applied.
    pub stopped_full: bool,
}

/// A request whose outcome is not known yet.
#[derive(Debug, Clone, Copy)]
struct Sent {
    tag: u64,
    local: usize,
    first_seq: u64,
    count: u64,
    sent_ns: u64,
}

struct Books<'a> {
    spec: &'a Spec,
    timeline: Timeline,
    out: Outcome,
    /// Per topic: where the next acknowledged offset may start.
    next_offset: Vec<Option<u64>>,
}

impl<'a> Books<'a> {
    fn new(spec: &'a Spec, timeline: Timeline) -> Books<'a> {
        let issued = spec
            .topics
            .iter()
            .map(|&(topic, _)| Issued {
                publisher: spec.index,
                topic,
                ..Issued::default()
            })
            .collect();
        Books {
            spec,
            timeline,
            next_offset: vec![None; spec.topics.len()],
            out: Outcome {
                issued,
                latency: report::histogram(),
                lag: None,
                measured: 0,
                measured_requests: 0,
                measured_bytes: 0,
                last_ns: timeline.measure_ns,
                accepted: 0,
                requests: 0,
                retries: 0,
                subscriber_mismatches: 0,
                offset_breaks: 0,
                stopped_full: false,
            },
        }
    }

    /// Takes `n` sequence numbers on topic `local`; returns the first.
    fn issue(&mut self, local: usize, n: u64) -> u64 {
        match self.out.issued.get_mut(local) {
            Some(topic) => {
                let first = topic.issued;
                topic.issued += n;
                first
            }
            None => 0,
        }
    }

    /// Messages that still count toward the quota.
    fn remaining(&self, in_flight: u64) -> u64 {
        self.spec
            .quota
            .saturating_sub(self.out.measured + in_flight)
    }

    /// Records a request's outcome. `Ok(false)` for a retryable refusal.
    fn settle(
        &mut self,
        sent: Sent,
        result: client::Result<PublishedBatch>,
        done_ns: u64,
        shared: &Shared,
    ) -> Result<bool, Fault> {
        let index = self.spec.index;
        let Some(topic) = self.out.issued.get_mut(sent.local) else {
            return Ok(true);
        };
        let stored = match result {
            Ok(stored) => stored,
            Err(e) if e.is_retryable() => {
                topic
                    .refused
                    .push((sent.first_seq, sent.first_seq + sent.count));
                self.out.retries += 1;
                return Ok(false);
            }
            Err(e) => {
                let name = self
                    .spec
                    .topics
                    .get(sent.local)
                    .map_or("?", |t| t.1.as_str());
                return Err(Fault::Failed(format!(
                    "publisher {index}: publishing to {name} failed: {e}"
                )));
            }
        };
        if stored.count != sent.count {
            return Err(Fault::Failed(format!(
                "publisher {index}: the broker stored {} messages of a batch of {}",
                stored.count, sent.count
            )));
        }
        topic.accepted += sent.count;
        self.out.accepted += sent.count;
        self.out.requests += 1;
        let expected = self.spec.subscribers.get(sent.local).copied();
        if expected != Some(stored.subscribers) {
            self.out.subscriber_mismatches += 1;
        }
        if let Some(next) = self.next_offset.get_mut(sent.local) {
            let sole = self.spec.sole.get(sent.local).copied().unwrap_or(false);
            let broken = match *next {
                Some(n) if sole => stored.first_offset != n,
                Some(n) => stored.first_offset < n,
                None => false,
            };
            if broken {
                self.out.offset_breaks += 1;
            }
            *next = Some(stored.first_offset + stored.count);
        }
        if self.timeline.measured(done_ns) {
            self.out.measured += sent.count;
            self.out.measured_requests += 1;
            self.out.measured_bytes += sent.count * self.spec.size as u64;
            self.out
                .latency
                .saturating_record(done_ns.saturating_sub(sent.sent_ns));
            self.out.last_ns = self.out.last_ns.max(done_ns);
        }
        if let Some(meter) = shared.meter(0) {
            meter.add(sent.count);
        }
        Ok(true)
    }

    fn failed(&self, e: client::Error) -> Fault {
        Fault::Failed(format!("publisher {}: {e}", self.spec.index))
    }

    /// Settles a drained set of completions against the requests sent.
    /// The quota is in flight: waits for every reply (refusals reopen it).
    fn wait_for_quota(
        &mut self,
        pipeline: &mut client::Pipeline<'_>,
        pending: &mut VecDeque<Sent>,
        in_flight: &mut u64,
        shared: &Shared,
    ) -> Result<Drained, Fault> {
        let waited = pipeline.wait_all();
        let settled = self.settle_all(pending, in_flight, pipeline.completions(), shared);
        settled.and_then(|d| waited.map(|()| d).map_err(|e| self.failed(e)))
    }

    /// Takes one step's outcome: a refusal may stop the run (`OnFull::Stop`);
    /// a fault ends it.
    fn apply(&mut self, step: Result<Drained, Fault>, spec: &Spec) -> Result<(), Fault> {
        let drained = step?;
        if drained.refused && spec.on_full == OnFull::Stop {
            self.out.stopped_full = true;
        }
        Ok(())
    }

    /// Settles the pipeline's last completions and ends the run with the
    /// first fault, if any.
    fn close(
        mut self,
        pending: &mut VecDeque<Sent>,
        in_flight: &mut u64,
        rest: Vec<Completion>,
        shared: &Shared,
        failure: Option<Fault>,
    ) -> Result<Outcome, Fault> {
        let settled = self.settle_all(pending, in_flight, rest.into_iter(), shared);
        match (failure, settled) {
            (Some(e), _) | (None, Err(e)) => Err(e),
            (None, Ok(_)) => Ok(self.out),
        }
    }

    fn settle_all(
        &mut self,
        pending: &mut VecDeque<Sent>,
        in_flight: &mut u64,
        completions: impl Iterator<Item = Completion>,
        shared: &Shared,
    ) -> Result<Drained, Fault> {
        let done_ns = shared.clock.now_ns();
        let mut drained = Drained::default();
        for done in completions {
            // Completions come in the order sent; the search is for safety.
            let Some(sent) = pending
                .iter()
                .position(|s| s.tag == done.tag)
                .and_then(|at| pending.remove(at))
            else {
                return Err(Fault::Failed(format!(
                    "publisher {}: an outcome for a request never sent",
                    self.spec.index
                )));
            };
            *in_flight -= sent.count;
            let result = match done.result {
                Ok(client::Outcome::Published(stored)) => Ok(stored),
                Ok(other) => {
                    return Err(Fault::Failed(format!(
                        "publisher {}: a publish completed as {other:?}",
                        self.spec.index
                    )));
                }
                Err(e) => Err(e),
            };
            if self.settle(sent, result, done_ns, shared)? {
                drained.accepted = true;
            } else {
                drained.refused = true;
            }
        }
        Ok(drained)
    }
}

/// What one batch of completions held.
#[derive(Debug, Default, Clone, Copy)]
struct Drained {
    accepted: bool,
    refused: bool,
}

impl Drained {
    fn merge(self, other: Drained) -> Drained {
        Drained {
            accepted: self.accepted || other.accepted,
            refused: self.refused || other.refused,
        }
    }
}

/// Publishes with up to `spec.depth` requests in flight until the quota is
/// acknowledged or the timeline says stop.
pub fn pipelined(
    client: &mut Client,
    spec: &Spec,
    shared: &Shared,
    timeline: Timeline,
) -> Result<Outcome, Fault> {
    let mut books = Books::new(spec, timeline);
    let mut frames = Frames::new(spec.size, spec.batch);
    let mut pending: VecDeque<Sent> = VecDeque::with_capacity(spec.depth + 1);
    let mut in_flight = 0u64;
    let mut turn = 0usize;
    let publisher = u32::try_from(spec.index).unwrap_or(u32::MAX);
    let mut pipeline = client.pipeline(spec.depth);
    let mut failure = None;
    loop {
        let now = shared.clock.now_ns();
        if shared.aborted() || now >= timeline.stop_ns || books.out.stopped_full {
            break;
        }
        let remaining = books.remaining(in_flight);
        let step = if remaining == 0 {
            if pending.is_empty() {
                break;
            }
            books.wait_for_quota(&mut pipeline, &mut pending, &mut in_flight, shared)
        } else {
            let n = remaining.min(spec.batch as u64);
            let local = turn;
            turn = (turn + 1) % spec.topics.len().max(1);
            let Some((_, name)) = spec.topics.get(local) else {
                break;
            };
            // Stamp the time the request can actually leave, not the time
            // before waiting for room in the pipeline: otherwise one
            // request in flight would count two round trips.
            // Replies that made room are settled now, so their latency ends
            // when they arrived, not after the next request was built.
            if let Err(e) = pipeline.wait_for_room() {
                failure = Some(books.failed(e));
                break;
            }
            let early = match books.settle_all(
                &mut pending,
                &mut in_flight,
                pipeline.completions(),
                shared,
            ) {
                Ok(early) => early,
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            };
            let now = shared.clock.now_ns();
            let first_seq = books.issue(local, n);
            let queued = if n == 1 {
                pipeline.send(name, frames.stamp_one(publisher, first_seq, now))
            } else {
                pipeline.send_batch(name, &frames.stamp(n as usize, publisher, first_seq, now))
            };
            let flushed = queued.and_then(|tag| {
                pending.push_back(Sent {
                    tag,
                    local,
                    first_seq,
                    count: n,
                    sent_ns: now,
                });
                in_flight += n;
                // One at a time means one at a time: do not leave the
                // request in the buffer until the next one.
                if spec.depth == 1 {
                    pipeline.flush()
                } else {
                    Ok(())
                }
            });
            let settled =
                books.settle_all(&mut pending, &mut in_flight, pipeline.completions(), shared);
            settled
                .map(|d| d.merge(early))
                .and_then(|d| flushed.map(|()| d).map_err(|e| books.failed(e)))
        };
        if let Err(e) = books.apply(step, spec) {
            failure = Some(e);
            break;
        }
    }
    let rest = pipeline.finish();
    books.close(&mut pending, &mut in_flight, rest, shared, failure)
}

/// Publishes on a fixed schedule — `rate` messages per second, in frames of
/// `spec.batch` — with up to `spec.depth` requests in flight, timing each
/// from its intended send time.
///
/// Each request is written the moment it is due and its acknowledgement is
/// not waited for, as a load generator that keeps to its schedule must (a
/// publisher that waited for each reply would fall behind whenever a round
/// trip passed the interval, and the corrected latency would measure its
/// own backlog). The window bounds what is outstanding: only when `depth`
/// requests are unanswered does a send wait, and that wait shows as send
/// lag. The client library reads replies only when it needs room, so an
/// acknowledgement is settled when the window fills (or at the end), not
/// when it arrived: the publish latency is an upper bound, up to `depth`
/// intervals late. End-to-end latency, taken at the subscriber from the
/// intended time in the payload, is not affected.
pub fn paced(
    client: &mut Client,
    spec: &Spec,
    shared: &Shared,
    timeline: Timeline,
    rate: f64,
) -> Result<Outcome, Fault> {
    let mut books = Books::new(spec, timeline);
    let mut lag = report::histogram();
    let mut frames = Frames::new(spec.size, spec.batch);
    let interval_ns = spec.batch as f64 * 1e9 / rate;
    let publisher = u32::try_from(spec.index).unwrap_or(u32::MAX);
    let offset_ns = interval_ns * spec.phase.fract();
    let clock = shared.clock;
    let mut pending: VecDeque<Sent> = VecDeque::with_capacity(spec.depth + 1);
    let mut in_flight = 0u64;
    let mut pipeline = client.pipeline(spec.depth);
    let mut failure = None;
    let mut k = 0u64;
    loop {
        let intended = timeline.start_ns + (offset_ns + k as f64 * interval_ns) as u64;
        if shared.aborted() || intended >= timeline.stop_ns || books.out.stopped_full {
            break;
        }
        let step = if books.remaining(in_flight) == 0 {
            if pending.is_empty() {
                break;
            }
            books.wait_for_quota(&mut pipeline, &mut pending, &mut in_flight, shared)
        } else {
            while clock.now_ns() < intended {
                let left = intended.saturating_sub(clock.now_ns());
                if left > SPIN_NS {
                    std::thread::sleep(Duration::from_nanos(left - SPIN_NS));
                } else {
                    std::thread::yield_now();
                }
            }
            // A full window holds the send back; that delay is lag, and
            // the latency still counts from the intended time.
            if let Err(e) = pipeline.wait_for_room() {
                failure = Some(books.failed(e));
                break;
            }
            let start = clock.now_ns();
            if timeline.measured(intended) {
                lag.saturating_record(start.saturating_sub(intended).max(1));
            }
            let n = books.remaining(in_flight).min(spec.batch as u64);
            let local = (k % spec.topics.len().max(1) as u64) as usize;
            k += 1;
            let Some((_, name)) = spec.topics.get(local) else {
                break;
            };
            let first_seq = books.issue(local, n);
            let queued = if n == 1 {
                pipeline.send(name, frames.stamp_one(publisher, first_seq, intended))
            } else {
                let payloads = frames.stamp(n as usize, publisher, first_seq, intended);
                pipeline.send_batch(name, &payloads)
            };
            let flushed = queued.and_then(|tag| {
                pending.push_back(Sent {
                    tag,
                    local,
                    first_seq,
                    count: n,
                    sent_ns: intended,
                });
                in_flight += n;
                // Due now means sent now, not when the buffer fills.
                pipeline.flush()
            });
            let settled =
                books.settle_all(&mut pending, &mut in_flight, pipeline.completions(), shared);
            settled.and_then(|d| flushed.map(|()| d).map_err(|e| books.failed(e)))
        };
        if let Err(e) = books.apply(step, spec) {
            failure = Some(e);
            break;
        }
    }
    let rest = pipeline.finish();
    books.out.lag = Some(lag);
    books.close(&mut pending, &mut in_flight, rest, shared, failure)
}
