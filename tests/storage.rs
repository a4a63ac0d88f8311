//! The durable log through its public API: round trips, the data-dir lock,
//! the writer thread, injected disk faults, directory durability, segment
//! release and read-back. Recovery from damage and power cuts is in
//! tests/storage_recovery.rs.

mod storage_support;

use courier::storage::{
    Config, Event, Fs, Location, Log, OpenError, ReadError, Record, SimFs, StdFs, SyncMode,
    WriteError, WriteOp, segment_name,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use storage_support::{commit, dir, every_kind, inline, losses, message, open};

#[test]
fn every_record_kind_round_trips_through_a_clean_close() {
    let fs = SimFs::new(1);
    let mut o = open(&fs, inline(1 << 20)).expect("open empty");
    assert_eq!(o.report.records, 0);
    let (seqs, events) = commit(&mut o.log, &every_kind());
    assert_eq!(
        events,
        vec![Event::Durable {
            through: seqs[seqs.len() - 1] + 1
        }]
    );
    o.log.close();
    let again = open(&fs, inline(1 << 20)).expect("reopen");
    let want: Vec<(u64, Record)> = seqs.into_iter().zip(every_kind()).collect();
    assert_eq!(again.replayed, want);
    assert_eq!(again.report.records, want.len() as u64);
    assert!(again.report.torn_tail.is_none());
    // New appends after a reopen never reuse a sequence number.
    assert!(again.log.next_seq() > want[want.len() - 1].0);
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!("courier-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn open_std(path: &Path, replayed: &mut Vec<Record>) -> Result<Log, OpenError> {
    let config = Config {
        segment_bytes: 1024,
        ..Config::default()
    };
    let (log, _) = Log::open(Arc::new(StdFs), path, config, Box::new(|| {}), |_, r| {
        replayed.push(r)
    })?;
    Ok(log)
}

/// Waits, with a deadline, until everything appended is reported durable.
fn wait_durable(log: &mut Log, woken: &mpsc::Receiver<()>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while log.durable() < log.next_seq() {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "writer never reported durable");
        let _ = woken.recv_timeout(left);
        let events = log.poll();
        assert!(losses(&events).is_empty(), "{events:?}");
    }
}

#[test]
fn the_writer_thread_on_a_real_disk_commits_rolls_and_wakes_the_owner() {
    let tmp = TempDir::new("storage-thread");
    let (tx, woken) = mpsc::channel();
    let config = Config {
        segment_bytes: 1024,
        ..Config::default()
    };
    let (mut log, _) = Log::open(
        Arc::new(StdFs),
        &tmp.0,
        config,
        Box::new(move || {
            let _ = tx.send(());
        }),
        |_, _| {},
    )
    .expect("open");
    let mut written = every_kind();
    for r in &written {
        log.append(r).expect("fits");
    }
    for round in 0..20u64 {
        for i in 0..10 {
            let r = message(1, round * 10 + i, &format!("payload {round}/{i}"));
            log.append(&r).expect("fits");
            written.push(r);
        }
        log.flush();
    }
    wait_durable(&mut log, &woken);
    assert!(log.segments().len() > 3, "{:?}", log.segments());
    log.close();
    let mut replayed = Vec::new();
    let log = open_std(&tmp.0, &mut replayed).expect("reopen");
    assert_eq!(replayed, written);
    drop(log);
}

#[test]
fn a_second_open_of_the_same_directory_is_refused_until_the_first_closes() {
    let tmp = TempDir::new("storage-lock");
    let mut replayed = Vec::new();
    let first = open_std(&tmp.0, &mut replayed).expect("first open");
    match open_std(&tmp.0, &mut replayed) {
        Err(OpenError::Locked { dir }) => assert_eq!(dir, tmp.0),
        other => panic!("expected Locked, got {:?}", other.map(|_| ())),
    }
    first.close();
    open_std(&tmp.0, &mut replayed).expect("open after close");

    let fs = SimFs::new(2);
    let held = open(&fs, inline(4096)).expect("sim open");
    assert!(matches!(
        open(&fs, inline(4096)).map(|_| ()),
        Err(OpenError::Locked { .. })
    ));
    drop(held);
    open(&fs, inline(4096)).expect("sim open after drop");
}

/// Checks that nothing lost is reported durable, and returns the seqs lost.
fn lost_seqs(events: &[Event]) -> Vec<u64> {
    losses(events).into_iter().flat_map(|l| l.seqs).collect()
}

#[test]
fn a_full_disk_loses_the_batch_and_writing_resumes_in_a_new_segment() {
    let fs = SimFs::new(3);
    let mut o = open(&fs, inline(1 << 20)).expect("open");
    let (ok, _) = commit(&mut o.log, &[message(1, 0, "kept")]);
    let first_segment = o.log.segments();

    fs.set_full(true);
    let (lost, events) = commit(&mut o.log, &[message(1, 1, "lost"), message(1, 2, "lost")]);
    let loss = losses(&events);
    assert_eq!(loss.len(), 1, "{events:?}");
    assert_eq!(loss[0].error, WriteError::NoSpace { op: WriteOp::Write });
    assert_eq!(lost_seqs(&events), lost);
    // Still full: the new segment cannot even be created.
    let (lost_again, events) = commit(&mut o.log, &[message(1, 3, "lost too")]);
    assert_eq!(
        losses(&events)[0].error,
        WriteError::NoSpace {
            op: WriteOp::Create
        }
    );
    assert_eq!(lost_seqs(&events), lost_again);

    fs.set_full(false);
    let (resumed, events) = commit(&mut o.log, &[message(1, 4, "resumed")]);
    assert_eq!(
        events,
        vec![Event::Durable {
            through: resumed[0] + 1
        }]
    );
    let segments = o.log.segments();
    assert_eq!(segments.last(), Some(&resumed[0]));
    assert!(fs.names(dir()).contains(&segment_name(resumed[0])));
    assert_ne!(segments, first_segment);
    drop(o);

    let again = open(&fs, inline(1 << 20)).expect("reopen");
    let seqs: Vec<u64> = again.replayed.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, vec![ok[0], resumed[0]]);
}

#[test]
fn a_failed_fsync_loses_what_it_covered_and_is_never_retried() {
    let fs = SimFs::new(4);
    let mut o = open(&fs, inline(1 << 20)).expect("open");
    let (kept, _) = commit(&mut o.log, &[message(2, 0, "kept")]);
    fs.fail_syncs(1);
    let (lost, events) = commit(&mut o.log, &[message(2, 1, "lost")]);
    let loss = losses(&events);
    assert!(matches!(
        loss[0].error,
        WriteError::Io {
            op: WriteOp::Sync,
            code: Some(libc::EIO),
            ..
        }
    ));
    assert_eq!(lost_seqs(&events), lost);
    let (after, events) = commit(&mut o.log, &[message(2, 2, "after")]);
    assert!(losses(&events).is_empty(), "{events:?}");
    assert_eq!(o.log.segments().last(), Some(&after[0]));
    drop(o);
    // A power cut too: the bytes the failed sync covered are gone from the
    // disk, and recovery must not trip over what is left.
    fs.power_cut();
    let again = open(&fs, inline(1 << 20)).expect("reopen");
    let seqs: Vec<u64> = again.replayed.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, vec![kept[0], after[0]]);
}

#[test]
fn an_eio_on_write_is_typed_and_the_next_batch_starts_a_new_segment() {
    let fs = SimFs::new(5);
    let mut o = open(&fs, inline(1 << 20)).expect("open");
    commit(&mut o.log, &[message(3, 0, "a")]);
    fs.fail_writes(1);
    let (lost, events) = commit(&mut o.log, &[message(3, 1, "b")]);
    assert!(matches!(
        losses(&events)[0].error,
        WriteError::Io {
            op: WriteOp::Write,
            code: Some(libc::EIO),
            ..
        }
    ));
    assert_eq!(lost_seqs(&events), lost);
    assert!(o.log.durable() > lost[0], "durable passes a reported loss");
    let (next, events) = commit(&mut o.log, &[message(3, 2, "c")]);
    assert_eq!(
        events,
        vec![Event::Durable {
            through: next[0] + 1
        }]
    );
    // The lost record is not read back either: its offset is a gap.
    assert_eq!(offsets_read(&o.log, 3, 0), vec![0, 2]);
}

/// The offsets of `topic` read back from the log from `from` on.
fn offsets_read(log: &Log, topic: u64, from: u64) -> Vec<u64> {
    let plan = log.plan_read(topic, from, u64::MAX, u64::MAX, u64::MAX);
    let chunks = log
        .reader()
        .read_range(topic, &plan, from, usize::MAX, usize::MAX)
        .expect("read back");
    chunks
        .iter()
        .flat_map(|c| c.first_offset..c.first_offset + c.payloads.len() as u64)
        .collect()
}

#[test]
fn a_segment_whose_directory_entry_was_not_synced_is_lost_at_a_cut() {
    // At the file-system level first: data synced, entry not.
    let fs = SimFs::new(6);
    let path = dir().join("file");
    let mut f = fs.create_new(&path).expect("create");
    f.write_at(0, b"bytes").expect("write");
    f.sync_data().expect("sync");
    fs.power_cut();
    assert!(fs.contents(&path).is_none());

    // Then through the log: the cut comes before the new segment's
    // directory sync (create, header, sync, then sync_dir).
    let fs = SimFs::new(7);
    let mut o = open(&fs, inline(1 << 20)).expect("open");
    fs.crash_after(3);
    let (seqs, events) = commit(&mut o.log, &[message(4, 0, "never durable")]);
    assert!(matches!(
        losses(&events)[0].error,
        WriteError::Io {
            op: WriteOp::SyncDir,
            ..
        }
    ));
    assert_eq!(lost_seqs(&events), seqs);
    drop(o);
    fs.power_cut();
    assert!(
        fs.names(dir())
            .iter()
            .all(|n| n == "LOCK" || !n.ends_with(".log"))
    );
    let again = open(&fs, inline(1 << 20)).expect("recovery copes");
    assert!(again.replayed.is_empty());
}

#[test]
fn released_segments_go_and_the_rest_reads_back_by_location() {
    let fs = SimFs::new(8);
    let mut o = open(&fs, inline(512)).expect("open");
    let records: Vec<Record> = (0..60)
        .map(|i| message(9, i, &format!("m{i:03}")))
        .collect();
    let (seqs, _) = commit(&mut o.log, &records);
    let segments = o.log.segments();
    assert!(segments.len() >= 4, "{segments:?}");

    let reader = o.log.reader();
    // The index's span holding offset 42 starts at or before its record,
    // in its segment.
    let at = o.log.locate(9, 42).expect("indexed");
    let Record::Messages { first_offset, .. } = reader.read(at).expect("read back") else {
        panic!("a span starts with the topic's messages");
    };
    assert!(first_offset <= 42);
    assert_eq!(offsets_read(&o.log, 9, 42), (42..60).collect::<Vec<_>>());

    // Release below the 31st record: only segments wholly below it go.
    let released = o.log.release_below(seqs[30]);
    assert!(!released.is_empty());
    let kept = o.log.segments();
    assert!(kept[0] <= seqs[30]);
    for s in &released {
        assert!(!fs.names(dir()).contains(&segment_name(*s)));
    }
    assert!(o.log.locate(9, 0).is_none());
    let stale = Location {
        segment: released[0],
        offset: 32,
        seq: released[0],
    };
    assert!(matches!(reader.read(stale), Err(ReadError::Gone)));
    drop(o);

    // Reopened, replay starts at the first kept segment and the index is
    // rebuilt from it.
    let again = open(&fs, inline(512)).expect("reopen");
    assert_eq!(again.replayed[0].0, kept[0]);
    assert_eq!(again.replayed.last().map(|r| r.0), seqs.last().copied());
    assert!(again.log.locate(9, 59).is_some(), "indexed after reopen");
    assert_eq!(offsets_read(&again.log, 9, 59), vec![59]);
}

#[test]
fn release_keeps_the_segment_being_written() {
    let fs = SimFs::new(9);
    let mut o = open(&fs, inline(256)).expect("open");
    let records: Vec<Record> = (0..20).map(|i| message(1, i, "x")).collect();
    commit(&mut o.log, &records);
    o.log.append(&message(1, 20, "pending")).expect("fits");
    let before = o.log.segments();
    let released = o.log.release_below(u64::MAX);
    let after = o.log.segments();
    assert_eq!(after, before[before.len() - 1..]);
    assert_eq!(released, before[..before.len() - 1]);
    o.log.flush();
    drop(o);
    let again = open(&fs, inline(256)).expect("reopen");
    assert_eq!(again.replayed.first().map(|r| r.0), after.first().copied());
}

#[test]
fn interval_and_never_modes_report_once_written() {
    for sync in [
        SyncMode::Interval(Duration::from_secs(3600)),
        SyncMode::Never,
    ] {
        let fs = SimFs::new(10);
        let mut config = inline(1 << 20);
        config.sync = sync;
        let mut o = open(&fs, config).expect("open");
        let (seqs, events) = commit(&mut o.log, &[message(1, 0, "a")]);
        assert_eq!(
            events,
            vec![Event::Durable {
                through: seqs[0] + 1
            }]
        );
        // Reported, yet not synced: a power cut may take it. Closing syncs.
        o.log.close();
        fs.power_cut();
        let again = open(&fs, config).expect("reopen");
        assert_eq!(again.replayed.len(), 1, "{sync:?}");
    }
}

#[test]
fn a_record_over_the_limit_is_refused_before_it_is_copied() {
    let fs = SimFs::new(11);
    let mut o = open(&fs, inline(1 << 20)).expect("open");
    let huge = Record::TopicCreated {
        topic: 1,
        name: "x".repeat(courier::storage::MAX_BODY_LEN),
    };
    assert!(o.log.append(&huge).is_err());
    assert_eq!(o.log.next_seq(), 1);
}

#[test]
fn the_writer_thread_reports_a_loss_through_notify_and_resumes() {
    let fs = SimFs::new(12);
    let (tx, woken) = mpsc::channel();
    let config = Config {
        segment_bytes: 4096,
        ..Config::default()
    };
    let (mut log, _) = Log::open(
        Arc::new(fs.clone()),
        dir(),
        config,
        Box::new(move || {
            let _ = tx.send(());
        }),
        |_, _| {},
    )
    .expect("open");
    log.append(&message(1, 0, "kept")).expect("fits");
    log.flush();
    wait_durable(&mut log, &woken);

    fs.fail_syncs(1);
    let lost = log.append(&message(1, 1, "lost")).expect("fits");
    log.flush();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    while !seen.iter().any(|e| matches!(e, Event::Lost(_))) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no loss reported: {seen:?}");
        let _ = woken.recv_timeout(left);
        seen.extend(log.poll());
    }
    assert_eq!(lost_seqs(&seen), vec![lost]);

    let resumed = log.append(&message(1, 2, "resumed")).expect("fits");
    log.flush();
    wait_durable(&mut log, &woken);
    assert_eq!(log.segments().last(), Some(&resumed));
    log.close();
    let again = open(&fs, inline(4096)).expect("reopen");
    let seqs: Vec<u64> = again.replayed.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, vec![1, resumed]);
    assert_eq!(again.report.records, 2);
    assert!(again.report.bytes > 2 * courier::storage::FRAME_HEADER_LEN as u64);
}
