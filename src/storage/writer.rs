//! The writer: appends the owner's encoded batches to segment files, syncs
//! once for everything it has (group commit), and reports back.
//!
//! [`WriterCore`] is the whole logic as a synchronous state machine — a list
//! of commands in, a list of events out — so the simulation tests can drive
//! it step by step with no thread in the way; [`spawn`] runs the same core
//! on its own thread for the broker. While a sync runs the owner keeps
//! sending; the next round drains every waiting command, writes them all
//! and syncs once.
//!
//! Failure rule (PostgreSQL's "fsyncgate"): a failed write or sync loses
//! every record not yet synced. They are reported lost, never retried, and
//! the file is abandoned; every later batch is lost too until the owner asks
//! for a new segment, whose header records below which sequence number the
//! earlier segments are valid. Positions are never reused.
//!
//! Recycling (as PostgreSQL recycles WAL segments): appending grows the
//! file, so each `fdatasync` must also write the inode; overwriting blocks
//! already written does not. The writer therefore keeps one **spare** file
//! (`SPARE_FILE`, a name recovery ignores) ready to become the next segment:
//! the oldest segment the owner releases is renamed to it instead of being
//! removed, or, when none was released, a new one is filled with zeros up
//! to the segment size, one bounded chunk at a time while no command waits
//! ([`WriterCore::prepare_step`]). A roll writes the new header over the
//! spare's, syncs it, renames it to the segment's name and syncs the
//! directory. Whatever follows the records in such a file — zeros, or
//! records of its previous life, all with older sequence numbers — is not
//! part of the log (STORAGE.md, "Recycled segments"). The spare is only an
//! optimisation: any failure preparing it drops it and the next roll
//! creates a file as before.

use super::frame::{self, SegmentHeader};
use super::fs::{Fs, FsFile};
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// When the writer syncs, and so what "durable" means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// Sync before reporting records durable: a power cut loses nothing
    /// reported.
    Always,
    /// Report records durable once written to the OS; sync at most this
    /// often. A power cut loses up to this much of what was reported; a
    /// process crash loses nothing reported.
    Interval(Duration),
    /// Report records durable once written; sync only when rolling a
    /// segment and at close. A power cut may lose anything since.
    Never,
}

impl std::str::FromStr for SyncMode {
    type Err = String;

    /// `always`, `never` or `interval:MS`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "always" => Ok(SyncMode::Always),
            "never" => Ok(SyncMode::Never),
            _ => s
                .strip_prefix("interval:")
                .and_then(|ms| ms.parse().ok())
                .map(|ms| SyncMode::Interval(Duration::from_millis(ms)))
                .ok_or_else(|| format!("expected always, never or interval:MS, got {s:?}")),
        }
    }
}

/// The file operation that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOp {
    Create,
    Write,
    Sync,
    SyncDir,
    Remove,
}

/// Why records were lost or a segment not removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteError {
    /// ENOSPC.
    NoSpace { op: WriteOp },
    /// Any other I/O error, with its OS code when there is one.
    Io {
        op: WriteOp,
        kind: io::ErrorKind,
        code: Option<i32>,
    },
    /// Dropped unwritten: an earlier failure stopped writing, and the owner
    /// had not yet asked for a new segment.
    AfterFailure,
}

impl WriteError {
    fn from_io(op: WriteOp, e: &io::Error) -> Self {
        if e.kind() == io::ErrorKind::StorageFull || e.raw_os_error() == Some(libc::ENOSPC) {
            WriteError::NoSpace { op }
        } else {
            WriteError::Io {
                op,
                kind: e.kind(),
                code: e.raw_os_error(),
            }
        }
    }
}

/// Records that will never be durable; the owner must not acknowledge them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loss {
    pub seqs: Range<u64>,
    pub error: WriteError,
}

/// What the writer tells the owner, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Every record below `through` is durable in the sense of the
    /// [`SyncMode`], except those reported in a [`Event::Lost`].
    Durable {
        through: u64,
    },
    Lost(Loss),
    /// A segment the owner released could not be removed. It, and the
    /// released segments after it, stay on disk until the next open offers
    /// them for release again; meanwhile recovery would replay them, which
    /// only repeats history the owner already holds.
    RemoveFailed {
        segment: u64,
        error: WriteError,
    },
}

/// Encoded records for sequence numbers `first_seq..end_seq`.
#[derive(Debug)]
pub(crate) struct Batch {
    /// Start a new segment named `first_seq` before writing.
    pub roll: bool,
    pub first_seq: u64,
    pub end_seq: u64,
    pub bytes: Vec<u8>,
}

#[derive(Debug)]
pub(crate) enum Command {
    Batch(Batch),
    Remove(Vec<u64>),
    Close,
}

/// The name of the spare file in the data directory (not a segment name,
/// so recovery never reads it).
pub const SPARE_FILE: &str = "recycled.spare";

/// Zeros written per preparation step: what one step can delay a waiting
/// batch by (one such write and its `fdatasync`).
pub(crate) const ZERO_CHUNK: usize = 256 << 10;
static ZEROS: [u8; ZERO_CHUNK] = [0; ZERO_CHUNK];
/// How long the writer thread must have had nothing to do before it zeroes.
const PREPARE_IDLE: Duration = Duration::from_millis(2);

/// The file that will become the next segment; see the module doc.
struct Spare {
    file: Box<dyn FsFile>,
    /// Bytes of the file written (and so allocated) so far.
    len: u64,
    /// Every written byte is synced: the file can be installed (it holds
    /// no dirty bytes an install's sync would have to push).
    synced: bool,
}

/// The writer's state; see the module doc.
pub(crate) struct WriterCore {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    mode: SyncMode,
    /// The size a spare is prepared to: the owner's segment size.
    segment_bytes: u64,
    spare: Option<Spare>,
    /// No fresh spare is made until the next roll: set after a preparation
    /// failed (so a failing disk is not hammered) and after a full disk (so
    /// the spare does not take the space publishing needs).
    prepare_paused: bool,
    /// The segment being written; `None` after a failure until a roll.
    file: Option<Box<dyn FsFile>>,
    /// Every record below this was handed to the file system or lost.
    written: u64,
    /// Every record below this is synced or reported lost.
    synced: u64,
    /// Every record below this that the segment files hold is valid: the
    /// bound a new segment's header carries. Unlike `synced`, a loss does
    /// not move it.
    valid_end: u64,
    /// Bytes of the current file appended, and synced.
    file_len: u64,
    synced_len: u64,
    reported: u64,
    last_sync: Instant,
}

impl WriterCore {
    /// A writer whose records so far (below `next_seq`) are all durable or
    /// gone, and whose segment files hold valid records below `valid_end`.
    /// Spares are prepared to `segment_bytes`.
    pub fn new(
        fs: Arc<dyn Fs>,
        dir: &Path,
        mode: SyncMode,
        segment_bytes: u64,
        next_seq: u64,
        valid_end: u64,
    ) -> Self {
        Self {
            fs,
            dir: dir.to_path_buf(),
            mode,
            segment_bytes,
            spare: None,
            // Nothing is prepared before the first segment exists: a log
            // opened and closed at once costs no zeroing.
            prepare_paused: true,
            file: None,
            written: next_seq,
            synced: next_seq,
            valid_end,
            file_len: 0,
            synced_len: 0,
            reported: next_seq,
            last_sync: Instant::now(),
        }
    }

    fn dirty(&self) -> bool {
        self.written > self.synced
    }

    /// How long until an interval sync is due, if one is pending.
    pub fn sync_due_in(&self) -> Option<Duration> {
        match self.mode {
            SyncMode::Interval(every) if self.dirty() => {
                Some(every.saturating_sub(self.last_sync.elapsed()))
            }
            _ => None,
        }
    }

    /// Runs one round: every command, then at most one sync.
    pub fn handle(&mut self, commands: &[Command]) -> Vec<Event> {
        let mut events = Vec::new();
        let mut closing = false;
        for command in commands {
            match command {
                Command::Batch(batch) => self.write(batch, &mut events),
                Command::Remove(segments) => self.remove(segments, &mut events),
                Command::Close => closing = true,
            }
        }
        let sync_now = match self.mode {
            SyncMode::Always => true,
            SyncMode::Interval(every) => closing || self.last_sync.elapsed() >= every,
            SyncMode::Never => closing,
        };
        if sync_now && self.dirty() {
            self.sync(&mut events);
        }
        let through = match self.mode {
            SyncMode::Always => self.synced,
            _ => self.written,
        };
        if through > self.reported {
            self.reported = through;
            events.push(Event::Durable { through });
        }
        events
    }

    fn write(&mut self, batch: &Batch, events: &mut Vec<Event>) {
        if batch.roll
            && let Err(error) = self.roll(batch.first_seq, events)
        {
            return self.lose(batch.end_seq, error, events);
        }
        let Some(file) = self.file.as_mut() else {
            return self.lose(batch.end_seq, WriteError::AfterFailure, events);
        };
        match file.write_at(self.file_len, &batch.bytes) {
            Ok(()) => {
                self.written = batch.end_seq;
                self.file_len += batch.bytes.len() as u64;
            }
            Err(e) => self.lose(
                batch.end_seq,
                WriteError::from_io(WriteOp::Write, &e),
                events,
            ),
        }
    }

    fn sync(&mut self, events: &mut Vec<Event>) {
        let Some(file) = self.file.as_mut() else {
            return;
        };
        match file.sync_data() {
            Ok(()) => {
                self.synced = self.written;
                self.valid_end = self.written;
                self.synced_len = self.file_len;
                self.last_sync = Instant::now();
            }
            Err(e) => self.lose(self.written, WriteError::from_io(WriteOp::Sync, &e), events),
        }
    }

    /// Every unsynced record up to `end` is lost; the file is abandoned.
    /// Cutting it back to its synced length is only tidiness — no sync is
    /// trusted to save the lost bytes — but it keeps lost records from
    /// coming back at recovery should the next segment never be made.
    fn lose(&mut self, end: u64, error: WriteError, events: &mut Vec<Event>) {
        if matches!(error, WriteError::NoSpace { .. }) {
            // Give the spare's space back to what must be written.
            self.drop_spare();
            self.prepare_paused = true;
        }
        if let Some(mut file) = self.file.take()
            && self.file_len > self.synced_len
        {
            let cut = file
                .set_len(self.synced_len)
                .and_then(|()| file.sync_data());
            if let Err(e) = cut {
                log::warn!("storage: cutting a failed segment back: {e}");
            }
        }
        let end = end.max(self.written);
        if end > self.synced {
            events.push(Event::Lost(Loss {
                seqs: self.synced..end,
                error,
            }));
        }
        self.written = end;
        self.synced = end;
    }

    /// Closes the current segment (synced, so the new header can vouch for
    /// it) and opens the segment `first_seq`, durable before any record in
    /// it can be reported.
    fn roll(&mut self, first_seq: u64, events: &mut Vec<Event>) -> Result<(), WriteError> {
        if self.dirty() {
            self.sync(events);
        }
        self.file = None;
        let path = self.dir.join(frame::segment_name(first_seq));
        let header = frame::encode_header(SegmentHeader {
            first_seq,
            valid_below: self.valid_end,
        });
        self.prepare_paused = false;
        if let Some(installed) = self.install_spare(&path, &header) {
            let file = installed?;
            self.file = Some(file);
            self.file_len = header.len() as u64;
            self.synced_len = self.file_len;
            return Ok(());
        }
        let created = self.fs.create_new(&path);
        let result = created
            .map_err(|e| WriteError::from_io(WriteOp::Create, &e))
            .and_then(|mut file| {
                file.write_at(0, &header)
                    .map_err(|e| WriteError::from_io(WriteOp::Write, &e))?;
                file.sync_data()
                    .map_err(|e| WriteError::from_io(WriteOp::Sync, &e))?;
                self.fs
                    .sync_dir(&self.dir)
                    .map_err(|e| WriteError::from_io(WriteOp::SyncDir, &e))?;
                Ok(file)
            });
        match result {
            Ok(file) => {
                self.file = Some(file);
                self.file_len = header.len() as u64;
                self.synced_len = self.file_len;
                Ok(())
            }
            Err(error) => {
                // Best effort: a half-made segment left behind is skipped by
                // recovery anyway, since the next header's bound is below it.
                if self.fs.remove(&path).is_ok() {
                    let _ = self.fs.sync_dir(&self.dir);
                }
                Err(error)
            }
        }
    }

    /// Makes the ready spare the segment at `path` with `header`; `None`
    /// when there is no ready spare. The header is synced before the
    /// rename, so the segment's name never stands for a file whose header
    /// is not its own; the rename is made durable before any record in it
    /// can be reported. A failure fails the roll, as a failed creation does
    /// (the disk is failing: the batch is lost rather than tried elsewhere).
    fn install_spare(
        &mut self,
        path: &Path,
        header: &[u8],
    ) -> Option<Result<Box<dyn FsFile>, WriteError>> {
        if !self.spare.as_ref().is_some_and(|s| s.synced) {
            return None;
        }
        let mut spare = self.spare.take()?;
        let spare_path = self.dir.join(SPARE_FILE);
        let installed = spare
            .file
            .write_at(0, header)
            .map_err(|e| WriteError::from_io(WriteOp::Write, &e))
            .and_then(|()| {
                spare
                    .file
                    .sync_data()
                    .map_err(|e| WriteError::from_io(WriteOp::Sync, &e))
            })
            .and_then(|()| {
                self.fs
                    .rename(&spare_path, path)
                    .map_err(|e| WriteError::from_io(WriteOp::Create, &e))
            });
        if let Err(error) = installed {
            self.drop_spare();
            return Some(Err(error));
        }
        Some(match self.fs.sync_dir(&self.dir) {
            Ok(()) => Ok(spare.file),
            Err(e) => {
                // As for a created file: the name may or may not survive;
                // recovery skips it under the next header's bound.
                if self.fs.remove(path).is_ok() {
                    let _ = self.fs.sync_dir(&self.dir);
                }
                Err(WriteError::from_io(WriteOp::SyncDir, &e))
            }
        })
    }

    /// Removes the spare file, best effort: a leftover one is adopted by the
    /// next preparation, and recovery never reads it.
    fn drop_spare(&mut self) {
        self.spare = None;
        if self.fs.remove(&self.dir.join(SPARE_FILE)).is_ok() {
            let _ = self.fs.sync_dir(&self.dir);
        }
    }

    /// Whether [`WriterCore::prepare_step`] has work to do.
    pub fn preparing(&self) -> bool {
        !self.prepare_paused
            && self
                .spare
                .as_ref()
                .is_none_or(|s| !s.synced || s.len < self.segment_bytes)
    }

    /// One bounded step towards a spare of the segment size: adopt a spare
    /// file left by an earlier run or create one, or write one
    /// [`ZERO_CHUNK`] of zeros past what it holds; then sync it. Call it
    /// when no command waits: a step delays the next batch by at most one
    /// chunk's write and sync. A spare is installed at a roll once synced,
    /// however far it got (past its end, the segment simply grows). A
    /// failure drops it and pauses preparation until the next roll; no
    /// record depends on it.
    pub fn prepare_step(&mut self) {
        if !self.preparing() {
            return;
        }
        if let Err(e) = self.try_prepare_step() {
            log::warn!("storage: preparing a spare segment file: {e}");
            self.drop_spare();
            self.prepare_paused = true;
        }
    }

    fn try_prepare_step(&mut self) -> io::Result<()> {
        let Some(spare) = self.spare.as_mut() else {
            let path = self.dir.join(SPARE_FILE);
            let file = match self.fs.open_write(&path) {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    let file = self.fs.create_new(&path)?;
                    self.fs.sync_dir(&self.dir)?;
                    file
                }
                Err(e) => return Err(e),
            };
            let mut spare = Spare {
                file,
                len: 0,
                synced: false,
            };
            // An adopted file's bytes are zeros or records of some earlier
            // life, synced or not: sync before counting them as written.
            spare.len = spare.file.size()?;
            spare.file.sync_data()?;
            spare.synced = true;
            self.spare = Some(spare);
            return Ok(());
        };
        let n = (self.segment_bytes.saturating_sub(spare.len)).min(ZERO_CHUNK as u64);
        spare.synced = false;
        spare.file.write_at(spare.len, &ZEROS[..n as usize])?;
        spare.len += n;
        // One sync per chunk, so that no step leaves more than a chunk of
        // dirty zeros for a later sync (or the kernel) to push at once.
        spare.file.sync_data()?;
        spare.synced = true;
        Ok(())
    }

    /// Removes released segments oldest first, each made durable before
    /// the next, so a power cut can leave a suffix of the log but no hole.
    /// With no spare held, the oldest becomes the spare instead (a rename
    /// is as good as a removal to recovery: the name is gone).
    fn remove(&mut self, segments: &[u64], events: &mut Vec<Event>) {
        for &segment in segments {
            let path = self.dir.join(frame::segment_name(segment));
            // A released segment beats a spare still being zeroed: its
            // blocks are all written already.
            if self
                .spare
                .as_ref()
                .is_none_or(|s| s.len < self.segment_bytes)
            {
                if self.spare.is_some() {
                    self.drop_spare();
                }
                if self.adopt_released(&path) {
                    continue;
                }
            }
            let result = match self.fs.remove(&path) {
                Ok(()) => self
                    .fs
                    .sync_dir(&self.dir)
                    .map_err(|e| WriteError::from_io(WriteOp::SyncDir, &e)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(WriteError::from_io(WriteOp::Remove, &e)),
            };
            if let Err(error) = result {
                // Stop here: removing a later segment would leave a hole.
                events.push(Event::RemoveFailed { segment, error });
                return;
            }
        }
    }
}

impl WriterCore {
    /// Renames the released segment at `path` to the spare, durably;
    /// `false` (nothing changed, or the rename not durable) to remove it
    /// instead.
    fn adopt_released(&mut self, path: &Path) -> bool {
        let spare_path = self.dir.join(SPARE_FILE);
        let adopted = self
            .fs
            .rename(path, &spare_path)
            .and_then(|()| self.fs.sync_dir(&self.dir))
            .and_then(|()| self.fs.open_write(&spare_path))
            .and_then(|mut file| {
                let len = file.size()?;
                Ok(Spare {
                    file,
                    len,
                    synced: true,
                })
            });
        match adopted {
            Ok(spare) => {
                self.spare = Some(spare);
                true
            }
            Err(e) => {
                log::warn!("storage: recycling a released segment: {e}");
                // Whatever name it now has, removing it is the release.
                if self.fs.remove(&spare_path).is_ok() {
                    let _ = self.fs.sync_dir(&self.dir);
                }
                false
            }
        }
    }
}

/// A batch buffer larger than this is dropped after writing rather than
/// handed back: one burst must not pin its memory for good.
const RECYCLE_MAX_BYTES: usize = 4 << 20;

/// Runs `core` on a thread: commands from `commands`, events to `events`,
/// `notify` after each round that produced any. Each batch's buffer, once
/// written, goes back to the owner through `spare` (emptied, its capacity
/// kept), so the owner encodes the next batch without growing a fresh
/// buffer from nothing every round.
pub(crate) fn spawn(
    mut core: WriterCore,
    commands: Receiver<Command>,
    events: Sender<Event>,
    spare: Sender<Vec<u8>>,
    notify: Box<dyn Fn() + Send>,
) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("courier-storage".into())
        .spawn(move || {
            let mut idle = false;
            loop {
                // Preparation steps are taken only once no command has come
                // for `PREPARE_IDLE` (then one after another until one
                // does): under load the spare comes from released segments
                // and the disk writes nothing but records; a batch that
                // arrives during a step waits at most that step.
                let first = if core.preparing() {
                    let wait = if idle { Duration::ZERO } else { PREPARE_IDLE };
                    let wait = core.sync_due_in().map_or(wait, |due| due.min(wait));
                    match commands.recv_timeout(wait) {
                        Ok(c) => Some(c),
                        Err(RecvTimeoutError::Disconnected) => Some(Command::Close),
                        Err(RecvTimeoutError::Timeout)
                            if core.sync_due_in() == Some(Duration::ZERO) =>
                        {
                            None
                        }
                        Err(RecvTimeoutError::Timeout) => {
                            idle = true;
                            core.prepare_step();
                            continue;
                        }
                    }
                } else {
                    match core.sync_due_in() {
                        Some(wait) => match commands.recv_timeout(wait) {
                            Ok(c) => Some(c),
                            Err(RecvTimeoutError::Timeout) => None,
                            Err(RecvTimeoutError::Disconnected) => Some(Command::Close),
                        },
                        None => Some(commands.recv().unwrap_or(Command::Close)),
                    }
                };
                idle = false;
                let mut round: Vec<Command> = first.into_iter().collect();
                round.extend(commands.try_iter());
                let closing = round.iter().any(|c| matches!(c, Command::Close));
                let out = core.handle(&round);
                let any = !out.is_empty();
                for event in out {
                    // The owner gone means nobody is left to tell.
                    let _ = events.send(event);
                }
                if any {
                    notify();
                }
                for command in round {
                    if let Command::Batch(Batch { mut bytes, .. }) = command
                        && bytes.capacity() <= RECYCLE_MAX_BYTES
                    {
                        bytes.clear();
                        let _ = spare.send(bytes);
                    }
                }
                if closing {
                    break;
                }
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_modes_parse_and_refuse_the_rest() {
        assert_eq!("always".parse(), Ok(SyncMode::Always));
        assert_eq!("never".parse(), Ok(SyncMode::Never));
        assert_eq!(
            "interval:250".parse(),
            Ok(SyncMode::Interval(Duration::from_millis(250)))
        );
        for bad in ["", "interval:", "interval:x", "sometimes", "Always"] {
            assert!(bad.parse::<SyncMode>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn enospc_is_told_apart_from_other_errors() {
        let full = io::Error::from_raw_os_error(libc::ENOSPC);
        let eio = io::Error::from_raw_os_error(libc::EIO);
        assert_eq!(
            WriteError::from_io(WriteOp::Write, &full),
            WriteError::NoSpace { op: WriteOp::Write }
        );
        assert!(matches!(
            WriteError::from_io(WriteOp::Sync, &eio),
            WriteError::Io {
                op: WriteOp::Sync,
                code: Some(libc::EIO),
                ..
            }
        ));
    }
}

#[cfg(test)]
mod group_commit {
    use super::*;
    use crate::storage::record::Record;
    use crate::storage::sim::SimFs;

    fn batch(roll: bool, seq: u64) -> Command {
        let mut bytes = Vec::new();
        frame::encode_frame(
            seq,
            &Record::SessionCreated {
                session: seq,
                timeout_ms: None,
                owner: None,
            },
            &mut bytes,
        );
        Command::Batch(Batch {
            roll,
            first_seq: seq,
            end_seq: seq + 1,
            bytes,
        })
    }

    #[test]
    fn one_round_writes_every_waiting_batch_and_syncs_once() {
        let fs = SimFs::new(1);
        let dir = Path::new("/d");
        let mut core = WriterCore::new(Arc::new(fs.clone()), dir, SyncMode::Always, 1 << 20, 1, 1);
        core.handle(&[batch(true, 1)]);
        let before = fs.ops();
        let batches: Vec<Command> = (2..12).map(|s| batch(false, s)).collect();
        let events = core.handle(&batches);
        assert_eq!(events, vec![Event::Durable { through: 12 }]);
        // Ten appends and a single fdatasync.
        assert_eq!(fs.ops() - before, 11);
    }

    #[test]
    fn a_failure_drops_later_batches_until_a_roll() {
        let fs = SimFs::new(2);
        let dir = Path::new("/d");
        let mut core = WriterCore::new(Arc::new(fs.clone()), dir, SyncMode::Always, 1 << 20, 1, 1);
        core.handle(&[batch(true, 1)]);
        fs.fail_writes(1);
        let events = core.handle(&[batch(false, 2), batch(false, 3), batch(true, 4)]);
        let lost: Vec<(Range<u64>, WriteError)> = events
            .iter()
            .filter_map(|e| match e {
                Event::Lost(l) => Some((l.seqs.clone(), l.error)),
                _ => None,
            })
            .collect();
        assert_eq!(lost.len(), 2);
        assert_eq!(lost[0].0, 2..3);
        assert!(matches!(
            lost[0].1,
            WriteError::Io {
                op: WriteOp::Write,
                ..
            }
        ));
        assert_eq!(lost[1], (3..4, WriteError::AfterFailure));
        assert_eq!(events.last(), Some(&Event::Durable { through: 5 }));
        let header = fs
            .contents(&dir.join(frame::segment_name(4)))
            .expect("new segment");
        let h = frame::decode_header(&header).expect("header");
        assert_eq!((h.first_seq, h.valid_below), (4, 2));
    }
}
