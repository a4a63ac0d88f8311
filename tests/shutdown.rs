//! Graceful shutdown: of the real `broker` binary, SIGTERM while pulls wait
//! answers them, tells every client, prints a final line and exits 0; of a
//! durable broker, a stop with publishes in flight answers each that was
//! executed with its real result, and a restart finds exactly the
//! acknowledged ones.

mod common;

use common::*;
use courier::protocol::{ErrorCode, Op, Reply, Request};
use std::collections::HashMap;
use std::io::BufRead;
use std::process::Command;

#[test]
fn sigterm_answers_waiting_pulls_and_exits_cleanly() {
    let mut broker = BrokerProcess::start(&["--log-level", "warn"]);
    let addr = broker.addr;
    let mut publisher = Raw::publisher_with_topic(addr, "t");
    let mut waiting: Vec<(Raw, u64)> = (0..3)
        .map(|_| {
            let (mut raw, _) = Raw::subscriber(addr, &["t"]);
            let id = raw.send(pull(None, 10, 60_000, false));
            (raw, id)
        })
        .collect();
    wait_until("pulls parked", || publisher.stats().waiting_pulls == 3);

    let status = Command::new("kill")
        .args(["-TERM", &broker.child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());

    for (raw, id) in &mut waiting {
        let (got, reply) = raw.recv(Op::Pull);
        assert_eq!(got, *id);
        assert_eq!(reply.unwrap_err().code, ErrorCode::ShuttingDown);
        raw.expect_closed();
    }
    let (got, reply) = publisher.recv(Op::Stats);
    assert_eq!(got, 0);
    assert_eq!(reply.unwrap_err().code, ErrorCode::ShuttingDown);
    publisher.expect_closed();

    let mut last = String::new();
    broker.stdout.read_line(&mut last).expect("final line");
    assert_eq!(last.trim(), "Server stopped");
    let exit = broker.child.wait().expect("broker exits");
    assert!(exit.success(), "exit status {exit:?}");
}

/// A durable broker in this process on `dir` (fsync always).
fn durable(dir: &std::path::Path) -> courier::server::RunningServer {
    start_broker_with(courier::server::Config {
        storage: courier::server::Storage::Dir {
            path: dir.to_path_buf(),
            log: courier::storage::Config::default(),
        },
        ..courier::server::Config::default()
    })
}

/// What one publisher learnt from its replies: the payloads acknowledged
/// (by offset), and how many publishes were answered SHUTTING_DOWN (the
/// final id-0 reply covers every one still unanswered).
fn collect_until_closed(
    raw: &mut Raw,
    sent: &HashMap<u64, Vec<u8>>,
) -> (Vec<(u64, Vec<u8>)>, usize) {
    let mut acknowledged = Vec::new();
    let mut answered = 0;
    loop {
        let frame = raw.recv_frame().expect("SHUTTING_DOWN before the close");
        let id = courier::codec::decode_reply_id(&frame).expect("reply id");
        if id == 0 {
            let (_, reply) = courier::codec::decode_reply(Op::Publish, &frame).expect("reply");
            assert_eq!(reply.unwrap_err().code, ErrorCode::ShuttingDown);
            raw.expect_closed();
            return (acknowledged, sent.len() - answered);
        }
        let (_, reply) = courier::codec::decode_reply(Op::Publish, &frame).expect("reply");
        answered += 1;
        match reply {
            Ok(Reply::Published { offset, .. }) => {
                acknowledged.push((offset, sent[&id].clone()));
            }
            // A publish the broker answers itself when it stops.
            Err(e) if e.code == ErrorCode::ShuttingDown => {}
            other => panic!("publish {id}: {other:?}"),
        }
    }
}

#[test]
fn a_clean_stop_answers_publishes_waiting_for_the_disk_with_their_real_result() {
    const PUBLISHERS: usize = 3;
    const EACH: u64 = 3000;
    let dir = temp_dir("clean-stop");
    let broker = durable(&dir);
    let addr = broker.addr();
    let mut setup = Raw::publisher_with_topic(addr, "t");
    let (_subscriber, session) = Raw::subscriber(addr, &["t"]);
    let mut publishers: Vec<(Raw, HashMap<u64, Vec<u8>>)> = (0..PUBLISHERS)
        .map(|_| (Raw::publisher(addr), HashMap::new()))
        .collect();
    // Every publisher's whole pipeline is handed to the kernel, and the
    // stop is asked once the broker has stored two thirds of them: the rest
    // are in flight, stored and waiting for the disk, or not yet read.
    for (p, (raw, sent)) in publishers.iter_mut().enumerate() {
        let mut frames = Vec::new();
        for i in 0..EACH {
            let payload = format!("{p}:{i}").into_bytes();
            let id = i + 10;
            courier::codec::encode_request(
                &mut frames,
                id,
                &Request::Publish {
                    topic: "t",
                    payload: &payload,
                },
            );
            sent.insert(id, payload);
        }
        raw.send_bytes(&frames);
    }
    let total = PUBLISHERS * EACH as usize;
    wait_until("two thirds stored", || {
        setup.stats().messages_in >= 2 * total as u64 / 3
    });
    broker.shutdown_handle().shutdown();
    let mut acknowledged = std::collections::BTreeMap::new();
    let mut unanswered = 0;
    for (raw, sent) in &mut publishers {
        let (acked, rest) = collect_until_closed(raw, sent);
        unanswered += rest;
        for (offset, payload) in acked {
            assert!(
                acknowledged.insert(offset, payload).is_none(),
                "offset {offset} twice"
            );
        }
    }
    broker.stop().expect("clean stop");
    eprintln!(
        "{} of {total} publishes acknowledged, {unanswered} told SHUTTING_DOWN",
        acknowledged.len()
    );
    assert!(
        acknowledged.len() >= 2 * total / 3,
        "fewer acknowledged than were stored before the stop"
    );

    // After a restart exactly the acknowledged ones are there: none lost,
    // and none stored that its publisher was told was not.
    let broker = durable(&dir);
    let mut subscriber = Raw::hello(broker.addr());
    subscriber.ok(Request::RegisterSubscriber {
        resume: Some(session),
        timeout_ms: None,
    });
    let mut stored = std::collections::BTreeMap::new();
    loop {
        let got = messages(subscriber.call(pull(Some("t"), 10_000, 0, true)));
        if got.is_empty() {
            break;
        }
        for (_, offset, payload) in got {
            stored.insert(offset, payload);
        }
        assert!(stored.len() <= total, "more stored than published");
    }
    let lost = acknowledged
        .iter()
        .filter(|(o, p)| stored.get(o) != Some(p));
    let unacknowledged = stored.keys().filter(|o| !acknowledged.contains_key(o));
    assert_eq!(
        (lost.count(), unacknowledged.count()),
        (0, 0),
        "(acknowledged and lost, stored but told otherwise)"
    );
}
