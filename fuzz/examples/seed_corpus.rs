//! Writes seed inputs for the fuzz targets into `corpus/<target>/`: one
//! request and one reply of every kind (`courier::testing`'s samples, which
//! courier's own tests use too), and for `broker_frames` a few sessions in
//! the target's record format (see its doc). Seeds get the
//! fuzzers past the handshake and into deep broker states in seconds
//! instead of hours.
//!
//! `cargo run --manifest-path fuzz/Cargo.toml --example seed_corpus`

use courier::codec;
use courier::protocol::{ErrorCode, FRAME_HEADER_LEN, Pull, Request};
use courier::testing::{every_reply, every_request};
use std::fs;
use std::path::Path;

fn body(request: &Request<'_>, id: u64) -> Vec<u8> {
    let mut frame = Vec::new();
    codec::encode_request(&mut frame, id, request);
    frame.split_off(FRAME_HEADER_LEN)
}

fn pull(topic: Option<&str>, wait_ms: u32, ack: bool) -> Request<'_> {
    Request::Pull(Pull {
        topic,
        max_messages: 10,
        max_bytes: 1000,
        wait_ms,
        ack,
    })
}

/// Every reply and an error, as bodies.
fn replies() -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = every_reply()
        .iter()
        .map(|(_, reply)| {
            let mut frame = Vec::new();
            codec::encode_reply(&mut frame, 42, reply);
            frame.split_off(FRAME_HEADER_LEN)
        })
        .collect();
    let mut frame = Vec::new();
    codec::encode_error(&mut frame, 42, ErrorCode::TopicFull, "topic t is full");
    out.push(frame.split_off(FRAME_HEADER_LEN));
    out
}

/// A `broker_frames` input under construction.
#[derive(Default)]
struct Script(Vec<u8>);

impl Script {
    fn frame(&mut self, conn: u8, request: &Request<'_>) -> &mut Self {
        let body = body(request, 1);
        self.0.push(conn);
        match u16::try_from(body.len()) {
            Ok(n @ 0..=254) => self.0.push(n as u8),
            Ok(n) => {
                self.0.push(255);
                self.0.extend_from_slice(&n.to_be_bytes());
            }
            Err(_) => panic!("seed frames are small"),
        }
        self.0.extend_from_slice(&body);
        self
    }

    fn wait(&mut self, conn: u8, ms_over_4: u8) -> &mut Self {
        self.0.extend_from_slice(&[52 << 2 | conn, ms_over_4]);
        self
    }

    fn end_of_batch(&mut self) -> &mut Self {
        self.0.push(58 << 2);
        self
    }

    fn reconnect(&mut self, conn: u8) -> &mut Self {
        self.0.push(61 << 2 | conn);
        self
    }
}

fn sessions(scratch: &mut Vec<u8>) -> Vec<Vec<u8>> {
    let batch = codec::encode_payloads(scratch, &[b"x", b"yy", b"zzz"]);
    let mut pub_sub = Script::default();
    pub_sub
        .frame(0, &Request::RegisterPublisher)
        .frame(0, &Request::CreateTopic { topic: "t" })
        .frame(1, &Request::RegisterSubscriber { resume: None, timeout_ms: None })
        .frame(1, &Request::Subscribe { topic: "t" })
        .frame(1, &pull(None, 100, false))
        .frame(
            0,
            &Request::Publish {
                topic: "t",
                payload: b"hello",
            },
        )
        .end_of_batch()
        .frame(
            0,
            &Request::PublishBatch {
                topic: "t",
                payloads: batch,
            },
        )
        .frame(1, &pull(Some("t"), 0, true))
        .frame(
            1,
            &Request::Ack {
                topic: "t",
                offset: 2,
            },
        )
        .frame(2, &Request::Stats)
        .wait(1, 50)
        .reconnect(1)
        .frame(1, &Request::RegisterSubscriber { resume: None, timeout_ms: None })
        .frame(0, &Request::DeleteTopic { topic: "t" });
    let mut waiting = Script::default();
    waiting
        .frame(0, &Request::RegisterPublisher)
        .frame(0, &Request::CreateTopic { topic: "a" })
        .frame(0, &Request::CreateTopic { topic: "b" })
        .frame(1, &Request::RegisterSubscriber { resume: None, timeout_ms: None })
        .frame(1, &Request::Subscribe { topic: "a" })
        .frame(1, &Request::Subscribe { topic: "b" })
        .frame(1, &pull(None, 1000, true))
        .wait(0, 10)
        .frame(1, &Request::Unsubscribe { topic: "a" })
        .frame(0, &Request::DeleteTopic { topic: "b" })
        .wait(0, 255);
    vec![pub_sub.0, waiting.0]
}

fn write(target: &str, seeds: &[Vec<u8>]) -> std::io::Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    fs::create_dir_all(&dir)?;
    for (i, seed) in seeds.iter().enumerate() {
        fs::write(dir.join(format!("seed-{i:02}")), seed)?;
    }
    println!("{}: {} seeds in {}", target, seeds.len(), dir.display());
    Ok(())
}

fn main() -> std::io::Result<()> {
    let mut scratch = Vec::new();
    let requests = every_request(&mut scratch);
    let mut seeds: Vec<Vec<u8>> = requests.iter().map(|r| body(r, 300)).collect();
    // All of them as one stream, after the byte that picks the frame limit.
    let mut stream = vec![0];
    for (id, request) in requests.iter().enumerate() {
        codec::encode_request(&mut stream, id as u64, request);
    }
    seeds.push(stream);
    write("decode_request", &seeds)?;
    write("decode_reply", &replies())?;
    write("broker_frames", &sessions(&mut scratch))?;
    Ok(())
}
