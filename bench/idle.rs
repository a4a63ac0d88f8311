//! `idle`: open N connections that only shake hands, and measure what they
//! cost the broker.
//!
//! The connections are opened one after another by one thread (a thread per
//! idle connection would measure threads), each timed from TCP connect to
//! the HELLO reply. With `--broker-pid`, the broker's RSS is read before the
//! first and after the last; the difference over N is its memory per idle
//! connection. The broker's STATS must count them all.

use crate::args::{MAX_DURATION, Options};
use crate::broker::{self, Broker};
use crate::progress::Progress;
use crate::report::{self, Operation, Report};
use crate::run::{self, Failure, Fault, Gate, Shared, nanos};
use std::sync::Arc;
use std::time::Duration;

struct Outcome {
    latency: hdrhistogram::Histogram<u64>,
    elapsed: Duration,
    rss_after: Option<u64>,
    connections_seen: u64,
}

pub fn run(o: &Options, broker: &Broker) -> Result<Report, Failure> {
    let n = o.messages.unwrap_or(1);
    let shared = Shared::new(broker, &["connect"]);
    let pid = o.broker_pid;
    let rss_before = pid.map(broker::rss_bytes).transpose()?;
    let hold = o.duration;
    let gate = Arc::new(Gate::default());
    let shared2 = Arc::clone(&shared);
    let handle = run::spawn("bench-idle".into(), &shared, &gate, move || {
        let clock = shared2.clock;
        let start = clock.now_ns();
        let mut latency = report::histogram();
        let mut clients = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
        let give_up = start.saturating_add(nanos(MAX_DURATION));
        for k in 0..n {
            let t0 = clock.now_ns();
            if t0 >= give_up || shared2.aborted() {
                return Err(Fault::Failed(format!(
                    "gave up after opening {k} of {n} connections in {} s",
                    MAX_DURATION.as_secs()
                )));
            }
            let client = shared2
                .connect(format!("bench-idle-{k}"))
                .map_err(|e| format!("connection {} of {n}: {e}", k + 1))?;
            latency.saturating_record(clock.now_ns().saturating_sub(t0).max(1));
            clients.push(client);
            if let Some(meter) = shared2.meter(0) {
                meter.add(1);
            }
        }
        let elapsed = Duration::from_nanos(clock.now_ns().saturating_sub(start));
        let rss_after = pid.map(broker::rss_bytes).transpose()?;
        let connections_seen = match clients.last_mut() {
            Some(client) => {
                client
                    .stats()
                    .map_err(|e| format!("STATS failed: {e}"))?
                    .connections
            }
            None => 0,
        };
        // Hold them open, in steps so an abort is noticed.
        let until = clock.now_ns().saturating_add(nanos(hold));
        while clock.now_ns() < until && !shared2.aborted() {
            let left = until.saturating_sub(clock.now_ns());
            std::thread::sleep(Duration::from_nanos(left).min(Duration::from_millis(100)));
        }
        drop(clients);
        Ok(Outcome {
            latency,
            elapsed,
            rss_after,
            connections_seen,
        })
    })?;
    let handles = vec![handle];
    let mut progress = Progress::new(o.scenario.name(), o.quiet);
    progress.wait(&shared, &handles);
    drop(progress);
    let outcome = run::join(handles)?
        .pop()
        .ok_or_else(|| "the idle thread returned nothing".to_owned())?;

    let mut report = Report::new(o.scenario.name(), "connect");
    report.param("broker", broker.addr());
    report.param("in_process", broker.in_process());
    report.param("connections", n);
    report.param("hold_s", hold.as_secs_f64());
    report.operations.push(Operation {
        name: "connect",
        unit: "connections",
        count: n,
        requests: None,
        bytes: None,
        elapsed: outcome.elapsed,
        latency: Some(outcome.latency),
        latency_of: "per connection, TCP connect and HELLO",
    });
    report.count("connections", n);
    report.count("broker_connections", outcome.connections_seen);
    if let (Some(before), Some(after)) = (rss_before, outcome.rss_after) {
        let per = after.saturating_sub(before) / n.max(1);
        report.count("rss_before_bytes", before);
        report.count("rss_after_bytes", after);
        report.count("rss_per_connection_bytes", per);
        report.notes.push(format!(
            "broker RSS {:.1} MiB -> {:.1} MiB: {per} bytes per idle connection",
            before as f64 / 1048576.0,
            after as f64 / 1048576.0
        ));
    }
    // An in-process broker has exactly ours; a shared one at least ours.
    let short = if broker.in_process() {
        outcome.connections_seen != n
    } else {
        outcome.connections_seen < n
    };
    if short {
        report.problems.push(format!(
            "the broker counted {} open connections with the bench's {n} open",
            outcome.connections_seen
        ));
    }
    Ok(report)
}
