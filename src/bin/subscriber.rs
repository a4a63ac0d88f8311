//! `subscriber`: print the messages of one or more topics as they arrive.
//!
//! It waits inside the broker (a PULL with a wait), never in a sleep loop, so
//! a message is printed the moment it is published. Acknowledgement follows
//! printing: each pull after the first carries `ack = true`, which
//! acknowledges exactly what the previous pulls delivered — all of it printed
//! and flushed by then. On `--count` or `--timeout` a final ACK per topic, at
//! the offset after the last message printed, covers the last batch. Pulls
//! never ask for more than `--count` still needs, so nothing is acknowledged
//! that was not printed, and a subscriber stopped at any point and resumed
//! with `--id` starts again at its first unprinted (or unacknowledged)
//! message: at least once, never lost.

mod cli;

use cli::{Failure, Program};
use courier::ErrorCode;
use courier::client::{Client, Message, PullOptions};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{self, BufWriter, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

const PROGRAM: Program = Program {
    name: "subscriber",
    usage: "usage: subscriber [--broker HOST:PORT] (--subscribe TOPIC... | --id ID) [--count N] [--timeout SECS] [-v | --json]",
    help: "\
subscriber: print the messages published to topics on a courier broker

usage: subscriber [--broker HOST:PORT] (--subscribe TOPIC... | --id ID) [--count N] [--timeout SECS] [-v | --json]

Prints each message on its own line as soon as it arrives, and acknowledges
it once printed. The subscriber id is printed on standard error at start.

Options:
  --subscribe TOPIC   subscribe to TOPIC (repeat for several topics)
  --id ID             resume subscriber ID: its subscriptions, and every
                      message it had not acknowledged (a stopped subscriber
                      resumed this way loses nothing)
  --count N           exit after printing N messages
  --timeout SECS      exit when no message has arrived for SECS seconds
                      (decimals allowed)
  -v, --verbose       print 'TOPIC OFFSET ' before each message
  --json              print one JSON object per line: {\"topic\":..,\"offset\":..,
                      \"payload\":..}, or \"payload_base64\" instead of \"payload\"
                      when the message is not UTF-8 text
  --broker HOST:PORT  the broker to use (default: $BROKER_ADDR if set, else
                      localhost:5555)
  -h, --help          print this help
  -V, --version       print the version

Exit status: 0 after --count messages or --timeout, 1 if the broker or the
connection failed, 2 for bad arguments.
",
};

/// Longest single wait inside the broker when no `--timeout` bounds it.
const MAX_WAIT: Duration = Duration::from_secs(60);
const PULL_MESSAGES: u64 = 1000;

fn main() -> ExitCode {
    PROGRAM.main(run)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Plain,
    Verbose,
    Json,
}

struct Options {
    broker: String,
    topics: Vec<String>,
    id: Option<u64>,
    count: Option<u64>,
    timeout: Option<Duration>,
    format: Format,
}

fn parse(mut args: pico_args::Arguments, literal: Vec<OsString>) -> Result<Options, Failure> {
    let broker = cli::broker_addr(&mut args)?;
    let topics: Vec<String> = args.values_from_str("--subscribe")?;
    let id = args.opt_value_from_str("--id")?;
    let count = args.opt_value_from_str("--count")?;
    let timeout = args.opt_value_from_fn("--timeout", |s| {
        s.parse::<f64>()
            .ok()
            .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
            .ok_or("expected a number of seconds, 0 or more")
    })?;
    let verbose = args.contains(["-v", "--verbose"]);
    let json = args.contains("--json");
    if let Some(extra) = cli::free_arguments(args, literal)?.first() {
        return Err(Failure::usage(format!(
            "unexpected argument '{}'",
            extra.to_string_lossy()
        )));
    }
    if topics.is_empty() && id.is_none() {
        return Err(Failure::usage(
            "nothing to read: give --subscribe TOPIC or --id ID",
        ));
    }
    let format = match (verbose, json) {
        (true, true) => return Err(Failure::usage("give only one of -v and --json")),
        (true, false) => Format::Verbose,
        (false, true) => Format::Json,
        (false, false) => Format::Plain,
    };
    Ok(Options {
        broker,
        topics,
        id,
        count,
        timeout,
        format,
    })
}

fn run(args: pico_args::Arguments, literal: Vec<OsString>) -> Result<(), Failure> {
    let options = parse(args, literal)?;
    let mut client = cli::connect(&options.broker, "subscriber")?;
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
            .subscribe(topic)
            .map_err(|e| cli::topic_failure(&e, topic))?;
        topics.push(topic.clone());
    }
    if topics.is_empty() {
        return Err(Failure::runtime(format!(
            "subscriber {id} has no subscriptions: give --subscribe TOPIC"
        )));
    }
    cli::note(format_args!("subscriber id {id} (resume with --id {id})"));
    Reader {
        client: &mut client,
        out: BufWriter::with_capacity(64 * 1024, io::stdout().lock()),
        format: options.format,
        printed: 0,
        unacked: BTreeMap::new(),
    }
    .read(options.count, options.timeout)
}

struct Reader<'c, W: Write> {
    client: &'c mut Client,
    out: W,
    format: Format,
    printed: u64,
    /// Per topic, the offset after the last message printed since the last
    /// acknowledging pull.
    unacked: BTreeMap<String, u64>,
}

impl<W: Write> Reader<'_, W> {
    fn read(mut self, count: Option<u64>, timeout: Option<Duration>) -> Result<(), Failure> {
        let mut last_message = Instant::now();
        // After a resume, "delivered" may include what the previous run
        // printed but had not acknowledged; only ack what this run printed.
        let mut ack = false;
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
            let pull = PullOptions {
                topic: None,
                max_messages: left.unwrap_or(PULL_MESSAGES).min(PULL_MESSAGES) as u32,
                max_bytes: 1 << 20,
                wait,
                ack,
            };
            let batch = self.client.pull(&pull).map_err(pull_failure)?;
            if ack {
                self.unacked.clear();
            }
            ack = true;
            if batch.is_empty() {
                continue;
            }
            for message in batch.iter().take(left.unwrap_or(u64::MAX) as usize) {
                self.print(&message).map_err(cli::output_failure)?;
                self.printed += 1;
                match self.unacked.get_mut(message.topic) {
                    Some(next) => *next = message.offset + 1,
                    None => {
                        self.unacked
                            .insert(message.topic.to_owned(), message.offset + 1);
                    }
                }
            }
            self.out.flush().map_err(cli::output_failure)?;
            last_message = Instant::now();
        }
        for (topic, offset) in &self.unacked {
            self.client.ack(topic, *offset)?;
        }
        Ok(())
    }

    fn print(&mut self, message: &Message<'_>) -> io::Result<()> {
        let out = &mut self.out;
        match self.format {
            Format::Plain => {}
            Format::Verbose => write!(out, "{} {} ", message.topic, message.offset)?,
            Format::Json => {
                out.write_all(b"{\"topic\":")?;
                write_json_string(out, message.topic)?;
                write!(out, ",\"offset\":{},", message.offset)?;
                match std::str::from_utf8(message.payload) {
                    Ok(text) => {
                        out.write_all(b"\"payload\":")?;
                        write_json_string(out, text)?;
                    }
                    Err(_) => {
                        out.write_all(b"\"payload_base64\":\"")?;
                        write_base64(out, message.payload)?;
                        out.write_all(b"\"")?;
                    }
                }
                return out.write_all(b"}\n");
            }
        }
        out.write_all(message.payload)?;
        out.write_all(b"\n")
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

/// Writes `text` as a JSON string, quotes included.
fn write_json_string(out: &mut impl Write, text: &str) -> io::Result<()> {
    out.write_all(b"\"")?;
    let mut plain = 0;
    for (i, byte) in text.bytes().enumerate() {
        let escape: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.write_all(&text.as_bytes()[plain..i])?;
        if escape.is_empty() {
            write!(out, "\\u{byte:04x}")?;
        } else {
            out.write_all(escape)?;
        }
        plain = i + 1;
    }
    out.write_all(&text.as_bytes()[plain..])?;
    out.write_all(b"\"")
}

/// Writes `bytes` in standard base64, with padding.
fn write_base64(out: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        let digit = |shift: u32| ALPHABET[(n >> shift & 63) as usize];
        let quad = [
            digit(18),
            digit(12),
            if chunk.len() > 1 { digit(6) } else { b'=' },
            if chunk.len() > 2 { digit(0) } else { b'=' },
        ];
        out.write_all(&quad)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(text: &str) -> String {
        let mut out = Vec::new();
        write_json_string(&mut out, text).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn base64(bytes: &[u8]) -> String {
        let mut out = Vec::new();
        write_base64(&mut out, bytes).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn json_strings_escape_quotes_backslashes_and_controls() {
        assert_eq!(json("plain"), r#""plain""#);
        assert_eq!(json("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(json("line\nnext\ttab\r"), r#""line\nnext\ttab\r""#);
        assert_eq!(json("\u{1}\u{1f}"), r#""\u0001\u001f""#);
        assert_eq!(json("héllo ✓"), "\"héllo ✓\"");
        assert_eq!(json(""), r#""""#);
    }

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        let vectors: [(&[u8], &str); 7] = [
            (b"", ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg=="),
            (b"fooba", "Zm9vYmE="),
            (b"foobar", "Zm9vYmFy"),
        ];
        for (input, expected) in vectors {
            assert_eq!(base64(input), expected);
        }
        assert_eq!(base64(&[0xff, 0xfe, 0x00]), "//4A");
    }
}
