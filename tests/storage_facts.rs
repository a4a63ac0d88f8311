//! Changes other than publishes — a topic created or deleted, a
//! subscription or a session ended, a session expired — on the broker over
//! a simulated disk with injected write and sync failures: each reply waits
//! for its record to be durable, a lost record is answered
//! STORAGE_UNAVAILABLE, and a restart finds what the broker promised:
//!
//! - a lost creation (topic, session, subscription) is undone at once, so
//!   nothing is built on what the log does not have;
//! - a lost deletion or end stays done in memory and its record is written
//!   again ahead of the next record the broker logs; only a restart before
//!   that brings the object back.
//!
//! The last test drives topic creations and deletions through seeded
//! schedules of faults and power cuts and checks each restart against
//! what the answers promised.

mod storage_support;

use courier::ErrorCode;
use courier::protocol::{Op, Reply, Request};
use courier::storage::SimFs;
use std::time::Duration;
use storage_support::Rng;
use storage_support::node::{Answer, Node, PUBLISHER, SUBSCRIBER, open};

/// How a test breaks the disk for the next record.
#[derive(Debug, Clone, Copy)]
enum Fault {
    Write,
    Sync,
}

impl Fault {
    fn arm(self, fs: &SimFs) {
        match self {
            Fault::Write => fs.fail_writes(1),
            Fault::Sync => fs.fail_syncs(1),
        }
    }
}

const FAULTS: [Fault; 2] = [Fault::Write, Fault::Sync];

/// The one reply to `op` among `replies`.
fn reply_to(replies: &[Answer], op: Op) -> Result<Reply, ErrorCode> {
    let mut found = replies.iter().filter(|(_, o, _, _)| *o == op);
    let (_, _, _, reply) = found.next().unwrap_or_else(|| panic!("no {op:?} reply"));
    assert!(found.next().is_none(), "two {op:?} replies");
    reply.clone()
}

/// Sends one request and runs one round; its reply.
fn call(node: &mut Node, conn: usize, request: Request<'_>) -> Result<Reply, ErrorCode> {
    let op = request.op();
    node.send(conn, &request, None);
    let replies = node.round();
    reply_to(&replies, op)
}

fn done(node: &mut Node, conn: usize, request: Request<'_>) {
    assert_eq!(call(node, conn, request), Ok(Reply::Done));
}

/// A message nobody acknowledges, on a topic of its own followed by a
/// session of the publisher's connection: it keeps every later segment
/// from being released, so a restart replays the records a test is about
/// and no checkpoint hides a lost one.
fn pin(node: &mut Node) {
    register(node, PUBLISHER);
    done(node, PUBLISHER, Request::CreateTopic { topic: "pin" });
    let reply = call(node, PUBLISHER, Request::Subscribe { topic: "pin" });
    assert!(matches!(reply, Ok(Reply::Subscribed { .. })), "{reply:?}");
    let publish = Request::Publish {
        topic: "pin",
        payload: b"kept",
    };
    assert!(matches!(
        call(node, PUBLISHER, publish),
        Ok(Reply::Published { .. })
    ));
}

/// A broker with topics "a" and "b" and a session subscribed to both.
fn ready(fs: &SimFs) -> (Node, u64) {
    let (mut node, _) = open(fs);
    node.round();
    pin(&mut node);
    for topic in ["a", "b"] {
        done(&mut node, PUBLISHER, Request::CreateTopic { topic });
    }
    let id = register(&mut node, SUBSCRIBER);
    for topic in ["a", "b"] {
        let reply = call(&mut node, SUBSCRIBER, Request::Subscribe { topic });
        assert!(matches!(reply, Ok(Reply::Subscribed { .. })), "{reply:?}");
    }
    (node, id)
}

fn register(node: &mut Node, conn: usize) -> u64 {
    let request = Request::RegisterSubscriber {
        resume: None,
        timeout_ms: None,
    };
    match call(node, conn, request) {
        Ok(Reply::SubscriberRegistered { subscriber_id, .. }) => subscriber_id,
        other => panic!("{other:?}"),
    }
}

/// Power is cut and the broker recovers from what the disk kept.
fn restart(node: Node, fs: &SimFs) -> Node {
    drop(node);
    fs.power_cut();
    let (mut node, _) = open(fs);
    node.round();
    node
}

/// Resumes session `id` on the subscriber connection: its topics.
fn resume(node: &mut Node, id: u64) -> Result<Vec<String>, ErrorCode> {
    let request = Request::RegisterSubscriber {
        resume: Some(id),
        timeout_ms: None,
    };
    call(node, SUBSCRIBER, request).map(|reply| match reply {
        Reply::SubscriberRegistered { topics, .. } => topics,
        other => panic!("{other:?}"),
    })
}

fn exists(node: &mut Node, topic: &str) -> bool {
    match call(node, PUBLISHER, Request::TopicInfo { topic }) {
        Ok(_) => true,
        Err(ErrorCode::UnknownTopic) => false,
        Err(other) => panic!("{other:?}"),
    }
}

#[test]
fn every_change_is_answered_only_once_its_record_is_durable() {
    let fs = SimFs::new(1);
    let (mut node, _) = ready(&fs);
    let requests = [
        (PUBLISHER, Request::CreateTopic { topic: "c" }),
        (SUBSCRIBER, Request::Unsubscribe { topic: "a" }),
        (PUBLISHER, Request::DeleteTopic { topic: "b" }),
        (SUBSCRIBER, Request::EndSession),
    ];
    for (conn, request) in requests {
        let op = request.op();
        node.send(conn, &request, None);
        assert!(
            node.out.0[conn].is_empty(),
            "{op:?} answered before its fsync"
        );
        assert_eq!(reply_to(&node.round(), op), Ok(Reply::Done), "{op:?}");
    }
}

#[test]
fn a_lost_deletion_stays_done_and_is_written_again_with_the_next_record() {
    for fault in FAULTS {
        let fs = SimFs::new(2);
        let (mut node, _) = ready(&fs);
        fault.arm(&fs);
        let reply = call(&mut node, PUBLISHER, Request::DeleteTopic { topic: "a" });
        assert_eq!(reply, Err(ErrorCode::StorageUnavailable), "{fault:?}");
        assert!(!exists(&mut node, "a"), "{fault:?}: the deletion stands");
        // A retry finds nothing to delete.
        let again = call(&mut node, PUBLISHER, Request::DeleteTopic { topic: "a" });
        assert_eq!(again, Err(ErrorCode::UnknownTopic));
        done(&mut node, PUBLISHER, Request::CreateTopic { topic: "c" });
        let mut node = restart(node, &fs);
        assert!(
            !exists(&mut node, "a"),
            "{fault:?}: deleted topic came back"
        );
        assert!(exists(&mut node, "b"));
    }
}

#[test]
fn a_restart_before_any_other_record_brings_a_lost_deletion_back() {
    let fs = SimFs::new(3);
    let (mut node, _) = ready(&fs);
    fs.fail_writes(1);
    let reply = call(&mut node, PUBLISHER, Request::DeleteTopic { topic: "a" });
    assert_eq!(reply, Err(ErrorCode::StorageUnavailable));
    // The broker is stopped before it logs anything else: the log never
    // held the deletion, and the client was told so.
    let mut node = restart(node, &fs);
    assert!(exists(&mut node, "a"));
    done(&mut node, PUBLISHER, Request::DeleteTopic { topic: "a" });
    let mut node = restart(node, &fs);
    assert!(!exists(&mut node, "a"));
}

#[test]
fn a_lost_unsubscribe_stays_done_and_keeps_its_place_before_a_new_subscribe() {
    for fault in FAULTS {
        let fs = SimFs::new(4);
        let (mut node, id) = ready(&fs);
        fault.arm(&fs);
        let reply = call(&mut node, SUBSCRIBER, Request::Unsubscribe { topic: "a" });
        assert_eq!(reply, Err(ErrorCode::StorageUnavailable), "{fault:?}");
        let again = call(&mut node, SUBSCRIBER, Request::Unsubscribe { topic: "a" });
        assert_eq!(again, Err(ErrorCode::NotSubscribed));
        // The owed Unsubscribed goes ahead of this: a replay ends with it
        // unsubscribed from "b" only.
        done(&mut node, SUBSCRIBER, Request::Unsubscribe { topic: "b" });
        let mut node = restart(node, &fs);
        assert_eq!(resume(&mut node, id), Ok(vec![]), "{fault:?}");

        // Unsubscribed again after a loss, then subscribed anew: the
        // subscription made last is the one a restart keeps.
        let reply = call(&mut node, SUBSCRIBER, Request::Subscribe { topic: "a" });
        assert!(matches!(reply, Ok(Reply::Subscribed { .. })));
        fault.arm(&fs);
        let reply = call(&mut node, SUBSCRIBER, Request::Unsubscribe { topic: "a" });
        assert_eq!(reply, Err(ErrorCode::StorageUnavailable));
        let reply = call(&mut node, SUBSCRIBER, Request::Subscribe { topic: "a" });
        assert!(matches!(reply, Ok(Reply::Subscribed { .. })));
        let mut node = restart(node, &fs);
        assert_eq!(resume(&mut node, id), Ok(vec!["a".to_string()]));
    }
}

#[test]
fn a_lost_end_session_stays_done() {
    for fault in FAULTS {
        let fs = SimFs::new(5);
        let (mut node, id) = ready(&fs);
        fault.arm(&fs);
        let reply = call(&mut node, SUBSCRIBER, Request::EndSession);
        assert_eq!(reply, Err(ErrorCode::StorageUnavailable), "{fault:?}");
        assert_eq!(resume(&mut node, id), Err(ErrorCode::UnknownSubscriber));
        let fresh = register(&mut node, SUBSCRIBER);
        let mut node = restart(node, &fs);
        assert_eq!(resume(&mut node, id), Err(ErrorCode::UnknownSubscriber));
        assert_eq!(resume(&mut node, fresh), Ok(vec![]));
    }
}

#[test]
fn a_lost_expiry_is_written_again_with_the_next_record() {
    let fs = SimFs::new(6);
    let (mut node, id) = ready(&fs);
    node.broker.disconnect(SUBSCRIBER, node.now);
    fs.fail_writes(1);
    let later = node.now + Duration::from_secs(61);
    node.broker.fire_timers(later, &mut node.out);
    node.round();
    done(&mut node, PUBLISHER, Request::CreateTopic { topic: "c" });
    let mut node = restart(node, &fs);
    assert_eq!(resume(&mut node, id), Err(ErrorCode::UnknownSubscriber));
    assert!(exists(&mut node, "c"));
}

#[test]
fn a_lost_creation_is_undone() {
    for fault in FAULTS {
        let fs = SimFs::new(7);
        let (mut node, id) = ready(&fs);
        fault.arm(&fs);
        let reply = call(&mut node, PUBLISHER, Request::CreateTopic { topic: "c" });
        assert_eq!(reply, Err(ErrorCode::StorageUnavailable), "{fault:?}");
        assert!(!exists(&mut node, "c"), "{fault:?}: nothing is created");
        let publish = Request::Publish {
            topic: "c",
            payload: b"x",
        };
        assert_eq!(
            call(&mut node, PUBLISHER, publish),
            Err(ErrorCode::UnknownTopic)
        );

        // A new session whose record is lost is ended: the connection
        // holds no subscriber, so nothing is subscribed on it.
        fault.arm(&fs);
        let request = Request::RegisterSubscriber {
            resume: None,
            timeout_ms: None,
        };
        let reply = call(&mut node, PUBLISHER, request);
        assert_eq!(reply, Err(ErrorCode::StorageUnavailable), "{fault:?}");
        let reply = call(&mut node, PUBLISHER, Request::Subscribe { topic: "a" });
        assert_eq!(reply, Err(ErrorCode::NotRegistered));

        done(&mut node, PUBLISHER, Request::CreateTopic { topic: "c" });
        let mut node = restart(node, &fs);
        assert!(exists(&mut node, "c"));
        assert_eq!(resume(&mut node, id), Ok(vec!["a".into(), "b".into()]));
    }
}

#[test]
fn a_lost_subscription_is_undone_even_after_its_connection_went() {
    let fs = SimFs::new(8);
    let (mut node, id) = ready(&fs);
    done(&mut node, PUBLISHER, Request::CreateTopic { topic: "c" });
    fs.fail_writes(1);
    node.send(SUBSCRIBER, &Request::Subscribe { topic: "c" }, None);
    node.broker.disconnect(SUBSCRIBER, node.now);
    // The same connection key comes back for a new client: no stale reply
    // may reach it.
    node.out.0[SUBSCRIBER].clear();
    node.broker.connect(SUBSCRIBER);
    node.send(
        SUBSCRIBER,
        &Request::Hello {
            version: courier::PROTOCOL_VERSION,
            client_name: "again",
            credentials: None,
        },
        None,
    );
    let replies = node.round();
    let ops: Vec<Op> = replies.iter().map(|(_, op, _, _)| *op).collect();
    assert_eq!(ops, vec![Op::Hello]);
    // Not kept in memory while the log lacks it.
    assert_eq!(resume(&mut node, id), Ok(vec!["a".into(), "b".into()]));
}

#[test]
fn a_disk_that_stays_full_is_left_alone_while_nothing_is_asked() {
    let fs = SimFs::new(9);
    let (mut node, id) = ready(&fs);
    fs.set_full(true);
    let publish = Request::Publish {
        topic: "a",
        payload: b"x",
    };
    let reply = call(&mut node, PUBLISHER, publish.clone());
    assert_eq!(reply, Err(ErrorCode::StorageUnavailable));
    let reply = call(&mut node, SUBSCRIBER, Request::Unsubscribe { topic: "b" });
    assert_eq!(reply, Err(ErrorCode::StorageUnavailable));
    node.round();
    let ops = fs.ops();
    for _ in 0..5 {
        node.round();
    }
    assert_eq!(
        fs.ops(),
        ops,
        "the broker kept writing with nothing to write"
    );
    fs.set_full(false);
    assert!(matches!(
        call(&mut node, PUBLISHER, publish),
        Ok(Reply::Published { .. })
    ));
    let mut node = restart(node, &fs);
    assert_eq!(resume(&mut node, id), Ok(vec!["a".into()]));
}

/// What a restart must find of a topic: `Some(exists)` when the answers so
/// far settle it, `None` while they do not (a deletion answered
/// STORAGE_UNAVAILABLE and nothing logged since, or a request cut off).
type Known = Option<bool>;

#[test]
fn topics_come_back_after_power_cuts_exactly_as_answered() {
    const NAMES: [&str; 6] = ["t0", "t1", "t2", "t3", "t4", "t5"];
    // Restarts that found a lost deletion kept by its owed record.
    let mut owed_checked = 0;
    for seed in 1..=150u64 {
        let mut rng = Rng::new(seed);
        let fs = SimFs::new(seed);
        let (mut node, _) = open(&fs);
        node.round();
        pin(&mut node);
        let mut known: [Known; 6] = [Some(false); 6];
        for _cut in 0..4 {
            // Deletions answered STORAGE_UNAVAILABLE, settled by the next
            // success (whose record follows the owed one).
            let mut unsettled = [false; 6];
            let mut settled = [false; 6];
            for _ in 0..1 + rng.below(10) {
                match rng.below(8) {
                    0 => fs.fail_writes(1),
                    1 => fs.fail_syncs(1),
                    _ => {}
                }
                for _ in 0..1 + rng.below(4) {
                    let t = rng.below(6) as usize;
                    let request = if rng.below(2) == 0 {
                        Request::CreateTopic { topic: NAMES[t] }
                    } else {
                        Request::DeleteTopic { topic: NAMES[t] }
                    };
                    node.send(PUBLISHER, &request, Some((t, Default::default())));
                }
                let replies = node.round();
                let logged = replies.iter().any(|(_, _, _, r)| r.is_ok());
                if logged {
                    for t in 0..6 {
                        if std::mem::take(&mut unsettled[t]) {
                            known[t] = Some(false);
                            settled[t] = true;
                        }
                    }
                }
                for (_, op, carried, reply) in replies {
                    let (t, _) = carried.expect("carried");
                    settled[t] = false;
                    match (op, reply) {
                        (Op::CreateTopic, Ok(_)) => known[t] = Some(true),
                        (Op::DeleteTopic, Ok(_)) => known[t] = Some(false),
                        (Op::DeleteTopic, Err(ErrorCode::StorageUnavailable)) => {
                            known[t] = None;
                            unsettled[t] = true;
                        }
                        // A lost creation is undone: nothing changes.
                        (Op::CreateTopic, Err(ErrorCode::StorageUnavailable)) => {}
                        (_, Err(ErrorCode::TopicExists | ErrorCode::UnknownTopic)) => {}
                        (op, other) => panic!("seed {seed}: {op:?} answered {other:?}"),
                    }
                }
            }
            // One request in flight at the cut, maybe mid-write.
            let t = rng.below(6) as usize;
            node.send(PUBLISHER, &Request::DeleteTopic { topic: NAMES[t] }, None);
            known[t] = None;
            settled[t] = false;
            fs.crash_after(rng.below(3));
            node.broker.flush_journal();
            drop(node);
            fs.fail_syncs(0);
            fs.fail_writes(0);
            fs.power_cut();
            let (fresh, _) = open(&fs);
            node = fresh;
            node.round();
            for (t, name) in NAMES.iter().enumerate() {
                let found = exists(&mut node, name);
                if let Some(expected) = known[t] {
                    assert_eq!(found, expected, "seed {seed}: topic {name}");
                    owed_checked += u32::from(settled[t]);
                }
                known[t] = Some(found);
            }
        }
    }
    assert!(owed_checked > 0, "no restart ever checked an owed deletion");
}
