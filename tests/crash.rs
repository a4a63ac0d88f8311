//! Kill -9 loses nothing acknowledged: the real broker binary on a data
//! directory, publishers pipelining into several topics and a subscriber
//! pulling and acknowledging, the broker SIGKILLed with publishes in flight
//! and restarted on the same directory, cycle after cycle.
//!
//! What is asserted, over every cycle:
//! - every publish that was answered is delivered after the restarts, at
//!   least once, with its payload intact;
//! - per topic, the offsets delivered on one connection are consecutive, and
//!   together all deliveries cover 0..end with no gap, each offset always
//!   with the same payload;
//! - after a restart the subscriber resumes no earlier than its last
//!   acknowledgement known durable (an ack is known durable once a publish
//!   sent after its reply was answered: one log, in order), so duplicates
//!   are only what it had not acknowledged.
//!
//! Bounded: a fixed number of cycles and of publishes per cycle.

mod common;

use common::{BrokerProcess, Raw, Rng, messages, pull, temp_dir};
use courier::protocol::{Op, Reply, Request};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

const TOPICS: [&str; 3] = ["c0", "c1", "c2"];
const PUBLISHERS: usize = 2;
const CYCLES: usize = 22;
/// Publishes each publisher pipelines per stage (two stages per cycle).
const PER_STAGE: usize = 40;

/// The payload of publish `n` of publisher `p`: its own description, padded
/// with bytes derived from it, so any damage shows.
fn payload(p: usize, n: u64) -> Vec<u8> {
    let mut bytes = format!("{p}:{n}:").into_bytes();
    let len = 16 + (n % 50) as usize;
    bytes.extend((0..len).map(|i| (i as u64 * 31 + n + p as u64) as u8));
    bytes
}

fn check_payload(bytes: &[u8]) -> bool {
    let text = String::from_utf8_lossy(bytes);
    let mut parts = text.splitn(3, ':');
    let (Some(p), Some(n)) = (parts.next(), parts.next()) else {
        return false;
    };
    match (p.parse(), n.parse()) {
        (Ok(p), Ok(n)) => payload(p, n) == bytes,
        _ => false,
    }
}

fn start(dir: &Path) -> BrokerProcess {
    let dir = dir.to_str().expect("utf-8 path");
    BrokerProcess::start(&["--data-dir", dir, "--log-level", "off"])
}

struct Publisher {
    raw: Raw,
    index: usize,
    /// Request id → (topic, payload, sent after the ack), for publishes not
    /// yet answered.
    in_flight: HashMap<u64, (usize, Vec<u8>, bool)>,
}

impl Publisher {
    fn send(&mut self, next: &mut u64, count: usize, after_ack: bool) {
        for _ in 0..count {
            let n = *next;
            *next += 1;
            let topic = (n as usize + self.index) % TOPICS.len();
            let payload = payload(self.index, n);
            let id = self.raw.send(Request::Publish {
                topic: TOPICS[topic],
                payload: &payload,
            });
            self.in_flight.insert(id, (topic, payload, after_ack));
        }
    }
}

#[derive(Default)]
struct Ledger {
    /// (topic, offset) → payload, for every answered publish.
    acknowledged: BTreeMap<(usize, u64), Vec<u8>>,
    /// (topic, offset) → payload, for every delivery.
    delivered: BTreeMap<(usize, u64), Vec<u8>>,
    /// Per topic, the acknowledged offset known durable.
    durable_ack: [u64; TOPICS.len()],
}

impl Ledger {
    /// Records one pull's messages; `next` holds, per topic, the offset
    /// the connection expects next (None before its first delivery).
    fn take(&mut self, got: Vec<(String, u64, Vec<u8>)>, next: &mut [Option<u64>]) {
        for (name, offset, bytes) in got {
            let topic = TOPICS.iter().position(|t| *t == name).expect("known topic");
            assert!(check_payload(&bytes), "corrupt payload at {name}@{offset}");
            if let Some(expected) = next[topic] {
                assert_eq!(offset, expected, "{name}: offsets out of order or gap");
            } else {
                assert!(
                    offset >= self.durable_ack[topic],
                    "{name}: resumed at {offset}, below the durable ack {}",
                    self.durable_ack[topic]
                );
            }
            next[topic] = Some(offset + 1);
            if let Some(previous) = self.delivered.insert((topic, offset), bytes.clone()) {
                assert_eq!(previous, bytes, "{name}@{offset} changed payload");
            }
        }
    }
}

#[test]
fn kill_9_loses_no_acknowledged_publish() {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    eprintln!("crash test seed {seed}");
    let mut rng = Rng(seed);
    let dir = temp_dir("crash");
    let mut ledger = Ledger::default();
    let mut session = None;
    let mut next_n = [0u64; PUBLISHERS];
    for cycle in 0..=CYCLES {
        let mut broker = start(&dir);
        let mut admin = Raw::publisher(broker.addr);
        for topic in TOPICS {
            let _ = admin.call(Request::CreateTopic { topic });
        }
        let mut subscriber = Raw::hello(broker.addr);
        match session {
            None => {
                let reply = subscriber.ok(Request::RegisterSubscriber {
                    resume: None,
                    timeout_ms: None,
                });
                let Reply::SubscriberRegistered { subscriber_id, .. } = reply else {
                    panic!("{reply:?}")
                };
                for topic in TOPICS {
                    subscriber.ok(Request::Subscribe { topic });
                }
                session = Some(subscriber_id);
            }
            Some(id) => {
                subscriber.ok(Request::RegisterSubscriber {
                    resume: Some(id),
                    timeout_ms: None,
                });
            }
        }
        let mut next = [None; TOPICS.len()];
        if cycle == CYCLES {
            // The last start: drain everything and stop cleanly.
            loop {
                let got = messages(subscriber.call(pull(None, 1000, 0, true)));
                if got.is_empty() {
                    break;
                }
                ledger.take(got, &mut next);
            }
            break;
        }
        let mut publishers: Vec<Publisher> = (0..PUBLISHERS)
            .map(|index| Publisher {
                raw: Raw::publisher(broker.addr),
                index,
                in_flight: HashMap::new(),
            })
            .collect();
        for (p, publisher) in publishers.iter_mut().enumerate() {
            publisher.send(&mut next_n[p], PER_STAGE, false);
        }
        // The subscriber pulls and acknowledges while those are stored.
        for _ in 0..1 + rng.below(3) {
            let got = messages(subscriber.call(pull(None, 50, 20, true)));
            ledger.take(got, &mut next);
        }
        let mut acked_now = ledger.durable_ack;
        for (t, topic) in TOPICS.iter().enumerate() {
            if let Some(offset) = next[t] {
                subscriber.ok(Request::Ack { topic, offset });
                acked_now[t] = offset;
            }
        }
        for (p, publisher) in publishers.iter_mut().enumerate() {
            publisher.send(&mut next_n[p], PER_STAGE, true);
        }
        // Read a random share of the replies, then kill with the rest in
        // flight.
        let total = PUBLISHERS * 2 * PER_STAGE;
        let to_read = rng.below(total as u64 - 1) as usize;
        let mut answered_late = false;
        for i in 0..to_read {
            let publisher = &mut publishers[i % PUBLISHERS];
            if publisher.in_flight.is_empty() {
                continue;
            }
            let (id, reply) = publisher.raw.recv(Op::Publish);
            let (topic, bytes, after_ack) = publisher
                .in_flight
                .remove(&id)
                .expect("a reply per request");
            let Ok(Reply::Published { offset, .. }) = reply else {
                panic!("publish refused: {reply:?}")
            };
            answered_late |= after_ack;
            ledger.acknowledged.insert((topic, offset), bytes);
        }
        let in_flight: usize = publishers.iter().map(|p| p.in_flight.len()).sum();
        assert!(
            in_flight > 0,
            "cycle {cycle}: nothing in flight at the kill"
        );
        broker.child.kill().expect("SIGKILL");
        broker.child.wait().expect("reaped");
        // A publish sent after the acks' replies was answered: the acks
        // (and every earlier record) are durable.
        if answered_late {
            ledger.durable_ack = acked_now;
        }
    }
    // Every acknowledged publish was delivered, intact.
    for ((topic, offset), bytes) in &ledger.acknowledged {
        assert_eq!(
            ledger.delivered.get(&(*topic, *offset)),
            Some(bytes),
            "acknowledged {}@{offset} not delivered",
            TOPICS[*topic]
        );
    }
    // No gap: each topic's deliveries cover 0..end.
    for (t, name) in TOPICS.iter().enumerate() {
        let offsets: Vec<u64> = ledger
            .delivered
            .range((t, 0)..(t + 1, 0))
            .map(|(&(_, o), _)| o)
            .collect();
        let expected: Vec<u64> = (0..offsets.len() as u64).collect();
        assert_eq!(offsets, expected, "{name}: a gap in the delivered offsets");
    }
    eprintln!(
        "{CYCLES} kills: {} publishes acknowledged, {} offsets delivered",
        ledger.acknowledged.len(),
        ledger.delivered.len()
    );
    assert!(
        ledger.acknowledged.len() > CYCLES,
        "too few publishes answered"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
