//! Durable topics: a broker-wide, segmented, append-only log of state
//! changes, written by a thread of its own, recovered at start.
//!
//! The broker's loop stays the single owner of all state. It appends
//! [`Record`]s to a [`Log`] as it changes state, calls [`Log::flush`] once
//! per round to hand the round's records to the writer as one batch, and
//! acknowledges a change to a client only once [`Log::poll`] has reported
//! its sequence number durable. The writer appends, syncs once for all it
//! has (group commit), and calls the notify callback (the broker passes a
//! `mio::Waker`). At open, recovery replays every valid record in order so
//! the broker can rebuild its state. STORAGE.md describes the format, the
//! sync modes, what each can lose, and the recovery rules.
//!
//! # Layout
//!
//! - `fs`: every file operation behind the [`Fs`] trait, and [`StdFs`].
//! - `sim`: `SimFs`, the simulated disk for tests (behind the `testing`
//!   feature, which `cargo test` turns on).
//! - `record`: the record kinds and their bodies.
//! - `frame`: segment header, record framing, CRC32C, file names.
//! - `recovery`: the scan at open, torn tails and corruption.
//! - `writer`: the writer thread and its synchronous core.
//! - `log`: [`Log`], the owner's handle.
//! - `index`: the sparse read-back index, (topic, offset) → the span of
//!   records to scan.
//! - `read`: [`Reader`], reading one record or a topic's range back.
//! - `fetch`: [`ReadService`], the reader threads that do range reads off
//!   the owner's thread.

mod fetch;
mod frame;
mod fs;
mod index;
mod log;
mod read;
mod record;
mod recovery;
#[cfg(any(test, feature = "testing"))]
mod sim;
mod writer;

pub use self::log::{AppendError, Config, DEFAULT_SEGMENT_BYTES, Log, WriterKind};
pub use fetch::{ReadDone, ReadJob, ReadService};
pub use frame::{
    FORMAT_VERSION, FRAME_HEADER_LEN, FrameError, HeaderError, MAX_BODY_LEN, SEGMENT_HEADER_LEN,
    segment_name,
};
pub use fs::{DirLock, Fs, FsFile, LOCK_FILE, LockError, StdFs};
pub use index::{Extent, Location};
pub use read::{ReadChunk, ReadError, Reader};
pub use record::{BodyError, ProducerStamp, Record, SessionEnd, SessionId, TopicId};
pub use recovery::{Cut, RecoveryMode, RecoveryReport};
#[cfg(any(test, feature = "testing"))]
pub use sim::SimFs;
pub use writer::{Event, Loss, SyncMode, WriteError, WriteOp};

use std::io;
use std::path::{Path, PathBuf};

/// What is wrong at a place in a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    Header(HeaderError),
    /// A valid header whose first sequence number is not the file's name.
    NameMismatch {
        header_first: u64,
    },
    Frame(FrameError),
    /// A valid frame, but not the record that belongs there.
    WrongSeq {
        expected: u64,
        found: u64,
    },
    /// A valid frame whose body does not decode.
    Body(BodyError),
    /// The segment ends, yet a later segment's header says records up to
    /// some bound were durable here; `expected` is the first one missing.
    Missing {
        expected: u64,
    },
}

/// Damage recovery will not pass over on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corruption {
    pub file: PathBuf,
    pub offset: u64,
    pub problem: Problem,
}

/// Why [`Log::open`] failed.
#[derive(Debug)]
pub enum OpenError {
    /// Another log holds the data directory's lock.
    Locked { dir: PathBuf },
    /// A file operation failed.
    Io {
        op: &'static str,
        path: PathBuf,
        error: io::Error,
    },
    /// Corruption under [`RecoveryMode::Strict`].
    Corrupt(Corruption),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Locked { dir } => {
                write!(
                    f,
                    "{} is in use by another broker (its LOCK is held)",
                    dir.display()
                )
            }
            OpenError::Io { op, path, error } => write!(f, "{op} {}: {error}", path.display()),
            OpenError::Corrupt(c) => write!(
                f,
                "corrupt log: {} at byte {}: {:?}",
                c.file.display(),
                c.offset,
                c.problem
            ),
        }
    }
}

impl std::error::Error for OpenError {}

fn io_error(op: &'static str, path: &Path, error: io::Error) -> OpenError {
    OpenError::Io {
        op,
        path: path.to_path_buf(),
        error,
    }
}
