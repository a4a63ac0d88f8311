//! Recovery: read the segments in order, validate every record, hand the
//! valid ones to the owner, and cut what a power cut tore.
//!
//! The rules (STORAGE.md, "Recovery"): records inside a segment carry
//! consecutive sequence numbers from the segment's first. The records of a
//! recycled file end where zeros or records of its previous life begin
//! (older sequence numbers, so never taken for current ones); that end is
//! clean, not a tear. A later segment's
//! header says below which sequence number earlier records are valid
//! (`valid_below`); records at or above it were lost to a write failure and
//! are skipped unread. A bad record where records must be (below that bound)
//! is corruption. A bad record with no bound — in the last written segment —
//! is a torn tail when no valid record of a later sequence number follows it
//! anywhere in the file, and is cut; otherwise it is corruption. Corruption
//! stops recovery with the file and byte offset, unless
//! [`RecoveryMode::TruncateAtCorruption`] says to cut the log there.

use super::frame::{self, FRAME_HEADER_LEN, HeaderError, SEGMENT_HEADER_LEN, SegmentHeader};
use super::fs::Fs;
use super::index::Location;
use super::record::Record;
use super::{Corruption, OpenError, Problem, io_error};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What to do on corruption anywhere but a torn tail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecoveryMode {
    /// Refuse to open; the operator decides.
    #[default]
    Strict,
    /// Cut the log at the first bad record, drop every later segment, and
    /// report what was dropped.
    TruncateAtCorruption,
}

/// A cut made by recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    pub file: PathBuf,
    pub offset: u64,
    /// Bytes dropped from `file`, plus the sizes of any later segments
    /// removed with it.
    pub bytes_dropped: u64,
    /// Later segment files removed (only when cutting at corruption).
    pub segments_removed: Vec<PathBuf>,
    /// Why the cut was made at `offset`.
    pub problem: Problem,
}

/// What recovery found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecoveryReport {
    pub segments: usize,
    pub records: u64,
    /// Bytes of valid records replayed, frames included.
    pub bytes: u64,
    pub elapsed: Duration,
    /// A torn tail cut from the last segment (normal after a power cut).
    pub torn_tail: Option<Cut>,
    /// A cut made at corruption under [`RecoveryMode::TruncateAtCorruption`].
    pub corruption_cut: Option<Cut>,
    /// Segments whose records were all lost to a write failure, skipped.
    pub abandoned_segments: usize,
}

/// What the owner needs after recovery, besides the report.
pub(crate) struct Recovered {
    pub report: RecoveryReport,
    /// First sequence numbers of the segment files kept, in order.
    pub segments: Vec<u64>,
    /// The first sequence number the next segment may take.
    pub next_seq: u64,
    /// One past the last valid record: the bound the next segment's header
    /// carries. Below `next_seq` when names were seen past the records.
    pub valid_end: u64,
}

struct Segment {
    first: u64,
    path: PathBuf,
    header: Result<SegmentHeader, HeaderError>,
}

/// Recovers the log in `dir`, calling `replay` for each valid record in
/// order.
pub(crate) fn recover(
    fs: &dyn Fs,
    dir: &Path,
    mode: RecoveryMode,
    replay: &mut dyn FnMut(Location, Record),
) -> Result<Recovered, OpenError> {
    let started = Instant::now();
    let mut segments = list_segments(fs, dir)?;
    let mut report = RecoveryReport::default();
    // Any name seen, even of a file dropped below, stays below the next
    // segment, so no file name is ever taken twice.
    let mut next_seq = segments.last().map_or(1, |s| s.first + 1);
    check_headers(fs, dir, mode, &mut segments, &mut report)?;
    let mut kept = Vec::new();
    let mut valid_end = None;
    for i in 0..segments.len() {
        let limit = bound_after(&segments, i);
        let seg = &segments[i];
        kept.push(seg.first);
        if limit.is_some_and(|l| l <= seg.first) {
            report.abandoned_segments += 1;
            continue;
        }
        report.segments += 1;
        let bytes = fs
            .read_all(&seg.path)
            .map_err(|e| io_error("read", &seg.path, e))?;
        let outcome = scan(&bytes, seg.first, limit, &mut |offset, seq, len, record| {
            report.records += 1;
            report.bytes += len as u64;
            let segment = seg.first;
            replay(
                Location {
                    segment,
                    offset,
                    seq,
                },
                record,
            );
        });
        next_seq = next_seq.max(outcome.next_seq);
        valid_end = Some(outcome.next_seq);
        if let Ok(h) = seg.header {
            next_seq = next_seq.max(h.valid_below);
        }
        match outcome.stop {
            Stop::Clean => {}
            Stop::Torn { offset, problem } => {
                let path = seg.path.clone();
                truncate(fs, &path, offset)?;
                report.torn_tail = Some(Cut {
                    file: path,
                    offset,
                    bytes_dropped: bytes.len() as u64 - offset,
                    segments_removed: Vec::new(),
                    problem,
                });
            }
            Stop::Corrupt { offset, problem } => {
                let at = Corruption {
                    file: seg.path.clone(),
                    offset,
                    problem,
                };
                cut_at_corruption(fs, dir, mode, &mut segments, i, at, &mut report)?;
                break;
            }
        }
    }
    // Recovered records may sit only in the page cache (the process died,
    // the machine did not); the next segment will vouch for them in its
    // header, so make them durable first.
    if let Some(last) = kept.last() {
        let path = dir.join(frame::segment_name(*last));
        sync_file(fs, &path)?;
    }
    report.elapsed = started.elapsed();
    Ok(Recovered {
        report,
        segments: kept,
        next_seq,
        valid_end: valid_end.unwrap_or(next_seq),
    })
}

/// The bound later headers put on segment `i`: records at or above it were
/// lost. `None` for the last segment written.
fn bound_after(segments: &[Segment], i: usize) -> Option<u64> {
    segments
        .get(i + 1..)?
        .iter()
        .filter_map(|s| s.header.ok().map(|h| h.valid_below))
        .min()
}

/// Checks every header before any record is replayed, so a bad header is
/// reported as itself rather than as records missing from the segment
/// before it. A last segment too short to hold a record is a creation a cut
/// interrupted, and goes; a segment lost wholly to a write failure is left
/// for the scan to skip. After a file goes the bounds change, so the check
/// starts over.
fn check_headers(
    fs: &dyn Fs,
    dir: &Path,
    mode: RecoveryMode,
    segments: &mut Vec<Segment>,
    report: &mut RecoveryReport,
) -> Result<(), OpenError> {
    for i in 0..segments.len() {
        let seg = &segments[i];
        let problem = match seg.header {
            Ok(h) if h.first_seq == seg.first => continue,
            Ok(h) => Problem::NameMismatch {
                header_first: h.first_seq,
            },
            Err(e) => Problem::Header(e),
        };
        if bound_after(segments, i).is_some_and(|l| l <= seg.first) {
            continue;
        }
        let size = fs.read_all(&seg.path).map_or(0, |b| b.len() as u64);
        if i + 1 == segments.len() && size <= SEGMENT_HEADER_LEN as u64 {
            remove(fs, dir, &seg.path)?;
            report.torn_tail = Some(Cut {
                file: seg.path.clone(),
                offset: 0,
                bytes_dropped: size,
                segments_removed: Vec::new(),
                problem,
            });
            segments.truncate(i);
            return check_headers(fs, dir, mode, segments, report);
        }
        let at = Corruption {
            file: seg.path.clone(),
            offset: 0,
            problem,
        };
        cut_at_corruption(fs, dir, mode, segments, i, at, report)?;
        segments.truncate(i);
        return check_headers(fs, dir, mode, segments, report);
    }
    Ok(())
}

fn list_segments(fs: &dyn Fs, dir: &Path) -> Result<Vec<Segment>, OpenError> {
    let names = fs.list(dir).map_err(|e| io_error("list", dir, e))?;
    let mut firsts: Vec<u64> = names
        .iter()
        .filter_map(|n| frame::parse_segment_name(n))
        .collect();
    firsts.sort_unstable();
    let mut segments = Vec::with_capacity(firsts.len());
    for first in firsts {
        let path = dir.join(frame::segment_name(first));
        let mut head = [0u8; SEGMENT_HEADER_LEN];
        let header = match fs.read_at(&path, 0, &mut head) {
            Ok(()) => frame::decode_header(&head),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(HeaderError::Short),
            Err(e) => return Err(io_error("read", &path, e)),
        };
        segments.push(Segment {
            first,
            path,
            header,
        });
    }
    Ok(segments)
}

enum Stop {
    Clean,
    Torn { offset: u64, problem: Problem },
    Corrupt { offset: u64, problem: Problem },
}

struct ScanOutcome {
    next_seq: u64,
    stop: Stop,
}

/// Walks the records of one segment's bytes; see the module doc for what
/// `limit` means.
fn scan(
    bytes: &[u8],
    first: u64,
    limit: Option<u64>,
    emit: &mut dyn FnMut(u64, u64, usize, Record),
) -> ScanOutcome {
    let mut pos = SEGMENT_HEADER_LEN;
    let mut expected = first;
    let stop = loop {
        if limit.is_some_and(|l| expected >= l) {
            break Stop::Clean;
        }
        let rest = bytes.get(pos..).unwrap_or_default();
        if rest.is_empty() {
            break match limit {
                None => Stop::Clean,
                Some(_) => Stop::Corrupt {
                    offset: pos as u64,
                    problem: Problem::Missing { expected },
                },
            };
        }
        let problem = match frame::parse_frame(rest) {
            Ok(f) if f.seq == expected => match Record::decode(f.kind, f.body) {
                Ok(record) => {
                    emit(pos as u64, f.seq, f.size(), record);
                    pos += f.size();
                    expected += 1;
                    continue;
                }
                Err(e) => {
                    break Stop::Corrupt {
                        offset: pos as u64,
                        problem: Problem::Body(e),
                    };
                }
            },
            Ok(f) => Problem::WrongSeq {
                expected,
                found: f.seq,
            },
            Err(e) => Problem::Frame(e),
        };
        let offset = pos as u64;
        // From `pos` itself: a valid frame there with a later seq than
        // expected is a record missing, not an end.
        break if limit.is_some() || valid_frame_after(bytes, pos, expected) {
            Stop::Corrupt { offset, problem }
        } else if recycled_end(rest, expected) {
            Stop::Clean
        } else {
            Stop::Torn { offset, problem }
        };
    };
    ScanOutcome {
        next_seq: expected,
        stop,
    }
}

/// Whether the bytes where the records stop are the end of a recycled
/// segment rather than a torn write: a zero length field (the zeros a spare
/// was filled with, or a file ending inside them), or a whole valid frame of
/// an earlier seq (a record of the file's previous life). A torn frame has
/// a nonzero length (ours are never empty) and fails its checksum.
fn recycled_end(rest: &[u8], expected: u64) -> bool {
    rest.iter().take(4).all(|&b| b == 0) || frame::parse_frame(rest).is_ok_and(|f| f.seq < expected)
}

/// Whether any byte offset from `from` starts a valid frame whose sequence
/// number is `expected` or later — the proof that a bad frame is damage in
/// the middle and not a torn end. Offsets whose declared seq or length
/// cannot fit are rejected before any checksum is computed, so this stays
/// cheap even over a large tail.
fn valid_frame_after(bytes: &[u8], from: usize, expected: u64) -> bool {
    let mut at = from;
    while at + FRAME_HEADER_LEN <= bytes.len() {
        let rest = &bytes[at..];
        let room = (rest.len() / FRAME_HEADER_LEN) as u64;
        let plausible = frame::declared_seq(rest)
            .is_some_and(|s| s >= expected && s - expected <= room)
            && frame::declared_body_len(rest).is_ok_and(|l| l + FRAME_HEADER_LEN <= rest.len());
        if plausible
            && frame::parse_frame(rest).is_ok_and(|f| Record::decode(f.kind, f.body).is_ok())
        {
            return true;
        }
        at += 1;
    }
    false
}

fn cut_at_corruption(
    fs: &dyn Fs,
    dir: &Path,
    mode: RecoveryMode,
    segments: &mut [Segment],
    i: usize,
    at: Corruption,
    report: &mut RecoveryReport,
) -> Result<(), OpenError> {
    if mode == RecoveryMode::Strict {
        return Err(OpenError::Corrupt(at));
    }
    let size = |p: &Path| fs.read_all(p).map_or(0, |b| b.len() as u64);
    let mut dropped = size(&at.file).saturating_sub(at.offset);
    if at.offset == 0 {
        remove(fs, dir, &at.file)?;
    } else {
        truncate(fs, &at.file, at.offset)?;
    }
    let mut removed = Vec::new();
    for later in segments.iter().skip(i + 1) {
        dropped += size(&later.path);
        remove(fs, dir, &later.path)?;
        removed.push(later.path.clone());
    }
    report.corruption_cut = Some(Cut {
        file: at.file,
        offset: at.offset,
        bytes_dropped: dropped,
        segments_removed: removed,
        problem: at.problem,
    });
    Ok(())
}

fn truncate(fs: &dyn Fs, path: &Path, len: u64) -> Result<(), OpenError> {
    let mut f = fs.open_write(path).map_err(|e| io_error("open", path, e))?;
    f.set_len(len).map_err(|e| io_error("truncate", path, e))?;
    f.sync_data().map_err(|e| io_error("sync", path, e))
}

fn sync_file(fs: &dyn Fs, path: &Path) -> Result<(), OpenError> {
    let mut f = fs.open_write(path).map_err(|e| io_error("open", path, e))?;
    f.sync_data().map_err(|e| io_error("sync", path, e))
}

fn remove(fs: &dyn Fs, dir: &Path, path: &Path) -> Result<(), OpenError> {
    fs.remove(path).map_err(|e| io_error("remove", path, e))?;
    fs.sync_dir(dir).map_err(|e| io_error("sync dir", dir, e))
}
