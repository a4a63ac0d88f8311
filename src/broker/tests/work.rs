//! Work per request, counted rather than timed: each request must cost what
//! it touches, not the size of the tables (issue 9). Each test builds one
//! situation at two sizes and compares the broker's `work` count — table
//! entries visited — for the requests under test: equal at both sizes where
//! the cost is bounded by the request, in proportion where it is what the
//! request removes.

use super::*;

const SMALL: usize = 1_000;
const LARGE: usize = 100_000;

/// A broker that takes `LARGE` of everything, with a publisher on
/// connection 0. Its indexes are checked at the end of each test, not after
/// every request, which would cost the tables each time.
fn harness() -> Harness {
    let mut h = Harness::new(Limits {
        max_topics: LARGE + 10,
        max_subscribers_per_topic: LARGE + 10,
        max_sessions: LARGE + 10,
        max_subscriptions_per_session: LARGE + 10,
        ..Limits::default()
    });
    h.check_indexes = false;
    h.connect(0);
    h.call(0, Request::RegisterPublisher).unwrap();
    h
}

fn work_of(h: &mut Harness, request: impl FnOnce(&mut Harness)) -> u64 {
    let before = h.broker.work;
    request(h);
    h.broker.work - before
}

fn publish(h: &mut Harness, topic: &str) {
    h.call(
        0,
        Request::Publish {
            topic,
            payload: b"m",
        },
    )
    .unwrap();
}

fn register(h: &mut Harness, conn: ConnId) {
    h.call(
        conn,
        Request::RegisterSubscriber {
            resume: None,
            timeout_ms: None,
        },
    )
    .unwrap();
}

/// A subscriber on connection 1 subscribed to `n` topics `t0..`.
fn subscriber_of_many_topics(n: usize) -> Harness {
    let mut h = harness();
    h.connect(1);
    register(&mut h, 1);
    for i in 0..n {
        let topic = format!("t{i}");
        h.call(0, Request::CreateTopic { topic: &topic }).unwrap();
        h.call(1, Request::Subscribe { topic: &topic }).unwrap();
    }
    h
}

/// Topic `t` with `n` detached sessions that never pull, and a probe
/// subscriber of its own on connection 2.
fn topic_with_detached_subscribers(n: usize) -> Harness {
    let mut h = harness();
    h.call(0, Request::CreateTopic { topic: "t" }).unwrap();
    h.connect(1);
    for _ in 0..n {
        // Registering again on the same connection detaches the session it
        // held.
        register(&mut h, 1);
        h.call(1, Request::Subscribe { topic: "t" }).unwrap();
    }
    h.broker.disconnect(1, h.now);
    h.connect(2);
    register(&mut h, 2);
    h.call(2, Request::Subscribe { topic: "t" }).unwrap();
    h
}

#[test]
fn an_all_topics_pull_costs_the_topics_with_data_not_the_subscriptions() {
    // Issue 9: a session subscribed to ~100k topics pipelining empty pulls
    // froze the loop for seconds, each pull walking every subscription.
    let costs = |n: usize| {
        let mut h = subscriber_of_many_topics(n);
        let empty = work_of(&mut h, |h| {
            assert!(payloads(h.call(1, pull(None, 0, false))).is_empty());
        });
        let busy = ["t0", &format!("t{}", n / 2), &format!("t{}", n - 1)];
        for topic in busy {
            publish(&mut h, topic);
        }
        let three = work_of(&mut h, |h| {
            assert_eq!(payloads(h.call(1, pull(None, 0, true))).len(), 3);
        });
        // Acknowledging looks at the three topics in flight, nothing else.
        let acked_empty = work_of(&mut h, |h| {
            assert!(payloads(h.call(1, pull(None, 0, true))).is_empty());
        });
        h.send(1, pull(None, 10_000, false));
        let wakes_parked = work_of(&mut h, |h| {
            publish(h, busy[1]);
            assert_eq!(payloads(h.replies(1, Op::Pull).remove(0).1).len(), 1);
        });
        h.broker.assert_indexes_consistent();
        (empty, three, acked_empty, wakes_parked)
    };
    let (small, large) = (costs(SMALL), costs(LARGE));
    assert_eq!(small, large);
    let (empty, three, acked_empty, wakes_parked) = large;
    assert_eq!(empty, 0);
    assert!(three <= 6, "{three}");
    assert!(acked_empty <= 3, "{acked_empty}");
    assert!(wakes_parked <= 4, "{wakes_parked}");
}

#[test]
fn a_publish_costs_the_parked_pulls_on_its_topic_not_its_subscribers() {
    // Issue 9: 10k detached sessions on a topic made every publish to it walk
    // them all, and other clients' round trips reach seconds.
    let costs = |n: usize| {
        let mut h = topic_with_detached_subscribers(n);
        // The first publish tells each caught-up subscriber once: the cost
        // of their SUBSCRIBEs, paid once. After it they are behind, and no
        // publish looks at them again until they pull.
        let first = work_of(&mut h, |h| publish(h, "t"));
        assert!(first <= n as u64 + 1, "{first}");
        assert_eq!(payloads(h.call(2, pull(Some("t"), 0, true))).len(), 1);
        let rounds = work_of(&mut h, |h| {
            for _ in 0..10 {
                publish(h, "t");
                assert_eq!(payloads(h.call(2, pull(Some("t"), 0, true))).len(), 1);
            }
        });
        h.send(2, pull(Some("t"), 10_000, true));
        let wakes_parked = work_of(&mut h, |h| {
            publish(h, "t");
            assert_eq!(h.replies(2, Op::Pull).len(), 1);
        });
        h.broker.assert_indexes_consistent();
        (rounds, wakes_parked)
    };
    let (small, large) = (costs(SMALL), costs(LARGE));
    assert_eq!(small, large);
    let (rounds, wakes_parked) = large;
    assert!(rounds <= 10 * 4, "{rounds}");
    assert!(wakes_parked <= 4, "{wakes_parked}");
}

#[test]
fn joining_and_leaving_a_crowded_topic_costs_the_same_as_a_quiet_one() {
    let costs = |n: usize| {
        let mut h = topic_with_detached_subscribers(n);
        publish(&mut h, "t");
        let cost = work_of(&mut h, |h| {
            h.connect(3);
            register(h, 3);
            h.call(3, Request::Subscribe { topic: "t" }).unwrap();
            h.call(3, Request::Unsubscribe { topic: "t" }).unwrap();
            h.call(2, Request::Unsubscribe { topic: "t" }).unwrap();
            h.call(3, Request::Subscribe { topic: "t" }).unwrap();
            h.broker.disconnect(3, h.now);
        });
        h.broker.assert_indexes_consistent();
        cost
    };
    let (small, large) = (costs(SMALL), costs(LARGE));
    assert_eq!(small, large);
    assert!(large <= 4, "{large}");
}

#[test]
fn an_expiry_wave_costs_one_step_per_subscription_ended() {
    // Issue 9: sessions leaving a topic together each walked its subscriber
    // list (`Vec::retain`), O(n²) for the wave.
    let costs = |n: usize| {
        let mut h = topic_with_detached_subscribers(n);
        publish(&mut h, "t");
        let expiry = h.now + h.broker.limits().session_timeout + Duration::from_secs(1);
        let wave = work_of(&mut h, |h| h.broker.fire_timers(expiry, &mut h.out));
        assert_eq!(h.broker.stats(h.now).subscribers, 1);
        assert_eq!(h.broker.stats(h.now).subscriptions, 1);
        h.broker.assert_indexes_consistent();
        wave
    };
    assert_eq!(costs(SMALL), SMALL as u64);
    assert_eq!(costs(LARGE), LARGE as u64);
}

#[test]
fn deleting_a_topic_costs_its_subscribers() {
    let mut h = topic_with_detached_subscribers(SMALL);
    h.send(2, pull(Some("t"), 10_000, true));
    let cost = work_of(&mut h, |h| {
        h.call(0, Request::DeleteTopic { topic: "t" }).unwrap();
    });
    assert_eq!(cost, SMALL as u64 + 1);
    let parked = h.replies(2, Op::Pull);
    assert_eq!(parked.len(), 1);
    assert_eq!(
        parked[0].1.as_ref().unwrap_err().code,
        ErrorCode::TopicDeleted
    );
    assert_eq!(h.broker.stats(h.now).subscriptions, 0);
    h.broker.assert_indexes_consistent();
}

#[test]
fn a_resume_redelivers_only_what_was_in_flight() {
    // The resume's reply lists every topic (that is its size); rewinding
    // touches only the topics with messages delivered and not acknowledged.
    let mut h = subscriber_of_many_topics(SMALL);
    let Ok(Reply::SubscriberRegistered { subscriber_id, .. }) = h.call(
        1,
        Request::RegisterSubscriber {
            resume: None,
            timeout_ms: None,
        },
    ) else {
        panic!("register failed")
    };
    for topic in ["t1", "t2"] {
        h.call(1, Request::Subscribe { topic }).unwrap();
        publish(&mut h, topic);
        publish(&mut h, topic);
    }
    assert_eq!(payloads(h.call(1, pull(Some("t1"), 0, false))).len(), 2);
    h.connect(2);
    let cost = work_of(&mut h, |h| {
        h.call(
            2,
            Request::RegisterSubscriber {
                resume: Some(subscriber_id),
                timeout_ms: None,
            },
        )
        .unwrap();
    });
    assert_eq!(cost, 2 + 1);
    let again = payloads(h.call(2, pull(None, 0, false)));
    assert_eq!(again.len(), 4);
    h.broker.assert_indexes_consistent();
}
