//! Every file operation the log makes, behind two small traits, and their
//! real implementation over `std::fs`.
//!
//! The traits exist so that the same log code runs against `SimFs`
//! in tests, which can lose unsynced bytes at a simulated power cut and
//! inject faults. They are object-safe (`Arc<dyn Fs>`) because the owner, the
//! writer thread and read-back readers share one file system; a dynamic call
//! costs nothing next to a system call.
//!
//! The set is deliberately minimal. Writes are positioned (`write_at`)
//! because a segment may be a recycled file whose blocks were written in a
//! previous life: the writer overwrites them instead of growing the file, so
//! an `fdatasync` has no size change to write (STORAGE.md, "Recycled
//! segments"). `rename` exists for the same reason: a released segment
//! becomes the spare, and the spare the next segment. Reads take either a
//! whole segment (recovery) or one record (read-back).

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// The name of the lock file inside the data directory.
pub const LOCK_FILE: &str = "LOCK";

/// An open segment file.
pub trait FsFile: Send {
    /// Writes all of `data` at byte `offset`, overwriting what is there and
    /// growing the file if it ends before.
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// The file's size in bytes.
    fn size(&mut self) -> io::Result<u64>;
    /// Makes the file's data durable (`fdatasync`).
    fn sync_data(&mut self) -> io::Result<()>;
    /// Cuts the file to `len` bytes. Callers sync afterwards.
    fn set_len(&mut self, len: u64) -> io::Result<()>;
}

/// Held for as long as the data directory is owned; dropping it unlocks.
pub trait DirLock: Send + Sync {}

/// Why the data directory could not be locked.
#[derive(Debug)]
pub enum LockError {
    /// Another process (or another open log in this one) holds the lock.
    Held,
    /// The lock file could not be opened or locked for another reason.
    Io(io::Error),
}

/// The file operations the log performs; see the module doc.
pub trait Fs: Send + Sync {
    /// Creates `dir` and its parents if missing.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Takes the exclusive lock on the data directory without waiting.
    fn lock_dir(&self, dir: &Path) -> Result<Box<dyn DirLock>, LockError>;
    /// The names of the entries of `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Creates a new, empty file; fails if it exists.
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn FsFile>>;
    /// Opens an existing file for writing, truncating and syncing.
    fn open_write(&self, path: &Path) -> io::Result<Box<dyn FsFile>>;
    /// The whole content of a file.
    fn read_all(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Fills `buf` from `offset`; a short file is `UnexpectedEof`.
    fn read_at(&self, path: &Path, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Removes a file (not durable until [`Fs::sync_dir`]).
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Renames a file, replacing `to` if it exists (not durable until
    /// [`Fs::sync_dir`]).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes creations and removals in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct StdFs;

struct StdFile(File);

impl FsFile for StdFile {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.0.write_all_at(data, offset)
    }
    fn size(&mut self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
    fn sync_data(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
}

/// The lock is the `flock` std takes on the open `LOCK` file; closing the
/// file releases it, so holding the file is holding the lock.
struct StdLock {
    _file: File,
}

impl DirLock for StdLock {}

impl Fs for StdFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    fn lock_dir(&self, dir: &Path) -> Result<Box<dyn DirLock>, LockError> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK_FILE))
            .map_err(LockError::Io)?;
        match file.try_lock() {
            Ok(()) => Ok(Box::new(StdLock { _file: file })),
            Err(TryLockError::WouldBlock) => Err(LockError::Held),
            Err(TryLockError::Error(e)) => Err(LockError::Io(e)),
        }
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            if let Ok(name) = entry?.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn create_new(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let file = OpenOptions::new().write(true).create_new(true).open(path)?;
        Ok(Box::new(StdFile(file)))
    }

    fn open_write(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        // Not O_APPEND: Linux's pwrite on an O_APPEND file ignores the offset.
        let file = OpenOptions::new().write(true).open(path)?;
        Ok(Box::new(StdFile(file)))
    }

    fn read_all(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }

    fn read_at(&self, path: &Path, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        File::open(path)?.read_exact_at(buf, offset)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}
