//! Backlogs larger than the memory cache (issue 11 §4): a durable broker
//! keeps only `--cache-bytes` of recent messages in memory and serves the
//! subscribers behind it from the log, off the loop thread.
//!
//! Over TCP (an in-process broker on a temporary data dir): a subscriber
//! far behind the cache gets every message in order with intact payloads
//! through pipelined pulls, while STATS shows memory bounded and the
//! backlog many times the cache; a restart with such a backlog recovers it
//! into the log's keeping, not into memory; deleting the topic or taking
//! the session over while reads are in flight leaves nothing held.
//!
//! On the state machine (a simulated disk, the writer and the readers
//! inline, so a read is "in flight" exactly between the round that starts
//! it and the one that applies it): a topic deleted while a read is
//! outstanding answers the waiting pull TOPIC_DELETED and frees the read;
//! a session taken over during a read gets SESSION_TAKEN_OVER on the old
//! connection and every message on the new one.

mod common;
mod storage_support;

use common::{Raw, pull, start_broker_with, temp_dir, wait_until};
use courier::broker::{Broker, ConnId, Limits, Recovered};
use courier::codec::{self, decode_reply};
use courier::protocol::{ErrorCode, Op, Pull, Reply, Request, Stats};
use courier::server::{Config, RunningServer, Storage};
use courier::storage::{self, Log, ReadService, Reader, SimFs, SyncMode, WriterKind};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use storage_support::node::Out;

const CACHE: usize = 256 << 10;
const PAYLOAD: usize = 200;
const BATCH: usize = 100;

fn durable(dir: &Path) -> Config {
    let mut config = Config {
        storage: Storage::Dir {
            path: dir.to_path_buf(),
            log: storage::Config {
                sync: SyncMode::Never,
                segment_bytes: 1 << 20,
                ..storage::Config::default()
            },
        },
        ..Config::default()
    };
    config.limits.cache_bytes = CACHE;
    config.limits.max_backlog_bytes = 1 << 30;
    config.limits.max_backlog_messages = 10_000_000;
    config
}

/// The end of each TCP test here: the broker stops, then its data goes.
fn stop_and_remove(broker: RunningServer, dir: PathBuf) {
    broker.stop().expect("stops");
    let _ = std::fs::remove_dir_all(dir);
}

/// The payload of offset `offset`: its number, then a pattern from it.
fn payload(offset: u64) -> Vec<u8> {
    let mut p = offset.to_le_bytes().to_vec();
    p.extend((0..PAYLOAD - 8).map(|i| (offset as usize * 7 + i) as u8));
    p
}

/// Publishes `batches` batches of [`BATCH`] messages to `topic`.
fn publish(addr: SocketAddr, topic: &str, batches: usize) {
    let mut publisher = Raw::publisher(addr);
    for b in 0..batches {
        let first = (b * BATCH) as u64;
        let payloads: Vec<Vec<u8>> = (first..first + BATCH as u64).map(payload).collect();
        let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
        publisher.publish_batch(topic, &refs);
    }
}

fn stats(addr: SocketAddr) -> Stats {
    Raw::hello(addr).stats()
}

/// Pulls `topic` with `in_flight` pulls pipelined, acknowledging as it
/// goes, until `total` messages came; asserts order and payloads, and that
/// replies come in the order of the pulls. Checks `check` on STATS every
/// few replies.
fn catch_up(sub: &mut Raw, topic: &str, total: u64, in_flight: usize, mut check: impl FnMut()) {
    let mut sent = std::collections::VecDeque::new();
    for _ in 0..in_flight {
        sent.push_back(sub.send(pull(Some(topic), 300, 2000, true)));
    }
    let mut next = 0u64;
    let mut replies = 0;
    while next < total {
        let (id, reply) = sub.recv(Op::Pull);
        assert_eq!(
            Some(id),
            sent.pop_front(),
            "replies in the order of the pulls"
        );
        for (t, offset, body) in common::messages(reply) {
            assert_eq!((t.as_str(), offset), (topic, next), "in order, no gap");
            assert_eq!(body, payload(offset), "intact payload at {offset}");
            next += 1;
        }
        replies += 1;
        if replies % 20 == 0 {
            check();
        }
        sent.push_back(sub.send(pull(Some(topic), 300, 2000, true)));
    }
    // The pulls still out are answered (empty, at their deadline or as
    // messages run out).
    while let Some(id) = sent.pop_front() {
        let (got, _) = sub.recv(Op::Pull);
        assert_eq!(got, id);
    }
}

#[test]
fn a_subscriber_far_behind_the_cache_gets_everything_in_order_with_memory_bounded() {
    let dir = temp_dir("backlog-far");
    let broker = start_broker_with(durable(&dir));
    let addr = broker.addr();
    Raw::publisher(addr).ok(Request::CreateTopic { topic: "deep" });
    let (mut sub, _) = Raw::subscriber(addr, &["deep"]);
    // 8 MB: 32 times the cache.
    let batches = 400;
    publish(addr, "deep", batches);
    let total = (batches * BATCH) as u64;
    let before = stats(addr);
    assert!(
        before.backlog_bytes >= 30 * CACHE as u64,
        "the backlog is many times the cache: {}",
        before.backlog_bytes
    );
    assert!(before.messages_evicted > 0);
    // Memory holds the cache (and one batch's block over it), not the
    // backlog.
    let bound = (CACHE + (64 << 10)) as u64;
    assert!(
        before.memory["payloads"] <= bound,
        "payloads {} over the cache",
        before.memory["payloads"]
    );
    // One read in flight (at its bound) and one read back, for one session.
    let reads_bound = 8 << 20;
    catch_up(&mut sub, "deep", total, 4, || {
        let s = stats(addr);
        assert!(
            s.memory["payloads"] <= bound,
            "payloads {}",
            s.memory["payloads"]
        );
        assert!(
            s.memory["disk_reads"] <= reads_bound,
            "reads {}",
            s.memory["disk_reads"]
        );
    });
    let after = stats(addr);
    assert!(
        after.disk_reads > 0 && after.disk_messages_read > 0,
        "{after:?}"
    );
    wait_until("the backlog acknowledged", || {
        let s = stats(addr);
        s.backlog_messages == 0 && s.memory["disk_reads"] == 0
    });
    stop_and_remove(broker, dir);
}

#[test]
fn a_restart_with_a_backlog_bigger_than_the_cache_keeps_it_on_disk() {
    let dir = temp_dir("backlog-restart");
    let broker = start_broker_with(durable(&dir));
    let addr = broker.addr();
    Raw::publisher(addr).ok(Request::CreateTopic { topic: "kept" });
    let (_, id) = Raw::subscriber(addr, &["kept"]);
    let batches = 200;
    publish(addr, "kept", batches);
    broker.stop().expect("stops");

    let broker = start_broker_with(durable(&dir));
    let addr = broker.addr();
    let s = stats(addr);
    assert_eq!(s.backlog_messages, (batches * BATCH) as u64);
    assert!(
        s.memory["payloads"] <= (CACHE + (64 << 10)) as u64,
        "recovered into memory: {}",
        s.memory["payloads"]
    );
    let mut sub = Raw::hello(addr);
    sub.ok(Request::RegisterSubscriber {
        resume: Some(id),
        timeout_ms: None,
    });
    catch_up(&mut sub, "kept", (batches * BATCH) as u64, 3, || {});
    stop_and_remove(broker, dir);
}

#[test]
fn deleting_the_topic_or_taking_the_session_over_during_reads_frees_them() {
    let dir = temp_dir("backlog-free");
    let broker = start_broker_with(durable(&dir));
    let addr = broker.addr();
    let mut publisher = Raw::publisher_with_topic(addr, "gone");
    publisher.ok(Request::CreateTopic { topic: "moved" });
    let (mut sub, _) = Raw::subscriber(addr, &["gone"]);
    let (mut old, moved_id) = Raw::subscriber(addr, &["moved"]);
    publish(addr, "gone", 100);
    publish(addr, "moved", 100);

    // Pulls that need the disk, then the topic goes under them.
    let pulls: Vec<u64> = (0..3)
        .map(|_| sub.send(pull(Some("gone"), 50, 5000, false)))
        .collect();
    publisher.ok(Request::DeleteTopic { topic: "gone" });
    // Which pulls the deletion overtakes is a race here (the state-machine
    // test below pins it down); each is answered, with messages or
    // TOPIC_DELETED.
    for id in pulls {
        let (got, reply) = sub.recv(Op::Pull);
        assert_eq!(got, id);
        match reply {
            Ok(Reply::Messages(_)) => {}
            Err(e) => assert_eq!(e.code, ErrorCode::TopicDeleted),
            Ok(other) => panic!("{other:?}"),
        }
    }

    // Pulls in flight on one connection, and the session resumed on another.
    for _ in 0..3 {
        old.send(pull(Some("moved"), 50, 5000, false));
    }
    let mut new = Raw::hello(addr);
    new.ok(Request::RegisterSubscriber {
        resume: Some(moved_id),
        timeout_ms: None,
    });
    catch_up(&mut new, "moved", 100 * BATCH as u64, 2, || {});
    wait_until("every read given back", || {
        let s = stats(addr);
        s.disk_reads_outstanding == 0 && s.memory["disk_reads"] == 0
    });
    stop_and_remove(broker, dir);
}

#[test]
fn past_max_disk_publishes_are_held_then_refused_disk_full() {
    let dir = temp_dir("backlog-max-disk");
    let mut config = durable(&dir);
    config.limits.max_disk_bytes = Some(2 << 20);
    config.limits.publish_hold = std::time::Duration::ZERO;
    let broker = start_broker_with(config);
    let addr = broker.addr();
    let mut publisher = Raw::publisher_with_topic(addr, "full");
    let (_sub, _) = Raw::subscriber(addr, &["full"]);
    let big = vec![7u8; 256 << 10];
    let mut stored = 0;
    let code = loop {
        match publisher.call(Request::Publish {
            topic: "full",
            payload: &big,
        }) {
            Ok(_) => stored += 1,
            Err(e) => break e.code,
        }
        assert!(stored < 100, "--max-disk never refused");
    };
    assert_eq!(code, ErrorCode::DiskFull);
    assert!(code.is_retryable());
    let s = stats(addr);
    assert!(
        s.disk_bytes <= (2 << 20) + (256 << 10) + 4096,
        "{}",
        s.disk_bytes
    );
    assert_eq!(s.errors.get("DISK_FULL"), Some(&1));
    stop_and_remove(broker, dir);
}

// ---- the state machine, step by step ----

const PUBLISHER: ConnId = 0;
const SUB_A: ConnId = 1;
const SUB_B: ConnId = 2;

struct Node {
    broker: Broker,
    out: Out,
    now: Instant,
    next_id: u64,
    ops: HashMap<(ConnId, u64), Op>,
}

impl Node {
    fn open(fs: &SimFs) -> Node {
        let now = Instant::now();
        let limits = Limits {
            cache_bytes: 4096,
            ..Limits::default()
        };
        let mut broker = Broker::new(limits, now);
        let fs: Arc<dyn storage::Fs> = Arc::new(fs.clone());
        let dir = PathBuf::from("/data");
        broker.set_reads(ReadService::inline(Reader::new(fs.clone(), dir.clone())));
        let config = storage::Config {
            sync: SyncMode::Always,
            segment_bytes: 1 << 20,
            recovery: storage::RecoveryMode::Strict,
            writer: WriterKind::Inline,
        };
        let mut rebuilt = Recovered::default();
        let (log, _) = Log::open(fs, &dir, config, Box::new(|| {}), |_, record| {
            broker.replay(record, &mut rebuilt)
        })
        .expect("opens");
        broker.finish_recovery(now, &mut rebuilt);
        broker.set_journal(Box::new(log));
        let mut node = Node {
            broker,
            out: Out(vec![Vec::new(); 3]),
            now,
            next_id: 1,
            ops: HashMap::new(),
        };
        for conn in [PUBLISHER, SUB_A, SUB_B] {
            node.broker.connect(conn);
            node.send(
                conn,
                &Request::Hello {
                    version: courier::PROTOCOL_VERSION,
                    client_name: "backlog",
                    credentials: None,
                },
            );
        }
        node.send(PUBLISHER, &Request::RegisterPublisher);
        node.round();
        node
    }

    fn send(&mut self, conn: ConnId, request: &Request<'_>) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let mut frame = Vec::new();
        codec::encode_request(&mut frame, id, request);
        self.ops.insert((conn, id), request.op());
        self.broker
            .handle_frame(conn, &frame[4..], self.now, &mut self.out);
        id
    }

    /// A loop round's end, without applying reads (they stay in flight).
    fn round(&mut self) -> Vec<(ConnId, u64, Result<Reply, ErrorCode>)> {
        for _ in 0..2 {
            self.broker.poll_journal(&mut self.out);
            self.broker.answer_ready(&mut self.out);
            self.broker.flush_journal();
        }
        self.replies()
    }

    /// The reads come back.
    fn reads_back(&mut self) -> Vec<(ConnId, u64, Result<Reply, ErrorCode>)> {
        self.broker.poll_reads(self.now, &mut self.out);
        self.replies()
    }

    fn replies(&mut self) -> Vec<(ConnId, u64, Result<Reply, ErrorCode>)> {
        let mut replies = Vec::new();
        for conn in [PUBLISHER, SUB_A, SUB_B] {
            for (id, body) in self.out.take_replies(conn) {
                let op = self.ops.remove(&(conn, id)).expect("a reply to a request");
                let (_, reply) = decode_reply(op, &body).expect("reply");
                replies.push((conn, id, reply.map_err(|e| e.code)));
            }
        }
        replies
    }

    fn stats(&self) -> Stats {
        self.broker.stats(self.now)
    }

    /// A session on `conn` subscribed to `topic`; its id.
    fn subscriber(&mut self, conn: ConnId, topic: &str) -> u64 {
        self.send(
            conn,
            &Request::RegisterSubscriber {
                resume: None,
                timeout_ms: None,
            },
        );
        self.send(conn, &Request::Subscribe { topic });
        let mut id = 0;
        for (_, _, reply) in self.round() {
            if let Ok(Reply::SubscriberRegistered { subscriber_id, .. }) = reply {
                id = subscriber_id;
            }
        }
        id
    }

    fn publish(&mut self, topic: &str, count: u64) {
        for offset in 0..count {
            let p = payload(offset);
            self.send(PUBLISHER, &Request::Publish { topic, payload: &p });
        }
        self.round();
    }
}

fn pull_one(topic: &str) -> Request<'_> {
    Request::Pull(Pull {
        topic: Some(topic),
        max_messages: 1000,
        max_bytes: u32::MAX,
        wait_ms: 0,
        ack: false,
    })
}

#[test]
fn a_topic_deleted_under_an_outstanding_read_answers_topic_deleted_and_frees_it() {
    let mut node = Node::open(&SimFs::new(7));
    node.send(PUBLISHER, &Request::CreateTopic { topic: "t" });
    node.subscriber(SUB_A, "t");
    node.publish("t", 200);
    assert!(node.stats().messages_evicted > 0);
    // wait_ms 0, yet it waits: its messages are coming from the disk.
    let pull = node.send(SUB_A, &pull_one("t"));
    assert!(node.round().is_empty(), "the pull waits for its read");
    let s = node.stats();
    assert_eq!(s.disk_reads_outstanding, 1);
    assert!(
        s.memory["disk_reads"] > 0,
        "the read is counted while in flight"
    );
    node.send(PUBLISHER, &Request::DeleteTopic { topic: "t" });
    let replies = node.round();
    assert!(
        replies.contains(&(SUB_A, pull, Err(ErrorCode::TopicDeleted))),
        "{replies:?}"
    );
    assert!(node.reads_back().is_empty(), "the late read is dropped");
    let s = node.stats();
    assert_eq!((s.disk_reads_outstanding, s.memory["disk_reads"]), (0, 0));
}

#[test]
fn a_session_taken_over_during_a_read_is_served_on_its_new_connection() {
    let mut node = Node::open(&SimFs::new(8));
    node.send(PUBLISHER, &Request::CreateTopic { topic: "t" });
    let id = node.subscriber(SUB_A, "t");
    node.publish("t", 200);
    let old = node.send(SUB_A, &pull_one("t"));
    assert!(node.round().is_empty());
    node.send(
        SUB_B,
        &Request::RegisterSubscriber {
            resume: Some(id),
            timeout_ms: None,
        },
    );
    let new = node.send(SUB_B, &pull_one("t"));
    let replies = node.round();
    assert!(
        replies.contains(&(SUB_A, old, Err(ErrorCode::SessionTakenOver))),
        "{replies:?}"
    );
    // The read comes back and the new connection's pull takes from it.
    let mut got = Vec::new();
    for _ in 0..10 {
        for (conn, id, reply) in node.reads_back() {
            assert_eq!((conn, id), (SUB_B, new));
            if let Ok(Reply::Messages(groups)) = reply {
                got.extend(common::flatten(groups));
            }
        }
        if !got.is_empty() {
            break;
        }
        node.round();
    }
    assert!(!got.is_empty(), "the new connection got its messages");
    for (i, (_, offset, body)) in got.iter().enumerate() {
        assert_eq!(*offset, i as u64);
        assert_eq!(*body, payload(*offset));
    }
}

#[test]
fn a_pull_of_another_topic_is_not_held_behind_a_disk_read() {
    let mut node = Node::open(&SimFs::new(9));
    node.send(PUBLISHER, &Request::CreateTopic { topic: "far" });
    node.send(PUBLISHER, &Request::CreateTopic { topic: "near" });
    node.subscriber(SUB_A, "far");
    node.send(SUB_A, &Request::Subscribe { topic: "near" });
    node.round();
    node.publish("far", 200);
    assert!(node.stats().messages_evicted > 0);
    let far = node.send(SUB_A, &pull_one("far"));
    assert!(node.round().is_empty(), "the far pull waits for its read");
    node.publish("near", 1);
    let near = node.send(SUB_A, &pull_one("near"));
    let replies = node.round();
    let answered: Vec<u64> = replies.iter().map(|(_, id, _)| *id).collect();
    assert!(
        answered.contains(&near) && !answered.contains(&far),
        "{replies:?}"
    );
    let back = node.reads_back();
    assert!(
        back.iter()
            .any(|(_, id, r)| *id == far && matches!(r, Ok(Reply::Messages(g)) if !g.is_empty()))
    );
}

#[test]
fn all_topics_pulls_drain_two_topics_far_behind_in_order() {
    let mut node = Node::open(&SimFs::new(10));
    for topic in ["a", "b"] {
        node.send(PUBLISHER, &Request::CreateTopic { topic });
    }
    node.subscriber(SUB_A, "a");
    node.send(SUB_A, &Request::Subscribe { topic: "b" });
    node.round();
    node.publish("a", 300);
    node.publish("b", 300);
    let all = Request::Pull(Pull {
        topic: None,
        max_messages: 37,
        max_bytes: u32::MAX,
        wait_ms: 0,
        ack: true,
    });
    let mut next = HashMap::from([("a".to_string(), 0u64), ("b".to_string(), 0u64)]);
    for _ in 0..2000 {
        if next.values().all(|&n| n == 300) {
            break;
        }
        // Two in flight at a time, the reads applied between rounds.
        node.send(SUB_A, &all);
        node.send(SUB_A, &all);
        let mut replies = node.round();
        replies.extend(node.reads_back());
        replies.extend(node.reads_back());
        for (_, _, reply) in replies {
            let Ok(Reply::Messages(groups)) = reply else {
                panic!("{reply:?}")
            };
            for (topic, offset, body) in common::flatten(groups) {
                let n = next.get_mut(&topic).expect("a subscribed topic");
                assert_eq!(offset, *n, "{topic} in order");
                assert_eq!(body, payload(offset));
                *n += 1;
            }
        }
    }
    assert_eq!(next.values().copied().collect::<Vec<_>>(), vec![300, 300]);
}

/// FETCH `[17, ...]` on `raw`, the reply's `Fetched`.
fn fetch(raw: &mut Raw, topic: &str, offset: u64) -> courier::protocol::Fetched {
    match raw.ok(Request::Fetch {
        topic,
        offset,
        max_messages: 1000,
        max_bytes: 1 << 20,
    }) {
        Reply::Fetched(fetched) => fetched,
        other => panic!("FETCH answered {other:?}"),
    }
}

/// Pages through `topic` with FETCH from `from`, asserting every message's
/// payload against its offset and that offsets come in order, no gap;
/// returns the offsets read.
fn fetch_all(raw: &mut Raw, topic: &str, from: u64) -> Vec<u64> {
    let mut offsets = Vec::new();
    let mut next = from;
    for _ in 0..100_000 {
        let page = fetch(raw, topic, next);
        for m in &page.messages {
            if let Some(&last) = offsets.last() {
                assert_eq!(m.offset, last + 1, "in order, no gap");
            }
            assert_eq!(m.payload.as_ref(), payload(m.offset), "at {}", m.offset);
            assert!(m.time_ms > 0, "an append time");
            offsets.push(m.offset);
        }
        if page.next_offset >= page.end_offset {
            return offsets;
        }
        assert!(page.next_offset > next, "FETCH moves on");
        next = page.next_offset;
    }
    panic!("FETCH never reached the end");
}

#[test]
fn a_retained_topic_behind_the_cache_is_fetched_and_replayed_from_the_log() {
    let dir = temp_dir("backlog-replay");
    let broker = start_broker_with(durable(&dir));
    let addr = broker.addr();
    Raw::publisher(addr).ok(Request::CreateTopicWith {
        topic: "history",
        retention: courier::protocol::Retention::Keep {
            retain_ms: 0,
            retain_bytes: 0,
        },
    });
    // No subscriber: the retained topic keeps it all, 32 caches' worth.
    let batches = 400;
    publish(addr, "history", batches);
    let total = (batches * BATCH) as u64;
    let s = stats(addr);
    assert!(s.messages_evicted > 0, "{s:?}");
    let reads_before = s.disk_reads;

    // FETCH reads it all back, from the log for the evicted part.
    let mut reader = Raw::hello(addr);
    let offsets = fetch_all(&mut reader, "history", 0);
    assert_eq!(offsets.len() as u64, total);
    assert_eq!(offsets.first(), Some(&0));
    assert!(stats(addr).disk_reads > reads_before, "served from the log");

    // A subscription from the earliest message replays it all too.
    let mut sub = Raw::hello(addr);
    sub.ok(Request::RegisterSubscriber {
        resume: None,
        timeout_ms: None,
    });
    assert_eq!(
        sub.ok(Request::SubscribeFrom {
            topic: "history",
            position: courier::protocol::Position::Earliest,
        }),
        Reply::Subscribed { next_offset: 0 }
    );
    catch_up(&mut sub, "history", total, 4, || {});
    // Acknowledging deletes nothing a retention policy keeps.
    assert_eq!(stats(addr).backlog_messages, total);
    stop_and_remove(broker, dir);
}

#[test]
fn retention_by_size_drops_the_oldest_on_disk_and_keeps_the_newest() {
    let dir = temp_dir("backlog-retain-bytes");
    let broker = start_broker_with(durable(&dir));
    let addr = broker.addr();
    let retain = 1u64 << 20;
    Raw::publisher(addr).ok(Request::CreateTopicWith {
        topic: "window",
        retention: courier::protocol::Retention::Keep {
            retain_ms: 0,
            retain_bytes: retain,
        },
    });
    let batches = 400; // 8 MB through a 1 MiB window and a 256 KiB cache
    publish(addr, "window", batches);
    let total = (batches * BATCH) as u64;
    let s = stats(addr);
    assert!(s.messages_evicted > 0, "{s:?}");
    // Evicted messages are summed in runs of up to 1 MiB, released whole.
    let run = 1u64 << 20;
    assert!(
        s.backlog_bytes <= retain + run,
        "backlog {} over the policy",
        s.backlog_bytes
    );
    let mut reader = Raw::hello(addr);
    let offsets = fetch_all(&mut reader, "window", 0);
    let kept = offsets.len() as u64 * PAYLOAD as u64;
    assert!(
        kept >= retain,
        "dropped inside the policy: {kept} bytes kept"
    );
    assert_eq!(offsets.last(), Some(&(total - 1)), "the newest are kept");
    assert!(offsets[0] > 0, "the oldest were dropped");
    stop_and_remove(broker, dir);
}

/// Publishes `count` single messages (one record each) to `topic`, 256 of
/// them pipelined, and waits for every reply.
fn publish_singles(addr: SocketAddr, topic: &str, count: u64) {
    let mut publisher = Raw::publisher(addr);
    let mut outstanding = 0;
    for offset in 0..count {
        let body = payload(offset);
        publisher.send(Request::Publish {
            topic,
            payload: &body,
        });
        outstanding += 1;
        if outstanding == 256 || offset + 1 == count {
            for _ in 0..outstanding {
                let (_, reply) = publisher.recv(Op::Publish);
                assert!(reply.is_ok(), "{reply:?}");
            }
            outstanding = 0;
        }
    }
}

#[test]
fn single_publishes_far_behind_the_cache_keep_the_log_index_small() {
    let dir = temp_dir("backlog-singles");
    let mut config = durable(&dir);
    if let Storage::Dir { log, .. } = &mut config.storage {
        // Group commit: the log keeps the positions of unsynced batches
        // only (with `never`, those of the whole segment being written).
        log.sync = SyncMode::Always;
    }
    let broker = start_broker_with(config);
    let addr = broker.addr();
    Raw::publisher(addr).ok(Request::CreateTopic { topic: "singles" });
    let (mut sub, _) = Raw::subscriber(addr, &["singles"]);
    // ~7 MB of log, 28 times the cache, one record per message.
    let total = 30_000;
    publish_singles(addr, "singles", total);
    let before = stats(addr);
    assert!(before.messages_evicted > 0);
    let log_mib = before.disk_bytes as f64 / (1 << 20) as f64;
    assert!(log_mib > 6.0, "{} bytes of log", before.disk_bytes);
    // A span per 64 KiB of log (56 bytes, twice that at a deque's slack)
    // is 1.5 KiB per MiB; one entry per record would be ~280 KiB per MiB.
    let bound = |mib: f64| (4096.0 * mib) as u64 + 4096;
    let index = before.memory["log_index"];
    assert!(
        index > 0 && index <= bound(log_mib),
        "log_index {index} for {log_mib:.1} MiB of log"
    );
    catch_up(&mut sub, "singles", total, 4, || {
        let s = stats(addr);
        let mib = s.disk_bytes as f64 / (1 << 20) as f64;
        assert!(s.memory["log_index"] <= bound(mib.max(log_mib)));
    });
    wait_until("the backlog acknowledged", || {
        stats(addr).backlog_messages == 0
    });
    broker.stop().expect("stops");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_fetch_behind_the_cache_waits_for_its_read_and_a_deletion_answers_topic_deleted() {
    let mut node = Node::open(&SimFs::new(9));
    node.send(PUBLISHER, &Request::CreateTopic { topic: "t" });
    node.subscriber(SUB_A, "t");
    node.publish("t", 200);
    assert!(node.stats().messages_evicted > 0);
    let fetch = |offset| Request::Fetch {
        topic: "t",
        offset,
        max_messages: 10,
        max_bytes: u32::MAX,
    };
    // From offset 0, evicted: answered when the read is back, from the log.
    let id = node.send(SUB_B, &fetch(0));
    assert!(node.round().is_empty(), "the fetch waits for its read");
    assert_eq!(node.stats().disk_reads_outstanding, 1);
    // Its connection is not read meanwhile: one FETCH read per connection.
    assert!(!node.broker.wants_input(SUB_B));
    assert!(node.broker.wants_input(SUB_A));
    let replies = node.reads_back();
    let [(conn, got, Ok(Reply::Fetched(fetched)))] = &replies[..] else {
        panic!("{replies:?}")
    };
    assert_eq!((*conn, *got), (SUB_B, id));
    let offsets: Vec<u64> = fetched.messages.iter().map(|m| m.offset).collect();
    assert_eq!(offsets, (0..10).collect::<Vec<_>>());
    for m in &fetched.messages {
        assert_eq!(m.payload.as_ref(), payload(m.offset), "at {}", m.offset);
    }
    assert_eq!(fetched.next_offset, 10);
    assert!(node.broker.wants_input(SUB_B), "read again once answered");
    assert!(node.broker.take_resumable().contains(&SUB_B));
    assert!(node.stats().disk_messages_read >= 10);
    // Deleted while the next one reads: TOPIC_DELETED, and nothing held.
    let id = node.send(SUB_B, &fetch(10));
    assert!(node.round().is_empty());
    node.send(PUBLISHER, &Request::DeleteTopic { topic: "t" });
    node.round();
    let replies = node.reads_back();
    assert!(
        replies.contains(&(SUB_B, id, Err(ErrorCode::TopicDeleted))),
        "{replies:?}"
    );
    let s = node.stats();
    assert_eq!((s.disk_reads_outstanding, s.memory["disk_reads"]), (0, 0));
}
