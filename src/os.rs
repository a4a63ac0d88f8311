//! The calls into the operating system that std does not offer: giving
//! freed memory back, raising the limit on descriptors, and reading how much
//! of a socket's output the kernel still holds.
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
//! The kernel's send queue tells whether a slow reader is reading at all:
//! bytes the broker wrote sit in the kernel's socket buffers, which can hold
//! megabytes, and the kernel reports "writable" only once half of its queue
//! has drained. [`unsent_in_kernel`] lets the output timeout count what the
//! peer really took instead.
//!
//! A durable broker's reader threads (storage::fetch) run at a lower
//! scheduling priority ([`lower_thread_priority`]): a subscriber catching up
//! from disk should take the CPU the loop and other clients leave, not
//! theirs.
//!
//! These are the crate's only foreign calls, and so its only `unsafe`
//! blocks: the crate root denies `unsafe_code`, and the four allows below
//! (`malloc_trim`, `rlimit_nofile`, `unsent_in_kernel`,
//! `lower_thread_priority`) are the only exceptions.

/// Lowers the calling thread's scheduling priority to the lowest (nice 19),
/// where supported; best effort (a refusal leaves it as it was).
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub fn lower_thread_priority() {
    // SAFETY: setpriority takes no pointers. On Linux, PRIO_PROCESS with
    // who = 0 names the calling thread alone (nice values are per thread),
    // so no other thread of the broker is affected.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 19);
    }
}

/// Elsewhere threads keep their priority.
#[cfg(not(target_os = "linux"))]
pub fn lower_thread_priority() {}

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

/// Bytes written to a socket that the kernel has not yet had acknowledged
/// by the peer (`TIOCOUTQ`, as `ss` shows in Send-Q); `None` where unknown.
///
/// The third exception to `deny(unsafe_code)`: `ioctl`, for which std has
/// no wrapper.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub fn unsent_in_kernel(socket: &impl std::os::fd::AsRawFd) -> Option<usize> {
    let mut queued: libc::c_int = 0;
    // SAFETY: TIOCOUTQ writes one `c_int` through the pointer, which points
    // at a live local for the duration of the call; the descriptor is owned
    // by `socket`, borrowed for the call, so it stays open.
    let status = unsafe { libc::ioctl(socket.as_raw_fd(), libc::TIOCOUTQ, &mut queued) };
    (status == 0)
        .then(|| usize::try_from(queued).ok())
        .flatten()
}

/// Elsewhere the kernel's queue is not read: writes alone count as progress.
#[cfg(not(target_os = "linux"))]
pub fn unsent_in_kernel(_socket: &impl std::os::fd::AsRawFd) -> Option<usize> {
    None
}
