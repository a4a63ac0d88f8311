//! Recovery from damage: the log cut at every byte of its tail, bytes
//! flipped anywhere, and hundreds of seeded power-cut schedules, with and
//! without injected disk faults.

mod storage_support;

use courier::storage::{
    Event, Fs, OpenError, Record, RecoveryMode, SEGMENT_HEADER_LEN, SimFs, SyncMode, segment_name,
};
use std::collections::BTreeMap;
use storage_support::{Rng, commit, dir, every_kind, inline, message, open};

/// The segment files of a closed log, in order, with each record's
/// (segment, start offset, end offset).
struct Image {
    files: Vec<(String, Vec<u8>)>,
    records: Vec<Record>,
    spans: Vec<(usize, usize, usize)>,
}

fn image(records: Vec<Record>, segment_bytes: u64) -> Image {
    let fs = SimFs::new(100);
    let mut o = open(&fs, inline(segment_bytes)).expect("open");
    let (seqs, _) = commit(&mut o.log, &records);
    let mut spans = Vec::new();
    let segments = o.log.segments();
    // Records follow each other from the header, with no padding.
    let mut at = (usize::MAX, 0);
    for (seq, r) in seqs.iter().zip(&records) {
        let seg = segments.iter().rposition(|s| s <= seq).expect("segment");
        assert!(
            matches!(r, Record::Messages { .. }),
            "images are built from messages"
        );
        if at.0 != seg {
            at = (seg, SEGMENT_HEADER_LEN);
        }
        let len = courier::storage::FRAME_HEADER_LEN + r.body_len();
        spans.push((seg, at.1, at.1 + len));
        at.1 += len;
    }
    o.log.close();
    let files = segments
        .iter()
        .map(|s| {
            let name = segment_name(*s);
            let bytes = fs.contents(&dir().join(&name)).expect("segment file");
            (name, bytes)
        })
        .collect();
    Image {
        files,
        records,
        spans,
    }
}

/// A fresh disk holding `files`, all durable.
fn place(files: &[(String, Vec<u8>)]) -> SimFs {
    let fs = SimFs::new(200);
    for (name, bytes) in files {
        let mut f = fs.create_new(&dir().join(name)).expect("create");
        f.write_at(0, bytes).expect("write");
        f.sync_data().expect("sync");
    }
    fs.sync_dir(dir()).expect("sync dir");
    fs
}

fn messages(n: u64) -> Vec<Record> {
    (0..n)
        .map(|i| message(1, i, &"p".repeat(1 + (i as usize * 7) % 23)))
        .collect()
}

fn records_of(replayed: &[(u64, Record)]) -> Vec<Record> {
    replayed.iter().map(|(_, r)| r.clone()).collect()
}

#[test]
fn the_last_segment_cut_at_every_byte_recovers_exactly_the_complete_records() {
    let img = image(messages(12), 400);
    assert!(img.files.len() >= 2, "want earlier segments too");
    let last = img.files.len() - 1;
    let (name, bytes) = &img.files[last];
    for cut in 0..=bytes.len() {
        let mut files = img.files.clone();
        files[last] = (name.clone(), bytes[..cut].to_vec());
        let fs = place(&files);
        let mut o = open(&fs, inline(400)).unwrap_or_else(|e| panic!("cut {cut}: {e}"));
        let complete: Vec<Record> = img
            .spans
            .iter()
            .zip(&img.records)
            .filter(|((seg, _, end), _)| *seg < last || *end <= cut)
            .map(|(_, r)| r.clone())
            .collect();
        assert_eq!(records_of(&o.replayed), complete, "cut {cut}");
        let boundary = cut == bytes.len()
            || cut == SEGMENT_HEADER_LEN
            || img
                .spans
                .iter()
                .any(|(seg, _, end)| *seg == last && *end == cut);
        assert_eq!(o.report.torn_tail.is_some(), !boundary, "cut {cut}");
        // The cut is made on disk: appending and reopening sees no damage.
        let extra = message(2, 0, "after the cut");
        commit(&mut o.log, std::slice::from_ref(&extra));
        drop(o);
        let again = open(&fs, inline(400)).unwrap_or_else(|e| panic!("cut {cut} again: {e}"));
        let mut want = complete;
        want.push(extra);
        assert_eq!(records_of(&again.replayed), want, "cut {cut} reopened");
        assert!(again.report.torn_tail.is_none());
    }
}

/// Where recovery must say the damage is when byte `at` of file `file` is
/// flipped: the record holding it, or the segment header.
fn damaged_record(img: &Image, file: usize, at: usize) -> (usize, Option<usize>) {
    if at < SEGMENT_HEADER_LEN {
        return (0, img.spans.iter().position(|(s, _, _)| *s == file));
    }
    let i = img
        .spans
        .iter()
        .position(|(s, start, end)| *s == file && (*start..*end).contains(&at))
        .expect("every byte past the header is in a record");
    (img.spans[i].1, Some(i))
}

#[test]
fn a_flipped_byte_is_found_with_its_file_and_offset_and_never_replayed() {
    let img = image(messages(22), 400);
    let last_record = img.spans.len() - 1;
    let last_file = img.files.len() - 1;
    assert!(img.files.len() >= 3, "want damage in earlier segments");
    assert!(
        img.spans.iter().filter(|(s, _, _)| *s == last_file).count() >= 3,
        "want damage in the middle of the last segment"
    );
    for (file, (name, bytes)) in img.files.iter().enumerate() {
        for at in 0..bytes.len() {
            let (offset, record) = damaged_record(&img, file, at);
            let mut files = img.files.clone();
            files[file].1[at] ^= 0x5a;
            let fs = place(&files);
            let first_bad = record.unwrap_or(img.records.len());
            if at >= SEGMENT_HEADER_LEN && record == Some(last_record) {
                // The very last record damaged is a torn tail: nothing
                // after it can prove otherwise.
                let o = open(&fs, inline(400)).expect("torn tail");
                assert_eq!(records_of(&o.replayed), img.records[..last_record]);
                assert!(o.report.torn_tail.is_some());
                continue;
            }
            let mut seen = Vec::new();
            let strict = courier::storage::Log::open(
                std::sync::Arc::new(fs.clone()),
                dir(),
                inline(400),
                Box::new(|| {}),
                |_, r| seen.push(r),
            );
            match strict {
                Err(OpenError::Corrupt(c)) => {
                    assert_eq!(c.file, dir().join(name), "{name} byte {at}");
                    assert_eq!(c.offset, offset as u64, "{name} byte {at}: {:?}", c.problem);
                }
                other => panic!(
                    "{name} byte {at}: expected corruption, got {:?}",
                    other.map(|_| ())
                ),
            }
            assert!(
                seen.len() <= first_bad,
                "{name} byte {at}: damaged record replayed"
            );
            assert_eq!(seen, img.records[..seen.len()], "{name} byte {at}");

            // Told to, recovery cuts there, says so, and the cut holds.
            let mut config = inline(400);
            config.recovery = RecoveryMode::TruncateAtCorruption;
            let o = open(&fs, config).expect("truncating open");
            let cut = o.report.corruption_cut.clone().expect("cut reported");
            assert_eq!((cut.file, cut.offset), (dir().join(name), offset as u64));
            assert!(cut.bytes_dropped > 0);
            assert_eq!(
                cut.segments_removed.len(),
                img.files.len() - file - 1,
                "{name} byte {at}"
            );
            assert_eq!(records_of(&o.replayed), img.records[..first_bad]);
            drop(o);
            let again = open(&fs, inline(400)).expect("strict open after the cut");
            assert_eq!(records_of(&again.replayed), img.records[..first_bad]);
        }
    }
}

/// What a schedule appended and what the writer said about it.
#[derive(Default)]
struct Ledger {
    appended: BTreeMap<u64, Record>,
    durable: u64,
    lost: Vec<u64>,
    /// The highest bound given to `release_below`.
    released: u64,
}

impl Ledger {
    fn note(&mut self, events: &[Event]) {
        for e in events {
            match e {
                Event::Durable { through } => self.durable = self.durable.max(*through),
                Event::Lost(l) => self.lost.extend(l.seqs.clone()),
                Event::RemoveFailed { .. } => {}
            }
        }
    }

    /// Reported durable and never reported lost: must survive anything.
    fn promised(&self) -> Vec<u64> {
        self.appended
            .keys()
            .copied()
            .filter(|s| *s < self.durable && *s >= self.released && !self.lost.contains(s))
            .collect()
    }
}

/// Runs one seeded schedule of appends and flushes; with `faults`, disk
/// faults are injected along the way. Power is cut at a random operation.
fn schedule(seed: u64, faults: bool) -> (SimFs, Ledger) {
    let mut rng = Rng::new(seed);
    let fs = SimFs::new(seed);
    let mut ledger = Ledger::default();
    let mut config = inline(150 + rng.below(400));
    // Every fourth schedule never syncs but to roll: nothing is promised
    // then, but recovery must still find a consistent log.
    let never = rng.below(4) == 0;
    if never {
        config.sync = SyncMode::Never;
    }
    let mut o = open(&fs, config).expect("open empty");
    fs.crash_after(rng.below(120));
    let mut offset = 0;
    for _ in 0..rng.below(40) {
        if faults {
            match rng.below(12) {
                0 => fs.fail_syncs(1),
                1 => fs.fail_writes(1),
                2 => fs.set_full(true),
                3 => fs.set_full(false),
                _ => {}
            }
        }
        let batch: Vec<Record> = (0..1 + rng.below(4))
            .map(|_| {
                offset += 1;
                message(
                    1 + rng.below(3),
                    offset,
                    &"x".repeat(rng.below(60) as usize),
                )
            })
            .collect();
        let (seqs, events) = commit(&mut o.log, &batch);
        ledger.appended.extend(seqs.into_iter().zip(batch));
        if !never {
            ledger.note(&events);
        }
        if rng.below(6) == 0 {
            let bound = o.log.durable().saturating_sub(rng.below(6));
            o.log.release_below(bound);
            ledger.released = ledger.released.max(bound);
        }
    }
    drop(o);
    clear_faults(&fs);
    fs.power_cut();
    (fs, ledger)
}

/// The disk is mended before recovery; faults during it are not the point.
fn clear_faults(fs: &SimFs) {
    fs.set_full(false);
    fs.fail_syncs(0);
    fs.fail_writes(0);
}

fn check_recovery(seed: u64, fs: &SimFs, ledger: &Ledger) -> Vec<u64> {
    let o = open(fs, inline(1 << 20)).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    let seqs: Vec<u64> = o.replayed.iter().map(|(s, _)| *s).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "seed {seed}: out of order"
    );
    for (seq, r) in &o.replayed {
        assert_eq!(
            ledger.appended.get(seq),
            Some(r),
            "seed {seed}: seq {seq} wrong"
        );
    }
    for s in ledger.promised() {
        assert!(seqs.contains(&s), "seed {seed}: durable seq {s} lost");
    }
    seqs
}

#[test]
fn power_cuts_at_random_points_keep_everything_reported_durable() {
    for seed in 1..=500 {
        let (fs, ledger) = schedule(seed, false);
        let seqs = check_recovery(seed, &fs, &ledger);
        // No fault but the cut: what survives is one run of what was
        // appended (released segments gone from its front), with no gap.
        let all: Vec<u64> = ledger.appended.keys().copied().collect();
        let start = seqs
            .first()
            .and_then(|f| all.iter().position(|s| s == f))
            .unwrap_or(0);
        let run: Vec<u64> = all.iter().copied().skip(start).take(seqs.len()).collect();
        assert_eq!(seqs, run, "seed {seed}: gap in what survived");
    }
}

#[test]
fn disk_faults_and_power_cuts_never_lose_a_durable_record() {
    for seed in 1..=500 {
        let (fs, ledger) = schedule(seed, true);
        check_recovery(seed, &fs, &ledger);
    }
}

#[test]
fn disk_faults_without_a_cut_recover_exactly_what_was_not_lost() {
    for seed in 1..=200 {
        let mut rng = Rng::new(seed);
        let fs = SimFs::new(seed);
        let mut ledger = Ledger::default();
        let mut o = open(&fs, inline(200 + rng.below(300))).expect("open");
        for i in 0..30 {
            match rng.below(8) {
                0 => fs.fail_syncs(1),
                1 => fs.fail_writes(1),
                2 => fs.set_full(true),
                _ => fs.set_full(false),
            }
            let batch = vec![message(1, i, &"y".repeat(rng.below(50) as usize))];
            let (seqs, events) = commit(&mut o.log, &batch);
            ledger.appended.extend(seqs.into_iter().zip(batch));
            ledger.note(&events);
        }
        clear_faults(&fs);
        ledger.note(&o.log.close());
        let seqs = check_recovery(seed, &fs, &ledger);
        let want: Vec<u64> = ledger
            .appended
            .keys()
            .copied()
            .filter(|s| !ledger.lost.contains(s))
            .collect();
        assert_eq!(
            seqs, want,
            "seed {seed}: lost records came back or others went"
        );
    }
}

#[test]
fn every_kind_survives_a_power_cut_once_reported_durable() {
    let fs = SimFs::new(300);
    let mut o = open(&fs, inline(1 << 20)).expect("open");
    let (_, events) = commit(&mut o.log, &every_kind());
    assert!(matches!(events.last(), Some(Event::Durable { .. })));
    fs.crash_after(0);
    drop(o);
    fs.power_cut();
    let again = open(&fs, inline(1 << 20)).expect("reopen");
    assert_eq!(records_of(&again.replayed), every_kind());
}

#[test]
fn a_long_garbage_tail_is_judged_torn_without_a_checksum_per_byte() {
    let img = image(messages(5), 1 << 20);
    let mut files = img.files.clone();
    let mut rng = Rng::new(77);
    let garbage: Vec<u8> = (0..1 << 20).map(|_| rng.next() as u8).collect();
    files[0].1.extend_from_slice(&garbage);
    let fs = place(&files);
    let o = open(&fs, inline(1 << 20)).expect("torn tail");
    assert_eq!(records_of(&o.replayed), img.records);
    let torn = o.report.torn_tail.expect("reported");
    assert_eq!(torn.bytes_dropped, garbage.len() as u64);
}
