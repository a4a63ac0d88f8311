//! `SimFs`: an in-memory [`Fs`] that forgets what a real disk may forget.
//!
//! Each file keeps what reads see (the page cache) apart from what is on the
//! "disk" and the list of writes made since the last sync, in order; each
//! directory entry (creation, rename, removal) is durable only once its
//! directory has been synced. [`SimFs::power_cut`] then keeps the disk, plus
//! a random prefix of each file's unsynced writes (the bytes of the writes
//! in the order made, the last one possibly cut), and only the synced
//! directory entries. An unsynced overwrite that is not kept leaves the old
//! bytes there, as on a real disk: that is what makes a recycled segment's
//! stale tail come back after a cut. A seeded xorshift makes every schedule
//! reproducible.
//!
//! Faults it can inject: a full disk (writes and creations fail with
//! ENOSPC after a partial write), EIO on write, and a failed `fdatasync`. A
//! failed sync behaves as Linux does since 4.13 ("fsyncgate"): the dirty
//! bytes are marked clean without reaching the disk, so a later sync that
//! succeeds does not save them — code that retries the sync and carries on
//! leaves a hole of zeros that recovery then sees. [`SimFs::crash_after`]
//! freezes the file system after a number of operations, to cut power at
//! any point of the writer's work.

use super::fs::{DirLock, Fs, FsFile, LockError};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// A simulated file system; clones share the same files.
#[derive(Clone)]
pub struct SimFs {
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct SimFile {
    /// What reads see.
    cache: Vec<u8>,
    /// What survives a power cut.
    disk: Vec<u8>,
    /// Writes made to `cache` and not yet on `disk`, oldest first: (offset,
    /// bytes).
    pending: Vec<(usize, Vec<u8>)>,
}

/// Writes `data` at `offset` of `bytes`, growing it with zeros (a hole) if
/// it ends before.
fn put(bytes: &mut Vec<u8>, offset: usize, data: &[u8]) {
    let end = offset + data.len();
    if bytes.len() < end {
        bytes.resize(end, 0);
    }
    bytes[offset..end].copy_from_slice(data);
}

impl SimFile {
    fn write(&mut self, offset: usize, data: &[u8]) {
        put(&mut self.cache, offset, data);
        self.pending.push((offset, data.to_vec()));
    }

    /// Moves the first `keep` bytes of the pending writes to the disk and
    /// forgets the rest.
    fn settle(&mut self, mut keep: usize) {
        for (offset, data) in std::mem::take(&mut self.pending) {
            let n = keep.min(data.len());
            if n > 0 {
                put(&mut self.disk, offset, &data[..n]);
            }
            keep -= n;
        }
    }

    fn pending_bytes(&self) -> usize {
        self.pending.iter().map(|(_, d)| d.len()).sum()
    }
}

#[derive(Default)]
struct State {
    rng: u64,
    next_id: u64,
    files: HashMap<u64, SimFile>,
    live: BTreeMap<PathBuf, u64>,
    durable: BTreeMap<PathBuf, u64>,
    locks: BTreeSet<PathBuf>,
    full: bool,
    failing_writes: u32,
    failing_syncs: u32,
    ops_left: Option<u64>,
    ops: u64,
}

fn eio() -> io::Error {
    io::Error::from_raw_os_error(libc::EIO)
}

fn enospc() -> io::Error {
    io::Error::from_raw_os_error(libc::ENOSPC)
}

fn not_found() -> io::Error {
    io::Error::from(io::ErrorKind::NotFound)
}

impl State {
    fn random(&mut self) -> u64 {
        // xorshift64*: small, seedable, good enough to pick cut lengths.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.random() % n as u64) as usize
        }
    }

    /// Counts a mutating operation; once the crash point is passed every
    /// operation fails and changes nothing, as if the process were gone.
    fn step(&mut self) -> io::Result<()> {
        self.ops += 1;
        match &mut self.ops_left {
            Some(0) => Err(eio()),
            Some(n) => {
                *n -= 1;
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// The file an open handle refers to; gone only after a power cut
    /// dropped a file whose entry was never durable.
    fn open_file(&mut self, id: u64) -> io::Result<&mut SimFile> {
        self.files.get_mut(&id).ok_or_else(not_found)
    }

    fn file(&mut self, path: &Path) -> io::Result<&mut SimFile> {
        let id = *self.live.get(path).ok_or_else(not_found)?;
        self.files.get_mut(&id).ok_or_else(not_found)
    }
}

impl SimFs {
    /// A new, empty file system whose random choices follow `seed`.
    pub fn new(seed: u64) -> Self {
        let state = State {
            rng: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            ..State::default()
        };
        Self {
            state: Arc::new(Mutex::new(state)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock is a test failing already; the
        // state itself is still consistent, so carry on with it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Power is cut: unsynced bytes beyond a random prefix, unsynced
    /// directory entries and every lock are lost; the crash point is cleared.
    pub fn power_cut(&self) {
        let mut s = self.lock();
        let durable = s.durable.clone();
        let ids: BTreeSet<u64> = durable.values().copied().collect();
        s.files.retain(|id, _| ids.contains(id));
        for id in ids {
            let dirty = s.files.get(&id).map_or(0, SimFile::pending_bytes);
            let keep = s.below(dirty + 1);
            let Some(f) = s.files.get_mut(&id) else {
                continue;
            };
            f.settle(keep);
            f.cache = f.disk.clone();
        }
        s.live = durable;
        s.locks.clear();
        s.ops_left = None;
    }

    /// After `ops` more mutating operations, every operation fails with EIO
    /// and changes nothing, until [`SimFs::power_cut`].
    pub fn crash_after(&self, ops: u64) {
        self.lock().ops_left = Some(ops);
    }

    /// How many mutating operations have been attempted so far.
    pub fn ops(&self) -> u64 {
        self.lock().ops
    }

    /// While set, writes write a random prefix then fail with ENOSPC, and
    /// file creation fails with ENOSPC.
    pub fn set_full(&self, full: bool) {
        self.lock().full = full;
    }

    /// The next `n` writes fail with EIO, writing nothing.
    pub fn fail_writes(&self, n: u32) {
        self.lock().failing_writes = n;
    }

    /// The next `n` syncs fail with EIO and lose the dirty bytes (see the
    /// module doc).
    pub fn fail_syncs(&self, n: u32) {
        self.lock().failing_syncs = n;
    }

    /// The bytes a read of `path` sees, if it exists.
    pub fn contents(&self, path: &Path) -> Option<Vec<u8>> {
        self.lock().file(path).ok().map(|f| f.cache.clone())
    }

    /// The names of the files in `dir` that a read of the directory sees.
    pub fn names(&self, dir: &Path) -> Vec<String> {
        let s = self.lock();
        names_in(&s.live, dir)
    }
}

fn names_in(entries: &BTreeMap<PathBuf, u64>, dir: &Path) -> Vec<String> {
    entries
        .keys()
        .filter(|p| p.parent() == Some(dir))
        .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
        .collect()
}

/// An open file: like a file descriptor it follows the file, not its
/// name, through renames and removals.
struct SimHandle {
    fs: SimFs,
    id: u64,
}

impl FsFile for SimHandle {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut s = self.fs.lock();
        s.step()?;
        if s.failing_writes > 0 {
            s.failing_writes -= 1;
            return Err(eio());
        }
        let partial = if s.full {
            Some(s.below(data.len()))
        } else {
            None
        };
        let offset = usize::try_from(offset).map_err(|_| eio())?;
        let f = s.open_file(self.id)?;
        match partial {
            Some(n) => {
                f.write(offset, &data[..n]);
                Err(enospc())
            }
            None => {
                f.write(offset, data);
                Ok(())
            }
        }
    }

    fn size(&mut self) -> io::Result<u64> {
        Ok(self.fs.lock().open_file(self.id)?.cache.len() as u64)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        let mut s = self.fs.lock();
        s.step()?;
        let failing = s.failing_syncs > 0;
        if failing {
            s.failing_syncs -= 1;
        }
        let f = s.open_file(self.id)?;
        if failing {
            // Marked clean without reaching the disk (see the module doc).
            f.settle(0);
            return Err(eio());
        }
        f.settle(usize::MAX);
        Ok(())
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        let mut s = self.fs.lock();
        s.step()?;
        let f = s.open_file(self.id)?;
        let len = usize::try_from(len).map_err(|_| eio())?;
        f.cache.resize(len, 0);
        // A shrink is kept on disk at once: the log always syncs right after.
        // Pending writes past the new end are gone with it.
        f.disk.truncate(len);
        f.pending.retain_mut(|(offset, data)| {
            data.truncate(len.saturating_sub(*offset));
            !data.is_empty()
        });
        Ok(())
    }
}

struct SimLock {
    fs: SimFs,
    dir: PathBuf,
}

impl DirLock for SimLock {}

impl Drop for SimLock {
    fn drop(&mut self) {
        self.fs.lock().locks.remove(&self.dir);
    }
}

impl Fs for SimFs {
    fn create_dir_all(&self, _dir: &Path) -> io::Result<()> {
        Ok(())
    }

    fn lock_dir(&self, dir: &Path) -> Result<Box<dyn DirLock>, LockError> {
        if !self.lock().locks.insert(dir.to_path_buf()) {
            return Err(LockError::Held);
        }
        Ok(Box::new(SimLock {
            fs: self.clone(),
            dir: dir.to_path_buf(),
        }))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        Ok(self.names(dir))
    }

    fn create_new(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let mut s = self.lock();
        s.step()?;
        if s.full {
            return Err(enospc());
        }
        if s.live.contains_key(path) {
            return Err(io::Error::from(io::ErrorKind::AlreadyExists));
        }
        s.next_id += 1;
        let id = s.next_id;
        s.files.insert(id, SimFile::default());
        s.live.insert(path.to_path_buf(), id);
        Ok(Box::new(SimHandle {
            fs: self.clone(),
            id,
        }))
    }

    fn open_write(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let id = *self.lock().live.get(path).ok_or_else(not_found)?;
        Ok(Box::new(SimHandle {
            fs: self.clone(),
            id,
        }))
    }

    fn read_all(&self, path: &Path) -> io::Result<Vec<u8>> {
        Ok(self.lock().file(path)?.cache.clone())
    }

    fn read_at(&self, path: &Path, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let mut s = self.lock();
        let f = s.file(path)?;
        let start = usize::try_from(offset).map_err(|_| eio())?;
        let src = start
            .checked_add(buf.len())
            .and_then(|end| f.cache.get(start..end))
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.step()?;
        s.live.remove(path).map(|_| ()).ok_or_else(not_found)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.step()?;
        let id = s.live.remove(from).ok_or_else(not_found)?;
        s.live.insert(to.to_path_buf(), id);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.step()?;
        let State { live, durable, .. } = &mut *s;
        durable.retain(|p, _| p.parent() != Some(dir));
        for (p, id) in live.iter() {
            if p.parent() == Some(dir) {
                durable.insert(p.clone(), *id);
            }
        }
        Ok(())
    }
}
