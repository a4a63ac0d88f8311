//! The `publisher`, `subscriber` and `courier` binaries, run as processes against a
//! broker started in this process on 127.0.0.1:0.
//!
//! Every wait has a deadline; a running subscriber's output is read by a
//! thread and handed over line by line, so a test waits for exactly the lines
//! it needs. Error messages are checked for short stable fragments only.

mod common;

use common::{DEADLINE, limits, start_broker, start_broker_with, wait_until};
use courier::client::Client;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

fn command(program: &str, broker: SocketAddr) -> Command {
    let mut command = Command::new(program);
    command
        .env_remove("BROKER_ADDR")
        .arg("--broker")
        .arg(broker.to_string());
    command
}

fn publisher(broker: SocketAddr, args: &[&str]) -> Output {
    run(command(env!("CARGO_BIN_EXE_publisher"), broker).args(args))
}

fn subscriber_run(broker: SocketAddr, args: &[&str]) -> Output {
    run(command(env!("CARGO_BIN_EXE_subscriber"), broker).args(args))
}

/// Runs to completion, with nothing on standard input.
fn run(command: &mut Command) -> Output {
    command
        .stdin(Stdio::null())
        .output()
        .expect("run the command")
}

/// `publisher --publish TOPIC` with `input` on standard input.
fn publish_stdin(broker: SocketAddr, topic: &str, input: &[u8]) -> Output {
    publisher_with_stdin(broker, &["--publish", topic], input)
}

/// `publisher ARGS` with `input` on standard input.
fn publisher_with_stdin(broker: SocketAddr, args: &[&str], input: &[u8]) -> Output {
    let mut child = command(env!("CARGO_BIN_EXE_publisher"), broker)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn publisher");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let output = child.wait_with_output().expect("publisher output");
    writer.join().expect("writer").expect("write stdin");
    output
}

fn lines(n: u32) -> String {
    (1..=n).map(|i| format!("{i}\n")).collect()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts a successful run and returns its standard output.
fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "exit {:?}, stderr: {}",
        output.status.code(),
        stderr(&output)
    );
    stdout(&output)
}

/// Asserts exit status `code` and that stderr mentions `fragment` — once,
/// on the first line, with no panic.
fn fails(output: Output, code: i32, fragment: &str) {
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(code), "stderr: {err}");
    assert!(
        err.lines().next().unwrap_or("").contains(fragment),
        "expected '{fragment}' in: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

/// A `subscriber` process whose standard output is read as it comes.
struct Subscriber {
    child: Child,
    lines: Receiver<String>,
    /// Its standard error after the id line.
    errors: Receiver<String>,
    id: u64,
}

impl Subscriber {
    /// Starts it and waits until it has subscribed (it prints its id on
    /// standard error once subscribed).
    fn start(broker: SocketAddr, args: &[&str]) -> Subscriber {
        let (mut child, id, errors) = spawn_subscriber_with_errors(broker, args);
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Subscriber {
            child,
            lines,
            errors,
            id,
        }
    }

    /// The next line it prints on standard error.
    fn next_error(&self) -> String {
        self.errors
            .recv_timeout(DEADLINE)
            .expect("a line on the subscriber's stderr")
    }

    /// The next `n` lines it prints.
    fn take(&self, n: usize) -> Vec<String> {
        let deadline = Instant::now() + DEADLINE;
        let mut got = Vec::with_capacity(n);
        while got.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => got.push(line),
                Err(e) => panic!("{e}: got {} of {n} lines", got.len()),
            }
        }
        got
    }

    /// Waits for it to exit; returns its status code and remaining lines.
    fn wait(mut self) -> (Option<i32>, Vec<String>) {
        let mut status = None;
        wait_until("the subscriber to exit", || {
            status = self.child.try_wait().expect("try_wait");
            status.is_some()
        });
        let rest = self.lines.iter().collect();
        (status.and_then(|s| s.code()), rest)
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawns a subscriber with piped output; returns it once it has printed its
/// id (which it does after subscribing).
fn spawn_subscriber(broker: SocketAddr, args: &[&str]) -> (Child, u64) {
    let (child, id, _) = spawn_subscriber_with_errors(broker, args);
    (child, id)
}

/// As [`spawn_subscriber`], with the rest of its standard error.
fn spawn_subscriber_with_errors(
    broker: SocketAddr,
    args: &[&str],
) -> (Child, u64, Receiver<String>) {
    let mut child = command(env!("CARGO_BIN_EXE_subscriber"), broker)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn subscriber");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            let _ = tx.send(line);
        }
    });
    let first = rx.recv_timeout(DEADLINE).expect("the subscriber's id line");
    let id = first
        .strip_prefix("subscriber id ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no id in: {first}"));
    (child, id, rx)
}

fn numbers(lines: &[String]) -> Vec<u32> {
    lines
        .iter()
        .map(|l| l.parse().unwrap_or_else(|_| panic!("not a number: {l}")))
        .collect()
}

#[test]
fn the_walk_through() {
    let broker = start_broker();
    let addr = broker.addr();
    assert_eq!(
        ok(publisher(addr, &["--create", "my_topic"])),
        "created topic my_topic\n"
    );
    let subscriber = Subscriber::start(addr, &["--subscribe", "my_topic"]);
    assert_eq!(
        ok(publisher(addr, &["--publish", "my_topic", "Hello, world!"])),
        "published to my_topic (offset 0, 1 subscriber)\n"
    );
    assert_eq!(subscriber.take(1), ["Hello, world!"]);
    assert_eq!(
        ok(publisher(addr, &["--delete", "my_topic"])),
        "deleted topic my_topic\n"
    );
}

#[test]
fn lines_from_standard_input_arrive_in_order() {
    let broker = start_broker();
    ok(publisher(broker.addr(), &["--create", "t"]));
    let subscriber = Subscriber::start(broker.addr(), &["--subscribe", "t", "--count", "10000"]);
    let output = publish_stdin(broker.addr(), "t", lines(10_000).as_bytes());
    let summary = ok(output);
    assert!(
        summary.starts_with("published 10000 messages to t in "),
        "{summary}"
    );
    assert_eq!(summary.lines().count(), 1);
    let got = numbers(&subscriber.take(10_000));
    assert_eq!(got, (1..=10_000).collect::<Vec<_>>());
    let (code, rest) = subscriber.wait();
    assert_eq!((code, rest.len()), (Some(0), 0));
}

#[test]
fn every_subscriber_gets_every_message() {
    let broker = start_broker();
    ok(publisher(broker.addr(), &["--create", "t"]));
    let first = Subscriber::start(broker.addr(), &["--subscribe", "t", "--count", "1000"]);
    let second = Subscriber::start(broker.addr(), &["--subscribe", "t", "--count", "1000"]);
    ok(publish_stdin(broker.addr(), "t", lines(1000).as_bytes()));
    let expected: Vec<u32> = (1..=1000).collect();
    assert_eq!(numbers(&first.take(1000)), expected);
    assert_eq!(numbers(&second.take(1000)), expected);
}

#[test]
fn empty_lines_and_a_last_line_without_newline_are_messages() {
    let broker = start_broker();
    ok(publisher(broker.addr(), &["--create", "t"]));
    let subscriber = Subscriber::start(broker.addr(), &["--subscribe", "t", "-v"]);
    let summary = ok(publish_stdin(broker.addr(), "t", b"a\n\nlast"));
    assert!(summary.starts_with("published 3 messages"), "{summary}");
    assert_eq!(subscriber.take(3), ["t 0 a", "t 1 ", "t 2 last"]);
}

#[test]
fn count_exits_after_exactly_that_many_and_acknowledges_only_those() {
    let broker = start_broker();
    ok(publisher(broker.addr(), &["--create", "t"]));
    let subscriber = Subscriber::start(
        broker.addr(),
        &["--subscribe", "t", "--count", "3", "--keep"],
    );
    let id = subscriber.id.to_string();
    ok(publish_stdin(broker.addr(), "t", lines(5).as_bytes()));
    let (code, printed) = subscriber.wait();
    assert_eq!(
        (code, printed),
        (Some(0), vec!["1".into(), "2".into(), "3".into()])
    );
    // Resumed, it continues exactly after what was printed.
    let resumed = ok(subscriber_run(
        broker.addr(),
        &["--id", &id, "--count", "2"],
    ));
    assert_eq!(resumed, "4\n5\n");
}

/// The broker's subscriber count and retained messages.
fn sessions_and_backlog(stats: &mut Client) -> (u64, u64) {
    let stats = stats.stats().expect("stats");
    (stats.subscribers, stats.backlog_messages)
}

#[test]
fn a_subscriber_ends_its_session_on_exit_unless_kept() {
    let broker = start_broker();
    let mut stats = Client::connect(broker.addr()).expect("connect");
    ok(publisher(broker.addr(), &["--create", "t"]));
    // Ended after --count: what it did not read is released.
    let subscriber = Subscriber::start(broker.addr(), &["--subscribe", "t", "--count", "1"]);
    ok(publish_stdin(broker.addr(), "t", lines(3).as_bytes()));
    assert_eq!(subscriber.wait(), (Some(0), vec!["1".to_string()]));
    assert_eq!(sessions_and_backlog(&mut stats), (0, 0));
    // Ended after --timeout too.
    ok(subscriber_run(
        broker.addr(),
        &["--subscribe", "t", "--timeout", "0.1"],
    ));
    assert_eq!(sessions_and_backlog(&mut stats), (0, 0));

    // Kept: it and its backlog stay, and it resumes with --id.
    let kept = Subscriber::start(
        broker.addr(),
        &["--subscribe", "t", "--count", "1", "--keep"],
    );
    let id = kept.id.to_string();
    ok(publish_stdin(broker.addr(), "t", lines(3).as_bytes()));
    assert_eq!(kept.wait(), (Some(0), vec!["1".to_string()]));
    assert_eq!(sessions_and_backlog(&mut stats), (1, 2));
    // Resumed with --id, it is kept again.
    let resumed = ok(subscriber_run(
        broker.addr(),
        &["--id", &id, "--count", "1"],
    ));
    assert_eq!(resumed, "2\n");
    assert_eq!(sessions_and_backlog(&mut stats), (1, 1));
}

#[test]
fn ctrl_c_ends_the_session_and_exits_130() {
    let broker = start_broker();
    let mut stats = Client::connect(broker.addr()).expect("connect");
    ok(publisher(broker.addr(), &["--create", "t"]));
    let subscriber = Subscriber::start(broker.addr(), &["--subscribe", "t"]);
    ok(publish_stdin(broker.addr(), "t", lines(2).as_bytes()));
    assert_eq!(subscriber.take(2), ["1", "2"]);
    // Its session is there until SIGINT (the pull it waits in acknowledged
    // the two lines, so nothing is retained once that pull arrived).
    wait_until("the subscriber's acknowledging pull", || {
        sessions_and_backlog(&mut stats) == (1, 0)
    });
    let id = subscriber.child.id().to_string();
    let sent = Command::new("kill")
        .args(["-INT", &id])
        .status()
        .expect("run kill");
    assert!(sent.success());
    let (code, rest) = subscriber.wait();
    assert_eq!((code, rest.len()), (Some(130), 0));
    assert_eq!(sessions_and_backlog(&mut stats), (0, 0));
}

#[test]
fn timeout_exits_when_nothing_arrives() {
    let broker = start_broker();
    ok(publisher(broker.addr(), &["--create", "t"]));
    let started = Instant::now();
    let output = subscriber_run(broker.addr(), &["--subscribe", "t", "--timeout", "0.3"]);
    assert_eq!(ok(output), "");
    assert!(started.elapsed() < DEADLINE);
}

#[test]
fn a_killed_subscriber_resumes_where_it_stopped() {
    const TOTAL: u32 = 50_000;
    let broker = start_broker();
    let mut stats = Client::connect(broker.addr()).expect("connect");
    ok(publisher(broker.addr(), &["--create", "t"]));
    // Nobody reads its output until it is killed: once the pipe is full it
    // stops in the middle of printing a batch it has pulled.
    let (mut child, id) = spawn_subscriber(broker.addr(), &["--subscribe", "t"]);
    ok(publish_stdin(broker.addr(), "t", lines(TOTAL).as_bytes()));
    wait_until("the subscriber to be part way through", || {
        stats.stats().expect("stats").messages_out >= 5_000
    });
    child.kill().expect("kill");
    child.wait().expect("reap");
    let mut printed = String::new();
    let mut out: ChildStdout = child.stdout.take().expect("stdout");
    out.read_to_string(&mut printed).expect("read output");
    // A line cut by the kill does not count as printed.
    let complete = &printed[..printed.rfind('\n').map_or(0, |end| end + 1)];
    let first_run = numbers(&complete.lines().map(String::from).collect::<Vec<_>>());
    assert_eq!(first_run, (1..=first_run.len() as u32).collect::<Vec<_>>());
    let stopped_at = first_run.len() as u32;
    assert!(stopped_at < TOTAL, "the kill was not mid-stream");

    let resumed = ok(subscriber_run(
        broker.addr(),
        &["--id", &id.to_string(), "--timeout", "1"],
    ));
    let second_run = numbers(&resumed.lines().map(String::from).collect::<Vec<_>>());
    let start = *second_run.first().expect("the resumed run printed");
    assert!(
        start <= stopped_at + 1,
        "resumed at {start}, stopped at {stopped_at}"
    );
    assert_eq!(second_run, (start..=TOTAL).collect::<Vec<_>>());
}

#[test]
fn a_full_topic_paces_the_publisher_and_keeps_input_order() {
    let broker = start_broker_with(limits(|l| l.max_backlog_messages = 100));
    ok(publisher(broker.addr(), &["--create", "t"]));
    let subscriber = Subscriber::start(broker.addr(), &["--subscribe", "t", "--count", "2000"]);
    let summary = ok(publish_stdin(broker.addr(), "t", lines(2000).as_bytes()));
    assert!(summary.starts_with("published 2000 messages"), "{summary}");
    // Held, not refused: every line once, in input order.
    assert_eq!(
        numbers(&subscriber.take(2000)),
        (1..=2000).collect::<Vec<_>>()
    );
    let mut client = Client::connect(broker.addr()).expect("connect");
    let stats = client.stats().expect("stats");
    assert_eq!(stats.errors.get("TOPIC_FULL"), None);
    assert!(stats.publishes_held > 0, "the topic never filled up");
}

#[test]
fn a_topic_that_stays_full_past_the_hold_is_an_error() {
    let broker = start_broker_with(limits(|l| {
        l.max_backlog_messages = 10;
        l.publish_hold = Duration::from_millis(100);
    }));
    ok(publisher(broker.addr(), &["--create", "t"]));
    // Subscribed, but nobody pulls: the topic fills at 10 and stays full.
    let mut holder = Client::connect(broker.addr()).expect("connect");
    holder.register_subscriber().expect("register");
    holder.subscribe("t").expect("subscribe");
    let output = publish_stdin(broker.addr(), "t", lines(100).as_bytes());
    fails(output, 1, "TOPIC_FULL");
    let mut client = Client::connect(broker.addr()).expect("connect");
    let stats = client.stats().expect("stats");
    assert!(stats.publishes_held > 0);
    assert!(stats.errors.get("TOPIC_FULL").is_some_and(|&n| n > 0));
}

#[test]
fn json_output_escapes_text_and_encodes_binary() {
    let broker = start_broker();
    ok(publisher(broker.addr(), &["--create", "t"]));
    let subscriber = Subscriber::start(broker.addr(), &["--subscribe", "t", "--json"]);
    ok(publish_stdin(
        broker.addr(),
        "t",
        b"say \"hi\"\\\t\n\xff\xfe\n",
    ));
    assert_eq!(
        subscriber.take(2),
        [
            r#"{"topic":"t","offset":0,"payload":"say \"hi\"\\\t"}"#,
            r#"{"topic":"t","offset":1,"payload_base64":"//4="}"#,
        ]
    );
}

#[test]
fn a_message_after_double_dash_may_start_with_a_dash() {
    let broker = start_broker();
    ok(publisher(broker.addr(), &["--create", "t"]));
    let subscriber = Subscriber::start(broker.addr(), &["--subscribe", "t"]);
    ok(publisher(broker.addr(), &["--publish", "t", "--", "-42"]));
    assert_eq!(subscriber.take(1), ["-42"]);
}

#[test]
fn the_broker_address_comes_from_the_environment_when_no_flag_is_given() {
    let broker = start_broker();
    let output = Command::new(env!("CARGO_BIN_EXE_publisher"))
        .env("BROKER_ADDR", broker.addr().to_string())
        .args(["--create", "from_env"])
        .output()
        .expect("run");
    assert_eq!(ok(output), "created topic from_env\n");
    // The flag wins over the environment.
    let output = command(env!("CARGO_BIN_EXE_publisher"), broker.addr())
        .env("BROKER_ADDR", "127.0.0.1:1")
        .args(["--create", "from_flag"])
        .output()
        .expect("run");
    assert_eq!(ok(output), "created topic from_flag\n");
}

#[test]
fn runtime_errors_exit_1_with_one_line() {
    let broker = start_broker();
    let addr = broker.addr();
    ok(publisher(addr, &["--create", "t"]));
    fails(
        publisher(addr, &["--create", "t"]),
        1,
        "topic 't' already exists",
    );
    fails(
        publisher(addr, &["--publish", "x", "m"]),
        1,
        "unknown topic 'x'",
    );
    fails(publisher(addr, &["--delete", "x"]), 1, "unknown topic 'x'");
    fails(
        publisher(addr, &["--create", "a b"]),
        1,
        "invalid topic name",
    );
    fails(publish_stdin(addr, "x", b"1\n2\n"), 1, "unknown topic 'x'");
    fails(
        subscriber_run(addr, &["--subscribe", "x"]),
        1,
        "unknown topic 'x'",
    );
    fails(
        subscriber_run(addr, &["--id", "12345"]),
        1,
        "unknown subscriber",
    );

    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    };
    let refused = format!("cannot connect to broker at {closed}");
    fails(publisher(closed, &["--create", "t"]), 1, &refused);
    fails(subscriber_run(closed, &["--subscribe", "t"]), 1, &refused);
    let hint = format!("is the broker running at {closed}?");
    fails(publisher(closed, &["--create", "t"]), 1, &hint);
    fails(subscriber_run(closed, &["--subscribe", "t"]), 1, &hint);
}

#[test]
fn bad_arguments_exit_2_with_the_usage_line() {
    let broker = start_broker();
    let addr = broker.addr();
    let usage = |output: Output, fragment: &str| {
        assert!(stderr(&output).contains("usage: "), "{}", stderr(&output));
        fails(output, 2, fragment);
    };
    usage(publisher(addr, &["--frob"]), "unknown flag '--frob'");
    usage(publisher(addr, &[]), "nothing to do");
    usage(
        publisher(addr, &["--create", "a", "--delete", "b"]),
        "only one",
    );
    usage(
        publisher(addr, &["--create", "a", "extra"]),
        "unexpected argument",
    );
    usage(
        publisher(addr, &["--publish", "t", "two", "words"]),
        "unexpected argument",
    );
    usage(publisher(addr, &["--create"]), "--create");
    usage(subscriber_run(addr, &[]), "nothing to read");
    usage(
        subscriber_run(addr, &["--subscribe", "t", "--count", "many"]),
        "many",
    );
    usage(
        subscriber_run(addr, &["--subscribe", "t", "--timeout", "-1"]),
        "-1",
    );
    usage(
        subscriber_run(addr, &["--subscribe", "t", "-v", "--json"]),
        "only one",
    );
    usage(
        subscriber_run(addr, &["--subscribe", "t", "--frob"]),
        "unknown flag",
    );
}

#[test]
fn help_and_version() {
    let broker = start_broker();
    for (program, flags) in [
        (
            env!("CARGO_BIN_EXE_publisher"),
            &[
                "--broker",
                "--create",
                "--delete",
                "--publish",
                "--file",
                "--help",
                "--version",
            ][..],
        ),
        (
            env!("CARGO_BIN_EXE_subscriber"),
            &[
                "--broker",
                "--subscribe",
                "--id",
                "--count",
                "--timeout",
                "-v",
                "--json",
                "--raw",
                "-0",
                "--keep",
            ][..],
        ),
        (
            env!("CARGO_BIN_EXE_courier"),
            &[
                "--broker",
                "--json",
                "topics",
                "topic NAME",
                "stats",
                "--help",
                "--version",
            ][..],
        ),
    ] {
        let help = ok(run(command(program, broker.addr()).arg("--help")));
        assert!(help.contains("usage: "));
        for flag in flags {
            assert!(
                help.contains(flag),
                "{program} --help does not explain {flag}"
            );
        }
        let version = ok(run(command(program, broker.addr()).arg("--version")));
        assert!(version.ends_with(&format!(" {}\n", env!("CARGO_PKG_VERSION"))));
    }
}

/// The pulls `subscriber` keeps in flight (and the broker keeps waiting).
const SUBSCRIBER_PULLS: u64 = 4;

/// Waits until the broker holds `n` parked pulls: a subscriber waiting
/// inside the broker learns of a deletion at once.
fn wait_for_waiting_pulls(broker: SocketAddr, n: u64) {
    let mut stats = Client::connect(broker).expect("connect");
    wait_until("the subscriber's pull to wait", || {
        stats.stats().expect("stats").waiting_pulls == n
    });
}

#[test]
fn a_deleted_topic_ends_only_its_own_subscription() {
    let broker = start_broker();
    let addr = broker.addr();
    ok(publisher(addr, &["--create", "a1"]));
    ok(publisher(addr, &["--create", "a2"]));
    let subscriber = Subscriber::start(addr, &["--subscribe", "a1", "--subscribe", "a2"]);
    wait_for_waiting_pulls(addr, SUBSCRIBER_PULLS);
    ok(publisher(addr, &["--delete", "a2"]));
    let note = subscriber.next_error();
    assert!(note.contains("'a2'") && note.contains("deleted"), "{note}");
    ok(publisher(addr, &["--publish", "a1", "after"]));
    assert_eq!(subscriber.take(1), ["after"]);
    // The last topic gone, nothing is left to read: exit status 3.
    wait_for_waiting_pulls(addr, SUBSCRIBER_PULLS);
    ok(publisher(addr, &["--delete", "a1"]));
    assert!(subscriber.next_error().contains("'a1'"));
    let last = subscriber.next_error();
    assert!(last.contains("nothing left to read"), "{last}");
    let (code, rest) = subscriber.wait();
    assert_eq!((code, rest.len()), (Some(3), 0));
}

/// Starts a subscriber, runs `publish`, and returns everything the
/// subscriber printed once it exits after `count` messages.
fn received(broker: SocketAddr, format: &str, count: &str, publish: impl FnOnce()) -> Vec<u8> {
    let (child, _) = spawn_subscriber(broker, &["--subscribe", "t", format, "--count", count]);
    publish();
    let output = child.wait_with_output().expect("subscriber output");
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    output.stdout
}

#[test]
fn a_file_is_one_message_byte_for_byte() {
    let broker = start_broker();
    let addr = broker.addr();
    ok(publisher(addr, &["--create", "t"]));
    // Every byte value, newlines and NULs included, twice over.
    let bytes: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
    let path = std::env::temp_dir().join(format!("courier-cli-file-{}", std::process::id()));
    std::fs::write(&path, &bytes).expect("write the file");
    let path_text = path.to_string_lossy().into_owned();
    let got = received(addr, "--raw", "1", || {
        let summary = ok(publisher(addr, &["--publish", "t", "--file", &path_text]));
        assert_eq!(
            summary,
            "published 512 bytes to t (offset 0, 1 subscriber)\n"
        );
    });
    let _ = std::fs::remove_file(&path);
    assert_eq!(got, bytes);
}

#[test]
fn file_dash_is_all_of_standard_input_as_one_message() {
    let broker = start_broker();
    let addr = broker.addr();
    ok(publisher(addr, &["--create", "t"]));
    let input = b"two\nlines\0and a NUL\n";
    let got = received(addr, "-0", "1", || {
        let output = publisher_with_stdin(addr, &["--publish", "t", "--file", "-"], input);
        assert!(ok(output).starts_with("published 20 bytes to t"));
    });
    let mut expected = input.to_vec();
    expected.push(0);
    assert_eq!(got, expected);
}

#[test]
fn raw_adds_nothing_and_null_adds_a_nul() {
    let broker = start_broker();
    let addr = broker.addr();
    ok(publisher(addr, &["--create", "t"]));
    let got = received(addr, "--raw", "3", || {
        ok(publish_stdin(addr, "t", b"a\n\nbc\n"));
    });
    assert_eq!(got, b"abc");
    let got = received(addr, "-0", "3", || {
        ok(publish_stdin(addr, "t", b"a\n\nbc\n"));
    });
    assert_eq!(got, b"a\0\0bc\0");
    let got = received(addr, "--null", "1", || {
        ok(publisher(addr, &["--publish", "t", "plain"]));
    });
    assert_eq!(got, b"plain\0");
}

#[test]
fn empty_standard_input_publishes_nothing_and_says_so() {
    let broker = start_broker();
    let addr = broker.addr();
    ok(publisher(addr, &["--create", "t"]));
    let output = publish_stdin(addr, "t", b"");
    assert!(output.stdout.is_empty());
    fails(output, 3, "no messages on stdin; nothing published");
    let mut client = Client::connect(addr).expect("connect");
    assert_eq!(client.stats().expect("stats").messages_in, 0);
    // An empty file is still one (empty) message: it was asked for.
    let output = publisher_with_stdin(addr, &["--publish", "t", "--file", "-"], b"");
    assert!(ok(output).starts_with("published 0 bytes to t"));
}

#[test]
fn file_mistakes_are_named() {
    let broker = start_broker();
    let addr = broker.addr();
    ok(publisher(addr, &["--create", "t"]));
    let missing = std::env::temp_dir().join(format!("courier-no-such-{}", std::process::id()));
    let missing = missing.to_string_lossy().into_owned();
    fails(
        publisher(addr, &["--publish", "t", "--file", &missing]),
        1,
        &format!("cannot read '{missing}'"),
    );
    fails(
        publisher(addr, &["--publish", "t", "m", "--file", "-"]),
        2,
        "not both",
    );
    fails(
        publisher(addr, &["--create", "u", "--file", "-"]),
        2,
        "--file needs --publish",
    );
    // Over the payload limit: refused before anything is sent.
    let limit = Client::connect(addr)
        .expect("connect")
        .server_info()
        .max_payload_bytes;
    let big = vec![b'x'; usize::try_from(limit).expect("limit") + 1];
    fails(
        publisher_with_stdin(addr, &["--publish", "t", "--file", "-"], &big),
        1,
        "over the broker's limit",
    );
}

#[test]
fn parse_errors_name_the_flag() {
    let broker = start_broker();
    let addr = broker.addr();
    for (args, fragment) in [
        (
            &["--subscribe", "t", "--count", "abc"][..],
            "--count: 'abc' is not a number",
        ),
        (
            &["--subscribe", "t", "--count", "0"],
            "--count: 0 is out of range (1 to ",
        ),
        (
            &["--subscribe", "t", "--timeout", "soon"],
            "--timeout: 'soon' is not a number",
        ),
        (&["--id", "x1"], "--id: 'x1' is not a number"),
        (&["--subscribe", "t", "--raw", "-0"], "only one"),
    ] {
        fails(subscriber_run(addr, args), 2, fragment);
    }
    fails(
        publisher(addr, &["--broker", "", "--create", "t"]),
        2,
        "--broker",
    );
}

#[test]
fn the_broker_names_the_flag_and_its_range() {
    let broker = |args: &[&str]| run(Command::new(env!("CARGO_BIN_EXE_broker")).args(args));
    fails(
        broker(&["--max-backlog-bytes", "1K"]),
        2,
        "--max-backlog-bytes 1K: must be at least --max-frame-bytes",
    );
    fails(
        broker(&["--max-topics", "abc"]),
        2,
        "--max-topics: 'abc' is not a whole number",
    );
    fails(
        broker(&["--max-topics", "0"]),
        2,
        "--max-topics: 0 is out of range (1 to ",
    );
    fails(
        broker(&["--frame-timeout", "-1"]),
        2,
        "--frame-timeout: -1 is out of range",
    );
    // The rule the first error enforces is in the help.
    let help = ok(broker(&["--help"]));
    assert!(
        help.contains("must be at least --max-frame-bytes"),
        "{help}"
    );
}

#[test]
fn every_help_states_the_range_of_its_numeric_flags() {
    let help = |program: &str, args: &[&str]| ok(run(Command::new(program).args(args)));
    let broker = help(env!("CARGO_BIN_EXE_broker"), &["--help"]);
    for flag in [
        "--max-connections",
        "--max-frame-bytes",
        "--max-backlog-bytes",
        "--max-backlog-messages",
        "--max-topics",
        "--max-subscribers-per-topic",
        "--max-output-bytes",
        "--session-timeout",
        "--handshake-timeout",
        "--frame-timeout",
        "--shutdown-grace",
    ] {
        // The flag's entry runs from its name to the next flag.
        let at = broker.find(&format!("  {flag} ")).expect(flag);
        let entry = &broker[at..];
        let end = entry[2..].find("\n  --").map_or(entry.len(), |e| e + 2);
        assert!(
            entry[..end].contains(" to "),
            "no range for {flag}: {}",
            &entry[..end]
        );
    }
    let subscriber = help(env!("CARGO_BIN_EXE_subscriber"), &["--help"]);
    assert!(subscriber.contains("(1 to\n                      18446744073709551615)"));
    assert!(subscriber.contains("(0.001 to 31536000"));
    for (scenario, ranges) in [
        (
            "send",
            &[
                "1 to 1024",
                "1 to 4096",
                "1 to 65536",
                "20 (the bench header) to 64MiB",
            ][..],
        ),
        ("fanout", &["1 to 10000"]),
        ("latency", &["1 to 10^8"]),
        ("create-topic", &["1 to 1024", "0 to 600"]),
        ("idle", &["1 to 1000000", "0 to 3600"]),
        ("retained", &["1 to 10^12"]),
    ] {
        let text = help(env!("CARGO_BIN_EXE_bench"), &[scenario, "--help"]);
        for range in ranges {
            assert!(
                text.contains(range),
                "bench {scenario} --help: no '{range}'"
            );
        }
    }
}

fn courier(broker: SocketAddr, args: &[&str]) -> Output {
    run(command(env!("CARGO_BIN_EXE_courier"), broker).args(args))
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn courier_shows_topics_one_topic_and_stats() {
    let broker = start_broker();
    let addr = broker.addr();
    assert_eq!(ok(courier(addr, &["topics"])), "no topics\n");
    assert_eq!(json(&ok(courier(addr, &["topics", "--json"]))), json("[]"));
    ok(publisher(addr, &["--create", "orders.eu"]));
    ok(publisher(addr, &["--create", "b"]));
    let _reader = Subscriber::start(addr, &["--subscribe", "b", "--count", "100"]);
    ok(publisher(
        addr,
        &["--publish", "orders.eu", "nobody reads this"],
    ));
    let mut stats = Client::connect(addr).expect("connect");
    // The reader acknowledges "hello" with the pull after it: wait for that,
    // so that the figures below are settled.
    ok(publisher(addr, &["--publish", "b", "hello"]));
    wait_until("the subscriber to acknowledge", || {
        stats.stats().expect("stats").backlog_messages == 0
    });
    assert_eq!(
        ok(courier(addr, &["topics"])),
        "\
TOPIC      NEXT OFFSET  BACKLOG MSGS  BACKLOG BYTES  SUBSCRIBERS
b                    1             0              0            1
orders.eu            1             0              0            0
"
    );
    assert_eq!(
        json(&ok(courier(addr, &["--json", "topics"]))),
        json(
            r#"[{"name":"b","next_offset":1,"backlog_messages":0,"backlog_bytes":0,"subscribers":1},
               {"name":"orders.eu","next_offset":1,"backlog_messages":0,"backlog_bytes":0,"subscribers":0}]"#
        )
    );
    let one = ok(courier(addr, &["topic", "b"]));
    assert!(one.starts_with("topic             b\n"), "{one}");
    assert!(one.contains("subscribers       1\n"), "{one}");
    assert_eq!(
        json(&ok(courier(addr, &["topic", "orders.eu", "--json"])))["next_offset"],
        1
    );
    let readable = ok(courier(addr, &["stats"]));
    assert!(readable.contains("\ntopics           2\n"), "{readable}");
    assert!(readable.contains("\nmemory by class  "), "{readable}");
    let stats = json(&ok(courier(addr, &["stats", "--json"])));
    assert_eq!(
        (&stats["topics"], &stats["subscribers"]),
        (&json("2"), &json("1"))
    );
}

#[test]
fn courier_topics_follows_every_page() {
    let broker = start_broker();
    let mut admin = Client::connect(broker.addr()).expect("connect");
    admin.register_publisher().expect("publisher");
    let names: BTreeSet<String> = (0..1234).map(|i| format!("t{i}")).collect();
    let mut pipeline = admin.pipeline(64);
    for name in &names {
        pipeline.create_topic(name).expect("create");
    }
    assert!(pipeline.finish().iter().all(|c| c.is_ok()));
    let listed = json(&ok(courier(broker.addr(), &["topics", "--json"])));
    let listed: Vec<&str> = listed
        .as_array()
        .expect("an array")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(listed, names.iter().map(String::as_str).collect::<Vec<_>>());
    let table = ok(courier(broker.addr(), &["topics"]));
    assert_eq!(table.lines().count(), 1 + names.len());
}

#[test]
fn courier_errors_are_one_line() {
    let broker = start_broker();
    let addr = broker.addr();
    fails(courier(addr, &["topic", "nope"]), 1, "unknown topic 'nope'");
    fails(courier(addr, &["topic", "no way"]), 1, "invalid topic name");
    fails(courier(addr, &[]), 2, "give a command");
    fails(courier(addr, &["frob"]), 2, "unknown command 'frob'");
    fails(courier(addr, &["topic"]), 2, "NAME");
    fails(courier(addr, &["stats", "extra"]), 2, "unexpected argument");
    fails(courier(addr, &["stats", "--frob"]), 2, "unknown flag");
    // BROKER_ADDR names the broker when --broker is absent.
    let mut from_env = Command::new(env!("CARGO_BIN_EXE_courier"));
    from_env.env("BROKER_ADDR", addr.to_string()).arg("stats");
    assert!(ok(run(&mut from_env)).contains("uptime"));
    // Nobody listening.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let closed_addr = closed.local_addr().expect("addr");
    drop(closed);
    fails(courier(closed_addr, &["stats"]), 1, "is the broker running");
}

/// A durable broker on a fixed loopback port (`--addr`), so that it can be
/// started again where its clients left it.
fn durable_broker(dir: &std::path::Path, addr: &str) -> common::BrokerProcess {
    let mut command = Command::new(env!("CARGO_BIN_EXE_broker"));
    command
        .args(["--addr", addr, "--log-level", "off", "--data-dir"])
        .arg(dir);
    common::BrokerProcess::spawn(command)
}

/// `t OFFSET PAYLOAD` (a `-v` line) as (offset, payload).
fn offset_and_payload(line: &str) -> (u64, u64) {
    let mut parts = line.split(' ');
    let parsed = match (parts.next(), parts.next(), parts.next()) {
        (Some("t"), Some(offset), Some(payload)) => offset.parse().ok().zip(payload.parse().ok()),
        _ => None,
    };
    parsed.unwrap_or_else(|| panic!("not a -v line: {line}"))
}

/// A `subscriber --keep` comes back by itself after the broker is killed
/// and restarted on the same data dir and port: it prints every message at
/// least once, in offset order (a redelivery only ever goes back to the
/// first unacknowledged offset, never skips ahead), and does not exit. A
/// `publisher` reading standard input when the broker dies says how many
/// lines were acknowledged and exits 1.
#[test]
fn a_kept_subscriber_reconnects_after_the_broker_restarts() {
    let dir = common::temp_dir("cli-reconnect");
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .to_string();
    let mut broker = durable_broker(&dir, &addr);
    let at = broker.addr;
    ok(publisher(at, &["--create", "t"]));
    let subscriber = Subscriber::start(at, &["--subscribe", "t", "--keep", "-v"]);
    ok(publish_stdin(at, "t", lines(100).as_bytes()));
    let mut seen = subscriber.take(100);

    // A publisher streaming standard input while the broker dies (told not
    // to reconnect: this test is about the subscriber's).
    let mut streaming = command(env!("CARGO_BIN_EXE_publisher"), at)
        .args(["--publish", "t", "--reconnect", "0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn publisher");
    let mut input = streaming.stdin.take().expect("stdin");
    let more: String = (101..=150).map(|i| format!("{i}\n")).collect();
    input.write_all(more.as_bytes()).expect("write stdin");
    input.flush().expect("flush stdin");
    // Printed means durable (a message is visible only once on disk).
    seen.extend(subscriber.take(50));
    broker.child.kill().expect("SIGKILL");
    broker.child.wait().expect("reaped");
    // Lines after the kill go to a dead connection.
    let _ = input.write_all(b"lost\n");
    drop(input);
    let output = streaming.wait_with_output().expect("publisher output");
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("acknowledged before the connection was lost"),
        "{}",
        stderr(&output)
    );

    let broker = durable_broker(&dir, &addr);
    assert!(subscriber.next_error().contains("reconnecting"));
    ok(publish_stdin(
        broker.addr,
        "t",
        (151..=200)
            .map(|i| format!("{i}\n"))
            .collect::<String>()
            .as_bytes(),
    ));
    let mut printed: Vec<(u64, u64)> = seen.iter().map(|l| offset_and_payload(l)).collect();
    while printed.last().map(|p| p.0) != Some(199) {
        printed.push(offset_and_payload(&subscriber.take(1)[0]));
        assert!(printed.len() < 10_000, "runaway output");
    }
    assert!(
        printed
            .iter()
            .all(|&(offset, payload)| payload == offset + 1)
    );
    for pair in printed.windows(2) {
        assert!(pair[1].0 <= pair[0].0 + 1, "skipped ahead: {pair:?}");
    }
    let offsets: BTreeSet<u64> = printed.iter().map(|p| p.0).collect();
    assert_eq!(offsets, (0..200).collect::<BTreeSet<u64>>());
    let mut subscriber = subscriber;
    assert!(
        subscriber.child.try_wait().expect("try_wait").is_none(),
        "the subscriber exited"
    );
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}
