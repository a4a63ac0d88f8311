//! `send`, `fanout` and `latency`: publishers and subscribers over topics,
//! one thread and one connection each.
//!
//! The three differ only in their numbers and in how publishers send:
//! `send` and `fanout` pipeline as fast as the broker acknowledges (`send`
//! has no subscribers by default), `latency` paces publishers on a fixed
//! schedule. The order of a run:
//!
//! 1. the admin connection creates the run's topics;
//! 2. subscribers connect and subscribe, publishers connect and register,
//!    and all wait at the gate — nothing is published before every
//!    subscriber is subscribed, so every message is owed to all of them;
//! 3. the gate opens; publishers run to their quota or the stop time;
//! 4. from what the publishers got acknowledged, each subscriber learns how
//!    many messages it is owed, and drains;
//! 5. topics are deleted, and what the subscribers saw is checked against
//!    what the publishers issued (`verify`), and, for an in-process broker,
//!    against its STATS counters.

use crate::args::{Options, Scenario};
use crate::broker::Broker;
use crate::layout::Layout;
use crate::progress::Progress;
use crate::publisher::{self, OnFull, Spec};
use crate::report::{self, Operation, Report};
use crate::run::{self, Failure, Fault, Gate, Shared, Timeline};
use crate::subscriber::Subscriber;
use crate::topics::Topics;
use crate::verify::{self, Issued};
use courier::client::Stats;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

pub fn run(o: &Options, broker: &Broker) -> Result<Report, Failure> {
    let layout = Layout {
        publishers: o.publishers,
        subscribers: o.subscribers,
        topics: o.topics,
    };
    let shared = Shared::new(broker, &["publish", "deliver"]);
    let mut topics = Topics::create(&shared, o.topics)?;
    topics.check_fit(o).map_err(Failure::Usage)?;
    let before = broker.in_process().then(|| topics.stats()).transpose()?;
    let gate = Arc::new(Gate::default());
    let targets: Arc<Vec<AtomicU64>> = Arc::new(
        (0..o.subscribers)
            .map(|_| AtomicU64::new(u64::MAX))
            .collect(),
    );

    let mut subscribers = Vec::with_capacity(o.subscribers);
    let mut publishers = Vec::with_capacity(o.publishers);
    let started = spawn_subscribers(o, layout, &topics.names, &shared, &gate, &targets)
        .map(|handles| subscribers = handles)
        .and_then(|()| spawn_publishers(o, layout, &topics.names, &shared, &gate))
        .map(|handles| publishers = handles);
    let workers = o.publishers + o.subscribers;
    let timeline = run::start(o, &shared, &gate, workers, started, || {
        let publishers = run::join(std::mem::take(&mut publishers));
        let subscribers = run::join(std::mem::take(&mut subscribers));
        publishers.and(subscribers).map(drop)
    })?;
    let mut progress = Progress::new(o.scenario.name(), o.quiet);

    progress.wait(&shared, &publishers);
    let published = match run::join(publishers) {
        Ok(published) => published,
        Err(e) => {
            shared.abort();
            let _ = run::join(subscribers);
            return Err(Failure::Runtime(e));
        }
    };
    let mut per_topic = vec![0u64; o.topics];
    for issued in published.iter().flat_map(|p| &p.issued) {
        if let Some(total) = per_topic.get_mut(issued.topic) {
            *total += issued.accepted;
        }
    }
    for (j, target) in targets.iter().enumerate() {
        let owed = layout
            .subscriber_topics(j)
            .iter()
            .filter_map(|&t| per_topic.get(t))
            .sum();
        target.store(owed, Ordering::Release);
    }
    progress.wait(&shared, &subscribers);
    drop(progress);
    let subscribed = run::join(subscribers)?;
    let after = broker.in_process().then(|| topics.stats()).transpose()?;
    topics.delete()?;

    let counters = before.zip(after);
    Ok(summarize(
        o, broker, &layout, timeline, published, subscribed, counters,
    ))
}

/// Turns what the clients did into the report, and checks it: the
/// subscribers against the publishers (`verify`), the acknowledgements
/// against the layout, and the broker's own counters when it is ours.
fn summarize(
    o: &Options,
    broker: &Broker,
    layout: &Layout,
    timeline: Timeline,
    published: Vec<publisher::Outcome>,
    subscribed: Vec<crate::subscriber::Outcome>,
    counters: Option<(Stats, Stats)>,
) -> Report {
    let mut report = Report::new(
        o.scenario.name(),
        if o.subscribers > 0 {
            "deliver"
        } else {
            "publish"
        },
    );
    describe(&mut report, o, broker);
    let paced = o.scenario == Scenario::Latency;

    let mut publish = Operation {
        name: "publish",
        unit: "msgs",
        count: 0,
        requests: Some(0),
        bytes: Some(0),
        elapsed: Default::default(),
        latency: Some(report::histogram()),
        latency_of: if paced {
            "per request, from the intended send time to reading its ack (an upper bound)"
        } else {
            "per request, to acknowledgement"
        },
    };
    let mut last_ns = timeline.measure_ns;
    let (mut accepted, mut requests, mut retries) = (0, 0, 0);
    let (mut mismatches, mut offset_breaks) = (0, 0);
    let mut lag = report::histogram();
    let mut issued: Vec<Issued> = Vec::new();
    for p in published {
        publish.count += p.measured;
        publish.requests = publish.requests.map(|r| r + p.measured_requests);
        publish.bytes = publish.bytes.map(|b| b + p.measured_bytes);
        if let Some(hist) = &mut publish.latency {
            let _ = hist.add(&p.latency);
        }
        if let Some(l) = &p.lag {
            let _ = lag.add(l);
        }
        last_ns = last_ns.max(p.last_ns);
        accepted += p.accepted;
        requests += p.requests;
        retries += p.retries;
        mismatches += p.subscriber_mismatches;
        offset_breaks += p.offset_breaks;
        issued.extend(p.issued);
    }
    publish.elapsed = timeline.window(last_ns);
    report.operations.push(publish);

    let mut trackers = Vec::with_capacity(subscribed.len());
    if o.subscribers > 0 {
        let mut deliver = Operation {
            name: "deliver",
            unit: "deliveries",
            count: 0,
            requests: None,
            bytes: Some(0),
            elapsed: Default::default(),
            latency: Some(report::histogram()),
            latency_of: if paced {
                "per message, end to end, from the intended send time"
            } else {
                "per message, end to end"
            },
        };
        let mut last_ns = timeline.measure_ns;
        for s in subscribed {
            deliver.count += s.measured;
            deliver.bytes = deliver.bytes.map(|b| b + s.measured_bytes);
            if let Some(hist) = &mut deliver.latency {
                let _ = hist.add(&s.latency);
            }
            last_ns = last_ns.max(s.last_ns);
            trackers.push(s.tracker);
        }
        deliver.elapsed = timeline.window(last_ns);
        report.operations.push(deliver);
    }

    let verdict = verify::check(layout, &issued, &trackers);
    report.count("published", accepted);
    report.count("requests", requests);
    report.count("retries", retries);
    report.count("delivered", verdict.delivered);
    report.count("expected_deliveries", verdict.expected);
    report.count("lost", verdict.lost);
    report.count("duplicated", verdict.duplicated);
    report.count("reordered", verdict.reordered);
    if paced && !lag.is_empty() {
        report.count("send_lag_p50_ns", lag.value_at_quantile(0.5));
        report.count("send_lag_p99_ns", lag.value_at_quantile(0.99));
        report.count("send_lag_max_ns", lag.max());
        report.notes.push(format!(
            "sends went out after their intended time by p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs",
            lag.value_at_quantile(0.5) as f64 / 1e3,
            lag.value_at_quantile(0.99) as f64 / 1e3,
            lag.max() as f64 / 1e3
        ));
    }
    if retries > 0 {
        report.notes.push(format!(
            "{retries} publish requests were refused as retryable (TOPIC_FULL) and sent again"
        ));
    }
    if report.operations.iter().any(|op| op.count == 0) {
        report
            .notes
            .push("an operation measured nothing: did the warmup take the whole run?".into());
    }
    report.problems.extend(verdict.problems());
    report.problem_if(mismatches, |n| {
        format!("{n} acknowledgements named the wrong number of subscribers")
    });
    report.problem_if(offset_breaks, |n| {
        format!("{n} acknowledgements gave offsets out of sequence")
    });
    if let Some((before, after)) = counters {
        cross_check(&mut report, &before, &after, accepted, verdict.delivered);
    }
    report
}

/// The broker's own counters must agree with the clients' (only for a
/// broker in this process: a shared one counts other clients too).
fn cross_check(report: &mut Report, before: &Stats, after: &Stats, accepted: u64, delivered: u64) {
    let messages_in = after.messages_in.saturating_sub(before.messages_in);
    if messages_in != accepted {
        report.problems.push(format!(
            "the broker counted {messages_in} messages in, the publishers {accepted}"
        ));
    }
    let messages_out = after.messages_out.saturating_sub(before.messages_out);
    if messages_out != delivered {
        report.problems.push(format!(
            "the broker counted {messages_out} deliveries, the subscribers {delivered}"
        ));
    }
}

fn describe(report: &mut Report, o: &Options, broker: &Broker) {
    report.bounds(broker, o);
    report.param("publishers", o.publishers);
    report.param("subscribers", o.subscribers);
    report.param("topics", o.topics);
    if o.scenario == Scenario::Latency {
        report.param("rate", o.rate);
    }
    report.param("pipeline", o.pipeline);
    report.param("batch", o.batch);
    report.param("size", o.size);
    if o.subscribers > 0 {
        report.param("pull_depth", o.pull_depth);
    }
}

type Handles<T> = Vec<JoinHandle<Result<T, Fault>>>;

fn spawn_subscribers(
    o: &Options,
    layout: Layout,
    names: &[String],
    shared: &Arc<Shared>,
    gate: &Arc<Gate>,
    targets: &Arc<Vec<AtomicU64>>,
) -> Result<Handles<crate::subscriber::Outcome>, String> {
    let mut handles = Vec::with_capacity(o.subscribers);
    for j in 0..o.subscribers {
        let topics = named(layout.subscriber_topics(j), names);
        let (shared2, gate2, targets2) =
            (Arc::clone(shared), Arc::clone(gate), Arc::clone(targets));
        let name = format!("bench-sub-{j}");
        let depth = o.pull_depth;
        handles.push(run::spawn(name.clone(), shared, gate, move || {
            let client = shared2.connect(name)?;
            let subscriber = Subscriber::subscribe(client, j, layout, topics)?;
            let timeline = gate2.ready().ok_or(Fault::Aborted)?;
            let target = targets2.get(j).ok_or(Fault::Aborted)?;
            subscriber.run(&shared2, timeline, target, depth)
        })?);
    }
    Ok(handles)
}

fn spawn_publishers(
    o: &Options,
    layout: Layout,
    names: &[String],
    shared: &Arc<Shared>,
    gate: &Arc<Gate>,
) -> Result<Handles<publisher::Outcome>, String> {
    let mut handles = Vec::with_capacity(o.publishers);
    let paced = o.scenario == Scenario::Latency;
    let rate = o.rate / o.publishers as f64;
    for i in 0..o.publishers {
        let topics = layout.publisher_topics(i);
        let spec = Spec {
            index: i,
            subscribers: topics
                .iter()
                .map(|&t| layout.subscribers_of(t) as u64)
                .collect(),
            sole: topics
                .iter()
                .map(|&t| layout.publishers_of(t) == 1)
                .collect(),
            topics: named(topics, names),
            size: o.size,
            batch: o.batch,
            depth: o.pipeline,
            phase: i as f64 / o.publishers as f64,
            quota: o.messages.map_or(u64::MAX, |n| {
                let p = o.publishers as u64;
                n / p + u64::from((i as u64) < n % p)
            }),
            on_full: OnFull::Retry,
        };
        let (shared2, gate2) = (Arc::clone(shared), Arc::clone(gate));
        let name = format!("bench-pub-{i}");
        handles.push(run::spawn(name.clone(), shared, gate, move || {
            let mut client = shared2.connect(name)?;
            client
                .register_publisher()
                .map_err(|e| format!("publisher {i}: cannot register: {e}"))?;
            let timeline = gate2.ready().ok_or(Fault::Aborted)?;
            if paced {
                publisher::paced(&mut client, &spec, &shared2, timeline, rate)
            } else {
                publisher::pipelined(&mut client, &spec, &shared2, timeline)
            }
        })?);
    }
    Ok(handles)
}

fn named(topics: Vec<usize>, names: &[String]) -> Vec<(usize, String)> {
    topics
        .into_iter()
        .filter_map(|t| names.get(t).map(|name| (t, name.clone())))
        .collect()
}
