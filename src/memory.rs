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

/// Returns free heap pages to the operating system, where supported.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        unsafe extern "C" {
            fn malloc_trim(pad: usize) -> i32;
        }
        // SAFETY: malloc_trim only walks the allocator's own free lists; it
        // takes no pointers from us and is safe to call at any time from the
        // thread that owns the state (glibc locks its arenas itself).
        unsafe {
            malloc_trim(0);
        }
    }
}
