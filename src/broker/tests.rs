//! Unit tests of the state machine alone: frames in, decoded replies out.
//! The ones that count the work each request does are in `tests/work.rs`.

use super::*;
use crate::budget::Class;
use crate::codec::{decode_reply, encode_request, split_frame};
use crate::protocol::{ErrorReply, Op, Pull, TopicMessages};
use bytes::Bytes;
use std::collections::HashMap;

#[derive(Default)]
struct TestOutbox {
    buffers: HashMap<ConnId, Vec<u8>>,
    closed: Vec<ConnId>,
}

impl Outbox for TestOutbox {
    fn buffer(&mut self, conn: ConnId) -> Option<&mut Vec<u8>> {
        Some(self.buffers.entry(conn).or_default())
    }
    fn close(&mut self, conn: ConnId) {
        self.closed.push(conn);
    }
}

struct Harness {
    broker: Broker,
    out: TestOutbox,
    now: Instant,
    next_id: u64,
    /// Check the broker's indexes after every request (which costs the
    /// tables: tests with large tables turn it off and check once).
    check_indexes: bool,
}

impl Harness {
    fn new(limits: Limits) -> Self {
        let now = Instant::now();
        Harness {
            broker: Broker::new(limits, now),
            out: TestOutbox::default(),
            now,
            next_id: 1,
            check_indexes: true,
        }
    }

    fn connect(&mut self, conn: ConnId) {
        self.broker.connect(conn);
        let reply = self.call(
            conn,
            Request::Hello {
                version: crate::PROTOCOL_VERSION,
                client_name: "t",
                credentials: None,
            },
        );
        assert!(matches!(reply, Ok(Reply::Hello(_))));
    }

    fn send(&mut self, conn: ConnId, request: Request<'_>) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let mut frame = Vec::new();
        encode_request(&mut frame, id, &request);
        let (body, _) = split_frame(&frame, usize::MAX).unwrap().unwrap();
        self.broker
            .handle_frame(conn, body, self.now, &mut self.out);
        self.broker.answer_ready(&mut self.out);
        if self.check_indexes {
            self.broker.assert_indexes_consistent();
        }
        id
    }

    /// Every reply `conn` got so far, decoded assuming they answer `op`.
    fn replies(&mut self, conn: ConnId, op: Op) -> Vec<(u64, Result<Reply, ErrorReply>)> {
        let mut bytes = std::mem::take(self.out.buffers.entry(conn).or_default());
        let mut replies = Vec::new();
        while let Ok(Some((body, used))) = split_frame(&bytes, usize::MAX) {
            let body = Bytes::copy_from_slice(body);
            replies.push(decode_reply(op, &body).unwrap());
            bytes.drain(..used);
        }
        replies
    }

    fn call(&mut self, conn: ConnId, request: Request<'_>) -> Result<Reply, ErrorReply> {
        let op = request.op();
        let id = self.send(conn, request);
        let mut replies = self.replies(conn, op);
        assert_eq!(replies.len(), 1, "one reply expected");
        let (got, reply) = replies.remove(0);
        assert_eq!(got, id);
        reply
    }

    fn code(&mut self, conn: ConnId, request: Request<'_>) -> ErrorCode {
        self.call(conn, request).unwrap_err().code
    }
}

fn pull(topic: Option<&str>, wait_ms: u32, ack: bool) -> Request<'_> {
    Request::Pull(Pull {
        topic,
        max_messages: 1000,
        max_bytes: 1 << 20,
        wait_ms,
        ack,
    })
}

fn setup_pub_sub(h: &mut Harness) -> u64 {
    h.connect(0);
    h.connect(1);
    h.call(0, Request::RegisterPublisher).unwrap();
    h.call(0, Request::CreateTopic { topic: "t" }).unwrap();
    let Ok(Reply::SubscriberRegistered { subscriber_id, .. }) = h.call(
        1,
        Request::RegisterSubscriber {
            resume: None,
            timeout_ms: None,
        },
    ) else {
        panic!("register failed")
    };
    h.call(1, Request::Subscribe { topic: "t" }).unwrap();
    subscriber_id
}

fn payloads(reply: Result<Reply, ErrorReply>) -> Vec<(u64, Vec<u8>)> {
    let Ok(Reply::Messages(groups)) = reply else {
        panic!("not messages: {reply:?}")
    };
    groups
        .into_iter()
        .flat_map(
            |TopicMessages {
                 first_offset,
                 payloads,
                 ..
             }| {
                payloads
                    .into_iter()
                    .enumerate()
                    .map(move |(i, p)| (first_offset + i as u64, p.to_vec()))
            },
        )
        .collect()
}

#[test]
fn a_topic_without_subscribers_keeps_nothing() {
    let mut h = Harness::new(Limits::default());
    h.connect(0);
    h.call(0, Request::RegisterPublisher).unwrap();
    h.call(0, Request::CreateTopic { topic: "t" }).unwrap();
    let reply = h.call(
        0,
        Request::Publish {
            topic: "t",
            payload: b"x",
        },
    );
    assert_eq!(
        reply,
        Ok(Reply::Published {
            offset: 0,
            subscribers: 0
        })
    );
    assert_eq!(h.broker.stats(h.now).backlog_messages, 0);
}

#[test]
fn backlog_follows_the_slowest_acknowledgement_and_is_bounded() {
    // Refused at once, not held (the hold is tested in `tests/held.rs`).
    let mut h = Harness::new(Limits {
        max_backlog_messages: 3,
        publish_hold: Duration::ZERO,
        ..Limits::default()
    });
    setup_pub_sub(&mut h);
    for i in 0..3u8 {
        h.call(
            0,
            Request::Publish {
                topic: "t",
                payload: &[i],
            },
        )
        .unwrap();
    }
    assert_eq!(
        h.code(
            0,
            Request::Publish {
                topic: "t",
                payload: b"4"
            }
        ),
        ErrorCode::TopicFull
    );
    assert_eq!(payloads(h.call(1, pull(Some("t"), 0, false))).len(), 3);
    // Delivered is not acknowledged: still full.
    assert_eq!(
        h.code(
            0,
            Request::Publish {
                topic: "t",
                payload: b"4"
            }
        ),
        ErrorCode::TopicFull
    );
    h.call(
        1,
        Request::Ack {
            topic: "t",
            offset: 2,
        },
    )
    .unwrap();
    assert_eq!(h.broker.stats(h.now).backlog_messages, 1);
    assert_eq!(
        h.call(
            0,
            Request::Publish {
                topic: "t",
                payload: b"4"
            }
        ),
        Ok(Reply::Published {
            offset: 3,
            subscribers: 1
        })
    );
    assert_eq!(
        h.code(
            1,
            Request::Ack {
                topic: "t",
                offset: 9
            }
        ),
        ErrorCode::InvalidAck
    );
}

#[test]
fn a_parked_pull_wakes_once_per_batch_with_everything_that_arrived() {
    let mut h = Harness::new(Limits::default());
    setup_pub_sub(&mut h);
    let pull_id = h.send(1, pull(None, 10_000, false));
    assert!(h.replies(1, Op::Pull).is_empty());
    let mut scratch = Vec::new();
    let batch = crate::codec::encode_payloads(&mut scratch, &[b"a", b"b"]);
    h.call(
        0,
        Request::PublishBatch {
            topic: "t",
            payloads: batch,
        },
    )
    .unwrap();
    let mut replies = h.replies(1, Op::Pull);
    assert_eq!(replies.len(), 1);
    let (id, reply) = replies.remove(0);
    assert_eq!(id, pull_id);
    assert_eq!(
        payloads(reply),
        vec![(0, b"a".to_vec()), (1, b"b".to_vec())]
    );
}

#[test]
fn resume_redelivers_what_was_not_acknowledged_and_takes_the_session_over() {
    let mut h = Harness::new(Limits::default());
    let id = setup_pub_sub(&mut h);
    for p in [b"a", b"b", b"c"] {
        h.call(
            0,
            Request::Publish {
                topic: "t",
                payload: p,
            },
        )
        .unwrap();
    }
    assert_eq!(payloads(h.call(1, pull(None, 0, false))).len(), 3);
    h.call(
        1,
        Request::Ack {
            topic: "t",
            offset: 1,
        },
    )
    .unwrap();
    let parked = h.send(1, pull(None, 10_000, false));
    h.connect(2);
    let reply = h.call(
        2,
        Request::RegisterSubscriber {
            resume: Some(id),
            timeout_ms: None,
        },
    );
    assert_eq!(
        reply,
        Ok(Reply::SubscriberRegistered {
            subscriber_id: id,
            topics: vec!["t".into()],
            more: false,
        })
    );
    let old = h.replies(1, Op::Pull);
    assert_eq!(old.len(), 1);
    assert_eq!(old[0].0, parked);
    assert_eq!(
        old[0].1.as_ref().unwrap_err().code,
        ErrorCode::SessionTakenOver
    );
    assert_eq!(
        payloads(h.call(2, pull(None, 0, true))),
        vec![(1, b"b".to_vec()), (2, b"c".to_vec())]
    );
    assert_eq!(h.code(1, pull(None, 0, false)), ErrorCode::NotRegistered);
}

/// Registers a new session on `conn` asking to be kept for `timeout_ms`.
fn register_for(h: &mut Harness, conn: ConnId, timeout_ms: Option<u64>) -> u64 {
    let Ok(Reply::SubscriberRegistered { subscriber_id, .. }) = h.call(
        conn,
        Request::RegisterSubscriber {
            resume: None,
            timeout_ms,
        },
    ) else {
        panic!("register failed")
    };
    subscriber_id
}

#[test]
fn a_session_keeps_the_timeout_it_asked_for_clamped_to_the_maximum() {
    let mut h = Harness::new(Limits {
        session_timeout: Duration::from_millis(10),
        max_session_timeout: Duration::from_secs(3600),
        ..Limits::default()
    });
    h.connect(1);
    h.connect(2);
    h.connect(3);
    assert_eq!(h.broker.server_info().max_session_timeout_ms, 3_600_000);
    let short = register_for(&mut h, 1, None);
    let long = register_for(&mut h, 2, Some(60_000));
    let clamped = register_for(&mut h, 3, Some(u64::MAX));
    for conn in 1..=3 {
        h.broker.disconnect(conn, h.now);
    }
    let alive = |h: &Harness, id: u64| h.broker.session_ids.contains_key(&id);
    h.broker
        .fire_timers(h.now + Duration::from_secs(59), &mut h.out);
    assert!(!alive(&h, short), "the default timeout still applies");
    assert!(alive(&h, long) && alive(&h, clamped));
    h.broker
        .fire_timers(h.now + Duration::from_secs(61), &mut h.out);
    assert!(!alive(&h, long));
    assert!(alive(&h, clamped));
    h.broker
        .fire_timers(h.now + Duration::from_millis(3_600_001), &mut h.out);
    assert!(!alive(&h, clamped), "u64::MAX ms is clamped to the maximum");
}

#[test]
fn a_recovered_session_keeps_its_timeout_and_the_current_maximum_applies() {
    let limits = Limits {
        session_timeout: Duration::from_millis(10),
        max_session_timeout: Duration::from_secs(120),
        ..Limits::default()
    };
    let mut broker = Broker::new(limits, Instant::now());
    let mut recovered = Recovered::default();
    for (session, timeout_ms) in [(1, None), (2, Some(60_000)), (3, Some(3_600_000))] {
        broker.replay(
            crate::storage::Record::SessionCreated {
                session,
                timeout_ms,
                owner: None,
            },
            &mut recovered,
        );
    }
    let now = Instant::now();
    broker.finish_recovery(now, &mut recovered);
    assert_eq!(recovered.sessions, 3);
    let mut out = TestOutbox::default();
    broker.fire_timers(now + Duration::from_secs(59), &mut out);
    let alive: Vec<u64> = [1, 2, 3]
        .into_iter()
        .filter(|id| broker.session_ids.contains_key(id))
        .collect();
    assert_eq!(alive, vec![2, 3]);
    broker.fire_timers(now + Duration::from_secs(119), &mut out);
    assert_eq!(broker.sessions.len(), 1, "session 3 is kept, clamped");
    broker.fire_timers(now + Duration::from_secs(121), &mut out);
    assert_eq!(broker.sessions.len(), 0);
}

#[test]
fn detached_sessions_expire_and_release_the_topic() {
    let mut h = Harness::new(Limits {
        session_timeout: Duration::from_millis(10),
        ..Limits::default()
    });
    let id = setup_pub_sub(&mut h);
    h.call(
        0,
        Request::Publish {
            topic: "t",
            payload: b"a",
        },
    )
    .unwrap();
    h.broker.disconnect(1, h.now);
    assert_eq!(h.broker.stats(h.now).backlog_messages, 1);
    h.broker
        .fire_timers(h.now + Duration::from_millis(20), &mut h.out);
    assert_eq!(h.broker.stats(h.now).backlog_messages, 0);
    h.connect(3);
    assert_eq!(
        h.code(
            3,
            Request::RegisterSubscriber {
                resume: Some(id),
                timeout_ms: None
            }
        ),
        ErrorCode::UnknownSubscriber
    );
}

#[test]
fn a_pull_reply_never_exceeds_the_frame_limit() {
    let limits = Limits {
        max_frame_bytes: 4096,
        ..Limits::default()
    };
    let mut h = Harness::new(limits);
    setup_pub_sub(&mut h);
    let big = vec![7u8; 4096 - 512];
    for _ in 0..3 {
        h.call(
            0,
            Request::Publish {
                topic: "t",
                payload: &big,
            },
        )
        .unwrap();
    }
    h.send(1, pull(None, 0, false));
    let bytes = h.out.buffers.get(&1).cloned().unwrap_or_default();
    let (body, _) = split_frame(&bytes, 4096).unwrap().unwrap();
    assert!(body.len() <= 4096);
    let body = Bytes::copy_from_slice(body);
    let (_, reply) = decode_reply(Op::Pull, &body).unwrap();
    assert_eq!(payloads(reply).len(), 1);
}

/// The topic each of `pulls` single-message all-topics pulls started with,
/// for a subscriber of `topics` (in that order) where only `busy` have
/// messages.
fn first_topics_of_single_pulls(topics: &[&str], busy: &[&str], pulls: usize) -> Vec<String> {
    let mut h = Harness::new(Limits::default());
    h.connect(0);
    h.connect(1);
    h.call(0, Request::RegisterPublisher).unwrap();
    h.call(
        1,
        Request::RegisterSubscriber {
            resume: None,
            timeout_ms: None,
        },
    )
    .unwrap();
    for &topic in topics {
        h.call(0, Request::CreateTopic { topic }).unwrap();
        h.call(1, Request::Subscribe { topic }).unwrap();
    }
    for &topic in busy {
        for _ in 0..pulls {
            h.call(
                0,
                Request::Publish {
                    topic,
                    payload: b"m",
                },
            )
            .unwrap();
        }
    }
    (0..pulls)
        .map(|_| {
            let reply = h.call(
                1,
                Request::Pull(Pull {
                    topic: None,
                    max_messages: 1,
                    max_bytes: 1 << 20,
                    wait_ms: 0,
                    ack: true,
                }),
            );
            let Ok(Reply::Messages(groups)) = reply else {
                panic!("not messages: {reply:?}")
            };
            assert_eq!(groups.len(), 1);
            groups[0].topic.clone()
        })
        .collect()
}

#[test]
fn idle_topics_pass_their_turn_to_the_next_busy_one() {
    // Issue 8: with four idle topics after two busy ones, `a` used to get
    // ten of twelve single-message pulls.
    let got = first_topics_of_single_pulls(&["a", "b", "i1", "i2", "i3", "i4"], &["a", "b"], 12);
    let alternating: Vec<String> = ["a", "b"]
        .iter()
        .cycle()
        .take(12)
        .map(|t| t.to_string())
        .collect();
    assert_eq!(got, alternating);
}

#[test]
fn busy_topics_take_turns_wherever_the_idle_ones_sit() {
    let topics = ["i1", "a", "i2", "i3", "b", "c", "i4"];
    let got = first_topics_of_single_pulls(&topics, &["a", "b", "c"], 12);
    let expected: Vec<String> = ["a", "b", "c"]
        .iter()
        .cycle()
        .take(12)
        .map(|t| t.to_string())
        .collect();
    assert_eq!(got, expected);
}

#[test]
fn the_client_name_is_known_once_the_handshake_is_done() {
    let mut h = Harness::new(Limits::default());
    assert_eq!(h.broker.client_name(0), None);
    h.broker.connect(0);
    assert_eq!(h.broker.client_name(0), None);
    // A refused HELLO is no handshake.
    assert_eq!(
        h.code(
            0,
            Request::Hello {
                version: 99,
                client_name: "x",
                credentials: None,
            }
        ),
        ErrorCode::UnsupportedVersion
    );
    assert_eq!(h.broker.client_name(0), None);
    h.connect(1);
    assert_eq!(h.broker.client_name(1), Some("t"));
    h.broker.disconnect(1, h.now);
    assert_eq!(h.broker.client_name(1), None);
}

#[test]
fn a_long_client_name_is_kept_cut_on_a_character_boundary() {
    let mut h = Harness::new(Limits::default());
    h.broker.connect(0);
    // An odd start puts a two-byte character across the cut.
    let name = format!("a{}", "é".repeat(MAX_CLIENT_NAME_BYTES));
    let reply = h.call(
        0,
        Request::Hello {
            version: crate::PROTOCOL_VERSION,
            client_name: &name,
            credentials: None,
        },
    );
    assert!(matches!(reply, Ok(Reply::Hello(_))));
    let kept = h.broker.client_name(0).unwrap_or_default();
    assert!(name.starts_with(kept));
    assert!(kept.len() <= MAX_CLIENT_NAME_BYTES);
    assert!(kept.len() + 4 > MAX_CLIENT_NAME_BYTES);
}

fn publish_batch<'a>(scratch: &'a mut Vec<u8>, topic: &'a str, batch: &[&[u8]]) -> Request<'a> {
    Request::PublishBatch {
        topic,
        payloads: crate::codec::encode_payloads(scratch, batch),
    }
}

#[test]
fn the_budget_matches_a_recount_after_many_operations() {
    let mut h = Harness::new(Limits {
        session_timeout: Duration::from_millis(5),
        max_backlog_messages: 500,
        ..Limits::default()
    });
    h.connect(0);
    h.call(0, Request::RegisterPublisher).unwrap();
    for conn in 1..=4 {
        h.connect(conn);
    }
    let names = ["a", "bb", "a-much-longer-topic-name", "d", "e.e"];
    let mut ids = Vec::new();
    let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let big = vec![9u8; 3000];
    for step in 0..5000 {
        let topic = names[next(names.len() as u64) as usize];
        let conn = 1 + next(4) as ConnId;
        match next(13) {
            0 => drop(h.call(0, Request::CreateTopic { topic })),
            1 if next(4) == 0 => drop(h.call(0, Request::DeleteTopic { topic })),
            2 | 3 => {
                let len = next(big.len() as u64) as usize;
                let payload = &big[..len];
                drop(h.call(0, Request::Publish { topic, payload }));
            }
            4 | 5 => {
                let count = next(40) as usize;
                let batch: Vec<&[u8]> = (0..count).map(|i| &big[..i * 7]).collect();
                let mut scratch = Vec::new();
                let request = publish_batch(&mut scratch, topic, &batch);
                drop(h.call(0, request));
            }
            6 => {
                if let Ok(Reply::SubscriberRegistered { subscriber_id, .. }) = h.call(
                    conn,
                    Request::RegisterSubscriber {
                        resume: None,
                        timeout_ms: None,
                    },
                ) {
                    ids.push(subscriber_id);
                }
            }
            7 if !ids.is_empty() => {
                let id = ids[next(ids.len() as u64) as usize];
                drop(h.call(
                    conn,
                    Request::RegisterSubscriber {
                        resume: Some(id),
                        timeout_ms: None,
                    },
                ));
            }
            8 | 9 => drop(h.call(conn, Request::Subscribe { topic })),
            10 => drop(h.call(conn, Request::Unsubscribe { topic })),
            11 => {
                let one = next(2) == 0;
                h.send(conn, pull(one.then_some(topic), 0, next(2) == 0));
                h.replies(conn, Op::Pull);
            }
            _ => {
                // A connection goes, its session detaches and may expire.
                h.broker.disconnect(conn, h.now);
                h.now += Duration::from_millis(next(10));
                h.broker.fire_timers(h.now, &mut h.out);
                h.out.buffers.clear();
                h.connect(conn);
            }
        }
        assert!(
            h.broker.budget_matches_recount(),
            "step {step}: budget {:?}, recount {:?}",
            h.broker.budget().by_class().collect::<Vec<_>>(),
            h.broker.recount_memory()
        );
    }
    // Everything gone: nothing counted.
    for topic in names {
        drop(h.call(0, Request::DeleteTopic { topic }));
    }
    for conn in 1..=4 {
        h.broker.disconnect(conn, h.now);
    }
    h.broker
        .fire_timers(h.now + Duration::from_secs(1), &mut h.out);
    assert_eq!(h.broker.budget().total(), 0);
}

#[test]
fn a_batch_block_is_charged_until_its_last_message_goes() {
    let mut h = Harness::new(Limits::default());
    setup_pub_sub(&mut h);
    let payload = [5u8; 100];
    let batch: Vec<&[u8]> = vec![&payload; 10];
    let mut scratch = Vec::new();
    let request = publish_batch(&mut scratch, "t", &batch);
    let Request::PublishBatch { payloads: p, .. } = request else {
        unreachable!()
    };
    let encoded = p.encoded.len();
    h.call(0, request).unwrap();
    let charged = cost::batch_block(encoded);
    assert!(charged > 10 * 100);
    assert_eq!(h.broker.budget().used(Class::Payloads), charged);
    h.send(
        1,
        Request::Pull(Pull {
            topic: Some("t"),
            max_messages: 9,
            max_bytes: 1 << 20,
            wait_ms: 0,
            ack: false,
        }),
    );
    h.replies(1, Op::Pull);
    h.call(
        1,
        Request::Ack {
            topic: "t",
            offset: 9,
        },
    )
    .unwrap();
    assert_eq!(h.broker.stats(h.now).backlog_messages, 1);
    assert_eq!(h.broker.budget().used(Class::Payloads), charged);
    assert_eq!(payloads(h.call(1, pull(Some("t"), 0, true))).len(), 1);
    h.call(
        1,
        Request::Ack {
            topic: "t",
            offset: 10,
        },
    )
    .unwrap();
    assert_eq!(h.broker.budget().used(Class::Payloads), 0);
    assert!(h.broker.budget_matches_recount());
}

#[test]
fn at_the_budget_a_batch_is_refused_whole_with_broker_full() {
    let mut h = Harness::new(Limits {
        max_memory: 1 << 20,
        ..Limits::default()
    });
    setup_pub_sub(&mut h);
    let payload = [1u8; 200];
    let batch: Vec<&[u8]> = vec![&payload; 500];
    let mut refused = None;
    for _ in 0..100 {
        let before = h.broker.stats(h.now);
        let mut scratch = Vec::new();
        match h.call(0, publish_batch(&mut scratch, "t", &batch)) {
            Ok(_) => {}
            Err(e) => {
                // Nothing of the refused batch was stored.
                let after = h.broker.stats(h.now);
                assert_eq!(after.backlog_messages, before.backlog_messages);
                assert_eq!(after.memory_total, before.memory_total);
                refused = Some(e.code);
                break;
            }
        }
    }
    assert_eq!(refused, Some(ErrorCode::BrokerFull));
    assert!(ErrorCode::BrokerFull.is_retryable());
    let budget = h.broker.budget();
    assert!(budget.total() <= budget.limit() - budget.reserve());
    // State that would grow is refused too; pulls and acks still work.
    assert_eq!(
        h.code(
            0,
            Request::Publish {
                topic: "t",
                payload: &[0; 100_000]
            }
        ),
        ErrorCode::BrokerFull
    );
    assert!(!payloads(h.call(1, pull(Some("t"), 0, false))).is_empty());
    h.call(1, pull(Some("t"), 0, true)).unwrap();
    let mut scratch = Vec::new();
    h.call(0, publish_batch(&mut scratch, "t", &batch)).unwrap();
    assert!(h.broker.budget_matches_recount());
}

#[test]
fn topics_sessions_and_subscriptions_are_refused_at_their_limits() {
    let mut h = Harness::new(Limits {
        max_sessions: 2,
        max_subscriptions_per_session: 1,
        ..Limits::default()
    });
    setup_pub_sub(&mut h);
    h.call(0, Request::CreateTopic { topic: "u" }).unwrap();
    assert_eq!(
        h.code(1, Request::Subscribe { topic: "u" }),
        ErrorCode::TooManySubscriptions
    );
    // Subscribing again to what it has is no new subscription.
    h.call(1, Request::Subscribe { topic: "t" }).unwrap();
    h.connect(2);
    h.call(
        2,
        Request::RegisterSubscriber {
            resume: None,
            timeout_ms: None,
        },
    )
    .unwrap();
    assert_eq!(
        h.code(
            2,
            Request::RegisterSubscriber {
                resume: None,
                timeout_ms: None
            }
        ),
        ErrorCode::TooManySessions
    );
    assert!(ErrorCode::TooManySessions.is_retryable());
    assert!(ErrorCode::TooManySubscriptions.is_retryable());

    // The budget refuses what the counts would still allow.
    let mut h = Harness::new(Limits {
        max_memory: 64 * 1024,
        ..Limits::default()
    });
    h.connect(0);
    h.call(0, Request::RegisterPublisher).unwrap();
    let names: Vec<String> = (0..1000).map(|i| format!("{i:0>200}")).collect();
    let created = names
        .iter()
        .take_while(|topic| h.call(0, Request::CreateTopic { topic }).is_ok())
        .count();
    assert!(created < names.len());
    assert_eq!(
        h.code(
            0,
            Request::CreateTopic {
                topic: &names[created]
            }
        ),
        ErrorCode::BrokerFull
    );
}

#[test]
fn a_batch_that_can_never_fit_is_batch_too_large() {
    let mut h = Harness::new(Limits {
        max_backlog_messages: 10,
        publish_hold: Duration::ZERO,
        ..Limits::default()
    });
    setup_pub_sub(&mut h);
    let batch: Vec<&[u8]> = vec![b"m"; 11];
    let mut scratch = Vec::new();
    assert_eq!(
        h.code(0, publish_batch(&mut scratch, "t", &batch)),
        ErrorCode::BatchTooLarge
    );
    assert!(!ErrorCode::BatchTooLarge.is_retryable());
    let mut scratch = Vec::new();
    h.call(0, publish_batch(&mut scratch, "t", &batch[..10]))
        .unwrap();
    // Now it could fit later: TOPIC_FULL, retryable.
    let mut scratch = Vec::new();
    assert_eq!(
        h.code(0, publish_batch(&mut scratch, "t", &batch[..1])),
        ErrorCode::TopicFull
    );
}

#[test]
fn the_resume_reply_fits_the_frame_and_says_when_it_is_cut() {
    let mut h = Harness::new(Limits {
        max_frame_bytes: 1024,
        ..Limits::default()
    });
    let id = setup_pub_sub(&mut h);
    let names: Vec<String> = (0..10).map(|i| format!("{i:0>255}")).collect();
    for topic in &names {
        h.call(0, Request::CreateTopic { topic }).unwrap();
        h.call(1, Request::Subscribe { topic }).unwrap();
    }
    h.connect(2);
    h.send(
        2,
        Request::RegisterSubscriber {
            resume: Some(id),
            timeout_ms: None,
        },
    );
    let frame = h.out.buffers.get(&2).cloned().unwrap_or_default();
    assert!(frame.len() <= 1024 + 4, "a reply of {} bytes", frame.len());
    let Ok(Reply::SubscriberRegistered { topics, more, .. }) =
        h.replies(2, Op::RegisterSubscriber).remove(0).1
    else {
        panic!("not registered")
    };
    assert!(more);
    assert!(!topics.is_empty() && topics.len() < 11);
}

#[test]
fn stats_report_memory_by_class() {
    let mut h = Harness::new(Limits::default());
    setup_pub_sub(&mut h);
    let stats = h.broker.stats(h.now);
    assert_eq!(stats.memory.len(), Class::ALL.len());
    assert_eq!(stats.memory_total, stats.memory.values().sum::<u64>());
    assert_eq!(stats.memory["topics"], cost::topic(1) as u64);
    assert_eq!(stats.memory["sessions"], cost::SESSION as u64);
    assert_eq!(stats.memory["subscriptions"], cost::SUBSCRIPTION as u64);
    assert_eq!(stats.memory_limit, Limits::default().max_memory as u64);
}
mod held;
mod work;

/// Sends PUBLISH of `payload` to "t" on connection 0.
fn publish_to_t(h: &mut Harness, payload: &'static [u8]) {
    h.call(
        0,
        Request::Publish {
            topic: "t",
            payload,
        },
    )
    .unwrap();
}

fn small_pull(wait_ms: u32, max_messages: u32) -> Request<'static> {
    Request::Pull(Pull {
        topic: None,
        max_messages,
        max_bytes: 1 << 20,
        wait_ms,
        ack: false,
    })
}

#[test]
fn pipelined_pulls_wait_in_order_and_each_takes_the_next_messages() {
    let mut h = Harness::new(Limits::default());
    setup_pub_sub(&mut h);
    let first = h.send(1, pull(None, 10_000, false));
    let second = h.send(1, pull(None, 10_000, false));
    assert!(h.replies(1, Op::Pull).is_empty());
    assert_eq!(h.broker.counters.waiting_pulls, 2);
    publish_to_t(&mut h, b"a");
    let got = h.replies(1, Op::Pull);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, first);
    assert_eq!(payloads(got[0].1.clone()), vec![(0, b"a".to_vec())]);
    publish_to_t(&mut h, b"b");
    let got = h.replies(1, Op::Pull);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, second);
    assert_eq!(payloads(got[0].1.clone()), vec![(1, b"b".to_vec())]);
    assert_eq!(h.broker.counters.waiting_pulls, 0);
}

#[test]
fn a_burst_larger_than_one_pull_is_split_over_the_waiting_pulls_in_order() {
    let mut h = Harness::new(Limits::default());
    setup_pub_sub(&mut h);
    let ids: Vec<u64> = (0..3).map(|_| h.send(1, small_pull(10_000, 2))).collect();
    // One batch of five publishes, answered once at its end.
    for payload in [b"0", b"1", b"2", b"3", b"4"] {
        let mut frame = Vec::new();
        encode_request(
            &mut frame,
            99,
            &Request::Publish {
                topic: "t",
                payload,
            },
        );
        let (body, _) = split_frame(&frame, usize::MAX).unwrap().unwrap();
        h.broker.handle_frame(0, body, h.now, &mut h.out);
    }
    h.broker.answer_ready(&mut h.out);
    let got = h.replies(1, Op::Pull);
    let order: Vec<u64> = got.iter().map(|r| r.0).collect();
    assert_eq!(order, ids);
    let offsets: Vec<Vec<u64>> = got
        .into_iter()
        .map(|(_, r)| payloads(r).into_iter().map(|(o, _)| o).collect())
        .collect();
    assert_eq!(offsets, vec![vec![0, 1], vec![2, 3], vec![4]]);
}

#[test]
fn past_max_waiting_pulls_the_oldest_is_answered_empty() {
    let mut h = Harness::new(Limits {
        max_waiting_pulls: 2,
        ..Limits::default()
    });
    setup_pub_sub(&mut h);
    let ids: Vec<u64> = (0..3)
        .map(|_| h.send(1, pull(None, 10_000, false)))
        .collect();
    let got = h.replies(1, Op::Pull);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, ids[0]);
    assert!(payloads(got[0].1.clone()).is_empty());
    assert_eq!(h.broker.counters.waiting_pulls, 2);
    publish_to_t(&mut h, b"a");
    assert_eq!(h.replies(1, Op::Pull)[0].0, ids[1]);
}

#[test]
fn each_waiting_pull_has_its_own_deadline() {
    let mut h = Harness::new(Limits::default());
    setup_pub_sub(&mut h);
    let short = h.send(1, pull(None, 10, false));
    let long = h.send(1, pull(None, 10_000, false));
    h.broker
        .fire_timers(h.now + Duration::from_millis(20), &mut h.out);
    let got = h.replies(1, Op::Pull);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, short);
    publish_to_t(&mut h, b"a");
    assert_eq!(h.replies(1, Op::Pull)[0].0, long);
}

/// The ids of every reply `conn` got so far, in order, whatever they answer.
fn reply_ids(h: &mut Harness, conn: ConnId) -> Vec<u64> {
    let bytes = std::mem::take(h.out.buffers.entry(conn).or_default());
    let mut rest = &bytes[..];
    let mut ids = Vec::new();
    while let Ok(Some((body, used))) = split_frame(rest, usize::MAX) {
        ids.push(crate::codec::decode_reply_id(body).unwrap());
        rest = &rest[used..];
    }
    ids
}

#[test]
fn ending_waits_answers_every_pull_concerned_in_order() {
    let mut h = Harness::new(Limits::default());
    setup_pub_sub(&mut h);
    h.call(0, Request::CreateTopic { topic: "u" }).unwrap();
    h.call(1, Request::Subscribe { topic: "u" }).unwrap();
    let on_u = h.send(1, pull(Some("u"), 10_000, false));
    let all = h.send(1, pull(None, 10_000, false));
    let on_u_again = h.send(1, pull(Some("u"), 10_000, false));
    let unsubscribe = h.send(1, Request::Unsubscribe { topic: "u" });
    // The pulls on "u" alone are answered, before the UNSUBSCRIBE reply;
    // the all-topics pull keeps waiting.
    assert_eq!(reply_ids(&mut h, 1), vec![on_u, on_u_again, unsubscribe]);
    assert_eq!(h.broker.counters.waiting_pulls, 1);
    let second_all = h.send(1, pull(None, 10_000, false));
    let end = h.send(1, Request::EndSession);
    assert_eq!(reply_ids(&mut h, 1), vec![all, second_all, end]);
    assert_eq!(h.broker.counters.waiting_pulls, 0);
}
