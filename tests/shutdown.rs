//! Graceful shutdown of the real `broker` binary: SIGTERM while pulls wait
//! answers them, tells every client, prints a final line and exits 0.

mod common;

use common::*;
use courier::protocol::{ErrorCode, Op, Request};
use std::io::BufRead;
use std::process::Command;

#[test]
fn sigterm_answers_waiting_pulls_and_exits_cleanly() {
    let mut broker = BrokerProcess::start(&["--log-level", "warn"]);
    let addr = broker.addr;
    let mut publisher = Raw::publisher(addr);
    publisher.ok(Request::CreateTopic { topic: "t" });
    let mut waiting: Vec<(Raw, u64)> = (0..3)
        .map(|_| {
            let (mut raw, _) = Raw::subscriber(addr, &["t"]);
            let id = raw.send(pull(None, 10, 60_000, false));
            (raw, id)
        })
        .collect();
    wait_until("pulls parked", || publisher.stats().waiting_pulls == 3);

    let status = Command::new("kill")
        .args(["-TERM", &broker.child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());

    for (raw, id) in &mut waiting {
        let (got, reply) = raw.recv(Op::Pull);
        assert_eq!(got, *id);
        assert_eq!(reply.unwrap_err().code, ErrorCode::ShuttingDown);
        raw.expect_closed();
    }
    let (got, reply) = publisher.recv(Op::Stats);
    assert_eq!(got, 0);
    assert_eq!(reply.unwrap_err().code, ErrorCode::ShuttingDown);
    publisher.expect_closed();

    let mut last = String::new();
    broker.stdout.read_line(&mut last).expect("final line");
    assert_eq!(last.trim(), "Server stopped");
    let exit = broker.child.wait().expect("broker exits");
    assert!(exit.success(), "exit status {exit:?}");
}
