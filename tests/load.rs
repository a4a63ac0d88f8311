//! A bounded load test against the real `broker` binary: 2,000 concurrent
//! connections — publishers creating topics and publishing, subscribers
//! pulling, clients churning topics — with garbage-sending, never-reading,
//! half-frame and silent clients mixed in.
//!
//! It asserts that every acknowledged message reached every subscriber of its
//! topic exactly once and in order, that no well-behaved client saw an error,
//! and that once everyone has gone the broker's stats return to zero and its
//! resident memory to near where it started. Loopback only; every loop is
//! bounded in count and by a deadline.

mod common;

use common::*;
use courier::protocol::{Reply, Request};
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

const PUBLISHER_THREADS: usize = 10;
const PUBLISHERS_PER_THREAD: usize = 20;
const TOPICS: usize = PUBLISHER_THREADS * PUBLISHERS_PER_THREAD;
const SUBSCRIBER_THREADS: usize = 24;
const SUBSCRIBERS_PER_THREAD: usize = 50;
const CHURN_THREADS: usize = 4;
const CHURNERS_PER_THREAD: usize = 100;
const HOSTILE: usize = 600;
const MESSAGES_PER_TOPIC: u64 = 40;
/// Each subscriber follows two topics, spread evenly.
const SUBSCRIBERS_PER_TOPIC: u64 =
    (2 * SUBSCRIBER_THREADS * SUBSCRIBERS_PER_THREAD / TOPICS) as u64;
const TEST_DEADLINE: Duration = Duration::from_secs(50);

fn topic_name(i: usize) -> String {
    format!("load-{i}")
}

/// The two topics subscriber `k` follows.
fn topics_of(k: usize) -> [usize; 2] {
    let a = k % TOPICS;
    let b = (k * 7 + 3) % TOPICS;
    if a == b {
        [a, (a + 1) % TOPICS]
    } else {
        [a, b]
    }
}

fn payload(topic: usize, seq: u64) -> Vec<u8> {
    let mut p = (topic as u32).to_be_bytes().to_vec();
    p.extend_from_slice(&seq.to_be_bytes());
    p.resize(64, 0xAB);
    p
}

/// The test's phases; every worker thread passes each barrier once.
struct Phases {
    /// Publishers have created their topics (publishers + main).
    topics: Barrier,
    /// Every worker is connected and set up (all workers + main).
    setup: Barrier,
    /// Every message is delivered and acknowledged (all workers + main).
    done: Barrier,
}

fn publisher_thread(addr: SocketAddr, first_topic: usize, phases: &Phases) {
    let mut clients: Vec<Raw> = (0..PUBLISHERS_PER_THREAD)
        .map(|i| {
            let mut raw = Raw::publisher(addr);
            raw.ok(Request::CreateTopic {
                topic: &topic_name(first_topic + i),
            });
            raw
        })
        .collect();
    phases.topics.wait();
    phases.setup.wait();
    // Half the messages one by one, half in batches of 10.
    let half = MESSAGES_PER_TOPIC / 2;
    for (i, raw) in clients.iter_mut().enumerate() {
        let topic = first_topic + i;
        for seq in 0..half {
            assert_eq!(raw.publish(&topic_name(topic), &payload(topic, seq)), seq);
        }
    }
    for first in (half..MESSAGES_PER_TOPIC).step_by(10) {
        for (i, raw) in clients.iter_mut().enumerate() {
            let topic = first_topic + i;
            let batch: Vec<Vec<u8>> = (first..first + 10).map(|s| payload(topic, s)).collect();
            let refs: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
            let reply = raw.publish_batch(&topic_name(topic), &refs);
            assert!(
                matches!(reply, Reply::PublishedBatch { first_offset, count: 10, .. } if first_offset == first),
                "{reply:?}"
            );
        }
    }
    phases.done.wait();
    for (i, raw) in clients.iter_mut().enumerate() {
        raw.ok(Request::DeleteTopic {
            topic: &topic_name(first_topic + i),
        });
    }
}

fn subscriber_thread(addr: SocketAddr, first: usize, phases: &Phases) {
    let mut clients: Vec<(Raw, [usize; 2], [u64; 2])> = (first..first + SUBSCRIBERS_PER_THREAD)
        .map(|k| {
            let topics = topics_of(k);
            let names = topics.map(topic_name);
            let (raw, _) = Raw::subscriber(addr, &[&names[0], &names[1]]);
            (raw, topics, [0, 0])
        })
        .collect();
    phases.setup.wait();
    let start = Instant::now();
    while !clients
        .iter()
        .all(|(_, _, next)| next.iter().all(|&n| n == MESSAGES_PER_TOPIC))
    {
        assert!(
            start.elapsed() < TEST_DEADLINE,
            "subscribers did not receive everything in time"
        );
        let mut progress = false;
        for (raw, topics, next) in clients.iter_mut() {
            for (topic, offset, body) in messages(raw.call(pull(None, 1000, 0, true))) {
                let index = topics
                    .iter()
                    .position(|&t| topic_name(t) == topic)
                    .expect("a subscribed topic");
                assert_eq!(offset, next[index], "exactly once, in order");
                assert_eq!(body, payload(topics[index], offset));
                next[index] += 1;
                progress = true;
            }
        }
        if !progress {
            thread::sleep(Duration::from_millis(2));
        }
    }
    // The last batch is acknowledged explicitly.
    for (raw, topics, _) in clients.iter_mut() {
        for &t in topics.iter() {
            raw.ok(Request::Ack {
                topic: &topic_name(t),
                offset: MESSAGES_PER_TOPIC,
            });
        }
    }
    phases.done.wait();
}

fn churn_thread(addr: SocketAddr, id: usize, phases: &Phases) {
    let mut clients: Vec<Raw> = (0..CHURNERS_PER_THREAD)
        .map(|_| Raw::publisher(addr))
        .collect();
    phases.setup.wait();
    for round in 0..3 {
        for (i, raw) in clients.iter_mut().enumerate() {
            let name = format!("churn-{id}-{i}-{round}");
            raw.ok(Request::CreateTopic { topic: &name });
            raw.publish(&name, b"nobody listens");
            raw.ok(Request::DeleteTopic { topic: &name });
        }
    }
    phases.done.wait();
}

/// Misbehaving connections; they stay open until the end of the test.
fn hostile_clients(addr: SocketAddr) -> Vec<TcpStream> {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut junk = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    };
    (0..HOSTILE)
        .map(|i| {
            let mut raw = if i % 4 == 0 {
                Raw::connect(addr)
            } else {
                Raw::hello(addr)
            };
            match i % 4 {
                // Garbage, before or after a handshake.
                0 | 1 => {
                    let _ = raw.stream.write_all(&junk(1024));
                }
                // Never reads: a flood of requests whose replies pile up.
                2 => {
                    let mut frames = Vec::new();
                    for id in 0..2000 {
                        courier::codec::encode_request(&mut frames, id, &Request::Stats);
                    }
                    let _ = raw.stream.write_all(&frames);
                }
                // Half a frame, held open.
                _ => {
                    let _ = raw.stream.write_all(&[0, 0, 0, 20, 0x92]);
                }
            }
            raw.stream
        })
        .collect()
}

#[test]
fn two_thousand_connections_with_hostile_clients_lose_nothing() {
    let broker = BrokerProcess::start(&["--session-timeout", "1", "--log-level", "error"]);
    let addr = broker.addr;
    let mut monitor = Raw::hello(addr);
    let rss_start = broker.rss_kib();

    let workers = PUBLISHER_THREADS + SUBSCRIBER_THREADS + CHURN_THREADS;
    let phases = Arc::new(Phases {
        topics: Barrier::new(PUBLISHER_THREADS + 1),
        setup: Barrier::new(workers + 1),
        done: Barrier::new(workers + 1),
    });
    let mut threads = Vec::new();
    for t in 0..PUBLISHER_THREADS {
        let phases = phases.clone();
        threads.push(thread::spawn(move || {
            publisher_thread(addr, t * PUBLISHERS_PER_THREAD, &phases)
        }));
    }
    phases.topics.wait();
    for t in 0..SUBSCRIBER_THREADS {
        let phases = phases.clone();
        threads.push(thread::spawn(move || {
            subscriber_thread(addr, t * SUBSCRIBERS_PER_THREAD, &phases)
        }));
    }
    for t in 0..CHURN_THREADS {
        let phases = phases.clone();
        threads.push(thread::spawn(move || churn_thread(addr, t, &phases)));
    }
    let hostile = hostile_clients(addr);
    phases.setup.wait();

    let peak = monitor.stats();
    let well_behaved = (TOPICS
        + SUBSCRIBER_THREADS * SUBSCRIBERS_PER_THREAD
        + CHURN_THREADS * CHURNERS_PER_THREAD) as u64;
    assert!(
        peak.connections >= 2000 && peak.connections > well_behaved,
        "all {well_behaved} clients and some hostile ones connected at once: {}",
        peak.connections
    );
    phases.done.wait();
    for thread in threads {
        thread.join().expect("no well-behaved client saw an error");
    }
    let rss_peak = broker.rss_kib();
    drop(hostile);

    // Everyone is gone: sessions expire after 1 s, nothing is retained.
    wait_until("stats back to zero", || {
        let s = monitor.stats();
        s.connections == 1
            && s.subscribers == 0
            && s.topics == 0
            && s.backlog_messages == 0
            && s.backlog_bytes == 0
            && s.waiting_pulls == 0
    });
    let stats = monitor.stats();
    let expected =
        TOPICS as u64 * MESSAGES_PER_TOPIC + (CHURN_THREADS * CHURNERS_PER_THREAD * 3) as u64;
    assert_eq!(stats.messages_in, expected);
    assert_eq!(
        stats.messages_out,
        TOPICS as u64 * MESSAGES_PER_TOPIC * SUBSCRIBERS_PER_TOPIC
    );
    let rss_end = broker.rss_kib();
    eprintln!(
        "broker RSS: start {rss_start} KiB, peak {rss_peak} KiB, end {rss_end} KiB; {} connections at peak",
        peak.connections
    );
    assert!(
        rss_end <= rss_start + 24 * 1024,
        "resident memory did not come back: start {rss_start} KiB, end {rss_end} KiB"
    );
}
