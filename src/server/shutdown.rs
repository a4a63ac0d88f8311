//! Stopping: the handle that asks a loop to stop from any thread, and the
//! drain the loop runs before `run` returns.
//!
//! The handle is a flag plus a `mio::Waker`: the flag is the request, the
//! wake only cuts the loop's sleep short, so a failed wake delays the stop
//! to the next timer (at most the housekeeping second) but never loses it.
//!
//! The drain runs in two steps, both within one `shutdown_grace`:
//!
//! 1. **Settle.** Nothing more is read or accepted. What the round handed
//!    the log's writer is written and synced as usual, and the replies that
//!    waited for it (publishes, gated requests) are answered with their
//!    real result — success once durable, `STORAGE_UNAVAILABLE` if lost —
//!    so a clean stop turns no durable publish into an unknown outcome.
//! 2. **Tell and close.** Every waiting pull is answered `SHUTTING_DOWN`
//!    (the broker's shutdown), every other client gets `SHUTTING_DOWN` with
//!    id 0 after its last reply, and the output is flushed, polling only
//!    for writability, until it is sent or the grace is over.
//!
//! Requests still unread, unexecuted (behind a paused connection's output)
//! or held for room get no reply: none of them was stored. Replies still
//! waiting for the disk when the grace runs out get none either: their
//! outcome is unknown, as after a crash.

use super::event_loop::EventLoop;
use super::token_of;
use crate::protocol::ErrorCode;
use mio::{Events, Poll, Registry, Token, Waker};
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Asks a running server to stop, from any thread.
#[derive(Clone)]
pub struct ShutdownHandle {
    flag: Arc<AtomicBool>,
    waker: Arc<Waker>,
}

impl ShutdownHandle {
    pub(super) fn new(registry: &Registry, token: Token) -> io::Result<Self> {
        Ok(ShutdownHandle {
            flag: Arc::new(AtomicBool::new(false)),
            waker: Arc::new(Waker::new(registry, token)?),
        })
    }

    /// The loop's waker, which the log's writer also uses.
    pub(super) fn waker(&self) -> Arc<Waker> {
        self.waker.clone()
    }

    pub fn shutdown(&self) {
        self.request();
        // If the wake fails the loop still sees the flag at its next timer.
        let _ = self.waker.wake();
    }

    /// Sets the flag without waking: for the loop itself (on a signal).
    pub(super) fn request(&self) {
        self.flag.store(true, Ordering::SeqCst);
    }

    pub(super) fn is_requested(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }
}

impl EventLoop {
    /// Stops accepting and reading, lets the disk settle what it was
    /// given, then tells every client and flushes; all within the grace.
    pub(super) fn drain_for_shutdown(mut self) -> io::Result<()> {
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        let deadline = Instant::now() + self.config.shutdown_grace;
        let mut events = Events::with_capacity(1024);
        self.settle(deadline, &mut events)?;
        let (mut outbox, broker) = self.outbox();
        broker.shutdown(&mut outbox);
        // Connections whose waiting pull was just answered are closing;
        // every other one is told with id 0.
        for key in self.table.open_keys() {
            let (mut outbox, broker) = self.outbox();
            broker.send_error(
                key,
                0,
                ErrorCode::ShuttingDown,
                "the broker is shutting down",
                &mut outbox,
            );
        }
        // Every connection is now closing: each goes once its output is
        // sent (nothing is read any more to add to it).
        self.table.take_closing();
        let mut unflushed = self.table.keys();
        loop {
            for key in std::mem::take(&mut unflushed) {
                let Some(connection) = self.table.get_mut(key) else {
                    continue;
                };
                match connection.flush(&mut self.pool, Instant::now()) {
                    Ok(false) => {
                        unflushed.push(key);
                        if let Some(interest) = connection.interest_change() {
                            let _ = self.poll.registry().reregister(
                                &mut connection.socket,
                                token_of(key),
                                interest,
                            );
                        }
                    }
                    _ => self.remove(key, Instant::now()),
                }
            }
            let now = Instant::now();
            if unflushed.is_empty() || now >= deadline {
                break;
            }
            poll_until(&mut self.poll, &mut events, deadline - now)?;
        }
        if !unflushed.is_empty() {
            log::warn!(
                "{} connections still had unsent replies at the end of the grace period",
                unflushed.len()
            );
        }
        Ok(())
    }

    /// Step 1: hands the log what is pending and waits — reading nothing —
    /// until no reply waits for the disk, applying the writer's reports and
    /// flushing the replies they release as they come.
    fn settle(&mut self, deadline: Instant, events: &mut Events) -> io::Result<()> {
        loop {
            let now = Instant::now();
            let (mut outbox, broker) = self.outbox();
            broker.poll_journal(&mut outbox);
            broker.answer_ready(&mut outbox);
            broker.flush_journal();
            self.flush_dirty(now);
            if !self.broker.awaits_disk() {
                return Ok(());
            }
            if now >= deadline {
                log::warn!(
                    "replies still waited for the disk at the end of the grace period; \
                     their outcome is unknown to their clients"
                );
                return Ok(());
            }
            // The writer's wake, or a socket taking more output.
            poll_until(&mut self.poll, events, deadline - now)?;
        }
    }
}

/// One poll of at most `timeout`; an interrupted poll is an empty one.
fn poll_until(poll: &mut Poll, events: &mut Events, timeout: Duration) -> io::Result<()> {
    match poll.poll(events, Some(timeout)) {
        Err(e) if e.kind() != io::ErrorKind::Interrupted => Err(e),
        _ => Ok(()),
    }
}
