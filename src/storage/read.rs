//! Reading records back, for subscribers that fell behind what the broker
//! keeps in memory: one record by its [`Location`], or a topic's range
//! ([`Reader::read_range`]) through the records the index planned
//! ([`super::Log::plan_read`]).
//!
//! A range read reads the planned spans (see `index`) of one segment close
//! together with one positioned read, then walks every frame of each span:
//! checksum and consecutive sequence numbers for all of them, and for the
//! topic's own `Messages` records the offsets the span promised, before it
//! hands out a payload. Records of other topics are passed over unread
//! beyond their checksum; a span bounds them ([`super::index::SPAN_BYTES`]).
//!
//! A [`Reader`] is a cheap clone holding the file system and the directory,
//! so the owner may read on its own thread (one record costs two positioned
//! reads, bounded by [`MAX_BODY_LEN`]) or hand a reader to another thread.
//! Only records already reported durable are sure to be there; a record of
//! a released segment is `Gone`.

use super::frame::{self, FRAME_HEADER_LEN, MAX_BODY_LEN};
use super::fs::Fs;
use super::index::{Extent, Location};
use super::record::Record;
use super::{Problem, io_error};
use bytes::Bytes;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// Why a record could not be read back.
#[derive(Debug)]
pub enum ReadError {
    /// Its segment is no longer there (released), or the record is beyond
    /// the file's end (not written yet, or lost).
    Gone,
    /// The bytes there are not the record asked for.
    Corrupt(Problem),
    Io(super::OpenError),
    /// A valid record, but not the topic's messages the index said were
    /// there.
    NotPlanned {
        seq: u64,
    },
}

/// Payloads read back from one record: `payloads[i]` is at offset
/// `first_offset + i`, published at `timestamp_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadChunk {
    pub first_offset: u64,
    pub timestamp_ms: u64,
    pub payloads: Vec<Bytes>,
}

/// Most bytes one positioned read takes: a span of planned records longer
/// than this is read in several.
const MAX_SPAN: u64 = 8 << 20;
/// Unplanned bytes between two planned records past which they are read
/// apart rather than in one span.
const MAX_SKIP: u64 = 256 << 10;

/// Reads records back; see the module doc.
#[derive(Clone)]
pub struct Reader {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
}

impl Reader {
    pub fn new(fs: Arc<dyn Fs>, dir: PathBuf) -> Self {
        Self { fs, dir }
    }

    /// The record at `at`, checked against its checksum and sequence number.
    pub fn read(&self, at: Location) -> Result<Record, ReadError> {
        let path = self.dir.join(frame::segment_name(at.segment));
        let mut head = [0u8; FRAME_HEADER_LEN];
        self.read_at(&path, at.offset, &mut head)?;
        let body_len =
            frame::declared_body_len(&head).map_err(|e| ReadError::Corrupt(Problem::Frame(e)))?;
        debug_assert!(body_len <= MAX_BODY_LEN);
        let mut whole = vec![0u8; FRAME_HEADER_LEN + body_len];
        self.read_at(&path, at.offset, &mut whole)?;
        let f = frame::parse_frame(&whole).map_err(|e| ReadError::Corrupt(Problem::Frame(e)))?;
        if f.seq != at.seq {
            return Err(ReadError::Corrupt(Problem::WrongSeq {
                expected: at.seq,
                found: f.seq,
            }));
        }
        Record::decode(f.kind, f.body).map_err(|e| ReadError::Corrupt(Problem::Body(e)))
    }

    /// The payloads of `topic` from offset `from` on, through the spans
    /// `extents` (in order, as planned), until `max_messages` payloads or
    /// `max_bytes` payload bytes are taken (at least one payload). The
    /// offsets come back ascending; an offset no record holds is simply
    /// absent.
    pub fn read_range(
        &self,
        topic: super::TopicId,
        extents: &[Extent],
        from: u64,
        max_messages: usize,
        max_bytes: usize,
    ) -> Result<Vec<ReadChunk>, ReadError> {
        let mut take = Take {
            topic,
            from,
            max_messages,
            max_bytes,
            taken: 0,
            bytes: 0,
            chunks: Vec::new(),
        };
        let mut rest = extents;
        while let Some(first) = rest.first() {
            // One positioned read: spans of one segment close together.
            let mut n = 1;
            let mut end = first.at.offset + first.len;
            while let Some(next) = rest.get(n) {
                let next_end = next.at.offset + next.len;
                if next.at.segment != first.at.segment
                    || next.at.offset < end
                    || next.at.offset - end > MAX_SKIP
                    || next_end - first.at.offset > MAX_SPAN
                {
                    break;
                }
                end = next_end;
                n += 1;
            }
            let (spans, later) = rest.split_at(n);
            rest = later;
            let path = self.dir.join(frame::segment_name(first.at.segment));
            let mut buf = vec![0u8; (end - first.at.offset) as usize];
            self.read_at(&path, first.at.offset, &mut buf)?;
            for span in spans {
                let at = (span.at.offset - first.at.offset) as usize;
                let bytes = buf
                    .get(at..at + span.len as usize)
                    .ok_or(ReadError::NotPlanned { seq: span.at.seq })?;
                if scan_span(bytes, span, &mut take)? {
                    return Ok(take.chunks);
                }
            }
        }
        Ok(take.chunks)
    }

    fn read_at(
        &self,
        path: &std::path::Path,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), ReadError> {
        match self.fs.read_at(path, offset, buf) {
            Ok(()) => Ok(()),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::UnexpectedEof
                ) =>
            {
                Err(ReadError::Gone)
            }
            Err(e) => Err(ReadError::Io(io_error("read", path, e))),
        }
    }
}

/// What a range read has taken so far, and its bounds.
struct Take {
    topic: super::TopicId,
    from: u64,
    max_messages: usize,
    max_bytes: usize,
    taken: usize,
    bytes: usize,
    chunks: Vec<ReadChunk>,
}

impl Take {
    fn full(&self) -> bool {
        self.taken >= self.max_messages || self.bytes >= self.max_bytes
    }
}

/// Walks the span `span`, whose bytes are `bytes`: every frame must be
/// whole, pass its checksum and carry the next sequence number from the
/// span's first; the first must be the topic's `Messages` record at the
/// span's first offset, and the topic's records must hold ascending offsets
/// within the span's. Other records are passed over (checked, not decoded).
/// The topic's payloads from `take.from` on go into `take` until it is
/// full; returns whether it is.
fn scan_span(bytes: &[u8], span: &Extent, take: &mut Take) -> Result<bool, ReadError> {
    let (mut pos, mut seq, mut next_offset) = (0, span.at.seq, span.first_offset);
    while pos < bytes.len() {
        let f =
            frame::parse_frame(&bytes[pos..]).map_err(|e| ReadError::Corrupt(Problem::Frame(e)))?;
        if f.seq != seq {
            return Err(ReadError::Corrupt(Problem::WrongSeq {
                expected: seq,
                found: f.seq,
            }));
        }
        let ours = Record::messages_topic(f.kind, f.body) == Some(take.topic);
        if !ours && pos == 0 {
            return Err(ReadError::NotPlanned { seq });
        }
        pos += FRAME_HEADER_LEN + f.body.len();
        seq += 1;
        if !ours {
            continue;
        }
        let record =
            Record::decode(f.kind, f.body).map_err(|e| ReadError::Corrupt(Problem::Body(e)))?;
        let Record::Messages {
            first_offset,
            timestamp_ms,
            payloads,
            ..
        } = record
        else {
            return Err(ReadError::NotPlanned { seq: f.seq });
        };
        // Empty ones (a checkpoint's, a gap's end) hold nothing to check.
        if payloads.is_empty() {
            continue;
        }
        let count = payloads.len() as u64;
        let first_planned = f.seq == span.at.seq && first_offset != span.first_offset;
        if first_planned || first_offset < next_offset || first_offset + count > span.end_offset {
            return Err(ReadError::NotPlanned { seq: f.seq });
        }
        next_offset = first_offset + count;
        let skip = take.from.saturating_sub(first_offset) as usize;
        let mut kept = Vec::new();
        for payload in payloads.into_iter().skip(skip) {
            if take.taken >= take.max_messages || (take.taken > 0 && take.bytes >= take.max_bytes) {
                break;
            }
            take.bytes += payload.len();
            take.taken += 1;
            kept.push(payload);
        }
        if !kept.is_empty() {
            take.chunks.push(ReadChunk {
                first_offset: first_offset + skip as u64,
                timestamp_ms,
                payloads: kept,
            });
        }
        if take.full() {
            return Ok(true);
        }
    }
    Ok(false)
}
