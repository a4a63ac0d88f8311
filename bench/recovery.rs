//! `recovery`: how fast a broker starts on a log of N messages.
//!
//! Fills a fresh data directory through an in-process durable broker (one
//! topic, one subscriber that never acknowledges, so every message is kept
//! and rebuilt), stops it, then times `Server::bind` on the same directory —
//! the log replay and the rebuilding of the broker's state — and checks
//! that the topic came back with every message. Always in process: the
//! point is the start itself.

use crate::args::Options;
use crate::report::{Operation, Report};
use crate::run::Failure;
use courier::Client;
use courier::server::{self, Config, Server};
use courier::storage::SyncMode;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Instant;

const TOPIC: &str = "bench-recovery";

fn config(dir: &std::path::Path, sync: SyncMode) -> Config {
    Config {
        addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        storage: crate::broker::durable_storage(dir, sync),
        ..Config::default()
    }
}

pub fn run(o: &Options) -> Result<Report, Failure> {
    let dir = std::env::temp_dir().join(format!("courier-bench-recovery-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let result = measure(o, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn measure(o: &Options, dir: &std::path::Path) -> Result<Report, Failure> {
    let messages = o.messages.unwrap_or(1_000_000);
    let batch = o.batch.max(1);
    let mut c = config(dir, o.fsync.unwrap_or(SyncMode::Never));
    c.limits.max_backlog_bytes = usize::MAX / 2;
    c.limits.max_backlog_messages = usize::MAX / 2;
    c.limits.max_memory = usize::MAX / 4;
    let limits = c.limits.clone();
    let running = server::spawn(c).map_err(|e| format!("cannot start the broker: {e}"))?;
    let addr = running.addr();
    let fill = || -> courier::client::Result<()> {
        let mut subscriber = Client::connect(addr)?;
        subscriber.register_subscriber()?;
        let mut publisher = Client::connect(addr)?;
        publisher.register_publisher()?;
        publisher.create_topic(TOPIC)?;
        subscriber.subscribe(TOPIC)?;
        let payload = vec![0x5au8; o.size];
        let payloads: Vec<&[u8]> = (0..batch).map(|_| payload.as_slice()).collect();
        let mut sent = 0;
        while sent < messages {
            let n = (messages - sent).min(batch as u64) as usize;
            publisher.send_batch(TOPIC, &payloads[..n])?;
            sent += n as u64;
        }
        Ok(())
    };
    fill().map_err(|e| format!("filling the log failed: {e}"))?;
    running
        .stop()
        .map_err(|e| format!("the broker failed: {e}"))?;
    let mut again = config(dir, SyncMode::Always);
    again.limits = limits;
    let started = Instant::now();
    let server = Server::bind(again).map_err(|e| format!("recovery failed: {e}"))?;
    let elapsed = started.elapsed();
    let recovery = server
        .recovery()
        .cloned()
        .ok_or_else(|| "the broker kept no log".to_owned())?;
    let mut report = Report::new("recovery", "recover");
    report.param("messages", messages);
    report.param("size", o.size as u64);
    report.param("batch", batch as u64);
    report.count("records", recovery.report.records);
    report.count("segments", recovery.report.segments as u64);
    report.count("messages_rebuilt", recovery.rebuilt.messages);
    report.problem_if(messages.saturating_sub(recovery.rebuilt.messages), |n| {
        format!("{n} messages missing after recovery")
    });
    report.operations.push(Operation {
        name: "recover",
        unit: "msgs",
        count: recovery.rebuilt.messages,
        requests: Some(recovery.report.records),
        bytes: Some(recovery.report.bytes),
        elapsed,
        latency: None,
        latency_of: "",
    });
    drop(server);
    Ok(report)
}
