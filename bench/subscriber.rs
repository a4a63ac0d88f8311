//! A subscriber's loop: pull big batches, check each message, time it.
//!
//! It keeps `--pull-depth` pulls in flight ([`courier::client::Pulls`]), so
//! one is always waiting in the broker when a message arrives. A pull asks
//! for up to 65,536 messages and waits up to 100 ms when none are ready; each
//! batch, once checked, is acknowledged by an ACK that goes out with the next
//! pull, so acknowledging costs no round trip. The end-to-end latency of a
//! message is the time the pull reply was taken minus the send time in its
//! header: one clock read per pull, nothing allocated per message.
//!
//! A subscriber cannot know when to stop until the publishers are done: the
//! main thread then tells it how many messages its topics were sent
//! (`target`). It stops when it has them all, when nothing has come for
//! [`DRAIN_TIMEOUT`] after that (what is missing is then reported as lost),
//! or when the run is called off.

use crate::layout::Layout;
use crate::payload::Header;
use crate::report;
use crate::run::{Fault, Shared, Timeline, nanos};
use crate::verify::Tracker;
use courier::client::{Client, PullOptions};
use hdrhistogram::Histogram;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a subscriber waits for more once it knows what to expect.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long past the timeline's stop a subscriber keeps going at most,
/// target or not (publishers may still be finishing their last requests).
const OVERTIME: Duration = Duration::from_secs(120);

/// What one subscriber saw.
#[derive(Debug)]
pub struct Outcome {
    pub tracker: Tracker,
    /// End to end, per message, nanoseconds; measured window only.
    pub latency: Histogram<u64>,
    pub measured: u64,
    pub measured_bytes: u64,
    pub last_ns: u64,
    pub pulls: u64,
}

/// One subscriber connection, registered and subscribed.
pub struct Subscriber {
    client: Client,
    index: usize,
    names: HashMap<String, usize>,
    tracker: Tracker,
}

impl Subscriber {
    /// Registers a new session on `client` and subscribes to `topics`
    /// (global index, name).
    pub fn subscribe(
        mut client: Client,
        index: usize,
        layout: Layout,
        mut topics: Vec<(usize, String)>,
    ) -> Result<Subscriber, String> {
        let failed = |e: courier::client::Error| format!("subscriber {index}: {e}");
        client.register_subscriber().map_err(failed)?;
        topics.sort();
        let mut offsets = Vec::with_capacity(topics.len());
        for (_, name) in &topics {
            offsets.push(client.subscribe(name).map_err(failed)?);
        }
        let names = topics
            .iter()
            .enumerate()
            .map(|(local, (_, name))| (name.clone(), local))
            .collect();
        let ids = topics.iter().map(|&(topic, _)| topic).collect();
        Ok(Subscriber {
            client,
            index,
            names,
            tracker: Tracker::new(layout, ids, offsets),
        })
    }

    /// Pulls until `target` messages have come (see the module doc).
    pub fn run(
        mut self,
        shared: &Shared,
        timeline: Timeline,
        target: &AtomicU64,
        depth: usize,
    ) -> Result<Outcome, Fault> {
        let options = PullOptions {
            topic: None,
            max_messages: courier::protocol::MAX_PULL_MESSAGES,
            max_bytes: u32::MAX,
            wait: Duration::from_millis(100),
            ack: false,
        };
        let mut pulls = self.client.pulls(options, depth);
        let clock = shared.clock;
        let give_up = clock.instant(timeline.stop_ns.saturating_add(nanos(OVERTIME)));
        let mut out = Outcome {
            tracker: self.tracker,
            latency: report::histogram(),
            measured: 0,
            measured_bytes: 0,
            last_ns: timeline.measure_ns,
            pulls: 0,
        };
        let mut last_arrival = Instant::now();
        let mut told = false;
        loop {
            let expected = target.load(Ordering::Acquire);
            let now = Instant::now();
            if expected != u64::MAX && !told {
                // The drain timeout runs from when the target is known.
                told = true;
                last_arrival = now;
            }
            let drained = told && now.duration_since(last_arrival) >= DRAIN_TIMEOUT;
            if out.tracker.received >= expected || drained || now >= give_up || shared.aborted() {
                break;
            }
            let batch = pulls.next_batch().map_err(|e| {
                Fault::Failed(format!("subscriber {}: pull failed: {e}", self.index))
            })?;
            out.pulls += 1;
            let done_ns = clock.now_ns();
            let measured = timeline.measured(done_ns);
            let mut count = 0u64;
            for group in batch.groups() {
                let len = group.payloads.len() as u64;
                count += len;
                let Some(&local) = self.names.get(group.topic.as_str()) else {
                    (0..len).for_each(|_| out.tracker.unreadable());
                    continue;
                };
                out.tracker.group(local, group.first_offset, len);
                for payload in &group.payloads {
                    let Some(header) = Header::read(payload) else {
                        out.tracker.unreadable();
                        continue;
                    };
                    out.tracker.message(local, header);
                    if measured {
                        out.latency
                            .saturating_record(done_ns.saturating_sub(header.sent_ns).max(1));
                        out.measured_bytes += payload.len() as u64;
                    }
                }
            }
            pulls.processed_batch(&batch);
            if count > 0 {
                last_arrival = Instant::now();
                if measured {
                    out.measured += count;
                    out.last_ns = done_ns;
                }
                if let Some(meter) = shared.meter(1) {
                    meter.add(count);
                }
            }
        }
        Ok(out)
    }
}
