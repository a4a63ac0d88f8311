//! `retained`: publish N messages that a subscriber does not pull, and
//! measure what keeping them costs the broker.
//!
//! One subscriber subscribes to every topic of the run and waits; one
//! publisher publishes N messages (pipelined, in batches) round-robin over
//! the topics. The broker's STATS must then show exactly those messages and
//! bytes as retained; with `--broker-pid` its RSS is read before, after
//! publishing, and after the subscriber has pulled (and acknowledged)
//! everything, which is checked like any other run. A `TOPIC_FULL` refusal
//! ends publishing: the broker's backlog limits bound what can be retained.

use crate::args::{MAX_DURATION, Options};
use crate::broker::{self, Broker};
use crate::layout::Layout;
use crate::progress::Progress;
use crate::publisher::{self, OnFull, Spec};
use crate::report::{Operation, Report};
use crate::run::{self, Failure, Gate, Shared, Timeline};
use crate::subscriber::Subscriber;
use crate::topics::Topics;
use crate::verify;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

pub fn run(o: &Options, broker: &Broker) -> Result<Report, Failure> {
    let layout = Layout {
        publishers: 1,
        subscribers: 1,
        topics: o.topics,
    };
    let shared = Shared::new(broker, &["publish", "deliver"]);
    let mut topics = Topics::create(&shared, o.topics)?;
    topics.check_fit(o).map_err(Failure::Usage)?;
    let named: Vec<(usize, String)> = topics.names.iter().cloned().enumerate().collect();
    let client = shared.connect("bench-retained-sub".into())?;
    let subscriber = Subscriber::subscribe(client, 0, layout, named.clone())?;
    let mut publisher_client = shared.connect("bench-retained-pub".into())?;
    publisher_client
        .register_publisher()
        .map_err(|e| format!("cannot register: {e}"))?;
    let pid = o.broker_pid;
    let stats_before = topics.stats()?;
    let rss_before = pid.map(broker::rss_bytes).transpose()?;

    let spec = Spec {
        index: 0,
        subscribers: vec![1; named.len()],
        sole: vec![true; named.len()],
        topics: named,
        size: o.size,
        batch: o.batch,
        depth: o.pipeline,
        phase: 0.0,
        quota: o.messages.unwrap_or(1),
        on_full: OnFull::Stop,
    };
    let publishing = Timeline::starting_now(&shared.clock, Duration::ZERO, MAX_DURATION);
    let gate = Arc::new(Gate::default());
    let shared2 = Arc::clone(&shared);
    let handle = run::spawn("bench-pub-0".into(), &shared, &gate, move || {
        publisher::pipelined(&mut publisher_client, &spec, &shared2, publishing)
    })?;
    let handles = vec![handle];
    let mut progress = Progress::new(o.scenario.name(), o.quiet);
    progress.wait(&shared, &handles);
    let published = run::join(handles)?
        .pop()
        .ok_or_else(|| "the publisher returned nothing".to_owned())?;
    let stats_retained = topics.stats()?;
    let rss_retained = pid.map(broker::rss_bytes).transpose()?;

    let draining = Timeline::starting_now(&shared.clock, Duration::ZERO, MAX_DURATION);
    let shared2 = Arc::clone(&shared);
    let accepted = published.accepted;
    let handle = run::spawn("bench-sub-0".into(), &shared, &gate, move || {
        subscriber.run(&shared2, draining, &AtomicU64::new(accepted), 1)
    })?;
    let handles = vec![handle];
    progress.wait(&shared, &handles);
    drop(progress);
    let drained = run::join(handles)?
        .pop()
        .ok_or_else(|| "the subscriber returned nothing".to_owned())?;
    // The subscriber's last batch is acknowledged only by its next pull,
    // which never comes: deleting the topic lets that go too.
    topics.delete()?;
    let rss_drained = pid.map(broker::settled_rss_bytes).transpose()?;

    let mut report = Report::new(o.scenario.name(), "publish");
    report.param("broker", broker.addr());
    report.param("in_process", broker.in_process());
    report.param("messages", o.messages.unwrap_or(1));
    report.param("size", o.size);
    report.param("topics", o.topics);
    report.param("batch", o.batch);
    report.param("pipeline", o.pipeline);
    report.operations.push(Operation {
        name: "publish",
        unit: "msgs",
        count: published.measured,
        requests: Some(published.measured_requests),
        bytes: Some(published.measured_bytes),
        elapsed: publishing.window(published.last_ns),
        latency: Some(published.latency),
        latency_of: "per request, to acknowledgement",
    });
    report.operations.push(Operation {
        name: "deliver",
        unit: "deliveries",
        count: drained.measured,
        requests: None,
        bytes: Some(drained.measured_bytes),
        elapsed: draining.window(drained.last_ns),
        // How long messages waited unpulled is the scenario's design, not a
        // latency.
        latency: None,
        latency_of: "",
    });

    let backlog_messages = stats_retained
        .backlog_messages
        .saturating_sub(stats_before.backlog_messages);
    let backlog_bytes = stats_retained
        .backlog_bytes
        .saturating_sub(stats_before.backlog_bytes);
    let payload_bytes = accepted * o.size as u64;
    report.count("retained", accepted);
    report.count("retained_payload_bytes", payload_bytes);
    report.count("broker_backlog_messages", backlog_messages);
    report.count("broker_backlog_bytes", backlog_bytes);
    if let (Some(before), Some(retained), Some(drained)) = (rss_before, rss_retained, rss_drained) {
        let grown = retained.saturating_sub(before);
        let per = grown / accepted.max(1);
        report.count("rss_before_bytes", before);
        report.count("rss_retained_bytes", retained);
        report.count("rss_drained_bytes", drained);
        report.count("rss_per_message_bytes", per);
        report.notes.push(format!(
            "broker RSS {:.1} MiB -> {:.1} MiB retaining {accepted} messages ({per} bytes each, {} beyond the payload), {:.1} MiB after draining",
            mib(before),
            mib(retained),
            per as i64 - o.size as i64,
            mib(drained)
        ));
    }
    if published.stopped_full {
        report.notes.push(format!(
            "the broker refused with TOPIC_FULL after {accepted} messages: its backlog limits bound this run (use more --topics)"
        ));
    }
    if backlog_messages != accepted || backlog_bytes != payload_bytes {
        report.problems.push(format!(
            "the broker's STATS show {backlog_messages} messages ({backlog_bytes} bytes) retained, the publisher had {accepted} ({payload_bytes} bytes) acknowledged"
        ));
    }
    let verdict = verify::check(&layout, &published.issued, &[drained.tracker]);
    report.count("delivered", verdict.delivered);
    report.count("lost", verdict.lost);
    report.count("duplicated", verdict.duplicated);
    report.count("reordered", verdict.reordered);
    report.problems.extend(verdict.problems());
    Ok(report)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1_048_576.0
}
