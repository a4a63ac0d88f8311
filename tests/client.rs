//! The client library against a real broker on 127.0.0.1:0 (and, for the
//! failures a broker would never commit, against small fake servers).
//!
//! Assertions are on values and error codes, never on error text.

mod common;

use common::{limits, start_broker, start_broker_with, wait_until};
use courier::ErrorCode;
use courier::client::{Client, ClientOptions, Completion, Error, Outcome, PullOptions};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

fn publisher(addr: SocketAddr, topic: &str) -> Client {
    let mut client = Client::connect(addr).expect("connect");
    client.register_publisher().expect("register publisher");
    client.create_topic(topic).expect("create topic");
    client
}

fn subscriber(addr: SocketAddr, topics: &[&str]) -> (Client, u64) {
    let mut client = Client::connect(addr).expect("connect");
    let id = client.register_subscriber().expect("register subscriber");
    for topic in topics {
        client.subscribe(topic).expect("subscribe");
    }
    (client, id)
}

/// Pulls until `n` messages arrived (or fails after a deadline); returns
/// (offset, payload) pairs.
fn pull_n(client: &mut Client, n: usize) -> Vec<(u64, Vec<u8>)> {
    let deadline = Instant::now() + common::DEADLINE;
    let mut got = Vec::new();
    let options = PullOptions {
        max_messages: 10_000,
        wait: Duration::from_millis(200),
        ack: true,
        ..PullOptions::default()
    };
    while got.len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} messages",
            got.len()
        );
        let batch = client.pull(&options).expect("pull");
        got.extend(batch.iter().map(|m| (m.offset, m.payload.to_vec())));
    }
    got
}

#[test]
fn handshake_keeps_the_server_info() {
    let broker = start_broker();
    let client = Client::connect(broker.addr()).expect("connect");
    let info = client.server_info();
    assert_eq!(info.version, courier::PROTOCOL_VERSION);
    assert!(info.max_payload_bytes < info.max_frame_bytes);
}

#[test]
fn publish_pull_and_ack_round_trip() {
    let broker = start_broker();
    let mut publisher = publisher(broker.addr(), "t");
    let (mut subscriber, _) = subscriber(broker.addr(), &["t"]);

    let one = publisher.send("t", b"first").expect("send");
    assert_eq!((one.offset, one.subscribers), (0, 1));
    let batch = publisher
        .send_batch("t", &[b"second", b"", &[0, 255]])
        .expect("send batch");
    assert_eq!(
        (batch.first_offset, batch.count, batch.subscribers),
        (1, 3, 1)
    );

    let got = pull_n(&mut subscriber, 4);
    let expected: Vec<(u64, Vec<u8>)> = vec![
        (0, b"first".to_vec()),
        (1, b"second".to_vec()),
        (2, Vec::new()),
        (3, vec![0, 255]),
    ];
    assert_eq!(got, expected);
    subscriber.ack("t", 4).expect("ack");
    wait_until("the backlog to empty", || {
        publisher.stats().expect("stats").backlog_messages == 0
    });
}

#[test]
fn a_pull_waits_for_the_next_message() {
    let broker = start_broker();
    let mut publisher = publisher(broker.addr(), "t");
    let (mut subscriber, _) = subscriber(broker.addr(), &["t"]);
    let waiting = std::thread::spawn(move || {
        let options = PullOptions {
            topic: Some("t".into()),
            wait: Duration::from_secs(30),
            ..PullOptions::default()
        };
        let started = Instant::now();
        let batch = subscriber.pull(&options).expect("pull");
        (batch.len(), started.elapsed())
    });
    wait_until("the pull to park", || {
        publisher.stats().expect("stats").waiting_pulls == 1
    });
    publisher.send("t", b"wake up").expect("send");
    let (count, waited) = waiting.join().expect("pulling thread");
    assert_eq!(count, 1);
    assert!(waited < Duration::from_secs(30));
}

#[test]
fn error_replies_are_typed_and_keep_the_client_usable() {
    let broker = start_broker();
    let mut client = Client::connect(broker.addr()).expect("connect");
    let code = |result: Result<(), Error>| result.expect_err("an error").code();

    assert_eq!(
        code(client.create_topic("t")),
        Some(ErrorCode::NotRegistered)
    );
    client.register_publisher().expect("register");
    client.create_topic("t").expect("create");
    assert_eq!(code(client.create_topic("t")), Some(ErrorCode::TopicExists));
    assert_eq!(
        code(client.create_topic("no spaces")),
        Some(ErrorCode::InvalidTopicName)
    );
    let unknown = client.send("nope", b"x").expect_err("unknown topic");
    assert_eq!(unknown.code(), Some(ErrorCode::UnknownTopic));
    assert!(!unknown.is_fatal() && !unknown.is_retryable());
    assert_eq!(
        code(client.delete_topic("nope")),
        Some(ErrorCode::UnknownTopic)
    );
    assert_eq!(
        client
            .resume_subscriber(12345)
            .expect_err("no session")
            .code(),
        Some(ErrorCode::UnknownSubscriber)
    );
    // Still usable after all that.
    assert_eq!(client.send("t", b"ok").expect("send").offset, 0);
}

#[test]
fn an_oversized_request_is_refused_before_it_is_sent() {
    let broker = start_broker();
    let mut client = publisher(broker.addr(), "t");
    let too_big = vec![0u8; client.server_info().max_frame_bytes as usize + 1];
    let e = client.send("t", &too_big).expect_err("too large");
    assert!(matches!(e, Error::FrameTooLarge { .. }), "{e:?}");
    assert!(!e.is_fatal());
    let just_too_big = vec![0u8; client.server_info().max_payload_bytes as usize + 1];
    let e = client
        .send("t", &just_too_big)
        .expect_err("payload too large");
    assert_eq!(e.code(), Some(ErrorCode::PayloadTooLarge));
    client.send("t", b"fine").expect("still usable");
}

#[test]
fn resuming_a_subscriber_redelivers_what_it_had_not_acknowledged() {
    let broker = start_broker();
    let mut publisher = publisher(broker.addr(), "t");
    let (mut first, id) = subscriber(broker.addr(), &["t"]);
    publisher
        .send_batch("t", &[b"0", b"1", b"2", b"3"])
        .expect("send");
    assert_eq!(pull_n(&mut first, 4).len(), 4);
    first.ack("t", 2).expect("ack");
    drop(first);

    let mut second = Client::connect(broker.addr()).expect("connect");
    let session = second.resume_subscriber(id).expect("resume");
    assert_eq!((session.id, session.topics), (id, vec!["t".to_owned()]));
    let again: Vec<u64> = pull_n(&mut second, 2).iter().map(|m| m.0).collect();
    assert_eq!(again, vec![2, 3]);
}

#[test]
fn connecting_to_a_closed_port_is_a_connect_error() {
    let addr = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    };
    let e = Client::connect(addr).expect_err("nothing listens");
    assert!(matches!(e, Error::Connect { .. }), "{e:?}");
}

// --- The pipeline -------------------------------------------------------

/// Every tag `0..n` exactly once.
fn assert_each_tag_once(completions: &[Completion], n: u64) {
    let tags: Vec<u64> = completions.iter().map(|c| c.tag).collect();
    let unique: BTreeSet<u64> = tags.iter().copied().collect();
    assert_eq!(tags.len(), unique.len(), "a tag was reported twice");
    assert_eq!(unique, (0..n).collect(), "a tag is missing");
}

/// The codes of failed completions, in tag order (`None`: it succeeded).
fn codes(completions: &[Completion]) -> Vec<Option<ErrorCode>> {
    let mut sorted: Vec<&Completion> = completions.iter().collect();
    sorted.sort_by_key(|c| c.tag);
    sorted
        .iter()
        .map(|c| c.result.as_ref().err().and_then(Error::code))
        .collect()
}

#[test]
fn pipelined_sends_complete_once_each_with_consecutive_offsets() {
    let broker = start_broker();
    let mut client = publisher(broker.addr(), "t");
    let (mut subscriber, _) = subscriber(broker.addr(), &["t"]);
    let mut pipeline = client.pipeline(64);
    let mut completions = Vec::new();
    for i in 0..5000u32 {
        let tag = pipeline.send("t", &i.to_be_bytes()).expect("send");
        assert_eq!(tag, u64::from(i));
        completions.extend(pipeline.completions());
        assert!(pipeline.in_flight() <= 64);
    }
    completions.extend(pipeline.finish());
    assert_each_tag_once(&completions, 5000);
    for c in &completions {
        let stored = c.result.as_ref().ok().and_then(Outcome::published);
        let stored = stored.expect("stored");
        assert_eq!((stored.first_offset, stored.count), (c.tag, 1));
    }
    let got = pull_n(&mut subscriber, 5000);
    for (i, (offset, payload)) in got.iter().enumerate() {
        assert_eq!(
            (*offset, payload.as_slice()),
            (i as u64, &(i as u32).to_be_bytes()[..])
        );
    }
}

#[test]
fn pipelined_batches_are_stored_in_order() {
    let broker = start_broker();
    let mut client = publisher(broker.addr(), "t");
    let (mut subscriber, _) = subscriber(broker.addr(), &["t"]);
    let payloads: Vec<Vec<u8>> = (0..20_000u32).map(|i| i.to_string().into_bytes()).collect();
    let mut pipeline = client.pipeline(8);
    for chunk in payloads.chunks(500) {
        let slices: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
        pipeline.send_batch("t", &slices).expect("send batch");
    }
    let completions = pipeline.finish();
    assert_each_tag_once(&completions, 40);
    assert!(completions.iter().all(|c| c.messages == 500 && c.is_ok()));
    let got = pull_n(&mut subscriber, payloads.len());
    assert!(got.iter().map(|m| &m.1).eq(payloads.iter()));
}

#[test]
fn a_topic_full_after_the_hold_ends_that_tag_and_those_behind_it_in_order() {
    let broker = start_broker_with(limits(|l| {
        l.max_backlog_messages = 100;
        l.publish_hold = Duration::from_millis(200);
    }));
    let mut client = publisher(broker.addr(), "t");
    // A subscriber that does not acknowledge: the topic fills at 100.
    let (mut subscriber, _) = subscriber(broker.addr(), &["t"]);
    let mut pipeline = client.pipeline(16);
    for _ in 0..10 {
        pipeline
            .send_batch("t", &[&b"x"[..]; 30])
            .expect("send batch");
    }
    let completions = pipeline.finish();
    assert_each_tag_once(&completions, 10);
    // Three batches of 30 fit under 100; the fourth is held, and when the
    // hold ends it and all six behind it are refused, in tag order.
    let order: Vec<u64> = completions.iter().map(|c| c.tag).collect();
    assert_eq!(order, (0..10).collect::<Vec<_>>());
    let mut expected = vec![None; 3];
    expected.extend([Some(ErrorCode::TopicFull); 7]);
    assert_eq!(codes(&completions), expected);
    assert!(completions[3..].iter().all(Completion::is_retryable));
    // What was refused can be sent again, in order, once the subscriber
    // catches up; this time it is held, not refused.
    assert_eq!(pull_n(&mut subscriber, 90).len(), 90);
    let acknowledge = PullOptions {
        ack: true,
        ..PullOptions::default()
    };
    subscriber.pull(&acknowledge).expect("acknowledge");
    let mut pipeline = client.pipeline(1);
    pipeline.send_batch("t", &[&b"x"[..]; 30]).expect("send");
    assert!(pipeline.finish().iter().all(Completion::is_ok));
}

#[test]
fn errors_in_a_pipeline_do_not_stop_it() {
    let broker = start_broker();
    let mut client = publisher(broker.addr(), "t");
    let max_frame = client.server_info().max_frame_bytes as usize;
    let mut pipeline = client.pipeline(4);
    pipeline.send("t", b"a").expect("send");
    pipeline.send("missing", b"b").expect("send");
    let too_big = vec![0u8; max_frame + 1];
    let e = pipeline.send("t", &too_big).expect_err("refused locally");
    assert!(matches!(e, Error::FrameTooLarge { .. }));
    pipeline.send("t", b"c").expect("send");
    let completions = pipeline.finish();
    assert_each_tag_once(&completions, 3);
    assert_eq!(
        codes(&completions),
        vec![None, Some(ErrorCode::UnknownTopic), None]
    );
    let offsets: Vec<u64> = completions
        .iter()
        .filter_map(|c| c.result.as_ref().ok().and_then(Outcome::published))
        .map(|p| p.first_offset)
        .collect();
    assert_eq!(offsets, vec![0, 1]);
}

#[test]
fn pipelined_topic_requests_complete_once_each_beside_publishes() {
    let broker = start_broker();
    let mut client = Client::connect(broker.addr()).expect("connect");
    client.register_publisher().expect("register publisher");
    let mut pipeline = client.pipeline(8);
    let mut completions = Vec::new();
    let mut expected = Vec::new();
    for i in 0..300 {
        let topic = format!("t{i}");
        let tags = [
            pipeline.create_topic(&topic).expect("create"),
            pipeline.send(&topic, b"m").expect("send"),
            pipeline.delete_topic(&topic).expect("delete"),
        ];
        assert_eq!(tags, [3 * i, 3 * i + 1, 3 * i + 2]);
        let stored = Outcome::Published(courier::client::PublishedBatch {
            first_offset: 0,
            count: 1,
            subscribers: 0,
        });
        expected.extend([Outcome::Created, stored, Outcome::Deleted]);
        completions.extend(pipeline.completions());
        assert!(pipeline.in_flight() <= 8);
    }
    completions.extend(pipeline.finish());
    assert_each_tag_once(&completions, 900);
    completions.sort_by_key(|c| c.tag);
    let outcomes: Vec<Outcome> = completions
        .iter()
        .map(|c| c.result.clone().expect("done"))
        .collect();
    assert_eq!(outcomes, expected);
    let messages: Vec<u32> = completions.iter().map(|c| c.messages).collect();
    assert!(messages.chunks(3).all(|m| m == [0, 1, 0]));
    assert_eq!(client.stats().expect("stats").topics, 0);
}

#[test]
fn completions_not_taken_stay_for_the_next_call() {
    let broker = start_broker();
    let mut client = publisher(broker.addr(), "t");
    let mut pipeline = client.pipeline(8);
    for _ in 0..3 {
        pipeline.send("t", b"m").expect("send");
    }
    pipeline.wait_all().expect("replies");
    let first = pipeline.completions().next().expect("a completion");
    let rest: Vec<Completion> = pipeline.completions().collect();
    let tags: Vec<u64> = rest.iter().map(|c| c.tag).collect();
    assert_eq!((first.tag, tags), (0, vec![1, 2]));
    assert!(pipeline.finish().is_empty());
}

#[test]
fn pipelined_topic_refusals_are_reported_per_tag() {
    let broker = start_broker();
    let mut client = publisher(broker.addr(), "taken");
    let mut pipeline = client.pipeline(4);
    pipeline.create_topic("taken").expect("queue");
    pipeline.create_topic("new").expect("queue");
    pipeline.create_topic("new").expect("queue");
    pipeline.delete_topic("missing").expect("queue");
    pipeline.delete_topic("new").expect("queue");
    pipeline.delete_topic("new").expect("queue");
    pipeline.create_topic("new").expect("queue");
    let completions = pipeline.finish();
    assert_each_tag_once(&completions, 7);
    let (exists, unknown) = (Some(ErrorCode::TopicExists), Some(ErrorCode::UnknownTopic));
    assert_eq!(
        codes(&completions),
        vec![exists, None, exists, unknown, None, unknown, None]
    );
    for c in completions.iter().filter(|c| !c.is_ok()) {
        let e = c.result.as_ref().expect_err("refused");
        assert!(!e.is_fatal() && !c.is_retryable(), "{c:?}");
    }
    // Refusals leave the connection usable.
    client
        .delete_topic("new")
        .expect("delete after the pipeline");
    assert_eq!(client.stats().expect("stats").topics, 1);
}

#[test]
fn pipelined_topic_requests_need_a_publisher() {
    let broker = start_broker();
    let mut client = Client::connect(broker.addr()).expect("connect");
    let mut pipeline = client.pipeline(2);
    pipeline.create_topic("t").expect("queue");
    pipeline.delete_topic("t").expect("queue");
    let completions = pipeline.finish();
    let not_registered = Some(ErrorCode::NotRegistered);
    assert_eq!(codes(&completions), vec![not_registered, not_registered]);
}

#[test]
fn a_dropped_pipeline_leaves_the_client_usable() {
    let broker = start_broker();
    let mut client = publisher(broker.addr(), "t");
    {
        let mut pipeline = client.pipeline(1000);
        for _ in 0..100 {
            pipeline.send("t", b"m").expect("send");
        }
        // Dropped with 100 requests buffered: they are sent, their replies
        // skipped.
    }
    let published = client.send("t", b"after").expect("send after drop");
    assert_eq!(published.offset, 100);
    assert!(client.stats().expect("stats").messages_in >= 101);
}

#[test]
fn a_broker_that_stops_fails_every_request_in_flight() {
    let broker = start_broker();
    let mut client = publisher(broker.addr(), "t");
    let mut pipeline = client.pipeline(8);
    pipeline.send("t", b"before").expect("send");
    pipeline.wait_all().expect("first reply");
    broker.stop().expect("stop");
    // A send may still be buffered; its outcome comes as a completion.
    let mut sent = 1;
    while sent < 20 && pipeline.send("t", b"after").is_ok() {
        sent += 1;
    }
    let completions = pipeline.finish();
    assert_each_tag_once(&completions, sent);
    for c in &completions {
        if c.tag == 0 {
            assert!(c.is_ok());
        } else {
            assert!(c.result.as_ref().is_err_and(Error::is_fatal), "{c:?}");
        }
    }
    let e = client.stats().expect_err("connection is gone");
    assert!(matches!(e, Error::ConnectionClosed), "{e:?}");
}

#[test]
fn a_broker_at_its_connection_limit_says_so() {
    let broker = start_broker_with(courier::server::Config {
        max_connections: 1,
        ..courier::server::Config::default()
    });
    let _first = Client::connect(broker.addr()).expect("first connection");
    let e = Client::connect(broker.addr()).expect_err("over the limit");
    assert_eq!(e.code(), Some(ErrorCode::TooManyConnections), "{e:?}");
    assert!(e.is_fatal());
}

// --- Fake brokers: what a real one would never do -----------------------

/// A one-connection server that reads the HELLO request and answers with
/// `reply` (raw bytes), then keeps the connection open until the client
/// closes it.
fn fake_broker(reply: Vec<u8>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        let Ok((mut stream, _)) = listener.accept() else {
            return;
        };
        let mut header = [0u8; 4];
        if stream.read_exact(&mut header).is_err() {
            return;
        }
        let mut body = vec![0u8; u32::from_be_bytes(header) as usize];
        if stream.read_exact(&mut body).is_err() {
            return;
        }
        let _ = stream.write_all(&reply);
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
    });
    addr
}

fn quick(name: &str) -> ClientOptions {
    ClientOptions {
        name: name.to_owned(),
        timeout: Some(Duration::from_millis(300)),
        connect_timeout: Some(Duration::from_secs(5)),
        ..ClientOptions::default()
    }
}

#[test]
fn a_broker_that_never_answers_is_a_timeout() {
    let addr = fake_broker(Vec::new());
    let started = Instant::now();
    let e = Client::connect_with(addr, quick("silent")).expect_err("no reply");
    assert!(matches!(e, Error::Timeout), "{e:?}");
    assert!(started.elapsed() < common::DEADLINE);
}

#[test]
fn a_reply_that_is_not_messagepack_is_a_protocol_error() {
    let addr = fake_broker(vec![0, 0, 0, 2, 0xc1, 0xc1]);
    let e = Client::connect_with(addr, quick("garbage")).expect_err("bad reply");
    assert!(matches!(e, Error::Protocol(_)), "{e:?}");
}

#[test]
fn a_reply_to_another_request_is_a_protocol_error() {
    // [7, 0, nil]: a success reply to request 7, which was never sent.
    let addr = fake_broker(vec![0, 0, 0, 4, 0x93, 0x07, 0x00, 0xc0]);
    let e = Client::connect_with(addr, quick("wrong id")).expect_err("bad id");
    assert!(matches!(e, Error::Protocol(_)), "{e:?}");
}

#[test]
fn an_oversized_reply_header_is_a_protocol_error() {
    let addr = fake_broker(vec![0x7f, 0xff, 0xff, 0xff]);
    let e = Client::connect_with(addr, quick("huge")).expect_err("huge frame");
    assert!(matches!(e, Error::Protocol(_)), "{e:?}");
}

#[test]
fn a_closed_connection_is_reported_as_such() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = std::thread::spawn(move || drop(listener.accept()));
    let e = Client::connect_with(addr, quick("closed")).expect_err("closed");
    assert!(matches!(e, Error::ConnectionClosed), "{e:?}");
    server.join().expect("server thread");
}
