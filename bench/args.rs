//! The command line: a scenario name, then flags.
//!
//! Each scenario takes only the flags that mean something to it; a flag
//! given to a scenario that ignores it is an error rather than silently
//! dropped, so a typo'd experiment cannot masquerade as a real one. Every
//! number is bounded here, so nothing later has to wonder about absurd
//! values, and every run is bounded in time ([`MAX_DURATION`]).

use crate::help;
use crate::payload::HEADER_LEN;
use pico_args::Arguments;
use std::ffi::OsString;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// No run measures longer than this, whatever it is asked.
pub const MAX_DURATION: Duration = Duration::from_secs(3600);
/// The measured time when neither `--messages` nor `--duration` is given.
const DEFAULT_DURATION: Duration = Duration::from_secs(5);
const MAX_WARMUP: Duration = Duration::from_secs(600);
const MAX_THREADS: usize = 1024;
const MAX_TOPICS: usize = 10_000;
const MAX_SIZE: usize = 64 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    Send,
    Fanout,
    Latency,
    CreateTopic,
    Idle,
    Retained,
    Fairness,
    Recovery,
    Disk,
    Replay,
    Backlog,
}

impl Scenario {
    const ALL: [Scenario; 11] = [
        Scenario::Send,
        Scenario::Fanout,
        Scenario::Latency,
        Scenario::CreateTopic,
        Scenario::Idle,
        Scenario::Retained,
        Scenario::Fairness,
        Scenario::Recovery,
        Scenario::Disk,
        Scenario::Replay,
        Scenario::Backlog,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Send => "send",
            Scenario::Fanout => "fanout",
            Scenario::Latency => "latency",
            Scenario::CreateTopic => "create-topic",
            Scenario::Idle => "idle",
            Scenario::Retained => "retained",
            Scenario::Fairness => "fairness",
            Scenario::Recovery => "recovery",
            Scenario::Disk => "disk",
            Scenario::Replay => "replay",
            Scenario::Backlog => "backlog",
        }
    }

    fn help(self) -> &'static str {
        match self {
            Scenario::Send => help::SEND,
            Scenario::Fanout => help::FANOUT,
            Scenario::Latency => help::LATENCY,
            Scenario::CreateTopic => help::CREATE_TOPIC,
            Scenario::Idle => help::IDLE,
            Scenario::Retained => help::RETAINED,
            Scenario::Fairness => help::FAIRNESS,
            Scenario::Recovery => help::RECOVERY,
            Scenario::Disk => help::DISK,
            Scenario::Replay => help::REPLAY,
            Scenario::Backlog => help::BACKLOG,
        }
    }

    /// Whether this scenario takes the flag (with a value); the switches
    /// `--json` and `--quiet` are taken by all.
    fn takes(self, flag: &str) -> bool {
        use Scenario::*;
        let streams = matches!(self, Send | Fanout | Latency);
        match flag {
            "--broker" => !matches!(self, Recovery | Disk | Backlog),
            "--messages" => !matches!(self, Idle | Fairness),
            "--duration" => !matches!(self, Retained | Replay),
            "--warmup" => streams || self == CreateTopic,
            "--size" => streams || matches!(self, Retained | Recovery | Disk | Replay | Backlog),
            "--batch" => streams || matches!(self, Retained | Recovery | Replay | Backlog),
            "--cache-bytes" => matches!(self, Backlog | Replay),
            "--pipeline" => {
                matches!(
                    self,
                    Send | Fanout | Latency | Retained | CreateTopic | Replay
                )
            }
            "--publishers" | "--subscribers" => streams,
            "--topics" => streams || matches!(self, Retained | Fairness),
            "--rate" => self == Latency,
            "--pull-depth" => streams || self == Replay,
            "--clients" => matches!(self, CreateTopic | Idle),
            "--connections" => self == Idle,
            "--broker-pid" => matches!(self, Idle | Retained),
            "--hgrm" => true,
            "--ca" | "--tls-cert" | "--tls-key" | "--user" | "--token" => {
                !matches!(self, Recovery | Disk)
            }
            "--fsync" => self != Disk,
            "--attack" | "--attackers" | "--interval-ms" | "--baseline-secs" | "--sessions" => {
                self == Fairness
            }
            _ => false,
        }
    }
}

/// A parsed command line.
#[derive(Debug, Clone)]
pub struct Options {
    pub scenario: Scenario,
    /// `None`: start a broker in this process.
    pub broker: Option<String>,
    pub broker_pid: Option<u32>,
    /// Messages (or topics, or connections) to measure, over all clients.
    pub messages: Option<u64>,
    /// Measured time; always set (a default applies), at most [`MAX_DURATION`].
    pub duration: Duration,
    pub warmup: Duration,
    pub size: usize,
    pub batch: usize,
    pub pipeline: usize,
    pub clients: usize,
    pub publishers: usize,
    pub subscribers: usize,
    pub topics: usize,
    pub rate: f64,
    /// Pulls each subscriber keeps in flight.
    pub pull_depth: usize,
    /// `latency` through a bare TCP relay instead of a broker.
    pub relay: bool,
    pub json: bool,
    pub hgrm: Option<PathBuf>,
    /// The in-process broker's log sync mode; `None`: memory-only.
    pub fsync: Option<courier::storage::SyncMode>,
    pub quiet: bool,
    /// Boxed: only one scenario needs it, and every `Options` carries it.
    pub fairness: Box<crate::fairness::Params>,
    /// `backlog`, `replay`: the in-process broker's `--cache-bytes`.
    pub cache_bytes: usize,
    /// `replay`: `--cache-bytes` was given, so the in-process broker is
    /// durable with that cache and the topic is filled far beyond it: the
    /// replay reads the log.
    pub from_disk: bool,
    /// `disk --read`: time sequential reads instead of synced appends.
    pub disk_read: bool,
    /// Boxed like `fairness`.
    pub security: Box<Security>,
}

/// How the clients reach the broker beyond its address.
#[derive(Debug, Clone, Default)]
pub struct Security {
    /// `--tls`: the clients speak TLS, trusting `--ca`; an in-process
    /// broker serves it with `--tls-cert` and `--tls-key`.
    pub tls: bool,
    pub ca: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// `--user` and `--token`, for a broker with `--users`.
    pub credentials: Option<courier::client::UserToken>,
}

impl Options {
    fn defaults(scenario: Scenario) -> Options {
        Options {
            scenario,
            broker: None,
            broker_pid: None,
            messages: None,
            duration: DEFAULT_DURATION,
            warmup: Duration::ZERO,
            size: match scenario {
                Scenario::Disk => 4096,
                Scenario::Replay => 1024,
                Scenario::Backlog => 1024,
                _ => 128,
            },
            batch: if matches!(
                scenario,
                Scenario::Retained | Scenario::Recovery | Scenario::Replay | Scenario::Backlog
            ) {
                100
            } else {
                1
            },
            pipeline: match scenario {
                Scenario::CreateTopic => 1,
                // A window a schedule never fills: at 20k/s, 3.2 ms.
                Scenario::Latency => 64,
                _ => 16,
            },
            clients: if scenario == Scenario::Idle { 1000 } else { 8 },
            publishers: 1,
            subscribers: usize::from(scenario != Scenario::Send),
            topics: if scenario == Scenario::Fairness {
                10_000
            } else {
                1
            },
            rate: 10_000.0,
            // Latency wants the next pull already waiting; throughput is
            // higher with one, whose acknowledgement rides on the next pull
            // instead of costing an ACK request and reply per batch.
            pull_depth: if scenario == Scenario::Latency { 4 } else { 1 },
            relay: false,
            json: false,
            hgrm: None,
            fsync: None,
            quiet: false,
            fairness: Box::default(),
            security: Box::default(),
            cache_bytes: 16 << 20,
            from_disk: false,
            disk_read: false,
        }
    }
}

#[derive(Debug)]
pub enum Parsed {
    Help(&'static str),
    Version,
    Run(Box<Options>),
}

/// Bad arguments: one line, and where to look for help.
#[derive(Debug)]
pub struct UsageError {
    pub message: String,
    pub scenario: Option<Scenario>,
}

impl UsageError {
    /// The one line to print, ending with a pointer to the relevant help.
    pub fn text(&self) -> String {
        let help = match self.scenario {
            Some(s) => format!("bench {} --help", s.name()),
            None => "bench --help".to_owned(),
        };
        format!("bench: {} (see '{help}')", self.message)
    }
}

pub fn parse(args: Vec<OsString>) -> Result<Parsed, UsageError> {
    let mut args = Arguments::from_vec(args);
    let first = args.subcommand().map_err(|e| usage(e.to_string(), None))?;
    let Some(name) = first else {
        if args.contains(["-V", "--version"]) {
            return Ok(Parsed::Version);
        }
        if args.contains(["-h", "--help"]) {
            return Ok(Parsed::Help(help::MAIN));
        }
        return Err(usage("no scenario given", None));
    };
    if name == "help" {
        return Ok(Parsed::Help(help::MAIN));
    }
    let Some(scenario) = Scenario::ALL.into_iter().find(|s| s.name() == name) else {
        return Err(usage(format!("unknown scenario '{name}'"), None));
    };
    if args.contains(["-h", "--help"]) {
        return Ok(Parsed::Help(scenario.help()));
    }
    let mut flags = Flags { args, scenario };
    let options = flags.options()?;
    let rest = flags.args.finish();
    if let Some(first) = rest.first() {
        let text = first.to_string_lossy();
        let message = if text.starts_with('-') {
            format!("unknown option '{text}' (or given twice)")
        } else {
            format!("unexpected argument '{text}'")
        };
        return Err(usage(message, Some(scenario)));
    }
    validate(&options).map_err(|message| usage(message, Some(scenario)))?;
    Ok(Parsed::Run(Box::new(options)))
}

fn usage(message: impl Into<String>, scenario: Option<Scenario>) -> UsageError {
    UsageError {
        message: message.into(),
        scenario,
    }
}

struct Flags {
    args: Arguments,
    scenario: Scenario,
}

impl Flags {
    fn options(&mut self) -> Result<Options, UsageError> {
        let mut o = Options::defaults(self.scenario);
        o.json = self.args.contains("--json");
        o.quiet = self.args.contains("--quiet");
        if self.args.contains("--relay") {
            if self.scenario != Scenario::Latency {
                return Err(usage(
                    "--relay is for the latency scenario",
                    Some(self.scenario),
                ));
            }
            o.relay = true;
        }
        if self.args.contains("--read") {
            if self.scenario != Scenario::Disk {
                return Err(usage(
                    "--read is for the disk scenario",
                    Some(self.scenario),
                ));
            }
            o.disk_read = true;
        }
        o.hgrm = self.value("--hgrm", |t| Some(PathBuf::from(t)))?;
        let s = &mut o.security;
        s.tls = self.args.contains("--tls");
        s.ca = self.value("--ca", |t| Some(PathBuf::from(t)))?;
        s.tls_cert = self.value("--tls-cert", |t| Some(PathBuf::from(t)))?;
        s.tls_key = self.value("--tls-key", |t| Some(PathBuf::from(t)))?;
        let user = self.value("--user", |t| Some(t.to_owned()))?;
        let token = self.value("--token", |t| Some(t.to_owned()))?;
        s.credentials = match (user, token) {
            (Some(user), Some(token)) => Some(courier::client::UserToken { user, token }),
            (None, None) => None,
            _ => return Err(usage("--user and --token go together", Some(self.scenario))),
        };
        let in_process_tls = s.tls_cert.is_some() || s.tls_key.is_some();
        if (s.ca.is_some() || in_process_tls) && !s.tls {
            return Err(usage(
                "--ca, --tls-cert and --tls-key need --tls",
                Some(self.scenario),
            ));
        }
        let fsync = self.value("--fsync", |t| match t {
            "memory-only" => Some(None),
            _ => t.parse().ok().map(Some),
        })?;
        o.fsync = fsync.flatten();
        // A host alone means the default port, as for the commands; an
        // empty value is left for `validate` to refuse.
        o.broker = self.value("--broker", |t| {
            Some(if t.trim().is_empty() {
                String::new()
            } else {
                courier::client::with_default_port(t)
            })
        })?;
        o.broker_pid = self.value("--broker-pid", |t| t.parse().ok())?;
        o.messages = self.value("--messages", count)?;
        let duration = self.value("--duration", seconds)?;
        if let Some(connections) = self.value("--connections", count)? {
            o.messages = Some(connections);
        }
        if let Some(clients) = self.value("--clients", count)? {
            if self.scenario == Scenario::Idle {
                o.messages = Some(clients);
            } else {
                o.clients = to_usize(clients);
            }
        }
        o.duration = match (duration, o.messages, self.scenario) {
            (Some(d), _, _) => d,
            // The probe's time alone: the catch-up lasts what it lasts.
            (None, _, Scenario::Backlog) => Duration::from_secs(3),
            // Idle holds its connections for --duration: none by default.
            (None, _, Scenario::Idle) => Duration::ZERO,
            (None, Some(_), _) => MAX_DURATION,
            (None, None, _) => DEFAULT_DURATION,
        };
        if let Some(d) = duration.filter(|d| *d > MAX_DURATION) {
            return Err(usage(
                format!(
                    "--duration {} is over the limit of {} seconds",
                    d.as_secs_f64(),
                    MAX_DURATION.as_secs()
                ),
                Some(self.scenario),
            ));
        }
        let cache_bytes = self.value("--cache-bytes", count)?;
        o.cache_bytes = cache_bytes.map_or(o.cache_bytes, to_usize);
        o.from_disk = self.scenario == Scenario::Replay && cache_bytes.is_some();
        if o.from_disk && fsync == Some(None) {
            return Err(usage(
                "--cache-bytes is for a durable broker, not --fsync memory-only",
                Some(self.scenario),
            ));
        }
        o.size = self.value("--size", count)?.map_or(o.size, to_usize);
        if matches!(self.scenario, Scenario::Retained | Scenario::Replay) && o.messages.is_none() {
            o.messages = Some(if o.from_disk {
                replay_beyond(o.cache_bytes, o.size)
            } else {
                100_000
            });
        }
        if self.scenario == Scenario::Idle && o.messages.is_none() {
            o.messages = Some(o.clients as u64);
        }
        o.warmup = self.value("--warmup", seconds)?.unwrap_or(o.warmup);
        o.batch = self.value("--batch", count)?.map_or(o.batch, to_usize);
        o.pipeline = self
            .value("--pipeline", count)?
            .map_or(o.pipeline, to_usize);
        o.publishers = self
            .value("--publishers", count)?
            .map_or(o.publishers, to_usize);
        o.subscribers = self
            .value("--subscribers", count)?
            .map_or(o.subscribers, to_usize);
        o.topics = self.value("--topics", count)?.map_or(o.topics, to_usize);
        o.rate = self
            .value("--rate", |t| t.parse::<f64>().ok())?
            .unwrap_or(o.rate);
        o.pull_depth = self
            .value("--pull-depth", count)?
            .map_or(o.pull_depth, to_usize);
        let f = &mut o.fairness;
        f.attack = self
            .value("--attack", crate::fairness::Attack::parse)?
            .unwrap_or(f.attack);
        f.attackers = self
            .value("--attackers", count)?
            .map_or(f.attackers, to_usize);
        f.interval = self
            .value("--interval-ms", count)?
            .map_or(f.interval, Duration::from_millis);
        f.baseline = self
            .value("--baseline-secs", seconds)?
            .unwrap_or(f.baseline);
        f.sessions = self
            .value("--sessions", count)?
            .map_or(f.sessions, to_usize);
        Ok(o)
    }

    /// The value of `flag`, parsed by `parse`; an error if the scenario
    /// does not take the flag or the value does not parse.
    fn value<T>(
        &mut self,
        flag: &'static str,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Result<Option<T>, UsageError> {
        let scenario = self.scenario;
        let text: Option<String> = self
            .args
            .opt_value_from_str(flag)
            .map_err(|e| usage(e.to_string(), Some(scenario)))?;
        let Some(text) = text else { return Ok(None) };
        if !scenario.takes(flag) {
            return Err(usage(
                format!("{flag} does not apply to 'bench {}'", scenario.name()),
                Some(scenario),
            ));
        }
        match parse(&text) {
            Some(value) => Ok(Some(value)),
            None => Err(usage(
                format!("{flag}: '{text}' is not a number"),
                Some(scenario),
            )),
        }
    }
}

/// `replay --cache-bytes` without `--messages`: ten and a half caches'
/// worth of messages (as `backlog`), and never fewer than the memory case's
/// default, so that all but the newest cache's worth is read from the log.
fn replay_beyond(cache_bytes: usize, size: usize) -> u64 {
    let caches = (cache_bytes as u64).saturating_mul(21) / 2;
    (caches / size.max(1) as u64).max(100_000)
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// A count: digits (underscores allowed), with an optional k/M/G (10^3) or
/// KiB/MiB/GiB (2^10) suffix.
pub fn count(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '_')
        .unwrap_or(text.len());
    let (digits, suffix) = text.split_at(split);
    let digits: String = digits.chars().filter(|&c| c != '_').collect();
    let n = u64::from_str(&digits).ok()?;
    let scale: u64 = match suffix {
        "" => 1,
        "k" | "K" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(scale)
}

/// Seconds, possibly fractional, with an optional `s` or `ms` suffix.
pub fn seconds(text: &str) -> Option<Duration> {
    let text = text.trim();
    let (number, scale) = if let Some(ms) = text.strip_suffix("ms") {
        (ms, 1e-3)
    } else {
        (text.strip_suffix('s').unwrap_or(text), 1.0)
    };
    let secs = f64::from_str(number).ok()? * scale;
    if !(0.0..=1e9).contains(&secs) {
        return None;
    }
    Some(Duration::from_secs_f64(secs))
}

fn validate(o: &Options) -> Result<(), String> {
    fn within(name: &str, value: usize, low: usize, high: usize) -> Result<(), String> {
        if (low..=high).contains(&value) {
            Ok(())
        } else {
            Err(format!(
                "{name} must be between {low} and {high}, not {value}"
            ))
        }
    }
    let streams = matches!(
        o.scenario,
        Scenario::Send | Scenario::Fanout | Scenario::Latency
    );
    if o.size < HEADER_LEN {
        return Err(format!(
            "--size {} is below the {HEADER_LEN} bytes every bench message needs for its header",
            o.size
        ));
    }
    within("--size", o.size, HEADER_LEN, MAX_SIZE)?;
    within("--batch", o.batch, 1, 65_536)?;
    within("--cache-bytes", o.cache_bytes, 64 << 10, 1 << 40)?;
    within("--pipeline", o.pipeline, 1, 4096)?;
    within(
        "--pull-depth",
        o.pull_depth,
        1,
        courier::client::MAX_PULL_DEPTH,
    )?;
    if o.from_disk && o.broker.is_some() {
        return Err(
            "--cache-bytes sets up the in-process durable broker; a --broker has its own".into(),
        );
    }
    if o.relay && o.broker.is_some() {
        return Err("--relay measures a relay in this process, not --broker".into());
    }
    within("--topics", o.topics, 1, MAX_TOPICS)?;
    within("--publishers", o.publishers, 1, MAX_THREADS)?;
    let fewest_subscribers = usize::from(o.scenario != Scenario::Send);
    within(
        "--subscribers",
        o.subscribers,
        fewest_subscribers,
        MAX_THREADS,
    )?;
    within("--clients", o.clients, 1, MAX_THREADS)?;
    if o.scenario != Scenario::Idle && o.duration.is_zero() {
        return Err("--duration must be more than 0".into());
    }
    if o.warmup > MAX_WARMUP {
        return Err(format!(
            "--warmup is over the limit of {} seconds",
            MAX_WARMUP.as_secs()
        ));
    }
    match o.messages {
        Some(0) => return Err("--messages must be at least 1".into()),
        Some(n) if n > 1_000_000_000_000 => return Err("--messages is over 10^12".into()),
        _ => {}
    }
    if o.scenario == Scenario::Idle {
        within(
            "--connections",
            o.messages.map_or(0, to_usize),
            1,
            1_000_000,
        )?;
    }
    if streams && o.publishers + o.subscribers > MAX_THREADS {
        return Err(format!(
            "--publishers plus --subscribers is over {MAX_THREADS} (one thread each)"
        ));
    }
    if !(o.rate.is_finite() && o.rate >= 1.0 && o.rate <= 1e8) {
        return Err(format!("--rate must be between 1 and 10^8, not {}", o.rate));
    }
    if o.scenario == Scenario::Fairness {
        o.fairness.validate()?;
    }
    if o.broker.as_deref().is_some_and(|b| b.trim().is_empty()) {
        return Err("--broker needs HOST:PORT".into());
    }
    if o.broker_pid.is_some() && o.broker.is_none() {
        return Err(
            "--broker-pid needs --broker: an in-process broker shares the bench's memory".into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(line: &str) -> Result<Options, UsageError> {
        let args = line.split_whitespace().map(OsString::from).collect();
        match parse(args)? {
            Parsed::Run(options) => Ok(*options),
            other => panic!("expected options, got {other:?}"),
        }
    }

    #[test]
    fn counts_and_seconds_take_suffixes() {
        assert_eq!(count("1_000"), Some(1000));
        assert_eq!(count("2M"), Some(2_000_000));
        assert_eq!(count("64KiB"), Some(65_536));
        assert_eq!(count("1x"), None);
        assert_eq!(count("-1"), None);
        assert_eq!(seconds("1.5"), Some(Duration::from_millis(1500)));
        assert_eq!(seconds("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(seconds("-1"), None);
    }

    #[test]
    fn defaults_and_bounds() {
        let o = run("send").unwrap();
        assert_eq!((o.publishers, o.subscribers, o.pipeline), (1, 0, 16));
        assert_eq!(o.duration, DEFAULT_DURATION);
        let o = run("fanout --messages 300").unwrap();
        assert_eq!((o.subscribers, o.messages), (1, Some(300)));
        assert_eq!(
            o.duration, MAX_DURATION,
            "count-bound runs are still time-bound"
        );
        assert!(run("send --duration 3601").is_err());
        assert!(run("send --size 19").is_err());
        assert!(run("fanout --subscribers 0").is_err());
        assert!(run("idle --broker-pid 1").is_err());
    }

    #[test]
    fn flags_must_apply_to_the_scenario() {
        let e = run("send --rate 5").unwrap_err();
        assert_eq!(e.scenario, Some(Scenario::Send));
        assert!(run("send --nope").is_err());
        assert!(run("nope").is_err());
        assert!(run("create-topic --clients 4").is_ok());
        assert_eq!(run("idle --clients 7").unwrap().messages, Some(7));
        assert_eq!(run("idle --connections 9").unwrap().messages, Some(9));
    }

    #[test]
    fn replay_from_disk_is_the_in_process_durable_broker() {
        let o = run("replay").unwrap();
        assert_eq!((o.from_disk, o.messages), (false, Some(100_000)));
        let o = run("replay --cache-bytes 1MiB").unwrap();
        assert_eq!((o.from_disk, o.cache_bytes), (true, 1 << 20));
        assert_eq!(o.messages, Some(100_000), "never fewer than from memory");
        let o = run("replay --cache-bytes 64MiB --size 2048").unwrap();
        assert_eq!(o.messages, Some((64 << 20) * 21 / 2 / 2048));
        assert_eq!(
            run("replay --cache-bytes 1MiB --messages 9")
                .unwrap()
                .messages,
            Some(9)
        );
        assert!(run("replay --cache-bytes 1MiB --fsync memory-only").is_err());
        assert!(run("replay --cache-bytes 1MiB --broker 127.0.0.1:9").is_err());
        assert!(run("replay --cache-bytes 1KiB").is_err());
        assert!(!run("backlog --cache-bytes 1MiB").unwrap().from_disk);
        assert!(run("disk --read").unwrap().disk_read);
        assert!(run("send --read").is_err());
    }

    #[test]
    fn a_broker_without_a_port_gets_the_default_one() {
        let o = run("send --broker localhost").unwrap();
        assert_eq!(o.broker.as_deref(), Some("localhost:5555"));
        assert!(run("send --broker 127.0.0.1:0").is_ok());
    }
}
