//! Giving freed memory back to the operating system, and raising the limit
//! on descriptors: the crate's two calls into libc.
//!
//! glibc's allocator keeps freed memory in its heap for reuse, and raises its
//! mmap threshold after large frees, so after a burst — thousands of
//! connections with big buffers, or a deep backlog drained — the broker's
//! resident size would stay at its peak although the memory is free. The
//! broker promises that memory follows the backlog down, so the loop calls
//! [`release_free_memory`] (glibc's `malloc_trim`, which returns whole free
//! pages anywhere in the heap) after it has freed a lot. Elsewhere it does
//! nothing.
//!
//! These are the crate's only foreign calls, and so its only `unsafe`
//! blocks: the crate root denies `unsafe_code`, and the two allows below
//! (`malloc_trim`, `rlimit_nofile`) are the only exceptions.

/// Returns free heap pages to the operating system, where supported.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    malloc_trim();
}

/// The first exception to the crate's `deny(unsafe_code)`; see the SAFETY note.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn malloc_trim() {
    // SAFETY: malloc_trim takes no pointers and only walks the allocator's
    // own free lists, which glibc locks itself, so it is sound to call at
    // any time from any thread. Its result (whether anything was released)
    // is advisory.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Raises the soft limit on open descriptors to the hard limit, so
/// `--max-connections` is not capped by a shell's default of 1024; returns
/// the soft limit now in force (`None` where it cannot be read).
// `rlim_t` is `u64` on Linux but not on every unix.
#[allow(clippy::useless_conversion)]
pub fn raise_descriptor_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        rlimit_nofile().and_then(|n| u64::try_from(n).ok())
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// The second exception to `deny(unsafe_code)`: `getrlimit`/`setrlimit`,
/// for which no safe wrapper is among the crate's dependencies.
#[cfg(unix)]
#[allow(unsafe_code)]
fn rlimit_nofile() -> Option<libc::rlim_t> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: both calls take a pointer to a properly initialised `rlimit`
    // that lives for the duration of the call, and touch nothing else.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    Some(limit.rlim_cur)
}
