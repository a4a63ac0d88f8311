//! Reading records back, for subscribers that fell behind what the broker
//! keeps in memory: one record by its [`Location`], or a topic's range
//! ([`Reader::read_range`]) through the records the index planned
//! ([`super::Log::plan_read`]).
//!
//! A range read reads each segment's span of planned records with one
//! positioned read (records of other topics between them are read and
//! passed over, which costs less than a read per record), then checks
//! every planned frame (checksum, sequence number, topic and offsets)
//! before it hands out a payload.
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

    /// The payloads of `topic` from offset `from` on, through the records
    /// `extents` (in order, as planned), until `max_messages` payloads or
    /// `max_bytes` payload bytes are taken (at least one payload). The
    /// offsets come back ascending; an offset no planned record holds is
    /// simply absent.
    pub fn read_range(
        &self,
        topic: super::TopicId,
        extents: &[Extent],
        from: u64,
        max_messages: usize,
        max_bytes: usize,
    ) -> Result<Vec<ReadChunk>, ReadError> {
        let mut chunks = Vec::new();
        let (mut taken, mut bytes) = (0usize, 0usize);
        let mut rest = extents;
        while let Some(first) = rest.first() {
            // One span: planned records of one segment close together.
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
            let (span, later) = rest.split_at(n);
            rest = later;
            let path = self.dir.join(frame::segment_name(first.at.segment));
            let mut buf = vec![0u8; (end - first.at.offset) as usize];
            self.read_at(&path, first.at.offset, &mut buf)?;
            for extent in span {
                let at = (extent.at.offset - first.at.offset) as usize;
                let chunk = check_extent(&buf[at..], extent, topic)?;
                let skip = from.saturating_sub(chunk.first_offset) as usize;
                let mut payloads = Vec::new();
                for payload in chunk.payloads.into_iter().skip(skip) {
                    if taken >= max_messages || (taken > 0 && bytes >= max_bytes) {
                        break;
                    }
                    bytes += payload.len();
                    taken += 1;
                    payloads.push(payload);
                }
                if !payloads.is_empty() {
                    chunks.push(ReadChunk {
                        first_offset: chunk.first_offset + skip as u64,
                        timestamp_ms: chunk.timestamp_ms,
                        payloads,
                    });
                }
                if taken >= max_messages || bytes >= max_bytes {
                    return Ok(chunks);
                }
            }
        }
        Ok(chunks)
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

/// The record `extent` planned, at the start of `bytes`, checked: a frame
/// with its checksum and sequence number, a `Messages` record of `topic`
/// at the planned offsets.
fn check_extent(
    bytes: &[u8],
    extent: &Extent,
    topic: super::TopicId,
) -> Result<ReadChunk, ReadError> {
    let f = frame::parse_frame(bytes).map_err(|e| ReadError::Corrupt(Problem::Frame(e)))?;
    if f.seq != extent.at.seq {
        return Err(ReadError::Corrupt(Problem::WrongSeq {
            expected: extent.at.seq,
            found: f.seq,
        }));
    }
    match Record::decode(f.kind, f.body).map_err(|e| ReadError::Corrupt(Problem::Body(e)))? {
        Record::Messages {
            topic: t,
            first_offset,
            timestamp_ms,
            payloads,
            ..
        } if t == topic
            && first_offset == extent.first_offset
            && payloads.len() as u64 == extent.count =>
        {
            Ok(ReadChunk {
                first_offset,
                timestamp_ms,
                payloads,
            })
        }
        _ => Err(ReadError::NotPlanned { seq: f.seq }),
    }
}
