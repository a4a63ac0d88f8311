//! Helpers shared by the storage tests: a log over a simulated disk, sample
//! records of every kind, and a tiny seeded generator for schedules.

#![allow(dead_code)]

pub mod node;

use bytes::Bytes;
use courier::storage::{
    Config, Event, Log, Loss, OpenError, ProducerStamp, Record, RecoveryMode, RecoveryReport,
    SessionEnd, SimFs, SyncMode, WriterKind,
};
use std::path::Path;
use std::sync::Arc;

pub const DIR: &str = "/data";

pub fn dir() -> &'static Path {
    Path::new(DIR)
}

/// Deterministic: the writer runs inside `flush`.
pub fn inline(segment_bytes: u64) -> Config {
    Config {
        sync: SyncMode::Always,
        segment_bytes,
        recovery: RecoveryMode::Strict,
        writer: WriterKind::Inline,
    }
}

/// What one open recovered.
pub struct Opened {
    pub log: Log,
    pub replayed: Vec<(u64, Record)>,
    pub report: RecoveryReport,
}

pub fn open(fs: &SimFs, config: Config) -> Result<Opened, OpenError> {
    let mut replayed = Vec::new();
    let (log, report) = Log::open(
        Arc::new(fs.clone()),
        dir(),
        config,
        Box::new(|| {}),
        |seq, r| replayed.push((seq, r)),
    )?;
    Ok(Opened {
        log,
        replayed,
        report,
    })
}

pub fn message(topic: u64, offset: u64, text: &str) -> Record {
    Record::Messages {
        topic,
        first_offset: offset,
        timestamp_ms: 1_700_000_000_000 + offset,
        payloads: vec![Bytes::copy_from_slice(text.as_bytes())],
        producer: None,
    }
}

/// One record of every kind, with a batch of several payloads.
pub fn every_kind() -> Vec<Record> {
    vec![
        Record::TopicCreated {
            topic: 1,
            name: "orders/ü".into(),
        },
        Record::SessionCreated {
            session: 0xdead_beef,
            timeout_ms: None,
            owner: None,
        },
        Record::SessionCreated {
            session: 0xfeed,
            timeout_ms: Some(7 * 24 * 3600 * 1000),
            owner: None,
        },
        Record::SessionCreated {
            session: 0xfeed_0001,
            timeout_ms: None,
            owner: Some("alice".into()),
        },
        Record::SessionCreated {
            session: 0xfeed_0002,
            timeout_ms: Some(60_000),
            owner: Some("bob".into()),
        },
        Record::Subscribed {
            session: 0xdead_beef,
            topic: 1,
            start_offset: 0,
        },
        Record::Messages {
            topic: 1,
            first_offset: 0,
            timestamp_ms: 1_700_000_000_123,
            payloads: vec![
                Bytes::from_static(b"first"),
                Bytes::new(),
                Bytes::from(vec![0xff; 300]),
            ],
            producer: None,
        },
        Record::Messages {
            topic: 1,
            first_offset: 3,
            timestamp_ms: 1_700_000_000_124,
            payloads: vec![Bytes::from_static(b"numbered")],
            producer: Some(ProducerStamp {
                producer: "orders-feed-ü".into(),
                first_seq: 41,
                subscribers: 2,
            }),
        },
        Record::TopicRetention {
            topic: 1,
            retain_ms: 86_400_000,
            retain_bytes: 0,
        },
        Record::Seeked {
            session: 0xdead_beef,
            topic: 1,
            offset: 1,
        },
        Record::ProducerState {
            topic: 1,
            producer: "orders-feed-ü".into(),
            last_seq: 41,
        },
        Record::Acked {
            session: 0xdead_beef,
            topic: 1,
            offset: 2,
        },
        Record::Unsubscribed {
            session: 0xdead_beef,
            topic: 1,
        },
        Record::SessionEnded {
            session: 0xdead_beef,
            reason: SessionEnd::Expired,
        },
        Record::SessionEnded {
            session: 7,
            reason: SessionEnd::Closed,
        },
        Record::TopicDeleted { topic: 1 },
    ]
}

/// Appends `records`, flushes, and returns the writer's reports.
pub fn commit(log: &mut Log, records: &[Record]) -> (Vec<u64>, Vec<Event>) {
    let seqs = records
        .iter()
        .map(|r| log.append(r).expect("record fits"))
        .collect();
    log.flush();
    (seqs, log.poll())
}

pub fn losses(events: &[Event]) -> Vec<Loss> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Lost(l) => Some(l.clone()),
            _ => None,
        })
        .collect()
}

/// xorshift64*, for schedules that a seed reproduces.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}
