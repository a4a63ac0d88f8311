//! Publish and pull with the client library.
//!
//! ```text
//! cargo run --example pubsub                  # starts its own broker
//! cargo run --example pubsub -- HOST:PORT     # uses a running broker
//! ```
//!
//! One client publishes — a single message, then a pipelined stream of
//! batches — and another pulls them with waiting pulls, acknowledging each
//! batch with the pull that follows it.

use courier::client::{Client, Outcome, PullOptions};
use std::error::Error;
use std::time::Duration;

fn main() -> Result<(), Box<dyn Error>> {
    // Keep an in-process broker alive for the whole run when none is given.
    let (addr, _broker) = match std::env::args().nth(1) {
        Some(addr) => (addr, None),
        None => {
            let broker = courier::server::spawn(courier::server::Config {
                addr: "127.0.0.1:0".parse()?,
                ..Default::default()
            })?;
            (broker.addr().to_string(), Some(broker))
        }
    };
    let topic = "pubsub_example";

    let mut publisher = Client::connect(addr.as_str())?;
    println!("connected to {}", publisher.server_info().server);
    publisher.register_publisher()?;
    match publisher.create_topic(topic) {
        Ok(()) => {}
        // Run twice against the same broker: the topic is already there.
        Err(e) if e.code() == Some(courier::ErrorCode::TopicExists) => {}
        Err(e) => return Err(e.into()),
    }

    // Subscribe before publishing: a subscriber gets what comes after.
    let mut subscriber = Client::connect(addr.as_str())?;
    let id = subscriber.register_subscriber()?;
    let first = subscriber.subscribe(topic)?;
    println!("subscriber {id} starts at offset {first}");

    let published = publisher.send(topic, b"Hello, world!")?;
    println!(
        "published at offset {} for {} subscriber(s)",
        published.offset, published.subscribers
    );

    // 10 batches of 100 messages, up to 4 batches in flight.
    let payloads: Vec<Vec<u8>> = (0..1000)
        .map(|i| format!("message {i}").into_bytes())
        .collect();
    let mut pipeline = publisher.pipeline(4);
    for chunk in payloads.chunks(100) {
        let batch: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
        pipeline.send_batch(topic, &batch)?;
    }
    for done in pipeline.finish() {
        // A TOPIC_FULL refusal would show here, retryable, never silently lost.
        if let Outcome::Published(stored) = done.result? {
            println!(
                "batch {} stored at offsets {}..{}",
                done.tag,
                stored.first_offset,
                stored.first_offset + stored.count
            );
        }
    }

    let mut options = PullOptions {
        topic: Some(topic.to_owned()),
        wait: Duration::from_secs(1),
        ..PullOptions::default()
    };
    let mut received = 0;
    while received < 1001 {
        let batch = subscriber.pull(&options)?;
        if batch.is_empty() {
            break;
        }
        for message in batch.iter().filter(|m| m.offset % 250 == 0) {
            println!(
                "{} @{}: {}",
                message.topic,
                message.offset,
                String::from_utf8_lossy(message.payload)
            );
        }
        received += batch.len();
        // The next pull acknowledges what this one delivered.
        options.ack = true;
    }
    subscriber.pull(&PullOptions {
        wait: Duration::ZERO,
        ..options
    })?;
    println!("received {received} messages");
    Ok(())
}
