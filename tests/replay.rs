//! Replay and retention, over TCP on loopback: retained topics keep history
//! with no subscriber and across a restart, start positions land on their
//! boundaries, retention drops the oldest and never a message inside its
//! policy, SEEK moves a cursor both ways, an overtaken subscriber is told
//! what it lost, and FETCH reads without a session.

mod common;

use common::{BrokerProcess, Raw, limits, messages, pull, start_broker, temp_dir, wait_until};
use courier::ErrorCode;
use courier::client::Client;
use courier::protocol::{Fetched, Position, Reply, Request, Retention, TopicMessages};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

const DAY_MS: u64 = 86_400_000;

fn keep(retain_ms: u64, retain_bytes: u64) -> Retention {
    Retention::Keep {
        retain_ms,
        retain_bytes,
    }
}

fn create(publisher: &mut Raw, topic: &str, retention: Retention) {
    publisher.ok(Request::CreateTopicWith { topic, retention });
}

/// A publisher that has created `topic`, kept a day, and published
/// `payloads` to it, one PUBLISH each.
fn history(addr: SocketAddr, topic: &str, payloads: impl IntoIterator<Item = Vec<u8>>) -> Raw {
    let mut publisher = Raw::publisher(addr);
    create(&mut publisher, topic, keep(DAY_MS, 0));
    for payload in payloads {
        publisher.publish(topic, &payload);
    }
    publisher
}

fn fetch(raw: &mut Raw, topic: &str, offset: u64, max_messages: u32, max_bytes: u32) -> Fetched {
    match raw.ok(Request::Fetch {
        topic,
        offset,
        max_messages,
        max_bytes,
    }) {
        Reply::Fetched(fetched) => fetched,
        other => panic!("{other:?}"),
    }
}

/// Offsets and payloads of a FETCH.
fn fetched(fetched: &Fetched) -> Vec<(u64, Vec<u8>)> {
    fetched
        .messages
        .iter()
        .map(|m| (m.offset, m.payload.to_vec()))
        .collect()
}

/// A subscriber session subscribed to `topic` from `position`; where it
/// starts.
fn subscribe_from(addr: SocketAddr, topic: &str, position: Position) -> (Raw, u64) {
    let (mut raw, _) = Raw::subscriber(addr, &[]);
    let Reply::Subscribed { next_offset } = raw.ok(Request::SubscribeFrom { topic, position })
    else {
        panic!("unexpected reply to SUBSCRIBE")
    };
    (raw, next_offset)
}

fn seek(raw: &mut Raw, topic: &str, position: Position) -> u64 {
    match raw.ok(Request::Seek { topic, position }) {
        Reply::Subscribed { next_offset } => next_offset,
        other => panic!("{other:?}"),
    }
}

fn pulled(raw: &mut Raw, topic: &str, max: u32, ack: bool) -> Vec<TopicMessages> {
    match raw.call(pull(Some(topic), max, 0, ack)) {
        Ok(Reply::Messages(groups)) => groups,
        other => panic!("{other:?}"),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn start_durable(dir: &std::path::Path) -> BrokerProcess {
    let dir = dir.to_str().expect("utf-8 path");
    BrokerProcess::start(&["--data-dir", dir, "--log-level", "off"])
}

#[test]
fn a_retained_topic_keeps_history_without_subscribers_across_a_restart() {
    let dir = temp_dir("replay-restart");
    let mut broker = start_durable(&dir);
    let mut publisher = history(
        broker.addr,
        "history",
        (0..20).map(|i| format!("m{i}").into_bytes()),
    );
    let batch: Vec<Vec<u8>> = (20..50).map(|i| format!("m{i}").into_bytes()).collect();
    let slices: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
    publisher.publish_batch("history", &slices);
    drop(publisher);
    broker.child.kill().expect("SIGKILL");
    broker.child.wait().expect("reaped");

    let broker = start_durable(&dir);
    let output = Command::new(env!("CARGO_BIN_EXE_subscriber"))
        .env_remove("BROKER_ADDR")
        .args(["--broker", &broker.addr.to_string()])
        .args([
            "--subscribe",
            "history",
            "--from",
            "earliest",
            "--count",
            "50",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run the subscriber");
    assert!(output.status.success(), "{output:?}");
    let lines: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    let expected: Vec<String> = (0..50).map(|i| format!("m{i}")).collect();
    assert_eq!(lines, expected);
    // The policy survived too.
    let mut admin = Raw::hello(broker.addr);
    let Reply::TopicInfo(info) = admin.ok(Request::TopicInfo { topic: "history" }) else {
        panic!("unexpected reply to TOPIC_INFO")
    };
    assert_eq!(
        (info.retain_ms, info.retain_bytes, info.earliest_offset),
        (Some(DAY_MS), Some(0), Some(0))
    );
    let all = fetch(&mut admin, "history", 0, 1000, 1 << 20);
    assert_eq!(all.messages.len(), 50);
    assert!(
        all.messages
            .windows(2)
            .all(|w| w[0].time_ms <= w[1].time_ms)
    );
}

#[test]
fn offset_and_time_starts_land_on_their_boundaries() {
    let broker = start_broker();
    let mut publisher = Raw::publisher(broker.addr());
    create(&mut publisher, "t", keep(DAY_MS, 0));
    publisher.publish_batch("t", &[b"a0", b"a1", b"a2"]);
    // The next batch gets a later append time.
    let first = now_ms();
    wait_until("the clock to move on", || now_ms() > first + 2);
    publisher.publish_batch("t", &[b"b3", b"b4"]);
    let times: Vec<u64> = fetch(&mut publisher, "t", 0, 100, 1 << 20)
        .messages
        .iter()
        .map(|m| m.time_ms)
        .collect();
    assert_eq!(times.len(), 5);
    assert!(times[2] < times[3], "{times:?}");
    let addr = broker.addr();
    let cases = [
        (Position::Earliest, 0),
        (Position::New, 5),
        (Position::Offset(0), 0),
        (Position::Offset(4), 4),
        (Position::Offset(5), 5),
        (Position::Offset(99), 5),
        (Position::TimeMs(0), 0),
        (Position::TimeMs(times[0]), 0),
        (Position::TimeMs(times[2] + 1), 3),
        (Position::TimeMs(times[3]), 3),
        (Position::TimeMs(times[4] + 1), 5),
        (Position::TimeMs(u64::MAX), 5),
    ];
    for (position, expected) in cases {
        let (mut subscriber, start) = subscribe_from(addr, "t", position);
        assert_eq!(start, expected, "{position:?}");
        let got = messages(subscriber.call(pull(Some("t"), 10, 0, false)));
        let offsets: Vec<u64> = got.iter().map(|(_, o, _)| *o).collect();
        assert_eq!(offsets, (expected..5).collect::<Vec<_>>(), "{position:?}");
    }
    // SUBSCRIBE again changes nothing.
    let (mut subscriber, _) = subscribe_from(addr, "t", Position::Offset(3));
    assert_eq!(
        subscriber.ok(Request::SubscribeFrom {
            topic: "t",
            position: Position::Earliest
        }),
        Reply::Subscribed { next_offset: 3 }
    );
}

#[test]
fn retention_by_size_drops_the_oldest_and_keeps_the_policy() {
    let broker = start_broker();
    let mut publisher = Raw::publisher(broker.addr());
    create(&mut publisher, "sized", keep(0, 1000));
    for i in 0..30u8 {
        publisher.publish("sized", &[i; 100]);
        let got = fetch(&mut publisher, "sized", 0, 1000, 1 << 20);
        // Exactly the newest that fit 1000 bytes: never one fewer.
        let kept = (u64::from(i) + 1).min(10);
        assert_eq!(got.end_offset, u64::from(i) + 1);
        assert_eq!(got.earliest_offset, got.end_offset - kept, "after {i}");
        assert_eq!(got.messages.len() as u64, kept);
    }
    let got = fetch(&mut publisher, "sized", 0, 1000, 1 << 20);
    assert_eq!(
        fetched(&got),
        (20..30u8)
            .map(|i| (u64::from(i), vec![i; 100]))
            .collect::<Vec<_>>()
    );
}

#[test]
fn retention_by_age_drops_the_oldest_and_keeps_the_policy() {
    let broker = start_broker();
    let mut publisher = Raw::publisher(broker.addr());
    const AGE_MS: u64 = 300;
    create(&mut publisher, "aged", keep(AGE_MS, 0));
    publisher.publish_batch("aged", &[b"old0", b"old1", b"old2"]);
    // Nobody reads or publishes: the age timer alone drops them.
    wait_until("the old messages to expire", || {
        fetch(&mut publisher, "aged", 0, 100, 1 << 20).earliest_offset == 3
    });
    publisher.publish_batch("aged", &[b"new3", b"new4"]);
    let before = now_ms();
    let got = fetch(&mut publisher, "aged", 0, 100, 1 << 20);
    // Whatever was appended within the policy when the fetch began is
    // there; what was dropped was older than it.
    for message in &got.messages {
        assert!(message.offset >= 3);
    }
    let times: Vec<u64> = got.messages.iter().map(|m| m.time_ms).collect();
    if times.iter().all(|&t| t + AGE_MS > before + 5) {
        assert_eq!(
            fetched(&got),
            vec![(3, b"new3".to_vec()), (4, b"new4".to_vec())]
        );
    }
    wait_until("the new messages to expire", || {
        fetch(&mut publisher, "aged", 0, 100, 1 << 20).earliest_offset == 5
    });
}

#[test]
fn until_acked_topics_still_forget_once_acknowledged() {
    let broker = start_broker();
    let mut publisher = Raw::publisher_with_topic(broker.addr(), "q");
    publisher.publish("q", b"nobody");
    let (mut subscriber, _) = Raw::subscriber(broker.addr(), &["q"]);
    publisher.publish("q", b"one");
    publisher.publish("q", b"two");
    // FETCH reads without a cursor: it holds nothing back.
    assert_eq!(
        fetched(&fetch(&mut publisher, "q", 0, 10, 1 << 20)),
        vec![(1, b"one".to_vec()), (2, b"two".to_vec())]
    );
    assert_eq!(pulled(&mut subscriber, "q", 10, false).len(), 1);
    subscriber.ok(Request::Ack {
        topic: "q",
        offset: 3,
    });
    let after = fetch(&mut publisher, "q", 0, 10, 1 << 20);
    assert_eq!((after.earliest_offset, after.end_offset), (3, 3));
    assert!(after.messages.is_empty());
    // "earliest" on an until-acked topic is what it still holds.
    let (_, start) = subscribe_from(broker.addr(), "q", Position::Earliest);
    assert_eq!(start, 3);
}

#[test]
fn seek_moves_a_cursor_back_and_forward() {
    let broker = start_broker();
    let mut publisher = history(broker.addr(), "s", (0..10u8).map(|i| vec![i]));
    let (mut subscriber, start) = subscribe_from(broker.addr(), "s", Position::Earliest);
    assert_eq!(start, 0);
    let all = messages(subscriber.call(pull(Some("s"), 100, 0, false)));
    assert_eq!(all.len(), 10);
    subscriber.ok(Request::Ack {
        topic: "s",
        offset: 10,
    });
    // Back: delivered again from there.
    assert_eq!(seek(&mut subscriber, "s", Position::Offset(3)), 3);
    let again = messages(subscriber.call(pull(Some("s"), 2, 0, false)));
    assert_eq!(
        again.iter().map(|(_, o, p)| (*o, p[0])).collect::<Vec<_>>(),
        vec![(3, 3), (4, 4)]
    );
    // Forward, past what was in flight.
    assert_eq!(seek(&mut subscriber, "s", Position::Offset(8)), 8);
    let forward = messages(subscriber.call(pull(Some("s"), 100, 0, false)));
    assert_eq!(
        forward.iter().map(|(_, o, _)| *o).collect::<Vec<_>>(),
        vec![8, 9]
    );
    // An ack beyond the new delivery point is refused as usual.
    assert_eq!(
        subscriber.error(Request::Ack {
            topic: "s",
            offset: 11
        }),
        ErrorCode::InvalidAck
    );
    assert_eq!(seek(&mut subscriber, "s", Position::Earliest), 0);
    assert_eq!(seek(&mut subscriber, "s", Position::New), 10);
    assert_eq!(seek(&mut subscriber, "s", Position::Offset(500)), 10);
    // A parked pull is woken by a SEEK back.
    let id = subscriber.send(pull(Some("s"), 1, 5000, false));
    seek(&mut subscriber, "s", Position::Offset(9));
    let (got, reply) = subscriber.recv(courier::protocol::Op::Pull);
    assert_eq!(got, id);
    assert_eq!(messages(reply), vec![("s".into(), 9, vec![9])]);
    // SEEK needs a subscription.
    let (mut other, _) = Raw::subscriber(broker.addr(), &[]);
    assert_eq!(
        other.error(Request::Seek {
            topic: "s",
            position: Position::Earliest
        }),
        ErrorCode::NotSubscribed
    );
    assert_eq!(
        publisher.error(Request::Seek {
            topic: "s",
            position: Position::Earliest
        }),
        ErrorCode::NotRegistered
    );
}

#[test]
fn a_subscriber_overtaken_by_retention_is_told_what_it_lost() {
    let broker = start_broker();
    let mut publisher = Raw::publisher(broker.addr());
    create(&mut publisher, "r", keep(0, 500));
    let (mut subscriber, _) = subscribe_from(broker.addr(), "r", Position::New);
    for i in 0..20u8 {
        publisher.publish("r", &[i; 100]);
    }
    let groups = pulled(&mut subscriber, "r", 3, false);
    assert_eq!(groups.len(), 1);
    let group = &groups[0];
    assert_eq!((group.first_offset, group.lost), (15, 15));
    assert_eq!(group.payloads.len(), 3);
    // Once told, the loss is not repeated; delivery goes on.
    let next = pulled(&mut subscriber, "r", 10, true);
    assert_eq!((next[0].first_offset, next[0].lost), (18, 0));
    // A loss alone, with no message to go with it.
    for i in 20..30u8 {
        publisher.publish("r", &[i; 100]);
    }
    subscriber.ok(Request::Ack {
        topic: "r",
        offset: 20,
    });
    let mut client = Client::connect(broker.addr()).expect("connect");
    client.register_subscriber().expect("register");
    client.subscribe("r").expect("subscribe");
    for i in 30..40u8 {
        publisher.publish("r", &[i; 100]);
    }
    let batch = client
        .pull(&courier::client::PullOptions {
            max_messages: 1,
            ..Default::default()
        })
        .expect("pull");
    assert_eq!(batch.losses().collect::<Vec<_>>(), vec![("r", 35, 5)]);
    assert_eq!(batch.len(), 1);
}

#[test]
fn fetch_is_bounded_and_clamped() {
    let broker = start_broker_small_frames();
    let mut publisher = history(broker.addr(), "f", (0..10u8).map(|i| vec![i; 300]));
    let got = fetch(&mut publisher, "f", 2, 3, 1 << 20);
    assert_eq!(
        got.messages.iter().map(|m| m.offset).collect::<Vec<_>>(),
        vec![2, 3, 4]
    );
    assert_eq!(
        (got.next_offset, got.earliest_offset, got.end_offset),
        (5, 0, 10)
    );
    // max_bytes: the first message always comes.
    let got = fetch(&mut publisher, "f", 0, 100, 1);
    assert_eq!(got.messages.len(), 1);
    let got = fetch(&mut publisher, "f", 0, 100, 700);
    assert_eq!(got.messages.len(), 2);
    // The frame bounds it (2 KiB frames hold at most 4 such messages with
    // their overhead).
    let got = fetch(&mut publisher, "f", 0, 100, u32::MAX);
    assert!(!got.messages.is_empty() && got.messages.len() < 10);
    assert_eq!(got.next_offset, got.messages.len() as u64);
    // Past the end: nothing, and next_offset stays at the end.
    let got = fetch(&mut publisher, "f", 99, 100, u32::MAX);
    assert!(got.messages.is_empty());
    assert_eq!(got.next_offset, 10);
    assert_eq!(
        publisher.error(Request::Fetch {
            topic: "nope",
            offset: 0,
            max_messages: 1,
            max_bytes: 1
        }),
        ErrorCode::UnknownTopic
    );
    // No role is needed: a connection that only said HELLO may fetch.
    let mut reader = Raw::hello(broker.addr());
    assert_eq!(fetch(&mut reader, "f", 0, 1, 0).messages.len(), 1);
}

fn start_broker_small_frames() -> courier::server::RunningServer {
    common::start_broker_with(limits(|l| l.max_frame_bytes = 2048))
}

#[test]
fn a_retained_topic_at_its_backlog_bound_drops_acknowledged_history_not_unread() {
    let broker = common::start_broker_with(limits(|l| {
        l.max_backlog_messages = 10;
        l.publish_hold = std::time::Duration::ZERO;
    }));
    // No subscriber: the oldest history makes room.
    let mut publisher = history(broker.addr(), "b", (0..15u8).map(|i| vec![i]));
    let got = fetch(&mut publisher, "b", 0, 100, 1 << 20);
    assert_eq!((got.earliest_offset, got.end_offset), (5, 15));
    // A subscriber that has not read them holds them: the bound refuses.
    let (_subscriber, start) = subscribe_from(broker.addr(), "b", Position::Earliest);
    assert_eq!(start, 5);
    assert_eq!(
        publisher.error(Request::Publish {
            topic: "b",
            payload: b"x"
        }),
        ErrorCode::TopicFull
    );
}

#[test]
fn the_commands_create_retained_topics_show_them_and_fetch() {
    let broker = start_broker();
    let addr = broker.addr().to_string();
    let run = |program: &str, args: &[&str]| {
        let output = Command::new(program)
            .env_remove("BROKER_ADDR")
            .args(["--broker", &addr])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run");
        assert!(output.status.success(), "{args:?}: {output:?}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let publisher = env!("CARGO_BIN_EXE_publisher");
    run(
        publisher,
        &["--create", "c", "--retain", "24h", "--retain-bytes", "1G"],
    );
    for m in ["one", "two", "three"] {
        run(publisher, &["--publish", "c", m]);
    }
    let info = run(env!("CARGO_BIN_EXE_courier"), &["topic", "c"]);
    assert!(
        info.contains("kept for 1day, up to 1073741824 bytes"),
        "{info}"
    );
    let subscriber = env!("CARGO_BIN_EXE_subscriber");
    assert_eq!(
        run(subscriber, &["--fetch", "c", "-v"]),
        "c 0 one\nc 1 two\nc 2 three\n"
    );
    assert_eq!(
        run(subscriber, &["--fetch", "c", "--from", "1", "--count", "1"]),
        "two\n"
    );
    let courier = env!("CARGO_BIN_EXE_courier");
    let listed = run(courier, &["fetch", "c", "--from", "1"]);
    let rows: Vec<Vec<&str>> = listed.lines().map(|l| l.split(' ').collect()).collect();
    assert_eq!(rows.len(), 2, "{listed}");
    for (row, (offset, payload)) in rows.iter().zip([("1", "two"), ("2", "three")]) {
        assert_eq!((row[0], row[2]), (offset, payload), "{listed}");
        assert!(
            row[1].starts_with("20") && row[1].ends_with('Z'),
            "{listed}"
        );
    }
    let json = run(courier, &["--json", "fetch", "c", "--count", "1"]);
    let value: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(value[0]["offset"], 0);
    assert_eq!(value[0]["payload"], "one");
    let usage = Command::new(publisher)
        .args(["--publish", "c", "x", "--retain", "1h"])
        .output()
        .expect("run");
    assert_eq!(usage.status.code(), Some(2));
}

fn segment_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .expect("data dir")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".log"))
        })
        .count()
}

#[test]
fn retention_by_size_releases_whole_segments_and_keeps_the_policy_across_a_restart() {
    let dir = temp_dir("replay-segments");
    let path = dir.to_str().expect("utf-8 path").to_owned();
    let start = || {
        BrokerProcess::start(&[
            "--data-dir",
            &path,
            "--log-level",
            "off",
            "--segment-bytes",
            "64k",
        ])
    };
    let mut broker = start();
    let mut publisher = Raw::publisher(broker.addr);
    // The newest 32 KiB are kept: a few segments' worth at most.
    create(&mut publisher, "window", keep(0, 32 * 1024));
    let payload = vec![3u8; 4096];
    let batch: Vec<&[u8]> = vec![&payload; 8];
    let mut most = 0;
    for _ in 0..120 {
        publisher.publish_batch("window", &batch);
        most = most.max(segment_files(&dir));
    }
    // About 4 MB went through 64 KiB segments: without release there would
    // be some 60 of them.
    assert!(most <= 8, "at most {most} segments at once");
    let got = fetch(&mut publisher, "window", 0, 1000, u32::MAX);
    assert_eq!((got.earliest_offset, got.end_offset), (952, 960));
    drop(publisher);
    broker.child.kill().expect("SIGKILL");
    broker.child.wait().expect("reaped");

    let broker = start();
    let mut reader = Raw::hello(broker.addr);
    let got = fetch(&mut reader, "window", 0, 1000, u32::MAX);
    assert_eq!((got.earliest_offset, got.end_offset), (952, 960));
    assert_eq!(
        got.messages.iter().map(|m| m.offset).collect::<Vec<_>>(),
        (952..960).collect::<Vec<_>>()
    );
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}
