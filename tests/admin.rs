//! LIST_TOPICS, TOPIC_INFO and END_SESSION over real TCP against an
//! in-process broker: pages in name order that chain to the end and fit a
//! frame, one topic's figures, and a session ended at once with its backlog
//! released.

mod common;

use common::*;
use courier::protocol::{ErrorCode, Op, Reply, Request, TopicPage, TopicSummary};

fn page(raw: &mut Raw, after: Option<&str>, limit: u32) -> TopicPage {
    match raw.ok(Request::ListTopics { after, limit }) {
        Reply::Topics(page) => page,
        other => panic!("not a topic page: {other:?}"),
    }
}

fn info(raw: &mut Raw, topic: &str) -> TopicSummary {
    match raw.ok(Request::TopicInfo { topic }) {
        Reply::TopicInfo(info) => info,
        other => panic!("not topic info: {other:?}"),
    }
}

/// Every page from the start, following `next`; the pages' sizes too.
fn all_pages(raw: &mut Raw, limit: u32) -> (Vec<String>, Vec<usize>) {
    let (mut names, mut sizes, mut after) = (Vec::new(), Vec::new(), None::<String>);
    for _ in 0..1000 {
        let page = page(raw, after.as_deref(), limit);
        sizes.push(page.topics.len());
        names.extend(page.topics.into_iter().map(|t| t.name));
        match page.next {
            Some(next) => after = Some(next),
            None => return (names, sizes),
        }
    }
    panic!("the pages never ended")
}

#[test]
fn topics_are_listed_in_name_order_page_by_page_by_anyone() {
    let broker = start_broker();
    let mut publisher = Raw::publisher(broker.addr());
    let names = ["b", "a", "c.2", "c.10", "d", "A"];
    for topic in names {
        publisher.ok(Request::CreateTopic { topic });
    }
    let mut sorted: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    sorted.sort();

    // A connection that took no role may list.
    let mut anyone = Raw::hello(broker.addr());
    assert_eq!(all_pages(&mut anyone, 2), (sorted.clone(), vec![2, 2, 2]));
    assert_eq!(all_pages(&mut anyone, 1000).0, sorted);
    // A limit of 0 is taken as 1; a huge one as 1000.
    assert_eq!(all_pages(&mut anyone, 0).1, vec![1; 6]);
    assert_eq!(all_pages(&mut anyone, u32::MAX).1, vec![6]);
    // `after` need not name a topic, nor be a valid name.
    let rest = page(&mut anyone, Some("b "), 10);
    assert_eq!(
        rest.topics
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>(),
        ["c.10", "c.2", "d"]
    );
    assert_eq!(rest.next, None);
    assert_eq!(page(&mut anyone, Some("zzz"), 10), TopicPage::default());
    // The last full page says nothing more comes.
    let last = page(&mut anyone, Some("c.10"), 2);
    assert_eq!(last.next, None);
}

#[test]
fn a_page_stops_where_the_frame_would_be_full() {
    let broker = start_broker_with(limits(|l| l.max_frame_bytes = 1024));
    let mut publisher = Raw::publisher(broker.addr());
    let mut names = Vec::new();
    for i in 0..5 {
        let name = format!("{i}{}", "n".repeat(254));
        publisher.ok(Request::CreateTopic { topic: &name });
        names.push(name);
    }
    // 512 bytes of room beside the reply's header hold one 255-byte entry.
    let mut raw = Raw::hello(broker.addr());
    assert_eq!(all_pages(&mut raw, 1000), (names, vec![1; 5]));
    publisher.ok(Request::CreateTopic { topic: "s1" });
    publisher.ok(Request::CreateTopic { topic: "s2" });
    // Short names share a page.
    assert_eq!(
        page(&mut raw, Some(&format!("4{}", "n".repeat(254))), 1000)
            .topics
            .len(),
        2
    );
}

#[test]
fn topic_info_reports_offsets_backlog_and_subscribers() {
    let broker = start_broker();
    let mut publisher = Raw::publisher_with_topic(broker.addr(), "t");
    publisher.publish("t", b"nobody reads this");
    let (mut subscriber, _) = Raw::subscriber(broker.addr(), &["t"]);
    publisher.publish("t", b"12345");
    publisher.publish("t", b"678");
    let expected = TopicSummary {
        name: "t".into(),
        next_offset: 3,
        backlog_messages: 2,
        backlog_bytes: 8,
        subscribers: 1,
        retain_ms: None,
        retain_bytes: None,
        earliest_offset: None,
    };
    assert_eq!(info(&mut subscriber, "t"), expected);
    assert_eq!(page(&mut publisher, None, 10).topics, vec![expected]);
    assert_eq!(
        subscriber.error(Request::TopicInfo { topic: "nope" }),
        ErrorCode::UnknownTopic
    );
    assert_eq!(
        subscriber.error(Request::TopicInfo { topic: "no way" }),
        ErrorCode::InvalidTopicName
    );
}

#[test]
fn end_session_answers_the_parked_pull_releases_the_backlog_and_frees_the_connection() {
    let broker = start_broker();
    let mut publisher = Raw::publisher_with_topic(broker.addr(), "t");
    publisher.ok(Request::CreateTopic { topic: "u" });
    let (mut subscriber, id) = Raw::subscriber(broker.addr(), &["t", "u"]);
    publisher.publish("t", b"held");
    // Delivered, not acknowledged: still in the backlog.
    assert_eq!(
        messages(subscriber.call(pull(Some("t"), 1, 0, false))).len(),
        1
    );
    assert_eq!(info(&mut publisher, "t").backlog_messages, 1);

    // A pull parks on `u`; END_SESSION answers it empty, then itself.
    let pull_id = subscriber.send(pull(Some("u"), 1, 60_000, false));
    let end_id = subscriber.send(Request::EndSession);
    let (got, reply) = subscriber.recv(Op::Pull);
    assert_eq!((got, messages(reply)), (pull_id, vec![]));
    let (got, reply) = subscriber.recv(Op::EndSession);
    assert_eq!((got, reply), (end_id, Ok(Reply::Done)));

    let t = info(&mut publisher, "t");
    assert_eq!(
        (t.backlog_messages, t.backlog_bytes, t.subscribers),
        (0, 0, 0)
    );
    let stats = publisher.stats();
    assert_eq!((stats.subscribers, stats.subscriptions), (0, 0));
    assert_eq!(stats.backlog_messages, 0);

    // The session is gone; the connection holds none, and may take a new one.
    assert_eq!(
        subscriber.error(Request::EndSession),
        ErrorCode::NotRegistered
    );
    assert_eq!(
        subscriber.error(Request::Subscribe { topic: "t" }),
        ErrorCode::NotRegistered
    );
    assert_eq!(
        subscriber.error(Request::RegisterSubscriber {
            resume: Some(id),
            timeout_ms: None
        }),
        ErrorCode::UnknownSubscriber
    );
    subscriber.ok(Request::RegisterSubscriber {
        resume: None,
        timeout_ms: None,
    });
    subscriber.ok(Request::Subscribe { topic: "t" });
    assert_eq!(info(&mut publisher, "t").subscribers, 1);
}

#[test]
fn end_session_without_a_session_is_not_registered() {
    let broker = start_broker();
    let mut publisher = Raw::publisher(broker.addr());
    assert_eq!(
        publisher.error(Request::EndSession),
        ErrorCode::NotRegistered
    );
    let mut anyone = Raw::hello(broker.addr());
    assert_eq!(anyone.error(Request::EndSession), ErrorCode::NotRegistered);
    anyone.ok(Request::Stats);
}
