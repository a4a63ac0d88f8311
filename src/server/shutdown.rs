//! Stopping: the handle that asks a loop to stop from any thread, and the
//! drain the loop runs before `run` returns.
//!
//! The handle is a flag plus a `mio::Waker`: the flag is the request, the
//! wake only cuts the loop's sleep short, so a failed wake delays the stop
//! to the next timer (at most the housekeeping second) but never loses it.
//!
//! The drain stops accepting, answers every waiting pull (the broker's
//! shutdown), tells every other client `SHUTTING_DOWN` with id 0, and then
//! flushes for at most `shutdown_grace`, polling only for writability.

use super::event_loop::EventLoop;
use super::token_of;
use crate::protocol::ErrorCode;
use mio::{Events, Registry, Token, Waker};
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

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
    /// Stops accepting, answers waiting pulls, tells every client, and
    /// flushes for at most the grace period.
    pub(super) fn drain_for_shutdown(mut self) -> io::Result<()> {
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
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
        // SHUTTING_DOWN closes the connection, so every one is now listed
        // for closing after a flush; nothing is read any more to add others.
        let mut unflushed = self.table.take_closing();
        let deadline = Instant::now() + self.config.shutdown_grace;
        let mut events = Events::with_capacity(1024);
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
            match self.poll.poll(&mut events, Some(deadline - now)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if !unflushed.is_empty() {
            log::warn!(
                "{} connections still had unsent replies at the end of the grace period",
                unflushed.len()
            );
        }
        Ok(())
    }
}
