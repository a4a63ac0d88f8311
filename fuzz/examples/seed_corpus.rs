//! Writes seed inputs for the fuzz targets into `corpus/<target>/`: every
//! request and a sample of every reply, and for `broker_frames` a few
//! sessions in the target's record format (see its doc). Seeds get the
//! fuzzers past the handshake and into deep broker states in seconds
//! instead of hours.
//!
//! `cargo run --manifest-path fuzz/Cargo.toml --example seed_corpus`

use courier::codec;
use courier::protocol::{
    ErrorCode, FRAME_HEADER_LEN, Pull, Reply, Request, ServerInfo, Stats, TopicMessages,
};
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

/// Every operation once, with small arguments.
fn requests(scratch: &mut Vec<u8>) -> Vec<Request<'_>> {
    let batch = codec::encode_payloads(scratch, &[b"one", b"", b"three"]);
    vec![
        Request::Hello {
            version: 1,
            client_name: "seed",
        },
        Request::RegisterPublisher,
        Request::CreateTopic { topic: "t" },
        Request::DeleteTopic { topic: "t" },
        Request::Publish {
            topic: "t",
            payload: b"hello",
        },
        Request::PublishBatch {
            topic: "t",
            payloads: batch,
        },
        Request::RegisterSubscriber { resume: None },
        Request::RegisterSubscriber { resume: Some(7) },
        Request::Subscribe { topic: "t" },
        Request::Unsubscribe { topic: "t" },
        pull(None, 50, true),
        pull(Some("t"), 0, false),
        Request::Ack {
            topic: "t",
            offset: 1,
        },
        Request::Stats,
    ]
}

fn replies() -> Vec<Vec<u8>> {
    let info = ServerInfo {
        version: 1,
        server: "courier seed".into(),
        max_frame_bytes: 2048,
        max_payload_bytes: 1536,
        max_topic_name_bytes: 255,
        max_pull_messages: 65536,
        max_backlog_bytes: 4096,
        max_backlog_messages: 16,
        session_timeout_ms: 200,
    };
    let mut stats = Stats::default();
    stats.errors.insert("TOPIC_FULL".into(), 2);
    let all = [
        Reply::Hello(info),
        Reply::Stats(stats),
        Reply::PublisherRegistered { publisher_id: 1 },
        Reply::Done,
        Reply::Published {
            offset: 3,
            subscribers: 1,
        },
        Reply::PublishedBatch {
            first_offset: 4,
            count: 2,
            subscribers: 1,
        },
        Reply::SubscriberRegistered {
            subscriber_id: 99,
            topics: vec!["t".into(), "u".into()],
        },
        Reply::Subscribed { next_offset: 5 },
        Reply::Messages(vec![TopicMessages {
            topic: "t".into(),
            first_offset: 6,
            payloads: vec![b"a".to_vec().into(), b"bc".to_vec().into()],
        }]),
    ];
    let mut out: Vec<Vec<u8>> = all
        .iter()
        .map(|reply| {
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
        .frame(1, &Request::RegisterSubscriber { resume: None })
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
        .frame(1, &Request::RegisterSubscriber { resume: None })
        .frame(0, &Request::DeleteTopic { topic: "t" });
    let mut waiting = Script::default();
    waiting
        .frame(0, &Request::RegisterPublisher)
        .frame(0, &Request::CreateTopic { topic: "a" })
        .frame(0, &Request::CreateTopic { topic: "b" })
        .frame(1, &Request::RegisterSubscriber { resume: None })
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
    let requests = requests(&mut scratch);
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
