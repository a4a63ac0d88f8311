//! Shared by the integration tests: a broker on 127.0.0.1:0 in this process,
//! and a raw protocol client that sends exactly the bytes a test asks for.
#![allow(dead_code)]

use bytes::Bytes;
use courier::broker::Limits;
use courier::codec::{self, decode_reply, decode_reply_id, encode_request, split_frame};
use courier::protocol::{ErrorCode, ErrorReply, Op, Reply, Request, TopicMessages};
use courier::server::{Config, RunningServer, spawn};
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

/// How long any single wait in a test may take before it fails.
pub const DEADLINE: Duration = Duration::from_secs(10);

pub fn start_broker() -> RunningServer {
    start_broker_with(Config::default())
}

pub fn start_broker_with(config: Config) -> RunningServer {
    spawn(Config {
        addr: "127.0.0.1:0".parse().expect("loopback address"),
        ..config
    })
    .expect("broker starts")
}

pub fn limits(f: impl FnOnce(&mut Limits)) -> Config {
    let mut config = Config::default();
    f(&mut config.limits);
    config
}

/// Waits until `condition` holds, failing the test after [`DEADLINE`].
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The real `broker` binary, killed when dropped.
pub struct BrokerProcess {
    pub child: Child,
    pub addr: SocketAddr,
    /// The rest of its standard output, after the startup line.
    pub stdout: BufReader<ChildStdout>,
    /// The lines it printed before the startup line (storage, recovery).
    pub before: Vec<String>,
}

/// A fresh, empty directory under the target dir, unique to `name` and
/// this test process, for a broker's `--data-dir`.
pub fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("durable-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A users file with these users (name, token, grants), in a fresh dir.
pub fn users_file(name: &str, users: &[(&str, &str, &[&str])]) -> std::path::PathBuf {
    let dir = temp_dir(&format!("auth-{name}"));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("users");
    let mut table = courier::auth::Users::default();
    for (user, token, grants) in users {
        table.insert(courier::auth::User {
            name: (*user).to_owned(),
            token_hash: courier::auth::hash_token(token),
            grants: grants
                .iter()
                .map(|g| courier::auth::file::parse_grant(g).expect("grant"))
                .collect(),
        });
    }
    courier::auth::save(&path, &table).expect("save");
    path
}

/// Reads a broker's output up to its "Server started on ADDR" line, which
/// comes last before it serves; returns the address and the lines before.
pub fn read_startup(stdout: &mut impl BufRead) -> (SocketAddr, Vec<String>) {
    let mut before = Vec::new();
    loop {
        let mut line = String::new();
        let read = stdout.read_line(&mut line).expect("startup line");
        assert!(
            read > 0,
            "the broker exited before its startup line: {before:?}"
        );
        if let Some(addr) = line.trim().strip_prefix("Server started on ") {
            let addr = addr
                .parse()
                .unwrap_or_else(|_| panic!("unexpected startup line {line:?}"));
            return (addr, before);
        }
        before.push(line.trim_end().to_owned());
    }
}

impl BrokerProcess {
    /// Starts `broker --addr 127.0.0.1:0` with `args` and waits for its
    /// startup line. It runs `--memory-only` unless `args` give a
    /// `--data-dir`.
    pub fn start(args: &[&str]) -> BrokerProcess {
        let mut command = Command::new(env!("CARGO_BIN_EXE_broker"));
        command.args(["--addr", "127.0.0.1:0"]).args(args);
        if !args.contains(&"--data-dir") {
            command.arg("--memory-only");
        }
        BrokerProcess::spawn(command)
    }

    /// Resident memory, from /proc.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A protocol client that hides nothing: frames in, decoded replies out.
pub struct Raw {
    pub stream: TcpStream,
    buf: Vec<u8>,
    next_id: u64,
}

impl Raw {
    /// Connects without the handshake.
    pub fn connect(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        Raw {
            stream,
            buf: Vec::new(),
            next_id: 1,
        }
    }

    /// Connects and completes HELLO.
    pub fn hello(addr: SocketAddr) -> Raw {
        let mut raw = Raw::connect(addr);
        let reply = raw.call(Request::Hello {
            version: courier::PROTOCOL_VERSION,
            client_name: "test",
            credentials: None,
        });
        assert!(matches!(reply, Ok(Reply::Hello(_))), "{reply:?}");
        raw
    }

    pub fn publisher(addr: SocketAddr) -> Raw {
        let mut raw = Raw::hello(addr);
        raw.ok(Request::RegisterPublisher);
        raw
    }

    /// A publisher that has created `topic` (until-acked, the default).
    pub fn publisher_with_topic(addr: SocketAddr, topic: &str) -> Raw {
        let mut raw = Raw::publisher(addr);
        raw.ok(Request::CreateTopic { topic });
        raw
    }

    /// A new subscriber session subscribed to `topics`; returns its id too.
    pub fn subscriber(addr: SocketAddr, topics: &[&str]) -> (Raw, u64) {
        let mut raw = Raw::hello(addr);
        let Reply::SubscriberRegistered { subscriber_id, .. } =
            raw.ok(Request::RegisterSubscriber {
                resume: None,
                timeout_ms: None,
            })
        else {
            panic!("unexpected reply to REGISTER_SUBSCRIBER")
        };
        for topic in topics {
            raw.ok(Request::Subscribe { topic });
        }
        (raw, subscriber_id)
    }

    pub fn send(&mut self, request: Request<'_>) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.send_with_id(id, request);
        id
    }

    pub fn send_with_id(&mut self, id: u64, request: Request<'_>) {
        let mut frame = Vec::new();
        encode_request(&mut frame, id, &request);
        self.send_bytes(&frame);
    }

    pub fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// Sends `body` behind a correct length prefix.
    pub fn send_body(&mut self, body: &[u8]) {
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(body);
        self.send_bytes(&frame);
    }

    /// The next frame body, or `None` if the broker closed the connection.
    pub fn recv_frame(&mut self) -> Option<Bytes> {
        loop {
            if let Some((body, used)) = split_frame(&self.buf, usize::MAX).expect("frame") {
                let body = Bytes::copy_from_slice(body);
                self.buf.drain(..used);
                return Some(body);
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("read failed (no reply within {DEADLINE:?}?): {e}"),
            }
        }
    }

    /// The next reply, decoded as an answer to `op`.
    pub fn recv(&mut self, op: Op) -> (u64, Result<Reply, ErrorReply>) {
        let body = self
            .recv_frame()
            .expect("connection closed before the reply");
        decode_reply(op, &body).expect("well-formed reply")
    }

    /// The id of the next reply, without interpreting its body.
    pub fn recv_id(&mut self) -> u64 {
        let body = self
            .recv_frame()
            .expect("connection closed before the reply");
        decode_reply_id(&body).expect("reply id")
    }

    pub fn call(&mut self, request: Request<'_>) -> Result<Reply, ErrorReply> {
        let op = request.op();
        let id = self.send(request);
        let (got, reply) = self.recv(op);
        assert_eq!(got, id, "reply id");
        reply
    }

    pub fn ok(&mut self, request: Request<'_>) -> Reply {
        match self.call(request) {
            Ok(reply) => reply,
            Err(e) => panic!("unexpected error {}: {}", e.code, e.message),
        }
    }

    pub fn error(&mut self, request: Request<'_>) -> ErrorCode {
        match self.call(request) {
            Ok(reply) => panic!("expected an error, got {reply:?}"),
            Err(e) => e.code,
        }
    }

    /// Asserts the broker closes the connection (after any pending replies,
    /// which are returned).
    pub fn expect_closed(&mut self) -> Vec<Bytes> {
        let mut frames = Vec::new();
        while let Some(frame) = self.recv_frame() {
            frames.push(frame);
            assert!(frames.len() < 10_000, "connection never closed");
        }
        frames
    }

    pub fn publish(&mut self, topic: &str, payload: &[u8]) -> u64 {
        match self.ok(Request::Publish { topic, payload }) {
            Reply::Published { offset, .. } => offset,
            other => panic!("unexpected {other:?}"),
        }
    }

    pub fn publish_batch(&mut self, topic: &str, payloads: &[&[u8]]) -> Reply {
        let mut scratch = Vec::new();
        let payloads = codec::encode_payloads(&mut scratch, payloads);
        self.ok(Request::PublishBatch { topic, payloads })
    }

    pub fn stats(&mut self) -> courier::protocol::Stats {
        match self.ok(Request::Stats) {
            Reply::Stats(stats) => *stats,
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// A PULL request.
pub fn pull(topic: Option<&str>, max_messages: u32, wait_ms: u32, ack: bool) -> Request<'_> {
    Request::Pull(courier::protocol::Pull {
        topic,
        max_messages,
        max_bytes: u32::MAX,
        wait_ms,
        ack,
    })
}

/// (topic, offset, payload) for every message of a pull reply.
pub fn messages(reply: Result<Reply, ErrorReply>) -> Vec<(String, u64, Vec<u8>)> {
    match reply {
        Ok(Reply::Messages(groups)) => flatten(groups),
        other => panic!("expected messages, got {other:?}"),
    }
}

pub fn flatten(groups: Vec<TopicMessages>) -> Vec<(String, u64, Vec<u8>)> {
    groups
        .into_iter()
        .flat_map(|group| {
            let topic = group.topic;
            let first = group.first_offset;
            group
                .payloads
                .into_iter()
                .enumerate()
                .map(move |(i, p)| (topic.clone(), first + i as u64, p.to_vec()))
        })
        .collect()
}

pub mod json;

impl BrokerProcess {
    /// Starts `broker --addr 127.0.0.1:0` with `args` under an address-space
    /// limit (`prlimit --as`, util-linux), so that a broker whose memory runs
    /// away fails its allocation and dies — which the test then sees —
    /// instead of eating the machine. Without `prlimit` the limit is skipped
    /// (and said so on stderr); the test's own RSS checks still apply.
    pub fn start_limited(address_space_bytes: u64, args: &[&str]) -> BrokerProcess {
        let broker = env!("CARGO_BIN_EXE_broker");
        let prlimit = ["/usr/bin/prlimit", "/bin/prlimit"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists());
        let mut command = match prlimit {
            Some(prlimit) => {
                let mut command = Command::new(prlimit);
                // prlimit execs the broker: the child's pid is the broker's.
                command
                    .arg(format!("--as={address_space_bytes}"))
                    .arg("--")
                    .arg(broker);
                command
            }
            None => {
                eprintln!("prlimit not found: the broker runs without an address-space limit");
                Command::new(broker)
            }
        };
        command
            .args(["--addr", "127.0.0.1:0", "--memory-only"])
            .args(args);
        BrokerProcess::spawn(command)
    }

    /// Starts `command` (a broker, perhaps behind a wrapper that execs it)
    /// and waits for its startup line.
    pub fn spawn(mut command: Command) -> BrokerProcess {
        let mut child = command
            .stdout(Stdio::piped())
            .spawn()
            .expect("broker starts");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let (addr, before) = read_startup(&mut stdout);
        BrokerProcess {
            child,
            addr,
            stdout,
            before,
        }
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// The highest RSS a process reached while a test ran, sampled from /proc
/// every few milliseconds on a thread of its own.
pub struct RssWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl RssWatch {
    pub fn start(pid: u32) -> RssWatch {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut peak = 0;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                // A process that is gone has no RSS; the test notices it died.
                peak = peak.max(rss_kib_of(pid).unwrap_or(0));
                std::thread::sleep(Duration::from_millis(5));
            }
            peak
        });
        RssWatch {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops sampling; the peak in KiB.
    pub fn peak_kib(mut self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread
            .take()
            .map_or(0, |t| t.join().expect("RSS sampler"))
    }
}

/// `VmRSS` of process `pid` in KiB; `None` if it cannot be read.
pub fn rss_kib_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The error code an error name (`BROKER_FULL`, …) has in this build of the
/// protocol, if it has one: lets a test name a code that a later version
/// adds while still compiling against the current one.
pub fn code_named(name: &str) -> Option<ErrorCode> {
    ErrorCode::ALL.iter().copied().find(|c| c.name() == name)
}

/// A small xorshift generator for seeded test schedules: the seed is
/// printed, so a failure replays.
pub struct Rng(pub u64);

impl Rng {
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}
