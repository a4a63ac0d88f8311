//! The sparse read-back index (one span per 64 KiB of a topic's log) and
//! the scans over it: topics interleaved record by record, spans across
//! segment boundaries, released segments, records lost to a failed write,
//! gaps in a topic's offsets, appended records not yet durable, and damage
//! to another topic's record inside a span. Every read is checked against
//! what was appended: exactly the topic's messages from the requested
//! offset, in order, none twice, nothing unchecked.

mod storage_support;

use courier::storage::{Config, Log, ReadError, Record, StdFs, SyncMode, WriterKind};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use storage_support::{commit, inline, losses, message, open};

/// The payload text of `topic`'s offset `offset`.
fn text(topic: u64, offset: u64) -> String {
    format!(
        "t{topic}-o{offset:06}-{}",
        "x".repeat((offset % 90) as usize)
    )
}

/// Every payload of `topic` read back from `from` on, in reads of at most
/// `per_read` messages each continuing where the last stopped, as the
/// broker's cursor does. Panics on a read error.
fn read_all(log: &Log, topic: u64, from: u64, per_read: usize) -> Vec<(u64, String)> {
    try_read_all(log, topic, from, per_read).expect("read back")
}

fn try_read_all(
    log: &Log,
    topic: u64,
    mut from: u64,
    per_read: usize,
) -> Result<Vec<(u64, String)>, ReadError> {
    let mut out = Vec::new();
    for _ in 0..100_000 {
        let plan = log.plan_read(topic, from, u64::MAX, per_read as u64, 4096);
        if plan.is_empty() {
            return Ok(out);
        }
        let chunks = log
            .reader()
            .read_range(topic, &plan, from, per_read, 4096)?;
        let before = out.len();
        for c in chunks {
            for (i, p) in c.payloads.iter().enumerate() {
                let offset = c.first_offset + i as u64;
                assert!(offset >= from, "read {offset} below {from}");
                out.push((offset, String::from_utf8_lossy(p).into_owned()));
            }
        }
        match out.last() {
            Some(&(last, _)) if out.len() > before => from = last + 1,
            // The plan's spans held nothing from `from` on: past the end.
            _ => return Ok(out),
        }
    }
    panic!("reads never reached the end");
}

fn expected(topic: u64, offsets: impl IntoIterator<Item = u64>) -> Vec<(u64, String)> {
    offsets.into_iter().map(|o| (o, text(topic, o))).collect()
}

/// Three topics' single-message records interleaved, `rounds` of each.
fn interleaved(log: &mut Log, rounds: u64) {
    let records: Vec<Record> = (0..rounds)
        .flat_map(|o| (1..=3).map(move |t| message(t, o, &text(t, o))))
        .collect();
    for chunk in records.chunks(50) {
        let (_, events) = commit(log, chunk);
        assert!(losses(&events).is_empty());
    }
}

#[test]
fn interleaved_topics_read_back_exactly_from_a_handful_of_spans() {
    let fs = courier::storage::SimFs::new(1);
    let mut o = open(&fs, inline(256 << 10)).expect("open");
    interleaved(&mut o.log, 3000);
    let segments = o.log.segments().len();
    assert!(segments >= 2, "spans cross segment boundaries");
    // 9000 records, ~1 MiB of log: one span per 64 KiB per topic, plus
    // one per segment change.
    let log_kib = 9000 * 200 / 1024;
    let bound = 3 * (log_kib / 64 + 1 + segments);
    assert!(
        o.log.indexed_spans() <= bound,
        "{} spans for 9000 records (bound {bound})",
        o.log.indexed_spans()
    );
    for topic in 1..=3 {
        for from in [0, 1, 1234, 2999] {
            for per_read in [1, 7, 1000] {
                assert_eq!(
                    read_all(&o.log, topic, from, per_read),
                    expected(topic, from..3000),
                    "topic {topic} from {from} by {per_read}"
                );
            }
        }
    }
    // The same after a reopen: the index is rebuilt by recovery.
    drop(o);
    let again = open(&fs, inline(256 << 10)).expect("reopen");
    assert_eq!(read_all(&again.log, 2, 17, 100), expected(2, 17..3000));
}

#[test]
fn released_segments_leave_the_rest_readable_and_stale_plans_gone() {
    let fs = courier::storage::SimFs::new(2);
    let mut o = open(&fs, inline(16 << 10)).expect("open");
    interleaved(&mut o.log, 600);
    let stale = o.log.plan_read(1, 0, u64::MAX, 10, 4096);
    let segments = o.log.segments();
    assert!(segments.len() > 4, "{segments:?}");
    let released = o.log.release_below(segments[3]);
    assert_eq!(released.len(), 3);
    let first_kept = read_all(&o.log, 1, 0, 50);
    let start = first_kept.first().map(|&(o, _)| o).expect("some kept");
    assert!(start > 0);
    assert_eq!(first_kept, expected(1, start..600));
    assert!(matches!(
        o.log
            .reader()
            .read_range(1, &stale, 0, 10, 4096)
            .map(|_| ()),
        Err(ReadError::Gone)
    ));
}

#[test]
fn a_loss_inside_a_span_leaves_a_gap_and_the_kept_records_readable() {
    let fs = courier::storage::SimFs::new(3);
    let mut o = open(&fs, inline(1 << 20)).expect("open");
    let first: Vec<Record> = (0..20).map(|i| message(5, i, &text(5, i))).collect();
    commit(&mut o.log, &first);
    // Offsets 20..30 would share the span, but their write fails.
    fs.fail_writes(1);
    let lost: Vec<Record> = (20..30).map(|i| message(5, i, &text(5, i))).collect();
    let (_, events) = commit(&mut o.log, &lost);
    assert_eq!(losses(&events).len(), 1);
    let after: Vec<Record> = (30..40).map(|i| message(5, i, &text(5, i))).collect();
    let (_, events) = commit(&mut o.log, &after);
    assert!(losses(&events).is_empty());
    let want: Vec<_> = expected(5, (0..20).chain(30..40));
    assert_eq!(read_all(&o.log, 5, 0, 3), want);
    assert_eq!(read_all(&o.log, 5, 25, 3), expected(5, 30..40));
}

#[test]
fn gaps_in_a_topics_offsets_are_absent_not_errors() {
    let fs = courier::storage::SimFs::new(4);
    let mut o = open(&fs, inline(1 << 20)).expect("open");
    let records: Vec<Record> = (0..5)
        .chain(10..15)
        .chain(100..103)
        .map(|i| message(6, i, &text(6, i)))
        .collect();
    commit(&mut o.log, &records);
    let want = expected(6, (0..5).chain(10..15).chain(100..103));
    assert_eq!(read_all(&o.log, 6, 0, 2), want);
    assert_eq!(read_all(&o.log, 6, 7, 100), want[5..].to_vec());
    // Inside a span, a gap's offsets lead to the next record after it.
    assert_eq!(read_all(&o.log, 6, 50, 1), expected(6, 100..103));
}

#[test]
fn records_not_yet_durable_are_not_planned() {
    let fs = courier::storage::SimFs::new(5);
    let mut o = open(&fs, inline(1 << 20)).expect("open");
    let durable: Vec<Record> = (0..10).map(|i| message(7, i, &text(7, i))).collect();
    commit(&mut o.log, &durable);
    // Same span, appended but never handed to the writer.
    for i in 10..20 {
        o.log.append(&message(7, i, &text(7, i))).expect("fits");
    }
    assert_eq!(read_all(&o.log, 7, 0, 100), expected(7, 0..10));
    o.log.flush();
    o.log.poll();
    assert_eq!(read_all(&o.log, 7, 0, 100), expected(7, 0..20));
}

/// A temporary directory, removed at drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn damage_to_another_topics_record_inside_a_span_fails_the_read() {
    let dir =
        TempDir(std::env::temp_dir().join(format!("courier-storage-index-{}", std::process::id())));
    let config = Config {
        sync: SyncMode::Always,
        writer: WriterKind::Inline,
        ..Config::default()
    };
    let (mut log, _) =
        Log::open(Arc::new(StdFs), &dir.0, config, Box::new(|| {}), |_, _| {}).expect("open");
    // Topic 1, then topic 2, then topic 1 again: one span of topic 1 with
    // topic 2's record inside it.
    let records = [
        message(1, 0, &text(1, 0)),
        message(2, 0, &text(2, 0)),
        message(1, 1, &text(1, 1)),
    ];
    commit(&mut log, &records);
    assert_eq!(log.indexed_spans(), 2);
    let plan = log.plan_read(1, 0, u64::MAX, 10, 4096);
    assert_eq!(plan.len(), 1);
    let mut offsets = BTreeMap::new();
    for (i, r) in records.iter().enumerate() {
        offsets.insert(i, courier::storage::FRAME_HEADER_LEN + r.body_len());
    }
    // The last byte of topic 2's payload.
    let flip = plan[0].at.offset as usize + offsets[&0] + offsets[&1] - 1;
    let path = dir
        .0
        .join(courier::storage::segment_name(plan[0].at.segment));
    let mut bytes = std::fs::read(&path).expect("segment");
    bytes[flip] ^= 0x40;
    std::fs::write(&path, &bytes).expect("write");
    let result = log.reader().read_range(1, &plan, 0, 10, 4096);
    assert!(matches!(result, Err(ReadError::Corrupt(_))), "{result:?}");
    // From offset 1 on the read still walks the whole span: still refused.
    let plan = log.plan_read(1, 1, u64::MAX, 10, 4096);
    assert!(matches!(
        log.reader().read_range(1, &plan, 1, 10, 4096),
        Err(ReadError::Corrupt(_))
    ));
}
