//! Held publishes (flow control) and the pending-reply queue: a publish to
//! a full topic waits for room instead of being refused, replies to one
//! topic's publishes on one connection stay in request order, and a hold
//! ends in a refusal only at its deadline, for it and everything behind it.

use super::*;
use crate::protocol::Op;

/// A topic `t` that holds two messages, a publisher on connection 0 and a
/// subscriber on connection 1.
fn full_topic(publish_hold: Duration) -> Harness {
    let mut h = Harness::new(Limits {
        max_backlog_messages: 2,
        publish_hold,
        ..Limits::default()
    });
    setup_pub_sub(&mut h);
    for _ in 0..2 {
        h.call(0, one("t", b"old")).unwrap();
    }
    h
}

fn one<'a>(topic: &'a str, payload: &'a [u8]) -> Request<'a> {
    Request::Publish { topic, payload }
}

/// Pulls everything on `t` and acknowledges it, from connection 1.
fn drain(h: &mut Harness) -> Vec<Vec<u8>> {
    let got = payloads(h.call(1, pull(Some("t"), 0, true)));
    // The ack rides on the next pull; make it now.
    let _ = h.call(1, pull(Some("t"), 0, true));
    got.into_iter().map(|(_, p)| p).collect()
}

fn offsets(replies: Vec<(u64, Result<Reply, ErrorReply>)>) -> Vec<(u64, u64)> {
    replies
        .into_iter()
        .map(|(id, r)| match r {
            Ok(Reply::Published { offset, .. }) => (id, offset),
            other => panic!("not published: {other:?}"),
        })
        .collect()
}

#[test]
fn a_publish_to_a_full_topic_is_held_then_stored_in_order_when_room_appears() {
    let mut h = full_topic(Duration::from_secs(5));
    let a = h.send(0, one("t", b"a"));
    let b = h.send(0, one("t", b"b"));
    assert!(h.replies(0, Op::Publish).is_empty(), "held, not refused");
    let stats = h.broker.stats(h.now);
    assert_eq!((stats.publishes_held, stats.held_now), (2, 2));
    assert!(h.broker.budget().used(Class::HeldRequests) > 0);
    assert_eq!(drain(&mut h), vec![b"old".to_vec(), b"old".to_vec()]);
    assert_eq!(offsets(h.replies(0, Op::Publish)), vec![(a, 2), (b, 3)]);
    assert_eq!(h.broker.stats(h.now).held_now, 0);
    assert_eq!(h.broker.budget().used(Class::HeldRequests), 0);
    assert_eq!(drain(&mut h), vec![b"a".to_vec(), b"b".to_vec()]);
}

#[test]
fn a_later_publish_waits_behind_a_held_one_even_if_it_would_fit() {
    let mut h = Harness::new(Limits {
        max_backlog_bytes: 10,
        ..Limits::default()
    });
    setup_pub_sub(&mut h);
    h.call(0, one("t", b"12345678")).unwrap();
    let big = h.send(0, one("t", b"abcd"));
    // Two bytes would fit; it must not overtake the held four.
    let small = h.send(0, one("t", b"x"));
    assert!(h.replies(0, Op::Publish).is_empty());
    assert_eq!(h.broker.stats(h.now).held_now, 2);
    let _ = drain(&mut h);
    assert_eq!(
        offsets(h.replies(0, Op::Publish)),
        vec![(big, 1), (small, 2)]
    );
}

#[test]
fn publishes_to_other_topics_and_other_requests_are_not_held_back() {
    let mut h = full_topic(Duration::from_secs(5));
    h.call(0, Request::CreateTopic { topic: "u" }).unwrap();
    h.send(0, one("t", b"held"));
    assert!(h.call(0, one("u", b"free")).is_ok());
    assert!(matches!(h.call(0, Request::Stats), Ok(Reply::Stats(_))));
    assert_eq!(h.broker.stats(h.now).held_now, 1);
}

#[test]
fn a_hold_past_its_deadline_refuses_it_and_those_behind_in_order() {
    let mut h = full_topic(Duration::from_millis(100));
    let ids: Vec<u64> = (0..3).map(|_| h.send(0, one("t", b"m"))).collect();
    h.now += Duration::from_millis(99);
    h.broker.fire_timers(h.now, &mut h.out);
    assert!(h.replies(0, Op::Publish).is_empty());
    h.now += Duration::from_millis(1);
    h.broker.fire_timers(h.now, &mut h.out);
    let replies = h.replies(0, Op::Publish);
    let got: Vec<(u64, ErrorCode)> = replies
        .into_iter()
        .map(|(id, r)| (id, r.unwrap_err().code))
        .collect();
    let want: Vec<(u64, ErrorCode)> = ids.iter().map(|&id| (id, ErrorCode::TopicFull)).collect();
    assert_eq!(got, want);
    let stats = h.broker.stats(h.now);
    assert_eq!((stats.held_now, stats.errors["TOPIC_FULL"]), (0, 3));
    assert_eq!(h.broker.budget().used(Class::HeldRequests), 0);
    // Nothing was stored out of order: the room that appears later is unused.
    let _ = drain(&mut h);
    assert!(h.replies(0, Op::Publish).is_empty());
}

#[test]
fn a_zero_hold_refuses_at_once() {
    let mut h = full_topic(Duration::ZERO);
    assert_eq!(h.code(0, one("t", b"m")), ErrorCode::TopicFull);
    assert_eq!(h.broker.stats(h.now).publishes_held, 0);
}

#[test]
fn deleting_the_topic_answers_its_held_publishes_topic_deleted() {
    let mut h = full_topic(Duration::from_secs(5));
    h.connect(2);
    h.call(2, Request::RegisterPublisher).unwrap();
    let held = h.send(0, one("t", b"m"));
    h.call(2, Request::DeleteTopic { topic: "t" }).unwrap();
    let replies = h.replies(0, Op::Publish);
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].0, held);
    assert_eq!(
        replies[0].1.as_ref().unwrap_err().code,
        ErrorCode::TopicDeleted
    );
    assert_eq!(h.broker.stats(h.now).held_now, 0);
    assert_eq!(h.broker.budget().used(Class::HeldRequests), 0);
}

#[test]
fn a_disconnect_drops_its_held_publishes() {
    let mut h = full_topic(Duration::from_secs(5));
    h.send(0, one("t", b"m"));
    h.send(0, one("t", b"n"));
    h.broker.disconnect(0, h.now);
    let stats = h.broker.stats(h.now);
    assert_eq!((stats.held_now, stats.held_dropped), (0, 2));
    assert_eq!(h.broker.budget().used(Class::HeldRequests), 0);
    // Room appearing later stores nothing of theirs.
    let _ = drain(&mut h);
    assert_eq!(h.broker.stats(h.now).backlog_messages, 0);
}

#[test]
fn connections_take_turns_when_room_appears() {
    let mut h = Harness::new(Limits {
        max_backlog_messages: 1,
        ..Limits::default()
    });
    setup_pub_sub(&mut h);
    h.connect(2);
    h.call(2, Request::RegisterPublisher).unwrap();
    h.call(0, one("t", b"first")).unwrap();
    for _ in 0..3 {
        h.send(0, one("t", b"zero"));
    }
    for _ in 0..3 {
        h.send(2, one("t", b"two"));
    }
    let mut order = Vec::new();
    // Each pull acknowledges the last one's message, which admits the next
    // held publish at the end of the batch, for the pull after.
    for _ in 0..20 {
        let got = payloads(h.call(1, pull(Some("t"), 0, true)));
        order.extend(got.into_iter().map(|(_, p)| p));
    }
    let names: Vec<&[u8]> = order.iter().map(Vec::as_slice).collect();
    assert_eq!(
        names,
        vec![
            &b"first"[..],
            b"zero",
            b"two",
            b"zero",
            b"two",
            b"zero",
            b"two"
        ]
    );
}

#[test]
fn a_connection_past_its_held_bound_is_not_read_until_admissions_bring_it_back() {
    let mut h = Harness::new(Limits {
        max_frame_bytes: 1024,
        max_backlog_messages: 1,
        ..Limits::default()
    });
    setup_pub_sub(&mut h);
    h.call(0, one("t", b"first")).unwrap();
    let payload = vec![7u8; 400];
    let mut held = 0;
    while h.broker.wants_input(0) {
        h.send(0, one("t", &payload));
        held += 1;
        assert!(held < 100, "the bound never came");
    }
    assert!(h.broker.budget().used(Class::HeldRequests) > h.broker.limits().max_held_bytes());
    assert_eq!(h.broker.stats(h.now).held_input_pauses, 1);
    assert!(h.broker.take_resumable().is_empty());
    let _ = drain(&mut h);
    assert_eq!(h.broker.take_resumable(), vec![0]);
    assert!(h.broker.wants_input(0));
}

#[test]
fn a_stored_reply_waits_for_the_disk_and_keeps_its_place() {
    let mut h = Harness::new(Limits::default());
    setup_pub_sub(&mut h);
    let key = h.broker.topic_key("t").unwrap();
    let stored = Reply::Published {
        offset: 0,
        subscribers: 1,
    };
    let r = h
        .broker
        .answer_publish(0, key, 7, Ok(stored.clone()), Some(5), &mut h.out);
    assert!(matches!(r, Ok(None)));
    // Memory-only and ready, but behind the one waiting for the disk.
    let r = h
        .broker
        .answer_publish(0, key, 8, Ok(stored.clone()), None, &mut h.out);
    assert!(matches!(r, Ok(None)));
    h.broker.durable_through(4, &mut h.out);
    assert!(h.replies(0, Op::Publish).is_empty());
    h.broker.durable_through(5, &mut h.out);
    let ids: Vec<u64> = h.replies(0, Op::Publish).iter().map(|r| r.0).collect();
    assert_eq!(ids, vec![7, 8]);
}

#[test]
fn an_immediate_refusal_behind_a_held_publish_keeps_its_place() {
    let mut h = full_topic(Duration::from_secs(5));
    let held = h.send(0, one("t", b"held"));
    let too_large = vec![0u8; h.broker.limits().max_payload_bytes() + 1];
    let refused = h.send(0, one("t", &too_large));
    assert!(h.replies(0, Op::Publish).is_empty(), "it waits behind");
    let _ = drain(&mut h);
    let replies = h.replies(0, Op::Publish);
    let got: Vec<(u64, Option<ErrorCode>)> = replies
        .iter()
        .map(|(id, r)| (*id, r.as_ref().err().map(|e| e.code)))
        .collect();
    assert_eq!(
        got,
        vec![(held, None), (refused, Some(ErrorCode::PayloadTooLarge))]
    );
}
