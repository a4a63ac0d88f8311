//! Every operation over real TCP against an in-process broker: the handshake,
//! replies and their ordering, delivery, resume, limits and every error code
//! a well-formed request can get.

mod common;

use common::*;
use courier::protocol::{ErrorCode, Op, Reply, Request};
use courier::server::Config;
use std::io::Write;
use std::time::{Duration, Instant};

#[test]
fn hello_announces_the_version_and_limits() {
    let broker = start_broker();
    let mut raw = Raw::connect(broker.addr());
    let Ok(Reply::Hello(info)) = raw.call(Request::Hello {
        version: courier::PROTOCOL_VERSION,
        client_name: "t",
        credentials: None,
    }) else {
        panic!("no hello")
    };
    assert_eq!(info.version, courier::PROTOCOL_VERSION);
    assert_eq!(info.max_frame_bytes, 1 << 20);
    assert_eq!(info.max_payload_bytes, (1 << 20) - 512);
    assert_eq!(
        raw.error(Request::Hello {
            version: courier::PROTOCOL_VERSION,
            client_name: "t",
            credentials: None,
        }),
        ErrorCode::HandshakeRepeated
    );
    raw.ok(Request::Stats);
}

#[test]
fn a_request_before_hello_is_refused_and_the_connection_closed() {
    let broker = start_broker();
    let mut raw = Raw::connect(broker.addr());
    assert_eq!(raw.error(Request::Stats), ErrorCode::HandshakeRequired);
    raw.expect_closed();
}

#[test]
fn an_unsupported_version_is_refused_and_the_connection_closed() {
    let broker = start_broker();
    // Version 1 (before END_SESSION, LIST_TOPICS and TOPIC_INFO) and a
    // version from the future.
    for version in [1, courier::PROTOCOL_VERSION + 1] {
        let mut raw = Raw::connect(broker.addr());
        assert_eq!(
            raw.error(Request::Hello {
                version,
                client_name: "t",
                credentials: None,
            }),
            ErrorCode::UnsupportedVersion
        );
        raw.expect_closed();
    }
}

#[test]
fn topics_are_created_published_to_and_deleted() {
    let broker = start_broker();
    let mut publisher = Raw::hello(broker.addr());
    assert_eq!(
        publisher.error(Request::CreateTopic { topic: "t" }),
        ErrorCode::NotRegistered
    );
    let Reply::PublisherRegistered { publisher_id } = publisher.ok(Request::RegisterPublisher)
    else {
        panic!()
    };
    assert_eq!(
        publisher.ok(Request::RegisterPublisher),
        Reply::PublisherRegistered { publisher_id }
    );
    assert_eq!(
        publisher.ok(Request::CreateTopic { topic: "t" }),
        Reply::Done
    );
    assert_eq!(
        publisher.error(Request::CreateTopic { topic: "t" }),
        ErrorCode::TopicExists
    );
    for bad in ["", "with space", "a/b", &"x".repeat(256)] {
        assert_eq!(
            publisher.error(Request::CreateTopic { topic: bad }),
            ErrorCode::InvalidTopicName
        );
    }
    assert_eq!(
        publisher.error(Request::Publish {
            topic: "nope",
            payload: b"x"
        }),
        ErrorCode::UnknownTopic
    );
    assert_eq!(publisher.publish("t", b"x"), 0);
    assert_eq!(publisher.publish("t", b"y"), 1);
    assert_eq!(
        publisher.publish_batch("t", &[b"a", b"b", b"c"]),
        Reply::PublishedBatch {
            first_offset: 2,
            count: 3,
            subscribers: 0
        }
    );
    assert_eq!(
        publisher.publish_batch("t", &[]),
        Reply::PublishedBatch {
            first_offset: 5,
            count: 0,
            subscribers: 0
        }
    );
    assert_eq!(
        publisher.ok(Request::DeleteTopic { topic: "t" }),
        Reply::Done
    );
    assert_eq!(
        publisher.error(Request::DeleteTopic { topic: "t" }),
        ErrorCode::UnknownTopic
    );
    // A new topic of the same name starts again at offset 0.
    publisher.ok(Request::CreateTopic { topic: "t" });
    assert_eq!(publisher.publish("t", b"x"), 0);
}

#[test]
fn binary_payloads_round_trip_exactly_including_empty_and_large() {
    let broker = start_broker();
    let mut publisher = Raw::publisher_with_topic(broker.addr(), "bin");
    let (mut subscriber, _) = Raw::subscriber(broker.addr(), &["bin"]);
    let all_bytes: Vec<u8> = (0..=255u8).collect();
    let large = vec![0xA5u8; (1 << 20) - 512];
    let sent: Vec<&[u8]> = vec![b"", &all_bytes, b"\0\0\xff", &large];
    for payload in &sent {
        publisher.publish("bin", payload);
    }
    let mut got = Vec::new();
    while got.len() < sent.len() {
        got.extend(messages(subscriber.call(pull(None, 100, 1000, true))));
    }
    let payloads: Vec<&[u8]> = got.iter().map(|(_, _, p)| p.as_slice()).collect();
    assert_eq!(payloads, sent);
    assert_eq!(
        publisher.error(Request::Publish {
            topic: "bin",
            payload: &vec![0u8; (1 << 20) - 511]
        }),
        ErrorCode::PayloadTooLarge
    );
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let broker = start_broker();
    let mut publisher = Raw::publisher_with_topic(broker.addr(), "p");
    let (mut subscriber, _) = Raw::subscriber(broker.addr(), &["p"]);
    let mut bytes = Vec::new();
    for i in 0..5000u64 {
        courier::codec::encode_request(
            &mut bytes,
            10_000 + i,
            &Request::Publish {
                topic: "p",
                payload: &i.to_be_bytes(),
            },
        );
    }
    publisher.send_bytes(&bytes);
    for i in 0..5000u64 {
        let (id, reply) = publisher.recv(Op::Publish);
        assert_eq!(id, 10_000 + i);
        assert_eq!(
            reply,
            Ok(Reply::Published {
                offset: i,
                subscribers: 1
            })
        );
    }
    let mut received = Vec::new();
    while received.len() < 5000 {
        received.extend(messages(subscriber.call(pull(Some("p"), 1000, 1000, true))));
    }
    for (i, (_, offset, payload)) in received.iter().enumerate() {
        assert_eq!(*offset, i as u64);
        assert_eq!(payload, &(i as u64).to_be_bytes());
    }
}

#[test]
fn a_waiting_pull_is_woken_by_a_publish_and_later_requests_are_not_held_up() {
    let broker = start_broker();
    let mut publisher = Raw::publisher_with_topic(broker.addr(), "w");
    let (mut subscriber, _) = Raw::subscriber(broker.addr(), &["w"]);
    let pull_id = subscriber.send(pull(None, 10, 30_000, false));
    // A request sent after the parked pull is answered first.
    let stats_id = subscriber.send(Request::Stats);
    let (id, reply) = subscriber.recv(Op::Stats);
    assert_eq!(id, stats_id);
    let Ok(Reply::Stats(stats)) = reply else {
        panic!()
    };
    assert_eq!(stats.waiting_pulls, 1);

    let sent = Instant::now();
    publisher.publish("w", b"wake up");
    let (id, reply) = subscriber.recv(Op::Pull);
    assert_eq!(id, pull_id);
    assert!(sent.elapsed() < Duration::from_secs(5));
    assert_eq!(
        messages(Ok(reply.unwrap())),
        vec![("w".to_string(), 0, b"wake up".to_vec())]
    );
}

#[test]
fn a_waiting_pull_times_out_with_an_empty_reply() {
    let broker = start_broker();
    let _publisher = Raw::publisher_with_topic(broker.addr(), "quiet");
    let (mut subscriber, _) = Raw::subscriber(broker.addr(), &["quiet"]);
    let start = Instant::now();
    let got = messages(subscriber.call(pull(None, 10, 200, false)));
    assert!(got.is_empty());
    assert!(start.elapsed() >= Duration::from_millis(190));
    // wait_ms = 0 answers at once.
    assert!(messages(subscriber.call(pull(None, 10, 0, false))).is_empty());
}

#[test]
fn every_subscriber_gets_every_message_in_order() {
    let broker = start_broker();
    let mut publisher = Raw::publisher_with_topic(broker.addr(), "fan");
    let mut subscribers: Vec<Raw> = (0..4)
        .map(|_| Raw::subscriber(broker.addr(), &["fan"]).0)
        .collect();
    for i in 0..300u32 {
        let Reply::Published { subscribers: n, .. } = publisher.ok(Request::Publish {
            topic: "fan",
            payload: &i.to_le_bytes(),
        }) else {
            panic!()
        };
        assert_eq!(n, 4);
    }
    for subscriber in &mut subscribers {
        let mut got = Vec::new();
        while got.len() < 300 {
            got.extend(messages(subscriber.call(pull(None, 64, 1000, true))));
        }
        let expected: Vec<_> = (0..300u32)
            .map(|i| ("fan".to_string(), u64::from(i), i.to_le_bytes().to_vec()))
            .collect();
        assert_eq!(got, expected);
        subscriber.ok(Request::Ack {
            topic: "fan",
            offset: 300,
        });
    }
    wait_until("backlog released", || {
        publisher.stats().backlog_messages == 0
    });
}

/// Topics "a" and "b" with ten 100-byte messages each, and a subscriber of
/// both that has pulled nothing yet.
fn ten_each_on_a_and_b(broker: &courier::server::RunningServer) -> Raw {
    let mut publisher = Raw::publisher(broker.addr());
    for t in ["a", "b"] {
        publisher.ok(Request::CreateTopic { topic: t });
    }
    let (subscriber, _) = Raw::subscriber(broker.addr(), &["a", "b"]);
    for i in 0..10u8 {
        publisher.publish("a", &[i; 100]);
        publisher.publish("b", &[i; 100]);
    }
    subscriber
}

#[test]
fn pull_limits_and_all_topics_pulls_take_turns() {
    let broker = start_broker();
    let mut subscriber = ten_each_on_a_and_b(&broker);
    // max_messages.
    let got = messages(subscriber.call(pull(Some("a"), 3, 0, false)));
    assert_eq!(got.len(), 3);
    // max_bytes: 250 bytes allows two 100-byte messages; 0 still gives one.
    let got = messages(subscriber.call(courier_pull(Some("a"), 100, 250)));
    assert_eq!(got.iter().map(|m| m.1).collect::<Vec<_>>(), vec![3, 4]);
    let got = messages(subscriber.call(courier_pull(Some("a"), 100, 0)));
    assert_eq!(got.len(), 1);
    // All topics: both topics appear, a's rest and b's ten.
    let got = messages(subscriber.call(pull(None, 100, 0, false)));
    assert_eq!(got.iter().filter(|m| m.0 == "a").count(), 4);
    assert_eq!(got.iter().filter(|m| m.0 == "b").count(), 10);
}

#[test]
fn idle_topics_pass_their_turn_in_all_topics_pulls() {
    let broker = start_broker();
    let mut publisher = Raw::publisher(broker.addr());
    let topics = ["a", "b", "idle1", "idle2", "idle3", "idle4"];
    for topic in topics {
        publisher.ok(Request::CreateTopic { topic });
    }
    let (mut subscriber, _) = Raw::subscriber(broker.addr(), &topics);
    for i in 0..12u8 {
        publisher.publish("a", &[i]);
        publisher.publish("b", &[i]);
    }
    let firsts: Vec<String> = (0..12)
        .map(|_| {
            messages(subscriber.call(pull(None, 1, 0, true)))
                .remove(0)
                .0
        })
        .collect();
    let alternating: Vec<String> = ["a", "b"]
        .iter()
        .cycle()
        .take(12)
        .map(|t| t.to_string())
        .collect();
    assert_eq!(firsts, alternating);
}

fn courier_pull(topic: Option<&str>, max_messages: u32, max_bytes: u32) -> Request<'_> {
    Request::Pull(courier::protocol::Pull {
        topic,
        max_messages,
        max_bytes,
        wait_ms: 0,
        ack: false,
    })
}

#[test]
fn subscriber_errors_are_typed() {
    let broker = start_broker();
    let mut publisher = Raw::publisher_with_topic(broker.addr(), "e");
    let mut raw = Raw::hello(broker.addr());
    assert_eq!(
        raw.error(Request::Subscribe { topic: "e" }),
        ErrorCode::NotRegistered
    );
    assert_eq!(raw.error(pull(None, 1, 0, false)), ErrorCode::NotRegistered);
    assert_eq!(
        raw.error(Request::RegisterSubscriber {
            resume: Some(12345),
            timeout_ms: None,
        }),
        ErrorCode::UnknownSubscriber
    );
    raw.ok(Request::RegisterSubscriber {
        resume: None,
        timeout_ms: None,
    });
    assert_eq!(
        raw.error(Request::Subscribe { topic: "nope" }),
        ErrorCode::UnknownTopic
    );
    assert_eq!(
        raw.error(Request::Subscribe { topic: "bad name" }),
        ErrorCode::InvalidTopicName
    );
    assert_eq!(
        raw.error(pull(Some("e"), 1, 0, false)),
        ErrorCode::NotSubscribed
    );
    assert_eq!(
        raw.error(Request::Unsubscribe { topic: "e" }),
        ErrorCode::NotSubscribed
    );
    assert_eq!(
        raw.error(Request::Ack {
            topic: "e",
            offset: 0
        }),
        ErrorCode::NotSubscribed
    );
    assert_eq!(
        raw.ok(Request::Subscribe { topic: "e" }),
        Reply::Subscribed { next_offset: 0 }
    );
    assert_eq!(
        raw.error(Request::Ack {
            topic: "e",
            offset: 1
        }),
        ErrorCode::InvalidAck
    );
    publisher.publish("e", b"1");
    assert_eq!(messages(raw.call(pull(None, 10, 0, false))).len(), 1);
    assert_eq!(
        raw.ok(Request::Ack {
            topic: "e",
            offset: 1
        }),
        Reply::Done
    );
    assert_eq!(raw.ok(Request::Unsubscribe { topic: "e" }), Reply::Done);
    assert_eq!(
        publisher.ok(Request::Publish {
            topic: "e",
            payload: b"2"
        }),
        Reply::Published {
            offset: 1,
            subscribers: 0
        }
    );
}

#[test]
fn without_a_hold_a_full_topic_refuses_publishes_until_subscribers_acknowledge() {
    let broker = start_broker_with(limits(|l| {
        l.max_backlog_bytes = 1 << 20;
        l.max_frame_bytes = 1 << 20;
        l.max_backlog_messages = 10;
        l.publish_hold = Duration::ZERO;
    }));
    let mut publisher = Raw::publisher_with_topic(broker.addr(), "f");
    let (mut subscriber, _) = Raw::subscriber(broker.addr(), &["f"]);
    for i in 0..10u8 {
        publisher.publish("f", &[i]);
    }
    assert_eq!(
        publisher.error(Request::Publish {
            topic: "f",
            payload: b"x"
        }),
        ErrorCode::TopicFull
    );
    // A batch is all or nothing.
    let mut scratch = Vec::new();
    let payloads = courier::codec::encode_payloads(&mut scratch, &[b"y"]);
    assert_eq!(
        publisher.error(Request::PublishBatch {
            topic: "f",
            payloads
        }),
        ErrorCode::TopicFull
    );
    assert!(ErrorCode::TopicFull.is_retryable());
    let got = messages(subscriber.call(pull(None, 4, 0, false)));
    assert_eq!(got.len(), 4);
    subscriber.ok(Request::Ack {
        topic: "f",
        offset: 4,
    });
    assert_eq!(publisher.publish("f", b"x"), 10);
    let stats = publisher.stats();
    assert_eq!(stats.backlog_messages, 7);
    assert_eq!(stats.errors.get("TOPIC_FULL"), Some(&2));
    // Bytes bound too.
    let broker = start_broker_with(limits(|l| {
        l.max_frame_bytes = 4096;
        l.max_backlog_bytes = 8192;
        l.publish_hold = Duration::ZERO;
    }));
    let mut publisher = Raw::publisher_with_topic(broker.addr(), "g");
    let (_subscriber, _) = Raw::subscriber(broker.addr(), &["g"]);
    publisher.publish("g", &[0; 3000]);
    publisher.publish("g", &[0; 3000]);
    assert_eq!(
        publisher.error(Request::Publish {
            topic: "g",
            payload: &[0; 3000]
        }),
        ErrorCode::TopicFull
    );
}

#[test]
fn deleting_a_topic_answers_waiting_pulls_with_topic_deleted() {
    let broker = start_broker();
    let mut publisher = Raw::publisher_with_topic(broker.addr(), "d");
    publisher.ok(Request::CreateTopic { topic: "keep" });
    let (mut one, _) = Raw::subscriber(broker.addr(), &["d"]);
    let (mut all, _) = Raw::subscriber(broker.addr(), &["d", "keep"]);
    let one_id = one.send(pull(Some("d"), 1, 30_000, false));
    let all_id = all.send(pull(None, 1, 30_000, false));
    wait_until("both pulls parked", || publisher.stats().waiting_pulls == 2);
    publisher.ok(Request::DeleteTopic { topic: "d" });
    for (raw, id) in [(&mut one, one_id), (&mut all, all_id)] {
        let (got, reply) = raw.recv(Op::Pull);
        assert_eq!(got, id);
        assert_eq!(reply.unwrap_err().code, ErrorCode::TopicDeleted);
    }
    // The all-topics subscriber goes on with the topic that remains.
    let Reply::SubscriberRegistered { .. } = all.ok(Request::RegisterSubscriber {
        resume: None,
        timeout_ms: None,
    }) else {
        panic!()
    };
    assert_eq!(
        one.error(pull(Some("d"), 1, 0, false)),
        ErrorCode::UnknownTopic
    );
}

#[test]
fn a_resumed_subscriber_gets_again_what_it_did_not_acknowledge() {
    let broker = start_broker();
    let mut publisher = Raw::publisher_with_topic(broker.addr(), "r");
    let (mut first, id) = Raw::subscriber(broker.addr(), &["r"]);
    for i in 0..10u8 {
        publisher.publish("r", &[i]);
    }
    let got = messages(first.call(pull(None, 4, 0, false)));
    assert_eq!(got.len(), 4);
    // Within a connection, nothing comes twice.
    let got = messages(first.call(pull(None, 3, 0, true)));
    assert_eq!(got.iter().map(|m| m.1).collect::<Vec<_>>(), vec![4, 5, 6]);
    drop(first);
    wait_until("disconnect noticed", || publisher.stats().connections == 1);

    let mut second = Raw::hello(broker.addr());
    assert_eq!(
        second.ok(Request::RegisterSubscriber {
            resume: Some(id),
            timeout_ms: None
        }),
        Reply::SubscriberRegistered {
            subscriber_id: id,
            topics: vec!["r".into()],
            more: false,
        }
    );
    // 0..4 were acknowledged by the pull with ack; 4, 5, 6 were not.
    let got = messages(second.call(pull(None, 100, 0, true)));
    assert_eq!(
        got.iter().map(|m| m.1).collect::<Vec<_>>(),
        (4..10).collect::<Vec<_>>()
    );
}

#[test]
fn resuming_a_live_session_takes_it_over() {
    let broker = start_broker();
    let mut publisher = Raw::publisher_with_topic(broker.addr(), "o");
    let (mut first, id) = Raw::subscriber(broker.addr(), &["o"]);
    let parked = first.send(pull(None, 1, 30_000, false));
    wait_until("pull parked", || publisher.stats().waiting_pulls == 1);
    let mut second = Raw::hello(broker.addr());
    second.ok(Request::RegisterSubscriber {
        resume: Some(id),
        timeout_ms: None,
    });
    let (got, reply) = first.recv(Op::Pull);
    assert_eq!(got, parked);
    assert_eq!(reply.unwrap_err().code, ErrorCode::SessionTakenOver);
    assert_eq!(
        first.error(pull(None, 1, 0, false)),
        ErrorCode::NotRegistered
    );
    publisher.publish("o", b"x");
    assert_eq!(messages(second.call(pull(None, 1, 1000, false))).len(), 1);
}

#[test]
fn an_abandoned_session_expires_and_releases_its_backlog() {
    let broker = start_broker_with(limits(|l| {
        l.session_timeout = Duration::from_millis(200);
    }));
    let mut publisher = Raw::publisher_with_topic(broker.addr(), "x");
    let (subscriber, id) = Raw::subscriber(broker.addr(), &["x"]);
    publisher.publish("x", b"kept until expiry");
    assert_eq!(publisher.stats().backlog_messages, 1);
    drop(subscriber);
    wait_until("session expiry", || publisher.stats().subscribers == 0);
    assert_eq!(publisher.stats().backlog_messages, 0);
    let mut late = Raw::hello(broker.addr());
    assert_eq!(
        late.error(Request::RegisterSubscriber {
            resume: Some(id),
            timeout_ms: None
        }),
        ErrorCode::UnknownSubscriber
    );
}

#[test]
fn topic_and_subscriber_counts_are_bounded() {
    let broker = start_broker_with(limits(|l| {
        l.max_topics = 2;
        l.max_subscribers_per_topic = 1;
    }));
    let mut publisher = Raw::publisher_with_topic(broker.addr(), "one");
    publisher.ok(Request::CreateTopic { topic: "two" });
    assert_eq!(
        publisher.error(Request::CreateTopic { topic: "three" }),
        ErrorCode::TooManyTopics
    );
    let _first = Raw::subscriber(broker.addr(), &["one"]);
    let mut second = Raw::hello(broker.addr());
    second.ok(Request::RegisterSubscriber {
        resume: None,
        timeout_ms: None,
    });
    assert_eq!(
        second.error(Request::Subscribe { topic: "one" }),
        ErrorCode::TooManySubscribers
    );
}

#[test]
fn stats_count_what_happened() {
    let broker = start_broker();
    let mut publisher = Raw::publisher_with_topic(broker.addr(), "s");
    let (mut subscriber, _) = Raw::subscriber(broker.addr(), &["s"]);
    publisher.publish_batch("s", &[b"abc", b"de"]);
    messages(subscriber.call(pull(None, 10, 0, false)));
    publisher.error(Request::CreateTopic { topic: "s" });
    let stats = publisher.stats();
    assert_eq!(stats.connections, 2);
    assert_eq!(stats.topics, 1);
    assert_eq!(stats.publishers, 1);
    assert_eq!(stats.subscribers, 1);
    assert_eq!(stats.subscriptions, 1);
    assert_eq!(stats.messages_in, 2);
    assert_eq!(stats.messages_out, 2);
    assert_eq!(stats.bytes_in, 5);
    assert_eq!(stats.bytes_out, 5);
    assert_eq!(stats.backlog_messages, 2);
    assert_eq!(stats.backlog_bytes, 5);
    assert_eq!(stats.errors.get("TOPIC_EXISTS"), Some(&1));
}

#[test]
fn shutdown_answers_waiting_pulls_and_tells_every_client() {
    let broker = start_broker_with(Config::default());
    let mut publisher = Raw::publisher_with_topic(broker.addr(), "z");
    let (mut subscriber, _) = Raw::subscriber(broker.addr(), &["z"]);
    let parked = subscriber.send(pull(None, 1, 30_000, false));
    wait_until("pull parked", || publisher.stats().waiting_pulls == 1);
    broker.stop().expect("clean stop");
    let (id, reply) = subscriber.recv(Op::Pull);
    assert_eq!(id, parked);
    assert_eq!(reply.unwrap_err().code, ErrorCode::ShuttingDown);
    subscriber.expect_closed();
    let frames = publisher.expect_closed();
    assert_eq!(frames.len(), 1);
}

#[test]
fn registering_again_answers_the_connections_waiting_pull() {
    let broker = start_broker();
    let mut publisher = Raw::publisher_with_topic(broker.addr(), "again");
    let (mut subscriber, id) = Raw::subscriber(broker.addr(), &["again"]);
    for resume in [None, Some(id)] {
        let parked = subscriber.send(pull(None, 10, 30_000, false));
        let register = subscriber.send(Request::RegisterSubscriber {
            resume,
            timeout_ms: None,
        });
        let (got, reply) = subscriber.recv(Op::Pull);
        assert_eq!(got, parked);
        assert!(messages(reply).is_empty());
        let (got, reply) = subscriber.recv(Op::RegisterSubscriber);
        assert_eq!(got, register);
        assert!(matches!(reply, Ok(Reply::SubscriberRegistered { .. })));
    }
    assert_eq!(publisher.stats().waiting_pulls, 0);
}

// Behaviour PROTOCOL.md settles explicitly: each test below pins one sentence.

#[test]
fn one_connection_may_be_publisher_and_subscriber() {
    let broker = start_broker();
    let mut both = Raw::hello(broker.addr());
    both.ok(Request::RegisterSubscriber {
        resume: None,
        timeout_ms: None,
    });
    both.ok(Request::RegisterPublisher);
    both.ok(Request::CreateTopic { topic: "self" });
    both.ok(Request::Subscribe { topic: "self" });
    both.publish("self", b"to me");
    assert_eq!(
        messages(both.call(pull(None, 10, 0, true))),
        vec![("self".into(), 0, b"to me".to_vec())]
    );
}

#[test]
fn a_batch_fills_the_frame_exactly_as_the_size_table_says() {
    let broker = start_broker();
    let mut publisher = Raw::publisher_with_topic(broker.addr(), "news");
    let payload = [7u8; 1000];
    // 1,045 payloads of 1,000 bytes, id 9, topic "news": a body of 1,048,146.
    let fits = vec![&payload[..]; 1045];
    let mut frame = Vec::new();
    courier::codec::encode_publish_batch(&mut frame, 9, "news", &fits);
    assert_eq!(frame.len() - 4, 1_048_146);
    publisher.send_bytes(&frame);
    let (id, reply) = publisher.recv(Op::PublishBatch);
    assert_eq!(id, 9);
    assert!(
        matches!(reply, Ok(Reply::PublishedBatch { count: 1045, .. })),
        "{reply:?}"
    );
    // 1,046 make 1,049,149 bytes: over the 1,048,576 limit.
    let too_many = vec![&payload[..]; 1046];
    frame.clear();
    courier::codec::encode_publish_batch(&mut frame, 10, "news", &too_many);
    assert_eq!(frame.len() - 4, 1_049_149);
    // The broker refuses on the header and closes: the rest of the frame
    // may meet a closed socket, so a failed write is expected, not fatal.
    // Its lingering close reads and discards the rest, so the error is not
    // destroyed by a reset before it is read.
    let _ = publisher.stream.write_all(&frame);
    let (id, reply) = publisher.recv(Op::PublishBatch);
    assert_eq!((id, reply.unwrap_err().code), (0, ErrorCode::FrameTooLarge));
}

#[test]
fn integers_and_headers_of_any_width_are_accepted() {
    let broker = start_broker();
    let mut raw = Raw::connect(broker.addr());
    let bodies: &[(&[u8], Op)] = &[
        // HELLO as an array 16, version 2 as a uint 64, name as a str 8.
        (
            b"\xdc\x00\x04\x01\x01\xcf\x00\x00\x00\x00\x00\x00\x00\x02\xd9\x04demo",
            Op::Hello,
        ),
        // REGISTER_PUBLISHER as an array 32, op as an int 8, id 2 as a uint 16.
        (
            b"\xdd\x00\x00\x00\x02\xd0\x02\xcd\x00\x02",
            Op::RegisterPublisher,
        ),
        // CREATE_TOPIC "n" with the name as a str 32.
        (b"\x93\x03\x03\xdb\x00\x00\x00\x01n", Op::CreateTopic),
        (b"\x93\x07\x04\xc0", Op::RegisterSubscriber),
        (b"\x93\x08\x05\xa1n", Op::Subscribe),
        // PUBLISH with the topic as a str 16 and the payload as a bin 32.
        (
            b"\x94\x05\x06\xda\x00\x01n\xc6\x00\x00\x00\x02hi",
            Op::Publish,
        ),
    ];
    for (body, op) in bodies {
        raw.send_body(body);
        let (_, reply) = raw.recv(*op);
        assert!(reply.is_ok(), "{body:02x?}: {reply:?}");
    }
    // PULL with max_messages as a uint 64, max_bytes as a uint 32 and
    // wait_ms as an int 32.
    raw.send_body(
        b"\x97\x0a\x07\xa1n\xcf\x00\x00\x00\x00\x00\x00\x00\x0a\xce\x00\x00\xff\xff\xd2\x00\x00\x00\x00\xc2",
    );
    let (id, reply) = raw.recv(Op::Pull);
    assert_eq!(id, 7);
    assert_eq!(messages(reply), vec![("n".into(), 0, b"hi".to_vec())]);
}

#[test]
fn a_failed_resume_keeps_the_session_already_held() {
    let broker = start_broker();
    let mut publisher = Raw::publisher_with_topic(broker.addr(), "kept");
    let (mut subscriber, id) = Raw::subscriber(broker.addr(), &["kept"]);
    // The waiting pull is answered first, even though the resume fails.
    let parked = subscriber.send(pull(None, 10, 30_000, false));
    let resume = subscriber.send(Request::RegisterSubscriber {
        resume: Some(id ^ 1),
        timeout_ms: None,
    });
    let (got, reply) = subscriber.recv(Op::Pull);
    assert_eq!(got, parked);
    assert!(messages(reply).is_empty());
    let (got, reply) = subscriber.recv(Op::RegisterSubscriber);
    assert_eq!(got, resume);
    assert_eq!(reply.unwrap_err().code, ErrorCode::UnknownSubscriber);
    publisher.publish("kept", b"still mine");
    assert_eq!(
        messages(subscriber.call(pull(Some("kept"), 10, 5000, false))),
        vec![("kept".into(), 0, b"still mine".to_vec())]
    );
}

#[test]
fn any_publisher_may_delete_any_topic() {
    let broker = start_broker();
    let mut creator = Raw::publisher(broker.addr());
    let mut other = Raw::publisher(broker.addr());
    creator.ok(Request::CreateTopic { topic: "shared" });
    assert_eq!(
        other.ok(Request::DeleteTopic { topic: "shared" }),
        Reply::Done
    );
    assert_eq!(
        creator.error(Request::DeleteTopic { topic: "shared" }),
        ErrorCode::UnknownTopic
    );
}

#[test]
fn one_pulls_budget_is_shared_by_all_its_topics() {
    let broker = start_broker();
    let mut subscriber = ten_each_on_a_and_b(&broker);
    assert_eq!(messages(subscriber.call(pull(None, 5, 0, false))).len(), 5);
    // 250 bytes: the first 100-byte message, one more, and no third.
    assert_eq!(
        messages(subscriber.call(courier_pull(None, 100, 250))).len(),
        2
    );
}

#[test]
fn after_topic_deleted_an_all_topics_pull_just_pulls_again() {
    let broker = start_broker();
    let mut publisher = Raw::publisher_with_topic(broker.addr(), "gone");
    publisher.ok(Request::CreateTopic { topic: "stays" });
    let (mut subscriber, _) = Raw::subscriber(broker.addr(), &["gone", "stays"]);
    let parked = subscriber.send(pull(None, 10, 30_000, false));
    wait_until("pull parked", || publisher.stats().waiting_pulls == 1);
    publisher.ok(Request::DeleteTopic { topic: "gone" });
    let (got, reply) = subscriber.recv(Op::Pull);
    assert_eq!(got, parked);
    assert_eq!(reply.unwrap_err().code, ErrorCode::TopicDeleted);
    publisher.publish("stays", b"x");
    assert_eq!(
        messages(subscriber.call(pull(None, 10, 5000, false))),
        vec![("stays".into(), 0, b"x".to_vec())]
    );
}

#[test]
fn at_the_memory_budget_publishes_get_broker_full_and_pulls_still_drain() {
    let broker = start_broker_with(limits(|l| {
        l.max_memory = 4 << 20;
        l.publish_hold = Duration::ZERO;
    }));
    let mut publisher = Raw::publisher_with_topic(broker.addr(), "m");
    let (mut subscriber, _) = Raw::subscriber(broker.addr(), &["m"]);
    let payload = [3u8; 1000];
    let batch: Vec<&[u8]> = vec![&payload; 100];
    let mut scratch = Vec::new();
    let payloads = courier::codec::encode_payloads(&mut scratch, &batch);
    let mut stored = 0;
    let refused = loop {
        assert!(stored < 1000, "never refused");
        match publisher.call(Request::PublishBatch {
            topic: "m",
            payloads,
        }) {
            Ok(_) => stored += 1,
            Err(e) => break e.code,
        }
    };
    assert_eq!(refused, ErrorCode::BrokerFull);
    assert!(refused.is_retryable() && !refused.closes_connection());
    let stats = publisher.stats();
    assert_eq!(stats.backlog_messages, stored * 100, "all or nothing");
    assert!(stats.memory_total <= stats.memory_limit);
    assert_eq!(stats.memory_limit, 4 << 20);
    assert!(stats.memory["payloads"] >= stored * 100 * 1000);
    assert_eq!(stats.errors.get("BROKER_FULL"), Some(&1));
    // Pulls and acks work at the budget, and free room for publishes.
    let mut drained = 0;
    while drained < stored * 100 {
        let got = messages(subscriber.call(pull(Some("m"), 65_536, 0, true)));
        assert!(!got.is_empty(), "the backlog drains");
        drained += got.len() as u64;
    }
    subscriber.ok(Request::Ack {
        topic: "m",
        offset: drained,
    });
    assert_eq!(publisher.stats().memory["payloads"], 0);
    assert!(matches!(
        publisher.call(Request::PublishBatch {
            topic: "m",
            payloads
        }),
        Ok(Reply::PublishedBatch { count: 100, .. })
    ));
}

#[test]
fn sessions_and_subscriptions_have_their_limits() {
    let broker = start_broker_with(limits(|l| {
        l.max_sessions = 3;
        l.max_subscriptions_per_session = 2;
    }));
    let mut publisher = Raw::publisher(broker.addr());
    for topic in ["a", "b", "c"] {
        publisher.ok(Request::CreateTopic { topic });
    }
    let (mut subscriber, _) = Raw::subscriber(broker.addr(), &["a", "b"]);
    assert_eq!(
        subscriber.error(Request::Subscribe { topic: "c" }),
        ErrorCode::TooManySubscriptions
    );
    // Each registration leaves the one before detached, still counted.
    subscriber.ok(Request::RegisterSubscriber {
        resume: None,
        timeout_ms: None,
    });
    subscriber.ok(Request::RegisterSubscriber {
        resume: None,
        timeout_ms: None,
    });
    assert_eq!(
        subscriber.error(Request::RegisterSubscriber {
            resume: None,
            timeout_ms: None
        }),
        ErrorCode::TooManySessions
    );
    assert_eq!(publisher.stats().subscribers, 3);
}

#[test]
fn a_batch_over_the_topic_bounds_is_batch_too_large() {
    let broker = start_broker_with(limits(|l| l.max_backlog_messages = 5));
    let mut publisher = Raw::publisher_with_topic(broker.addr(), "b");
    let (_subscriber, _) = Raw::subscriber(broker.addr(), &["b"]);
    let batch: Vec<&[u8]> = vec![b"x"; 6];
    let mut scratch = Vec::new();
    let code = publisher.error(Request::PublishBatch {
        topic: "b",
        payloads: courier::codec::encode_payloads(&mut scratch, &batch),
    });
    assert_eq!(code, ErrorCode::BatchTooLarge);
    assert!(!code.is_retryable());
}

#[test]
fn session_ids_are_not_related_to_each_other() {
    let broker = start_broker();
    let mut raw = Raw::hello(broker.addr());
    let ids: Vec<u64> = (0..50)
        .map(|_| {
            match raw.ok(Request::RegisterSubscriber {
                resume: None,
                timeout_ms: None,
            }) {
                Reply::SubscriberRegistered { subscriber_id, .. } => subscriber_id,
                other => panic!("{other:?}"),
            }
        })
        .collect();
    let distinct: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len());
    assert!(!ids.contains(&0));
    // Differences between consecutive ids repeat for a counter mixed by any
    // fixed function of a step; random ids share no step.
    let steps: std::collections::HashSet<u64> =
        ids.windows(2).map(|w| w[1].wrapping_sub(w[0])).collect();
    assert_eq!(steps.len(), ids.len() - 1);
}

/// REGISTER_SUBSCRIBER's optional 4th element (protocol version 2): a
/// timeout or nil is accepted, a 5th element or a timeout that is not an
/// unsigned integer is MALFORMED_REQUEST, and HELLO tells the maximum.
#[test]
fn register_subscriber_takes_an_optional_session_timeout() {
    let broker = start_broker_with(limits(|l| {
        l.max_session_timeout = Duration::from_secs(3600)
    }));
    let mut raw = Raw::connect(broker.addr());
    let Ok(Reply::Hello(info)) = raw.call(Request::Hello {
        version: courier::PROTOCOL_VERSION,
        client_name: "t",
        credentials: None,
    }) else {
        panic!("no HELLO reply")
    };
    assert_eq!(info.max_session_timeout_ms, 3_600_000);
    // [7, id, nil, 604800000]: above the maximum, clamped, not refused.
    let cases: [(&[u8], Option<ErrorCode>); 5] = [
        (
            &[0x94, 0x07, 0x11, 0xc0, 0xce, 0x24, 0x0c, 0x84, 0x00],
            None,
        ),
        (&[0x94, 0x07, 0x12, 0xc0, 0xc0], None),
        (&[0x93, 0x07, 0x13, 0xc0], None),
        (
            &[0x95, 0x07, 0x14, 0xc0, 0x01, 0x02],
            Some(ErrorCode::MalformedRequest),
        ),
        (
            &[0x94, 0x07, 0x15, 0xc0, 0xa1, 0x78],
            Some(ErrorCode::MalformedRequest),
        ),
    ];
    for (body, expected) in cases {
        raw.send_body(body);
        let (id, reply) = raw.recv(Op::RegisterSubscriber);
        assert_eq!(id, u64::from(body[2]));
        match (reply, expected) {
            (Ok(Reply::SubscriberRegistered { .. }), None) => {}
            (Err(e), Some(code)) => assert_eq!(e.code, code, "{body:x?}"),
            (other, _) => panic!("{body:x?}: {other:?}"),
        }
    }
    // The client library sends the 4-element form.
    let mut client = courier::client::Client::connect(broker.addr()).expect("connect");
    let id = client
        .register_subscriber_for(Duration::from_secs(600))
        .expect("registered");
    assert_ne!(id, 0);
}
