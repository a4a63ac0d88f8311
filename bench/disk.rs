//! `disk`: the disk's own ceiling for durable publishing — appends of one
//! block each followed by `fdatasync`, as the log's writer does, to a file
//! in the directory an in-process durable broker would use.
//!
//! It measures no broker. Its p50 is the "one fdatasync" term of the
//! acknowledged-latency target, and its MB/s the fdatasync'd sequential
//! bandwidth the batched-publishing target is a share of. One block per
//! sync is the worst case; a broker's group commit covers many records with
//! one sync, so its bandwidth can exceed this figure.

use crate::args::Options;
use crate::report::{Operation, Report, histogram};
use crate::run::Failure;
use std::fs::File;
use std::io::Write;
use std::time::Instant;

pub fn run(o: &Options) -> Result<Report, Failure> {
    let dir = std::env::temp_dir();
    let path = dir.join(format!("courier-bench-disk-{}", std::process::id()));
    let result = measure(o, &path);
    let _ = std::fs::remove_file(&path);
    let mut report = result?;
    report.param("dir", dir.display().to_string());
    Ok(report)
}

fn measure(o: &Options, path: &std::path::Path) -> Result<Report, Failure> {
    let blocks = o.messages.unwrap_or(2000);
    let failed = |e: std::io::Error| format!("{}: {e}", path.display());
    let mut file = File::create(path).map_err(failed)?;
    // The file's own creation is not what is measured.
    file.sync_all().map_err(failed)?;
    let block = vec![0x5au8; o.size];
    let mut latency = histogram();
    let started = Instant::now();
    let mut done = 0;
    while done < blocks && started.elapsed() < o.duration {
        let t = Instant::now();
        file.write_all(&block).map_err(failed)?;
        file.sync_data().map_err(failed)?;
        let ns = u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX);
        latency.saturating_record(ns.max(1));
        done += 1;
    }
    let elapsed = started.elapsed();
    let mut report = Report::new("disk", "append_fdatasync");
    report.param("blocks", blocks);
    report.param("size", o.size as u64);
    report.count("synced", done);
    report.operations.push(Operation {
        name: "append_fdatasync",
        unit: "blocks",
        count: done,
        requests: None,
        bytes: Some(done * o.size as u64),
        elapsed,
        latency: Some(latency),
        latency_of: "per block, write then fdatasync",
    });
    Ok(report)
}
