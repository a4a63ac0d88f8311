//! Users and permissions (`--users`): who may connect, what each grant
//! allows, who owns a session, the limits before authentication, and the
//! reload on SIGHUP — against an in-process broker and the real binaries.

mod common;

use common::{BrokerProcess, DEADLINE, Raw, start_broker_with, temp_dir, users_file, wait_until};
use courier::auth::{self, file::parse_grant};
use courier::broker::AUTH_FAILURE_DELAY;
use courier::client::{Client, ClientOptions, PullOptions, UserToken};
use courier::protocol::{Credentials, ErrorCode, Reply, Request};
use courier::server::{Config, RunningServer};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

fn broker(path: PathBuf) -> RunningServer {
    start_broker_with(Config {
        users: Some(path),
        ..Config::default()
    })
}

fn login(addr: std::net::SocketAddr, user: &str, token: &str) -> courier::client::Result<Client> {
    Client::connect_with(
        addr,
        ClientOptions {
            name: format!("test-{user}"),
            credentials: Some(UserToken {
                user: user.to_owned(),
                token: token.to_owned(),
            }),
            ..ClientOptions::default()
        },
    )
}

fn code<T: std::fmt::Debug>(result: courier::client::Result<T>) -> Option<ErrorCode> {
    match result {
        Ok(_) => None,
        Err(e) => Some(
            e.code()
                .unwrap_or_else(|| panic!("not a server error: {e}")),
        ),
    }
}

/// HELLO on a raw connection; the error code if refused.
fn raw_hello(raw: &mut Raw, credentials: Option<Credentials<'_>>) -> Result<(), ErrorCode> {
    match raw.call(Request::Hello {
        version: courier::PROTOCOL_VERSION,
        client_name: "raw",
        credentials,
    }) {
        Ok(Reply::Hello(_)) => Ok(()),
        Ok(other) => panic!("unexpected {other:?}"),
        Err(e) => Err(e.code),
    }
}

#[test]
fn no_credentials_a_wrong_token_or_an_unknown_user_get_auth_failed_after_the_delay() {
    let path = users_file("refused", &[("alice", "right", &["publish:*"])]);
    let broker = broker(path);
    let cases: [Option<Credentials<'_>>; 3] = [
        None,
        Some(Credentials {
            user: "alice",
            token: "wrong",
        }),
        Some(Credentials {
            user: "mallory",
            token: "right",
        }),
    ];
    for credentials in cases {
        let mut raw = Raw::connect(broker.addr());
        let started = Instant::now();
        assert_eq!(raw_hello(&mut raw, credentials), Err(ErrorCode::AuthFailed));
        assert!(started.elapsed() >= AUTH_FAILURE_DELAY, "{credentials:?}");
        raw.expect_closed();
    }
    let mut raw = Raw::connect(broker.addr());
    let ok = Credentials {
        user: "alice",
        token: "right",
    };
    assert_eq!(raw_hello(&mut raw, Some(ok)), Ok(()));
    // The client library says the same.
    assert_eq!(
        code(login(broker.addr(), "alice", "wrong")),
        Some(ErrorCode::AuthFailed)
    );
    login(broker.addr(), "alice", "right").expect("alice logs in");
}

#[test]
fn a_refused_hello_does_not_hold_up_other_connections() {
    let path = users_file("no-stall", &[("alice", "a", &["publish:*", "admin:*"])]);
    let broker = broker(path);
    // Many refusals waiting out their delay at once.
    let mut waiting: Vec<Raw> = (0..20).map(|_| Raw::connect(broker.addr())).collect();
    for raw in &mut waiting {
        raw.send(Request::Hello {
            version: courier::PROTOCOL_VERSION,
            client_name: "bad",
            credentials: None,
        });
    }
    let mut alice = login(broker.addr(), "alice", "a").expect("login");
    alice.register_publisher().expect("publisher");
    alice.create_topic("t").expect("create");
    alice.send("t", b"x").expect("publish");
    for raw in &mut waiting {
        let (_, reply) = raw.recv(courier::protocol::Op::Hello);
        assert_eq!(reply.map_err(|e| e.code).err(), Some(ErrorCode::AuthFailed));
    }
}

#[test]
fn each_grant_allows_exactly_its_operations_on_its_patterns() {
    let path = users_file(
        "grants",
        &[
            ("admin", "a", &["admin:*"]),
            ("pub", "p", &["publish:p.*"]),
            ("sub", "s", &["subscribe:s.one"]),
        ],
    );
    let broker = broker(path);
    let addr = broker.addr();
    let forbidden = Some(ErrorCode::Forbidden);

    let mut admin = login(addr, "admin", "a").expect("admin");
    admin.register_publisher().expect("publisher");
    for topic in ["p.one", "s.one", "other"] {
        assert_eq!(code(admin.create_topic(topic)), None);
    }
    // Admin grants create and delete, not publish or subscribe.
    assert_eq!(code(admin.send("p.one", b"x")), forbidden);
    admin.register_subscriber().expect("session");
    assert_eq!(code(admin.subscribe("s.one")), forbidden);
    assert!(admin.stats().is_ok(), "any admin grant allows STATS");

    let mut publisher = login(addr, "pub", "p").expect("pub");
    publisher.register_publisher().expect("publisher");
    assert_eq!(code(publisher.send("p.one", b"m")), None);
    assert_eq!(code(publisher.send_batch("p.one", &[b"a", b"b"])), None);
    assert_eq!(code(publisher.send("s.one", b"m")), forbidden);
    assert_eq!(code(publisher.send("other", b"m")), forbidden);
    assert_eq!(code(publisher.create_topic("p.two")), forbidden);
    assert_eq!(code(publisher.delete_topic("p.one")), forbidden);
    assert_eq!(code(publisher.stats()), forbidden);
    // Listings show only what a grant covers.
    let names = |c: &mut Client| -> Vec<String> {
        let page = c.list_topics(None, 100).expect("list");
        page.topics.into_iter().map(|t| t.name).collect()
    };
    assert_eq!(names(&mut publisher), ["p.one"]);
    assert_eq!(code(publisher.topic_info("p.one")), None);
    assert_eq!(code(publisher.topic_info("other")), forbidden);
    assert_eq!(names(&mut admin), ["other", "p.one", "s.one"]);

    let mut subscriber = login(addr, "sub", "s").expect("sub");
    subscriber.register_subscriber().expect("session");
    assert_eq!(code(subscriber.subscribe("s.one")), None);
    assert_eq!(code(subscriber.subscribe("p.one")), forbidden);
    let pull = |topic: &str| PullOptions {
        topic: Some(topic.to_owned()),
        ..PullOptions::default()
    };
    assert_eq!(code(subscriber.pull(&pull("s.one"))), None);
    assert_eq!(code(subscriber.pull(&pull("p.one"))), forbidden);
    assert_eq!(code(subscriber.pull(&PullOptions::default())), None);
    assert_eq!(code(subscriber.ack("p.one", 0)), forbidden);
    subscriber
        .register_publisher()
        .expect("registering is open");
    assert_eq!(code(subscriber.send("s.one", b"m")), forbidden);
    assert_eq!(code(subscriber.create_topic("s.two")), forbidden);
    // A FORBIDDEN reply leaves the connection usable.
    assert_eq!(code(subscriber.pull(&pull("s.one"))), None);
}

#[test]
fn the_forbidden_message_names_the_operation_and_the_topic() {
    let path = users_file("message", &[("pub", "p", &["publish:mine"])]);
    let broker = broker(path);
    let mut publisher = login(broker.addr(), "pub", "p").expect("pub");
    publisher.register_publisher().expect("publisher");
    let e = publisher.send("theirs", b"m").expect_err("forbidden");
    assert_eq!(e.code(), Some(ErrorCode::Forbidden));
    let text = e.to_string();
    assert!(
        text.contains("PUBLISH") && text.contains("theirs"),
        "{text}"
    );
}

#[test]
fn a_second_user_can_neither_resume_nor_drain_the_first_users_session() {
    let path = users_file(
        "sessions",
        &[
            ("alice", "a", &["subscribe:*", "publish:*", "admin:*"]),
            ("bob", "b", &["subscribe:*"]),
        ],
    );
    let broker = broker(path);
    let addr = broker.addr();
    let mut alice = login(addr, "alice", "a").expect("alice");
    alice.register_publisher().expect("publisher");
    alice.create_topic("t").expect("topic");
    let mut reader = login(addr, "alice", "a").expect("alice");
    let id = reader.register_subscriber().expect("session");
    reader.subscribe("t").expect("subscribe");
    alice.send("t", b"secret").expect("publish");
    drop(reader);

    let mut bob = login(addr, "bob", "b").expect("bob");
    assert_eq!(
        code(bob.resume_subscriber(id)),
        Some(ErrorCode::UnknownSubscriber),
        "the same answer as for a session that does not exist"
    );
    assert_eq!(
        code(bob.resume_subscriber(id ^ 1)),
        Some(ErrorCode::UnknownSubscriber)
    );
    // Bob has no session, so nothing to drain.
    assert_eq!(
        code(bob.pull(&PullOptions::default())),
        Some(ErrorCode::NotRegistered)
    );
    // Alice's message is still there for her.
    let mut again = login(addr, "alice", "a").expect("alice");
    wait_until("the session to be free", || {
        again.resume_subscriber(id).is_ok()
    });
    let batch = again
        .pull(&PullOptions {
            wait: Duration::from_secs(5),
            ..PullOptions::default()
        })
        .expect("pull");
    let payloads: Vec<&[u8]> = batch.iter().map(|m| m.payload.as_ref()).collect();
    assert_eq!(payloads, [b"secret"]);
}

#[test]
fn a_sessions_owner_survives_a_restart() {
    let path = users_file(
        "durable-owner",
        &[
            ("alice", "a", &["subscribe:*", "admin:*"]),
            ("bob", "b", &["subscribe:*"]),
        ],
    );
    let dir = temp_dir("auth-durable-owner-data");
    let config = || Config {
        users: Some(path.clone()),
        storage: courier::Storage::Dir {
            path: dir.clone(),
            log: courier::storage::Config::default(),
        },
        ..Config::default()
    };
    let id = {
        let broker = start_broker_with(config());
        let mut alice = login(broker.addr(), "alice", "a").expect("alice");
        alice.register_publisher().expect("publisher");
        alice.create_topic("t").expect("topic");
        let id = alice.register_subscriber().expect("session");
        alice.subscribe("t").expect("subscribe");
        broker.stop().expect("stop");
        id
    };
    let broker = start_broker_with(config());
    let mut bob = login(broker.addr(), "bob", "b").expect("bob");
    assert_eq!(
        code(bob.resume_subscriber(id)),
        Some(ErrorCode::UnknownSubscriber)
    );
    let mut alice = login(broker.addr(), "alice", "a").expect("alice");
    let session = alice.resume_subscriber(id).expect("alice resumes");
    assert_eq!(session.topics, ["t"]);
}

#[test]
fn before_authentication_only_a_small_frame_is_read() {
    let path = users_file("pre-auth", &[("alice", "a", &["admin:*", "publish:*"])]);
    let broker = broker(path);
    // An unauthenticated flood: each announces a frame above the pre-auth
    // bound (far below the broker's frame limit) and is cut off at once.
    let announced = courier::server::PRE_AUTH_MAX_FRAME_BYTES as u32 + 1;
    let mut flood: Vec<Raw> = (0..50).map(|_| Raw::connect(broker.addr())).collect();
    for raw in &mut flood {
        raw.send_bytes(&announced.to_be_bytes());
        raw.send_bytes(&[0x94; 1024]);
    }
    for raw in &mut flood {
        let frames = raw.expect_closed();
        let codes: Vec<ErrorCode> = frames
            .iter()
            .filter_map(|f| courier::codec::decode_reply(courier::protocol::Op::Hello, f).ok())
            .filter_map(|(_, r)| r.err().map(|e| e.code))
            .collect();
        assert_eq!(codes, [ErrorCode::FrameTooLarge]);
    }
    // A request other than HELLO first is refused and closed as before.
    let mut raw = Raw::connect(broker.addr());
    assert_eq!(raw.error(Request::Stats), ErrorCode::HandshakeRequired);
    raw.expect_closed();
    // After HELLO, the broker's own limit applies again.
    let mut alice = login(broker.addr(), "alice", "a").expect("alice");
    alice.register_publisher().expect("publisher");
    alice.create_topic("big").expect("topic");
    alice
        .send("big", &vec![7u8; 64 * 1024])
        .expect("a large publish");
}

#[test]
fn without_users_the_broker_behaves_as_before() {
    let broker = common::start_broker();
    // Credentials are accepted and ignored.
    let mut client = login(broker.addr(), "anyone", "anything").expect("login");
    client.register_publisher().expect("publisher");
    client.create_topic("t").expect("create");
    client.delete_topic("t").expect("delete");
}

/// `courier user ...` on a file; its standard output.
fn courier_user(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_courier"))
        .arg("user")
        .args(args)
        .output()
        .expect("courier runs");
    assert!(
        output.status.success(),
        "courier user {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8")
}

fn sighup(broker: &BrokerProcess) {
    let status = Command::new("kill")
        .args(["-HUP", &broker.child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

#[test]
fn users_made_with_courier_user_log_in_and_a_removal_applies_on_sighup() {
    let dir = temp_dir("auth-cli");
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("users");
    let file_arg = file.to_str().expect("path");
    let token = courier_user(&[
        "add",
        "alice",
        "--users",
        file_arg,
        "--publish",
        "news.*",
        "--admin",
        "news.*",
    ]);
    let token = token.trim().to_owned();
    assert!(
        token.starts_with(auth::TOKEN_PREFIX) && token.len() > 40,
        "{token}"
    );
    let text = std::fs::read_to_string(&file).expect("file");
    assert!(!text.contains(&token), "the token itself is never stored");
    let bob_token = courier_user(&["add", "bob", "--users", file_arg, "--subscribe", "*"]);
    let listed = courier_user(&["list", "--users", file_arg]);
    assert!(
        listed.contains("alice  publish:news.* admin:news.*"),
        "{listed}"
    );
    assert!(listed.contains("bob  subscribe:*"), "{listed}");

    let broker = BrokerProcess::start(&["--users", file_arg]);
    // The publisher command, with the credentials from the environment
    // and from its flags.
    let addr = broker.addr.to_string();
    let run = |args: &[&str], env: bool| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_publisher"));
        command.args(["--broker", &addr]).args(args);
        if env {
            command
                .env("COURIER_USER", "alice")
                .env("COURIER_TOKEN", &token);
        }
        command.output().expect("publisher runs")
    };
    assert!(run(&["--create", "news.today"], true).status.success());
    let flags = [
        "--user",
        "alice",
        "--token",
        &token,
        "--publish",
        "news.today",
        "hello",
    ];
    assert!(run(&flags, false).status.success());
    let refused = run(&["--publish", "news.today", "hello"], false);
    assert_eq!(refused.status.code(), Some(1), "no credentials: refused");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("AUTH_FAILED"), "{stderr}");

    let mut alice = login(broker.addr, "alice", &token).expect("alice");
    alice.register_publisher().expect("publisher");
    let mut bob = login(broker.addr, "bob", bob_token.trim()).expect("bob");
    courier_user(&["remove", "alice", "--users", file_arg]);
    sighup(&broker);
    // The connected user is told and closed; a new login is refused.
    let started = Instant::now();
    let e = loop {
        match alice.send("news.today", b"x") {
            Err(e) => break e,
            Ok(_) => {
                assert!(started.elapsed() < DEADLINE, "the removal never applied");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    };
    assert_eq!(e.code(), Some(ErrorCode::AuthFailed), "{e}");
    assert_eq!(
        code(login(broker.addr, "alice", &token)),
        Some(ErrorCode::AuthFailed)
    );
    // Bob was not touched by the reload.
    bob.register_subscriber().expect("bob still works");
}

#[test]
fn a_lost_subscribe_grant_ends_the_subscription_at_the_reload() {
    let path = users_file(
        "lost-grant",
        &[
            ("alice", "a", &["admin:*", "publish:*"]),
            ("bob", "b", &["subscribe:*"]),
        ],
    );
    let broker = BrokerProcess::start(&["--users", path.to_str().expect("path")]);
    let mut alice = login(broker.addr, "alice", "a").expect("alice");
    alice.register_publisher().expect("publisher");
    alice.create_topic("news").expect("topic");
    let mut bob = login(broker.addr, "bob", "b").expect("bob");
    bob.register_subscriber().expect("session");
    bob.subscribe("news").expect("subscribe");
    // Bob keeps his token but now may read only "other".
    let mut users = auth::load(&path).expect("load");
    let mut changed = (**users.get("bob").expect("bob")).clone();
    changed.grants = vec![parse_grant("subscribe:other").expect("grant")];
    users.insert(changed);
    auth::save(&path, &users).expect("save");
    sighup(&broker);
    wait_until("the reload", || {
        code(bob.subscribe("news")) == Some(ErrorCode::Forbidden)
    });
    alice.send("news", b"after").expect("publish");
    let batch = bob
        .pull(&PullOptions {
            wait: Duration::from_millis(200),
            ..PullOptions::default()
        })
        .expect("pull of every topic");
    assert!(batch.is_empty(), "delivered after the grant was lost");
}

#[test]
fn refusals_are_logged_with_peer_and_user_but_never_the_token() {
    let path = users_file("log", &[("alice", "a", &["admin:*"])]);
    let mut command = Command::new(env!("CARGO_BIN_EXE_broker"));
    command
        .args([
            "--addr",
            "127.0.0.1:0",
            "--memory-only",
            "--log-level",
            "warn",
        ])
        .arg("--users")
        .arg(&path)
        .stderr(std::process::Stdio::piped());
    let mut broker = BrokerProcess::spawn(command);
    let guess = "ctk_not-the-token-but-a-guess";
    assert_eq!(
        code(login(broker.addr, "alice", guess)),
        Some(ErrorCode::AuthFailed)
    );
    let _ = broker.child.kill();
    let mut stderr = String::new();
    std::io::Read::read_to_string(
        &mut broker.child.stderr.take().expect("stderr"),
        &mut stderr,
    )
    .expect("read");
    let line = stderr
        .lines()
        .find(|l| l.contains("authentication refused"))
        .unwrap_or_else(|| panic!("no refusal logged: {stderr}"));
    assert!(
        line.contains("127.0.0.1") && line.contains("alice"),
        "{line}"
    );
    assert!(!stderr.contains(guess), "the token was logged: {stderr}");
}

#[test]
fn user_commands_need_a_users_file_and_valid_arguments() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_courier"))
            .args(args)
            .output()
            .expect("courier runs")
            .status
            .code()
    };
    assert_eq!(run(&["user", "add", "alice"]), Some(2), "no --users");
    let dir = temp_dir("auth-usage");
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("users");
    let file = file.to_str().expect("path");
    assert_eq!(run(&["user", "add", "bad/name", "--users", file]), Some(2));
    assert_eq!(
        run(&["user", "add", "alice", "--users", file, "--publish", "a*b"]),
        Some(2),
        "a pattern with '*' inside"
    );
    assert_eq!(run(&["user", "remove", "nobody", "--users", file]), Some(1));
    assert_eq!(run(&["topics", "--publish", "x"]), Some(2));
}

#[test]
fn the_broker_refuses_to_start_on_a_malformed_users_file() {
    let dir = temp_dir("auth-bad-file");
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("users");
    std::fs::write(&file, "alice not-a-hash\n").expect("write");
    let output = Command::new(env!("CARGO_BIN_EXE_broker"))
        .args(["--addr", "127.0.0.1:0", "--memory-only", "--users"])
        .arg(&file)
        .output()
        .expect("broker runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("line 1"), "{stderr}");
}
