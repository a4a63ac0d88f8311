//! Courier: a single-threaded publish/subscribe message broker.
//!
//! No `unsafe` anywhere (denied below) except the few documented foreign
//! calls in [`os`].
//!
//! # Layout
//!
//! Data flows one way: socket bytes → [`connection`] → [`codec`] → request →
//! [`broker`] → reply → [`codec`] → [`connection`] → socket.
//!
//! - [`protocol`]: operation and error codes, requests, replies, limits —
//!   shared by the broker and the client. PROTOCOL.md is its prose twin.
//! - [`codec`]: length-prefixed frames and their contents as bytes; no I/O.
//!   Split by job: `codec::msgpack` (the MessagePack subset, on `rmp`,
//!   strict and borrowing), frames, requests, replies, and the pull reply
//!   the broker writes piecewise.
//! - [`broker`]: the state — topics and their retained messages addressed by
//!   offset, subscriber sessions and their cursors, waiting pulls. Knows no
//!   sockets: it reads decoded requests and appends encoded replies to
//!   per-connection buffers, so it can be tested alone.
//! - [`auth`]: users, tokens (stored as SHA-256) and per-topic grants,
//!   the users file, and the one permission table keyed by operation.
//! - [`budget`]: the one memory budget, counted by class, that the broker's
//!   state and the connections' buffers share.
//! - [`connection`]: one client's socket with its own read and write buffers.
//! - [`server`]: the mio poll loop — with [`connection`], the only code that
//!   knows mio. Split by job: `server/mod.rs` (config, bind, spawn),
//!   `event_loop.rs` (poll, accept, read, execute, flush, close), `table.rs`
//!   (the slab and the flush/close lists), `guards.rs` (handshake and
//!   partial-frame timeouts, housekeeping), `shutdown.rs` (the handle and
//!   the drain).
//! - [`storage`]: the durable log — segments of checksummed records, a
//!   writer thread with group commit, recovery. STORAGE.md is its prose twin.
//! - [`tls`]: TLS configuration for the broker and the client (rustls);
//!   the record layer runs in [`connection`] and the client's socket.
//!   writer thread with group commit, recovery, and reader threads that
//!   read old messages back for subscribers behind the memory cache.
//!   STORAGE.md is its prose twin.
//! - [`timers`]: deadlines kept in order, for waiting pulls, session expiry
//!   and connection timeouts.
//! - [`client`]: a blocking client over `std::net`, used by the commands and
//!   the bench tool.
//! - [`logging`]: logging through the `log` facade (the binaries install the
//!   backend; the library never writes to stderr), and [`log_limited!`] for
//!   lines a client can cause at will.
//! - [`os`]: the calls into the operating system that std does not offer —
//!   returning freed memory, the descriptor limit, a socket's send queue.
//! - `testing` (hidden, behind the `testing` cargo feature): support shared
//!   by the property tests and the fuzz targets — sample values, codec
//!   checks, a broker harness. `cargo test` turns the feature on by itself.

#![deny(unsafe_code)]

pub mod auth;
pub mod broker;
pub mod budget;
pub mod client;
pub mod codec;
pub mod connection;
pub mod logging;
pub mod os;
pub mod protocol;
pub mod server;
pub mod storage;
#[cfg(any(test, feature = "testing"))]
#[doc(hidden)]
pub mod testing;
pub mod timers;
pub mod tls;

pub use client::Client;
pub use protocol::{ErrorCode, PROTOCOL_VERSION};
pub use server::{Config, Server, ShutdownHandle, Storage};
