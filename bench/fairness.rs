//! `fairness`: how much one abusive client slows down everyone else.
//!
//! A probe — one publisher and one subscriber on a topic of their own — does
//! one acknowledged publish and one pull of that message every
//! `--interval-ms`, and times each round trip. The run has two phases on the
//! same broker: the probe alone (`--baseline-secs`), then the probe beside
//! `--attackers` connections running one abuse (`--duration`). The report
//! sets the probe's latency in the two phases side by side; that ratio is
//! the figure the scenario exists for.
//!
//! Every attacker builds its state first (topics, subscriptions, parked
//! sessions) and only then waits at the gate, so the baseline is measured
//! against a broker that already holds the attack's state but sees no
//! attack traffic: the difference between the phases is the traffic alone.
//!
//! The abuses ([`Attack`]) use the client library where it can express them
//! (publish floods through a [`courier::client::Pipeline`], session churn
//! through plain calls) and raw frames from `courier::codec` where it cannot
//! (pipelined STATS and pipelined pulls, which the library sends one at a
//! time; `raw` holds that connection). Attackers expect refusals —
//! `TOPIC_FULL` and the like are counted, not failures — and a broker that
//! cuts an attacker off ends that attacker only. The probe must see every message, in order, with no error; anything
//! else fails the run.

mod raw;

use self::raw::RawConn;
use crate::args::Options;
use crate::broker::Broker;
use crate::progress::Progress;
use crate::report::{self, Operation, Report};
use crate::run::{self, Failure, Fault, Gate, Shared, Timeline, nanos};
use crate::topics::Topics;
use bytes::Bytes;
use courier::client::{Client, PullOptions};
use courier::protocol::{ErrorCode, Pull, Request};
use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Publishes an attacking publisher keeps in flight.
const PUBLISH_DEPTH: usize = 256;
/// Attacking payloads: small, so that the cost is per message.
const ATTACK_PAYLOAD: [u8; 64] = [b'x'; 64];
/// Topics each churning session subscribes to.
const CHURN_TOPICS: usize = 3;
/// How long the probe's pull may wait for the message it just published.
const PROBE_WAIT: Duration = Duration::from_secs(2);

/// The abuse the attackers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attack {
    /// Pipelined PUBLISH to a topic nobody subscribes to (even attackers)
    /// and pipelined STATS, a cheap request with a costly reply (odd ones).
    Flood,
    /// A session subscribed to `--topics` topics pipelining empty
    /// all-topics pulls that do not wait.
    Pulls,
    /// Pipelined PUBLISH to a topic with `--sessions` detached subscriber
    /// sessions, every message retained for each of them.
    Fanout,
    /// Connect, register a subscriber, subscribe to a few topics,
    /// disconnect; again and again, leaving detached sessions behind.
    Churn,
}

impl Attack {
    pub fn parse(text: &str) -> Option<Attack> {
        [Attack::Flood, Attack::Pulls, Attack::Fanout, Attack::Churn]
            .into_iter()
            .find(|a| a.name() == text)
    }

    pub fn name(self) -> &'static str {
        match self {
            Attack::Flood => "flood",
            Attack::Pulls => "pulls",
            Attack::Fanout => "fanout",
            Attack::Churn => "churn",
        }
    }
}

/// The flags only this scenario takes (`--topics` and `--duration` are the
/// common ones).
#[derive(Debug, Clone)]
pub struct Params {
    pub attack: Attack,
    pub attackers: usize,
    pub interval: Duration,
    pub baseline: Duration,
    pub sessions: usize,
}

impl Default for Params {
    fn default() -> Params {
        Params {
            attack: Attack::Flood,
            attackers: 1,
            interval: Duration::from_millis(2),
            baseline: Duration::from_secs(2),
            sessions: 5000,
        }
    }
}

impl Params {
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=64).contains(&self.attackers) {
            return Err(format!(
                "--attackers must be between 1 and 64, not {}",
                self.attackers
            ));
        }
        if !(Duration::from_millis(1)..=Duration::from_secs(1)).contains(&self.interval) {
            return Err("--interval-ms must be between 1 and 1000".into());
        }
        if self.baseline.is_zero() || self.baseline > Duration::from_secs(600) {
            return Err("--baseline-secs must be more than 0 and at most 600".into());
        }
        if !(1..=100_000).contains(&self.sessions) {
            return Err(format!(
                "--sessions must be between 1 and 100000, not {}",
                self.sessions
            ));
        }
        Ok(())
    }
}

/// What the probe saw.
struct Probed {
    baseline: Histogram<u64>,
    attacked: Histogram<u64>,
    /// Error replies and messages missing, duplicated or out of order.
    problems: Vec<String>,
    errors: u64,
}

/// What one attacker did.
#[derive(Default)]
struct Tally {
    /// Requests answered (successfully or with an error reply).
    requests: u64,
    /// Error replies, by code.
    errors: BTreeMap<&'static str, u64>,
    /// Why the broker stopped answering this attacker, if it did.
    cut_off: Option<String>,
}

impl Tally {
    fn answered(&mut self, code: Option<ErrorCode>) {
        self.requests += 1;
        if let Some(code) = code {
            *self.errors.entry(code.name()).or_default() += 1;
        }
    }
}

pub fn run(o: &Options, broker: &Broker) -> Result<Report, Failure> {
    let p = &o.fairness;
    let attack_topics = match p.attack {
        Attack::Flood | Attack::Fanout => 1,
        Attack::Pulls => o.topics,
        Attack::Churn => CHURN_TOPICS,
    };
    let shared = Shared::new(broker, &["probe", "attack"]);
    let mut topics = Topics::create(&shared, 1 + attack_topics)?;
    let probe_topic = topics.names.first().cloned().unwrap_or_default();
    let targets: Arc<[String]> = topics.names.iter().skip(1).cloned().collect();
    if p.attack == Attack::Fanout
        && let Some(topic) = targets.first()
    {
        park_sessions(&shared.addr, topic, p.sessions)?;
    }

    let gate = Arc::new(Gate::default());
    let mut handles: Vec<JoinHandle<Result<Tally, Fault>>> = Vec::new();
    let mut spawned = Ok(());
    for index in 0..p.attackers {
        let (shared2, targets, attack) = (Arc::clone(&shared), Arc::clone(&targets), p.attack);
        let gate2 = Arc::clone(&gate);
        let name = format!("bench-attacker-{index}");
        match run::spawn(name, &shared, &gate, move || {
            attacker(&shared2, &gate2, attack, index, &targets)
        }) {
            Ok(handle) => handles.push(handle),
            Err(e) => {
                spawned = Err(e);
                break;
            }
        }
    }
    let probe = {
        let (shared2, gate2) = (Arc::clone(&shared), Arc::clone(&gate));
        let interval = p.interval;
        run::spawn("bench-probe".into(), &shared, &gate, move || {
            probe(&shared2, &gate2, &probe_topic, interval)
        })
    };
    let probe = match probe {
        Ok(handle) => Some(handle),
        Err(e) => {
            spawned = spawned.and(Err(e));
            None
        }
    };
    let workers = handles.len() + usize::from(probe.is_some());
    let opened = spawned.and_then(|()| {
        gate.open(workers, || {
            Timeline::starting_now(&shared.clock, p.baseline, o.duration)
        })
        .ok_or_else(|| "the probe and the attackers could not all get ready".to_owned())
    });
    let timeline = match opened {
        Ok(timeline) => timeline,
        Err(e) => {
            shared.abort();
            gate.fail();
            let probe_error = probe.map(|h| run::join(vec![h]).err());
            let attacker_error = run::join(handles).err();
            let first = probe_error.flatten().or(attacker_error).unwrap_or(e);
            return Err(Failure::Runtime(first));
        }
    };
    let mut progress = Progress::new(o.scenario.name(), o.quiet);
    let probe_handles: Vec<_> = probe.into_iter().collect();
    progress.wait(&shared, &probe_handles);
    progress.wait(&shared, &handles);
    drop(progress);
    let probed = run::join(probe_handles)?
        .pop()
        .ok_or_else(|| "the probe returned nothing".to_owned())?;
    let tallies = run::join(handles)?;
    topics.delete()?;
    Ok(build_report(o, broker, timeline, probed, &tallies))
}

fn build_report(
    o: &Options,
    broker: &Broker,
    timeline: Timeline,
    probed: Probed,
    tallies: &[Tally],
) -> Report {
    let p = &o.fairness;
    let mut report = Report::new(o.scenario.name(), "attacked");
    report.param("broker", broker.addr());
    report.param("in_process", broker.in_process());
    report.param("attack", p.attack.name());
    report.param("attackers", p.attackers);
    report.param("interval_ms", p.interval.as_millis() as u64);
    match p.attack {
        Attack::Pulls => report.param("topics", o.topics),
        Attack::Fanout => report.param("sessions", p.sessions),
        Attack::Flood | Attack::Churn => {}
    }
    report.param("baseline_s", p.baseline.as_secs_f64());
    report.param("duration_s", o.duration.as_secs_f64());
    let ratio = |q: f64| {
        let alone = probed.baseline.value_at_quantile(q).max(1) as f64;
        probed.attacked.value_at_quantile(q) as f64 / alone
    };
    report.notes.push(format!(
        "under attack the probe's p50 is {:.1}x and its p99 {:.1}x what it was alone",
        ratio(0.5),
        ratio(0.99)
    ));
    report.count("probe_rounds_baseline", probed.baseline.len());
    report.count("probe_rounds_attacked", probed.attacked.len());
    report.count("probe_errors", probed.errors);
    for (name, latency, elapsed) in [
        ("baseline", probed.baseline, p.baseline),
        ("attacked", probed.attacked, o.duration),
    ] {
        report.operations.push(Operation {
            name,
            unit: "round trips",
            count: latency.len(),
            requests: None,
            bytes: None,
            elapsed,
            latency: Some(latency),
            latency_of: "probe, publish to its pull reply",
        });
    }
    let requests = tallies.iter().map(|t| t.requests).sum();
    report.operations.push(Operation {
        name: "attack",
        unit: "requests",
        count: requests,
        requests: None,
        bytes: None,
        elapsed: timeline.window(timeline.stop_ns),
        latency: None,
        latency_of: "",
    });
    let mut errors: BTreeMap<&'static str, u64> = BTreeMap::new();
    for tally in tallies {
        for (name, n) in &tally.errors {
            *errors.entry(name).or_default() += n;
        }
    }
    let cut_off: Vec<&String> = tallies.iter().filter_map(|t| t.cut_off.as_ref()).collect();
    report.count("attacker_requests", requests);
    report.count("attacker_errors", errors.values().sum());
    report.count("attackers_cut_off", cut_off.len() as u64);
    if !errors.is_empty() {
        let list: Vec<String> = errors.iter().map(|(k, v)| format!("{v} {k}")).collect();
        report
            .notes
            .push(format!("attackers were refused: {}", list.join(", ")));
    }
    if let Some(first) = cut_off.first() {
        report.notes.push(format!(
            "{} attacker(s) cut off by the broker, the first: {first}",
            cut_off.len()
        ));
    }
    report.problems.extend(probed.problems);
    report
}

/// The probe: publish one message, pull it back, time the pair; every
/// `interval`, through both phases.
fn probe(shared: &Shared, gate: &Gate, topic: &str, interval: Duration) -> Result<Probed, Fault> {
    let mut publisher = shared.connect("bench-probe-pub".into())?;
    publisher
        .register_publisher()
        .map_err(|e| format!("probe: cannot register: {e}"))?;
    let mut subscriber = shared.connect("bench-probe-sub".into())?;
    subscriber
        .register_subscriber()
        .map_err(|e| format!("probe: cannot register: {e}"))?;
    subscriber
        .subscribe(topic)
        .map_err(|e| format!("probe: cannot subscribe: {e}"))?;
    let Some(timeline) = gate.ready() else {
        return Err(Fault::Aborted);
    };
    let pull = PullOptions {
        topic: Some(topic.to_owned()),
        max_messages: 16,
        wait: PROBE_WAIT,
        ack: true,
        ..PullOptions::default()
    };
    let clock = shared.clock;
    let mut out = Probed {
        baseline: report::histogram(),
        attacked: report::histogram(),
        problems: Vec::new(),
        errors: 0,
    };
    let mut next_offset = None::<u64>;
    let mut seq: u64 = 0;
    loop {
        let t0 = clock.now_ns();
        if t0 >= timeline.stop_ns || shared.aborted() {
            break;
        }
        seq += 1;
        let payload = seq.to_be_bytes();
        let offset = match publisher.send(topic, &payload) {
            Ok(published) => published.offset,
            Err(e) if e.is_fatal() => return Err(format!("probe publish failed: {e}").into()),
            Err(e) => {
                out.errors += 1;
                out.problems
                    .push(format!("probe publish {seq} was refused: {e}"));
                continue;
            }
        };
        if next_offset.is_some_and(|n| n != offset) {
            out.problems.push(format!(
                "probe publish {seq} got offset {offset}, not {next_offset:?}"
            ));
        }
        next_offset = Some(offset + 1);
        let batch = match subscriber.pull(&pull) {
            Ok(batch) => batch,
            Err(e) if e.is_fatal() => return Err(format!("probe pull failed: {e}").into()),
            Err(e) => {
                out.errors += 1;
                out.problems
                    .push(format!("probe pull {seq} was refused: {e}"));
                continue;
            }
        };
        let t1 = clock.now_ns();
        let got: Vec<(u64, &Bytes)> = batch.iter().map(|m| (m.offset, m.payload)).collect();
        let alone = matches!(got.as_slice(), [(o, p)] if *o == offset && p.as_ref() == payload);
        if !alone {
            out.problems.push(format!(
                "probe pull {seq} expected offset {offset} alone, got offsets {:?}",
                got.iter().map(|(o, _)| o).collect::<Vec<_>>()
            ));
        }
        let phase = if timeline.measured(t0) {
            &mut out.attacked
        } else {
            &mut out.baseline
        };
        phase.saturating_record(t1.saturating_sub(t0).max(1));
        if let Some(meter) = shared.meter(0) {
            meter.add(1);
        }
        let next = t0.saturating_add(nanos(interval));
        let now = clock.now_ns();
        if next > now {
            std::thread::sleep(Duration::from_nanos(next - now));
        }
    }
    // Many problems mean one cause: keep the report readable.
    out.problems.truncate(10);
    Ok(out)
}

/// One attacker: builds its state, waits out the baseline, attacks until
/// the run ends.
fn attacker(
    shared: &Shared,
    gate: &Gate,
    attack: Attack,
    index: usize,
    targets: &[String],
) -> Result<Tally, Fault> {
    let name = format!("bench-attacker-{index}");
    let mut tally = Tally::default();
    match attack {
        Attack::Flood | Attack::Fanout if attack == Attack::Fanout || index.is_multiple_of(2) => {
            let topic = targets.first().map_or("", String::as_str);
            let mut client = shared.connect(name)?;
            client
                .register_publisher()
                .map_err(|e| format!("attacker: cannot register: {e}"))?;
            let timeline = wait_for_attack(shared, gate)?;
            publish_flood(shared, &mut client, topic, timeline, &mut tally);
        }
        Attack::Flood | Attack::Fanout => {
            let mut raw = RawConn::hello(&shared.addr, &name)?;
            let timeline = wait_for_attack(shared, gate)?;
            raw.flood(shared, &Request::Stats, timeline, &mut tally);
        }
        Attack::Pulls => {
            let mut raw = RawConn::hello(&shared.addr, &name)?;
            raw.expect_ok(&Request::RegisterSubscriber {
                resume: None,
                timeout_ms: None,
            })?;
            raw.all_ok(targets.iter().map(|topic| Request::Subscribe { topic }))?;
            let timeline = wait_for_attack(shared, gate)?;
            let pull = Request::Pull(Pull {
                topic: None,
                max_messages: 100,
                max_bytes: 1 << 20,
                wait_ms: 0,
                ack: false,
            });
            raw.flood(shared, &pull, timeline, &mut tally);
        }
        Attack::Churn => {
            let timeline = wait_for_attack(shared, gate)?;
            churn(shared, &name, targets, timeline, &mut tally);
        }
    }
    Ok(tally)
}

/// Waits at the gate, then through the baseline phase.
fn wait_for_attack(shared: &Shared, gate: &Gate) -> Result<Timeline, Fault> {
    let timeline = gate.ready().ok_or(Fault::Aborted)?;
    loop {
        let now = shared.clock.now_ns();
        if timeline.measured(now) {
            return Ok(timeline);
        }
        if shared.aborted() {
            return Err(Fault::Aborted);
        }
        let left = Duration::from_nanos(timeline.measure_ns - now);
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}

fn publish_flood(
    shared: &Shared,
    client: &mut Client,
    topic: &str,
    timeline: Timeline,
    tally: &mut Tally,
) {
    let mut pipeline = client.pipeline(PUBLISH_DEPTH);
    let mut sent: u64 = 0;
    let mut failed = None;
    while failed.is_none() {
        if sent.is_multiple_of(64)
            && (shared.clock.now_ns() >= timeline.stop_ns || shared.aborted())
        {
            break;
        }
        if let Err(e) = pipeline.send(topic, &ATTACK_PAYLOAD) {
            failed = Some(e.to_string());
        }
        sent += 1;
        for done in pipeline.completions() {
            count_completion(shared, tally, &done.result, &mut failed);
        }
    }
    for done in pipeline.finish() {
        count_completion(shared, tally, &done.result, &mut failed);
    }
    tally.cut_off = failed;
}

fn count_completion<T>(
    shared: &Shared,
    tally: &mut Tally,
    result: &courier::client::Result<T>,
    failed: &mut Option<String>,
) {
    match result {
        Ok(_) => tally.answered(None),
        Err(e) if e.is_fatal() => {
            failed.get_or_insert_with(|| e.to_string());
            return;
        }
        Err(e) => tally.answered(e.code()),
    }
    if let Some(meter) = shared.meter(1) {
        meter.add(1);
    }
}

/// Session churn: every cycle opens a connection, registers a subscriber,
/// subscribes to every target and hangs up.
fn churn(shared: &Shared, name: &str, targets: &[String], timeline: Timeline, tally: &mut Tally) {
    let mut failed = None;
    while failed.is_none() && shared.clock.now_ns() < timeline.stop_ns && !shared.aborted() {
        let mut client = match shared.connect(name.to_owned()) {
            Ok(client) => client,
            Err(e) => {
                failed = Some(e);
                break;
            }
        };
        let registered = client.register_subscriber();
        count_completion(shared, tally, &registered, &mut failed);
        for topic in targets {
            if failed.is_some() {
                break;
            }
            let subscribed = client.subscribe(topic);
            count_completion(shared, tally, &subscribed, &mut failed);
        }
    }
    tally.cut_off = failed;
}

/// Leaves `count` detached sessions subscribed to `topic`: one connection
/// registers them one after another (each registration lets the previous
/// session go, detached) and then hangs up.
fn park_sessions(addr: &str, topic: &str, count: usize) -> Result<(), String> {
    let mut raw = RawConn::hello(addr, "bench-fanout-sessions")?;
    let pairs = (0..count).flat_map(|_| {
        [
            Request::RegisterSubscriber {
                resume: None,
                timeout_ms: None,
            },
            Request::Subscribe { topic },
        ]
    });
    raw.all_ok(pairs)
}
