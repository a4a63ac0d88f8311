//! `create-topic`: clients creating and deleting topics, each on its own
//! connection and thread, with `--pipeline D` requests in flight.
//!
//! Each client creates a topic, deletes it, and goes on with the next name,
//! so the broker's topic table stays small and the run measures the two
//! operations rather than a growing map. Names are written into one reused
//! buffer. Every request must succeed; for an in-process broker the topic
//! count must be back where it started.
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

/// What one client did.
struct Outcome {
    /// Per request, nanoseconds; measured window only.
    create: Histogram<u64>,
    delete: Histogram<u64>,
    /// Topics deleted in the measured window.
    measured: u64,
    last_ns: u64,
    created: u64,
}

pub fn run(o: &Options, broker: &Broker) -> Result<Report, Failure> {
    let shared = Shared::new(broker.addr().to_owned(), &["create"]);
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

    let mut report = Report::new(o.scenario.name(), "create");
    report.bounds(broker, o);
    report.param("clients", o.clients);
    report.param("pipeline", o.pipeline);
    let (mut create, mut delete) = (report::histogram(), report::histogram());
    let (mut measured, mut created, mut last_ns) = (0, 0, timeline.measure_ns);
    for outcome in outcomes {
        let _ = create.add(&outcome.create);
        let _ = delete.add(&outcome.delete);
        measured += outcome.measured;
        created += outcome.created;
        last_ns = last_ns.max(outcome.last_ns);
    }
    let elapsed = timeline.window(last_ns);
    for (name, latency) in [("create", create), ("delete", delete)] {
        report.operations.push(Operation {
            name,
            unit: "topics",
            count: measured,
            requests: None,
            bytes: None,
            elapsed,
            latency: Some(latency),
            latency_of: "per request",
        });
    }
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
            create: report::histogram(),
            delete: report::histogram(),
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
        books.issue(&mut pipeline, Op::CreateTopic, topic, |p| {
            p.create_topic(&name)
        })?;
        books.issue(&mut pipeline, Op::DeleteTopic, topic, |p| {
            p.delete_topic(&name)
        })?;
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
    /// When it could leave, on the run's clock.
    queued_ns: u64,
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
    /// timed from that moment, and their latency ends there: encoding a
    /// topic request in between costs next to nothing.
    fn issue(
        &mut self,
        pipeline: &mut Pipeline<'_>,
        op: Op,
        topic: u64,
        queue: impl FnOnce(&mut Pipeline<'_>) -> client::Result<u64>,
    ) -> Result<(), Fault> {
        let tag = queue(pipeline).map_err(|e| self.failed(e))?;
        let now = self.shared.clock.now_ns();
        self.last_queued_ns = now;
        self.sent.push_back(Sent {
            tag,
            op,
            topic,
            queued_ns: now,
        });
        self.settle(pipeline.completions(), now)?;
        // One at a time means one at a time: do not leave the request in
        // the buffer until the next one.
        if self.one_at_a_time {
            pipeline.flush().map_err(|e| self.failed(e))?;
        }
        Ok(())
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
            let measured = self.timeline.measured(sent.queued_ns);
            let latency = done_ns.saturating_sub(sent.queued_ns).max(1);
            if sent.op == Op::CreateTopic {
                self.out.created += 1;
                if measured {
                    self.out.create.saturating_record(latency);
                }
                continue;
            }
            self.topics_in_flight -= 1;
            if measured {
                self.out.delete.saturating_record(latency);
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
