//! `disk`: the disk's own ceilings, which no broker figure can beat.
//!
//! Without `--read`: appends of one block each followed by `fdatasync`, as
//! the log's writer does, to a file in the directory an in-process durable
//! broker would use. Its p50 is the "one fdatasync" term of the
//! acknowledged-latency target, and its MB/s the fdatasync'd sequential
//! bandwidth the batched-publishing target is a share of. One block per
//! sync is the worst case; a broker's group commit covers many records with
//! one sync, so its bandwidth can exceed this figure.
//!
//! With `--read`: the sequential read speed the from-disk replay target is
//! judged against. A file is written and fsynced, then read from start to
//! end in [`READ_CHUNK`] reads: once while it is in the page cache (just
//! written), and twice after the page cache was dropped
//! ([`drop_page_cache`]), which is the disk's own speed — twice because
//! the disk of a virtual machine may be an image the host caches, so the
//! first cold read can be the device's and the second the host's cache.
//! Dropping needs root; when the kernel refuses, the cold reads are
//! reported as not measured, with the reason, and the run still succeeds.
//!
//! `replay --cache-bytes` uses the same two pieces on the log it just
//! wrote, so that its report holds the disk's speed from the same sitting.

use crate::args::Options;
use crate::report::{Operation, Report, histogram};
use crate::run::Failure;
use courier::client::io_message;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// One sequential read: as large as the broker's own log reads (1 MiB), so
/// that the figure is the disk's and not the system calls'.
pub const READ_CHUNK: usize = 1 << 20;
/// `--read` without `--messages`: a file of this many bytes.
const READ_FILE_BYTES: u64 = 1 << 30;
const DROP_CACHES: &str = "/proc/sys/vm/drop_caches";
/// Set, the cold reads are not measured: the page cache is the machine's,
/// and a test suite should not empty it for everyone else.
pub const KEEP_PAGE_CACHE: &str = "COURIER_BENCH_KEEP_PAGE_CACHE";

pub fn run(o: &Options) -> Result<Report, Failure> {
    let dir = std::env::temp_dir();
    let path = dir.join(format!("courier-bench-disk-{}", std::process::id()));
    let result = match o.disk_read {
        true => measure_read(o, &path),
        false => measure(o, &path),
    };
    let _ = std::fs::remove_file(&path);
    let mut report = result?;
    report.param("dir", dir.display().to_string());
    Ok(report)
}

fn measure(o: &Options, path: &Path) -> Result<Report, Failure> {
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

/// `--read`: writes `blocks × size` bytes (fewer if `--duration` runs out
/// first) and one fsync, then reads the file back warm and, if the page
/// cache can be dropped, cold.
fn measure_read(o: &Options, path: &Path) -> Result<Report, Failure> {
    let size = o.size as u64;
    let blocks = o.messages.unwrap_or(READ_FILE_BYTES.div_ceil(size));
    let failed = |e: std::io::Error| format!("{}: {}", path.display(), io_message(&e));
    let block = vec![0x5au8; o.size];
    let started = Instant::now();
    let mut file = File::create(path).map_err(failed)?;
    let mut done = 0u64;
    while done < blocks && started.elapsed() < o.duration {
        file.write_all(&block).map_err(failed)?;
        done += 1;
    }
    file.sync_all().map_err(failed)?;
    let written = started.elapsed();
    drop(file);
    let files = [path.to_path_buf()];

    let mut report = Report::new("disk", "read_cold");
    report.param("blocks", blocks);
    report.param("size", size);
    report.param("read_chunk", READ_CHUNK as u64);
    report.count("file_bytes", done * size);
    report
        .operations
        .push(bytes_operation("write_fsync", done * size, written));
    let warm = read_sequentially(&files)?;
    report.operations.push(warm.operation("read_page_cache"));
    // Twice: on a virtual machine the host may cache the disk's image, so
    // that the first cold read is the device's and the second the host's.
    for name in ["read_cold", "read_cold_again"] {
        if let Dropped::Refused(reason) = drop_page_cache(&files)? {
            report.notes.push(format!("{name}: not measured: {reason}"));
            break;
        }
        let cold = read_sequentially(&files)?;
        report.operations.push(cold.operation(name));
    }
    Ok(report)
}

/// An operation counted in bytes (MB/s is its figure).
fn bytes_operation(name: &'static str, bytes: u64, elapsed: Duration) -> Operation {
    Operation {
        name,
        unit: "bytes",
        count: bytes,
        requests: None,
        bytes: Some(bytes),
        elapsed,
        latency: None,
        latency_of: "",
    }
}

/// What [`read_sequentially`] read, and how long it took.
#[derive(Debug, Clone, Copy)]
pub struct SequentialRead {
    pub bytes: u64,
    pub elapsed: Duration,
}

impl SequentialRead {
    pub fn operation(self, name: &'static str) -> Operation {
        bytes_operation(name, self.bytes, self.elapsed)
    }
}

/// Reads `files` one after the other, each from start to end, in
/// [`READ_CHUNK`] reads into one buffer.
pub fn read_sequentially(files: &[PathBuf]) -> Result<SequentialRead, Failure> {
    let mut buffer = vec![0u8; READ_CHUNK];
    let mut bytes = 0u64;
    let started = Instant::now();
    for path in files {
        let failed = |e: std::io::Error| format!("{}: {}", path.display(), io_message(&e));
        let mut file = File::open(path).map_err(failed)?;
        loop {
            match file.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => bytes += n as u64,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(failed(e).into()),
            }
        }
    }
    Ok(SequentialRead {
        bytes,
        elapsed: started.elapsed(),
    })
}

/// Whether [`drop_page_cache`] dropped it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dropped {
    Yes,
    /// The kernel refused (not root, or a read-only `/proc/sys`): what to
    /// say in the report.
    Refused(String),
}

/// Syncs `files` (the kernel drops only clean pages), then asks it to drop
/// the whole page cache, so that the next read of them comes from the disk.
/// It is the machine's page cache, not only these files': other processes
/// read their files again afterwards. A failed sync is a failure of the
/// run; a refused drop is not.
pub fn drop_page_cache(files: &[PathBuf]) -> Result<Dropped, Failure> {
    if std::env::var_os(KEEP_PAGE_CACHE).is_some() {
        return Ok(Dropped::Refused(format!(
            "not dropped: {KEEP_PAGE_CACHE} is set"
        )));
    }
    for path in files {
        let failed = |e: std::io::Error| format!("{}: {}", path.display(), io_message(&e));
        File::open(path)
            .and_then(|f| f.sync_all())
            .map_err(failed)?;
    }
    match std::fs::write(DROP_CACHES, "1\n") {
        Ok(()) => Ok(Dropped::Yes),
        Err(e) => Ok(Dropped::Refused(format!(
            "cannot write 1 to {DROP_CACHES}: {} (it needs root)",
            io_message(&e)
        ))),
    }
}
