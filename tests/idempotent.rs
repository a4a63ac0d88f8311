//! Idempotent producers over TCP on loopback: a resent publish is answered
//! with its original reply and stored once, gaps and forgotten seqs get
//! their codes, a held publish and its resend are decided in order, the
//! seqs survive a restart, and a `publisher` killed mid-pipeline, or cut
//! off from the broker, stores every line exactly once.

mod common;

use common::{BrokerProcess, Raw, limits, start_broker, start_broker_with, temp_dir, wait_until};
use courier::ErrorCode;
use courier::protocol::{Fetched, Reply, Request, Retention};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

const DAY: Retention = Retention::Keep {
    retain_ms: 86_400_000,
    retain_bytes: 0,
};

/// Creates `topic` kept for a day, as every topic of these tests is.
fn create_for_a_day(raw: &mut Raw, topic: &str) {
    raw.ok(Request::CreateTopicWith {
        topic,
        retention: DAY,
    });
}

fn producer(addr: SocketAddr, producer_id: &str) -> Raw {
    let mut raw = Raw::hello(addr);
    raw.ok(Request::RegisterProducer { producer_id });
    raw
}

fn publish_seq(raw: &mut Raw, topic: &str, payload: &[u8], seq: u64) -> Result<Reply, ErrorCode> {
    raw.call(Request::PublishSeq {
        topic,
        payload,
        seq,
    })
    .map_err(|e| e.code)
}

fn batch_seq(raw: &mut Raw, topic: &str, payloads: &[&[u8]], first_seq: u64) -> Reply {
    let mut scratch = Vec::new();
    let payloads = courier::codec::encode_payloads(&mut scratch, payloads);
    raw.ok(Request::PublishBatchSeq {
        topic,
        payloads,
        first_seq,
    })
}

fn published(offset: u64) -> Result<Reply, ErrorCode> {
    Ok(Reply::Published {
        offset,
        subscribers: 0,
    })
}

/// Every payload the topic holds, in offset order.
fn everything(addr: SocketAddr, topic: &str) -> Vec<Vec<u8>> {
    let mut raw = Raw::hello(addr);
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let Reply::Fetched(Fetched {
            messages,
            next_offset,
            end_offset,
            ..
        }) = raw.ok(Request::Fetch {
            topic,
            offset,
            max_messages: 65_536,
            max_bytes: u32::MAX,
        })
        else {
            panic!("unexpected reply to FETCH")
        };
        out.extend(messages.into_iter().map(|m| m.payload.to_vec()));
        if next_offset >= end_offset {
            return out;
        }
        offset = next_offset;
    }
}

#[test]
fn a_resend_gets_the_original_reply_and_is_stored_once() {
    let broker = start_broker();
    let mut p = producer(broker.addr(), "feed");
    create_for_a_day(&mut p, "t");
    assert_eq!(publish_seq(&mut p, "t", b"a", 1), published(0));
    assert_eq!(publish_seq(&mut p, "t", b"b", 2), published(1));
    // Resent, from another connection too (as after a reconnect).
    assert_eq!(publish_seq(&mut p, "t", b"a", 1), published(0));
    let mut again = producer(broker.addr(), "feed");
    assert_eq!(publish_seq(&mut again, "t", b"b", 2), published(1));
    // A gap: nothing stored; the next in order still is.
    assert_eq!(
        publish_seq(&mut again, "t", b"d", 4),
        Err(ErrorCode::SequenceGap)
    );
    assert_eq!(publish_seq(&mut again, "t", b"c", 3), published(2));
    // Another producer, and the same producer on another topic, are their
    // own sequences.
    let mut other = producer(broker.addr(), "other");
    assert_eq!(publish_seq(&mut other, "t", b"x", 1), published(3));
    create_for_a_day(&mut p, "u");
    assert_eq!(publish_seq(&mut p, "u", b"u", 1), published(0));
    assert_eq!(
        everything(broker.addr(), "t"),
        [&b"a"[..], b"b", b"c", b"x"].map(<[u8]>::to_vec)
    );
    // A seq without a producer id is malformed.
    let mut plain = Raw::publisher(broker.addr());
    assert_eq!(
        publish_seq(&mut plain, "t", b"?", 1),
        Err(ErrorCode::MalformedRequest)
    );
}

#[test]
fn batches_are_recognised_whole_regrouped_or_by_their_new_tail() {
    let broker = start_broker();
    let mut p = producer(broker.addr(), "b");
    create_for_a_day(&mut p, "t");
    let first = batch_seq(&mut p, "t", &[b"1", b"2", b"3"], 1);
    assert_eq!(
        first,
        Reply::PublishedBatch {
            first_offset: 0,
            count: 3,
            subscribers: 0
        }
    );
    batch_seq(&mut p, "t", &[b"4", b"5"], 4);
    // The same batch: the same reply.
    assert_eq!(batch_seq(&mut p, "t", &[b"1", b"2", b"3"], 1), first);
    // Regrouped (seqs 2..=5 across two publishes): their offsets.
    assert_eq!(
        batch_seq(&mut p, "t", &[b"2", b"3", b"4", b"5"], 2),
        Reply::PublishedBatch {
            first_offset: 1,
            count: 4,
            subscribers: 0
        }
    );
    // Straddling the last stored (5): only 6 and 7 are new.
    assert_eq!(
        batch_seq(&mut p, "t", &[b"4", b"5", b"6", b"7"], 4),
        Reply::PublishedBatch {
            first_offset: 5,
            count: 2,
            subscribers: 0
        }
    );
    let expected: Vec<Vec<u8>> = (1..=7).map(|i: u8| vec![b'0' + i]).collect();
    assert_eq!(everything(broker.addr(), "t"), expected);
}

#[test]
fn a_seq_too_old_to_remember_is_a_duplicate_sequence() {
    let broker = start_broker();
    let mut p = producer(broker.addr(), "old");
    create_for_a_day(&mut p, "t");
    for seq in 1..=100 {
        publish_seq(&mut p, "t", b"m", seq).expect("stored");
    }
    assert_eq!(
        publish_seq(&mut p, "t", b"m", 1),
        Err(ErrorCode::DuplicateSequence)
    );
    // The last 64 are remembered.
    assert_eq!(publish_seq(&mut p, "t", b"m", 37), published(36));
    assert_eq!(everything(broker.addr(), "t").len(), 100);
}

#[test]
fn a_resend_behind_its_held_original_is_decided_after_it() {
    let broker = start_broker_with(limits(|l| l.max_backlog_messages = 1));
    let mut p = producer(broker.addr(), "held");
    p.ok(Request::CreateTopic { topic: "t" });
    let (mut s, _) = Raw::subscriber(broker.addr(), &["t"]);
    assert_eq!(
        publish_seq(&mut p, "t", b"first", 1),
        Ok(Reply::Published {
            offset: 0,
            subscribers: 1,
        })
    );
    // The topic is full: seq 2 is held, and its resend waits behind it.
    let held = p.send(Request::PublishSeq {
        topic: "t",
        payload: b"second",
        seq: 2,
    });
    let resend = p.send(Request::PublishSeq {
        topic: "t",
        payload: b"second",
        seq: 2,
    });
    let mut stats = Raw::publisher(broker.addr());
    wait_until("both publishes to be held", || stats.stats().held_now == 2);
    // Room: the original is stored, the resend answered with its reply.
    let got = common::messages(s.call(common::pull(Some("t"), 10, 0, true)));
    assert_eq!(got.len(), 1);
    s.ok(Request::Ack {
        topic: "t",
        offset: 1,
    });
    let second = Reply::Published {
        offset: 1,
        subscribers: 1,
    };
    for id in [held, resend] {
        let (got, reply) = p.recv(courier::protocol::Op::Publish);
        assert_eq!(got, id);
        assert_eq!(reply, Ok(second.clone()));
    }
    let got = common::messages(s.call(common::pull(Some("t"), 10, 0, true)));
    assert_eq!(got, vec![("t".to_owned(), 1, b"second".to_vec())]);
    assert_eq!(stats.stats().messages_in, 2);
}

#[test]
fn seqs_survive_a_restart() {
    let dir = temp_dir("idempotent-restart");
    let path = dir.to_str().expect("utf-8 path").to_owned();
    let start = || BrokerProcess::start(&["--data-dir", &path, "--log-level", "off"]);
    let mut broker = start();
    let mut p = producer(broker.addr, "durable");
    create_for_a_day(&mut p, "t");
    for seq in 1..=5 {
        publish_seq(&mut p, "t", format!("m{seq}").as_bytes(), seq).expect("stored");
    }
    drop(p);
    broker.child.kill().expect("SIGKILL");
    broker.child.wait().expect("reaped");
    let broker = start();
    let mut p = producer(broker.addr, "durable");
    // The resend is recognised, with its original offset; the gap too.
    assert_eq!(publish_seq(&mut p, "t", b"m5", 5), published(4));
    assert_eq!(
        publish_seq(&mut p, "t", b"m7", 7),
        Err(ErrorCode::SequenceGap)
    );
    assert_eq!(publish_seq(&mut p, "t", b"m6", 6), published(5));
    let expected: Vec<Vec<u8>> = (1..=6).map(|i| format!("m{i}").into_bytes()).collect();
    assert_eq!(everything(broker.addr, "t"), expected);
}

fn lines(n: u32) -> Vec<u8> {
    (1..=n)
        .flat_map(|i| format!("line {i}\n").into_bytes())
        .collect()
}

fn expected(n: u32) -> Vec<Vec<u8>> {
    (1..=n).map(|i| format!("line {i}").into_bytes()).collect()
}

fn publisher_command(addr: SocketAddr, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_publisher"));
    command
        .env_remove("BROKER_ADDR")
        .args(["--broker", &addr.to_string()])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

#[test]
fn a_publisher_killed_mid_pipeline_and_run_again_stores_every_line_once() {
    const LINES: u32 = 60_000;
    let broker = start_broker();
    let mut admin = Raw::publisher(broker.addr());
    create_for_a_day(&mut admin, "feed");
    let input = lines(LINES);
    let args = ["--publish", "feed", "--producer-id", "feed-1"];
    let mut first = publisher_command(broker.addr(), &args)
        .spawn()
        .expect("spawn publisher");
    let mut stdin = first.stdin.take().expect("stdin");
    // Half the input, then more as the pipeline goes, and the kill while
    // batches are in flight.
    let half = input.len() / 2;
    stdin.write_all(&input[..half]).expect("write");
    let mut info = Raw::hello(broker.addr());
    wait_until("some lines to be stored", || {
        matches!(info.ok(Request::TopicInfo { topic: "feed" }),
            Reply::TopicInfo(t) if t.next_offset > 0)
    });
    let _ = stdin.write_all(&input[half..half + half / 2]);
    first.kill().expect("SIGKILL");
    first.wait().expect("reaped");
    drop(stdin);
    let stored = everything(broker.addr(), "feed").len();
    assert!(stored > 0 && stored < LINES as usize, "{stored}");

    let mut second = publisher_command(broker.addr(), &args)
        .spawn()
        .expect("spawn publisher");
    let mut stdin = second.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let output = second.wait_with_output().expect("publisher output");
    writer.join().expect("writer").expect("write stdin");
    assert!(output.status.success(), "{output:?}");
    assert_eq!(everything(broker.addr(), "feed"), expected(LINES));
}

/// A proxy to `to` that cuts every connection it carries once `cut` is set
/// (and clears it), so a client sees its connection drop mid-stream.
fn cutting_proxy(to: SocketAddr, cut: Arc<AtomicBool>, cuts: Arc<AtomicU64>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
    let addr = listener.local_addr().expect("proxy addr");
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            let Ok(server) = TcpStream::connect(to) else {
                return;
            };
            let (cut, cuts) = (cut.clone(), cuts.clone());
            std::thread::spawn(move || pump(client, server, &cut, &cuts));
        }
    });
    addr
}

fn pump(client: TcpStream, server: TcpStream, cut: &AtomicBool, cuts: &AtomicU64) {
    let (Ok(mut client_in), Ok(mut server_out)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let (mut server_in, mut client_out) = (server, client);
    let back = std::thread::spawn(move || {
        let _ = std::io::copy(&mut server_in, &mut client_out);
        let _ = client_out.shutdown(std::net::Shutdown::Both);
    });
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if cut.swap(false, Ordering::SeqCst) {
            cuts.fetch_add(1, Ordering::SeqCst);
            break;
        }
        match client_in.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if server_out.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = server_out.shutdown(std::net::Shutdown::Both);
    let _ = client_in.shutdown(std::net::Shutdown::Both);
    let _ = back.join();
}

#[test]
fn a_publisher_cut_off_reconnects_and_resends_without_duplicates() {
    const LINES: u32 = 40_000;
    let broker = start_broker();
    let mut admin = Raw::publisher(broker.addr());
    create_for_a_day(&mut admin, "cut");
    let cut = Arc::new(AtomicBool::new(false));
    let cuts = Arc::new(AtomicU64::new(0));
    let proxy = cutting_proxy(broker.addr(), cut.clone(), cuts.clone());
    let mut child = publisher_command(proxy, &["--publish", "cut", "--reconnect", "10"])
        .spawn()
        .expect("spawn publisher");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = lines(LINES);
    let half = input.len() / 2;
    stdin.write_all(&input[..half]).expect("write");
    let mut info = Raw::hello(broker.addr());
    wait_until("some lines to be stored", || {
        matches!(info.ok(Request::TopicInfo { topic: "cut" }),
            Reply::TopicInfo(t) if t.next_offset > 0)
    });
    cut.store(true, Ordering::SeqCst);
    let writer = std::thread::spawn(move || stdin.write_all(&input[half..]));
    let output = child.wait_with_output().expect("publisher output");
    writer.join().expect("writer").expect("write stdin");
    assert!(output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(cuts.load(Ordering::SeqCst), 1, "{stderr}");
    assert!(stderr.contains("reconnected"), "{stderr}");
    assert_eq!(everything(broker.addr(), "cut"), expected(LINES));
}
