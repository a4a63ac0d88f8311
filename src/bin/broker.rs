//! `broker`: parses flags, binds, prints the address, and runs the loop.
//!
//! All behaviour lives in the library; this file only turns the command line
//! into a [`courier::Config`], installs the log backend (`env_logger`: the
//! library only logs through the `log` facade), and reports errors as one
//! line on stderr.

use courier::broker::{DURABLE_MAX_BACKLOG_BYTES, DURABLE_MAX_BACKLOG_MESSAGES, Limits};
use courier::client::with_default_port;
use courier::server::Recovery;
use courier::storage::{self, OpenError, RecoveryMode, SyncMode};
use courier::{Config, Server, Storage};
use log::LevelFilter;
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "usage: broker [--addr HOST[:PORT]] [OPTIONS]";

/// What a numeric flag holds, and so how its value is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Count,
    /// Bytes, with an optional K, M or G suffix.
    Size,
    /// Seconds, decimals allowed; `min` and `max` are in milliseconds.
    Secs,
}

/// A numeric flag and the values it accepts. Both `--help` and the parser
/// read these, so the help states exactly the rule enforced.
#[derive(Debug, Clone, Copy)]
struct Numeric {
    flag: &'static str,
    kind: Kind,
    min: u64,
    max: u64,
}

const MAX_SIZE: u64 = 1 << 40;
const HOUR_MS: u64 = 3_600_000;

const MAX_CONNECTIONS: Numeric = Numeric::count("--max-connections", 1, 1 << 20);
const MAX_FRAME_BYTES: Numeric = Numeric::size("--max-frame-bytes", 1024, u32::MAX as u64);
const MAX_BACKLOG_BYTES: Numeric = Numeric::size("--max-backlog-bytes", 1024, MAX_SIZE);
const MAX_BACKLOG_MESSAGES: Numeric = Numeric::count("--max-backlog-messages", 1, 1_000_000_000);
const MAX_TOPICS: Numeric = Numeric::count("--max-topics", 1, 100_000_000);
const MAX_SUBSCRIBERS_PER_TOPIC: Numeric =
    Numeric::count("--max-subscribers-per-topic", 1, 1_000_000);
const MAX_MEMORY: Numeric = Numeric::size("--max-memory", 16 << 20, MAX_SIZE);
const MAX_SESSIONS: Numeric = Numeric::count("--max-sessions", 1, 100_000_000);
const MAX_SUBSCRIPTIONS_PER_SESSION: Numeric =
    Numeric::count("--max-subscriptions-per-session", 1, 100_000_000);
const MAX_OUTPUT_BYTES: Numeric = Numeric::size("--max-output-bytes", 1024, MAX_SIZE);
const MAX_WAITING_PULLS: Numeric = Numeric::count("--max-waiting-pulls", 1, 1024);
const OUTPUT_TIMEOUT: Numeric = Numeric::secs("--output-timeout", 1, HOUR_MS);
const SESSION_TIMEOUT: Numeric = Numeric::secs("--session-timeout", 0, 7 * 24 * HOUR_MS);
const MAX_SESSION_TIMEOUT: Numeric = Numeric::secs("--max-session-timeout", 0, 365 * 24 * HOUR_MS);
const PUBLISH_HOLD: Numeric = Numeric::secs("--publish-hold", 0, HOUR_MS);
const HANDSHAKE_TIMEOUT: Numeric = Numeric::secs("--handshake-timeout", 1, HOUR_MS);
const FRAME_TIMEOUT: Numeric = Numeric::secs("--frame-timeout", 1, HOUR_MS);
const SEGMENT_BYTES: Numeric = Numeric::size("--segment-bytes", 64 << 10, 1 << 30);
const CACHE_BYTES: Numeric = Numeric::size("--cache-bytes", 1 << 20, MAX_SIZE);
const MAX_DISK: Numeric = Numeric::size("--max-disk", 1 << 20, 1 << 50);
/// Where the log lives when no flag says otherwise.
const DEFAULT_DATA_DIR: &str = "courier-data";
const SHUTDOWN_GRACE: Numeric = Numeric::secs("--shutdown-grace", 0, HOUR_MS);

/// The flags whose lower bound is `--max-frame-bytes` rather than `min`: a
/// backlog or an output buffer must hold at least one frame.
const AT_LEAST_A_FRAME: [&str; 2] = ["--max-backlog-bytes", "--max-output-bytes"];

/// `--max-memory` must hold this many frames besides its fixed minimum:
/// the reply reserve (1/16) must take at least one whole reply.
const MEMORY_FRAMES: u64 = 16;

impl Numeric {
    const fn count(flag: &'static str, min: u64, max: u64) -> Numeric {
        Numeric::new(flag, Kind::Count, min, max)
    }

    const fn size(flag: &'static str, min: u64, max: u64) -> Numeric {
        Numeric::new(flag, Kind::Size, min, max)
    }

    /// `min` and `max` in milliseconds.
    const fn secs(flag: &'static str, min: u64, max: u64) -> Numeric {
        Numeric::new(flag, Kind::Secs, min, max)
    }

    const fn new(flag: &'static str, kind: Kind, min: u64, max: u64) -> Numeric {
        Numeric {
            flag,
            kind,
            min,
            max,
        }
    }

    fn show(&self, value: u64) -> String {
        match self.kind {
            Kind::Count => value.to_string(),
            Kind::Size => show_size(value),
            Kind::Secs => format!("{}", value as f64 / 1000.0),
        }
    }

    /// `1K to 4294967295`, as `--help` and the errors state it.
    fn range(&self) -> String {
        let min = if AT_LEAST_A_FRAME.contains(&self.flag) {
            "--max-frame-bytes".to_owned()
        } else {
            self.show(self.min)
        };
        format!("{min} to {}", self.show(self.max))
    }
}

fn show_size(bytes: u64) -> String {
    for (suffix, shift) in [("G", 30), ("M", 20), ("K", 10)] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{}{suffix}", bytes >> shift);
        }
    }
    bytes.to_string()
}

fn help() -> String {
    let d = Config::default();
    let l = Limits::default();
    let size = |bytes: usize| show_size(bytes as u64);
    format!(
        "broker — the Courier publish/subscribe message broker

{USAGE}

Serves the protocol in PROTOCOL.md on one thread. Prints
\"Server started on HOST:PORT\" once it accepts connections, and
\"Server stopped\" after a clean shutdown (SIGINT or SIGTERM). SIGHUP
rereads the --users file.

Options (each numeric flag lists the values it accepts):
  --addr HOST[:PORT]               address to listen on [default: localhost:5555];
                                   the port defaults to 5555; port 0 picks a free
                                   port (the line shows it)
  --max-connections N              connections beyond N are refused
                                   [default: {}; {}]
  --max-frame-bytes SIZE           largest frame in either direction
                                   [default: {}; {}]
  --max-backlog-bytes SIZE         per topic: unacknowledged payload bytes kept
                                   (on disk when durable, in memory with
                                   --memory-only); past it, publishes wait (see
                                   --publish-hold) [default: {} durable, {} with
                                   --memory-only; {}]
  --max-backlog-messages N         per topic: unacknowledged messages kept
                                   [default: {} durable, {} with --memory-only; {}]
  --max-topics N                   topics the broker holds at most
                                   [default: {}; {}]
  --max-subscribers-per-topic N    subscribers one topic takes at most
                                   [default: {}; {}]
  --max-memory SIZE                everything held for clients together (messages,
                                   topics, sessions, buffers); past it, requests that
                                   add state get BROKER_FULL (retryable)
                                   [default: {}; {}, and at least 16 × --max-frame-bytes]
  --max-sessions N                 subscriber sessions, attached or not, at most
                                   (TOO_MANY_SESSIONS) [default: {}; {}]
  --max-subscriptions-per-session N
                                   subscriptions one session holds at most
                                   (TOO_MANY_SUBSCRIPTIONS) [default: {}; {}]
  --max-output-bytes SIZE          a client with more unread replies than this has
                                   its requests wait until they drain to half
                                   [default: {}; {}]
  --max-waiting-pulls N            pulls one subscriber may have waiting at once;
                                   past it the oldest is answered empty
                                   [default: {}; {}]
  --output-timeout SECS            a client whose socket takes no byte of its
                                   waiting replies for this long is disconnected
                                   [default: {}; {}]
  --session-timeout SECS           a disconnected subscriber session is kept this
                                   long for resuming [default: {}; {}]
  --max-session-timeout SECS       the longest a subscriber may ask its session be
                                   kept (REGISTER_SUBSCRIBER's timeout_ms; longer
                                   asks are clamped; at least --session-timeout)
                                   [default: {}; {}]
  --publish-hold SECS              a publish to a full topic (or a full broker)
                                   waits this long for room, in order, before it
                                   gets TOPIC_FULL (BROKER_FULL); 0 refuses at once
                                   [default: {}; {}]
  --handshake-timeout SECS         time from connect to HELLO
                                   [default: {}; {}]
  --frame-timeout SECS             time for one frame to arrive once begun
                                   [default: {}; {}]
  --shutdown-grace SECS            time to settle and flush replies on shutdown
                                   [default: {}; {}]
  --data-dir DIR                   keep the durable log in DIR (created if missing,
                                   locked while the broker runs)
                                   [default: {DEFAULT_DATA_DIR} in the working directory]
  --memory-only                    keep nothing on disk: a restart loses everything
  --fsync MODE                     always: a publish is answered once on disk
                                   (fdatasync); interval:MS: sync every MS ms
                                   (a power cut loses up to MS ms); never: leave
                                   it to the OS [default: always]
  --segment-bytes SIZE             the log rolls to a new file past this size
                                   [default: {}; {}]
  --cache-bytes SIZE               durable: payload bytes of recent messages kept
                                   in memory (inside --max-memory); older ones are
                                   read back from the log, off the loop thread, for
                                   subscribers behind [default: {}; {}]
  --max-disk SIZE                  durable: the log's bytes on disk at most; past
                                   it, publishes wait (see --publish-hold), then get
                                   DISK_FULL (retryable) [default: none; {}]
  --truncate-corrupt               at start, cut the log at a damaged record
                                   (and drop what follows) instead of refusing
                                   to start
  --users FILE                     require users: HELLO must carry a user's
                                   credentials, and each request is checked against
                                   its grants (make the file with `courier user add`;
                                   SIGHUP rereads it) [default: no users, anyone
                                   may do anything]
  --tls-cert PEM                   serve TLS only, with this certificate chain
                                   (leaf first; needs --tls-key)
  --tls-key PEM                    the private key of --tls-cert
  --log-level LEVEL                error, warn, info, debug, trace or off; overrides
                                   RUST_LOG [default: RUST_LOG when set (env_logger
                                   syntax, e.g. courier=debug), else info]
  -h, --help                       print this help
  -V, --version                    print the version

SIZE is a number of bytes, optionally with a suffix: K, M, G (powers of 1024).
SECS is a number of seconds; decimals are allowed (0.5). --max-backlog-bytes
and --max-output-bytes must be at least --max-frame-bytes (each must hold a
whole frame): when raising --max-frame-bytes, raise them too.",
        d.max_connections,
        MAX_CONNECTIONS.range(),
        size(l.max_frame_bytes),
        MAX_FRAME_BYTES.range(),
        size(DURABLE_MAX_BACKLOG_BYTES),
        size(l.max_backlog_bytes),
        MAX_BACKLOG_BYTES.range(),
        DURABLE_MAX_BACKLOG_MESSAGES,
        l.max_backlog_messages,
        MAX_BACKLOG_MESSAGES.range(),
        l.max_topics,
        MAX_TOPICS.range(),
        l.max_subscribers_per_topic,
        MAX_SUBSCRIBERS_PER_TOPIC.range(),
        size(l.max_memory),
        MAX_MEMORY.range(),
        l.max_sessions,
        MAX_SESSIONS.range(),
        l.max_subscriptions_per_session,
        MAX_SUBSCRIPTIONS_PER_SESSION.range(),
        size(l.max_output_bytes),
        MAX_OUTPUT_BYTES.range(),
        l.max_waiting_pulls,
        MAX_WAITING_PULLS.range(),
        d.output_timeout.as_secs_f64(),
        OUTPUT_TIMEOUT.range(),
        l.session_timeout.as_secs_f64(),
        SESSION_TIMEOUT.range(),
        l.max_session_timeout.as_secs_f64(),
        MAX_SESSION_TIMEOUT.range(),
        l.publish_hold.as_secs_f64(),
        PUBLISH_HOLD.range(),
        d.handshake_timeout.as_secs_f64(),
        HANDSHAKE_TIMEOUT.range(),
        d.frame_timeout.as_secs_f64(),
        FRAME_TIMEOUT.range(),
        d.shutdown_grace.as_secs_f64(),
        SHUTDOWN_GRACE.range(),
        show_size(storage::DEFAULT_SEGMENT_BYTES),
        SEGMENT_BYTES.range(),
        size(l.cache_bytes),
        CACHE_BYTES.range(),
        MAX_DISK.range(),
    )
}

/// A command-line mistake: exit status 2 with the usage line.
struct UsageError(String);

fn main() -> ExitCode {
    let mut args = pico_args::Arguments::from_env();
    if args.contains(["-h", "--help"]) {
        println!("{}", help());
        return ExitCode::SUCCESS;
    }
    if args.contains(["-V", "--version"]) {
        println!("broker {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let (config, addr_text) = match parse(&mut args) {
        Ok(parsed) => parsed,
        Err(UsageError(message)) => {
            eprintln!("broker: {message}\n{USAGE}\n(see broker --help)");
            return ExitCode::from(2);
        }
    };
    if let Storage::Dir { path, .. } = &config.storage
        && !path.exists()
    {
        println!(
            "Data directory {} does not exist: creating it",
            path.display()
        );
    }
    let server = match Server::bind(config) {
        Ok(server) => server,
        Err(e) => {
            match e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<OpenError>())
            {
                Some(OpenError::Corrupt(_)) => eprintln!(
                    "broker: {e}; refusing to start (--truncate-corrupt cuts the log there and reports what it drops)"
                ),
                Some(_) => eprintln!("broker: {e}"),
                None => eprintln!("broker: cannot listen on {addr_text}: {e}"),
            }
            return ExitCode::FAILURE;
        }
    };
    if let Some(recovery) = server.recovery() {
        print_recovery(recovery);
    }
    println!(
        "Server started on {}:{}",
        host_part(&addr_text),
        server.local_addr().port()
    );
    match server.run() {
        Ok(()) => {
            println!("Server stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("broker: stopped by an error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What recovery found, in a few lines before "Server started".
fn print_recovery(r: &Recovery) {
    let (report, rebuilt) = (&r.report, &r.rebuilt);
    println!(
        "Data directory {}: recovered {} topics, {} retained messages, {} sessions, {} subscriptions from {} records ({} bytes, {} segments) in {:.1} ms",
        r.dir.display(),
        rebuilt.topics,
        rebuilt.messages,
        rebuilt.sessions,
        rebuilt.subscriptions,
        report.records,
        report.bytes,
        report.segments,
        r.elapsed.as_secs_f64() * 1000.0
    );
    if let Some(cut) = &report.torn_tail {
        println!(
            "Torn tail cut: {} bytes at byte {} of {} (a write the last stop interrupted; nothing acknowledged)",
            cut.bytes_dropped,
            cut.offset,
            cut.file.display()
        );
    }
    if let Some(cut) = &report.corruption_cut {
        println!(
            "Corruption cut (--truncate-corrupt): {:?} at byte {} of {}; dropped {} bytes and {} later segments",
            cut.problem,
            cut.offset,
            cut.file.display(),
            cut.bytes_dropped,
            cut.segments_removed.len()
        );
    }
}

/// `--data-dir`, `--memory-only`, `--fsync`, `--segment-bytes`,
/// `--truncate-corrupt`.
fn parse_storage(args: &mut pico_args::Arguments) -> Result<Storage, UsageError> {
    let memory_only = args.contains("--memory-only");
    let truncate = args.contains("--truncate-corrupt");
    let dir: Option<String> = value(args, "--data-dir")?;
    let sync = option(args, "--fsync", |s| {
        s.trim().parse::<SyncMode>().map_err(UsageError)
    })?;
    let mut segment_bytes = storage::DEFAULT_SEGMENT_BYTES as usize;
    set_count(args, &SEGMENT_BYTES, &mut segment_bytes)?;
    if memory_only {
        return match dir {
            Some(_) => Err(UsageError(
                "--memory-only and --data-dir exclude each other".into(),
            )),
            None => Ok(Storage::MemoryOnly),
        };
    }
    Ok(Storage::Dir {
        path: dir.unwrap_or_else(|| DEFAULT_DATA_DIR.into()).into(),
        log: storage::Config {
            sync: sync.unwrap_or(SyncMode::Always),
            segment_bytes: segment_bytes as u64,
            recovery: if truncate {
                RecoveryMode::TruncateAtCorruption
            } else {
                RecoveryMode::Strict
            },
            ..storage::Config::default()
        },
    })
}

fn parse(args: &mut pico_args::Arguments) -> Result<(Config, String), UsageError> {
    let mut config = Config {
        handle_signals: true,
        ..Config::default()
    };
    let addr_text: String = option(args, "--addr", |s| Ok(s.to_string()))?
        .map_or_else(|| "localhost:5555".into(), |a| with_default_port(&a));
    config.addr = resolve(&addr_text)?;
    config.storage = parse_storage(args)?;
    let l = &mut config.limits;
    if config.storage != Storage::MemoryOnly {
        // The backlog is on disk: its bounds are the disk's, not memory's.
        l.max_backlog_bytes = DURABLE_MAX_BACKLOG_BYTES;
        l.max_backlog_messages = DURABLE_MAX_BACKLOG_MESSAGES;
    }
    set_count(args, &CACHE_BYTES, &mut l.cache_bytes)?;
    let mut max_disk = 0;
    set_count(args, &MAX_DISK, &mut max_disk)?;
    l.max_disk_bytes = (max_disk > 0).then_some(max_disk as u64);
    set_count(args, &MAX_FRAME_BYTES, &mut l.max_frame_bytes)?;
    set_count(args, &MAX_BACKLOG_BYTES, &mut l.max_backlog_bytes)?;
    set_count(args, &MAX_BACKLOG_MESSAGES, &mut l.max_backlog_messages)?;
    set_count(args, &MAX_TOPICS, &mut l.max_topics)?;
    set_count(
        args,
        &MAX_SUBSCRIBERS_PER_TOPIC,
        &mut l.max_subscribers_per_topic,
    )?;
    set_count(args, &MAX_MEMORY, &mut l.max_memory)?;
    set_count(args, &MAX_SESSIONS, &mut l.max_sessions)?;
    set_count(
        args,
        &MAX_SUBSCRIPTIONS_PER_SESSION,
        &mut l.max_subscriptions_per_session,
    )?;
    set_secs(args, &SESSION_TIMEOUT, &mut l.session_timeout)?;
    set_secs(args, &MAX_SESSION_TIMEOUT, &mut l.max_session_timeout)?;
    set_secs(args, &PUBLISH_HOLD, &mut l.publish_hold)?;
    set_count(args, &MAX_OUTPUT_BYTES, &mut l.max_output_bytes)?;
    set_count(args, &MAX_WAITING_PULLS, &mut l.max_waiting_pulls)?;
    set_count(args, &MAX_CONNECTIONS, &mut config.max_connections)?;
    set_secs(args, &OUTPUT_TIMEOUT, &mut config.output_timeout)?;
    set_secs(args, &HANDSHAKE_TIMEOUT, &mut config.handshake_timeout)?;
    set_secs(args, &FRAME_TIMEOUT, &mut config.frame_timeout)?;
    set_secs(args, &SHUTDOWN_GRACE, &mut config.shutdown_grace)?;
    let path = |s: &str| Ok(std::path::PathBuf::from(s));
    config.users = option(args, "--users", path)?;
    let cert = option(args, "--tls-cert", path)?;
    let key = option(args, "--tls-key", path)?;
    init_logging(option(args, "--log-level", parse_level)?);
    config.tls = match (cert, key) {
        (None, None) => None,
        (Some(cert), Some(key)) => {
            Some(courier::tls::server_config(&cert, &key).map_err(|e| UsageError(e.to_string()))?)
        }
        _ => {
            return Err(UsageError("--tls-cert and --tls-key go together".into()));
        }
    };
    if config.users.is_none() && !config.addr.ip().is_loopback() {
        log::warn!(
            "listening on {} without --users: anyone who can reach this address may \
             publish, read and delete every topic",
            config.addr
        );
    }
    let rest = args.clone().finish();
    if let Some(extra) = rest.first() {
        return Err(UsageError(format!(
            "unexpected argument '{}'",
            extra.to_string_lossy()
        )));
    }
    let frame = config.limits.max_frame_bytes;
    for (numeric, value) in [
        (&MAX_BACKLOG_BYTES, config.limits.max_backlog_bytes),
        (&MAX_OUTPUT_BYTES, config.limits.max_output_bytes),
    ] {
        if value < frame {
            return Err(UsageError(format!(
                "{} {}: must be at least --max-frame-bytes, which is {} (accepted: {} to {})",
                numeric.flag,
                show_size(value as u64),
                show_size(frame as u64),
                show_size(frame as u64),
                show_size(numeric.max),
            )));
        }
    }
    let (default, longest) = (
        config.limits.session_timeout,
        config.limits.max_session_timeout,
    );
    if default > longest {
        return Err(UsageError(format!(
            "--session-timeout {}: must be at most --max-session-timeout, which is {}",
            default.as_secs_f64(),
            longest.as_secs_f64()
        )));
    }
    let memory_floor = (frame as u64).saturating_mul(MEMORY_FRAMES);
    if (config.limits.max_memory as u64) < memory_floor {
        return Err(UsageError(format!(
            "--max-memory {}: must be at least {MEMORY_FRAMES} × --max-frame-bytes, which is {}",
            show_size(config.limits.max_memory as u64),
            show_size(memory_floor),
        )));
    }
    Ok((config, addr_text))
}

fn option<T>(
    args: &mut pico_args::Arguments,
    name: &'static str,
    parse: fn(&str) -> Result<T, UsageError>,
) -> Result<Option<T>, UsageError> {
    value(args, name)?
        .map(|t| parse(&t).map_err(|UsageError(why)| UsageError(format!("{name} {t:?}: {why}"))))
        .transpose()
}

/// Sets `slot` from a count or size flag, if given, within its range.
fn set_count(
    args: &mut pico_args::Arguments,
    numeric: &Numeric,
    slot: &mut usize,
) -> Result<(), UsageError> {
    let Some(text) = value(args, numeric.flag)? else {
        return Ok(());
    };
    let parsed = match numeric.kind {
        Kind::Size => parse_size(&text),
        _ => text.trim().parse().ok(),
    };
    let Some(n) = parsed else {
        let expected = match numeric.kind {
            Kind::Size => "a size such as 1048576, 512K or 64M",
            _ => "a whole number",
        };
        return Err(UsageError(format!(
            "{}: '{text}' is not {expected}",
            numeric.flag
        )));
    };
    check(numeric, &text, (numeric.min..=numeric.max).contains(&n))?;
    *slot = usize::try_from(n).unwrap_or(usize::MAX);
    Ok(())
}

/// Sets `slot` from a seconds flag, if given, within its range.
fn set_secs(
    args: &mut pico_args::Arguments,
    numeric: &Numeric,
    slot: &mut Duration,
) -> Result<(), UsageError> {
    let Some(text) = value(args, numeric.flag)? else {
        return Ok(());
    };
    let Ok(secs) = text.trim().parse::<f64>() else {
        return Err(UsageError(format!(
            "{}: '{text}' is not a number of seconds such as 30 or 0.5",
            numeric.flag
        )));
    };
    let ms = secs * 1000.0;
    // False for NaN as well.
    check(
        numeric,
        &text,
        (numeric.min as f64..=numeric.max as f64).contains(&ms),
    )?;
    *slot = Duration::from_secs_f64(secs);
    Ok(())
}

fn value(
    args: &mut pico_args::Arguments,
    flag: &'static str,
) -> Result<Option<String>, UsageError> {
    args.opt_value_from_str(flag)
        .map_err(|e| UsageError(e.to_string()))
}

fn check(numeric: &Numeric, text: &str, within: bool) -> Result<(), UsageError> {
    if within {
        Ok(())
    } else {
        Err(UsageError(format!(
            "{}: {text} is out of range ({})",
            numeric.flag,
            numeric.range()
        )))
    }
}

/// Resolves HOST:PORT, preferring IPv4 (so `localhost` serves clients that
/// dial 127.0.0.1 as well as those that resolve the name).
fn resolve(text: &str) -> Result<SocketAddr, UsageError> {
    let addrs: Vec<SocketAddr> = text
        .to_socket_addrs()
        .map_err(|e| UsageError(format!("--addr {text:?}: {e} (expected HOST:PORT)")))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| UsageError(format!("--addr {text:?}: resolves to no address")))
}

fn host_part(addr_text: &str) -> &str {
    addr_text
        .rsplit_once(':')
        .map_or(addr_text, |(host, _)| host)
}

/// Bytes, with an optional K, M or G suffix (and B or iB after it).
fn parse_size(text: &str) -> Option<u64> {
    let upper = text.trim().to_ascii_uppercase();
    let upper = upper
        .strip_suffix("IB")
        .or_else(|| upper.strip_suffix('B'))
        .unwrap_or(&upper);
    let (digits, shift) = match upper.strip_suffix(['K', 'M', 'G']) {
        Some(digits) if upper.ends_with('K') => (digits, 10),
        Some(digits) if upper.ends_with('M') => (digits, 20),
        Some(digits) => (digits, 30),
        None => (upper, 0),
    };
    digits
        .trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
}

/// `log`'s own names, any case: error, warn, info, debug, trace, off.
fn parse_level(text: &str) -> Result<LevelFilter, UsageError> {
    text.trim().parse().map_err(|_| {
        UsageError(format!(
            "unknown log level {text:?} (use error, warn, info, debug, trace or off)"
        ))
    })
}

/// Installs `env_logger` on stderr, each line stamped with the time (UTC,
/// milliseconds), the level and the module. `--log-level` wins when given, as
/// a flag is the more deliberate choice; otherwise RUST_LOG applies in full
/// (per-module filters too), and without either the level is info.
fn init_logging(flag: Option<LevelFilter>) {
    let mut builder = env_logger::Builder::new();
    builder.format_timestamp_millis();
    match flag {
        Some(level) => builder.filter_level(level),
        None => match std::env::var("RUST_LOG") {
            Ok(spec) => builder.parse_filters(&spec),
            Err(_) => builder.filter_level(LevelFilter::Info),
        },
    };
    // A second set-up (tests parse more than once) keeps the first logger.
    let _ = builder.try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_and_show_with_suffixes() {
        assert_eq!(parse_size("1048576"), Some(1 << 20));
        assert_eq!(parse_size("512K"), Some(512 << 10));
        assert_eq!(parse_size("64mib"), Some(64 << 20));
        assert_eq!(parse_size("2GB"), Some(2 << 30));
        assert_eq!(parse_size("1X"), None);
        assert_eq!(parse_size("K"), None);
        assert_eq!(show_size(1 << 20), "1M");
        assert_eq!(show_size(1536), "1536");
        assert_eq!(MAX_OUTPUT_BYTES.range(), "--max-frame-bytes to 1024G");
        assert_eq!(HANDSHAKE_TIMEOUT.range(), "0.001 to 3600");
    }

    #[test]
    fn memory_must_hold_sixteen_frames() {
        let args =
            |v: &[&str]| pico_args::Arguments::from_vec(v.iter().map(|s| s.into()).collect());
        let mut small = args(&["--max-memory", "16M", "--max-frame-bytes", "2M"]);
        match parse(&mut small) {
            Err(UsageError(message)) => {
                assert!(message.starts_with("--max-memory 16M: "), "{message}")
            }
            Ok(_) => panic!("accepted a budget of 8 frames"),
        }
        let mut fine = args(&[
            "--max-memory",
            "32M",
            "--max-frame-bytes",
            "2M",
            "--max-sessions",
            "7",
        ]);
        let Ok((config, _)) = parse(&mut fine) else {
            panic!("refused")
        };
        assert_eq!(config.limits.max_memory, 32 << 20);
        assert_eq!(config.limits.max_sessions, 7);
        let mut tiny = args(&["--max-memory", "1M"]);
        assert!(parse(&mut tiny).is_err());
    }

    #[test]
    fn a_durable_backlog_is_bounded_by_disk_and_the_cache_by_its_flag() {
        let parsed = |v: &[&str]| {
            let mut args = pico_args::Arguments::from_vec(v.iter().map(|s| s.into()).collect());
            parse(&mut args).map(|(config, _)| config.limits)
        };
        let Ok(durable) = parsed(&["--data-dir", "x", "--cache-bytes", "16M"]) else {
            panic!("refused")
        };
        assert_eq!(durable.max_backlog_bytes, DURABLE_MAX_BACKLOG_BYTES);
        assert_eq!(durable.cache_bytes, 16 << 20);
        assert_eq!(durable.max_disk_bytes, None);
        let Ok(memory) = parsed(&["--memory-only", "--max-disk", "1G"]) else {
            panic!("refused")
        };
        assert_eq!(
            memory.max_backlog_bytes,
            Limits::default().max_backlog_bytes
        );
        assert_eq!(memory.max_disk_bytes, Some(1 << 30));
        let Ok(given) = parsed(&["--max-backlog-bytes", "2G"]) else {
            panic!("refused")
        };
        assert_eq!(given.max_backlog_bytes, 2 << 30);
        match parsed(&["--cache-bytes", "1K"]) {
            Err(UsageError(message)) => {
                assert!(
                    message.starts_with("--cache-bytes: 1K is out of range"),
                    "{message}"
                )
            }
            Ok(_) => panic!("accepted a cache under its range"),
        }
    }

    #[test]
    fn a_backlog_smaller_than_a_frame_is_refused_by_name() {
        let mut args =
            pico_args::Arguments::from_vec(vec!["--max-backlog-bytes".into(), "1K".into()]);
        match parse(&mut args) {
            Err(UsageError(message)) => {
                assert!(message.starts_with("--max-backlog-bytes 1K: "), "{message}")
            }
            Ok(_) => panic!("accepted a backlog smaller than a frame"),
        }
    }

    #[test]
    fn a_default_session_timeout_past_the_maximum_is_refused_by_name() {
        let mut args = pico_args::Arguments::from_vec(
            [
                "--session-timeout",
                "7200",
                "--max-session-timeout",
                "3600",
                "--memory-only",
            ]
            .map(Into::into)
            .to_vec(),
        );
        match parse(&mut args) {
            Err(UsageError(message)) => {
                assert!(message.starts_with("--session-timeout 7200: "), "{message}")
            }
            Ok(_) => panic!("accepted a default session timeout past the maximum"),
        }
    }
}
