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
//! A lost connection ends the run with the count of lines acknowledged. The
//! publisher does not reconnect and resend: a batch in flight when the
//! connection broke may or may not have been stored, and without idempotent
//! publishing (a later issue) resending it could store it twice.

mod cli;

use cli::{Failure, Program, replay};
use courier::client::{Client, Completion, Pipeline, Published, Retention, ServerInfo};
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, BufRead, BufReader, IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

const PROGRAM: Program = Program {
    name: "publisher",
    usage: "usage: publisher [--broker HOST[:PORT]] (--create TOPIC [--retain AGE] [--retain-bytes SIZE] | --delete TOPIC | --publish TOPIC [MESSAGE | --file PATH | -])",
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

Options:
  --broker HOST[:PORT]     the broker to use (default: $BROKER_ADDR if set,
                           else localhost:5555; the port defaults to 5555)
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

If the connection to the broker is lost while publishing standard input,
the publisher says how many lines were acknowledged (stored; with a durable
broker, on disk) and exits with status 1. It does not reconnect and resend
the rest: a batch in flight may or may not have been stored, so a resend
could store it twice (exactly-once resending is a later feature). Resume
from the line after the acknowledged count.

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

fn parse(
    mut args: pico_args::Arguments,
    literal: Vec<OsString>,
) -> Result<(String, Action), Failure> {
    let broker = cli::broker_addr(&mut args)?;
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
            return Ok((broker, Action::Publish(topic, source)));
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
    Ok((broker, action))
}

fn unreadable(path: &Path, e: &io::Error) -> Failure {
    Failure::runtime(format!(
        "cannot read '{}': {}",
        path.display(),
        courier::client::io_message(e)
    ))
}

fn run(args: pico_args::Arguments, literal: Vec<OsString>) -> Result<(), Failure> {
    let (broker, action) = parse(args, literal)?;
    let mut client = cli::connect(&broker, "publisher")?;
    client.register_publisher()?;
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
            let count = publish_lines(&mut client, &topic, input)?;
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

    fn clear(&mut self) {
        self.data.clear();
        self.ends.clear();
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

/// The batches of one `--publish TOPIC` run from standard input.
struct Batches<'c, 't> {
    pipeline: Pipeline<'c>,
    topic: &'t str,
    published: u64,
}

fn publish_lines<R: Read>(
    client: &mut Client,
    topic: &str,
    mut input: BufReader<R>,
) -> Result<u64, Failure> {
    let limits = BatchLimits::new(client.server_info());
    let mut batches = Batches {
        pipeline: client.pipeline(DEPTH),
        topic,
        published: 0,
    };
    let mut current = Lines::default();
    let mut next = Lines::default();
    let mut line_number = 0u64;
    loop {
        let start = current.data.len();
        let read = input
            .read_until(b'\n', &mut current.data)
            .map_err(|e| Failure::runtime(format!("cannot read standard input: {e}")))?;
        if read == 0 {
            break;
        }
        line_number += 1;
        if current.data.last() == Some(&b'\n') {
            current.data.pop();
        }
        let len = current.data.len() - start;
        if len > limits.payload_bytes {
            return Err(Failure::runtime(format!(
                "line {line_number} is {len} bytes, over the broker's limit of {} bytes per message",
                limits.payload_bytes
            )));
        }
        let encoded = current.data.len() + 5 * (current.ends.len() + 1);
        if encoded > limits.batch_bytes && !current.ends.is_empty() {
            // This line starts the next batch.
            next.data.extend_from_slice(&current.data[start..]);
            current.data.truncate(start);
            batches.submit(&mut current)?;
            std::mem::swap(&mut current, &mut next);
        }
        current.ends.push(current.data.len());
        let idle = input.buffer().is_empty();
        if current.ends.len() >= limits.batch_lines || encoded >= limits.batch_bytes || idle {
            batches.submit(&mut current)?;
        }
        if idle {
            // Reading on may block: let what we have go now.
            batches.flush()?;
        }
    }
    if !current.ends.is_empty() {
        batches.submit(&mut current)?;
    }
    batches.finish()
}

impl Batches<'_, '_> {
    /// Queues the batch (the pipeline copies it) and empties `lines` for
    /// the next one.
    fn submit(&mut self, lines: &mut Lines) -> Result<(), Failure> {
        self.pipeline
            .send_batch(self.topic, &lines.slices())
            .map_err(|e| self.failure(&e))?;
        lines.clear();
        self.take_completions()
    }

    fn flush(&mut self) -> Result<(), Failure> {
        self.pipeline.flush().map_err(|e| self.failure(&e))?;
        self.take_completions()
    }

    fn finish(mut self) -> Result<u64, Failure> {
        // A connection failure also shows up in the completions, where it is
        // reported with the batch it cut off.
        let _ = self.pipeline.wait_all();
        self.take_completions()?;
        Ok(self.published)
    }

    /// Counts what was stored; the first refusal (TOPIC_FULL after the
    /// broker's hold included) ends the run.
    fn take_completions(&mut self) -> Result<(), Failure> {
        let done: Vec<Completion> = self.pipeline.completions().collect();
        for completion in done {
            match completion.result {
                Ok(_) => self.published += u64::from(completion.messages),
                Err(e) => return Err(self.failure(&e)),
            }
        }
        Ok(())
    }

    fn failure(&self, e: &courier::client::Error) -> Failure {
        if e.is_connection_lost() {
            return Failure::runtime(format!(
                "{e}; {} acknowledged before the connection was lost (the rest were not resent)",
                plural(self.published, "line")
            ));
        }
        match cli::topic_failure(e, self.topic) {
            Failure::Runtime(message) if self.published > 0 => Failure::runtime(format!(
                "{message} (after publishing {} messages)",
                self.published
            )),
            other => other,
        }
    }
}
