//! The `broker` binary's log on stderr: which lines `--log-level` and
//! RUST_LOG select, and what a connection's lines say — the time, the level,
//! the peer's address and the client name given in HELLO.

mod common;

use common::*;
use courier::protocol::{Reply, Request};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc::{self, Receiver};

/// The real broker with its stderr read line by line.
struct LoggedBroker {
    child: Child,
    addr: SocketAddr,
    lines: Receiver<String>,
    /// Kept open: the broker prints its last line there on shutdown.
    _stdout: BufReader<ChildStdout>,
}

impl LoggedBroker {
    /// Starts `broker --addr 127.0.0.1:0 ARGS` with RUST_LOG set to
    /// `rust_log` (or unset), and waits for its startup line.
    fn start(args: &[&str], rust_log: Option<&str>) -> LoggedBroker {
        let mut command = Command::new(env!("CARGO_BIN_EXE_broker"));
        command
            .args(["--addr", "127.0.0.1:0", "--memory-only"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        match rust_log {
            Some(spec) => command.env("RUST_LOG", spec),
            None => command.env_remove("RUST_LOG"),
        };
        let mut child = command.spawn().expect("broker binary starts");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("startup line");
        let addr = line
            .trim()
            .strip_prefix("Server started on ")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected startup line {line:?}"));
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                let _ = tx.send(line);
            }
        });
        LoggedBroker {
            child,
            addr,
            lines,
            _stdout: stdout,
        }
    }

    /// The first line (from now) that contains every one of `parts`.
    fn wait_for_line(&self, parts: &[&str]) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(DEADLINE)
                .unwrap_or_else(|_| panic!("no log line with {parts:?}"));
            if parts.iter().all(|part| line.contains(part)) {
                return line;
            }
        }
    }

    /// Stops the broker with SIGTERM; returns every line not yet read.
    fn stop(mut self) -> Vec<String> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        let exit = self.child.wait().expect("broker exits");
        assert!(exit.success(), "exit status {exit:?}");
        // The reader thread ends at EOF, which closes the channel.
        self.lines.iter().collect()
    }
}

impl Drop for LoggedBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Connects, completes HELLO as `name`, and returns the client with the
/// address the broker sees for it.
fn hello_as(addr: SocketAddr, name: &str) -> (Raw, String) {
    let mut raw = Raw::connect(addr);
    let reply = raw.call(Request::Hello {
        version: courier::PROTOCOL_VERSION,
        client_name: name,
        credentials: None,
    });
    assert!(matches!(reply, Ok(Reply::Hello(_))), "{reply:?}");
    let peer = raw.stream.local_addr().expect("local address").to_string();
    (raw, peer)
}

/// `[2026-12-01T09:11:13.580Z DEBUG courier::...] ...`: the time (UTC, to
/// the millisecond) and the level open every line.
fn assert_stamped(line: &str, level: &str) {
    let (stamp, rest) = line
        .strip_prefix('[')
        .and_then(|l| l.split_once(' '))
        .unwrap_or_else(|| panic!("no timestamp in {line:?}"));
    assert_eq!(stamp.len(), "2026-12-01T09:11:13.580Z".len(), "{line:?}");
    assert!(
        stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T',
        "{line:?}"
    );
    assert!(rest.starts_with(level), "{line:?}");
}

#[test]
fn connection_lines_carry_the_peer_and_the_client_name() {
    let broker = LoggedBroker::start(&["--log-level", "debug"], None);

    let (client, peer) = hello_as(broker.addr, "orders-feed");
    let connected = broker.wait_for_line(&[&peer, "\"orders-feed\"", "connected"]);
    assert_stamped(&connected, "DEBUG");
    drop(client);
    broker.wait_for_line(&[&peer, "\"orders-feed\"", "closed"]);

    // A name is quoted and escaped, so it cannot forge a line, and cut to a
    // bounded length.
    let sly = format!("x\n[forged] {}", "y".repeat(300));
    let (client, peer) = hello_as(broker.addr, &sly);
    let line = broker.wait_for_line(&[&peer, "connected"]);
    let shown = format!("\"x\\n[forged] {}\"", "y".repeat(128 - 11));
    assert!(line.contains(&shown), "{line:?}");
    drop(client);
    broker.wait_for_line(&[&peer, "closed"]);
}

#[test]
fn the_level_defaults_to_info() {
    let broker = LoggedBroker::start(&[], None);
    let (client, _) = hello_as(broker.addr, "quiet");
    drop(client);
    let lines = broker.stop();
    let signal = lines
        .iter()
        .find(|l| l.contains("signal received"))
        .unwrap_or_else(|| panic!("no shutdown line in {lines:?}"));
    assert_stamped(signal, "INFO");
    assert!(lines.iter().all(|l| !l.contains("DEBUG")), "{lines:?}");
}

#[test]
fn rust_log_applies_unless_the_flag_is_given() {
    let broker = LoggedBroker::start(&[], Some("debug"));
    let (client, peer) = hello_as(broker.addr, "from-env");
    drop(client);
    broker.wait_for_line(&[&peer, "closed"]);

    // The flag wins: at warn, neither the connection's debug lines nor the
    // shutdown's info line appear.
    let broker = LoggedBroker::start(&["--log-level", "warn"], Some("debug"));
    let (client, _) = hello_as(broker.addr, "from-flag");
    drop(client);
    let lines = broker.stop();
    assert!(lines.is_empty(), "{lines:?}");
}

#[test]
fn an_unknown_log_level_is_a_usage_error() {
    for level in ["loud", "", "warning"] {
        let output = Command::new(env!("CARGO_BIN_EXE_broker"))
            .args([
                "--addr",
                "127.0.0.1:0",
                "--log-level",
                level,
                "--memory-only",
            ])
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .output()
            .expect("broker binary runs");
        assert_eq!(output.status.code(), Some(2), "--log-level {level:?}");
        assert!(output.stdout.is_empty());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.starts_with("broker: --log-level"), "{stderr}");
    }
    for level in ["error", "WARN", "info", "debug", "trace", "off"] {
        let broker = LoggedBroker::start(&["--log-level", level], None);
        broker.stop();
    }
}
