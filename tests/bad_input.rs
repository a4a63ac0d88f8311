//! Bad input and hostile clients: each gets a typed error where a reply is
//! possible, at worst loses its own connection, and never disturbs anyone
//! else — checked by having another client work normally afterwards.

mod common;

use common::*;
use courier::protocol::{ErrorCode, Op, Reply, Request};
use courier::server::Config;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// A publisher and subscriber that must keep working whatever else happens;
/// `check` proves it by a full publish → pull round trip.
struct Bystander {
    publisher: Raw,
    subscriber: Raw,
    sent: u64,
}

impl Bystander {
    fn new(addr: std::net::SocketAddr) -> Bystander {
        let publisher = Raw::publisher_with_topic(addr, "bystander");
        let (subscriber, _) = Raw::subscriber(addr, &["bystander"]);
        Bystander {
            publisher,
            subscriber,
            sent: 0,
        }
    }

    fn check(&mut self) {
        let payload = self.sent.to_be_bytes();
        assert_eq!(self.publisher.publish("bystander", &payload), self.sent);
        let got = messages(self.subscriber.call(pull(None, 10, 5000, true)));
        assert_eq!(got, vec![("bystander".into(), self.sent, payload.to_vec())]);
        self.sent += 1;
    }
}

fn error_of(raw: &mut Raw) -> (u64, ErrorCode) {
    let (id, reply) = raw.recv(Op::Stats);
    (id, reply.expect_err("an error reply").code)
}

#[test]
fn malformed_bodies_get_typed_errors_and_the_connection_goes_on() {
    let broker = start_broker();
    let mut bystander = Bystander::new(broker.addr());
    let mut raw = Raw::hello(broker.addr());
    let cases: &[(&[u8], u64, ErrorCode)] = &[
        // Not MessagePack at all.
        (b"\xc1\xc1\xc1", 0, ErrorCode::MalformedRequest),
        // A map instead of an array.
        (b"\x81\xa1a\x01", 0, ErrorCode::MalformedRequest),
        // Too short to hold op and id.
        (b"\x91\x0c", 0, ErrorCode::MalformedRequest),
        // Unknown operation 99, id 7.
        (b"\x92\x63\x07", 7, ErrorCode::UnknownOperation),
        // CREATE_TOPIC whose topic is an integer, id 8.
        (b"\x93\x03\x08\x05", 8, ErrorCode::MalformedRequest),
        // STATS with an extra element, id 9.
        (b"\x93\x0c\x09\xc0", 9, ErrorCode::MalformedRequest),
        // STATS followed by trailing bytes, id 10.
        (b"\x92\x0c\x0a\x00", 10, ErrorCode::MalformedRequest),
        // A negative id.
        (b"\x92\x0c\xff", 0, ErrorCode::MalformedRequest),
        // PUBLISH with a truncated bin payload, id 11.
        (
            b"\x94\x05\x0b\xa1t\xc4\x10ab",
            11,
            ErrorCode::MalformedRequest,
        ),
        // Empty body.
        (b"", 0, ErrorCode::MalformedRequest),
    ];
    for (body, id, code) in cases {
        raw.send_body(body);
        assert_eq!(error_of(&mut raw), (*id, *code), "body {body:02x?}");
    }
    raw.ok(Request::Stats);
    bystander.check();
    let stats = raw.stats();
    assert_eq!(stats.errors.get("MALFORMED_REQUEST"), Some(&9));
    assert_eq!(stats.errors.get("UNKNOWN_OPERATION"), Some(&1));
}

#[test]
fn an_oversized_length_prefix_is_refused_before_the_body_arrives() {
    let broker = start_broker();
    let mut bystander = Bystander::new(broker.addr());
    let mut raw = Raw::hello(broker.addr());
    // Only the header: the broker must not wait for 16 MB of body.
    raw.send_bytes(&(16u32 << 20).to_be_bytes());
    assert_eq!(error_of(&mut raw), (0, ErrorCode::FrameTooLarge));
    raw.expect_closed();
    bystander.check();
}

#[test]
fn garbage_before_the_handshake_closes_only_that_connection() {
    let broker = start_broker();
    let mut bystander = Bystander::new(broker.addr());
    let mut raw = Raw::connect(broker.addr());
    raw.send_body(b"GET / HTTP/1.1");
    assert_eq!(error_of(&mut raw).1, ErrorCode::HandshakeRequired);
    raw.expect_closed();
    // An HTTP request read as a length prefix is far over the limit.
    let mut http = Raw::connect(broker.addr());
    http.send_bytes(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(error_of(&mut http).1, ErrorCode::FrameTooLarge);
    http.expect_closed();
    bystander.check();
}

#[test]
fn a_client_that_vanishes_mid_frame_loses_only_that_frame() {
    let broker = start_broker();
    let mut bystander = Bystander::new(broker.addr());
    let mut publisher = Raw::publisher(broker.addr());
    publisher.publish("bystander", b"acknowledged");
    bystander.sent += 1;
    let mut frame = Vec::new();
    courier::codec::encode_request(
        &mut frame,
        5,
        &Request::Publish {
            topic: "bystander",
            payload: b"never complete",
        },
    );
    publisher.send_bytes(&frame[..frame.len() - 3]);
    drop(publisher);
    wait_until("disconnect noticed", || {
        bystander.publisher.stats().connections == 2
    });
    // The acknowledged message is there; the torn one is not.
    let got = messages(bystander.subscriber.call(pull(None, 10, 0, true)));
    assert_eq!(got, vec![("bystander".into(), 0, b"acknowledged".to_vec())]);
    bystander.check();
}

#[test]
fn connections_over_the_limit_are_told_and_closed() {
    let broker = start_broker_with(Config {
        max_connections: 3,
        ..Config::default()
    });
    let mut bystander = Bystander::new(broker.addr());
    let mut third = Raw::hello(broker.addr());
    let mut fourth = Raw::connect(broker.addr());
    let frames = fourth.expect_closed();
    assert_eq!(frames.len(), 1);
    let (id, reply) = courier::codec::decode_reply(Op::Stats, &frames[0]).expect("reply");
    assert_eq!(
        (id, reply.unwrap_err().code),
        (0, ErrorCode::TooManyConnections)
    );
    third.ok(Request::Stats);
    bystander.check();
    drop(third);
    wait_until("a slot frees up", || {
        bystander.publisher.stats().connections == 2
    });
    Raw::hello(broker.addr());
}

#[test]
fn a_client_that_never_says_hello_is_timed_out() {
    let broker = start_broker_with(Config {
        handshake_timeout: Duration::from_millis(200),
        ..Config::default()
    });
    let mut bystander = Bystander::new(broker.addr());
    let mut silent = Raw::connect(broker.addr());
    let start = Instant::now();
    assert_eq!(error_of(&mut silent), (0, ErrorCode::Timeout));
    silent.expect_closed();
    assert!(start.elapsed() >= Duration::from_millis(150));
    bystander.check();
}

#[test]
fn a_slowloris_partial_frame_is_timed_out() {
    let broker = start_broker_with(Config {
        frame_timeout: Duration::from_millis(300),
        ..Config::default()
    });
    let mut bystander = Bystander::new(broker.addr());
    let mut slow = Raw::hello(broker.addr());
    let mut frame = Vec::new();
    courier::codec::encode_request(&mut frame, 1, &Request::Stats);
    let start = Instant::now();
    // Dribble the first bytes, a little at a time, never finishing.
    for byte in &frame[..frame.len() - 1] {
        slow.send_bytes(&[*byte]);
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(error_of(&mut slow), (0, ErrorCode::Timeout));
    assert!(start.elapsed() >= Duration::from_millis(250));
    slow.expect_closed();
    bystander.check();
}

#[test]
fn a_busy_client_streaming_frames_is_not_mistaken_for_slowloris() {
    let broker = start_broker_with(Config {
        frame_timeout: Duration::from_millis(300),
        ..Config::default()
    });
    let mut publisher = Raw::publisher_with_topic(broker.addr(), "busy");
    let mut frame = Vec::new();
    courier::codec::encode_request(
        &mut frame,
        1,
        &Request::Publish {
            topic: "busy",
            payload: b"x",
        },
    );
    // For longer than the frame timeout there is always a partial frame
    // buffered (each write finishes one frame and starts the next), but each
    // frame completes quickly: that is a busy client, not a slow one.
    let (head, tail) = frame.split_at(5);
    let mut joined = tail.to_vec();
    joined.extend_from_slice(head);
    publisher.send_bytes(head);
    let start = Instant::now();
    let mut sent = 0;
    while start.elapsed() < Duration::from_millis(700) && sent < 10_000 {
        publisher.send_bytes(&joined);
        sent += 1;
        std::thread::sleep(Duration::from_millis(2));
    }
    publisher.send_bytes(tail);
    for _ in 0..=sent {
        let (_, reply) = publisher.recv(Op::Publish);
        assert!(matches!(reply, Ok(Reply::Published { .. })), "{reply:?}");
    }
}

#[test]
fn a_client_that_never_reads_its_replies_is_disconnected_and_its_session_kept() {
    // Past the high-water mark its requests wait; with no byte of its
    // replies taken for the output timeout, it is disconnected.
    let mut config = limits(|l| l.max_output_bytes = 1 << 20);
    config.output_timeout = Duration::from_secs(1);
    let broker = start_broker_with(config);
    let mut bystander = Bystander::new(broker.addr());
    let mut publisher = Raw::publisher_with_topic(broker.addr(), "big");
    let (mut greedy, id) = Raw::subscriber(broker.addr(), &["big"]);
    let payload = vec![1u8; 100_000];
    for _ in 0..30 {
        publisher.publish("big", &payload);
    }
    // One pull of 3 MB of messages, then a flood of STATS, none of it read.
    let mut frames = Vec::new();
    courier::codec::encode_request(&mut frames, 1, &pull(None, 100, 0, false));
    for i in 0..200_000u64 {
        courier::codec::encode_request(&mut frames, 2 + i, &Request::Stats);
    }
    greedy.stream.set_nonblocking(true).expect("nonblocking");
    let deadline = Instant::now() + DEADLINE;
    let mut written = 0;
    while written < frames.len() && Instant::now() < deadline {
        match greedy.stream.write(&frames[written..]) {
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(_) => break, // reset by the broker: what we expect
        }
    }
    wait_until("greedy client disconnected", || {
        bystander.publisher.stats().connections == 3
    });
    bystander.check();
    // Nothing it had not acknowledged is lost: resume and get all 30.
    let mut resumed = Raw::hello(broker.addr());
    resumed.ok(Request::RegisterSubscriber {
        resume: Some(id),
        timeout_ms: None,
    });
    let mut got = Vec::new();
    while got.len() < 30 {
        got.extend(messages(resumed.call(pull(None, 100, 1000, true))));
    }
    assert_eq!(got.len(), 30);
    assert!(got.iter().all(|(_, _, p)| p == &payload));
    let mut sink = [0u8; 1];
    let _ = greedy.stream.read(&mut sink);
}

#[test]
fn random_garbage_streams_never_hurt_the_broker() {
    let broker = start_broker();
    let mut bystander = Bystander::new(broker.addr());
    // A deterministic xorshift stream of junk, on several connections,
    // some after a valid handshake.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for round in 0..50 {
        let mut junk = vec![0u8; 2000];
        for byte in &mut junk {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *byte = state as u8;
        }
        if round % 2 == 0 {
            // Small valid length prefixes with junk bodies.
            junk[0..4].copy_from_slice(&40u32.to_be_bytes());
        }
        let mut raw = if round % 3 == 0 {
            Raw::hello(broker.addr())
        } else {
            Raw::connect(broker.addr())
        };
        let mut stream = TcpStream::connect(broker.addr()).expect("connect");
        let _ = stream.write_all(&junk);
        let _ = raw.stream.write_all(&junk);
        drop(stream);
    }
    bystander.check();
}

#[test]
fn names_must_be_utf8_str_and_a_misshapen_hello_after_the_handshake_is_malformed() {
    let broker = start_broker();
    let mut bystander = Bystander::new(broker.addr());
    // As the first frame, a HELLO whose client name is a bin is no handshake.
    let mut first = Raw::connect(broker.addr());
    first.send_body(b"\x94\x01\x03\x02\xc4\x01x");
    assert_eq!(error_of(&mut first), (3, ErrorCode::HandshakeRequired));
    first.expect_closed();

    let mut raw = Raw::publisher(broker.addr());
    let cases: &[(&[u8], u64, ErrorCode)] = &[
        // HELLO with a bin client name, then with credentials that are
        // not a map, then with a sixth element.
        (b"\x94\x01\x05\x02\xc4\x01x", 5, ErrorCode::MalformedRequest),
        (b"\x95\x01\x06\x02\xa1x\x01", 6, ErrorCode::MalformedRequest),
        (
            b"\x96\x01\x06\x02\xa1x\xc0\xc0",
            6,
            ErrorCode::MalformedRequest,
        ),
        // A well-formed HELLO, even of another version.
        (b"\x94\x01\x07\x01\xa1x", 7, ErrorCode::HandshakeRepeated),
        // CREATE_TOPIC with a bin name, then a str that is not UTF-8.
        (b"\x93\x03\x08\xc4\x01t", 8, ErrorCode::MalformedRequest),
        (b"\x93\x03\x09\xa1\xff", 9, ErrorCode::MalformedRequest),
        // Valid UTF-8 outside the topic alphabet.
        (b"\x93\x03\x0a\xa2\xc3\xbc", 10, ErrorCode::InvalidTopicName),
    ];
    for (body, id, code) in cases {
        raw.send_body(body);
        assert_eq!(error_of(&mut raw), (*id, *code), "body {body:02x?}");
    }
    raw.ok(Request::CreateTopic { topic: "t" });
    bystander.check();
}

#[test]
fn a_str_payload_is_stored_as_its_bytes_but_a_name_must_be_a_utf8_str() {
    let broker = start_broker();
    let mut publisher = Raw::publisher_with_topic(broker.addr(), "raw");
    let (mut subscriber, _) = Raw::subscriber(broker.addr(), &["raw"]);

    // PUBLISH, id 20, of the str "\xff\xfe\x00" (not UTF-8), as old
    // MessagePack "raw" or Python's use_bin_type=False would pack it.
    publisher.send_body(b"\x94\x05\x14\xa3raw\xa3\xff\xfe\x00");
    let (id, reply) = publisher.recv(Op::Publish);
    assert!(
        matches!(reply, Ok(Reply::Published { offset: 0, .. })),
        "{reply:?}"
    );
    assert_eq!(id, 20);
    // PUBLISH_BATCH, id 21, as array16 of a str8 and a bin16.
    publisher.send_body(b"\x94\x06\x15\xa3raw\xdc\x00\x02\xd9\x01\x80\xc5\x00\x01z");
    let (id, reply) = publisher.recv(Op::PublishBatch);
    assert!(
        matches!(reply, Ok(Reply::PublishedBatch { count: 2, .. })),
        "{reply:?}"
    );
    assert_eq!(id, 21);
    let got = messages(subscriber.call(pull(None, 10, 5000, true)));
    let raw = |offset, payload: &[u8]| ("raw".to_string(), offset, payload.to_vec());
    assert_eq!(
        got,
        vec![raw(0, b"\xff\xfe\x00"), raw(1, b"\x80"), raw(2, b"z")]
    );

    let cases: &[(&[u8], u64)] = &[
        // PUBLISH, id 22, whose topic is bin "raw".
        (b"\x94\x05\x16\xc4\x03raw\xc4\x00", 22),
        // SUBSCRIBE, id 23, whose topic is a str that is not UTF-8.
        (b"\x93\x08\x17\xa2\xc3\x28", 23),
        // HELLO, id 24, whose client name is bin.
        (b"\x94\x01\x18\x02\xc4\x01c", 24),
    ];
    for &(body, id) in cases {
        subscriber.send_body(body);
        assert_eq!(
            error_of(&mut subscriber),
            (id, ErrorCode::MalformedRequest),
            "body {body:02x?}"
        );
    }
    subscriber.ok(Request::Stats);
}
