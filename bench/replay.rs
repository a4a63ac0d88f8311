//! `replay`: read a retained topic of N messages from the start.
//!
//! A publisher fills a retained topic (CREATE_TOPIC with a retention
//! policy, no subscriber) with N messages, pipelined in batches; then the
//! topic is read back twice from offset 0 and timed: by a subscriber
//! subscribed from `earliest` (pulls, acknowledged as it goes), and by FETCH
//! (no session). Each read checks every message: offsets consecutive from
//! 0, and the payload carrying its own index, so a run that loses,
//! duplicates or reorders anything fails. With an in-process broker the
//! messages are in its memory; against a `--broker` with a disk backlog
//! they are read from wherever it keeps them.

use crate::args::Options;
use crate::broker::Broker;
use crate::report::{Operation, Report};
use crate::run::Failure;
use courier::client::{Client, Position, PullOptions, Retention};
use std::time::{Duration, Instant};

/// The most one pull or fetch asks for: a frame's worth.
const READ_MESSAGES: u32 = 65_536;

pub fn run(o: &Options, broker: &Broker) -> Result<Report, Failure> {
    let messages = o.messages.unwrap_or(100_000);
    if o.size < 8 {
        return Err(Failure::Usage(
            "--size must be at least 8 for replay".into(),
        ));
    }
    let topic = format!("bench-replay-{}", std::process::id());
    let connect = |name: &str| {
        Client::connect_with(
            broker.addr(),
            courier::client::ClientOptions {
                name: name.to_owned(),
                ..Default::default()
            },
        )
        .map_err(|e| format!("cannot connect to {}: {e}", broker.addr()))
    };
    let mut publisher = connect("bench-replay-pub")?;
    publisher
        .register_publisher()
        .map_err(|e| format!("cannot register: {e}"))?;
    let keep_all = Retention::Keep {
        retain_ms: 0,
        retain_bytes: 0,
    };
    publisher
        .create_topic_with(&topic, keep_all)
        .map_err(|e| format!("cannot create {topic}: {e}"))?;
    fill(&mut publisher, &topic, messages, o)?;

    let mut subscriber = connect("bench-replay-sub")?;
    subscriber
        .register_subscriber()
        .map_err(|e| format!("cannot register: {e}"))?;
    let start = Instant::now();
    subscriber
        .subscribe_from(&topic, Position::Earliest)
        .map_err(|e| format!("cannot subscribe: {e}"))?;
    let (pulled, pulled_bytes, pull_problem) = replay_pulls(&mut subscriber, &topic, messages, o)?;
    let pull_elapsed = start.elapsed();

    let mut reader = connect("bench-replay-fetch")?;
    let start = Instant::now();
    let (fetched, fetched_bytes, fetch_problem) = replay_fetch(&mut reader, &topic, messages)?;
    let fetch_elapsed = start.elapsed();
    let _ = publisher.delete_topic(&topic);

    let mut report = Report::new(o.scenario.name(), "replay");
    report.param("broker", broker.addr());
    report.param("in_process", broker.in_process());
    report.param("messages", messages);
    report.param("size", o.size);
    report.param("batch", o.batch);
    report.param("pipeline", o.pipeline);
    report.param("pull_depth", o.pull_depth);
    report
        .operations
        .push(read_operation("replay", pulled, pulled_bytes, pull_elapsed));
    report.operations.push(read_operation(
        "fetch",
        fetched,
        fetched_bytes,
        fetch_elapsed,
    ));
    report.count("replayed", pulled);
    report.count("fetched", fetched);
    report.problems.extend(pull_problem);
    report.problems.extend(fetch_problem);
    Ok(report)
}

fn read_operation(name: &'static str, count: u64, bytes: u64, elapsed: Duration) -> Operation {
    Operation {
        name,
        unit: "msgs",
        count,
        requests: None,
        bytes: Some(bytes),
        elapsed,
        latency: None,
        latency_of: "",
    }
}

/// Publishes `messages` payloads of `o.size` bytes, each starting with its
/// index, in batches of `o.batch` with `o.pipeline` in flight.
fn fill(client: &mut Client, topic: &str, messages: u64, o: &Options) -> Result<(), Failure> {
    let batch = o.batch.max(1) as u64;
    let mut payloads: Vec<Vec<u8>> = Vec::with_capacity(batch as usize);
    let mut pipeline = client.pipeline(o.pipeline);
    let mut next = 0;
    while next < messages {
        payloads.clear();
        let end = (next + batch).min(messages);
        for index in next..end {
            let mut payload = vec![0xa5; o.size];
            payload[..8].copy_from_slice(&index.to_le_bytes());
            payloads.push(payload);
        }
        let slices: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
        pipeline
            .send_batch(topic, &slices)
            .map_err(|e| format!("cannot publish: {e}"))?;
        for done in pipeline.completions() {
            done.result.map_err(|e| format!("a publish failed: {e}"))?;
        }
        next = end;
    }
    for done in pipeline.finish() {
        done.result.map_err(|e| format!("a publish failed: {e}"))?;
    }
    Ok(())
}

/// Checks one read message against what [`fill`] published at `expected`.
fn check(offset: u64, payload: &[u8], expected: u64, size: usize) -> Option<String> {
    let index = payload
        .get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_le_bytes);
    if offset != expected || index != Some(expected) || payload.len() != size {
        return Some(format!(
            "expected message {expected}, read offset {offset} holding {index:?} ({} bytes)",
            payload.len()
        ));
    }
    None
}

/// Pulls everything from the start; returns messages, bytes, and the first
/// problem seen.
fn replay_pulls(
    client: &mut Client,
    topic: &str,
    messages: u64,
    o: &Options,
) -> Result<(u64, u64, Option<String>), Failure> {
    let options = PullOptions {
        topic: Some(topic.to_owned()),
        max_messages: READ_MESSAGES,
        max_bytes: u32::MAX,
        wait: Duration::from_secs(5),
        ack: false,
    };
    let mut pulls = client.pulls(options, o.pull_depth.max(1));
    let (mut read, mut bytes) = (0u64, 0u64);
    while read < messages {
        let batch = pulls
            .next_batch()
            .map_err(|e| format!("a pull failed: {e}"))?;
        if batch.is_empty() {
            return Ok((
                read,
                bytes,
                Some(format!("the replay stopped after {read} messages")),
            ));
        }
        for message in batch.iter() {
            if let Some(problem) = check(message.offset, message.payload, read, o.size) {
                return Ok((read, bytes, Some(problem)));
            }
            read += 1;
            bytes += message.payload.len() as u64;
        }
        pulls.processed_batch(&batch);
    }
    pulls
        .acknowledge()
        .map_err(|e| format!("an ack failed: {e}"))?;
    Ok((read, bytes, None))
}

/// FETCHes everything from offset 0.
fn replay_fetch(
    client: &mut Client,
    topic: &str,
    messages: u64,
) -> Result<(u64, u64, Option<String>), Failure> {
    let (mut read, mut bytes, mut offset) = (0u64, 0u64, 0u64);
    while read < messages {
        let fetched = client
            .fetch(topic, offset, READ_MESSAGES, u32::MAX)
            .map_err(|e| format!("a fetch failed: {e}"))?;
        if fetched.messages.is_empty() {
            return Ok((
                read,
                bytes,
                Some(format!("the fetch stopped after {read} messages")),
            ));
        }
        for message in &fetched.messages {
            let size = message.payload.len();
            if let Some(problem) = check(message.offset, &message.payload, read, size.max(8)) {
                return Ok((read, bytes, Some(problem)));
            }
            read += 1;
            bytes += size as u64;
        }
        offset = fetched.next_offset;
    }
    Ok((read, bytes, None))
}
