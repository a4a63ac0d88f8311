//! Courier: a single-threaded publish/subscribe message broker.
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
//! - [`connection`]: one client's socket with its own read and write buffers.
//! - [`server`]: the mio poll loop — the only module that knows mio — with
//!   the listener, the slab of connections, timers and shutdown.
//! - [`timers`]: deadlines kept in order, for waiting pulls, session expiry
//!   and connection timeouts.
//! - [`client`]: a blocking client over `std::net`, used by the commands and
//!   the bench tool.
//! - [`log`]: levelled, rate-limited logging to stderr.
//! - [`memory`]: returning freed memory to the operating system.
//! - `testing` (hidden): support shared by the property tests and the fuzz
//!   targets — sample values, codec checks, a broker harness.

pub mod broker;
pub mod client;
pub mod codec;
pub mod connection;
pub mod log;
pub mod memory;
pub mod protocol;
pub mod server;
#[doc(hidden)]
pub mod testing;
pub mod timers;

pub use client::Client;
pub use protocol::{ErrorCode, PROTOCOL_VERSION};
pub use server::{Config, Server, ShutdownHandle};
