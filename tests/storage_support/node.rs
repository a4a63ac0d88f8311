//! A broker and its storage log on a simulated disk, driven the way the
//! server drives them (inline writer, one round at a time), with two
//! connections and the clients' view of the replies: for broker-level
//! power-loss and disk-fault tests.

use bytes::Bytes;
use courier::broker::{Broker, ConnId, Limits, Outbox, Recovered};
use courier::codec::{self, decode_reply, split_frame};
use courier::protocol::{ErrorCode, Op, Reply, Request};
use courier::storage::{Config, Log, RecoveryMode, SimFs, SyncMode, WriterKind};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

pub const PUBLISHER: ConnId = 0;
pub const SUBSCRIBER: ConnId = 1;

/// What a request carried that its reply confirms: (topic, payload).
pub type Carried = Option<(usize, Bytes)>;
/// A reply as the test reads it: connection, op, what was carried, result.
pub type Answer = (ConnId, Op, Carried, Result<Reply, ErrorCode>);

pub struct Out(pub Vec<Vec<u8>>);

impl Outbox for Out {
    fn buffer(&mut self, conn: ConnId) -> Option<&mut Vec<u8>> {
        self.0.get_mut(conn)
    }

    fn close(&mut self, _conn: ConnId) {}
}

impl Out {
    /// Takes what the broker wrote to `conn`: each reply's id and body.
    pub fn take_replies(&mut self, conn: ConnId) -> Vec<(u64, Bytes)> {
        let buf = std::mem::take(&mut self.0[conn]);
        let mut replies = Vec::new();
        let mut at = 0;
        while let Some((body, used)) = split_frame(&buf[at..], usize::MAX).expect("frame") {
            let body = Bytes::copy_from_slice(body);
            at += used;
            replies.push((codec::decode_reply_id(&body).expect("id"), body));
        }
        replies
    }
}

/// A broker on the simulated disk, and the clients' view of it.
pub struct Node {
    pub broker: Broker,
    pub out: Out,
    pub now: Instant,
    pub next_id: u64,
    /// Requests sent and not answered: (conn, id) → (op, what it carried).
    pub asked: HashMap<(ConnId, u64), (Op, Carried)>,
}

pub fn open(fs: &SimFs) -> (Node, Recovered) {
    let now = Instant::now();
    let mut broker = Broker::new(Limits::default(), now);
    let mut rebuilt = Recovered::default();
    let config = Config {
        sync: SyncMode::Always,
        segment_bytes: 4096,
        recovery: RecoveryMode::Strict,
        writer: WriterKind::Inline,
    };
    let (log, _report) = Log::open(
        Arc::new(fs.clone()),
        Path::new("/data"),
        config,
        Box::new(|| {}),
        |_, record| broker.replay(record, &mut rebuilt),
    )
    .expect("recovery after a power cut");
    broker.finish_recovery(now, &mut rebuilt);
    broker.set_journal(Box::new(log));
    let mut node = Node {
        broker,
        out: Out(vec![Vec::new(), Vec::new()]),
        now,
        next_id: 1,
        asked: HashMap::new(),
    };
    for conn in [PUBLISHER, SUBSCRIBER] {
        node.broker.connect(conn);
        node.send(
            conn,
            &Request::Hello {
                version: courier::PROTOCOL_VERSION,
                client_name: "power",
                credentials: None,
            },
            None,
        );
    }
    node.send(PUBLISHER, &Request::RegisterPublisher, None);
    (node, rebuilt)
}

impl Node {
    pub fn send(&mut self, conn: ConnId, request: &Request<'_>, carried: Carried) {
        let id = self.next_id;
        self.next_id += 1;
        let mut frame = Vec::new();
        codec::encode_request(&mut frame, id, request);
        self.asked.insert((conn, id), (request.op(), carried));
        let body = &frame[4..];
        self.broker
            .handle_frame(conn, body, self.now, &mut self.out);
    }

    /// One loop round's end, as the server does it; returns the replies
    /// written, with what their requests carried.
    pub fn round(&mut self) -> Vec<Answer> {
        self.broker.poll_journal(&mut self.out);
        self.broker.answer_ready(&mut self.out);
        self.broker.flush_journal();
        // The inline writer has answered already: apply it now, as the
        // wake would.
        self.broker.poll_journal(&mut self.out);
        self.broker.answer_ready(&mut self.out);
        let mut replies = Vec::new();
        for conn in [PUBLISHER, SUBSCRIBER] {
            for (id, body) in self.out.take_replies(conn) {
                let Some((op, carried)) = self.asked.remove(&(conn, id)) else {
                    panic!("a reply to nothing: id {id}")
                };
                let (_, reply) = decode_reply(op, &body).expect("reply");
                replies.push((conn, op, carried, reply.map_err(|e| e.code)));
            }
        }
        replies
    }
}
