//! `backlog`: a subscriber far behind the memory cache catches up from the
//! log while a probe on another topic measures end-to-end latency.
//!
//! Always in process, on a fresh temporary data directory: a durable broker
//! with a small `--cache-bytes` is filled with a backlog many times the
//! cache (one topic, one subscriber that has read nothing, so all but the
//! newest cache's worth is on disk only). Then the probe — a publisher and
//! a subscriber on a topic of their own: one acknowledged publish, then a
//! pull of it, timed together, every millisecond — runs alone for
//! `--duration`, then beside the catch-up (pipelined pulls that acknowledge
//! as they go) until the backlog is read. The report gives the catch-up's
//! msgs/s and MB/s and the probe's latency in both phases; the target is
//! the catch-up raising the probe's p99 by at most 2 ms. Every backlog
//! message must arrive once, in order, with its payload, and every probe
//! message alone and in order.

use crate::args::Options;
use crate::report::{self, Operation, Report};
use crate::run::Failure;
use courier::Client;
use courier::client::PullOptions;
use courier::server::{self, Config};
use courier::storage::SyncMode;
use hdrhistogram::Histogram;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const BACKLOG: &str = "bench-backlog";
const PROBE: &str = "bench-probe";
/// The probe's pace.
const PROBE_INTERVAL: Duration = Duration::from_millis(1);
/// The backlog's size in caches, when `--messages` does not say.
const CACHES_BEHIND: usize = 10;

pub fn run(o: &Options) -> Result<Report, Failure> {
    let dir = std::env::temp_dir().join(format!("courier-bench-backlog-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let result = measure(o, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// The payload of backlog offset `offset`: the offset, then a filler.
fn payload(offset: u64, size: usize) -> Vec<u8> {
    let mut p = offset.to_le_bytes().to_vec();
    p.resize(size.max(8), 0x5a);
    p
}

fn measure(o: &Options, dir: &std::path::Path) -> Result<Report, Failure> {
    let size = o.size.max(8);
    let cache = o.cache_bytes;
    let messages = o
        .messages
        .unwrap_or(((CACHES_BEHIND * cache) / size + 1) as u64 * 21 / 20);
    let batch = o.batch.max(1);
    let sync = o.fsync.unwrap_or(SyncMode::Always);
    let mut config = Config {
        addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        storage: crate::broker::durable_storage(dir, sync),
        ..Config::default()
    };
    config.limits.cache_bytes = cache;
    config.limits.max_backlog_bytes = usize::MAX / 2;
    config.limits.max_backlog_messages = usize::MAX / 2;
    let running = server::spawn(config).map_err(|e| format!("cannot start the broker: {e}"))?;
    let addr = running.addr();
    let failed = |what: &'static str| move |e: courier::client::Error| format!("{what}: {e}");

    let mut catcher = Client::connect(addr).map_err(failed("connect"))?;
    catcher.register_subscriber().map_err(failed("register"))?;
    let mut publisher = Client::connect(addr).map_err(failed("connect"))?;
    publisher.register_publisher().map_err(failed("register"))?;
    publisher.create_topic(BACKLOG).map_err(failed("create"))?;
    publisher.create_topic(PROBE).map_err(failed("create"))?;
    catcher.subscribe(BACKLOG).map_err(failed("subscribe"))?;
    let mut sent = 0u64;
    while sent < messages {
        let n = (messages - sent).min(batch as u64);
        let payloads: Vec<Vec<u8>> = (sent..sent + n).map(|i| payload(i, size)).collect();
        let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
        publisher
            .send_batch(BACKLOG, &refs)
            .map_err(failed("fill"))?;
        sent += n;
    }
    let filled = publisher.stats().map_err(failed("stats"))?;

    // The probe, alone, then beside the catch-up.
    let catching = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let probe = {
        let (catching, done) = (catching.clone(), done.clone());
        std::thread::Builder::new()
            .name("bench-probe".into())
            .spawn(move || probe(addr, &catching, &done))
            .map_err(|e| format!("cannot start the probe: {e}"))?
    };
    std::thread::sleep(o.duration);
    catching.store(true, Ordering::SeqCst);
    let caught = catch_up(&mut catcher, messages, size);
    done.store(true, Ordering::SeqCst);
    let probed = probe.join().map_err(|_| "the probe panicked".to_owned())?;
    let stats = publisher.stats().map_err(failed("stats"))?;
    drop((catcher, publisher));
    running
        .stop()
        .map_err(|e| format!("the broker failed: {e}"))?;
    let caught = caught?;
    let probed = probed?;

    let mut report = Report::new("backlog", "catch_up");
    report.param("messages", messages);
    report.param("size", size as u64);
    report.param("batch", batch as u64);
    report.param("cache_bytes", cache as u64);
    report.param("fsync", format!("{sync:?}").to_lowercase());
    report.count("backlog_bytes", filled.backlog_bytes);
    report.count("evicted_at_start", filled.messages_evicted);
    // The log's read-back index once the backlog is on disk.
    let index = filled.memory.get("log_index").copied().unwrap_or(0);
    report.count("log_index_bytes", index);
    report.count("disk_bytes_at_start", filled.disk_bytes);
    report.count("disk_reads", stats.disk_reads);
    report.count("disk_messages_read", stats.disk_messages_read);
    report.count("probe_rounds_alone", probed.alone.len());
    report.count("probe_rounds_catching_up", probed.beside.len());
    let p99 = |h: &Histogram<u64>| h.value_at_quantile(0.99);
    let raised = p99(&probed.beside).saturating_sub(p99(&probed.alone));
    report.count("probe_p99_raise_us", raised / 1000);
    report.problem_if(messages.saturating_sub(caught.received), |n| {
        format!("{n} backlog messages never arrived")
    });
    report.problems.extend(caught.problems);
    report.problems.extend(probed.problems);
    report.operations.push(Operation {
        name: "catch_up",
        unit: "msgs",
        count: caught.received,
        requests: Some(caught.pulls),
        bytes: Some(caught.bytes),
        elapsed: caught.elapsed,
        latency: None,
        latency_of: "",
    });
    for (name, hist, elapsed) in [
        ("probe_alone", probed.alone, o.duration),
        ("probe_catching_up", probed.beside, caught.elapsed),
    ] {
        report.operations.push(Operation {
            name,
            unit: "rounds",
            count: hist.len(),
            requests: None,
            bytes: None,
            elapsed,
            latency: Some(hist),
            latency_of: "probe, publish to its pull reply",
        });
    }
    Ok(report)
}

/// Whether `p` is [`payload`]`(offset, size)`, without building it.
fn is_payload(p: &[u8], offset: u64, size: usize) -> bool {
    p.len() == size.max(8) && p[..8] == offset.to_le_bytes() && p[8..].iter().all(|&b| b == 0x5a)
}

struct Caught {
    received: u64,
    bytes: u64,
    pulls: u64,
    elapsed: Duration,
    problems: Vec<String>,
}

/// Reads the backlog from offset 0 with pipelined pulls that acknowledge
/// as they go, checking order and payloads.
fn catch_up(client: &mut Client, messages: u64, size: usize) -> Result<Caught, String> {
    let options = PullOptions {
        topic: Some(BACKLOG.to_owned()),
        max_messages: courier::protocol::MAX_PULL_MESSAGES,
        max_bytes: u32::MAX,
        wait: Duration::from_millis(200),
        ack: true,
    };
    let started = Instant::now();
    let mut out = Caught {
        received: 0,
        bytes: 0,
        pulls: 0,
        elapsed: Duration::ZERO,
        problems: Vec::new(),
    };
    let give_up = started + crate::args::MAX_DURATION;
    let mut pulls = client.pulls(options, 4);
    while out.received < messages && Instant::now() < give_up {
        let batch = pulls
            .next_batch()
            .map_err(|e| format!("catch-up pull failed: {e}"))?;
        out.pulls += 1;
        for m in batch.iter() {
            let intact = m.offset == out.received && is_payload(m.payload, m.offset, size);
            if !intact && out.problems.len() < 10 {
                out.problems.push(format!(
                    "catch-up expected offset {} intact, got offset {}",
                    out.received, m.offset
                ));
            }
            out.received = out.received.max(m.offset + 1);
            out.bytes += m.payload.len() as u64;
        }
        pulls.processed_batch(&batch);
    }
    out.elapsed = started.elapsed();
    Ok(out)
}

struct Probed {
    alone: Histogram<u64>,
    beside: Histogram<u64>,
    problems: Vec<String>,
}

/// One acknowledged publish and the pull that takes it, every
/// [`PROBE_INTERVAL`], until `done`; timed into the phase `catching` says.
fn probe(addr: SocketAddr, catching: &AtomicBool, done: &AtomicBool) -> Result<Probed, String> {
    let failed = |what: &'static str| move |e: courier::client::Error| format!("probe {what}: {e}");
    let mut publisher = Client::connect(addr).map_err(failed("connect"))?;
    publisher.register_publisher().map_err(failed("register"))?;
    let mut subscriber = Client::connect(addr).map_err(failed("connect"))?;
    subscriber
        .register_subscriber()
        .map_err(failed("register"))?;
    subscriber.subscribe(PROBE).map_err(failed("subscribe"))?;
    let pull = PullOptions {
        topic: Some(PROBE.to_owned()),
        max_messages: 16,
        wait: Duration::from_secs(5),
        ack: true,
        ..PullOptions::default()
    };
    let mut out = Probed {
        alone: report::histogram(),
        beside: report::histogram(),
        problems: Vec::new(),
    };
    let mut seq = 0u64;
    while !done.load(Ordering::SeqCst) {
        let t0 = Instant::now();
        let beside = catching.load(Ordering::SeqCst);
        let payload = seq.to_be_bytes();
        let published = publisher.send(PROBE, &payload).map_err(failed("publish"))?;
        let batch = subscriber.pull(&pull).map_err(failed("pull"))?;
        let elapsed = t0.elapsed().as_nanos() as u64;
        let alone = batch
            .iter()
            .map(|m| (m.offset, m.payload.as_ref() == payload))
            .collect::<Vec<_>>();
        if alone != [(published.offset, true)] && out.problems.len() < 10 {
            out.problems.push(format!(
                "probe {seq}: expected its message alone, got {alone:?}"
            ));
        }
        let phase = if beside {
            &mut out.beside
        } else {
            &mut out.alone
        };
        phase.saturating_record(elapsed.max(1));
        seq += 1;
        if let Some(rest) = PROBE_INTERVAL.checked_sub(t0.elapsed()) {
            std::thread::sleep(rest);
        }
    }
    Ok(out)
}
