//! Giving freed memory back to the operating system.
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
//! This is the crate's one foreign call, and so its one `unsafe` block: the
//! crate root denies `unsafe_code`, and the allow below is the only exception.

/// Returns free heap pages to the operating system, where supported.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    malloc_trim();
}

/// The one exception to the crate's `deny(unsafe_code)`; see the SAFETY note.
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
