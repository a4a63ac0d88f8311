//! The durable broker, through the real binary: state survives a restart
//! (and a SIGKILL), the data directory is locked, damage outside the torn
//! tail stops the start unless `--truncate-corrupt` is given.

mod common;

use common::{BrokerProcess, Raw, messages, pull, temp_dir};
use courier::protocol::{Reply, Request};
use std::path::{Path, PathBuf};

use std::process::{Command, Stdio};

fn start(dir: &Path, extra: &[&str]) -> BrokerProcess {
    let dir = dir.to_str().expect("utf-8 path");
    let mut args = vec!["--data-dir", dir, "--log-level", "off"];
    args.extend_from_slice(extra);
    BrokerProcess::start(&args)
}

fn kill(mut broker: BrokerProcess) {
    broker.child.kill().expect("SIGKILL");
    broker.child.wait().expect("reaped");
}

#[test]
fn topics_messages_sessions_and_cursors_survive_a_kill() {
    let dir = temp_dir("survive");
    let broker = start(&dir, &[]);
    assert!(
        broker.before.iter().any(|l| l.contains("creating it")),
        "{:?}",
        broker.before
    );
    let mut publisher = Raw::publisher(broker.addr);
    publisher.ok(Request::CreateTopic { topic: "a" });
    publisher.ok(Request::CreateTopic { topic: "gone" });
    let (mut subscriber, id) = Raw::subscriber(broker.addr, &["a"]);
    for i in 0..10u8 {
        assert_eq!(publisher.publish("a", &[i; 3]), u64::from(i));
    }
    publisher.ok(Request::DeleteTopic { topic: "gone" });
    // Take 4 and acknowledge them (the ack rides on the next pull).
    let got = messages(subscriber.call(pull(Some("a"), 4, 0, false)));
    assert_eq!(got.len(), 4);
    let got = messages(subscriber.call(pull(Some("a"), 1, 0, true)));
    assert_eq!(got[0].1, 4);
    // Cursors are logged lazily, never waited for; a publish answered
    // after the ack was executed is durable, and so is every record before
    // it in the one log.
    assert_eq!(publisher.publish("a", &[10; 3]), 10);
    kill(broker);

    let broker = start(&dir, &[]);
    let summary = broker
        .before
        .iter()
        .find(|l| l.contains("recovered"))
        .expect("recovery line");
    assert!(summary.contains("recovered 1 topics"), "{summary}");
    let mut subscriber = Raw::hello(broker.addr);
    let reply = subscriber.ok(Request::RegisterSubscriber {
        resume: Some(id),
        timeout_ms: None,
    });
    let Reply::SubscriberRegistered { topics, .. } = reply else {
        panic!("{reply:?}")
    };
    assert_eq!(topics, vec!["a".to_string()]);
    // Redelivered from the acknowledged offset: 4 (the one in flight when
    // killed) on.
    let got = messages(subscriber.call(pull(Some("a"), 100, 0, false)));
    let offsets: Vec<u64> = got.iter().map(|m| m.1).collect();
    assert_eq!(offsets, (4..11).collect::<Vec<_>>());
    assert!(got.iter().all(|(_, o, p)| p == &vec![*o as u8; 3]));
    let mut publisher = Raw::publisher(broker.addr);
    assert_eq!(publisher.publish("a", b"next"), 11);
    assert_eq!(
        publisher.error(Request::Publish {
            topic: "gone",
            payload: b"x"
        }),
        courier::ErrorCode::UnknownTopic
    );
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_second_broker_on_the_same_dir_fails_at_once() {
    let dir = temp_dir("lock");
    let first = start(&dir, &[]);
    let output = Command::new(env!("CARGO_BIN_EXE_broker"))
        .args(["--addr", "127.0.0.1:0", "--data-dir"])
        .arg(&dir)
        .stdin(Stdio::null())
        .output()
        .expect("broker runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("in use by another broker"), "{stderr}");
    drop(first);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn damage_before_the_tail_stops_the_start_unless_truncating() {
    let dir = temp_dir("corrupt");
    let broker = start(&dir, &[]);
    let mut publisher = Raw::publisher(broker.addr);
    publisher.ok(Request::CreateTopic { topic: "t" });
    let _subscriber = Raw::subscriber(broker.addr, &["t"]);
    for i in 0..20u8 {
        publisher.publish("t", &[i; 100]);
    }
    kill(broker);
    // A byte flipped in the middle: valid records follow it, so it is no
    // torn tail.
    let mut segments: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    segments.sort();
    let first = &segments[0];
    let mut bytes = std::fs::read(first).expect("segment");
    let at = bytes.len() / 2;
    bytes[at] ^= 0xff;
    std::fs::write(first, &bytes).expect("damaged");
    let output = Command::new(env!("CARGO_BIN_EXE_broker"))
        .args(["--addr", "127.0.0.1:0", "--data-dir"])
        .arg(&dir)
        .stdin(Stdio::null())
        .output()
        .expect("broker runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let name = first.file_name().and_then(|n| n.to_str()).expect("name");
    assert!(
        stderr.contains(name) && stderr.contains("at byte"),
        "{stderr}"
    );
    let broker = start(&dir, &["--truncate-corrupt"]);
    assert!(
        broker.before.iter().any(|l| l.contains("Corruption cut")),
        "{:?}",
        broker.before
    );
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A session that asked for a long timeout is kept across a restart on a
/// broker whose default would end it at once: the timeout is logged with
/// the session and its clock restarts at recovery.
#[test]
fn a_session_keeps_its_asked_timeout_across_a_restart() {
    let dir = temp_dir("session-timeout");
    let quick = ["--session-timeout", "0"];
    let broker = start(&dir, &quick);
    let mut publisher = Raw::publisher(broker.addr);
    publisher.ok(Request::CreateTopic { topic: "a" });
    let mut subscriber = Raw::hello(broker.addr);
    let reply = subscriber.ok(Request::RegisterSubscriber {
        resume: None,
        timeout_ms: Some(3_600_000),
    });
    let Reply::SubscriberRegistered { subscriber_id, .. } = reply else {
        panic!("{reply:?}")
    };
    subscriber.ok(Request::Subscribe { topic: "a" });
    assert_eq!(publisher.publish("a", b"kept"), 0);
    kill(broker);

    let broker = start(&dir, &quick);
    let mut subscriber = Raw::hello(broker.addr);
    let reply = subscriber.ok(Request::RegisterSubscriber {
        resume: Some(subscriber_id),
        timeout_ms: None,
    });
    assert!(
        matches!(reply, Reply::SubscriberRegistered { ref topics, .. } if topics == &["a"]),
        "{reply:?}"
    );
    let got = messages(subscriber.call(pull(Some("a"), 10, 0, false)));
    assert_eq!(got, vec![("a".to_string(), 0, b"kept".to_vec())]);
    kill(broker);
    let _ = std::fs::remove_dir_all(&dir);
}
