//! `replay`: read a retained topic of N messages from the start.
//!
//! A publisher fills a retained topic (CREATE_TOPIC with a retention
//! policy, no subscriber) with N messages, pipelined in batches; then the
//! topic is read back from offset 0 and timed: by a subscriber subscribed
//! from `earliest` (pulls, acknowledged as it goes), and by FETCH (no
//! session). Each read checks every message: offsets consecutive from 0,
//! and the payload carrying its own index, so a run that loses, duplicates
//! or reorders anything fails.
//!
//! Where the messages come from:
//! - the in-process broker, memory-only (the default): its memory;
//! - `--cache-bytes SIZE`: an in-process durable broker with that memory
//!   cache, filled far beyond it, so all but the newest cache's worth is
//!   read back from its log. Its files were just written, so the first
//!   reads (`replay`, `fetch`) come from the page cache. Then the log's
//!   files are read sequentially (`log_read`), the page cache is dropped
//!   (see `crate::disk`; it needs root) and the reads are timed again from
//!   a cold cache: the files alone (`log_read_cold`, the disk's own
//!   sequential speed), the subscription (`replay_cold`), FETCH
//!   (`fetch_cold`) and the files again (`log_read_cold_again`, see
//!   [`cold`] for why), the cache dropped before each. When the kernel refuses
//!   the drop, a note says so and the cold reads are not measured. STATS
//!   `disk_reads` and `disk_messages_read` before and after each read say
//!   how many of its messages came from the log; a read that read none
//!   fails the run;
//! - a `--broker`: wherever it keeps them.

use crate::args::Options;
use crate::broker::Broker;
use crate::disk::{self, Dropped};
use crate::report::{Operation, Report};
use crate::run::Failure;
use courier::client::{Client, Position, PullOptions, Retention};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The most one pull or fetch asks for: a frame's worth.
const READ_MESSAGES: u32 = 65_536;
/// A from-disk replay shorter than this many caches reads too much of
/// itself from memory to be called one; it gets a note.
const CACHES_BEHIND: u64 = 10;

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

    let mut report = Report::new(o.scenario.name(), "replay");
    report.param("broker", broker.addr());
    report.param("in_process", broker.in_process());
    report.param("messages", messages);
    report.param("size", o.size);
    report.param("batch", o.batch);
    report.param("pipeline", o.pipeline);
    report.param("pull_depth", o.pull_depth);
    let log = broker.data_dir().filter(|_| o.from_disk);
    if log.is_some() {
        let sync = o.fsync.unwrap_or(courier::storage::SyncMode::Always);
        report.param("cache_bytes", o.cache_bytes as u64);
        report.param("fsync", format!("{sync:?}").to_lowercase());
        report.param("source", "log, files in the page cache, then cold");
        let evicted = stats(&mut publisher)?.messages_evicted;
        report.count("messages_evicted", evicted);
        let caches = (messages * o.size as u64) / o.cache_bytes.max(1) as u64;
        if caches < CACHES_BEHIND {
            report.notes.push(format!(
                "the topic is only {caches} caches long: much of the replay is from memory"
            ));
        }
    }

    let reads = Reads {
        connect: &connect,
        topic: &topic,
        messages,
        o,
    };
    for kind in [&REPLAY, &FETCH] {
        reads
            .timed(&mut publisher, kind)?
            .record(&mut report, log.is_some());
    }
    if let Some(dir) = log {
        cold(&reads, &mut publisher, dir, &mut report)?;
    }
    let _ = publisher.delete_topic(&topic);
    Ok(report)
}

/// The log's files read sequentially warm, then, each from a dropped page
/// cache: the files, the subscription, FETCH, and the files again. The
/// files are read cold before and after the replays because the disk of a
/// virtual machine may be an image the host caches: the first cold read can
/// be slower than the later ones, which then meet the host's cache. The
/// replays are compared with the faster of the two.
fn cold(reads: &Reads, admin: &mut Client, dir: &Path, report: &mut Report) -> Result<(), Failure> {
    enum Step {
        Files(&'static str),
        Read(&'static Kind),
    }
    let files = log_files(dir)?;
    report.count("log_bytes", files.iter().map(|(_, len)| len).sum());
    let files: Vec<PathBuf> = files.into_iter().map(|(path, _)| path).collect();
    let warm = disk::read_sequentially(&files)?;
    report.operations.push(warm.operation("log_read"));
    let (mut disk_rate, mut read_rates) = (0.0f64, Vec::new());
    for step in [
        Step::Files("log_read_cold"),
        Step::Read(&REPLAY_COLD),
        Step::Read(&FETCH_COLD),
        Step::Files("log_read_cold_again"),
    ] {
        if let Dropped::Refused(reason) = disk::drop_page_cache(&files)? {
            report.notes.push(format!(
                "the reads from a cold cache: not measured: {reason}"
            ));
            return Ok(());
        }
        match step {
            Step::Files(name) => {
                let read = disk::read_sequentially(&files)?;
                disk_rate = disk_rate.max(rate(read.bytes, read.elapsed).unwrap_or(0.0));
                report.operations.push(read.operation(name));
            }
            Step::Read(kind) => {
                let read = reads.timed(admin, kind)?;
                read_rates.push((kind.name, rate(read.bytes, read.elapsed)));
                read.record(report, true);
            }
        }
    }
    for (name, read_rate) in read_rates {
        if let Some(read_rate) = read_rate.filter(|_| disk_rate > 0.0) {
            report.notes.push(format!(
                "{name} ran at {:.2}x the disk's sequential read of the same files \
                 (the faster cold read, {:.0} MB/s)",
                read_rate / disk_rate,
                disk_rate / 1e6
            ));
        }
    }
    Ok(())
}

fn rate(bytes: u64, elapsed: Duration) -> Option<f64> {
    let secs = elapsed.as_secs_f64();
    (secs > 0.0).then(|| bytes as f64 / secs)
}

/// The log's segment files in order, with their lengths.
fn log_files(dir: &Path) -> Result<Vec<(PathBuf, u64)>, Failure> {
    let failed = |e: std::io::Error| {
        format!(
            "cannot list the log in {}: {}",
            dir.display(),
            courier::client::io_message(&e)
        )
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(failed)? {
        let entry = entry.map_err(failed)?;
        let path = entry.path();
        if path.extension().is_some_and(|x| x == "log") {
            files.push((path, entry.metadata().map_err(failed)?.len()));
        }
    }
    files.sort();
    Ok(files)
}

#[derive(Debug, Clone, Copy)]
enum Source {
    Subscription,
    Fetch,
}

/// One of the timed reads, and the names it is reported under.
struct Kind {
    source: Source,
    /// The operation.
    name: &'static str,
    /// The count of messages read, for the first two reads.
    total: Option<&'static str>,
    /// STATS `disk_reads` (range reads of the log) meanwhile.
    disk_reads: &'static str,
    /// STATS `disk_messages_read` meanwhile: the messages those read.
    disk_messages: &'static str,
}

const REPLAY: Kind = Kind {
    source: Source::Subscription,
    name: "replay",
    total: Some("replayed"),
    disk_reads: "replay_disk_reads",
    disk_messages: "replay_disk_messages",
};
const FETCH: Kind = Kind {
    source: Source::Fetch,
    name: "fetch",
    total: Some("fetched"),
    disk_reads: "fetch_disk_reads",
    disk_messages: "fetch_disk_messages",
};
const REPLAY_COLD: Kind = Kind {
    source: Source::Subscription,
    name: "replay_cold",
    total: None,
    disk_reads: "replay_cold_disk_reads",
    disk_messages: "replay_cold_disk_messages",
};
const FETCH_COLD: Kind = Kind {
    source: Source::Fetch,
    name: "fetch_cold",
    total: None,
    disk_reads: "fetch_cold_disk_reads",
    disk_messages: "fetch_cold_disk_messages",
};

/// What one timed read needs.
struct Reads<'a> {
    connect: &'a dyn Fn(&str) -> Result<Client, String>,
    topic: &'a str,
    messages: u64,
    o: &'a Options,
}

/// One timed read of the whole topic.
#[derive(Clone)]
struct Timed {
    kind: &'static Kind,
    messages: u64,
    bytes: u64,
    elapsed: Duration,
    /// The broker's range reads of its log meanwhile, and the messages
    /// they read.
    disk_reads: u64,
    disk_messages: u64,
    problem: Option<String>,
}

impl Reads<'_> {
    /// Reads the whole topic from `source`, timed from the subscription or
    /// the first fetch on, and counts what the broker read from its log
    /// meanwhile (STATS through `admin`).
    fn timed(&self, admin: &mut Client, kind: &'static Kind) -> Result<Timed, Failure> {
        let before = stats(admin)?;
        let (messages, bytes, problem, elapsed) = match kind.source {
            Source::Subscription => {
                let mut subscriber = (self.connect)("bench-replay-sub")?;
                subscriber
                    .register_subscriber()
                    .map_err(|e| format!("cannot register: {e}"))?;
                let start = Instant::now();
                subscriber
                    .subscribe_from(self.topic, Position::Earliest)
                    .map_err(|e| format!("cannot subscribe: {e}"))?;
                let (n, b, p) = replay_pulls(&mut subscriber, self.topic, self.messages, self.o)?;
                (n, b, p, start.elapsed())
            }
            Source::Fetch => {
                let mut reader = (self.connect)("bench-replay-fetch")?;
                let start = Instant::now();
                let (n, b, p) = replay_fetch(&mut reader, self.topic, self.messages)?;
                (n, b, p, start.elapsed())
            }
        };
        let after = stats(admin)?;
        Ok(Timed {
            kind,
            messages,
            bytes,
            elapsed,
            disk_reads: after.disk_reads.saturating_sub(before.disk_reads),
            disk_messages: after
                .disk_messages_read
                .saturating_sub(before.disk_messages_read),
            problem,
        })
    }
}

impl Timed {
    /// Its operation, its counts (the disk's only with a log) and its
    /// problems: with a log, a read that read nothing from it is one.
    fn record(self, report: &mut Report, log: bool) {
        report.operations.push(Operation {
            name: self.kind.name,
            unit: "msgs",
            count: self.messages,
            requests: None,
            bytes: Some(self.bytes),
            elapsed: self.elapsed,
            latency: None,
            latency_of: "",
        });
        if let Some(total) = self.kind.total {
            report.count(total, self.messages);
        }
        if log {
            report.count(self.kind.disk_reads, self.disk_reads);
            report.count(self.kind.disk_messages, self.disk_messages);
            // Only this read reads the log meanwhile.
            report.problem_if(u64::from(self.disk_reads == 0), |_| {
                format!("{} read nothing from the log", self.kind.name)
            });
        }
        report.problems.extend(self.problem);
    }
}

fn stats(client: &mut Client) -> Result<courier::protocol::Stats, Failure> {
    Ok(client
        .stats()
        .map_err(|e| format!("cannot read STATS: {e}"))?)
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
