//! Publishers paced, not refused (issue 10, item 1), over TCP against an
//! in-process broker: a publish to a full topic is held until there is
//! room, one connection's publishes to a topic keep their order, and a hold
//! ends in a refusal only at `publish_hold`. Every check reads a counter
//! (STATS) or a reply, never a clock.

mod common;

use common::*;
use courier::client::{Client, PullOptions};
use courier::protocol::{ErrorCode, Op, Reply, Request};
use std::collections::HashMap;
use std::time::Duration;

const PUBLISHERS: u32 = 16;
const PER_PUBLISHER: u32 = 2_000;

fn payload(publisher: u32, seq: u32) -> [u8; 8] {
    let mut bytes = [0u8; 8];
    bytes[..4].copy_from_slice(&publisher.to_be_bytes());
    bytes[4..].copy_from_slice(&seq.to_be_bytes());
    bytes
}

fn parse(payload: &[u8]) -> (u32, u32) {
    let word = |at: usize| {
        let mut b = [0u8; 4];
        b.copy_from_slice(&payload[at..at + 4]);
        u32::from_be_bytes(b)
    };
    (word(0), word(4))
}

#[test]
fn sixteen_pipelining_publishers_into_a_full_topic_are_held_not_refused() {
    let broker = start_broker_with(limits(|l| l.max_backlog_messages = 64));
    let addr = broker.addr();
    let mut admin = Client::connect(addr).expect("connect");
    admin.register_publisher().expect("register");
    admin.create_topic("t").expect("create");
    let mut subscriber = Client::connect(addr).expect("connect");
    subscriber.register_subscriber().expect("register");
    subscriber.subscribe("t").expect("subscribe");
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|p| {
            std::thread::spawn(move || {
                let mut client = Client::connect(addr).expect("connect");
                client.register_publisher().expect("register");
                let mut pipeline = client.pipeline(32);
                for seq in 0..PER_PUBLISHER {
                    pipeline.send("t", &payload(p, seq)).expect("send");
                }
                pipeline.finish()
            })
        })
        .collect();
    // A slow subscriber: a few messages a pull, acknowledged on the next.
    let slow = PullOptions {
        max_messages: 16,
        wait: Duration::from_millis(500),
        ack: true,
        ..PullOptions::default()
    };
    let total = (PUBLISHERS * PER_PUBLISHER) as usize;
    let mut next: HashMap<u32, u32> = HashMap::new();
    let mut received = 0;
    let mut pulls = 0;
    while received < total {
        pulls += 1;
        assert!(pulls < 10 * total, "delivery stalled at {received}");
        let batch = subscriber.pull(&slow).expect("pull");
        for message in batch.iter() {
            let (p, seq) = parse(message.payload);
            let expected = next.entry(p).or_insert(0);
            assert_eq!(seq, *expected, "publisher {p}: out of order or twice");
            *expected += 1;
            received += 1;
        }
    }
    for publisher in publishers {
        let completions = publisher.join().expect("publisher thread");
        assert_eq!(completions.len(), PER_PUBLISHER as usize);
        assert!(completions.iter().all(|c| c.is_ok()), "a publish failed");
    }
    assert!(next.values().all(|&n| n == PER_PUBLISHER));
    let stats = admin.stats().expect("stats");
    assert!(stats.publishes_held > 0, "no publish was ever held");
    assert_eq!(stats.errors.get("TOPIC_FULL"), None);
    assert_eq!(stats.held_now, 0);
    assert_eq!(stats.messages_in, u64::from(PUBLISHERS * PER_PUBLISHER));
}

/// A topic `t` that holds `bound` messages, full, with a subscriber that
/// has not pulled.
fn full_topic(bound: usize, hold: Duration) -> (courier::server::RunningServer, Raw, Raw) {
    let broker = start_broker_with(limits(|l| {
        l.max_backlog_messages = bound;
        l.publish_hold = hold;
    }));
    let mut publisher = Raw::publisher_with_topic(broker.addr(), "t");
    let (subscriber, _) = Raw::subscriber(broker.addr(), &["t"]);
    for i in 0..bound {
        publisher.publish("t", &[i as u8]);
    }
    (broker, publisher, subscriber)
}

#[test]
fn a_publish_held_past_the_hold_gets_topic_full_and_so_do_those_behind_it() {
    let (broker, mut publisher, _subscriber) = full_topic(2, Duration::from_millis(200));
    publisher.ok(Request::CreateTopic { topic: "other" });
    let ids: Vec<u64> = (0..3)
        .map(|i| {
            publisher.send(Request::Publish {
                topic: "t",
                payload: &[i],
            })
        })
        .collect();
    // A publish to another topic is not held back by them.
    let other = publisher.send(Request::Publish {
        topic: "other",
        payload: b"o",
    });
    let (got, reply) = publisher.recv(Op::Publish);
    assert_eq!(got, other);
    assert!(reply.is_ok());
    for &id in &ids {
        let (got, reply) = publisher.recv(Op::Publish);
        assert_eq!(got, id, "refused in request order");
        assert_eq!(reply.unwrap_err().code, ErrorCode::TopicFull);
    }
    let mut watcher = Raw::hello(broker.addr());
    let stats = watcher.stats();
    assert_eq!((stats.publishes_held, stats.held_now), (3, 0));
    assert_eq!(stats.errors.get("TOPIC_FULL"), Some(&3));
    assert_eq!(stats.backlog_messages, 2, "nothing of them was stored");
}

#[test]
fn a_connection_that_publishes_to_and_pulls_from_a_full_topic_makes_progress() {
    let broker = start_broker_with(limits(|l| l.max_backlog_messages = 4));
    let mut both = Raw::publisher_with_topic(broker.addr(), "t");
    both.ok(Request::RegisterSubscriber {
        resume: None,
        timeout_ms: None,
    });
    both.ok(Request::Subscribe { topic: "t" });
    const COUNT: u8 = 40;
    // Everything at once: most publishes are held behind the full topic,
    // while the pulls after them are executed and make the room.
    let mut publish_ids = Vec::new();
    for i in 0..COUNT {
        publish_ids.push(both.send(Request::Publish {
            topic: "t",
            payload: &[i],
        }));
    }
    let mut got = Vec::new();
    let mut published = Vec::new();
    let mut pulls = 0;
    while got.len() < usize::from(COUNT) || published.len() < usize::from(COUNT) {
        pulls += 1;
        assert!(pulls < 1000, "no progress: {} delivered", got.len());
        let pull_id = both.send(pull(Some("t"), 2, 1000, true));
        loop {
            let body = both.recv_frame().expect("a reply");
            let id = courier::codec::decode_reply_id(&body).expect("id");
            if id == pull_id {
                let (_, reply) = courier::codec::decode_reply(Op::Pull, &body).expect("pull");
                got.extend(messages(reply).into_iter().map(|m| m.2[0]));
                break;
            }
            let (_, reply) = courier::codec::decode_reply(Op::Publish, &body).expect("publish");
            assert!(matches!(reply, Ok(Reply::Published { .. })), "{reply:?}");
            published.push(id);
        }
    }
    assert_eq!(got, (0..COUNT).collect::<Vec<_>>());
    assert_eq!(published, publish_ids, "publish replies in request order");
    assert!(both.stats().publishes_held > 0);
}

#[test]
fn deleting_a_topic_answers_its_held_publishes_with_topic_deleted() {
    let (broker, mut publisher, _subscriber) = full_topic(1, Duration::from_secs(30));
    let held = publisher.send(Request::Publish {
        topic: "t",
        payload: b"held",
    });
    let mut deleter = Raw::publisher(broker.addr());
    wait_until("the publish to be held", || deleter.stats().held_now == 1);
    deleter.ok(Request::DeleteTopic { topic: "t" });
    let (got, reply) = publisher.recv(Op::Publish);
    assert_eq!(got, held);
    assert_eq!(reply.unwrap_err().code, ErrorCode::TopicDeleted);
    let stats = deleter.stats();
    assert_eq!(stats.held_now, 0);
    assert_eq!(stats.memory["held_requests"], 0);
}

#[test]
fn a_held_publish_is_still_answered_after_the_publisher_half_closes() {
    let (broker, mut publisher, mut subscriber) = full_topic(1, Duration::from_secs(30));
    let held = publisher.send(Request::Publish {
        topic: "t",
        payload: b"held",
    });
    let mut observer = Raw::hello(broker.addr());
    wait_until("the publish to be held", || observer.stats().held_now == 1);
    publisher
        .stream
        .shutdown(std::net::Shutdown::Write)
        .expect("half-close");
    // The acknowledgement makes room: the held publish is stored and its
    // reply still reaches the half-closed publisher.
    let got = messages(subscriber.call(pull(Some("t"), 10, 0, true)));
    assert_eq!(got.len(), 1);
    let acked = messages(subscriber.call(pull(Some("t"), 10, 0, true)));
    assert!(acked.len() <= 1, "{acked:?}");
    let (id, reply) = publisher.recv(Op::Publish);
    assert_eq!(id, held);
    assert!(
        matches!(reply, Ok(Reply::Published { offset: 1, .. })),
        "{reply:?}"
    );
    publisher.expect_closed();
}

#[test]
fn a_publisher_that_goes_away_leaves_nothing_held_once_the_hold_ends() {
    // A closed socket reads like a half-close, so the held publish is
    // settled as usual: here it is refused when its hold ends, and nothing
    // of it stays held or counted.
    let (broker, mut publisher, _subscriber) = full_topic(1, Duration::from_millis(300));
    publisher.send(Request::Publish {
        topic: "t",
        payload: b"held",
    });
    let mut watcher = Raw::hello(broker.addr());
    wait_until("the publish to be held", || watcher.stats().held_now == 1);
    drop(publisher);
    wait_until("the held publish to be settled", || {
        let stats = watcher.stats();
        stats.held_now == 0 && stats.memory["held_requests"] == 0
    });
    assert_eq!(
        watcher.stats().backlog_messages,
        1,
        "the refused one was not stored"
    );
}

#[test]
fn past_its_held_bytes_bound_a_connection_is_not_read_until_there_is_room() {
    const FRAME: usize = 4096;
    let broker = start_broker_with(limits(|l| {
        l.max_frame_bytes = FRAME;
        l.max_backlog_bytes = FRAME;
        l.max_backlog_messages = 1;
    }));
    let mut publisher = Raw::publisher_with_topic(broker.addr(), "t");
    let (mut subscriber, _) = Raw::subscriber(broker.addr(), &["t"]);
    let bound = broker_held_bound(FRAME);
    let payload = vec![1u8; 2048];
    // Far more than the bound: the broker stops reading at it, and the rest
    // waits in the socket buffers.
    let count = 3 * bound / payload.len() + 8;
    let mut frames = Vec::new();
    for i in 0..count {
        courier::codec::encode_request(
            &mut frames,
            1000 + i as u64,
            &Request::Publish {
                topic: "t",
                payload: &payload,
            },
        );
    }
    let writer = {
        let mut stream = publisher.stream.try_clone().expect("clone");
        std::thread::spawn(move || std::io::Write::write_all(&mut stream, &frames))
    };
    let mut watcher = Raw::hello(broker.addr());
    wait_until("reading to pause", || watcher.stats().held_input_pauses > 0);
    let stats = watcher.stats();
    assert!(
        stats.memory["held_requests"] <= (bound + FRAME) as u64,
        "held {} bytes, bound {bound}",
        stats.memory["held_requests"]
    );
    assert!(stats.messages_in < count as u64);
    // The subscriber drains: every publish is stored, in order, none lost.
    let mut delivered = 0;
    let mut pulls = 0;
    while delivered < count {
        pulls += 1;
        assert!(pulls < 100 * count, "stalled at {delivered} of {count}");
        delivered += messages(subscriber.call(pull(Some("t"), 1, 1000, true))).len();
    }
    writer.join().expect("writer").expect("write");
    for _ in 0..count {
        let (_, reply) = publisher.recv(Op::Publish);
        assert!(reply.is_ok(), "{reply:?}");
    }
    assert_eq!(watcher.stats().held_now, 0);
}

/// What `broker::Limits::max_held_bytes` makes of a frame size.
fn broker_held_bound(frame: usize) -> usize {
    courier::broker::Limits {
        max_frame_bytes: frame,
        ..courier::broker::Limits::default()
    }
    .max_held_bytes()
}

#[test]
fn at_the_memory_budget_a_publish_is_held_until_acks_free_memory() {
    let broker = start_broker_with(limits(|l| l.max_memory = 16 << 20));
    let mut publisher = Raw::publisher_with_topic(broker.addr(), "m");
    let (mut subscriber, _) = Raw::subscriber(broker.addr(), &["m"]);
    let payload = [3u8; 1000];
    let batch: Vec<&[u8]> = vec![&payload; 100];
    let mut scratch = Vec::new();
    let payloads = courier::codec::encode_payloads(&mut scratch, &batch);
    let mut watcher = Raw::hello(broker.addr());
    // Publish batches until one is held for memory.
    let mut sent = 0u64;
    let held = loop {
        assert!(sent < 1000, "never held");
        let id = publisher.send(Request::PublishBatch {
            topic: "m",
            payloads,
        });
        sent += 1;
        // Either it was stored or it is held; STATS on another connection
        // may run first, so wait for one or the other.
        let mut held_now = 0;
        wait_until("the batch to be stored or held", || {
            let stats = watcher.stats();
            held_now = stats.held_now;
            held_now > 0 || stats.messages_in == sent * 100
        });
        if held_now > 0 {
            break id;
        }
        let (got, reply) = publisher.recv(Op::PublishBatch);
        assert_eq!(got, id);
        assert!(reply.is_ok(), "{reply:?}");
    };
    // Draining and acknowledging frees memory, which admits the held batch.
    let mut drained = 0;
    while drained < (sent - 1) * 100 {
        let got = messages(subscriber.call(pull(Some("m"), 65_536, 0, true)));
        drained += got.len() as u64;
    }
    subscriber.call(pull(Some("m"), 1, 0, true)).ok();
    let (got, reply) = publisher.recv(Op::PublishBatch);
    assert_eq!(got, held);
    assert!(
        matches!(reply, Ok(Reply::PublishedBatch { count: 100, .. })),
        "{reply:?}"
    );
    assert_eq!(watcher.stats().errors.get("BROKER_FULL"), None);
}
