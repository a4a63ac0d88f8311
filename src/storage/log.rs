//! [`Log`]: the owner's handle on the durable log — recovery at open,
//! appends, the batch handed to the writer at the end of each loop round,
//! the writer's reports, read-back and release of old segments.
//!
//! The owner plans the layout itself: it numbers records, decides when a
//! segment is full and so knows each record's [`Location`] the moment it
//! appends it, with no answer needed from the writer. The writer only
//! executes the plan; when it fails, the owner's next append starts a new
//! segment (see `writer`).
//!
//! The read-back index is sparse (see `index`): a span's bytes are known
//! at append, but a read may only take bytes already durable, and a loss
//! must cut a span back to what was kept. Both are batch boundaries (the
//! writer reports durable and lost records by whole batches), so the log
//! remembers where each batch it handed over ends until no report can
//! still concern it ([`Flushed`]), and clips every planned span at the
//! first byte not yet durable.

use super::OpenError;
use super::frame::{self, SEGMENT_HEADER_LEN};
use super::fs::{DirLock, Fs, LockError};
use super::index::{Extent, Index, Location, SPAN_BYTES};
use super::read::Reader;
use super::record::{Record, TopicId};
use super::recovery::{self, RecoveryMode, RecoveryReport};
use super::writer::{self, Batch, Command, Event, SyncMode, WriterCore};
use std::collections::VecDeque;
use std::mem::size_of;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;

/// 64 MiB, as Kafka and Redpanda roughly do: big enough that a segment per
/// file costs nothing, small enough that release frees memory in steps.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;

/// Where the writer runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WriterKind {
    /// Its own thread; the owner is told through the notify callback.
    #[default]
    Thread,
    /// On the owner's thread, inside [`Log::flush`]: for tests and tools
    /// that want every step deterministic.
    Inline,
}

/// How the log behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    pub sync: SyncMode,
    /// A segment is rolled before a record would take it past this size
    /// (a single larger record still gets a segment of its own).
    pub segment_bytes: u64,
    pub recovery: RecoveryMode,
    pub writer: WriterKind,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            sync: SyncMode::Always,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            recovery: RecoveryMode::Strict,
            writer: WriterKind::Thread,
        }
    }
}

/// Why a record was not appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendError {
    /// Its body is over [`super::MAX_BODY_LEN`] bytes.
    TooLarge { body_bytes: usize },
}

enum Writer {
    Thread {
        commands: Sender<Command>,
        events: Receiver<Event>,
        /// Written batches' buffers, back for reuse.
        spare: Receiver<Vec<u8>>,
        handle: Option<JoinHandle<()>>,
    },
    Inline {
        core: Box<WriterCore>,
        events: VecDeque<Event>,
    },
}

/// Where a batch handed to the writer lies: records `first_seq..end_seq`,
/// bytes `start..end` of `segment` (a batch never crosses a roll).
#[derive(Debug, Clone, Copy)]
struct Flushed {
    first_seq: u64,
    end_seq: u64,
    segment: u64,
    start: u64,
    end: u64,
}

/// The owner's handle; see the module doc.
pub struct Log {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    config: Config,
    writer: Writer,
    /// Encoded records not yet handed to the writer.
    pending: Vec<u8>,
    pending_first: u64,
    pending_roll: bool,
    next_seq: u64,
    /// First sequence numbers of the segments, oldest first; the last is
    /// the one being written.
    segments: VecDeque<u64>,
    /// The bytes of each segment, beside `segments` (recovered ones as far
    /// as their valid records go).
    sizes: VecDeque<u64>,
    /// All of `sizes` together: the log's bytes on disk.
    disk_bytes: u64,
    segment_size: u64,
    segment_records: u64,
    roll_needed: bool,
    durable: u64,
    index: Index,
    /// Batches a report may still concern, oldest first: with `always`,
    /// those not yet durable; otherwise also the durable ones of the
    /// segment being synced (a failed sync loses them after their report).
    flushed: VecDeque<Flushed>,
    /// (segment, byte offset) of the first byte not yet durable: reads are
    /// clipped there.
    readable: (u64, u64),
    /// Released last (see `Drop`), after the writer has stopped.
    lock: Option<Box<dyn DirLock>>,
}

impl Log {
    /// Locks `dir`, recovers it — calling `replay` with each valid record
    /// and its sequence number, in order — and starts the writer. Every
    /// open writes into a fresh segment, so nothing is ever appended after
    /// bytes recovery had to judge.
    pub fn open(
        fs: Arc<dyn Fs>,
        dir: &Path,
        config: Config,
        notify: Box<dyn Fn() + Send>,
        mut replay: impl FnMut(u64, Record),
    ) -> Result<(Log, RecoveryReport), OpenError> {
        fs.create_dir_all(dir)
            .map_err(|e| super::io_error("create", dir, e))?;
        let lock = fs.lock_dir(dir).map_err(|e| match e {
            LockError::Held => OpenError::Locked {
                dir: dir.to_path_buf(),
            },
            LockError::Io(e) => super::io_error("lock", dir, e),
        })?;
        let mut index = Index::default();
        let mut ends = std::collections::HashMap::<u64, u64>::new();
        let recovered = recovery::recover(&*fs, dir, config.recovery, &mut |at, record| {
            index_record(&mut index, at, &record);
            let len = frame::frame_len(&record).unwrap_or(0) as u64;
            let end = ends.entry(at.segment).or_default();
            *end = (*end).max(at.offset + len);
            replay(at.seq, record);
        })?;
        let sizes: VecDeque<u64> = recovered
            .segments
            .iter()
            .map(|s| ends.get(s).copied().unwrap_or(SEGMENT_HEADER_LEN as u64))
            .collect();
        let disk_bytes = sizes.iter().sum();
        let next_seq = recovered.next_seq;
        let core = WriterCore::new(
            fs.clone(),
            dir,
            config.sync,
            config.segment_bytes,
            next_seq,
            recovered.valid_end,
        );
        let writer = match config.writer {
            WriterKind::Inline => Writer::Inline {
                core: Box::new(core),
                events: VecDeque::new(),
            },
            WriterKind::Thread => {
                let (commands, command_rx) = mpsc::channel();
                let (event_tx, events) = mpsc::channel();
                let (spare_tx, spare) = mpsc::channel();
                let handle = writer::spawn(core, command_rx, event_tx, spare_tx, notify)
                    .map_err(|e| super::io_error("spawn writer", dir, e))?;
                Writer::Thread {
                    commands,
                    events,
                    spare,
                    handle: Some(handle),
                }
            }
        };
        let log = Log {
            fs,
            dir: dir.to_path_buf(),
            config,
            writer,
            pending: Vec::new(),
            pending_first: next_seq,
            pending_roll: false,
            next_seq,
            segments: recovered.segments.into_iter().collect(),
            sizes,
            disk_bytes,
            segment_size: 0,
            segment_records: 0,
            roll_needed: true,
            durable: next_seq,
            index,
            flushed: VecDeque::new(),
            // Every recovered segment is below the next one, which is
            // named `next_seq`.
            readable: (next_seq, 0),
            lock: Some(lock),
        };
        Ok((log, recovered.report))
    }

    /// Encodes `record` into the pending batch and returns its sequence
    /// number. Nothing reaches the writer before [`Log::flush`].
    pub fn append(&mut self, record: &Record) -> Result<u64, AppendError> {
        let len = frame::frame_len(record).ok_or(AppendError::TooLarge {
            body_bytes: record.body_len(),
        })? as u64;
        let full = self.segment_records > 0 && self.segment_size + len > self.config.segment_bytes;
        if self.roll_needed || full {
            self.flush();
            self.segments.push_back(self.next_seq);
            self.sizes.push_back(SEGMENT_HEADER_LEN as u64);
            self.disk_bytes += SEGMENT_HEADER_LEN as u64;
            self.segment_size = SEGMENT_HEADER_LEN as u64;
            self.segment_records = 0;
            self.pending_roll = true;
            self.roll_needed = false;
        }
        if self.pending.is_empty() {
            self.pending_first = self.next_seq;
        }
        let seq = self.next_seq;
        let at = Location {
            segment: self.segments.back().copied().unwrap_or(seq),
            offset: self.segment_size,
            seq,
        };
        frame::encode_frame(seq, record, &mut self.pending);
        index_record(&mut self.index, at, record);
        self.next_seq += 1;
        self.segment_size += len;
        if let Some(size) = self.sizes.back_mut() {
            *size += len;
        }
        self.disk_bytes += len;
        self.segment_records += 1;
        Ok(seq)
    }

    /// Hands everything appended since the last flush to the writer as one
    /// batch. Call it once per loop round, after the round's appends.
    pub fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let next = match &self.writer {
            Writer::Thread { spare, .. } => spare.try_recv().unwrap_or_default(),
            Writer::Inline { .. } => Vec::new(),
        };
        let segment = self.active_segment();
        self.thin_flushed();
        self.flushed.push_back(Flushed {
            first_seq: self.pending_first,
            end_seq: self.next_seq,
            segment,
            start: self.segment_size - self.pending.len() as u64,
            end: self.segment_size,
        });
        let batch = Batch {
            roll: std::mem::take(&mut self.pending_roll),
            first_seq: self.pending_first,
            end_seq: self.next_seq,
            bytes: std::mem::replace(&mut self.pending, next),
        };
        self.send(Command::Batch(batch));
    }

    fn send(&mut self, command: Command) {
        match &mut self.writer {
            Writer::Thread { commands, .. } => {
                // A writer thread that is gone has panicked; its records
                // are never reported durable, which is the safe outcome.
                let _ = commands.send(command);
            }
            Writer::Inline { core, events } => {
                events.extend(core.handle(std::slice::from_ref(&command)));
                // As the thread would between commands: deterministic, so
                // simulated power cuts fall inside preparation too.
                core.prepare_step();
            }
        }
    }

    /// The writer's reports since the last call, in order. Call it when the
    /// notify callback fires. The log itself reacts to them: a loss drops
    /// the lost records from the index and makes the next append start a
    /// new segment.
    pub fn poll(&mut self) -> Vec<Event> {
        let events: Vec<Event> = match &mut self.writer {
            Writer::Thread { events, .. } => events.try_iter().collect(),
            Writer::Inline { events, .. } => events.drain(..).collect(),
        };
        for event in &events {
            match event {
                Event::Durable { through } => self.made_durable(*through),
                Event::Lost(loss) => {
                    self.lost_from(loss.seqs.start);
                    self.roll_needed = true;
                }
                Event::RemoveFailed { .. } => {}
            }
        }
        events
    }

    /// Records below `through` are durable: reads may take their bytes.
    fn made_durable(&mut self, through: u64) {
        self.durable = self.durable.max(through);
        if let Some(b) = self.flushed.iter().rev().find(|b| b.end_seq <= through) {
            self.readable = self.readable.max((b.segment, b.end));
        }
        let always = self.config.sync == SyncMode::Always;
        let (segment, _) = self.readable;
        // With `always`, durable is synced: no loss reaches back there.
        // Otherwise a loss may take durable records of the segment being
        // written, never of one the writer has rolled past (it synced it).
        while self.flushed.front().is_some_and(|b| {
            if always {
                b.end_seq <= through
            } else {
                b.segment < segment
            }
        }) {
            self.flushed.pop_front();
        }
    }

    /// With `interval` and `never`, durable batches of the segment being
    /// written are kept one per [`SPAN_BYTES`] only: a loss reaching back
    /// past the report (a failed sync) is rare, and one batch kept per
    /// loop round would cost 40 bytes a round. Such a loss then cuts the
    /// index back to the kept batch before it: up to 64 KiB of records
    /// that were kept on disk are no longer read back.
    fn thin_flushed(&mut self) {
        let n = self.flushed.len();
        if self.config.sync == SyncMode::Always || n < 2 {
            return;
        }
        let (a, b) = (self.flushed[n - 2], self.flushed[n - 1]);
        if b.end_seq <= self.durable && a.segment == b.segment && b.start < a.start + SPAN_BYTES {
            self.flushed.pop_back();
        }
    }

    /// Records from `seq` on were lost: the index forgets them, cutting a
    /// span that runs through them back to where record `seq` started. A
    /// loss starts at a batch (the writer loses whatever is unsynced, by
    /// batches), which `flushed` holds (or, thinned, the one before it).
    fn lost_from(&mut self, seq: u64) {
        let cut = self
            .flushed
            .iter()
            .rev()
            .find(|b| b.first_seq <= seq)
            .map(|b| (b.segment, b.start));
        let segment_of_seq = self
            .segments
            .iter()
            .rev()
            .find(|&&s| s <= seq)
            .copied()
            .unwrap_or(seq);
        self.index.remove_from(seq, cut, segment_of_seq);
        if let Some(cut) = cut {
            self.readable = self.readable.min(cut);
        }
        while self.flushed.back().is_some_and(|b| b.first_seq >= seq) {
            self.flushed.pop_back();
        }
    }

    /// Every record below this is durable (per the sync mode), except those
    /// reported lost. Updated by [`Log::poll`].
    pub fn durable(&self) -> u64 {
        self.durable
    }

    /// The sequence number the next append will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The start of the index span holding `offset` of `topic`, if the log
    /// still has it: the record holding `offset` is there or after it, in
    /// the same segment (so its seq is a lower bound on that record's).
    /// Known from the moment of the append.
    pub fn locate(&self, topic: TopicId, offset: u64) -> Option<Location> {
        self.index.locate(topic, offset)
    }

    /// The spans to read for `topic`'s offsets `from..end`, bounded as
    /// [`Index::extents`] says and clipped to what is durable; hand them to
    /// [`Reader::read_range`] (the read path of subscribers behind the
    /// memory cache).
    pub fn plan_read(
        &self,
        topic: TopicId,
        from: u64,
        end: u64,
        max_messages: u64,
        max_bytes: u64,
    ) -> Vec<Extent> {
        let (segment, offset) = self.readable;
        let mut spans = self
            .index
            .extents(topic, from, end, max_messages, max_bytes);
        spans.retain_mut(|s| {
            if (s.at.segment, s.at.offset) >= (segment, offset) {
                return false;
            }
            if s.at.segment == segment {
                s.len = s.len.min(offset - s.at.offset);
            }
            true
        });
        spans
    }

    /// How many spans the read-back index holds.
    pub fn indexed_spans(&self) -> usize {
        self.index.spans()
    }

    /// Bytes the read-back index holds in memory, with the batch positions
    /// kept beside it: what the broker's budget counts as `log_index`.
    pub fn index_bytes(&self) -> usize {
        self.index.footprint() + self.flushed.capacity() * size_of::<Flushed>()
    }

    /// A reader for [`Location`]s, usable from any thread.
    pub fn reader(&self) -> Reader {
        Reader::new(self.fs.clone(), self.dir.clone())
    }

    /// The owner no longer needs any record below `seq`: segments holding
    /// only such records are removed. Bounded by [`Log::durable`], so a
    /// checkpoint is never relied on before it is durable; the segment being
    /// written is never removed. Returns the segments released.
    pub fn release_below(&mut self, seq: u64) -> Vec<u64> {
        let seq = seq.min(self.durable);
        let mut released = Vec::new();
        while let (Some(&first), Some(&next)) = (self.segments.front(), self.segments.get(1)) {
            if next > seq {
                break;
            }
            released.push(first);
            self.segments.pop_front();
            self.disk_bytes -= self.sizes.pop_front().unwrap_or(0);
        }
        if let Some(&kept) = self.segments.front()
            && !released.is_empty()
        {
            self.index.remove_below(kept);
        }
        if !released.is_empty() {
            self.send(Command::Remove(released.clone()));
        }
        released
    }

    /// The first sequence number of the segment being written: it moves
    /// each time the log rolls, which is when an owner may checkpoint.
    pub fn active_segment(&self) -> u64 {
        self.segments.back().copied().unwrap_or(self.next_seq)
    }

    /// The bytes of the segments the log holds (what it has appended, in
    /// the ones written since open), for `--max-disk`.
    pub fn disk_bytes(&self) -> u64 {
        self.disk_bytes
    }

    /// The first sequence numbers of the segments the log holds.
    pub fn segments(&self) -> Vec<u64> {
        self.segments.iter().copied().collect()
    }

    /// Flushes, syncs (in every mode), stops the writer and returns its last
    /// reports. Dropping the log does the same, discarding them.
    pub fn close(mut self) -> Vec<Event> {
        let events = self.shutdown();
        self.lock = None;
        events
    }

    fn shutdown(&mut self) -> Vec<Event> {
        self.flush();
        self.send(Command::Close);
        if let Writer::Thread { handle, .. } = &mut self.writer
            && let Some(h) = handle.take()
        {
            let _ = h.join();
        }
        self.poll()
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        if self.lock.is_some() {
            self.shutdown();
            self.lock = None;
        }
    }
}

/// What the index learns from one record, at append and at replay alike.
fn index_record(index: &mut Index, at: Location, record: &Record) {
    match record {
        Record::Messages {
            topic,
            first_offset,
            payloads,
            ..
        } => {
            let len = (frame::FRAME_HEADER_LEN + record.body_len()) as u64;
            index.insert(*topic, *first_offset, payloads.len() as u64, at, len)
        }
        Record::TopicDeleted { topic } => index.remove_topic(*topic),
        _ => {}
    }
}
