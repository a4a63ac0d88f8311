//! What the fuzz targets share beyond `courier::testing`: the broker that
//! `broker_frames` drives.
//!
//! A fuzz target only finds what panics, so every target checks more than
//! "no panic": a request or reply that decodes must survive re-encoding, and
//! the broker may write only whole, well-formed reply frames within
//! `max_frame_bytes`, and must hold nothing once every client is gone. Those
//! checks, and the harness that drives the broker the way the server does,
//! live in courier's `src/testing.rs`, where `tests/properties.rs` makes the
//! same ones over generated input on every `cargo test`.

use courier::broker::Limits;
use courier::testing::{Harness, Track};
use std::time::{Duration, Instant};

/// Connections the broker target drives.
pub const CONNS: usize = 3;

/// Small bounds, so that short inputs reach them.
pub fn limits() -> Limits {
    Limits {
        max_frame_bytes: 2048,
        max_backlog_bytes: 4096,
        max_backlog_messages: 16,
        max_topics: 3,
        max_subscribers_per_topic: 2,
        session_timeout: Duration::from_millis(200),
    }
}

/// A broker under [`limits`] with [`CONNS`] connections open and past their
/// HELLO. It does not tie replies to requests ([`Track::Nothing`]): the
/// input picks its request ids, and the fuzzer soon sends two with one id.
pub fn harness() -> Harness {
    Harness::new(limits(), CONNS, Instant::now(), Track::Nothing)
}
