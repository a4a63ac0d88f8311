//! `create-topic`: clients creating and deleting topics, each on its own
//! connection and thread, with `--pipeline D` requests in flight.
//!
//! Each client creates a topic, deletes it, and goes on with the next name,
//! so the broker's topic table stays small and the run measures the two
//! operations rather than a growing map. Names are written into one reused
//! buffer. Every request must succeed; for an in-process broker the topic
//! count must be back where it started.
//!
//! The unit measured is the pair: the create and the delete go out
//! interleaved on one pipeline, so their rates are one rate and neither has a
//! latency of its own worth reporting apart. A pair's latency runs from
//! queuing its create to the reply to its delete.
//!
//! Requests go through the client library's pipeline at every depth: with
//! `--pipeline 1` (the default) each is one round trip, so the rate is
//! bounded by clients / round trip; with more, `D` are in flight at once.

use crate::args::Options;
use crate::broker::Broker;
use crate::progress::Progress;
use crate::report::{self, Operation, Report};
use crate::run::{self, Failure, Fault, Gate, Shared, Timeline};
use crate::topics::run_prefix;
use courier::client::{self, Completion, Pipeline};
use courier::protocol::Op;
use hdrhistogram::Histogram;
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Arc;

/// The one operation this scenario measures.
const PAIR: &str = "create_delete";

/// What one client did.
struct Outcome {
    /// Per create+delete pair, nanoseconds; measured window only.
    pairs: Histogram<u64>,
    /// Pairs completed (topics deleted) in the measured window.
    measured: u64,
    last_ns: u64,
    created: u64,
}

pub fn run(o: &Options, broker: &Broker) -> Result<Report, Failure> {
    let shared = Shared::new(broker, &["create"]);
    let mut admin = shared.connect("bench-admin".to_owned())?;
    let stats = |admin: &mut courier::Client| {
        admin
            .stats()
            .map(|s| s.topics)
            .map_err(|e| format!("STATS failed: {e}"))
    };
    let before = broker.in_process().then(|| stats(&mut admin)).transpose()?;
    let prefix = run_prefix();
    let gate = Arc::new(Gate::default());
    let mut handles = Vec::with_capacity(o.clients);
    let mut spawned = Ok(());
    for c in 0..o.clients {
        let quota = o.messages.map_or(u64::MAX, |n| {
            let clients = o.clients as u64;
            n / clients + u64::from((c as u64) < n % clients)
        });
        let (shared2, gate2) = (Arc::clone(&shared), Arc::clone(&gate));
        let prefix = format!("{prefix}-c{c}-");
        let depth = o.pipeline;
        let body = move || creating(&shared2, &gate2, c, prefix, quota, depth);
        match run::spawn(format!("bench-client-{c}"), &shared, &gate, body) {
            Ok(handle) => handles.push(handle),
            Err(e) => {
                spawned = Err(e);
                break;
            }
        }
    }
    let timeline = run::start(o, &shared, &gate, o.clients, spawned, || {
        run::join(std::mem::take(&mut handles)).map(drop)
    })?;
    let mut progress = Progress::new(o.scenario.name(), o.quiet);
    progress.wait(&shared, &handles);
    drop(progress);
    let outcomes = run::join(handles)?;
    let after = broker.in_process().then(|| stats(&mut admin)).transpose()?;

    let mut report = Report::new(o.scenario.name(), PAIR);
    report.bounds(broker, o);
    report.param("clients", o.clients);
    report.param("pipeline", o.pipeline);
    let mut pairs = report::histogram();
    let (mut measured, mut created, mut last_ns) = (0, 0, timeline.measure_ns);
    for outcome in outcomes {
        let _ = pairs.add(&outcome.pairs);
        measured += outcome.measured;
        created += outcome.created;
        last_ns = last_ns.max(outcome.last_ns);
    }
    let elapsed = timeline.window(last_ns);
    report.operations.push(Operation {
        name: PAIR,
        unit: "pairs",
        count: measured,
        requests: Some(2 * measured),
        bytes: None,
        elapsed,
        latency: Some(pairs),
        latency_of: "per create+delete pair",
    });
    report.count("created", created);
    report.count("deleted", created);
    if let (Some(before), Some(after)) = (before, after)
        && before != after
    {
        report.problems.push(format!(
            "the broker had {before} topics before the run and {after} after"
        ));
    }
    Ok(report)
}

/// One client: create, delete, next name, with up to `depth` requests in
/// flight, until the quota or the stop. A topic counts when its delete is
/// answered.
fn creating(
    shared: &Shared,
    gate: &Gate,
    index: usize,
    prefix: String,
    quota: u64,
    depth: usize,
) -> Result<Outcome, Fault> {
    let mut client = shared.connect(format!("bench-client-{index}"))?;
    client
        .register_publisher()
        .map_err(|e| format!("client {index}: cannot register: {e}"))?;
    let timeline = gate.ready().ok_or(Fault::Aborted)?;
    let mut books = Books {
        shared,
        timeline,
        index,
        prefix,
        one_at_a_time: depth == 1,
        last_queued_ns: shared.clock.now_ns(),
        sent: VecDeque::with_capacity(depth + 1),
        topics_in_flight: 0,
        out: Outcome {
            pairs: report::histogram(),
            measured: 0,
            last_ns: timeline.measure_ns,
            created: 0,
        },
    };
    let mut name = books.prefix.clone();
    let mut pipeline = client.pipeline(depth);
    for topic in 0u64.. {
        // The time of the last request is recent enough to tell the stop,
        // and saves a clock read per topic.
        let stop = shared.aborted() || books.last_queued_ns >= timeline.stop_ns;
        if stop || books.out.measured + books.topics_in_flight >= quota {
            break;
        }
        name.truncate(books.prefix.len());
        let _ = write!(name, "{topic}");
        books.topics_in_flight += 1;
        let started_ns = books.issue(&mut pipeline, Op::CreateTopic, topic, None, |p| {
            p.create_topic(&name)
        })?;
        books.issue(
            &mut pipeline,
            Op::DeleteTopic,
            topic,
            Some(started_ns),
            |p| p.delete_topic(&name),
        )?;
    }
    // A failed connection is the outcome of what it cut off: settled here.
    let rest = pipeline.finish();
    books.settle(rest.into_iter(), shared.clock.now_ns())?;
    Ok(books.out)
}

/// A request whose outcome is not known yet.
struct Sent {
    tag: u64,
    op: Op,
    /// The topic's number after the client's prefix.
    topic: u64,
    /// When its pair's create could leave, on the run's clock.
    pair_ns: u64,
}

/// One client's requests in flight and what their outcomes add up to.
struct Books<'a> {
    shared: &'a Shared,
    timeline: Timeline,
    index: usize,
    prefix: String,
    one_at_a_time: bool,
    /// When the last request was queued.
    last_queued_ns: u64,
    sent: VecDeque<Sent>,
    /// Topics whose create was queued and whose delete is not answered.
    topics_in_flight: u64,
    out: Outcome,
}

impl Books<'_> {
    /// Queues one request with `queue`, which first waits for room in the
    /// pipeline, then settles the replies that made room. The request is
    /// queued at that moment, and their latency ends there: encoding a
    /// topic request in between costs next to nothing. A delete carries its
    /// create's time (`pair_ns`); returns the time the pair started.
    fn issue(
        &mut self,
        pipeline: &mut Pipeline<'_>,
        op: Op,
        topic: u64,
        pair_ns: Option<u64>,
        queue: impl FnOnce(&mut Pipeline<'_>) -> client::Result<u64>,
    ) -> Result<u64, Fault> {
        let tag = queue(pipeline).map_err(|e| self.failed(e))?;
        let now = self.shared.clock.now_ns();
        self.last_queued_ns = now;
        let pair_ns = pair_ns.unwrap_or(now);
        self.sent.push_back(Sent {
            tag,
            op,
            topic,
            pair_ns,
        });
        self.settle(pipeline.completions(), now)?;
        // One at a time means one at a time: do not leave the request in
        // the buffer until the next one.
        if self.one_at_a_time {
            pipeline.flush().map_err(|e| self.failed(e))?;
        }
        Ok(pair_ns)
    }

    /// Records the outcomes that arrived by `done_ns`; a refusal ends the
    /// run.
    fn settle(
        &mut self,
        completions: impl Iterator<Item = Completion>,
        done_ns: u64,
    ) -> Result<(), Fault> {
        for done in completions {
            // The pipeline completes requests in the order sent.
            let sent = self.sent.pop_front().filter(|s| s.tag == done.tag);
            let Some(sent) = sent else {
                return Err(self.failed("an outcome out of the order sent"));
            };
            if let Err(e) = done.result {
                let (op, prefix, topic) = (sent.op, &self.prefix, sent.topic);
                return Err(self.failed(format_args!("{op:?} {prefix}{topic} failed: {e}")));
            }
            if sent.op == Op::CreateTopic {
                self.out.created += 1;
                continue;
            }
            self.topics_in_flight -= 1;
            if self.timeline.measured(sent.pair_ns) {
                let latency = done_ns.saturating_sub(sent.pair_ns).max(1);
                self.out.pairs.saturating_record(latency);
                self.out.measured += 1;
                self.out.last_ns = done_ns;
            }
            if let Some(meter) = self.shared.meter(0) {
                meter.add(1);
            }
        }
        Ok(())
    }

    fn failed(&self, what: impl std::fmt::Display) -> Fault {
        Fault::Failed(format!("client {}: {what}", self.index))
    }
}
