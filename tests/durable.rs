//! The durable broker, through the real binary: state survives a restart
//! (and a SIGKILL), the data directory is locked, damage outside the torn
//! tail stops the start unless `--truncate-corrupt` is given, acknowledged
//! segments are deleted, and a full disk refuses publishes until space is
//! freed (on a small tmpfs, where the test may mount one).

mod common;

use common::{BrokerProcess, Raw, messages, pull, temp_dir, wait_until};
use courier::ErrorCode;
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

/// A new connection that resumes session `id`; and the topics it lists.
fn resume(addr: std::net::SocketAddr, id: u64) -> (Raw, Vec<String>) {
    let mut subscriber = Raw::hello(addr);
    let reply = subscriber.ok(Request::RegisterSubscriber {
        resume: Some(id),
        timeout_ms: None,
    });
    let Reply::SubscriberRegistered { topics, .. } = reply else {
        panic!("{reply:?}")
    };
    (subscriber, topics)
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
    let mut publisher = Raw::publisher_with_topic(broker.addr, "a");
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
    let (mut subscriber, topics) = resume(broker.addr, id);
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
    let mut publisher = Raw::publisher_with_topic(broker.addr, "t");
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

fn segment_files(dir: &Path) -> (usize, u64) {
    let mut count = 0;
    let mut bytes = 0;
    for entry in std::fs::read_dir(dir).expect("data dir") {
        let entry = entry.expect("dir entry");
        if entry.file_name().to_string_lossy().ends_with(".log") {
            // The broker may release a segment between the listing and
            // this look at it: then it is no longer there to count.
            match entry.metadata() {
                Ok(metadata) => {
                    count += 1;
                    bytes += metadata.len();
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => panic!("metadata of {:?}: {e}", entry.path()),
            }
        }
    }
    (count, bytes)
}

#[test]
fn acknowledged_segments_are_deleted_and_a_restart_starts_at_a_checkpoint() {
    let dir = temp_dir("release");
    let broker = start(&dir, &["--segment-bytes", "64k"]);
    let mut publisher = Raw::publisher_with_topic(broker.addr, "a");
    publisher.ok(Request::CreateTopic { topic: "idle" });
    let (mut subscriber, id) = Raw::subscriber(broker.addr, &["a"]);
    let payload = vec![7u8; 4096];
    let batch: Vec<&[u8]> = vec![&payload; 8];
    let (mut most, mut published) = (0, 0u64);
    for _ in 0..120 {
        publisher.publish_batch("a", &batch);
        published += batch.len() as u64;
        let got = messages(subscriber.call(pull(Some("a"), 8, 1000, true)));
        assert_eq!(got.len(), batch.len());
        most = most.max(segment_files(&dir).0);
    }
    // Acknowledge the last batch; a publish answered after it is durable,
    // and the ack's record with it.
    let got = messages(subscriber.call(pull(Some("a"), 8, 0, true)));
    assert!(got.is_empty());
    assert_eq!(publisher.publish("a", b"last"), published);
    let (count, bytes) = segment_files(&dir);
    eprintln!(
        "{published} messages of 4 KiB: at most {most} segments at once, {count} ({bytes} bytes) at the end"
    );
    // About 4 MB went through 64 KiB segments: without release there would
    // be some 60 of them.
    assert!(most <= 6, "at most {most} segments at once");
    assert!(
        count <= 6 && bytes < 6 * 80 * 1024,
        "{count} segments, {bytes} bytes"
    );
    kill(broker);

    let broker = start(&dir, &["--segment-bytes", "64k"]);
    let (mut subscriber, topics) = resume(broker.addr, id);
    assert_eq!(topics, vec!["a".to_string()]);
    let got = messages(subscriber.call(pull(Some("a"), 100, 0, false)));
    let offsets: Vec<u64> = got.iter().map(|m| m.1).collect();
    assert_eq!(offsets, vec![published]);
    let mut publisher = Raw::publisher(broker.addr);
    assert_eq!(publisher.publish("a", b"next"), published + 1);
    assert_eq!(publisher.publish("idle", b"first"), 0);
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A size-limited tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// None (with the reason printed) where mounting is not possible.
    fn mount(name: &str, size: &str) -> Option<Tmpfs> {
        let dir = temp_dir(name);
        std::fs::create_dir_all(&dir).expect("mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if status.is_ok_and(|s| s.success()) {
            Some(Tmpfs(dir))
        } else {
            eprintln!(
                "SKIPPED: cannot mount a tmpfs at {} (needs root and mount); the full-disk run did not happen",
                dir.display()
            );
            let _ = std::fs::remove_dir(&dir);
            None
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Writes `path` until the file system is full; returns the bytes written.
fn fill(path: &Path) -> u64 {
    use std::io::Write;
    let mut file = std::fs::File::create(path).expect("filler");
    let chunk = vec![0u8; 4096];
    let mut written = 0;
    // Bounded: the tmpfs is a few MiB.
    for _ in 0..100_000 {
        match file.write(&chunk) {
            Ok(n) if n > 0 => written += n as u64,
            _ => break,
        }
    }
    let _ = file.sync_all();
    written
}

#[test]
fn a_full_disk_refuses_publishes_and_publishing_resumes_once_space_is_freed() {
    let Some(fs) = Tmpfs::mount("full-disk", "2m") else {
        return;
    };
    let dir = fs.0.join("data");
    let broker = start(&dir, &["--segment-bytes", "64k"]);
    let mut publisher = Raw::publisher_with_topic(broker.addr, "a");
    let (mut subscriber, _) = Raw::subscriber(broker.addr, &["a"]);
    for i in 0..4u8 {
        assert_eq!(publisher.publish("a", &[i; 100]), u64::from(i));
    }
    let filler = fs.0.join("filler");
    assert!(fill(&filler) > 0);

    let payload = vec![9u8; 16 << 10];
    let refused = publisher.call(Request::Publish {
        topic: "a",
        payload: &payload,
    });
    match refused {
        Err(e) => assert_eq!(e.code, ErrorCode::StorageUnavailable, "{e:?}"),
        Ok(reply) => panic!("a publish on a full disk was answered {reply:?}"),
    }
    // Pulls and acks go on; the refused message never shows.
    let got = messages(subscriber.call(pull(Some("a"), 100, 0, false)));
    let offsets: Vec<u64> = got.iter().map(|m| m.1).collect();
    assert_eq!(offsets, vec![0, 1, 2, 3]);
    let got = messages(subscriber.call(pull(Some("a"), 100, 0, true)));
    assert!(got.is_empty());

    std::fs::remove_file(&filler).expect("filler removed");
    // Publishing resumes by itself: no restart, no command.
    let mut offset = None;
    wait_until(
        "a publish accepted after space was freed",
        || match publisher.call(Request::Publish {
            topic: "a",
            payload: b"again",
        }) {
            Ok(Reply::Published { offset: o, .. }) => {
                offset = Some(o);
                true
            }
            Ok(other) => panic!("{other:?}"),
            Err(e) => {
                assert_eq!(e.code, ErrorCode::StorageUnavailable, "{e:?}");
                false
            }
        },
    );
    let offset = offset.expect("published");
    // The refused message's offset (4) is a gap, never given again.
    assert!(offset > 4, "offset {offset} reused");
    let got = messages(subscriber.call(pull(Some("a"), 100, 1000, true)));
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].1, got[0].2.as_slice()), (offset, &b"again"[..]));
    // And after a restart too.
    kill(broker);
    let broker = start(&dir, &["--segment-bytes", "64k"]);
    let mut publisher = Raw::publisher(broker.addr);
    assert_eq!(publisher.publish("a", b"after"), offset + 1);
    drop(broker);
}
/// A session that asked for a long timeout is kept across a restart on a
/// broker whose default would end it at once: the timeout is logged with
/// the session and its clock restarts at recovery.
#[test]
fn a_session_keeps_its_asked_timeout_across_a_restart() {
    let dir = temp_dir("session-timeout");
    let quick = ["--session-timeout", "0"];
    let broker = start(&dir, &quick);
    let mut publisher = Raw::publisher_with_topic(broker.addr, "a");
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
