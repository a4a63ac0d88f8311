//! Output flow control and fair work, over TCP against an in-process broker.
//!
//! - A client that reads slowly but steadily is never disconnected, however
//!   long its output stays over the high-water mark; one that stops reading
//!   is disconnected once `output_timeout` passes with no byte taken.
//! - A pull whose deadline falls in the turn that published for it gets the
//!   message (ready pulls are answered before deadlines fire).
//! - One connection's flood does not hold the loop: a bystander's request
//!   is executed while the flood is still being worked through, which the
//!   test sees in a counter (the flood's error count in the bystander's
//!   STATS), not in a clock.
//! - `--max-connections` is lowered to what the descriptor limit allows, so
//!   a newcomer over it is told `TOO_MANY_CONNECTIONS` rather than lost to
//!   EMFILE.

mod common;

use common::*;
use courier::codec::encode_request;
use courier::protocol::{Op, Reply, Request};
use std::io::{ErrorKind, Read, Write};
use std::time::{Duration, Instant};

/// A broker with a small high-water mark and a short output timeout.
fn flow_broker() -> courier::server::RunningServer {
    let mut config = limits(|l| l.max_output_bytes = 64 * 1024);
    config.output_timeout = Duration::from_secs(1);
    start_broker_with(config)
}

/// `n` STATS requests, ids 1..=n, as one buffer.
fn stats_flood(n: u64) -> Vec<u8> {
    let mut frames = Vec::new();
    for id in 1..=n {
        encode_request(&mut frames, id, &Request::Stats);
    }
    frames
}

#[test]
fn a_slow_but_steady_reader_is_never_disconnected() {
    // Some 3 MB of replies read 4 KiB at a time with a pause between reads:
    // several output timeouts long, with the output over its 64 KiB
    // high-water mark all along.
    const REQUESTS: u64 = 16_000;
    let broker = flow_broker();
    let mut client = Raw::hello(broker.addr());
    let mut writer = client.stream.try_clone().expect("clone");
    let frames = stats_flood(REQUESTS);
    // From a thread: the broker stops reading while the replies wait, so
    // the writer blocks until the reader catches up.
    let write = std::thread::spawn(move || writer.write_all(&frames).map_err(|e| e.kind()));
    let mut bytes = Vec::new();
    let mut chunk = vec![0u8; 4 * 1024];
    let mut next = 1;
    while next <= REQUESTS {
        let n = client
            .stream
            .read(&mut chunk)
            .unwrap_or_else(|e| panic!("disconnected after {} replies: {e}", next - 1));
        assert!(
            n > 0,
            "disconnected after {} of {REQUESTS} replies",
            next - 1
        );
        bytes.extend_from_slice(&chunk[..n]);
        let mut used = 0;
        while let Ok(Some((body, len))) = courier::codec::split_frame(&bytes[used..], 1 << 24) {
            let id = courier::codec::decode_reply_id(body).expect("reply id");
            assert_eq!(id, next, "replies in order");
            next += 1;
            used += len;
        }
        bytes.drain(..used);
        // The pace of a slow reader, not a wait for a condition.
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(write.join().expect("writer"), Ok(()));
    assert!(matches!(client.call(Request::Stats), Ok(Reply::Stats(_))));
}

#[test]
fn a_reader_that_stops_is_disconnected_after_the_output_timeout() {
    let broker = flow_broker();
    let mut observer = Raw::hello(broker.addr());
    let mut stalled = Raw::hello(broker.addr());
    stalled.stream.set_nonblocking(true).expect("nonblocking");
    // Far more than the kernel's socket buffers hold on both sides.
    let frames = stats_flood(2_000_000);
    let deadline = Instant::now() + DEADLINE;
    let mut written = 0;
    // As much as the broker takes; it stops reading once the replies wait.
    while written < frames.len() && Instant::now() < deadline {
        match stalled.stream.write(&frames[written..]) {
            Ok(n) => written += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("disconnected while writing: {e}"),
        }
    }
    assert!(written < frames.len(), "the broker kept reading");
    wait_until("the stalled reader is disconnected", || {
        observer.stats().connections == 1
    });
    // What it had been sent is still readable, then the close.
    stalled.stream.set_nonblocking(false).expect("blocking");
    stalled
        .stream
        .set_read_timeout(Some(DEADLINE))
        .expect("timeout");
    let mut sink = vec![0u8; 1 << 16];
    let mut total = 0usize;
    loop {
        match stalled.stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n,
        }
        assert!(total < 1 << 30, "endless output");
    }
}

#[test]
fn a_pull_whose_deadline_meets_a_publish_gets_the_message() {
    let broker = start_broker();
    let mut admin = Raw::publisher_with_topic(broker.addr(), "soon");
    admin.ok(Request::CreateTopic { topic: "other" });
    // One connection both subscribes and publishes, so that the pull, the
    // work that lets its 1 ms deadline pass, and the publish that answers it
    // arrive in one read (under 64 KiB, sent at once) and run in one turn.
    let (mut both, _) = Raw::subscriber(broker.addr(), &["soon"]);
    both.ok(Request::RegisterPublisher);
    // A batch of many tiny messages: each costs the broker some work, so
    // together they outlast the 1 ms.
    let tiny: Vec<&[u8]> = vec![b"x"; 15_000];
    let mut frames = Vec::new();
    encode_request(&mut frames, 100, &pull(Some("soon"), 10, 1, false));
    courier::codec::encode_publish_batch(&mut frames, 101, "other", &tiny);
    assert!(frames.len() < 60 * 1024, "{} bytes", frames.len());
    let last = Request::Publish {
        topic: "soon",
        payload: b"just in time",
    };
    encode_request(&mut frames, 102, &last);
    both.send_bytes(&frames);
    let mut pulled = None;
    for _ in 100..=102 {
        let body = both.recv_frame().expect("a reply");
        let id = courier::codec::decode_reply_id(&body).expect("reply id");
        if id == 100 {
            let reply = courier::codec::decode_reply(Op::Pull, &body).expect("reply");
            pulled = Some(messages(reply.1));
        }
    }
    assert_eq!(
        pulled.expect("the pull was answered"),
        vec![("soon".to_owned(), 0, b"just in time".to_vec())]
    );
}

#[test]
fn a_flood_of_cheap_requests_does_not_hold_a_bystander_behind_it() {
    // Publishes from a connection that never registered as a publisher:
    // each is a cheap request with an error reply, counted in STATS. As
    // many as one read of the broker takes, written at once, so that a
    // broker executing all it read before anyone else would answer the
    // bystander only after every one of them.
    let broker = start_broker();
    let mut bystander = Raw::hello(broker.addr());
    let mut flooder = Raw::hello(broker.addr());
    let mut frames = Vec::new();
    let mut flood = 0u64;
    while frames.len() < 60 * 1024 {
        flood += 1;
        let request = Request::Publish {
            topic: "t",
            payload: b"",
        };
        encode_request(&mut frames, flood, &request);
    }
    let mut stats = Vec::new();
    encode_request(&mut stats, 1, &Request::Stats);
    flooder.send_bytes(&frames);
    bystander.send_bytes(&stats);
    let (_, reply) = bystander.recv(Op::Stats);
    let Ok(Reply::Stats(seen)) = reply else {
        panic!("bystander STATS: {reply:?}");
    };
    let flood_errors = seen.errors.get("NOT_REGISTERED").copied().unwrap_or(0);
    assert!(
        flood_errors < flood,
        "the bystander's STATS ran after all {flood} flood requests"
    );
    for id in 1..=flood {
        assert_eq!(flooder.recv_id(), id, "flood replies in order");
    }
}

#[test]
fn max_connections_is_lowered_to_fit_the_descriptor_limit() {
    // 48 descriptors, 32 of them kept for the broker's own: 16 connections.
    let Some(prlimit) = ["/usr/bin/prlimit", "/bin/prlimit"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
    else {
        eprintln!("prlimit not found: skipped");
        return;
    };
    let mut command = std::process::Command::new(prlimit);
    command
        .arg("--nofile=48:48")
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_broker"))
        .args([
            "--addr",
            "127.0.0.1:0",
            "--log-level",
            "off",
            "--memory-only",
        ]);
    let broker = BrokerProcess::spawn(command);
    let admitted: Vec<Raw> = (0..16).map(|_| Raw::hello(broker.addr)).collect();
    let mut refused = Raw::connect(broker.addr);
    let frames = refused.expect_closed();
    assert_eq!(frames.len(), 1);
    let (id, reply) = courier::codec::decode_reply(Op::Stats, &frames[0]).expect("reply");
    assert_eq!(
        (id, reply.unwrap_err().code),
        (0, courier::protocol::ErrorCode::TooManyConnections)
    );
    assert_eq!(admitted.len(), 16);
}
