//! Recycled segments: a released segment file (or a zero-filled spare)
//! becomes the next segment, so what follows its records is zeros or records
//! of its previous life. These tests check that recovery never takes that
//! tail for records, still tells a tear from damage, and that power cuts at
//! every step of recycling and zeroing lose nothing reported durable.

mod storage_support;

use courier::storage::{
    Event, FRAME_HEADER_LEN, Fs, OpenError, Problem, Record, SimFs, segment_name,
};
use storage_support::{commit, dir, inline, message, open};

const SEGMENT: u64 = 2048;
const SPARE: &str = "recycled.spare";

fn records(from: u64, n: u64, tag: &str) -> Vec<Record> {
    (from..from + n)
        .map(|i| message(1, i, &format!("{tag}{i:05}")))
        .collect()
}

fn size(fs: &SimFs, name: &str) -> usize {
    fs.contents(&dir().join(name)).map_or(0, |b| b.len())
}

/// A log whose last segment is a recycled file: records are written until
/// the log has rolled several times, releasing as it goes, so the last
/// segments are old files renamed. Returns the disk, every record committed
/// and still held (in order), and the last segment's name.
fn recycled_log() -> (SimFs, Vec<(u64, Record)>, String) {
    let fs = SimFs::new(41);
    let mut o = open(&fs, inline(SEGMENT)).expect("open");
    let mut held = Vec::new();
    for round in 0..12u64 {
        let batch = records(round * 20, 20, "m");
        let (seqs, events) = commit(&mut o.log, &batch);
        assert!(
            !events.iter().any(|e| matches!(e, Event::Lost(_))),
            "{events:?}"
        );
        held.extend(seqs.into_iter().zip(batch));
        let active = o.log.active_segment();
        o.log.release_below(active);
        held.retain(|(s, _)| *s >= active);
        // Keep the spare's preparation going as an idle writer would.
        o.log.flush();
    }
    let last = segment_name(o.log.active_segment());
    o.log.close();
    (fs, held, last)
}

#[test]
fn a_released_segment_becomes_the_next_one_and_its_old_tail_is_not_replayed() {
    let (fs, held, last) = recycled_log();
    // The last segment is a reused file: larger than its records.
    assert!(
        size(&fs, &last) >= SEGMENT as usize,
        "{last}: {}",
        size(&fs, &last)
    );
    let again = open(&fs, inline(SEGMENT)).expect("reopen");
    assert_eq!(again.replayed, held);
    assert_eq!(again.report.torn_tail, None, "a recycled end is no tear");
    assert_eq!(again.report.corruption_cut, None);
}

/// The realistic power-cut image of a recycled segment: the new bytes from
/// `cut` on never reached the disk, so the old bytes of the file are there.
fn with_old_bytes_from(new: &[u8], old: &[u8], cut: usize) -> Vec<u8> {
    let mut out = new[..cut].to_vec();
    out.extend_from_slice(old.get(cut..).unwrap_or_default());
    out
}

#[test]
fn a_recycled_segment_cut_at_every_byte_recovers_exactly_the_complete_records() {
    let (fs, held, last) = recycled_log();
    let path = dir().join(&last);
    let new = fs.contents(&path).expect("last segment");
    let first: u64 = last.trim_end_matches(".log").parse().expect("name");
    let in_last: Vec<&(u64, Record)> = held.iter().filter(|(s, _)| *s >= first).collect();
    let before: Vec<(u64, Record)> = held.iter().filter(|(s, _)| *s < first).cloned().collect();
    // Where each record of the last segment ends.
    let mut ends = Vec::new();
    let mut at = courier::storage::SEGMENT_HEADER_LEN;
    for (_, r) in &in_last {
        at += FRAME_HEADER_LEN + r.body_len();
        ends.push(at);
    }
    // The file's previous life: the old bytes under the new records.
    for old_fill in [0u8, 1] {
        let old: Vec<u8> = if old_fill == 0 {
            vec![0; new.len()]
        } else {
            // Stale frames: the bytes of an earlier segment, shifted so
            // that its records sit at other offsets too.
            let other = fs
                .contents(&dir().join(SPARE))
                .unwrap_or_else(|| vec![0; new.len()]);
            let mut o = other;
            o.resize(new.len(), 0);
            o
        };
        for cut in courier::storage::SEGMENT_HEADER_LEN..=at {
            let image = with_old_bytes_from(&new, &old, cut);
            let disk = fs_with(&fs, &last, image);
            let got = open(&disk, inline(SEGMENT))
                .unwrap_or_else(|e| panic!("cut {cut} fill {old_fill}: {e}"));
            let complete = ends.iter().filter(|&&e| e <= cut).count();
            let mut expected = before.clone();
            expected.extend(in_last[..complete].iter().map(|r| (*r).clone()));
            assert_eq!(got.replayed, expected, "cut {cut} fill {old_fill}");
        }
    }
}

/// A copy of every durable file of `fs`, with `name` replaced by `bytes`.
fn fs_with(fs: &SimFs, name: &str, bytes: Vec<u8>) -> SimFs {
    let copy = SimFs::new(7);
    for n in fs.names(dir()) {
        let content = if n == name {
            bytes.clone()
        } else {
            fs.contents(&dir().join(&n)).expect("file")
        };
        let mut f = copy.create_new(&dir().join(&n)).expect("create");
        f.write_at(0, &content).expect("write");
        f.sync_data().expect("sync");
    }
    copy.sync_dir(dir()).expect("sync dir");
    copy
}

#[test]
fn a_flipped_byte_inside_a_recycled_segment_is_corruption_not_an_end() {
    let (fs, held, last) = recycled_log();
    let first: u64 = last.trim_end_matches(".log").parse().expect("name");
    let in_last: Vec<&(u64, Record)> = held.iter().filter(|(s, _)| *s >= first).collect();
    assert!(in_last.len() >= 2, "{}", in_last.len());
    let new = fs.contents(&dir().join(&last)).expect("last segment");
    // Every byte of every record but the last: a valid later record
    // follows, so the damage is never judged a recycled end or a tear.
    let mut at = courier::storage::SEGMENT_HEADER_LEN;
    let last_start = in_last[..in_last.len() - 1]
        .iter()
        .map(|(_, r)| FRAME_HEADER_LEN + r.body_len())
        .sum::<usize>()
        + at;
    while at < last_start {
        let mut bad = new.clone();
        bad[at] ^= 0x5a;
        let disk = fs_with(&fs, &last, bad);
        match open(&disk, inline(SEGMENT)) {
            Err(OpenError::Corrupt(c)) => {
                assert!(c.file.ends_with(&last), "byte {at}");
                assert!(
                    !matches!(c.problem, Problem::Missing { .. }),
                    "byte {at}: {:?}",
                    c.problem
                );
            }
            Err(e) => panic!("byte {at}: {e}"),
            Ok(_) => panic!("byte {at}: damage accepted"),
        }
        at += 7;
    }
}

#[test]
fn power_cuts_during_recycling_and_zeroing_keep_everything_reported_durable() {
    for seed in 0..120u64 {
        let fs = SimFs::new(seed);
        let mut o = open(&fs, inline(SEGMENT)).expect("open");
        let mut durable: Vec<(u64, Record)> = Vec::new();
        let mut attempted: Vec<(u64, Record)> = Vec::new();
        let mut floor = 0;
        // The crash point falls anywhere in rolls, renames, zeroing and
        // removals, as the seed says.
        fs.crash_after(seed * 3);
        for round in 0..10u64 {
            let batch = records(round * 20, 20, &format!("s{seed}-"));
            let (seqs, events) = commit(&mut o.log, &batch);
            let pairs: Vec<(u64, Record)> = seqs.into_iter().zip(batch).collect();
            attempted.extend(pairs.iter().cloned());
            if events.iter().any(|e| matches!(e, Event::Lost(_))) {
                break;
            }
            durable.extend(pairs);
            floor = o.log.active_segment();
            o.log.release_below(floor);
        }
        drop(o);
        fs.power_cut();
        let again = open(&fs, inline(SEGMENT)).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        // Everything reported durable and not released is replayed, once,
        // in order; after it only what was written and reported lost may
        // come back (a lost write that reached the disk after all:
        // at-least-once), never a stale record.
        let kept: Vec<(u64, Record)> = durable.into_iter().filter(|(s, _)| *s >= floor).collect();
        let attempted: Vec<(u64, Record)> =
            attempted.into_iter().filter(|(s, _)| *s >= floor).collect();
        let replayed: Vec<(u64, Record)> = again
            .replayed
            .iter()
            .filter(|(s, _)| *s >= floor)
            .cloned()
            .collect();
        assert!(replayed.len() >= kept.len(), "seed {seed}");
        assert_eq!(replayed[..kept.len()], kept[..], "seed {seed}");
        assert!(replayed.len() <= attempted.len(), "seed {seed}");
        assert_eq!(replayed[..], attempted[..replayed.len()], "seed {seed}");
        let seqs: Vec<u64> = again.replayed.iter().map(|(s, _)| *s).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "seed {seed}");
    }
}
