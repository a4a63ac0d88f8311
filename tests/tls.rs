//! TLS (`--tls-cert`, `--tls-key`): end to end with a certificate made
//! here (a CA and a leaf for localhost and 127.0.0.1, by `rcgen`), through
//! the client library and the real binaries; and what a client that does
//! not speak TLS gets on a TLS port.

mod common;

use common::{BrokerProcess, DEADLINE, Raw, start_broker_with, temp_dir};
use courier::client::{Client, ClientOptions, PullOptions, UserToken};
use courier::protocol::Request;
use courier::server::{Config, RunningServer};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// PEM files: the CA's certificate, the broker's certificate and key.
struct Pems {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn make_pems(name: &str) -> Pems {
    let dir = temp_dir(&format!("tls-{name}"));
    std::fs::create_dir_all(&dir).expect("dir");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().expect("ca key");
    let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .expect("leaf params");
    let leaf_key = KeyPair::generate().expect("leaf key");
    let leaf = leaf_params
        .signed_by(&leaf_key, &issuer)
        .expect("leaf cert");
    let pems = Pems {
        ca: dir.join("ca.pem"),
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    std::fs::write(&pems.ca, ca_cert.pem()).expect("write");
    std::fs::write(&pems.cert, leaf.pem()).expect("write");
    std::fs::write(&pems.key, leaf_key.serialize_pem()).expect("write");
    pems
}

fn tls_broker(pems: &Pems, users: Option<PathBuf>) -> RunningServer {
    start_broker_with(Config {
        tls: Some(courier::tls::server_config(&pems.cert, &pems.key).expect("server config")),
        users,
        ..Config::default()
    })
}

fn tls_options(pems: &Pems) -> ClientOptions {
    ClientOptions {
        tls: Some(courier::tls::client_config(Some(&pems.ca)).expect("client config")),
        ..ClientOptions::default()
    }
}

#[test]
fn publish_and_pull_end_to_end_over_tls() {
    let pems = make_pems("e2e");
    let broker = tls_broker(&pems, None);
    let addr = broker.addr().to_string();
    let mut publisher = Client::connect_with(addr.as_str(), tls_options(&pems)).expect("connect");
    publisher.register_publisher().expect("publisher");
    publisher.create_topic("t").expect("create");
    let mut subscriber = Client::connect_with(addr.as_str(), tls_options(&pems)).expect("connect");
    subscriber.register_subscriber().expect("session");
    subscriber.subscribe("t").expect("subscribe");
    // Larger than one TLS record and than one write chunk of the broker.
    let big = vec![0xa5u8; 300 * 1024];
    publisher.send("t", b"small").expect("publish");
    publisher.send("t", &big).expect("publish big");
    let batch: Vec<&[u8]> = vec![b"x"; 500];
    publisher.send_batch("t", &batch).expect("batch");
    let mut received = Vec::new();
    let started = Instant::now();
    while received.len() < 502 {
        assert!(
            started.elapsed() < DEADLINE,
            "got {} of 502",
            received.len()
        );
        let got = subscriber
            .pull(&PullOptions {
                wait: Duration::from_secs(1),
                ack: true,
                ..PullOptions::default()
            })
            .expect("pull");
        received.extend(got.iter().map(|m| m.payload.to_vec()));
    }
    assert_eq!(received[0], b"small");
    assert_eq!(received[1], big);
    assert!(received[2..].iter().all(|p| p == b"x"));
}

#[test]
fn credentials_travel_inside_tls() {
    let pems = make_pems("creds");
    let path = common::users_file("tls-creds", &[("alice", "secret", &["admin:*"])]);
    let broker = tls_broker(&pems, Some(path));
    let addr = broker.addr().to_string();
    let options = |token: &str| ClientOptions {
        credentials: Some(UserToken {
            user: "alice".into(),
            token: token.into(),
        }),
        ..tls_options(&pems)
    };
    let mut alice = Client::connect_with(addr.as_str(), options("secret")).expect("alice");
    alice.register_publisher().expect("publisher");
    alice.create_topic("t").expect("create");
    let e = Client::connect_with(addr.as_str(), options("wrong")).expect_err("refused");
    assert_eq!(e.code(), Some(courier::ErrorCode::AuthFailed), "{e}");
}

#[test]
fn a_plaintext_client_on_the_tls_port_is_closed_promptly() {
    let pems = make_pems("plain");
    let broker = tls_broker(&pems, None);
    let mut raw = Raw::connect(broker.addr());
    raw.send(Request::Stats);
    // Closed, not left waiting for the handshake timeout (the read
    // timeout of `Raw` would fail the test first).
    let frames = raw.expect_closed();
    assert!(frames.is_empty(), "no frame of ours comes back: {frames:?}");
    // The broker serves TLS clients all the same.
    let addr = broker.addr().to_string();
    Client::connect_with(addr.as_str(), tls_options(&pems)).expect("a TLS client connects");
}

#[test]
fn a_client_that_does_not_trust_the_certificate_is_refused() {
    let pems = make_pems("trust");
    let other = make_pems("trust-other");
    let broker = tls_broker(&pems, None);
    let addr = broker.addr().to_string();
    let e = Client::connect_with(addr.as_str(), tls_options(&other)).expect_err("untrusted");
    assert_eq!(e.code(), None, "a TLS failure, not a broker reply: {e}");
}

#[test]
fn the_commands_speak_tls_with_tls_and_ca() {
    let pems = make_pems("commands");
    let (cert, key, ca) = (
        pems.cert.to_str().expect("path"),
        pems.key.to_str().expect("path"),
        pems.ca.to_str().expect("path"),
    );
    let broker = BrokerProcess::start(&["--tls-cert", cert, "--tls-key", key]);
    let addr = broker.addr.to_string();
    let run = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(["--broker", &addr, "--tls", "--ca", ca])
            .args(args)
            .output()
            .expect("runs")
    };
    let publisher = env!("CARGO_BIN_EXE_publisher");
    assert!(run(publisher, &["--create", "news"]).status.success());
    assert!(
        run(publisher, &["--publish", "news", "hello"])
            .status
            .success()
    );
    let listed = run(env!("CARGO_BIN_EXE_courier"), &["topics"]);
    assert!(listed.status.success(), "{listed:?}");
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(text.contains("news"), "{text}");
    // Without --tls the command fails instead of hanging.
    let plain = Command::new(env!("CARGO_BIN_EXE_courier"))
        .args(["--broker", &addr, "topics"])
        .output()
        .expect("runs");
    assert_eq!(plain.status.code(), Some(1));
}

#[test]
fn tls_state_counts_in_the_memory_budget() {
    let pems = make_pems("budget");
    let broker = tls_broker(&pems, None);
    let addr = broker.addr().to_string();
    let idle: Vec<Client> = (0..10)
        .map(|_| Client::connect_with(addr.as_str(), tls_options(&pems)).expect("connect"))
        .collect();
    let mut probe = Client::connect_with(addr.as_str(), tls_options(&pems)).expect("connect");
    let read = probe.stats().expect("stats").memory["read_buffers"];
    // Idle plaintext connections hold no read buffer; TLS ones hold
    // rustls's state, counted at its bound.
    let floor = (idle.len() as u64) * courier::connection::TLS_READ_STATE as u64;
    assert!(read >= floor, "read_buffers {read} < {floor}");
}

#[test]
fn a_self_signed_certificate_given_as_ca_is_pinned() {
    // Like `openssl req -x509`: self-signed, and marked as a CA, which
    // webpki alone refuses for a server.
    let self_signed = |name: &str| {
        let dir = temp_dir(&format!("tls-pinned-{name}"));
        std::fs::create_dir_all(&dir).expect("dir");
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("cert");
        let pems = Pems {
            ca: dir.join("cert.pem"),
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        std::fs::write(&pems.cert, cert.pem()).expect("write");
        std::fs::write(&pems.key, key.serialize_pem()).expect("write");
        pems
    };
    let pems = self_signed("one");
    let broker = tls_broker(&pems, None);
    let addr = broker.addr().to_string();
    let mut client = Client::connect_with(addr.as_str(), tls_options(&pems)).expect("pinned");
    client.register_publisher().expect("works");
    let other = self_signed("two");
    let e = Client::connect_with(addr.as_str(), tls_options(&other)).expect_err("not pinned");
    assert_eq!(e.code(), None, "{e}");
}
