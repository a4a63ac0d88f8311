//! Several pulls in flight (PROTOCOL.md 4.10, "Several pulls in flight"):
//! parked pulls answered oldest first, a burst split over them, the oldest
//! answered empty past `max_waiting_pulls`, and exact acknowledgement with
//! pipelined ACKs across a lost connection — against a real broker.

mod common;

use common::*;
use courier::client::{Client, PullOptions};
use courier::protocol::{Op, Request};
use std::time::Duration;

fn waiting_pulls(publisher: &mut Raw, n: u64) {
    wait_until("the pulls to be parked", || {
        publisher.stats().waiting_pulls == n
    });
}

#[test]
fn two_pipelined_pulls_are_both_answered_in_order() {
    let broker = start_broker();
    let mut publisher = Raw::publisher_with_topic(broker.addr(), "t");
    let (mut subscriber, _) = Raw::subscriber(broker.addr(), &["t"]);
    let first = subscriber.send(pull(None, 100, 30_000, false));
    let second = subscriber.send(pull(None, 100, 30_000, false));
    waiting_pulls(&mut publisher, 2);
    publisher.publish("t", b"a");
    let (id, reply) = subscriber.recv(Op::Pull);
    assert_eq!(id, first);
    assert_eq!(messages(reply), vec![("t".into(), 0, b"a".to_vec())]);
    waiting_pulls(&mut publisher, 1);
    publisher.publish("t", b"b");
    let (id, reply) = subscriber.recv(Op::Pull);
    assert_eq!(id, second);
    assert_eq!(messages(reply), vec![("t".into(), 1, b"b".to_vec())]);
    // Nothing delivered twice, nothing skipped: the next message is 2.
    publisher.publish("t", b"c");
    assert_eq!(
        messages(subscriber.call(pull(None, 100, 0, false))),
        vec![("t".into(), 2, b"c".to_vec())]
    );
}

#[test]
fn past_max_waiting_pulls_the_oldest_is_answered_empty() {
    let broker = start_broker();
    let mut publisher = Raw::publisher_with_topic(broker.addr(), "t");
    let mut subscriber = Raw::hello(broker.addr());
    let max = broker_max_waiting_pulls(broker.addr());
    assert_eq!(max, 4);
    subscriber.ok(Request::RegisterSubscriber {
        resume: None,
        timeout_ms: None,
    });
    subscriber.ok(Request::Subscribe { topic: "t" });
    let ids: Vec<u64> = (0..=max)
        .map(|_| subscriber.send(pull(None, 100, 30_000, false)))
        .collect();
    let (id, reply) = subscriber.recv(Op::Pull);
    assert_eq!(id, ids[0]);
    assert!(messages(reply).is_empty());
    waiting_pulls(&mut publisher, max);
    publisher.publish("t", b"a");
    let (id, reply) = subscriber.recv(Op::Pull);
    assert_eq!(id, ids[1]);
    assert_eq!(messages(reply).len(), 1);
}

fn broker_max_waiting_pulls(addr: std::net::SocketAddr) -> u64 {
    Client::connect(addr)
        .expect("connect")
        .server_info()
        .max_waiting_pulls
}

#[test]
fn a_burst_larger_than_one_pull_is_split_over_the_parked_pulls_in_order() {
    let broker = start_broker();
    let mut publisher = Raw::publisher_with_topic(broker.addr(), "t");
    let (mut subscriber, _) = Raw::subscriber(broker.addr(), &["t"]);
    let ids: Vec<u64> = (0..3)
        .map(|_| subscriber.send(pull(None, 10, 30_000, false)))
        .collect();
    waiting_pulls(&mut publisher, 3);
    let payloads: Vec<Vec<u8>> = (0..25u8).map(|i| vec![i]).collect();
    let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
    publisher.publish_batch("t", &refs);
    let mut offsets = Vec::new();
    for &expected in &ids {
        let (id, reply) = subscriber.recv(Op::Pull);
        assert_eq!(id, expected);
        offsets.push(messages(reply).iter().map(|m| m.1).collect::<Vec<_>>());
    }
    assert_eq!(
        offsets,
        vec![
            (0..10).collect(),
            (10..20).collect(),
            (20..25).collect::<Vec<_>>()
        ]
    );
}

/// A client subscribed to topic "t" on `broker`, which holds messages
/// `[0]`, `[1]`, … `[n - 1]` for it; and its session.
fn subscribed_with_messages(broker: &courier::server::RunningServer, n: u8) -> (Client, u64) {
    let mut publisher = Raw::publisher_with_topic(broker.addr(), "t");
    let mut subscriber = Client::connect(broker.addr()).expect("connect");
    let session = subscriber.register_subscriber().expect("register");
    subscriber.subscribe("t").expect("subscribe");
    for i in 0..n {
        publisher.publish("t", &[i]);
    }
    (subscriber, session)
}

#[test]
fn pipelined_acks_with_pulls_in_flight_redeliver_exactly_the_unacknowledged() {
    let broker = start_broker();
    let (mut subscriber, session) = subscribed_with_messages(&broker, 40);
    let options = PullOptions {
        max_messages: 5,
        wait: Duration::from_secs(30),
        ..PullOptions::default()
    };
    let processed_up_to;
    {
        let mut pulls = subscriber.pulls(options, 4);
        assert_eq!(pulls.depth(), 4);
        let mut next = 0;
        // Three batches processed, their ACKs sent beside the pulls; the
        // pulls in flight then hold messages that were not processed.
        for _ in 0..3 {
            let batch = pulls.next_batch().expect("batch");
            for message in batch.iter() {
                assert_eq!(message.offset, next);
                next += 1;
            }
            pulls.processed_batch(&batch);
        }
        // One more batch is taken but only its first two messages are
        // processed.
        let batch = pulls.next_batch().expect("batch");
        assert_eq!(batch.iter().next().map(|m| m.offset), Some(next));
        pulls.processed("t", next + 2);
        processed_up_to = next + 2;
        // Sent with the next pull, in the same write.
        let _ = pulls.next_batch().expect("batch");
        pulls.acknowledge().expect("acknowledged");
    }
    assert!(Raw::hello(broker.addr()).stats().messages_out > processed_up_to);
    // The connection is lost with pulls in flight.
    drop(subscriber);
    let mut resumed = Client::connect(broker.addr()).expect("connect");
    resumed.resume_subscriber(session).expect("resume");
    let mut got = Vec::new();
    while got.len() < (40 - processed_up_to) as usize {
        let batch = resumed
            .pull(&PullOptions {
                wait: Duration::from_secs(5),
                ..PullOptions::default()
            })
            .expect("pull");
        assert!(!batch.is_empty(), "nothing redelivered after {got:?}");
        got.extend(batch.iter().map(|m| m.offset));
    }
    assert_eq!(got, (processed_up_to..40).collect::<Vec<_>>());
}

#[test]
fn one_pull_in_flight_acknowledges_on_the_pull_only_what_was_processed() {
    let broker = start_broker();
    let (mut subscriber, session) = subscribed_with_messages(&broker, 10);
    let options = PullOptions {
        max_messages: 3,
        wait: Duration::from_secs(30),
        ..PullOptions::default()
    };
    {
        let mut pulls = subscriber.pulls(options, 1);
        let first = pulls.next_batch().expect("batch");
        pulls.processed_batch(&first);
        // This pull acknowledges the first batch (`ack = true`).
        let second = pulls.next_batch().expect("batch");
        assert_eq!(second.iter().next().map(|m| m.offset), Some(3));
        // Only offset 3 of the second batch is processed: the next pull
        // must not acknowledge 4 and 5, so an ACK at 4 goes instead.
        pulls.processed("t", 4);
        let third = pulls.next_batch().expect("batch");
        assert_eq!(third.iter().next().map(|m| m.offset), Some(6));
        pulls.acknowledge().expect("acknowledged");
    }
    drop(subscriber);
    let mut resumed = Client::connect(broker.addr()).expect("connect");
    resumed.resume_subscriber(session).expect("resume");
    let batch = resumed
        .pull(&PullOptions {
            wait: Duration::from_secs(5),
            ..PullOptions::default()
        })
        .expect("pull");
    assert_eq!(batch.iter().next().map(|m| m.offset), Some(4));
    assert_eq!(batch.len(), 6);
}
