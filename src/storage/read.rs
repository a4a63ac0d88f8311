//! Reading one record back by its [`Location`], for subscribers that fell
//! behind what the broker keeps in memory.
//!
//! A [`Reader`] is a cheap clone holding the file system and the directory,
//! so the owner may read on its own thread (one record costs two positioned
//! reads, bounded by [`MAX_BODY_LEN`]) or hand a reader to another thread.
//! Only records already reported durable are sure to be there; a record of
//! a released segment is `Gone`.

use super::frame::{self, FRAME_HEADER_LEN, MAX_BODY_LEN};
use super::fs::Fs;
use super::index::Location;
use super::record::Record;
use super::{Problem, io_error};
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
}

/// Reads records back; see the module doc.
#[derive(Clone)]
pub struct Reader {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
}

impl Reader {
    pub(crate) fn new(fs: Arc<dyn Fs>, dir: PathBuf) -> Self {
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
