//! What every bench message carries, and the clock its timestamps use.
//!
//! A payload starts with a fixed header — the publisher's index (`u32`), its
//! sequence number on that topic (`u64`) and the send time (`u64`
//! nanoseconds on the run's [`Clock`]), little-endian — followed by padding up
//! to `--size`. The header is all a subscriber needs to check order and loss
//! and to measure end-to-end latency; reading it costs no allocation.
//!
//! All clients live in this one process, so one `Instant` taken at start and
//! shared by every thread is a common time base: no wall clock, no clock
//! skew.
//!
//! [`Frames`] keeps one buffer of `--batch` payloads whose padding is written
//! once; each send only rewrites the headers.

use std::time::{Duration, Instant};

/// Bytes taken by the header; the smallest `--size` accepted.
pub const HEADER_LEN: usize = 4 + 8 + 8;

/// The header of one bench message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub publisher: u32,
    /// Per (publisher, topic), from 0, one more for each message issued.
    pub seq: u64,
    /// When it was sent (or, under a fixed rate, meant to be sent).
    pub sent_ns: u64,
}

impl Header {
    /// Writes the header over the start of `payload`, which must be at least
    /// [`HEADER_LEN`] long (the arguments guarantee it).
    pub fn write_to(self, payload: &mut [u8]) {
        if let Some(head) = payload.first_chunk_mut::<HEADER_LEN>() {
            head[..4].copy_from_slice(&self.publisher.to_le_bytes());
            head[4..12].copy_from_slice(&self.seq.to_le_bytes());
            head[12..].copy_from_slice(&self.sent_ns.to_le_bytes());
        }
    }

    /// The header of a payload, or `None` if it is too short to be ours.
    pub fn read(payload: &[u8]) -> Option<Header> {
        let head = payload.first_chunk::<HEADER_LEN>()?;
        let (publisher, rest) = head.split_first_chunk::<4>()?;
        let (seq, sent) = rest.split_first_chunk::<8>()?;
        Some(Header {
            publisher: u32::from_le_bytes(*publisher),
            seq: u64::from_le_bytes(*seq),
            sent_ns: u64::from_le_bytes(sent.first_chunk::<8>().copied()?),
        })
    }
}

/// The run's time base: nanoseconds since one shared `Instant`.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    epoch: Instant,
}

impl Clock {
    pub fn new() -> Clock {
        Clock {
            epoch: Instant::now(),
        }
    }

    pub fn now_ns(&self) -> u64 {
        self.ns_at(Instant::now())
    }

    pub fn ns_at(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    pub fn instant(&self, ns: u64) -> Instant {
        self.epoch + Duration::from_nanos(ns)
    }
}

/// `count` payloads of `size` bytes in one buffer, padding written once.
pub struct Frames {
    buf: Vec<u8>,
    size: usize,
}

impl Frames {
    pub fn new(size: usize, count: usize) -> Frames {
        let size = size.max(HEADER_LEN);
        // Recognisable padding rather than zeros, so a payload cut short or
        // shifted shows in a dump.
        let buf = (0..size * count.max(1))
            .map(|i| b'a' + (i % 26) as u8)
            .collect();
        Frames { buf, size }
    }

    /// Stamps `n` payloads with consecutive sequence numbers from
    /// `first_seq` and returns them (`n` is at most the count given to
    /// [`Frames::new`]).
    pub fn stamp(&mut self, n: usize, publisher: u32, first_seq: u64, sent_ns: u64) -> Vec<&[u8]> {
        for (seq, payload) in (first_seq..).zip(self.buf.chunks_exact_mut(self.size).take(n)) {
            Header {
                publisher,
                seq,
                sent_ns,
            }
            .write_to(payload);
        }
        self.buf.chunks_exact(self.size).take(n).collect()
    }

    /// Stamps and returns the first payload alone (the single-publish path,
    /// which allocates nothing).
    pub fn stamp_one(&mut self, publisher: u32, seq: u64, sent_ns: u64) -> &[u8] {
        let payload = self.buf.get_mut(..self.size).unwrap_or_default();
        Header {
            publisher,
            seq,
            sent_ns,
        }
        .write_to(payload);
        payload
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_short_payloads_are_refused() {
        let header = Header {
            publisher: 7,
            seq: u64::MAX - 1,
            sent_ns: 123_456_789,
        };
        let mut payload = vec![0u8; 64];
        header.write_to(&mut payload);
        assert_eq!(Header::read(&payload), Some(header));
        assert_eq!(Header::read(&payload[..HEADER_LEN - 1]), None);
    }

    #[test]
    fn frames_stamp_consecutive_sequence_numbers() {
        let mut frames = Frames::new(32, 4);
        let payloads = frames.stamp(3, 2, 10, 99);
        assert_eq!(payloads.len(), 3);
        let seqs: Vec<u64> = payloads
            .iter()
            .map(|p| Header::read(p).map(|h| h.seq).unwrap_or(0))
            .collect();
        assert_eq!(seqs, [10, 11, 12]);
        assert!(payloads.iter().all(|p| p.len() == 32));
        assert_eq!(
            Header::read(frames.stamp_one(1, 5, 6)).map(|h| h.seq),
            Some(5)
        );
    }
}
