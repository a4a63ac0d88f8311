//! `broker`: parses flags, binds, prints the address, and runs the loop.
//!
//! All behaviour lives in the library; this file only turns the command line
//! into a [`courier::Config`], installs the log backend (`env_logger`: the
//! library only logs through the `log` facade), and reports errors as one
//! line on stderr.

use courier::broker::Limits;
use courier::{Config, Server};
use log::LevelFilter;
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "usage: broker [--addr HOST:PORT] [OPTIONS]";

fn help() -> String {
    let d = Config::default();
    let l = Limits::default();
    format!(
        "broker — the Courier publish/subscribe message broker

{USAGE}

Serves the protocol in PROTOCOL.md on one thread. Prints
\"Server started on HOST:PORT\" once it accepts connections, and
\"Server stopped\" after a clean shutdown (SIGINT or SIGTERM).

Options:
  --addr HOST:PORT                 address to listen on [default: localhost:5555];
                                   port 0 picks a free port (the line shows it)
  --max-connections N              connections beyond N are refused [default: {}]
  --max-frame-bytes SIZE           largest frame in either direction [default: {}]
  --max-backlog-bytes SIZE         per topic: unacknowledged payload bytes kept
                                   before publish gets TOPIC_FULL [default: {}]
  --max-backlog-messages N         per topic: unacknowledged messages kept [default: {}]
  --max-topics N                   topics the broker holds at most [default: {}]
  --max-subscribers-per-topic N    subscribers one topic takes at most [default: {}]
  --max-output-bytes SIZE          a client with more unread replies than this is
                                   disconnected [default: {}]
  --session-timeout SECS           a disconnected subscriber session is kept this
                                   long for resuming [default: {}]
  --handshake-timeout SECS         time from connect to HELLO [default: {}]
  --frame-timeout SECS             time for one frame to arrive once begun [default: {}]
  --shutdown-grace SECS            time to flush replies on shutdown [default: {}]
  --log-level LEVEL                error, warn, info, debug, trace or off; overrides
                                   RUST_LOG [default: RUST_LOG when set (env_logger
                                   syntax, e.g. courier=debug), else info]
  -h, --help                       print this help
  -V, --version                    print the version

SIZE is a number of bytes, optionally with a suffix: K, M, G (powers of 1024).",
        d.max_connections,
        l.max_frame_bytes,
        l.max_backlog_bytes,
        l.max_backlog_messages,
        l.max_topics,
        l.max_subscribers_per_topic,
        d.max_output_bytes,
        l.session_timeout.as_secs_f64(),
        d.handshake_timeout.as_secs_f64(),
        d.frame_timeout.as_secs_f64(),
        d.shutdown_grace.as_secs_f64(),
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
    let server = match Server::bind(config) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("broker: cannot listen on {addr_text}: {e}");
            return ExitCode::FAILURE;
        }
    };
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

fn parse(args: &mut pico_args::Arguments) -> Result<(Config, String), UsageError> {
    let mut config = Config {
        handle_signals: true,
        ..Config::default()
    };
    let addr_text: String =
        option(args, "--addr", |s| Ok(s.to_string()))?.unwrap_or_else(|| "localhost:5555".into());
    config.addr = resolve(&addr_text)?;
    let l = &mut config.limits;
    set(
        args,
        "--max-frame-bytes",
        parse_size,
        &mut l.max_frame_bytes,
    )?;
    set(
        args,
        "--max-backlog-bytes",
        parse_size,
        &mut l.max_backlog_bytes,
    )?;
    set(
        args,
        "--max-backlog-messages",
        parse_count,
        &mut l.max_backlog_messages,
    )?;
    set(args, "--max-topics", parse_count, &mut l.max_topics)?;
    set(
        args,
        "--max-subscribers-per-topic",
        parse_count,
        &mut l.max_subscribers_per_topic,
    )?;
    set(
        args,
        "--session-timeout",
        parse_secs,
        &mut l.session_timeout,
    )?;
    set(
        args,
        "--max-connections",
        parse_count,
        &mut config.max_connections,
    )?;
    set(
        args,
        "--max-output-bytes",
        parse_size,
        &mut config.max_output_bytes,
    )?;
    set(
        args,
        "--handshake-timeout",
        parse_secs,
        &mut config.handshake_timeout,
    )?;
    set(
        args,
        "--frame-timeout",
        parse_secs,
        &mut config.frame_timeout,
    )?;
    set(
        args,
        "--shutdown-grace",
        parse_secs,
        &mut config.shutdown_grace,
    )?;
    init_logging(option(args, "--log-level", parse_level)?);
    let rest = args.clone().finish();
    if let Some(extra) = rest.first() {
        return Err(UsageError(format!(
            "unexpected argument '{}'",
            extra.to_string_lossy()
        )));
    }
    let limits = &config.limits;
    if limits.max_frame_bytes < 1024 || limits.max_frame_bytes > u32::MAX as usize {
        return Err(UsageError(
            "--max-frame-bytes must be between 1K and 4G".into(),
        ));
    }
    if limits.max_backlog_bytes < limits.max_frame_bytes {
        return Err(UsageError(
            "--max-backlog-bytes must be at least --max-frame-bytes".into(),
        ));
    }
    if config.max_output_bytes < limits.max_frame_bytes {
        return Err(UsageError(
            "--max-output-bytes must be at least --max-frame-bytes".into(),
        ));
    }
    Ok((config, addr_text))
}

fn option<T>(
    args: &mut pico_args::Arguments,
    name: &'static str,
    parse: fn(&str) -> Result<T, UsageError>,
) -> Result<Option<T>, UsageError> {
    let text: Option<String> = args
        .opt_value_from_str(name)
        .map_err(|e| UsageError(e.to_string()))?;
    text.map(|t| parse(&t).map_err(|UsageError(why)| UsageError(format!("{name} {t:?}: {why}"))))
        .transpose()
}

fn set<T>(
    args: &mut pico_args::Arguments,
    name: &'static str,
    parse: fn(&str) -> Result<T, UsageError>,
    slot: &mut T,
) -> Result<(), UsageError> {
    if let Some(value) = option(args, name, parse)? {
        *slot = value;
    }
    Ok(())
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

fn parse_count(text: &str) -> Result<usize, UsageError> {
    text.parse()
        .map_err(|_| UsageError("expected a whole number".into()))
}

fn parse_size(text: &str) -> Result<usize, UsageError> {
    let text = text.trim();
    let upper = text.to_ascii_uppercase();
    let upper = upper
        .strip_suffix("IB")
        .or_else(|| upper.strip_suffix('B'))
        .unwrap_or(&upper);
    let (digits, shift) = match upper.chars().last() {
        Some('K') => (&upper[..upper.len() - 1], 10),
        Some('M') => (&upper[..upper.len() - 1], 20),
        Some('G') => (&upper[..upper.len() - 1], 30),
        _ => (upper, 0),
    };
    digits
        .trim()
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or_else(|| UsageError("expected a size such as 1048576, 512K or 64M".into()))
}

fn parse_secs(text: &str) -> Result<Duration, UsageError> {
    text.parse::<f64>()
        .ok()
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .ok_or_else(|| UsageError("expected a number of seconds such as 30 or 0.5".into()))
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
    builder.init();
}
