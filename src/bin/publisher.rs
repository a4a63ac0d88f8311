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
//! `TOPIC_FULL` is never a loss: a refused batch is kept and sent again, with
//! a short backoff, until the broker takes it. Order: lines are stored in
//! input order, except around the first refusal. Batches already in flight
//! behind a refused one may be stored before it, since the broker takes each
//! request on its own. So at the first refusal the publisher waits for every
//! batch in flight, resends the refused ones in input order, and from then on
//! sends one batch at a time (a full topic is limited by its subscribers, not
//! by round trips). Order can therefore change only once, among the at most
//! `DEPTH` batches in flight when the topic first filled up; nothing is lost
//! or stored twice.

mod cli;

use cli::{Failure, Program};
use courier::ErrorCode;
use courier::client::{Client, Completion, Pipeline, Published, ServerInfo};
use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, BufRead, BufReader, IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

const PROGRAM: Program = Program {
    name: "publisher",
    usage: "usage: publisher [--broker HOST[:PORT]] (--create TOPIC | --delete TOPIC | --publish TOPIC [MESSAGE | --file PATH | -])",
    help: "\
publisher: create and delete topics and publish messages on a courier broker

usage: publisher [--broker HOST[:PORT]] (--create TOPIC | --delete TOPIC | --publish TOPIC [MESSAGE | --file PATH | -])

Exactly one of:
  --create TOPIC           create a topic (names: 1 to 255 of A-Z a-z 0-9 . _ -)
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
publisher waits and sends again: no message is lost. Lines keep their input
order, except that the first time the topic fills up, up to 7 batches that
were already in flight may be stored before the one the broker refused; after
that the publisher sends one batch at a time, in order.

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
    Create(String),
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
    let action = match (create, delete, publish) {
        (Some(topic), None, None) => Action::Create(topic),
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
        Action::Create(topic) => {
            client
                .create_topic(&topic)
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
    let mut backoff = Backoff::new(topic);
    loop {
        match client.send(topic, payload) {
            Ok(published) => return Ok(published),
            Err(e) if e.code() == Some(ErrorCode::TopicFull) => backoff.wait(),
            Err(e) => return Err(cli::topic_failure(&e, topic)),
        }
    }
}

/// Waits a little longer each time the topic is full, and says so once when
/// the wait gets long enough for a person to wonder.
struct Backoff<'a> {
    topic: &'a str,
    delay: Duration,
    started: Instant,
    told: bool,
}

impl<'a> Backoff<'a> {
    fn new(topic: &'a str) -> Backoff<'a> {
        Backoff {
            topic,
            delay: Duration::from_millis(1),
            started: Instant::now(),
            told: false,
        }
    }

    fn wait(&mut self) {
        if !self.told && self.started.elapsed() >= Duration::from_secs(1) {
            cli::note(format_args!(
                "publisher: topic '{}' is full; waiting for its subscribers to catch up",
                self.topic
            ));
            self.told = true;
        }
        std::thread::sleep(self.delay);
        self.delay = (self.delay * 2).min(Duration::from_millis(100));
    }
}

/// Lines of input, kept until the broker has stored them.
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
/// take it; and within a quarter of the topic's backlog bounds, or a batch
/// refused with TOPIC_FULL might never fit, even once subscribers catch up.
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
    /// Sent, awaiting their completion, by tag.
    in_flight: VecDeque<(u64, Lines)>,
    /// Refused with TOPIC_FULL, to be sent again in input order.
    refused: Vec<(u64, Lines)>,
    /// Emptied batches, reused so that a long input allocates nothing new.
    spare: Vec<Lines>,
    published: u64,
    /// Set at the first refusal: from then on, one batch in flight at a time.
    one_at_a_time: bool,
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
        in_flight: VecDeque::with_capacity(DEPTH),
        refused: Vec::new(),
        spare: Vec::new(),
        published: 0,
        one_at_a_time: false,
    };
    let mut current = Lines::default();
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
            let mut next = batches.spare.pop().unwrap_or_default();
            next.data.extend_from_slice(&current.data[start..]);
            current.data.truncate(start);
            batches.submit(std::mem::replace(&mut current, next))?;
        }
        current.ends.push(current.data.len());
        let idle = input.buffer().is_empty();
        if current.ends.len() >= limits.batch_lines || encoded >= limits.batch_bytes || idle {
            let next = batches.spare.pop().unwrap_or_default();
            batches.submit(std::mem::replace(&mut current, next))?;
        }
        if idle {
            // Reading on may block: let what we have go now.
            batches.flush()?;
        }
    }
    if !current.ends.is_empty() {
        batches.submit(current)?;
    }
    batches.finish()
}

impl Batches<'_, '_> {
    fn submit(&mut self, lines: Lines) -> Result<(), Failure> {
        let tag = self
            .pipeline
            .send_batch(self.topic, &lines.slices())
            .map_err(|e| cli::topic_failure(&e, self.topic))?;
        self.in_flight.push_back((tag, lines));
        if self.one_at_a_time {
            self.drain()
        } else {
            self.settle()
        }
    }

    fn flush(&mut self) -> Result<(), Failure> {
        self.pipeline
            .flush()
            .map_err(|e| cli::topic_failure(&e, self.topic))?;
        self.settle()
    }

    fn finish(mut self) -> Result<u64, Failure> {
        self.drain()?;
        Ok(self.published)
    }

    /// Waits for every batch in flight and resends refused ones.
    fn drain(&mut self) -> Result<(), Failure> {
        // A connection failure also shows up in the completions, where it is
        // reported with the batch it cut off.
        let _ = self.pipeline.wait_all();
        self.take_completions()?;
        self.resend_refused()
    }

    /// Takes the completions that arrived; after a refusal, stops to resend.
    fn settle(&mut self) -> Result<(), Failure> {
        self.take_completions()?;
        if self.refused.is_empty() {
            Ok(())
        } else {
            self.drain()
        }
    }

    fn take_completions(&mut self) -> Result<(), Failure> {
        let done: Vec<Completion> = self.pipeline.completions().collect();
        for completion in done {
            let Some(at) = self
                .in_flight
                .iter()
                .position(|(tag, _)| *tag == completion.tag)
            else {
                continue;
            };
            let Some((tag, mut lines)) = self.in_flight.remove(at) else {
                continue;
            };
            match completion.result {
                Ok(_) => {
                    self.published += u64::from(completion.messages);
                    lines.clear();
                    self.spare.push(lines);
                }
                Err(e) if e.code() == Some(ErrorCode::TopicFull) => {
                    self.one_at_a_time = true;
                    self.refused.push((tag, lines));
                }
                Err(e) => return Err(self.failure(&e)),
            }
        }
        Ok(())
    }

    /// Sends each refused batch alone, in input order, until it is stored.
    fn resend_refused(&mut self) -> Result<(), Failure> {
        self.refused.sort_by_key(|(tag, _)| *tag);
        for (_, mut lines) in std::mem::take(&mut self.refused) {
            let mut backoff = Backoff::new(self.topic);
            loop {
                let sent = self.pipeline.send_batch(self.topic, &lines.slices());
                sent.map_err(|e| self.failure(&e))?;
                let _ = self.pipeline.wait_all();
                let Some(completion) = self.pipeline.completions().next() else {
                    return Err(Failure::runtime("the broker did not answer a batch"));
                };
                match completion.result {
                    Ok(_) => {
                        self.published += u64::from(completion.messages);
                        break;
                    }
                    Err(e) if e.code() == Some(ErrorCode::TopicFull) => backoff.wait(),
                    Err(e) => return Err(self.failure(&e)),
                }
            }
            lines.clear();
            self.spare.push(lines);
        }
        Ok(())
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
