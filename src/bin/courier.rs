//! `courier`: look at a running broker — its topics, one topic, its
//! counters — in a table for people or as JSON for scripts; and manage the
//! users file of a broker that requires users (`courier user ...`, which
//! works on the file and needs no broker).
//!
//! It only reads: LIST_TOPICS (every page, following `next`), TOPIC_INFO,
//! STATS and FETCH, on a connection that takes no role (FETCH holds nothing
//! back on the topic it reads). The readable forms are plain
//! aligned columns; `--json` prints one JSON document (an array of topics,
//! one topic object, or the stats object) with the broker's field names, so
//! a script sees exactly what PROTOCOL.md describes.

mod cli;
#[path = "cli/user.rs"]
mod user;

use cli::{Failure, Program, replay};
use courier::client::{Client, Stats, TopicSummary};
use courier::protocol::MAX_LIST_TOPICS;
use serde::Serialize;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

const PROGRAM: Program = Program {
    name: "courier",
    usage: "usage: courier [--broker HOST[:PORT]] [--json] (topics | topic NAME | stats | fetch TOPIC [--from POSITION] [--count N])\n       \
            courier user (add NAME [--publish P]... [--subscribe P]... [--admin P]... | list | remove NAME) --users FILE",
    help: "\
courier: show what a courier broker holds, and manage its users

usage: courier [--broker HOST[:PORT]] [--json] (topics | topic NAME | stats
                                                | fetch TOPIC [--from POSITION] [--count N])
       courier user (add NAME [--publish P]... [--subscribe P]... [--admin P]...
                     | list | remove NAME) --users FILE

Commands:
  topics        every topic, in name order: its next offset, its backlog
                (messages retained for some subscriber, and their payload
                bytes) and its number of subscribers
  topic NAME    the same for one topic
  stats         the broker's counters: connections, topics, sessions,
                messages and bytes in and out, backlog, errors by code
  fetch TOPIC   the messages TOPIC holds, one per line: offset, append time
                (RFC 3339) and payload (text, or base64 when not UTF-8);
                from --from (earliest, an OFFSET, an RFC 3339 time or -5m;
                default earliest), at most --count N; no session is made
                and nothing is held back
  user add NAME creates or replaces a user in the --users FILE (created if
                missing) with the grants given, and prints its new token
                once; only the token's SHA-256 is stored
  user list     the users and their grants
  user remove NAME
                removes a user; send SIGHUP to the broker to apply a change

Grants (user add; each may be repeated; P is a topic name, or a prefix
ending in '*', '*' alone is every topic):
  --publish P           PUBLISH and PUBLISH_BATCH on matching topics
  --subscribe P         SUBSCRIBE, PULL, ACK on matching topics
  --admin P             CREATE_TOPIC and DELETE_TOPIC; any admin grant
                        also allows STATS

Options:
  --json                print JSON instead of a table: an array of topics,
                        one topic object, or the stats object, with the
                        field names of PROTOCOL.md
  --broker HOST[:PORT]  the broker to use (default: $BROKER_ADDR if set, else
                        localhost:5555; the port defaults to 5555)
  --tls                 speak TLS to the broker (verifying its certificate)
  --ca PEM              trust these CA certificates (default: the system's)
  --user NAME           user name, for a broker with --users ($COURIER_USER)
  --token TOKEN         that user's token ($COURIER_TOKEN)
  --users FILE          the users file, for 'courier user'
  -h, --help            print this help
  -V, --version         print the version

Exit status: 0 on success, 1 if the broker or the connection failed (or the
topic does not exist), 2 for bad arguments.
",
};

fn main() -> ExitCode {
    PROGRAM.main(run)
}

enum Command {
    Topics,
    Topic(String),
    Stats,
    User(user::UserCommand, Option<PathBuf>),
    Fetch {
        topic: String,
        from: courier::client::Position,
        count: Option<u64>,
    },
}

fn parse(
    mut args: pico_args::Arguments,
    literal: Vec<OsString>,
) -> Result<(String, bool, Command), Failure> {
    let users: Option<PathBuf> = args.opt_value_from_os_str("--users", |s| {
        Ok::<_, std::convert::Infallible>(PathBuf::from(s))
    })?;
    let grants = user::GrantFlags {
        publish: args.values_from_str("--publish")?,
        subscribe: args.values_from_str("--subscribe")?,
        admin: args.values_from_str("--admin")?,
    };
    let broker = cli::broker_addr(&mut args)?;
    let json = args.contains("--json");
    let from = args
        .opt_value_from_str::<_, String>("--from")?
        .map(|text| replay::position("--from", &text, std::time::SystemTime::now()))
        .transpose()?;
    let count = cli::number(&mut args, "--count", 1..=u64::MAX)?;
    let mut free = cli::free_arguments(args, literal)?
        .into_iter()
        .map(|a| a.to_string_lossy().into_owned());
    let command = match free.next().as_deref() {
        Some("topics") => Command::Topics,
        Some("topic") => match free.next() {
            Some(name) => Command::Topic(name),
            None => return Err(Failure::usage("topic: give the topic's NAME")),
        },
        Some("stats") => Command::Stats,
        Some("user") => {
            let command = user::parse(free, &grants)?;
            return Ok((broker, json, Command::User(command, users)));
        }
        Some("fetch") => match free.next() {
            Some(topic) => Command::Fetch {
                topic,
                from: from.unwrap_or(courier::client::Position::Earliest),
                count,
            },
            None => return Err(Failure::usage("fetch: give the TOPIC")),
        },
        Some(other) => return Err(Failure::usage(format!("unknown command '{other}'"))),
        None => {
            return Err(Failure::usage(
                "give a command: topics, topic NAME, stats or user",
            ));
        }
    };
    if grants.any() || users.is_some() {
        return Err(Failure::usage(
            "--users, --publish, --subscribe and --admin go with 'courier user'",
        ));
    }
    if let Some(extra) = free.next() {
        return Err(Failure::usage(format!("unexpected argument '{extra}'")));
    }
    if (from.is_some() || count.is_some()) && !matches!(command, Command::Fetch { .. }) {
        return Err(Failure::usage("--from and --count go with fetch TOPIC"));
    }
    Ok((broker, json, command))
}

fn run(args: pico_args::Arguments, literal: Vec<OsString>) -> Result<(), Failure> {
    let (broker, json, command) = parse(args, literal)?;
    if let Command::User(command, users) = command {
        return user::run(command, users);
    }
    let mut client = cli::connect(&broker, "courier")?;
    match command {
        Command::Topics => {
            let topics = all_topics(&mut client)?;
            if json {
                print_json(&topics)
            } else if topics.is_empty() {
                cli::print_line("no topics")
            } else {
                cli::print_line(topic_table(&topics).trim_end())
            }
        }
        Command::Topic(name) => {
            let topic = client
                .topic_info(&name)
                .map_err(|e| cli::topic_failure(&e, &name))?;
            if json {
                print_json(&topic)
            } else {
                cli::print_line(topic_lines(&topic).trim_end())
            }
        }
        Command::Fetch { topic, from, count } => {
            let mut listed = Vec::new();
            replay::fetch_each(&mut client, &topic, from, count, |message| {
                let line = FetchedLine::new(message);
                if json {
                    listed.push(line);
                    Ok(())
                } else {
                    let payload = line.payload.or(line.payload_base64).unwrap_or_default();
                    cli::print_line(format_args!(
                        "{} {} {payload}",
                        line.offset,
                        replay::time(line.time_ms)
                    ))
                }
            })?;
            if json {
                print_json(&listed)?;
            }
            Ok(())
        }
        Command::Stats => {
            let stats = client.stats()?;
            if json {
                print_json(&stats)
            } else {
                cli::print_line(stats_lines(&stats).trim_end())
            }
        }
        Command::User(..) => Ok(()),
    }
}

/// One fetched message as `fetch` shows it: the payload as text when it is
/// UTF-8, else base64 (as `subscriber --json`).
#[derive(Serialize)]
struct FetchedLine {
    offset: u64,
    time_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload_base64: Option<String>,
}

impl FetchedLine {
    fn new(message: &courier::client::FetchedMessage) -> FetchedLine {
        use base64::prelude::{BASE64_STANDARD, Engine as _};
        let text = std::str::from_utf8(&message.payload).ok();
        FetchedLine {
            offset: message.offset,
            time_ms: message.time_ms,
            payload: text.map(str::to_owned),
            payload_base64: text
                .is_none()
                .then(|| BASE64_STANDARD.encode(&message.payload)),
        }
    }
}

/// Every page of LIST_TOPICS, from the first.
fn all_topics(client: &mut Client) -> Result<Vec<TopicSummary>, Failure> {
    let mut topics = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = client.list_topics(after.as_deref(), MAX_LIST_TOPICS)?;
        topics.extend(page.topics);
        match page.next {
            // Names come in order: a `next` that does not move on would
            // loop for ever.
            Some(next) if after.as_ref().is_none_or(|a| *a < next) => after = Some(next),
            Some(_) => return Err(Failure::runtime("the broker's topic pages do not advance")),
            None => return Ok(topics),
        }
    }
}

fn print_json(value: &impl Serialize) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Failure::runtime(format!("cannot write JSON: {e}")))?;
    cli::print_line(text)
}

const TOPIC_COLUMNS: [&str; 5] = [
    "TOPIC",
    "NEXT OFFSET",
    "BACKLOG MSGS",
    "BACKLOG BYTES",
    "SUBSCRIBERS",
];

/// The topics as aligned columns: names to the left, numbers to the right.
fn topic_table(topics: &[TopicSummary]) -> String {
    let rows: Vec<[String; 5]> = topics
        .iter()
        .map(|t| {
            [
                t.name.clone(),
                t.next_offset.to_string(),
                t.backlog_messages.to_string(),
                t.backlog_bytes.to_string(),
                t.subscribers.to_string(),
            ]
        })
        .collect();
    let mut widths = TOPIC_COLUMNS.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let mut out = String::new();
    let header = TOPIC_COLUMNS.map(str::to_owned);
    for row in std::iter::once(&header).chain(&rows) {
        for (i, (cell, width)) in row.iter().zip(widths).enumerate() {
            let line = if i == 0 {
                format!("{cell:<width$}")
            } else {
                format!("  {cell:>width$}")
            };
            out.push_str(&line);
        }
        out.push('\n');
    }
    out
}

/// `label  value` lines, the labels padded to one width.
fn aligned(pairs: &[(&str, String)]) -> String {
    let width = pairs
        .iter()
        .map(|(label, _)| label.len())
        .max()
        .unwrap_or(0);
    pairs
        .iter()
        .map(|(label, value)| format!("{label:<width$}  {value}\n"))
        .collect()
}

fn topic_lines(t: &TopicSummary) -> String {
    let mut lines = vec![
        ("topic", t.name.clone()),
        ("next offset", t.next_offset.to_string()),
        ("backlog messages", t.backlog_messages.to_string()),
        ("backlog bytes", t.backlog_bytes.to_string()),
        ("subscribers", t.subscribers.to_string()),
        ("retention", retention_text(t)),
    ];
    if let Some(earliest) = t.earliest_offset {
        lines.push(("earliest offset", earliest.to_string()));
    }
    aligned(&lines)
}

/// `until acknowledged`, or the retained topic's bounds.
fn retention_text(t: &TopicSummary) -> String {
    let (Some(ms), Some(bytes)) = (t.retain_ms, t.retain_bytes) else {
        return "until acknowledged".to_owned();
    };
    let age = humantime::format_duration(std::time::Duration::from_millis(ms));
    match (ms, bytes) {
        (0, 0) => "kept (no age or size bound)".to_owned(),
        (_, 0) => format!("kept for {age}"),
        (0, _) => format!("kept up to {bytes} bytes"),
        _ => format!("kept for {age}, up to {bytes} bytes"),
    }
}

fn stats_lines(s: &Stats) -> String {
    let errors = if s.errors.is_empty() {
        "none".to_owned()
    } else {
        let list: Vec<String> = s.errors.iter().map(|(k, v)| format!("{k} {v}")).collect();
        list.join(", ")
    };
    let classes: Vec<String> = s
        .memory
        .iter()
        .filter(|(_, bytes)| **bytes > 0)
        .map(|(class, bytes)| format!("{class} {bytes}"))
        .collect();
    let memory = if classes.is_empty() {
        "nothing held".to_owned()
    } else {
        classes.join(", ")
    };
    aligned(&[
        ("uptime", format!("{:.1} s", s.uptime_ms as f64 / 1000.0)),
        (
            "connections",
            format!(
                "{} open, {} since start",
                s.connections, s.connections_total
            ),
        ),
        ("topics", s.topics.to_string()),
        ("publishers", s.publishers.to_string()),
        ("subscribers", s.subscribers.to_string()),
        ("subscriptions", s.subscriptions.to_string()),
        ("waiting pulls", s.waiting_pulls.to_string()),
        (
            "messages",
            format!("{} in, {} out", s.messages_in, s.messages_out),
        ),
        (
            "payload bytes",
            format!("{} in, {} out", s.bytes_in, s.bytes_out),
        ),
        (
            "backlog",
            format!("{} messages, {} bytes", s.backlog_messages, s.backlog_bytes),
        ),
        (
            "held publishes",
            format!(
                "{} now, {} since start, {} dropped with their connection",
                s.held_now, s.publishes_held, s.held_dropped
            ),
        ),
        (
            "memory",
            format!(
                "{} of {} bytes ({:.1} %)",
                s.memory_total,
                s.memory_limit,
                100.0 * s.memory_total as f64 / s.memory_limit.max(1) as f64
            ),
        ),
        ("memory by class", memory),
        ("errors", errors),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_topic_table_aligns_names_left_and_numbers_right() {
        let topic = |name: &str, next_offset| TopicSummary {
            name: name.into(),
            next_offset,
            backlog_messages: 2,
            backlog_bytes: 10,
            subscribers: 1,
            retain_ms: None,
            retain_bytes: None,
            earliest_offset: None,
        };
        let table = topic_table(&[topic("a", 5), topic("orders.eu", 123456789012345)]);
        assert_eq!(
            table,
            "\
TOPIC          NEXT OFFSET  BACKLOG MSGS  BACKLOG BYTES  SUBSCRIBERS
a                        5             2             10            1
orders.eu  123456789012345             2             10            1
"
        );
    }
}
