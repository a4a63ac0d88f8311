//! What the `publisher` and `subscriber` commands share: argument
//! conventions, the broker address, and how failures become one line on
//! stderr and an exit status.
//!
//! Exit statuses: 0 success, 1 a runtime failure (the broker refused, the
//! connection failed), 2 bad arguments (with the usage line), 3 nothing left
//! to do (no input to publish, no topic left to read). A failure is always
//! one line, `NAME: what went wrong`; messages about topics are written here
//! from the error *code*, never from the broker's text, so they stay stable
//! whatever the broker says.
//!
//! Numeric flags go through [`number`], so that every parse error names its
//! flag and every range is checked in one place.
//!
//! How to reach the broker — `--broker`, and `--tls`, `--ca`, `--user`,
//! `--token` (or `COURIER_USER`, `COURIER_TOKEN`) — is read once, by
//! [`broker_addr`], and kept for the process: every connection a command
//! opens (the subscriber reconnects) goes the same way.

pub mod replay;

use courier::ErrorCode;
use courier::client::{self, Client, ClientOptions, UserToken};
use pico_args::Arguments;
use std::ffi::OsString;
use std::fmt::Display;
use std::io::{self, Write};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

pub const DEFAULT_BROKER: &str = "localhost:5555";

/// The exit status when the command ran out of work without failing.
pub const EXIT_NOTHING_LEFT: u8 = 3;

/// The environment variable that names the broker when `--broker` is absent.
pub const BROKER_ENV: &str = "BROKER_ADDR";
/// The user and token when `--user` / `--token` are absent.
pub const USER_ENV: &str = "COURIER_USER";
pub const TOKEN_ENV: &str = "COURIER_TOKEN";

/// How connections are made, from the flags (see the module doc).
#[derive(Debug, Default, Clone)]
struct Security {
    tls: Option<Arc<rustls::ClientConfig>>,
    credentials: Option<UserToken>,
}

static SECURITY: OnceLock<Security> = OnceLock::new();

fn flag_or_env(
    args: &mut Arguments,
    flag: &'static str,
    env: &str,
) -> Result<Option<String>, Failure> {
    Ok(match args.opt_value_from_str::<_, String>(flag)? {
        Some(value) => Some(value),
        None => std::env::var(env).ok().filter(|v| !v.is_empty()),
    })
}

fn security(args: &mut Arguments) -> Result<Security, Failure> {
    let tls = args.contains("--tls");
    let ca: Option<PathBuf> = args.opt_value_from_os_str("--ca", |s| {
        Ok::<_, std::convert::Infallible>(PathBuf::from(s))
    })?;
    if ca.is_some() && !tls {
        return Err(Failure::usage("--ca needs --tls"));
    }
    let tls = match tls {
        false => None,
        true => Some(courier::tls::client_config(ca.as_deref()).map_err(Failure::usage)?),
    };
    let user = flag_or_env(args, "--user", USER_ENV)?;
    let token = flag_or_env(args, "--token", TOKEN_ENV)?;
    let credentials = match (user, token) {
        (None, None) => None,
        (Some(user), Some(token)) => Some(UserToken { user, token }),
        (Some(_), None) => {
            return Err(Failure::usage(format!(
                "--user needs --token (or ${TOKEN_ENV})"
            )));
        }
        (None, Some(_)) => {
            return Err(Failure::usage(format!(
                "--token needs --user (or ${USER_ENV})"
            )));
        }
    };
    Ok(Security { tls, credentials })
}

/// Why a command stops early.
#[derive(Debug)]
pub enum Failure {
    /// The arguments are wrong: exit 2 with the usage line.
    Usage(String),
    /// Something failed while running: exit 1.
    Runtime(String),
    /// Nothing left to do (empty input, every topic deleted): exit 3.
    #[allow(dead_code)] // `courier` only reads, so it never runs out of work.
    NothingLeft(String),
    /// Exit 1 without a message (standard output was closed: nobody reads).
    Silent,
}

impl Failure {
    pub fn usage(message: impl Display) -> Failure {
        Failure::Usage(message.to_string())
    }

    pub fn runtime(message: impl Display) -> Failure {
        Failure::Runtime(message.to_string())
    }
}

impl From<pico_args::Error> for Failure {
    fn from(e: pico_args::Error) -> Failure {
        Failure::usage(e)
    }
}

impl From<client::Error> for Failure {
    fn from(e: client::Error) -> Failure {
        match &e {
            client::Error::Connect { addr, source }
                if source.kind() == io::ErrorKind::ConnectionRefused =>
            {
                Failure::runtime(format!("{e}; is the broker running at {addr}?"))
            }
            _ => Failure::runtime(e),
        }
    }
}

/// A command's name and texts.
pub struct Program {
    pub name: &'static str,
    /// One line, starting `usage: `.
    pub usage: &'static str,
    /// The full `--help` text.
    pub help: &'static str,
}

impl Program {
    /// Answers `--help` and `--version`, or runs `run` with the arguments
    /// and the free arguments given after `--` (taken literally), then turns
    /// its outcome into an exit status.
    pub fn main(
        &self,
        run: impl FnOnce(Arguments, Vec<OsString>) -> Result<(), Failure>,
    ) -> ExitCode {
        let mut args: Vec<OsString> = std::env::args_os().skip(1).collect();
        let literal = match args.iter().position(|a| a == "--") {
            Some(at) => args.split_off(at).into_iter().skip(1).collect(),
            None => Vec::new(),
        };
        let mut args = Arguments::from_vec(args);
        if args.contains(["-h", "--help"]) {
            return exit_status(print_line(self.help.trim_end()));
        }
        if args.contains(["-V", "--version"]) {
            return exit_status(print_line(format_args!(
                "{} {}",
                self.name,
                env!("CARGO_PKG_VERSION")
            )));
        }
        match run(args, literal) {
            Ok(()) => ExitCode::SUCCESS,
            Err(Failure::Usage(message)) => {
                note(format_args!(
                    "{name}: {message}\n{usage}\nTry '{name} --help' for more information.",
                    name = self.name,
                    usage = self.usage
                ));
                ExitCode::from(2)
            }
            Err(Failure::Runtime(message)) => {
                note(format_args!("{}: {message}", self.name));
                ExitCode::from(1)
            }
            Err(Failure::NothingLeft(message)) => {
                note(format_args!("{}: {message}", self.name));
                ExitCode::from(EXIT_NOTHING_LEFT)
            }
            Err(Failure::Silent) => ExitCode::from(1),
        }
    }
}

fn exit_status(result: Result<(), Failure>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::from(1),
    }
}

/// Prints one line on standard output. (`println!` would panic if nobody
/// reads it.)
pub fn print_line(line: impl Display) -> Result<(), Failure> {
    writeln!(io::stdout().lock(), "{line}").map_err(output_failure)
}

/// Prints one line on standard error, if anyone can see it.
pub fn note(line: impl Display) {
    let _ = writeln!(io::stderr().lock(), "{line}");
}

/// A failed write to standard output. When nobody reads any more (`| head`)
/// the command stops quietly, as if by SIGPIPE.
pub fn output_failure(e: io::Error) -> Failure {
    if e.kind() == io::ErrorKind::BrokenPipe {
        Failure::Silent
    } else {
        Failure::runtime(format!(
            "cannot write to standard output: {}",
            client::io_message(&e)
        ))
    }
}

/// `--broker`, else `$BROKER_ADDR`, else `localhost:5555`; a host without
/// a port gets port 5555. Reads the other connection flags too.
pub fn broker_addr(args: &mut Arguments) -> Result<String, Failure> {
    let found = security(args)?;
    let _ = SECURITY.set(found);
    let addr = match args.opt_value_from_str::<_, String>("--broker")? {
        Some(addr) if addr.trim().is_empty() => {
            return Err(Failure::usage("--broker: expected HOST or HOST:PORT"));
        }
        Some(addr) => addr,
        None => match std::env::var(BROKER_ENV) {
            Ok(addr) if !addr.trim().is_empty() => addr,
            _ => DEFAULT_BROKER.to_owned(),
        },
    };
    Ok(client::with_default_port(&addr))
}

/// The value of a numeric `flag`, if given, within `range`. The errors name
/// the flag: `--count: 'abc' is not a number`.
#[allow(dead_code)] // The publisher has no numeric flag.
pub fn number<T>(
    args: &mut Arguments,
    flag: &'static str,
    range: RangeInclusive<T>,
) -> Result<Option<T>, Failure>
where
    T: FromStr + PartialOrd + Display,
{
    let Some(text) = args.opt_value_from_str::<_, String>(flag)? else {
        return Ok(None);
    };
    let Ok(value) = text.trim().parse::<T>() else {
        return Err(Failure::usage(format!("{flag}: '{text}' is not a number")));
    };
    // `contains` is false for NaN too.
    if !range.contains(&value) {
        return Err(Failure::usage(format!(
            "{flag}: {text} is out of range ({} to {})",
            range.start(),
            range.end()
        )));
    }
    Ok(Some(value))
}

/// Fails on what pico-args left over that looks like a flag; returns the
/// rest (the free arguments), followed by those given after `--`.
pub fn free_arguments(args: Arguments, literal: Vec<OsString>) -> Result<Vec<OsString>, Failure> {
    let mut free = args.finish();
    if let Some(flag) = free.iter().find(|a| {
        let a = a.to_string_lossy();
        a.starts_with('-') && a != "-"
    }) {
        return Err(Failure::usage(format!(
            "unknown flag '{}'",
            flag.to_string_lossy()
        )));
    }
    free.extend(literal);
    Ok(free)
}

/// How the commands connect, as `name`.
pub fn client_options(name: &str) -> ClientOptions {
    let security = SECURITY.get().cloned().unwrap_or_default();
    ClientOptions {
        name: name.to_owned(),
        timeout: Some(Duration::from_secs(30)),
        connect_timeout: Some(Duration::from_secs(5)),
        credentials: security.credentials,
        tls: security.tls,
    }
}

/// Connects and does the handshake, as `name`.
pub fn connect(addr: &str, name: &str) -> Result<Client, Failure> {
    Ok(Client::connect_with(addr, client_options(name))?)
}

/// Describes an error of a request about `topic`.
pub fn topic_failure(e: &client::Error, topic: &str) -> Failure {
    Failure::Runtime(match e.code() {
        Some(ErrorCode::UnknownTopic) => format!("unknown topic '{topic}'"),
        Some(ErrorCode::TopicExists) => format!("topic '{topic}' already exists"),
        Some(ErrorCode::InvalidTopicName) => {
            format!("invalid topic name '{topic}': use 1 to 255 characters from A-Z a-z 0-9 . _ -")
        }
        Some(ErrorCode::TopicDeleted) => format!("topic '{topic}' was deleted"),
        Some(ErrorCode::TopicFull) => format!(
            "topic '{topic}' stayed full for the broker's --publish-hold: its subscribers are not acknowledging (TOPIC_FULL)"
        ),
        Some(ErrorCode::TooManyTopics) => {
            format!("cannot create topic '{topic}': the broker holds its maximum number of topics")
        }
        Some(ErrorCode::TooManySubscribers) => {
            format!("topic '{topic}' has the maximum number of subscribers")
        }
        Some(ErrorCode::PayloadTooLarge) => {
            format!("message too large for topic '{topic}': {e}")
        }
        Some(ErrorCode::Forbidden) => format!("not allowed on topic '{topic}': {e}"),
        _ => e.to_string(),
    })
}
