//! Power loss at broker level: the broker state machine and the storage log
//! on a simulated disk (`SimFs`, which keeps unsynced bytes apart and keeps
//! only a random prefix of them at a cut), driven through many seeded
//! schedules of publishes, pulls, acks, injected write and sync failures, and
//! power cuts, each followed by recovery into a fresh broker.
//!
//! Asserted after every recovery: every publish that was answered is still
//! there — delivered before the cut or after it, with its payload — every
//! SUBSCRIBE that was answered survives, no offset an acknowledged publish
//! had is given again, and a publish answered STORAGE_UNAVAILABLE never
//! shows. A failing seed is printed and replays alone.

mod common;
mod storage_support;

use bytes::Bytes;
use common::Rng;
use courier::protocol::{ErrorCode, Op, Pull, Reply, Request};
use courier::storage::SimFs;
use std::collections::{BTreeMap, BTreeSet};
use storage_support::node::{Answer, PUBLISHER, SUBSCRIBER, open};

const TOPICS: [&str; 2] = ["p0", "p1"];

fn pull_all() -> Request<'static> {
    Request::Pull(Pull {
        topic: None,
        max_messages: 10_000,
        max_bytes: u32::MAX,
        wait_ms: 0,
        ack: true,
    })
}

#[derive(Default)]
struct Truth {
    /// (topic, offset) → payload of every answered publish.
    acknowledged: BTreeMap<(usize, u64), Bytes>,
    /// Payloads answered STORAGE_UNAVAILABLE.
    refused: BTreeSet<Bytes>,
    delivered: BTreeMap<(usize, u64), Bytes>,
    subscribed: BTreeSet<usize>,
    session: Option<u64>,
    refusals: u64,
}

impl Truth {
    fn absorb(&mut self, replies: Vec<Answer>) {
        for (_, op, carried, reply) in replies {
            match (op, reply) {
                (Op::Publish, Ok(Reply::Published { offset, .. })) => {
                    let (topic, payload) = carried.expect("publish carries");
                    self.acknowledged.insert((topic, offset), payload);
                }
                (Op::Publish, Err(ErrorCode::StorageUnavailable)) => {
                    let (_, payload) = carried.expect("publish carries");
                    self.refused.insert(payload);
                    self.refusals += 1;
                }
                (Op::Subscribe, Ok(Reply::Subscribed { .. })) => {
                    let (topic, _) = carried.expect("subscribe carries");
                    self.subscribed.insert(topic);
                }
                (Op::RegisterSubscriber, Ok(Reply::SubscriberRegistered { subscriber_id, .. })) => {
                    self.session = Some(subscriber_id);
                }
                (Op::Pull, Ok(Reply::Messages(groups))) => {
                    for group in groups {
                        let topic = TOPICS
                            .iter()
                            .position(|t| *t == group.topic)
                            .expect("topic");
                        for (i, payload) in group.payloads.into_iter().enumerate() {
                            let offset = group.first_offset + i as u64;
                            let payload = Bytes::from(payload.to_vec());
                            assert!(
                                !self.refused.contains(&payload),
                                "a publish answered STORAGE_UNAVAILABLE was delivered"
                            );
                            if let Some(old) =
                                self.delivered.insert((topic, offset), payload.clone())
                            {
                                assert_eq!(old, payload, "offset {offset} changed payload");
                            }
                        }
                    }
                }
                (_, Err(ErrorCode::StorageUnavailable)) => self.refusals += 1,
                _ => {}
            }
        }
    }
}

/// One schedule; returns (publishes acknowledged, requests refused
/// STORAGE_UNAVAILABLE, log segments released by checkpoints).
fn schedule(seed: u64) -> (usize, u64, u64) {
    let mut rng = Rng(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1);
    let fs = SimFs::new(seed);
    let mut truth = Truth::default();
    let mut n = 0u64;
    let mut released = 0;
    for cut in 0..4 {
        let (mut node, _) = open(&fs);
        for topic in TOPICS {
            node.send(PUBLISHER, &Request::CreateTopic { topic }, None);
        }
        match truth.session {
            Some(id) => node.send(
                SUBSCRIBER,
                &Request::RegisterSubscriber {
                    resume: Some(id),
                    timeout_ms: None,
                },
                None,
            ),
            None => node.send(
                SUBSCRIBER,
                &Request::RegisterSubscriber {
                    resume: None,
                    timeout_ms: None,
                },
                None,
            ),
        }
        let replies = node.round();
        let resumed = replies.iter().find_map(|(_, op, _, r)| match (op, r) {
            (Op::RegisterSubscriber, Ok(Reply::SubscriberRegistered { topics, .. })) => {
                Some(topics.clone())
            }
            _ => None,
        });
        if truth.session.is_some() {
            let topics = resumed.clone().expect("an answered session survives");
            for &t in &truth.subscribed {
                assert!(
                    topics.contains(&TOPICS[t].to_string()),
                    "seed {seed}: subscription lost"
                );
            }
        }
        truth.absorb(replies);
        for (t, topic) in TOPICS.iter().enumerate() {
            if !truth.subscribed.contains(&t) {
                node.send(
                    SUBSCRIBER,
                    &Request::Subscribe { topic },
                    Some((t, Bytes::new())),
                );
            }
        }
        let replies = node.round();
        truth.absorb(replies);
        // Everything acknowledged and not yet delivered must come now. A
        // reply stops at a gap (a lost write's offsets), so pull until a
        // reply brings nothing.
        for _ in 0..1000 {
            node.send(SUBSCRIBER, &pull_all(), None);
            let replies = node.round();
            let empty = replies.iter().all(|(_, op, _, r)| {
                *op != Op::Pull || matches!(r, Ok(Reply::Messages(g)) if g.is_empty())
            });
            truth.absorb(replies);
            if empty {
                break;
            }
        }
        if cut > 0 {
            for (key, payload) in &truth.acknowledged {
                if truth.subscribed.contains(&key.0) {
                    assert_eq!(
                        truth.delivered.get(key),
                        Some(payload),
                        "seed {seed}: acknowledged {}@{} lost",
                        TOPICS[key.0],
                        key.1
                    );
                }
            }
        }
        let rounds = 1 + rng.below(12);
        for _ in 0..rounds {
            match rng.below(10) {
                0 => fs.fail_syncs(1),
                1 => fs.fail_writes(1),
                _ => {}
            }
            for _ in 0..rng.below(8) {
                let t = rng.below(TOPICS.len() as u64) as usize;
                let payload = Bytes::from(format!("{seed}:{n}"));
                n += 1;
                node.send(
                    PUBLISHER,
                    &Request::Publish {
                        topic: TOPICS[t],
                        payload: &payload,
                    },
                    Some((t, payload.clone())),
                );
            }
            if rng.below(3) == 0 {
                node.send(SUBSCRIBER, &pull_all(), None);
            }
            let replies = node.round();
            truth.absorb(replies);
        }
        // A cut, maybe in the middle of the writer's operations.
        node.send(
            PUBLISHER,
            &Request::Publish {
                topic: TOPICS[0],
                payload: b"in flight",
            },
            None,
        );
        fs.crash_after(rng.below(3));
        node.broker.flush_journal();
        released += node.broker.segments_released();
        drop(node);
        // Injected failures not used yet must not outlive the cut.
        fs.fail_syncs(0);
        fs.fail_writes(0);
        fs.power_cut();
    }
    assert!(
        !truth.acknowledged.is_empty(),
        "seed {seed}: nothing acknowledged"
    );
    // Offsets of acknowledged publishes are never given again.
    let by_offset: BTreeSet<(usize, u64)> = truth.acknowledged.keys().copied().collect();
    assert_eq!(by_offset.len(), truth.acknowledged.len());
    (truth.acknowledged.len(), truth.refusals, released)
}

#[test]
fn nothing_acknowledged_is_lost_across_power_cuts() {
    let base = std::env::var("POWER_LOSS_SEED")
        .ok()
        .and_then(|s| s.parse().ok());
    let seeds: Vec<u64> = match base {
        Some(seed) => vec![seed],
        None => (1..=200).collect(),
    };
    let (mut acknowledged, mut refusals, mut released) = (0, 0, 0);
    for seed in seeds {
        match std::panic::catch_unwind(|| schedule(seed)) {
            Ok((a, r, s)) => {
                acknowledged += a;
                refusals += r;
                released += s;
            }
            Err(_) => panic!("power-loss schedule failed; replay with POWER_LOSS_SEED={seed}"),
        }
    }
    eprintln!(
        "{acknowledged} publishes acknowledged, {refusals} refused STORAGE_UNAVAILABLE, {released} segments released"
    );
    assert!(refusals > 0, "no injected failure was ever reported");
    if base.is_none() {
        // Checkpoints and releases, with cuts among them, are exercised.
        assert!(released > 0, "no segment was ever released");
    }
}
