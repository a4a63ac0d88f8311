//! `publisher`: create and delete topics, publish one message (an argument,
//! or a file's bytes), or publish every line of standard input.
//!
//! A `--file` is read whole, up to the broker's payload limit and no
//! further, so a file too large is refused without holding it all in memory.
//!
//! Standard input is read line by line into batches (up to 1000 lines or
//! 256 KiB, and within the broker's frame limit) that go out as
//! PUBLISH_BATCH on a [`Pipeline`] with several batches in flight, so a large
//! input costs a few hundred round trips' worth of time in total rather than
//! one per line. A batch is also sent as soon as no more input is buffered,
//! so lines typed at a terminal go out at once.
//!
//! A full topic needs nothing from the publisher: the broker holds a publish
//! until the topic has room and keeps one connection's publishes to a topic
//! in the order sent (PROTOCOL.md 3.3, 4.5), so the input simply streams, in
//! order, at the pace the subscribers acknowledge. `TOPIC_FULL` arrives only
//! once the broker's `--publish-hold` has passed without room, and then it
//! is an error like any other: the lines before the refused batch were
//! stored, the refused batch and those after it were not.
//!
//! Lines are published as an idempotent producer (PROTOCOL.md 4.21): under
//! `--producer-id` (else a random id per run), each line numbered by its
//! line number. A lost connection is not the end: the publisher connects
//! again with back-off (`client::Reconnect`) and resends every batch that
//! was not answered, as it was; the broker answers those it already stored
//! with their original offsets and stores the others, so each line is
//! stored exactly once. Run again with the same id and the same input
//! after a crash, it is exactly-once too: the stored lines are answered,
//! not stored again (a batch whose head was stored stores only its tail).

mod cli;

use cli::{Failure, Program, replay};
use courier::ErrorCode;
use courier::client::{Client, Completion, Pipeline, Published, Reconnect, Retention, ServerInfo};
use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, BufRead, BufReader, IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use std::time::Instant;

const PROGRAM: Program = Program {
    name: "publisher",
    usage: "usage: publisher [--broker HOST[:PORT]] (--create TOPIC [--retain AGE] [--retain-bytes SIZE] | --delete TOPIC | --publish TOPIC [MESSAGE | --file PATH | - [--producer-id NAME] [--reconnect SECS]])",
    help: "\
publisher: create and delete topics and publish messages on a courier broker

usage: publisher [--broker HOST[:PORT]] (--create TOPIC [--retain AGE] [--retain-bytes SIZE] | --delete TOPIC | --publish TOPIC [MESSAGE | --file PATH | -])

Exactly one of:
  --create TOPIC           create a topic (names: 1 to 255 of A-Z a-z 0-9 . _ -)
      --retain AGE         keep its messages for AGE (24h, 7d, 30m), whether
                           or not anyone acknowledged them; a topic without
                           it keeps a message only until every subscriber
                           acknowledged it
      --retain-bytes SIZE  keep at most SIZE of payload (1G, 512M), oldest
                           dropped first; with --retain, both bounds hold
  --delete TOPIC           delete a topic and every message it still holds
  --publish TOPIC MESSAGE  publish MESSAGE to TOPIC and print its offset
  --publish TOPIC --file PATH
                           publish the bytes of the file PATH, exactly, as one
                           message (binary-safe); PATH '-' is all of standard
                           input as one message
  --publish TOPIC [-]      publish each line of standard input (without its
                           newline) as one message, in batches with several in
                           flight; prints a summary at the end. At a terminal,
                           type one message per line and end with Ctrl-D
      --producer-id NAME   the durable producer id that numbers the lines (1 to
                           255 bytes; default: a random one per run)
      --reconnect SECS     on a lost connection, reconnect and resend for up to
                           SECS seconds (decimals allowed; 0 exits) [default: 60]

Options:
  --broker HOST[:PORT]     the broker to use (default: $BROKER_ADDR if set,
                           else localhost:5555; the port defaults to 5555)
  --tls                    speak TLS (verifying the broker's certificate)
  --ca PEM                 trust these CA certificates (default: the system's)
  --user NAME              user, for a broker with --users ($COURIER_USER)
  --token TOKEN            that user's token ($COURIER_TOKEN)
  -h, --help               print this help
  -V, --version            print the version

A MESSAGE that starts with '-' goes after '--':  publisher --publish t -- -42

A message (MESSAGE, a --file, or a line) may be at most the broker's payload
limit: its --max-frame-bytes less 512 bytes (1048064 bytes by default).

When the topic is full (its subscribers have not acknowledged enough), the
broker holds the publisher's messages until there is room, so lines are
stored in input order at the pace the subscribers keep. Only if the topic
stays full for the broker's --publish-hold (5 s by default) does the
publisher stop with an error (TOPIC_FULL): everything before the refused
batch was stored, nothing from it on.

Lines of standard input are numbered (line N is seq N) under a producer id:
--producer-id NAME, else a random one per run. If the connection to the
broker is lost, the publisher connects again with back-off for up to
--reconnect SECS (default 60; 0: exit at once) and resends what was not
answered; the broker stores each line once. After a crash, running again
with the same --producer-id and the same input publishes each line exactly
once: those already stored are not stored again.

Exit status: 0 on success, 1 if the broker or the connection failed (or a
--file could not be read), 2 for bad arguments, 3 when standard input held
no lines (nothing was published).
",
};

/// Batches in flight at once.
const DEPTH: usize = 8;
const BATCH_LINES: usize = 1000;
const BATCH_BYTES: usize = 256 * 1024;

fn main() -> ExitCode {
    PROGRAM.main(run)
}

enum Action {
    Create(String, Retention),
    Delete(String),
    Publish(String, Source),
}

/// What `--publish` sends.
enum Source {
    /// The MESSAGE argument.
    Message(Vec<u8>),
    /// `--file PATH`, opened before connecting so a typo fails first.
    File(PathBuf, File),
    /// `--file -`: all of standard input, one message.
    Stdin,
    /// Each line of standard input, one message each.
    Lines,
}

/// How a run from standard input publishes: as which producer, and how long
/// it tries to come back after a lost connection.
struct Resume {
    producer: Option<String>,
    reconnect: Duration,
}

/// Longest `--reconnect`: a year.
const MAX_RECONNECT_SECS: f64 = 31_536_000.0;

fn parse(
    mut args: pico_args::Arguments,
    literal: Vec<OsString>,
) -> Result<(String, Action, Resume), Failure> {
    let broker = cli::broker_addr(&mut args)?;
    let producer: Option<String> = args.opt_value_from_str("--producer-id")?;
    if producer
        .as_ref()
        .is_some_and(|p| p.is_empty() || p.len() > courier::protocol::MAX_PRODUCER_ID_BYTES)
    {
        return Err(Failure::usage("--producer-id: give 1 to 255 bytes"));
    }
    let reconnect = cli::number(&mut args, "--reconnect", 0.0..=MAX_RECONNECT_SECS)?
        .map_or(Duration::from_secs(60), Duration::from_secs_f64);
    let resume = Resume {
        producer,
        reconnect,
    };
    let create = args.opt_value_from_str("--create")?;
    let retain_ms = args
        .opt_value_from_str::<_, String>("--retain")?
        .map(|text| replay::retain_ms("--retain", &text))
        .transpose()?;
    let retain_bytes = args
        .opt_value_from_str::<_, String>("--retain-bytes")?
        .map(|text| replay::size("--retain-bytes", &text))
        .transpose()?;
    let retention = match (retain_ms, retain_bytes) {
        (None, None) => Retention::UntilAcked,
        (ms, bytes) => Retention::Keep {
            retain_ms: ms.unwrap_or(0),
            retain_bytes: bytes.unwrap_or(0),
        },
    };
    let delete = args.opt_value_from_str("--delete")?;
    let publish = args.opt_value_from_str("--publish")?;
    let file: Option<PathBuf> = args.opt_value_from_os_str("--file", |s| {
        Ok::<_, std::convert::Infallible>(PathBuf::from(s))
    })?;
    let mut free = cli::free_arguments(args, literal)?.into_iter();
    let message = free.next();
    if let Some(extra) = free.next() {
        return Err(Failure::usage(format!(
            "unexpected argument '{}' (quote a message that has spaces)",
            extra.to_string_lossy()
        )));
    }
    if retention != Retention::UntilAcked && create.is_none() {
        return Err(Failure::usage(
            "--retain and --retain-bytes need --create TOPIC",
        ));
    }
    let action = match (create, delete, publish) {
        (Some(topic), None, None) => Action::Create(topic, retention),
        (None, Some(topic), None) => Action::Delete(topic),
        (None, None, Some(topic)) => {
            let source = match (message, file) {
                (Some(_), Some(_)) => {
                    return Err(Failure::usage("give a MESSAGE or --file, not both"));
                }
                (Some(message), None) if message != "-" => {
                    Source::Message(message.into_encoded_bytes())
                }
                (_, None) => Source::Lines,
                (None, Some(path)) if path.as_os_str() == "-" => Source::Stdin,
                (None, Some(path)) => match File::open(&path) {
                    Ok(file) => Source::File(path, file),
                    Err(e) => return Err(unreadable(&path, &e)),
                },
            };
            if resume.producer.is_some() && !matches!(source, Source::Lines) {
                return Err(Failure::usage(
                    "--producer-id numbers the lines of standard input: not with a MESSAGE or --file",
                ));
            }
            return Ok((broker, Action::Publish(topic, source), resume));
        }
        (None, None, None) => {
            return Err(Failure::usage(
                "nothing to do: give --create, --delete or --publish",
            ));
        }
        _ => {
            return Err(Failure::usage(
                "give only one of --create, --delete and --publish",
            ));
        }
    };
    if file.is_some() {
        return Err(Failure::usage("--file needs --publish TOPIC"));
    }
    if let Some(extra) = message {
        return Err(Failure::usage(format!(
            "unexpected argument '{}'",
            extra.to_string_lossy()
        )));
    }
    if resume.producer.is_some() {
        return Err(Failure::usage("--producer-id needs --publish TOPIC"));
    }
    Ok((broker, action, resume))
}

fn unreadable(path: &Path, e: &io::Error) -> Failure {
    Failure::runtime(format!(
        "cannot read '{}': {}",
        path.display(),
        courier::client::io_message(e)
    ))
}

fn run(args: pico_args::Arguments, literal: Vec<OsString>) -> Result<(), Failure> {
    let (broker, action, resume) = parse(args, literal)?;
    let mut client = cli::connect(&broker, "publisher")?;
    let producer = producer_id(resume.producer);
    if matches!(action, Action::Publish(_, Source::Lines)) {
        client.register_producer(&producer)?;
    } else {
        client.register_publisher()?;
    }
    let reconnect = resume.reconnect;
    match action {
        Action::Create(topic, retention) => {
            client
                .create_topic_with(&topic, retention)
                .map_err(|e| cli::topic_failure(&e, &topic))?;
            cli::print_line(format_args!("created topic {topic}"))?;
        }
        Action::Delete(topic) => {
            client
                .delete_topic(&topic)
                .map_err(|e| cli::topic_failure(&e, &topic))?;
            cli::print_line(format_args!("deleted topic {topic}"))?;
        }
        Action::Publish(topic, Source::Message(message)) => {
            let published = publish_one(&mut client, &topic, &message)?;
            cli::print_line(format_args!(
                "published to {topic} (offset {}, {})",
                published.offset,
                plural(published.subscribers, "subscriber")
            ))?;
        }
        Action::Publish(topic, Source::File(path, file)) => {
            let limit = client.server_info().max_payload_bytes;
            let payload = read_whole(file, limit).map_err(|e| match e {
                Whole::TooLarge => too_large(&format!("file '{}'", path.display()), limit),
                Whole::Io(e) => unreadable(&path, &e),
            })?;
            publish_whole(&mut client, &topic, &payload)?;
        }
        Action::Publish(topic, Source::Stdin) => {
            if io::stdin().is_terminal() {
                cli::note("publisher: reading one message from standard input until Ctrl-D");
            }
            let limit = client.server_info().max_payload_bytes;
            let payload = read_whole(io::stdin().lock(), limit).map_err(|e| match e {
                Whole::TooLarge => too_large("standard input", limit),
                Whole::Io(e) => Failure::runtime(format!(
                    "cannot read standard input: {}",
                    courier::client::io_message(&e)
                )),
            })?;
            publish_whole(&mut client, &topic, &payload)?;
        }
        Action::Publish(topic, Source::Lines) => {
            if io::stdin().is_terminal() {
                cli::note(
                    "publisher: reading messages from standard input, one per line, until Ctrl-D",
                );
            }
            let start = Instant::now();
            let input = BufReader::with_capacity(BATCH_BYTES, io::stdin().lock());
            let comeback = Comeback {
                broker: &broker,
                producer_id: &producer,
                policy: Reconnect {
                    limit: reconnect,
                    ..Reconnect::default()
                },
            };
            let count = publish_lines(&mut client, &topic, input, &comeback)?;
            if count == 0 {
                return Err(Failure::NothingLeft(
                    "no messages on stdin; nothing published".into(),
                ));
            }
            let seconds = start.elapsed().as_secs_f64();
            cli::print_line(format_args!(
                "published {} to {topic} in {seconds:.2} s ({:.0} msg/s)",
                plural(count, "message"),
                count as f64 / seconds.max(1e-6)
            ))?;
        }
    }
    Ok(())
}

/// Why [`read_whole`] gave up.
enum Whole {
    TooLarge,
    Io(io::Error),
}

/// All of `input`, if it is at most `limit` bytes; reads no more than one
/// byte past the limit.
fn read_whole(input: impl Read, limit: u64) -> Result<Vec<u8>, Whole> {
    let mut payload = Vec::new();
    input
        .take(limit.saturating_add(1))
        .read_to_end(&mut payload)
        .map_err(Whole::Io)?;
    if payload.len() as u64 > limit {
        return Err(Whole::TooLarge);
    }
    Ok(payload)
}

fn too_large(what: &str, limit: u64) -> Failure {
    Failure::runtime(format!(
        "{what} is over the broker's limit of {limit} bytes per message"
    ))
}

fn publish_whole(client: &mut Client, topic: &str, payload: &[u8]) -> Result<(), Failure> {
    let published = publish_one(client, topic, payload)?;
    cli::print_line(format_args!(
        "published {} to {topic} (offset {}, {})",
        plural(payload.len() as u64, "byte"),
        published.offset,
        plural(published.subscribers, "subscriber")
    ))
}

fn plural(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

fn publish_one(client: &mut Client, topic: &str, payload: &[u8]) -> Result<Published, Failure> {
    client
        .send(topic, payload)
        .map_err(|e| cli::topic_failure(&e, topic))
}

/// Lines of input gathered into one batch.
#[derive(Default)]
struct Lines {
    data: Vec<u8>,
    /// Where each line ends in `data`.
    ends: Vec<usize>,
}

impl Lines {
    fn slices(&self) -> Vec<&[u8]> {
        let mut start = 0;
        self.ends
            .iter()
            .map(|&end| {
                let line = &self.data[start..end];
                start = end;
                line
            })
            .collect()
    }
}

/// How big a batch may be. Within the frame limit, or the broker could not
/// take it; and within a quarter of the topic's backlog bounds, so a held
/// batch fits as soon as subscribers catch up a little.
struct BatchLimits {
    payload_bytes: usize,
    batch_lines: usize,
    batch_bytes: usize,
}

impl BatchLimits {
    fn new(info: &ServerInfo) -> BatchLimits {
        let size = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        BatchLimits {
            payload_bytes: size(info.max_payload_bytes),
            batch_lines: BATCH_LINES.min(size(info.max_backlog_messages / 4)).max(1),
            // Room for the request around the payloads, and 5 bytes of
            // header each.
            batch_bytes: BATCH_BYTES
                .min(size(info.max_frame_bytes).saturating_sub(1024))
                .min(size(info.max_backlog_bytes / 4)),
        }
    }
}

/// How a `--publish TOPIC` run from standard input comes back after a lost
/// connection: as the same producer, for up to `policy.limit`.
struct Comeback<'a> {
    broker: &'a str,
    producer_id: &'a str,
    policy: Reconnect,
}

/// A batch sent and not yet answered, kept to be sent again, as it was,
/// after a reconnect: the broker stores each seq once.
struct Sent {
    first_seq: u64,
    lines: Lines,
}

/// Standard input, read line by line into batches.
struct Input<R> {
    input: BufReader<R>,
    current: Lines,
    next: Lines,
    line_number: u64,
    ended: bool,
    /// `current` holds a line that must go without waiting for more (it
    /// overflowed the last batch while no more input was buffered).
    flush_current: bool,
}

/// The batches of one `--publish TOPIC` run from standard input: numbered
/// by line (the first line is seq 1) under the run's producer id.
struct Run<'t> {
    topic: &'t str,
    limits: BatchLimits,
    /// Sent and unanswered, oldest first (replies come in order: one topic,
    /// one connection).
    window: VecDeque<Sent>,
    /// The seq of the next line to be batched.
    next_seq: u64,
    published: u64,
}

/// Why one connection's run ended early.
enum Stop {
    Lost(courier::client::Error),
    Failed(Failure),
}

fn publish_lines<R: Read>(
    client: &mut Client,
    topic: &str,
    input: BufReader<R>,
    comeback: &Comeback<'_>,
) -> Result<u64, Failure> {
    let mut run = Run {
        topic,
        limits: BatchLimits::new(client.server_info()),
        window: VecDeque::new(),
        next_seq: 1,
        published: 0,
    };
    let mut input = Input {
        input,
        current: Lines::default(),
        next: Lines::default(),
        line_number: 0,
        ended: false,
        flush_current: false,
    };
    let give_up = |run: &Run<'_>, e: &courier::client::Error| {
        Failure::runtime(format!(
            "{e}; {} acknowledged before the connection was lost (the rest were not stored)",
            plural(run.published, "line")
        ))
    };
    loop {
        let outcome = {
            let mut pipeline = client.pipeline(DEPTH);
            run.on_connection(&mut pipeline, &mut input)
        };
        match outcome {
            Ok(()) => return Ok(run.published),
            Err(Stop::Failed(failure)) => return Err(failure),
            Err(Stop::Lost(e)) if comeback.policy.limit.is_zero() => {
                return Err(give_up(&run, &e));
            }
            Err(Stop::Lost(e)) => {
                cli::note(format_args!(
                    "publisher: {e}; reconnecting for up to {} s to resend {}",
                    comeback.policy.limit.as_secs_f64(),
                    plural(run.window.len() as u64, "unanswered batch")
                ));
                let options = cli::client_options("publisher");
                *client = Client::reconnect_producer(
                    comeback.broker,
                    &options,
                    comeback.producer_id,
                    &comeback.policy,
                )
                .map_err(|e| give_up(&run, &e))?;
                cli::note("publisher: reconnected; resending");
            }
        }
    }
}

impl<R: Read> Input<R> {
    /// The next batch of lines, or `None` at the end of input; `idle` when
    /// no more input is buffered (reading on may block: what was batched
    /// should go now).
    fn next_batch(&mut self, limits: &BatchLimits) -> Result<Option<(Lines, bool)>, Failure> {
        if self.ended {
            return Ok(None);
        }
        if std::mem::take(&mut self.flush_current) && !self.current.ends.is_empty() {
            return Ok(Some((std::mem::take(&mut self.current), true)));
        }
        loop {
            let current = &mut self.current;
            let start = current.data.len();
            let read = self
                .input
                .read_until(b'\n', &mut current.data)
                .map_err(|e| Failure::runtime(format!("cannot read standard input: {e}")))?;
            if read == 0 {
                self.ended = true;
                if current.ends.is_empty() {
                    return Ok(None);
                }
                return Ok(Some((std::mem::take(current), true)));
            }
            self.line_number += 1;
            if current.data.last() == Some(&b'\n') {
                current.data.pop();
            }
            let len = current.data.len() - start;
            if len > limits.payload_bytes {
                return Err(Failure::runtime(format!(
                    "line {} is {len} bytes, over the broker's limit of {} bytes per message",
                    self.line_number, limits.payload_bytes
                )));
            }
            let encoded = current.data.len() + 5 * (current.ends.len() + 1);
            if encoded > limits.batch_bytes && !current.ends.is_empty() {
                // This line starts the next batch.
                self.next.data.extend_from_slice(&current.data[start..]);
                current.data.truncate(start);
                std::mem::swap(&mut self.current, &mut self.next);
                self.current.ends.push(self.current.data.len());
                let alone = self.current.data.len() + 5;
                self.flush_current = self.input.buffer().is_empty() || alone >= limits.batch_bytes;
                return Ok(Some((std::mem::take(&mut self.next), false)));
            }
            current.ends.push(current.data.len());
            let idle = self.input.buffer().is_empty();
            if current.ends.len() >= limits.batch_lines || encoded >= limits.batch_bytes || idle {
                return Ok(Some((std::mem::take(current), idle)));
            }
        }
    }
}

impl Run<'_> {
    /// Sends what the last connection left unanswered, then the rest of the
    /// input, on one connection; `Ok` once everything is answered.
    fn on_connection<R: Read>(
        &mut self,
        pipeline: &mut Pipeline<'_>,
        input: &mut Input<R>,
    ) -> Result<(), Stop> {
        for sent in &self.window {
            send(pipeline, self.topic, sent).map_err(|e| self.stop(e))?;
        }
        self.take_completions(pipeline)?;
        while let Some((lines, idle)) = input.next_batch(&self.limits).map_err(Stop::Failed)? {
            let sent = Sent {
                first_seq: self.next_seq,
                lines,
            };
            self.next_seq += sent.lines.ends.len() as u64;
            // Kept before it is sent: if sending fails, it goes again.
            self.window.push_back(sent);
            if let Some(sent) = self.window.back() {
                send(pipeline, self.topic, sent).map_err(|e| self.stop(e))?;
            }
            if idle {
                pipeline.flush().map_err(|e| self.stop(e))?;
            }
            self.take_completions(pipeline)?;
        }
        // A connection failure also shows up in the completions, where it
        // keeps the batches it cut off in the window.
        let _ = pipeline.wait_all();
        self.take_completions(pipeline)?;
        match self.window.is_empty() {
            true => Ok(()),
            false => Err(Stop::Lost(courier::client::Error::ConnectionClosed)),
        }
    }

    /// Counts what was stored (a DUPLICATE_SEQUENCE was stored before: it
    /// counts too); a lost connection keeps the unanswered batches for the
    /// next one; any other refusal ends the run.
    fn take_completions(&mut self, pipeline: &mut Pipeline<'_>) -> Result<(), Stop> {
        let done: Vec<Completion> = pipeline.completions().collect();
        for completion in done {
            match completion.result {
                Err(e) if e.is_connection_lost() => return Err(Stop::Lost(e)),
                Err(e) if e.code() != Some(ErrorCode::DuplicateSequence) => {
                    return Err(Stop::Failed(self.failure(&e)));
                }
                _ => {
                    self.window.pop_front();
                    self.published += u64::from(completion.messages);
                }
            }
        }
        Ok(())
    }

    fn stop(&self, e: courier::client::Error) -> Stop {
        if e.is_connection_lost() {
            Stop::Lost(e)
        } else {
            Stop::Failed(self.failure(&e))
        }
    }

    fn failure(&self, e: &courier::client::Error) -> Failure {
        match cli::topic_failure(e, self.topic) {
            Failure::Runtime(message) if self.published > 0 => Failure::runtime(format!(
                "{message} (after publishing {} messages)",
                self.published
            )),
            other => other,
        }
    }
}

/// Queues one numbered batch (the pipeline copies it).
fn send(
    pipeline: &mut Pipeline<'_>,
    topic: &str,
    sent: &Sent,
) -> Result<u64, courier::client::Error> {
    pipeline.send_batch_seq(topic, &sent.lines.slices(), sent.first_seq)
}

/// `--producer-id`, or a random one for this run.
fn producer_id(given: Option<String>) -> String {
    given.unwrap_or_else(|| {
        let mut bytes = [0u8; 8];
        // Without randomness, the time and the process id still make a
        // run's id its own.
        if getrandom::fill(&mut bytes).is_err() {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            bytes = (now ^ u64::from(std::process::id())).to_le_bytes();
        }
        format!("publisher-{:016x}", u64::from_le_bytes(bytes))
    })
}
