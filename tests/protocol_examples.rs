//! PROTOCOL.md section 8, replayed: every request of the example session is
//! sent to a real broker as the exact bytes the document shows, and every
//! reply is compared byte for byte with the document (except the one that
//! carries the random subscriber id). Each hex string is also looked up in
//! PROTOCOL.md itself, so the text and this test cannot drift apart.

mod common;

use common::*;

#[derive(Clone, Copy)]
enum Conn {
    P,
    S,
}

/// One exchange: who sends, the request frame, and the reply frame (`None`
/// where the reply holds a random value and is only received).
type Step = (Conn, &'static str, Option<&'static str>);

const SESSION: &[Step] = &[
    // 8.1 HELLO, on both connections.
    (
        Conn::P,
        "00 00 00 09 94 01 01 02 a4 64 65 6d 6f",
        Some(HELLO_REPLY),
    ),
    (
        Conn::S,
        "00 00 00 09 94 01 01 02 a4 64 65 6d 6f",
        Some(HELLO_REPLY),
    ),
    // 8.2 REGISTER_PUBLISHER, 8.3 CREATE_TOPIC.
    (
        Conn::P,
        "00 00 00 03 92 02 02",
        Some("00 00 00 04 93 02 00 01"),
    ),
    (
        Conn::P,
        "00 00 00 08 93 03 03 a4 6e 65 77 73",
        Some("00 00 00 04 93 03 00 c0"),
    ),
    // 8.4 REGISTER_SUBSCRIBER (a random id) and SUBSCRIBE.
    (Conn::S, "00 00 00 04 93 07 02 c0", None),
    (
        Conn::S,
        "00 00 00 08 93 08 03 a4 6e 65 77 73",
        Some("00 00 00 04 93 03 00 00"),
    ),
    // 8.5 PUBLISH, twice.
    (
        Conn::P,
        "00 00 00 0f 94 05 04 a4 6e 65 77 73 c4 05 48 65 6c 6c 6f",
        Some("00 00 00 06 93 04 00 92 00 01"),
    ),
    (
        Conn::P,
        "00 00 00 0f 94 05 05 a4 6e 65 77 73 c4 05 57 6f 72 6c 64",
        Some("00 00 00 06 93 05 00 92 01 01"),
    ),
    // 8.6 PULL.
    (
        Conn::S,
        "00 00 00 12 97 0a 04 a4 6e 65 77 73 64 ce 00 01 00 00 cd 13 88 c2",
        Some(
            "00 00 00 1a 93 04 00 91 93 a4 6e 65 77 73 00 92 c4 05 48 65 6c 6c 6f c4 05 57 6f 72 6c 64",
        ),
    ),
    // 8.7 ACK.
    (
        Conn::S,
        "00 00 00 09 94 0b 05 a4 6e 65 77 73 02",
        Some("00 00 00 04 93 05 00 c0"),
    ),
    // 8.8 UNKNOWN_TOPIC.
    (
        Conn::S,
        "00 00 00 0a 93 08 06 a6 73 70 6f 72 74 73",
        Some(
            "00 00 00 1a 93 06 09 b6 75 6e 6b 6e 6f 77 6e 20 74 6f 70 69 63 20 27 73 70 6f 72 74 73 27",
        ),
    ),
    // 8.9 An empty PULL.
    (
        Conn::S,
        "00 00 00 10 97 0a 07 a4 6e 65 77 73 64 ce 00 01 00 00 00 c3",
        Some("00 00 00 04 93 07 00 90"),
    ),
    // 8.10 LIST_TOPICS.
    (Conn::P, "00 00 00 05 94 0e 06 c0 0a", Some(LIST_REPLY)),
    // 8.11 END_SESSION, then TOPIC_INFO shows the subscriber gone.
    (
        Conn::S,
        "00 00 00 03 92 0d 08",
        Some("00 00 00 04 93 08 00 c0"),
    ),
    (
        Conn::P,
        "00 00 00 08 93 0f 07 a4 6e 65 77 73",
        Some(INFO_REPLY),
    ),
];

/// 8.13, after the session above: two pipelined pulls, both parked; a
/// publish answers the first, an ACK and a third pull go out together, and
/// the next publish answers the second.
enum Act {
    /// Sent; nothing comes back at once (a pull that parks).
    Send(Conn, &'static str),
    /// Sent, and its reply read (`None`: random, only received).
    Call(Conn, &'static str, Option<&'static str>),
    /// A reply that comes later, to an earlier request.
    Recv(Conn, &'static str),
    /// Wait until the broker holds this many parked pulls (asked on a third
    /// connection, not shown), so a publish cannot overtake them.
    Parked(u64),
}

const PIPELINED: &[Act] = &[
    Act::Call(Conn::S, "00 00 00 04 93 07 09 c0", None),
    Act::Call(
        Conn::S,
        "00 00 00 08 93 08 0a a4 6e 65 77 73",
        Some("00 00 00 04 93 0a 00 02"),
    ),
    Act::Send(
        Conn::S,
        "00 00 00 12 97 0a 0b a4 6e 65 77 73 64 ce 00 01 00 00 cd 75 30 c2",
    ),
    Act::Send(
        Conn::S,
        "00 00 00 12 97 0a 0c a4 6e 65 77 73 64 ce 00 01 00 00 cd 75 30 c2",
    ),
    Act::Parked(2),
    Act::Call(
        Conn::P,
        "00 00 00 0b 94 05 08 a4 6e 65 77 73 c4 01 41",
        Some("00 00 00 06 93 08 00 92 02 01"),
    ),
    Act::Recv(
        Conn::S,
        "00 00 00 0f 93 0b 00 91 93 a4 6e 65 77 73 02 91 c4 01 41",
    ),
    Act::Call(
        Conn::S,
        "00 00 00 09 94 0b 0d a4 6e 65 77 73 03",
        Some("00 00 00 04 93 0d 00 c0"),
    ),
    Act::Send(
        Conn::S,
        "00 00 00 12 97 0a 0e a4 6e 65 77 73 64 ce 00 01 00 00 cd 75 30 c2",
    ),
    Act::Parked(2),
    Act::Call(
        Conn::P,
        "00 00 00 0b 94 05 09 a4 6e 65 77 73 c4 01 42",
        Some("00 00 00 06 93 09 00 92 03 01"),
    ),
    Act::Recv(
        Conn::S,
        "00 00 00 0f 93 0c 00 91 93 a4 6e 65 77 73 03 91 c4 01 42",
    ),
];

const HELLO_REPLY: &str = "\
00 00 01 1b 93 01 00 8d a7 76 65 72 73 69 6f 6e 02 a6 73 65 72 76 65 72 \
ad 63 6f 75 72 69 65 72 20 30 2e 31 2e 30 af 6d 61 78 5f 66 72 61 6d 65 \
5f 62 79 74 65 73 ce 00 10 00 00 b1 6d 61 78 5f 70 61 79 6c 6f 61 64 5f \
62 79 74 65 73 ce 00 0f fe 00 b4 6d 61 78 5f 74 6f 70 69 63 5f 6e 61 6d \
65 5f 62 79 74 65 73 cc ff b1 6d 61 78 5f 70 75 6c 6c 5f 6d 65 73 73 61 \
67 65 73 ce 00 01 00 00 b1 6d 61 78 5f 62 61 63 6b 6c 6f 67 5f 62 79 74 \
65 73 ce 04 00 00 00 b4 6d 61 78 5f 62 61 63 6b 6c 6f 67 5f 6d 65 73 73 \
61 67 65 73 ce 00 0f 42 40 b2 73 65 73 73 69 6f 6e 5f 74 69 6d 65 6f 75 \
74 5f 6d 73 cd ea 60 b0 6d 61 78 5f 6f 75 74 70 75 74 5f 62 79 74 65 73 \
ce 01 00 00 00 af 70 75 62 6c 69 73 68 5f 68 6f 6c 64 5f 6d 73 cd 13 88 \
b1 6d 61 78 5f 77 61 69 74 69 6e 67 5f 70 75 6c 6c 73 04 b6 6d 61 78 5f \
73 65 73 73 69 6f 6e 5f 74 69 6d 65 6f 75 74 5f 6d 73 ce 24 0c 84 00";

const LIST_REPLY: &str = "\
00 00 00 58 93 06 00 82 a6 74 6f 70 69 63 73 91 85 a4 6e 61 6d 65 a4 6e \
65 77 73 ab 6e 65 78 74 5f 6f 66 66 73 65 74 02 b0 62 61 63 6b 6c 6f 67 \
5f 6d 65 73 73 61 67 65 73 00 ad 62 61 63 6b 6c 6f 67 5f 62 79 74 65 73 \
00 ab 73 75 62 73 63 72 69 62 65 72 73 01 a4 6e 65 78 74 c0";

const INFO_REPLY: &str = "\
00 00 00 49 93 07 00 85 a4 6e 61 6d 65 a4 6e 65 77 73 ab 6e 65 78 74 5f \
6f 66 66 73 65 74 02 b0 62 61 63 6b 6c 6f 67 5f 6d 65 73 73 61 67 65 73 \
00 ad 62 61 63 6b 6c 6f 67 5f 62 79 74 65 73 00 ab 73 75 62 73 63 72 69 \
62 65 72 73 00";

fn bytes(hex: &str) -> Vec<u8> {
    hex.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).unwrap_or_else(|_| panic!("not hex: {b}")))
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    let text: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
    text.join(" ")
}

/// PROTOCOL.md with every run of whitespace (and backquotes) made one
/// space, so that a hex string wrapped over several lines, or quoted inline,
/// is found as one.
fn document() -> String {
    let text = include_str!("../PROTOCOL.md").replace('`', " ");
    format!(
        " {} ",
        text.split_whitespace().collect::<Vec<_>>().join(" ")
    )
}

/// Fails unless PROTOCOL.md (as [`document`] gives it) shows `frame`.
fn assert_shown(doc: &str, frame: &str) {
    assert!(
        doc.contains(&format!(" {} ", hex(&bytes(frame)))),
        "PROTOCOL.md does not show {frame}"
    );
}

/// The next reply frame, length prefix included, as the document shows it.
fn recv_whole(raw: &mut Raw) -> Vec<u8> {
    let body = raw.recv_frame().expect("a reply");
    let mut got = (body.len() as u32).to_be_bytes().to_vec();
    got.extend_from_slice(&body);
    got
}

/// The example's two connections, publisher and subscriber.
struct Pair {
    p: Raw,
    s: Raw,
}

impl Pair {
    fn connect(addr: std::net::SocketAddr) -> Pair {
        Pair {
            p: Raw::connect(addr),
            s: Raw::connect(addr),
        }
    }

    fn on(&mut self, conn: Conn) -> &mut Raw {
        match conn {
            Conn::P => &mut self.p,
            Conn::S => &mut self.s,
        }
    }
}

/// Sends `request` and receives its reply, compared with `reply` if
/// given: byte for byte, except FETCH_REPLY's append time. Both must be
/// in the document.
fn exchange(doc: &str, raw: &mut Raw, request: &str, reply: Option<&str>) {
    for shown in std::iter::once(request).chain(reply) {
        assert_shown(doc, shown);
    }
    raw.send_bytes(&bytes(request));
    let got = recv_whole(raw);
    let Some(reply) = reply else { return };
    let mut expected = bytes(reply);
    if reply == FETCH_REPLY {
        let time = got.get(FETCH_TIME).expect("a fetched message");
        expected[FETCH_TIME].copy_from_slice(time);
    }
    assert_eq!(hex(&got), hex(&expected), "reply to {request}");
}

/// [`exchange`] for every step, each on its connection.
fn play(doc: &str, pair: &mut Pair, steps: &[Step]) {
    for &(conn, request, reply) in steps {
        exchange(doc, pair.on(conn), request, reply);
    }
}

#[test]
fn the_example_session_is_what_the_broker_sends() {
    let broker = start_broker();
    let mut pair = Pair::connect(broker.addr());
    let doc = document();
    play(&doc, &mut pair, SESSION);
    let mut stats = courier::client::Client::connect(broker.addr()).expect("connect");
    for act in PIPELINED {
        let (conn, send, expect) = match *act {
            Act::Send(conn, request) => (conn, Some(request), None),
            Act::Call(conn, request, reply) => (conn, Some(request), reply.or(Some(""))),
            Act::Recv(conn, reply) => (conn, None, Some(reply)),
            Act::Parked(n) => {
                wait_until("the pulls to park", || {
                    stats.stats().expect("stats").waiting_pulls == n
                });
                continue;
            }
        };
        for shown in send.into_iter().chain(expect.filter(|e| !e.is_empty())) {
            assert_shown(&doc, shown);
        }
        let raw = pair.on(conn);
        if let Some(request) = send {
            raw.send_bytes(&bytes(request));
        }
        let Some(reply) = expect else { continue };
        let got = recv_whole(raw);
        if !reply.is_empty() {
            assert_eq!(hex(&got), hex(&bytes(reply)), "reply on {send:?}");
        }
    }
}

/// 8.12: a publish to a full topic is held, and answered once an ACK on
/// another connection makes room.
#[test]
fn a_held_publish_is_answered_when_an_ack_makes_room() {
    let broker = start_broker_with(limits(|l| l.max_backlog_messages = 1));
    let mut pair = Pair::connect(broker.addr());
    let doc = document();
    // 8.1 to 8.5 as in the first session, up to the first PUBLISH; the
    // HELLO reply announces the lower backlog bound, so it is only received.
    let hellos: Vec<Step> = SESSION[..2]
        .iter()
        .map(|&(conn, request, _)| (conn, request, None))
        .collect();
    play(&doc, &mut pair, &hellos);
    play(&doc, &mut pair, &SESSION[2..7]);
    let world = "00 00 00 0f 94 05 05 a4 6e 65 77 73 c4 05 57 6f 72 6c 64";
    assert_shown(&doc, world);
    pair.p.send_bytes(&bytes(world));
    let mut watcher = Raw::publisher(broker.addr());
    wait_until("the publish to be held", || watcher.stats().held_now == 1);
    play(
        &doc,
        &mut pair,
        &[
            (
                Conn::S,
                "00 00 00 12 97 0a 04 a4 6e 65 77 73 64 ce 00 01 00 00 cd 13 88 c2",
                Some("00 00 00 13 93 04 00 91 93 a4 6e 65 77 73 00 91 c4 05 48 65 6c 6c 6f"),
            ),
            (
                Conn::S,
                "00 00 00 09 94 0b 05 a4 6e 65 77 73 01",
                Some("00 00 00 04 93 05 00 c0"),
            ),
        ],
    );
    let got = recv_whole(&mut pair.p);
    assert_eq!(hex(&got), "00 00 00 06 93 05 00 92 01 01");
    assert!(doc.contains(" 00 00 00 06 93 05 00 92 01 01 "));
    assert_eq!(watcher.stats().publishes_held, 1);
}

/// 8.15: HELLO with credentials, FORBIDDEN, and AUTH_FAILED for a wrong
/// token, against a broker with `--users`.
#[test]
fn the_credentials_example_is_what_the_broker_sends() {
    let path = users_file("example", &[("alice", "s3cret", &["publish:news"])]);
    let broker = start_broker_with(courier::server::Config {
        users: Some(path),
        ..courier::server::Config::default()
    });
    let doc = document();
    let call = |raw: &mut Raw, request: &str, reply: &str| {
        exchange(&doc, raw, request, Some(reply));
    };
    let mut p = Raw::connect(broker.addr());
    call(
        &mut p,
        "00 00 00 22 95 01 01 02 a4 64 65 6d 6f 82 a4 75 73 65 72 a5 61 6c 69 63 65 a5 74 6f 6b 65 6e a6 73 33 63 72 65 74",
        HELLO_REPLY,
    );
    call(&mut p, "00 00 00 03 92 02 02", "00 00 00 04 93 02 00 01");
    call(
        &mut p,
        "00 00 00 0e 94 05 03 a6 73 70 6f 72 74 73 c4 02 48 69",
        "00 00 00 2f 93 03 1f d9 2a 75 73 65 72 20 61 6c 69 63 65 20 6d 61 79 20 6e 6f 74 20 50 55 42 4c 49 53 48 20 6f 6e 20 74 6f 70 69 63 20 73 70 6f 72 74 73",
    );
    let mut q = Raw::connect(broker.addr());
    call(
        &mut q,
        "00 00 00 21 95 01 01 02 a4 64 65 6d 6f 82 a4 75 73 65 72 a5 61 6c 69 63 65 a5 74 6f 6b 65 6e a5 67 75 65 73 73",
        "00 00 00 4a 93 01 1e d9 45 61 75 74 68 65 6e 74 69 63 61 74 69 6f 6e 20 66 61 69 6c 65 64 3a 20 75 6e 6b 6e 6f 77 6e 20 75 73 65 72 20 6f 72 20 77 72 6f 6e 67 20 74 6f 6b 65 6e 2c 20 6f 72 20 6e 6f 20 63 72 65 64 65 6e 74 69 61 6c 73",
    );
    q.expect_closed();
}

/// 4.7: the example REGISTER_SUBSCRIBER with a session timeout is what the
/// codec writes, and the broker accepts it.
#[test]
fn the_session_timeout_example_is_what_the_codec_writes() {
    const REGISTER_FOR_A_WEEK: &str = "00 00 00 09 94 07 02 c0 ce 24 0c 84 00";
    assert!(document().contains(&format!(" {} ", hex(&bytes(REGISTER_FOR_A_WEEK)))));
    let mut encoded = Vec::new();
    courier::codec::encode_request(
        &mut encoded,
        2,
        &courier::protocol::Request::RegisterSubscriber {
            resume: None,
            timeout_ms: Some(7 * 24 * 3600 * 1000),
        },
    );
    assert_eq!(hex(&encoded), hex(&bytes(REGISTER_FOR_A_WEEK)));
    let broker = start_broker();
    let mut s = Raw::hello(broker.addr());
    s.send_bytes(&bytes(REGISTER_FOR_A_WEEK));
    let (id, reply) = s.recv(courier::protocol::Op::RegisterSubscriber);
    assert_eq!(id, 2);
    assert!(matches!(
        reply,
        Ok(courier::protocol::Reply::SubscriberRegistered { .. })
    ));
}

/// 8.14, protocol version 2's replay requests on a fresh broker: a
/// producer id, a retained topic, numbered publishes (a resend answered
/// with the original reply, a gap refused), a subscription from the
/// earliest message, SEEK by time, and FETCH, whose reply carries the
/// broker's append time (the only bytes compared loosely: the 8 bytes of
/// that time).
const REPLAY: &[Step] = &[
    (Conn::P, "00 00 00 09 94 01 01 02 a4 64 65 6d 6f", None),
    (
        Conn::P,
        "00 00 00 06 93 02 02 a2 70 31",
        Some("00 00 00 04 93 02 00 01"),
    ),
    (
        Conn::P,
        "00 00 00 17 94 03 03 a3 6c 6f 67 81 a9 72 65 74 61 69 6e 5f 6d 73 ce 05 26 5c 00",
        Some("00 00 00 04 93 03 00 c0"),
    ),
    (
        Conn::P,
        "00 00 00 0b 95 05 04 a3 6c 6f 67 c4 01 41 01",
        Some("00 00 00 06 93 04 00 92 00 00"),
    ),
    (
        Conn::P,
        "00 00 00 0b 95 05 05 a3 6c 6f 67 c4 01 41 01",
        Some("00 00 00 06 93 05 00 92 00 00"),
    ),
    (
        Conn::P,
        "00 00 00 0b 95 05 06 a3 6c 6f 67 c4 01 43 03",
        Some(GAP_REPLY),
    ),
    (Conn::S, "00 00 00 09 94 01 01 02 a4 64 65 6d 6f", None),
    (Conn::S, "00 00 00 04 93 07 02 c0", None),
    (
        Conn::S,
        "00 00 00 10 94 08 03 a3 6c 6f 67 a8 65 61 72 6c 69 65 73 74",
        Some("00 00 00 04 93 03 00 00"),
    ),
    (
        Conn::S,
        "00 00 00 11 94 10 04 a3 6c 6f 67 81 a7 74 69 6d 65 5f 6d 73 00",
        Some("00 00 00 04 93 04 00 00"),
    ),
    (
        Conn::S,
        "00 00 00 0e 96 11 05 a3 6c 6f 67 00 0a ce 00 01 00 00",
        Some(FETCH_REPLY),
    ),
];

const GAP_REPLY: &str = "\
00 00 00 54 93 06 1c d9 4f 73 65 71 20 33 20 6f 66 20 70 72 6f 64 75 63 \
65 72 20 27 70 31 27 20 73 6b 69 70 73 20 61 68 65 61 64 3a 20 74 68 65 \
20 6c 61 73 74 20 73 74 6f 72 65 64 20 69 73 20 31 2c 20 73 6f 20 74 68 \
65 20 6e 65 78 74 20 6d 75 73 74 20 62 65 20 32";

/// With the append time 2026-12-01T08:00:00Z (bytes 21..29 vary).
const FETCH_REPLY: &str = "\
00 00 00 46 93 05 00 84 a8 6d 65 73 73 61 67 65 73 91 93 00 cf 00 00 01 \
a2 30 9e 24 00 c4 01 41 ab 6e 65 78 74 5f 6f 66 66 73 65 74 01 af 65 61 \
72 6c 69 65 73 74 5f 6f 66 66 73 65 74 00 aa 65 6e 64 5f 6f 66 66 73 65 \
74 01";

/// Where FETCH_REPLY holds the message's append time.
const FETCH_TIME: std::ops::Range<usize> = 21..29;

#[test]
fn the_replay_examples_are_what_the_broker_sends() {
    let broker = start_broker();
    let mut pair = Pair::connect(broker.addr());
    play(&document(), &mut pair, REPLAY);
}
