//! `create-topic`: clients creating and deleting topics, each on its own
//! connection and thread, one request at a time.
//!
//! Each client creates a topic, deletes it, and goes on with the next name,
//! so the broker's topic table stays small and the run measures the two
//! operations rather than a growing map. Names are written into one reused
//! buffer. Every request must succeed; for an in-process broker the topic
//! count must be back where it started.
//!
//! With `--pipeline 1` (the default) each request is one round trip through
//! the client library, so the rate is bounded by clients / round trip. With
//! more, requests go `D` at a time over a bare connection (`raw`), because
//! the library pipelines only publishes.

use crate::args::Options;
use crate::broker::Broker;
use crate::progress::Progress;
use crate::raw::Raw;
use crate::report::{self, Operation, Report};
use crate::run::{self, Failure, Fault, Gate, Shared, Timeline};
use crate::topics::run_prefix;
use courier::protocol::{Op, Request};
use hdrhistogram::Histogram;
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

/// How long a pipelined client waits for a reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

struct Outcome {
    create: Histogram<u64>,
    delete: Histogram<u64>,
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
        let body = move || {
            if depth > 1 {
                pipelined(&shared2, &gate2, c, prefix, quota, depth)
            } else {
                blocking(&shared2, &gate2, c, prefix, quota)
            }
        };
        match run::spawn(format!("bench-client-{c}"), &shared, &gate, body) {
            Ok(handle) => handles.push(handle),
            Err(e) => {
                spawned = Err(e);
                break;
            }
        }
    }
    let timeline = spawned.and_then(|()| {
        gate.open(o.clients, || {
            Timeline::starting_now(&shared.clock, o.warmup, o.duration)
        })
        .ok_or_else(|| "the clients could not all connect in time".to_owned())
    });
    let timeline = match timeline {
        Ok(timeline) => timeline,
        Err(e) => {
            shared.abort();
            gate.fail();
            return Err(Failure::Runtime(run::join(handles).err().unwrap_or(e)));
        }
    };
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

/// One client, one request at a time through the client library: create,
/// delete, next name, until the quota or the stop.
fn blocking(
    shared: &Shared,
    gate: &Gate,
    index: usize,
    mut name: String,
    quota: u64,
) -> Result<Outcome, Fault> {
    let mut client = shared.connect(format!("bench-client-{index}"))?;
    client
        .register_publisher()
        .map_err(|e| format!("client {index}: cannot register: {e}"))?;
    let timeline = gate.ready().ok_or(Fault::Aborted)?;
    let prefix_len = name.len();
    let clock = shared.clock;
    let mut out = Outcome {
        create: report::histogram(),
        delete: report::histogram(),
        measured: 0,
        last_ns: timeline.measure_ns,
        created: 0,
    };
    for k in 0u64.. {
        let start = clock.now_ns();
        if out.measured >= quota || start >= timeline.stop_ns || shared.aborted() {
            break;
        }
        name.truncate(prefix_len);
        let _ = write!(name, "{k}");
        client
            .create_topic(&name)
            .map_err(|e| format!("client {index}: cannot create topic {name}: {e}"))?;
        let created = clock.now_ns();
        out.created += 1;
        client
            .delete_topic(&name)
            .map_err(|e| format!("client {index}: cannot delete topic {name}: {e}"))?;
        let deleted = clock.now_ns();
        if timeline.measured(start) {
            out.create
                .saturating_record(created.saturating_sub(start).max(1));
            out.delete
                .saturating_record(deleted.saturating_sub(created).max(1));
            out.measured += 1;
            out.last_ns = deleted;
        }
        if let Some(meter) = shared.meter(0) {
            meter.add(1);
        }
    }
    Ok(out)
}

/// One client keeping `depth` requests in flight (see `raw`): creates and
/// deletes go out in pairs, and a topic counts when its delete is answered.
fn pipelined(
    shared: &Shared,
    gate: &Gate,
    index: usize,
    mut name: String,
    quota: u64,
    depth: usize,
) -> Result<Outcome, Fault> {
    let label = format!("client {index}");
    let mut raw = Raw::publisher(
        &shared.addr,
        &format!("bench-client-{index}"),
        REPLY_TIMEOUT,
    )
    .map_err(|e| format!("{label}: {e}"))?;
    let timeline = gate.ready().ok_or(Fault::Aborted)?;
    let prefix_len = name.len();
    let clock = shared.clock;
    let mut out = Outcome {
        create: report::histogram(),
        delete: report::histogram(),
        measured: 0,
        last_ns: timeline.measure_ns,
        created: 0,
    };
    // (request id, operation, when it was queued)
    let mut pending: VecDeque<(u64, Op, u64)> = VecDeque::with_capacity(depth + 2);
    let mut topics_in_flight = 0u64;
    let mut next_name = 0u64;
    loop {
        let now = clock.now_ns();
        let open = !shared.aborted() && now < timeline.stop_ns;
        if open && pending.len() + 2 <= depth.max(2) && out.measured + topics_in_flight < quota {
            name.truncate(prefix_len);
            let _ = write!(name, "{next_name}");
            next_name += 1;
            let create = raw.queue(&Request::CreateTopic { topic: &name });
            let delete = raw.queue(&Request::DeleteTopic { topic: &name });
            pending.push_back((create, Op::CreateTopic, now));
            pending.push_back((delete, Op::DeleteTopic, now));
            topics_in_flight += 1;
            continue;
        }
        let Some(&(_, first_op, _)) = pending.front() else {
            break;
        };
        raw.flush().map_err(|e| format!("{label}: {e}"))?;
        let mut reply = Some(raw.reply(first_op).map_err(|e| format!("{label}: {e}"))?);
        while let Some((id, result)) = reply.take() {
            let done = clock.now_ns();
            let Some((sent_id, op, queued)) = pending.pop_front() else {
                return Err(Fault::Failed(format!("{label}: a reply to nothing")));
            };
            if id != sent_id {
                return Err(Fault::Failed(format!(
                    "{label}: reply to request {id} while {sent_id} was next"
                )));
            }
            if let Err(e) = result {
                return Err(Fault::Failed(format!(
                    "{label}: {op:?} failed: {} ({})",
                    e.message,
                    e.code.name()
                )));
            }
            let latency = done.saturating_sub(queued).max(1);
            if op == Op::CreateTopic {
                out.created += 1;
                if timeline.measured(queued) {
                    out.create.saturating_record(latency);
                }
            } else {
                topics_in_flight -= 1;
                if timeline.measured(queued) {
                    out.delete.saturating_record(latency);
                    out.measured += 1;
                    out.last_ns = done;
                }
                if let Some(meter) = shared.meter(0) {
                    meter.add(1);
                }
            }
            if let Some(&(_, next_op, _)) = pending.front() {
                reply = raw.buffered(next_op).map_err(|e| format!("{label}: {e}"))?;
            }
        }
    }
    Ok(out)
}
