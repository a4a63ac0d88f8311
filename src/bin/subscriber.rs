//! `subscriber`: print the messages of one or more topics as they arrive.
//!
//! It waits inside the broker (a PULL with a wait), never in a sleep loop, so
//! a message is printed the moment it is published; several pulls are kept
//! in flight ([`courier::client::Pulls`]), so one is already waiting in the
//! broker while the last batch is printed. Acknowledgement follows printing,
//! exactly: once a batch is printed and flushed, a cumulative ACK per topic
//! at the offset after the last message printed goes out with the next
//! pull, and on `--count` or `--timeout` the last ones are sent and answered
//! before exit. Messages the pulls in flight brought but that were not
//! printed are not acknowledged, so a subscriber stopped at any point and
//! resumed with `--id` starts again at its first unprinted (or
//! unacknowledged) message: at least once, never lost.
//!
//! A deleted topic ends only its own subscription. The broker answers the
//! waiting pulls with `TOPIC_DELETED` (and drops the subscription silently
//! when no pull waits), so on that error, and whenever a pull comes back
//! empty, the subscriber asks after each topic it still reads with a no-op
//! ACK at offset 0 ([`Pulls::is_subscribed`]): `UNKNOWN_TOPIC` or `NOT_SUBSCRIBED` means that topic is
//! gone. That asks the broker by code, never by parsing its text. Only when
//! no topic is left does the subscriber stop, with exit status 3.
//!
//! A session it started is ended on exit (END_SESSION), so that a topic
//! does not keep messages for a reader that is gone; `--keep`, or resuming
//! with `--id`, keeps it for later. Ctrl-C ends it too: SIGINT wakes a
//! thread that resumes the session on a connection of its own (the main
//! one is blocked in a pull, which the takeover answers), ends it and exits
//! with 130. Killed any other way, the session expires after the broker's
//! session timeout as before.
//!
//! A kept session also survives the broker: when the connection is lost
//! (the broker restarted, or the network failed), the subscriber connects
//! again with back-off for up to `--reconnect` seconds, resumes its session
//! and goes on — what was printed but not acknowledged comes again, since
//! only acknowledged offsets survive. A session that is not kept cannot be
//! resumed (ending it on exit is its point), so such a subscriber exits on a
//! lost connection as it always did.
//!
//! `--from` starts new subscriptions elsewhere than at the next message
//! (the oldest retained, an offset, a time); a subscriber that retention
//! overtook is told on stderr how many messages it lost and goes on.
//! `--fetch TOPIC` reads a topic without a session (FETCH): it prints what
//! the topic holds from `--from` (default: the oldest) and exits, holding
//! nothing back.

mod cli;

use base64::prelude::{BASE64_STANDARD, Engine as _};
use cli::{Failure, Program, replay};
use courier::ErrorCode;
use courier::client::{Client, Message, Position, PullOptions, Pulls, Reconnect};
use serde::Serialize;
use std::ffi::OsString;
use std::io::{self, BufWriter, Write};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

const PROGRAM: Program = Program {
    name: "subscriber",
    usage: "usage: subscriber [--broker HOST[:PORT]] (--subscribe TOPIC... [--from POSITION] | --id ID | --fetch TOPIC [--from POSITION]) [--keep] [--reconnect SECS] [--count N] [--timeout SECS] [-v | --json | --raw | -0]",
    help: "\
subscriber: print the messages published to topics on a courier broker

usage: subscriber [--broker HOST[:PORT]] (--subscribe TOPIC... [--from POSITION] | --id ID | --fetch TOPIC [--from POSITION]) [--keep] [--reconnect SECS] [--count N] [--timeout SECS] [-v | --json | --raw | -0]

Prints each message as soon as it arrives, and acknowledges it once printed.
By default each payload is printed followed by a newline (a payload that
holds newlines therefore spans several lines; use --raw, -0 or --json to
keep messages apart exactly). The subscriber id is printed on standard error
at start. On exit (--count, --timeout, Ctrl-C) the subscriber ends its
session, so the broker no longer keeps messages for it, unless --keep is
given or the session was resumed with --id.

Options:
  --subscribe TOPIC   subscribe to TOPIC (repeat for several topics)
  --from POSITION     where new subscriptions (or --fetch) start: 'new' (the
                      next message published; the default for --subscribe),
                      'earliest' (the oldest the topic retains; the default
                      for --fetch), an OFFSET, an RFC 3339 time
                      (2026-12-01T08:00:00Z) or a time relative to now (-5m,
                      -2h): the first message appended at or after it.
                      Positions outside what is retained are clamped to it.
                      An existing subscription (--id) is not moved
  --fetch TOPIC       print what TOPIC holds from --from on, without a
                      session (nothing is acknowledged or held back), then
                      exit; --count bounds it
  --id ID             resume subscriber ID (0 to 18446744073709551615, as
                      printed at start): its subscriptions, and every message
                      it had not acknowledged (a stopped subscriber resumed
                      this way loses nothing); the session is kept on exit
  --keep              keep the session on exit, to resume it later with --id
                      (the broker keeps it for its session timeout, 60 s by
                      default)
  --reconnect SECS    with a kept session (--keep or --id): when the
                      connection is lost, connect again with back-off (100 ms
                      doubling to 5 s) for up to SECS seconds, resume the
                      session and go on; messages printed but not yet
                      acknowledged are printed again (0 to 31536000,
                      decimals allowed; 0 exits at once) [default: 60]. A
                      session that is not kept cannot be resumed: without
                      --keep a lost connection always exits
  --count N           exit after printing N messages (1 to
                      18446744073709551615)
  --timeout SECS      exit when no message has arrived for SECS seconds
                      (0.001 to 31536000, decimals allowed)
  -v, --verbose       print 'TOPIC OFFSET ' before each payload
  --json              print one JSON object per line: {\"topic\":..,\"offset\":..,
                      \"payload\":..}, or \"payload_base64\" instead of \"payload\"
                      when the message is not UTF-8 text
  --raw               print the payload bytes exactly, adding nothing (not even
                      a newline)
  -0, --null          print each payload followed by a NUL byte (for xargs -0)
  --broker HOST[:PORT]
                      the broker to use (default: $BROKER_ADDR if set, else
                      localhost:5555; the port defaults to 5555)
  --tls               speak TLS (verifying the broker's certificate)
  --ca PEM            trust these CA certificates (default: the system's)
  --user NAME         user, for a broker with --users ($COURIER_USER)
  --token TOKEN       that user's token ($COURIER_TOKEN)
  -h, --help          print this help
  -V, --version       print the version

When a topic is deleted, the subscriber says so on standard error and goes
on reading the others. When a retained topic dropped messages before the
subscriber read them (its retention overtook the subscriber), it says on
standard error how many it lost and from which offset it goes on.

Exit status: 0 after --count messages or --timeout, 1 if the broker or the
connection failed (with a kept session: if it stayed lost past --reconnect,
or the broker no longer had the session), 2 for bad arguments, 3 when every subscribed topic was
deleted (nothing left to read), 130 after Ctrl-C (SIGINT).
",
};

/// Longest single wait inside the broker when no `--timeout` bounds it.
const MAX_WAIT: Duration = Duration::from_secs(60);
const PULL_MESSAGES: u64 = 1000;
/// Pulls kept in flight (the broker may keep fewer waiting: HELLO says).
const PULL_DEPTH: usize = 4;

fn main() -> ExitCode {
    PROGRAM.main(run)
}

/// How long a kept session tries to come back by default (`--reconnect`).
const DEFAULT_RECONNECT: Duration = Duration::from_secs(60);

/// Longest `--timeout`: a year.
const MAX_TIMEOUT_SECS: f64 = 31_536_000.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// The payload and a newline.
    Plain,
    /// `TOPIC OFFSET `, the payload, a newline.
    Verbose,
    Json,
    /// The payload's bytes, nothing added.
    Raw,
    /// The payload and a NUL byte.
    Null,
}

struct Options {
    broker: String,
    topics: Vec<String>,
    id: Option<u64>,
    /// Keep the session on exit (`--keep`, or resuming with `--id`).
    keep: bool,
    count: Option<u64>,
    timeout: Option<Duration>,
    /// How long to try to come back after a lost connection (kept
    /// sessions only; zero: not at all).
    reconnect: Duration,
    format: Format,
    /// Where new subscriptions start (`--from`).
    from: Option<Position>,
    /// `--fetch TOPIC`: read without a session.
    fetch: Option<String>,
}

fn parse(mut args: pico_args::Arguments, literal: Vec<OsString>) -> Result<Options, Failure> {
    let broker = cli::broker_addr(&mut args)?;
    let topics: Vec<String> = args.values_from_str("--subscribe")?;
    let fetch: Option<String> = args.opt_value_from_str("--fetch")?;
    let from = args
        .opt_value_from_str::<_, String>("--from")?
        .map(|text| replay::position("--from", &text, SystemTime::now()))
        .transpose()?;
    let id = cli::number(&mut args, "--id", 0..=u64::MAX)?;
    let keep = args.contains("--keep") || id.is_some();
    let count = cli::number(&mut args, "--count", 1..=u64::MAX)?;
    let timeout =
        cli::number(&mut args, "--timeout", 0.001..=MAX_TIMEOUT_SECS)?.map(Duration::from_secs_f64);
    let reconnect = cli::number(&mut args, "--reconnect", 0.0..=MAX_TIMEOUT_SECS)?
        .map_or(DEFAULT_RECONNECT, Duration::from_secs_f64);
    let formats = [
        (args.contains(["-v", "--verbose"]), Format::Verbose),
        (args.contains("--json"), Format::Json),
        (args.contains("--raw"), Format::Raw),
        (args.contains(["-0", "--null"]), Format::Null),
    ];
    if let Some(extra) = cli::free_arguments(args, literal)?.first() {
        return Err(Failure::usage(format!(
            "unexpected argument '{}'",
            extra.to_string_lossy()
        )));
    }
    if fetch.is_some() && (!topics.is_empty() || id.is_some()) {
        return Err(Failure::usage(
            "--fetch reads without a session: not with --subscribe or --id",
        ));
    }
    if topics.is_empty() && id.is_none() && fetch.is_none() {
        return Err(Failure::usage(
            "nothing to read: give --subscribe TOPIC, --id ID or --fetch TOPIC",
        ));
    }
    if from.is_some() && topics.is_empty() && fetch.is_none() {
        return Err(Failure::usage(
            "--from needs --subscribe TOPIC or --fetch TOPIC",
        ));
    }
    let mut chosen = formats.iter().filter(|(given, _)| *given).map(|(_, f)| *f);
    let format = chosen.next().unwrap_or(Format::Plain);
    if chosen.next().is_some() {
        return Err(Failure::usage("give only one of -v, --json, --raw and -0"));
    }
    Ok(Options {
        broker,
        topics,
        id,
        keep,
        count,
        timeout,
        reconnect,
        format,
        from,
        fetch,
    })
}

fn run(args: pico_args::Arguments, literal: Vec<OsString>) -> Result<(), Failure> {
    let options = parse(args, literal)?;
    let mut client = cli::connect(&options.broker, "subscriber")?;
    if let Some(topic) = &options.fetch {
        return fetch(&mut client, topic, &options);
    }
    let (id, mut topics) = match options.id {
        Some(id) => {
            let session = client.resume_subscriber(id).map_err(|e| match e.code() {
                Some(ErrorCode::UnknownSubscriber) => Failure::runtime(format!(
                    "unknown subscriber id {id} (it never existed, or expired)"
                )),
                _ => e.into(),
            })?;
            (session.id, session.topics)
        }
        None => (client.register_subscriber()?, Vec::new()),
    };
    for topic in &options.topics {
        client
            .subscribe_from(topic, options.from.unwrap_or(Position::New))
            .map_err(|e| cli::topic_failure(&e, topic))?;
        if !topics.contains(topic) {
            topics.push(topic.clone());
        }
    }
    if topics.is_empty() {
        return Err(Failure::runtime(format!(
            "subscriber {id} has no subscriptions: give --subscribe TOPIC"
        )));
    }
    let interrupted = if options.keep {
        cli::note(format_args!("subscriber id {id} (resume with --id {id})"));
        Arc::default()
    } else {
        cli::note(format_args!(
            "subscriber id {id} (ended on exit; give --keep to resume it later)"
        ));
        end_on_interrupt(&options.broker, id)?
    };
    let reconnect = (options.keep && !options.reconnect.is_zero()).then(|| Comeback {
        broker: options.broker.clone(),
        id,
        policy: Reconnect {
            limit: options.reconnect,
            ..Reconnect::default()
        },
    });
    let read = Reader {
        reconnect,
        out: BufWriter::with_capacity(64 * 1024, io::stdout().lock()),
        format: options.format,
        topics,
        printed: 0,
        json: Vec::new(),
    }
    .read(&mut client, options.count, options.timeout);
    if interrupted.load(Ordering::SeqCst) {
        // The interrupt thread ends the session and the process; the pull
        // it ended must not exit first with an error of its own.
        loop {
            std::thread::park();
        }
    }
    if !options.keep {
        match read {
            Ok(()) => client.end_session()?,
            // Every topic was deleted: the empty session goes too.
            Err(Failure::NothingLeft(_)) => {
                let _ = client.end_session();
            }
            Err(_) => {}
        }
    }
    read
}

/// `--fetch TOPIC`: prints what the topic holds from `--from` (default:
/// the oldest retained) up to its end when the run started, at most
/// `--count` messages; no session, nothing held back.
fn fetch(client: &mut Client, topic: &str, options: &Options) -> Result<(), Failure> {
    let mut reader = Reader {
        reconnect: None,
        out: BufWriter::with_capacity(64 * 1024, io::stdout().lock()),
        format: options.format,
        topics: Vec::new(),
        printed: 0,
        json: Vec::new(),
    };
    let from = options.from.unwrap_or(Position::Earliest);
    replay::fetch_each(client, topic, from, options.count, |message| {
        let shown = Message {
            topic,
            offset: message.offset,
            payload: &message.payload,
        };
        reader.print(&shown).map_err(cli::output_failure)
    })?;
    reader.out.flush().map_err(cli::output_failure)
}

/// Exit status after Ctrl-C, as a shell reports a process killed by SIGINT.
const EXIT_INTERRUPTED: i32 = 130;

/// On SIGINT, ends session `id` from a connection of its own and exits
/// with 130; a second SIGINT exits at once, should that hang. The handlers
/// only set a flag and write a byte to a socket pair (all a handler may
/// safely do); the thread reading it does the work. Returns the flag, set
/// from the first SIGINT on.
fn end_on_interrupt(broker: &str, id: u64) -> Result<Arc<AtomicBool>, Failure> {
    use signal_hook::consts::SIGINT;
    let watch_failed = |e: io::Error| Failure::runtime(format!("cannot watch for Ctrl-C: {e}"));
    let interrupted = Arc::new(AtomicBool::new(false));
    // The order matters: the exit is armed by the flag the first signal sets.
    signal_hook::flag::register_conditional_shutdown(SIGINT, EXIT_INTERRUPTED, interrupted.clone())
        .map_err(watch_failed)?;
    signal_hook::flag::register(SIGINT, interrupted.clone()).map_err(watch_failed)?;
    let (mut wake, notify) = UnixStream::pair().map_err(watch_failed)?;
    signal_hook::low_level::pipe::register(SIGINT, notify).map_err(watch_failed)?;
    let broker = broker.to_owned();
    std::thread::spawn(move || {
        let mut byte = [0u8];
        if io::Read::read(&mut wake, &mut byte).is_err() {
            return;
        }
        let ended = cli::connect(&broker, "subscriber").and_then(|mut client| {
            client.resume_subscriber(id)?;
            Ok(client.end_session()?)
        });
        if let Err(Failure::Runtime(message)) = ended {
            cli::note(format_args!(
                "subscriber: could not end session {id}: {message}"
            ));
        }
        std::process::exit(EXIT_INTERRUPTED);
    });
    Ok(interrupted)
}

/// What a kept session needs to come back after a lost connection.
struct Comeback {
    broker: String,
    id: u64,
    policy: Reconnect,
}

/// Why one connection's reading ended.
enum Stop {
    /// The connection was lost: a kept session may come back.
    Lost(courier::client::Error),
    Failed(Failure),
}

impl From<Failure> for Stop {
    fn from(failure: Failure) -> Self {
        Stop::Failed(failure)
    }
}

struct Reader<W: Write> {
    /// `None`: a lost connection ends the run.
    reconnect: Option<Comeback>,
    out: W,
    format: Format,
    /// The topics still subscribed, as far as this run knows.
    topics: Vec<String>,
    printed: u64,
    /// Reused for each JSON line.
    json: Vec<u8>,
}

impl<W: Write> Reader<W> {
    fn read(
        mut self,
        client: &mut Client,
        count: Option<u64>,
        timeout: Option<Duration>,
    ) -> Result<(), Failure> {
        let mut last_message = Instant::now();
        loop {
            match self.read_on(client, count, timeout, &mut last_message) {
                Ok(()) => return Ok(()),
                Err(Stop::Lost(e)) if self.reconnect.is_some() => self.come_back(client, &e)?,
                Err(Stop::Lost(e)) => return Err(pull_failure(e)),
                Err(Stop::Failed(failure)) => return Err(failure),
            }
        }
    }

    /// Reads on one connection until done, or until it is lost.
    fn read_on(
        &mut self,
        client: &mut Client,
        count: Option<u64>,
        timeout: Option<Duration>,
        last_message: &mut Instant,
    ) -> Result<(), Stop> {
        let options = PullOptions {
            topic: None,
            max_messages: PULL_MESSAGES as u32,
            max_bytes: 1 << 20,
            wait: MAX_WAIT,
            ack: false,
        };
        let lost = |e: courier::client::Error| {
            if e.is_connection_lost() {
                Stop::Lost(e)
            } else {
                Stop::Failed(pull_failure(e))
            }
        };
        let mut pulls = client.pulls(options, PULL_DEPTH);
        loop {
            let left = count.map(|n| n.saturating_sub(self.printed));
            if left == Some(0) {
                break;
            }
            let wait = match timeout {
                Some(limit) => match limit.checked_sub(last_message.elapsed()) {
                    Some(wait) if !wait.is_zero() => wait,
                    _ => break,
                },
                None => MAX_WAIT,
            };
            // For the pulls sent from now on; what more they bring is not
            // printed, so not acknowledged.
            let next = pulls.options_mut();
            next.wait = wait;
            next.max_messages = left.unwrap_or(PULL_MESSAGES).min(PULL_MESSAGES) as u32;
            let batch = match pulls.next_batch() {
                Ok(batch) => batch,
                Err(e) if e.code() == Some(ErrorCode::TopicDeleted) => {
                    self.forget_deleted(&mut pulls)?;
                    continue;
                }
                Err(e) => return Err(lost(e)),
            };
            for (topic, first_offset, lost) in batch.losses() {
                cli::note(format_args!(
                    "subscriber: lost {lost} message(s) of '{topic}' to retention before reading them (offsets {}..{first_offset}); going on from offset {first_offset}",
                    first_offset - lost
                ));
                pulls.processed(topic, first_offset);
            }
            if batch.is_empty() {
                // A topic deleted while no pull waited goes unannounced.
                self.forget_deleted(&mut pulls)?;
                continue;
            }
            let mut printed = Vec::new();
            for message in batch.iter().take(left.unwrap_or(u64::MAX) as usize) {
                self.print(&message).map_err(cli::output_failure)?;
                self.printed += 1;
                printed.push((message.topic, message.offset + 1));
            }
            self.out.flush().map_err(cli::output_failure)?;
            // Printed and flushed: acknowledged with the next pull.
            for (topic, next_offset) in printed {
                pulls.processed(topic, next_offset);
            }
            *last_message = Instant::now();
        }
        pulls.acknowledge().map_err(lost)
    }

    /// Connects again and resumes the session after `lost`, or fails as
    /// the lost connection would have when that does not work in time.
    /// What was printed but not acknowledged on the old connection comes
    /// again: the resume rewinds the session to its acknowledged offsets.
    fn come_back(
        &mut self,
        client: &mut Client,
        lost: &courier::client::Error,
    ) -> Result<(), Failure> {
        let Some(comeback) = &self.reconnect else {
            return Err(pull_failure(lost.clone()));
        };
        cli::note(format_args!(
            "subscriber: {lost}; reconnecting for up to {} s",
            comeback.policy.limit.as_secs_f64()
        ));
        let options = cli::client_options("subscriber");
        let (resumed, _) = Client::reconnect_subscriber(
            &comeback.broker,
            &options,
            comeback.id,
            &comeback.policy,
        )
        .map_err(|e| match e.code() {
            Some(ErrorCode::UnknownSubscriber) => Failure::runtime(format!(
                "the broker no longer has subscriber {} (it expired, or the broker kept nothing)",
                comeback.id
            )),
            _ => e.into(),
        })?;
        cli::note(format_args!(
            "subscriber: reconnected; resumed subscriber {}",
            comeback.id
        ));
        *client = resumed;
        Ok(())
    }

    /// Drops the topics the broker no longer has us subscribed to, saying
    /// so for each; fails when none is left.
    fn forget_deleted(&mut self, pulls: &mut Pulls<'_>) -> Result<(), Failure> {
        let mut kept = Vec::with_capacity(self.topics.len());
        for topic in std::mem::take(&mut self.topics) {
            if pulls.is_subscribed(&topic).map_err(pull_failure)? {
                kept.push(topic);
            } else {
                cli::note(format_args!(
                    "subscriber: topic '{topic}' was deleted; no longer reading it"
                ));
            }
        }
        self.topics = kept;
        if self.topics.is_empty() {
            return Err(Failure::NothingLeft(
                "every subscribed topic was deleted; nothing left to read".into(),
            ));
        }
        Ok(())
    }

    fn print(&mut self, message: &Message<'_>) -> io::Result<()> {
        let out = &mut self.out;
        let payload: &[u8] = message.payload;
        match self.format {
            Format::Plain => {
                out.write_all(payload)?;
                out.write_all(b"\n")
            }
            Format::Verbose => {
                write!(out, "{} {} ", message.topic, message.offset)?;
                out.write_all(payload)?;
                out.write_all(b"\n")
            }
            Format::Raw => out.write_all(payload),
            Format::Null => {
                out.write_all(payload)?;
                out.write_all(b"\0")
            }
            Format::Json => {
                self.json.clear();
                serde_json::to_writer(&mut self.json, &JsonMessage::new(message))
                    .map_err(io::Error::from)?;
                self.json.push(b'\n');
                out.write_all(&self.json)
            }
        }
    }
}

/// One `--json` line: the payload as text when it is UTF-8, else base64.
#[derive(Serialize)]
struct JsonMessage<'a> {
    topic: &'a str,
    offset: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload_base64: Option<String>,
}

impl<'a> JsonMessage<'a> {
    fn new(message: &Message<'a>) -> JsonMessage<'a> {
        let payload: &'a [u8] = message.payload;
        let text = std::str::from_utf8(payload).ok();
        JsonMessage {
            topic: message.topic,
            offset: message.offset,
            payload: text,
            payload_base64: text.is_none().then(|| BASE64_STANDARD.encode(payload)),
        }
    }
}

fn pull_failure(e: courier::client::Error) -> Failure {
    match e.code() {
        Some(ErrorCode::SessionTakenOver) => {
            Failure::runtime("another subscriber resumed this session")
        }
        _ => e.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn json(payload: &'static [u8]) -> String {
        let payload = Bytes::from_static(payload);
        let message = Message {
            topic: "t",
            offset: 7,
            payload: &payload,
        };
        serde_json::to_string(&JsonMessage::new(&message)).expect("serializes")
    }

    #[test]
    fn json_lines_carry_text_or_base64() {
        assert_eq!(
            json(b"say \"hi\"\n"),
            r#"{"topic":"t","offset":7,"payload":"say \"hi\"\n"}"#
        );
        assert_eq!(
            json(b"\xff\xfe\x00"),
            r#"{"topic":"t","offset":7,"payload_base64":"//4A"}"#
        );
        assert_eq!(json(b""), r#"{"topic":"t","offset":7,"payload":""}"#);
    }
}
