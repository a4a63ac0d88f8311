//! `latency --relay`: the machine's ceiling for `latency`, measured the same
//! way in the same sitting.
//!
//! A bare TCP relay in this process stands where the broker would: one
//! publisher connection in, one subscriber connection out, over loopback, a
//! thread that reads what the publisher sent and writes it on, no protocol.
//! The publisher keeps the latency scenario's schedule (a fixed rate, each
//! message stamped with its *intended* send time, sleep then spin to it) and
//! the subscriber takes one clock reading per read, as the courier
//! subscriber takes one per pull reply. So the difference between the two
//! runs is what the broker adds: its parsing, state, pulls and the second
//! hop's scheduling, not the bench or the kernel.
//!
//! Frames are the broker's shape on the wire without MessagePack: a 4-byte
//! length, then the payload of `--size` bytes starting with the bench header.

use crate::args::Options;
use crate::payload::{Clock, Frames, Header};
use crate::publisher::SPIN_NS;
use crate::report::{self, Operation, Report};
use crate::run::{Failure, Timeline};
use hdrhistogram::Histogram;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

pub fn run(o: &Options) -> Result<Report, Failure> {
    if o.publishers != 1 || o.subscribers != 1 || o.topics != 1 || o.batch != 1 {
        return Err(Failure::Usage(
            "--relay measures one publisher, one subscriber, one topic, --batch 1".into(),
        ));
    }
    let failed = |what: &str, e: io::Error| Failure::Runtime(format!("relay: {what}: {e}"));
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| failed("listen", e))?;
    let addr = listener.local_addr().map_err(|e| failed("listen", e))?;
    let relay = thread::Builder::new()
        .name("bench-relay".into())
        .spawn(move || forward(&listener))
        .map_err(|e| failed("start the relay thread", e))?;
    // Accepted in this order: the first connection is the publisher's.
    let mut publisher = TcpStream::connect(addr).map_err(|e| failed("connect", e))?;
    let subscriber = TcpStream::connect(addr).map_err(|e| failed("connect", e))?;
    for stream in [&publisher, &subscriber] {
        stream
            .set_nodelay(true)
            .map_err(|e| failed("TCP_NODELAY", e))?;
    }
    let clock = Clock::new();
    let timeline = Timeline::starting_now(&clock, o.warmup, o.duration);
    let quota = o.messages.unwrap_or(u64::MAX);
    let receiver = thread::Builder::new()
        .name("bench-relay-sub".into())
        .spawn(move || receive(subscriber, clock, timeline))
        .map_err(|e| failed("start the subscriber thread", e))?;

    let sent = publish(&mut publisher, o, clock, timeline, quota);
    // The end of the publisher's stream ends the relay's, and the
    // subscriber's read of it.
    let _ = publisher.shutdown(Shutdown::Write);
    let received = receiver
        .join()
        .map_err(|_| Failure::Runtime("relay: the subscriber thread panicked".into()))?;
    let relayed = relay
        .join()
        .map_err(|_| Failure::Runtime("relay: the relay thread panicked".into()))?;
    let sent = sent.map_err(|e| failed("publish", e))?;
    let received = received.map_err(|e| failed("receive", e))?;
    relayed.map_err(|e| failed("forward", e))?;

    let mut report = Report::new("latency", "deliver");
    report.param("mode", "relay");
    report.param("rate", o.rate);
    report.param("size", o.size);
    report.operations.push(Operation {
        name: "deliver",
        unit: "deliveries",
        count: received.measured,
        requests: None,
        bytes: Some(received.measured * o.size as u64),
        elapsed: timeline.window(received.last_ns),
        latency: Some(received.latency),
        latency_of: "per message, end to end through the relay, from the intended send time",
    });
    report.count("published", sent);
    report.count("delivered", received.count);
    report.count("lost", sent.saturating_sub(received.count));
    report.problem_if(sent.saturating_sub(received.count), |n| {
        format!("{n} messages sent into the relay never came out")
    });
    Ok(report)
}

/// The relay: publisher's bytes to the subscriber, until the publisher ends.
fn forward(listener: &TcpListener) -> io::Result<()> {
    let (mut from, _) = listener.accept()?;
    let (mut to, _) = listener.accept()?;
    from.set_nodelay(true)?;
    to.set_nodelay(true)?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) => return to.shutdown(Shutdown::Write),
            Ok(n) => to.write_all(&buf[..n])?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// The latency scenario's schedule; returns how many messages went out.
fn publish(
    out: &mut TcpStream,
    o: &Options,
    clock: Clock,
    timeline: Timeline,
    quota: u64,
) -> io::Result<u64> {
    let interval_ns = 1e9 / o.rate;
    let mut frames = Frames::new(o.size, 1);
    let mut frame = Vec::with_capacity(4 + o.size);
    let len = u32::try_from(o.size).unwrap_or(u32::MAX).to_be_bytes();
    let mut measured = 0;
    for k in 0u64.. {
        let intended = timeline.start_ns + (k as f64 * interval_ns) as u64;
        if intended >= timeline.stop_ns || measured >= quota {
            return Ok(k);
        }
        while clock.now_ns() < intended {
            let left = intended.saturating_sub(clock.now_ns());
            if left > SPIN_NS {
                thread::sleep(Duration::from_nanos(left - SPIN_NS));
            } else {
                thread::yield_now();
            }
        }
        frame.clear();
        frame.extend_from_slice(&len);
        frame.extend_from_slice(frames.stamp_one(0, k, intended));
        out.write_all(&frame)?;
        if timeline.measured(intended) {
            measured += 1;
        }
    }
    Ok(0)
}

struct Received {
    count: u64,
    measured: u64,
    last_ns: u64,
    latency: Histogram<u64>,
}

/// Reads frames until the relay's stream ends, timing each from its
/// header's send time at the read that completed it.
fn receive(mut input: TcpStream, clock: Clock, timeline: Timeline) -> io::Result<Received> {
    let mut out = Received {
        count: 0,
        measured: 0,
        last_ns: timeline.measure_ns,
        latency: report::histogram(),
    };
    let mut buf = vec![0u8; 256 * 1024];
    let mut filled = 0;
    loop {
        if filled == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        let n = match input.read(&mut buf[filled..]) {
            Ok(0) => return Ok(out),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let now = clock.now_ns();
        filled += n;
        let mut at = 0;
        let data = &buf[..filled];
        while let Some(head) = data.get(at..).and_then(|b| b.first_chunk::<4>()) {
            let len = u32::from_be_bytes(*head) as usize;
            let Some(payload) = data.get(at + 4..at + 4 + len) else {
                break;
            };
            out.count += 1;
            if let Some(header) = Header::read(payload)
                && timeline.measured(header.sent_ns)
            {
                out.latency
                    .saturating_record(now.saturating_sub(header.sent_ns).max(1));
                out.measured += 1;
                out.last_ns = now;
            }
            at += 4 + len;
        }
        buf.copy_within(at..filled, 0);
        filled -= at;
    }
}
