//! The bytes around records: the segment header, the record frame with its
//! length and CRC32C, and segment file names. STORAGE.md is the prose twin
//! of this file; change both together and bump [`FORMAT_VERSION`].
//!
//! Parsing distinguishes "too short" from "wrong": recovery needs to know
//! whether a bad frame could be a write torn by a power cut.

use super::record::Record;

/// The first bytes of every segment file.
pub const MAGIC: [u8; 8] = *b"CRLOG\r\n\x1a";
/// The version of the on-disk format this code writes. Version 2 added
/// record kinds 9..=11 and the producer trailer of `Messages`; a version 1
/// segment is a valid version 2 one (every v1 body reads the same), so
/// both are read ([`OLDEST_READABLE_VERSION`]).
pub const FORMAT_VERSION: u32 = 2;
/// The oldest segment version this code reads.
pub const OLDEST_READABLE_VERSION: u32 = 1;
/// magic (8) + version (4) + first seq (8) + valid below (8) + crc (4).
pub const SEGMENT_HEADER_LEN: usize = 32;
/// length (4) + crc (4) + seq (8) + kind (1).
pub const FRAME_HEADER_LEN: usize = 17;
/// The largest record body accepted, writing or reading. It bounds what a
/// corrupt length field can make recovery or read-back allocate.
pub const MAX_BODY_LEN: usize = 64 << 20;

/// What a segment declares about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The sequence number of its first record (and in its file name).
    pub first_seq: u64,
    /// Records of earlier segments with a sequence number at or above this
    /// were lost to a write failure and must be ignored; see STORAGE.md.
    pub valid_below: u64,
}

/// Why a segment header is not valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    Short,
    BadMagic,
    BadChecksum,
    UnsupportedVersion(u32),
}

/// Why the bytes at some position are not a valid frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// The bytes end before the frame does: possibly a torn write.
    Short,
    /// The length field is above [`MAX_BODY_LEN`].
    BadLength,
    BadChecksum,
}

/// One valid frame, borrowed from the segment's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub seq: u64,
    pub kind: u8,
    pub body: &'a [u8],
}

impl Frame<'_> {
    /// The bytes the frame takes in the file.
    pub fn size(&self) -> usize {
        FRAME_HEADER_LEN + self.body.len()
    }
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// The header bytes of a segment.
pub fn encode_header(h: SegmentHeader) -> [u8; SEGMENT_HEADER_LEN] {
    let mut out = [0u8; SEGMENT_HEADER_LEN];
    out[0..8].copy_from_slice(&MAGIC);
    out[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    out[12..20].copy_from_slice(&h.first_seq.to_le_bytes());
    out[20..28].copy_from_slice(&h.valid_below.to_le_bytes());
    let crc = crc32c::crc32c(&out[0..28]);
    out[28..32].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Reads the header at the start of a segment's bytes.
pub fn decode_header(b: &[u8]) -> Result<SegmentHeader, HeaderError> {
    if b.len() < SEGMENT_HEADER_LEN {
        return Err(HeaderError::Short);
    }
    if b[0..8] != MAGIC {
        return Err(HeaderError::BadMagic);
    }
    if crc32c::crc32c(&b[0..28]) != le_u32(b, 28) {
        return Err(HeaderError::BadChecksum);
    }
    let version = le_u32(b, 8);
    if !(OLDEST_READABLE_VERSION..=FORMAT_VERSION).contains(&version) {
        return Err(HeaderError::UnsupportedVersion(version));
    }
    Ok(SegmentHeader {
        first_seq: le_u64(b, 12),
        valid_below: le_u64(b, 20),
    })
}

/// The length a record's frame takes, or `None` above [`MAX_BODY_LEN`].
pub fn frame_len(record: &Record) -> Option<usize> {
    let body = record.body_len();
    (body <= MAX_BODY_LEN).then_some(FRAME_HEADER_LEN + body)
}

/// Appends the frame of `record` at `seq`. The caller has checked
/// [`frame_len`], so the length fits its field.
pub fn encode_frame(seq: u64, record: &Record, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&(record.body_len() as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&seq.to_le_bytes());
    out.push(record.kind());
    record.encode_body(out);
    let crc = frame_crc(&out[start..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// The checksum covers the whole frame except the checksum field itself:
/// the length (so a flipped length cannot go unseen), seq, kind and body.
fn frame_crc(frame: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&frame[0..4]), &frame[8..])
}

/// The body length a frame header declares, checked against the limit.
pub fn declared_body_len(header: &[u8]) -> Result<usize, FrameError> {
    if header.len() < FRAME_HEADER_LEN {
        return Err(FrameError::Short);
    }
    let len = le_u32(header, 0) as usize;
    if len > MAX_BODY_LEN {
        return Err(FrameError::BadLength);
    }
    Ok(len)
}

/// The sequence number a frame header declares, unchecked.
pub fn declared_seq(header: &[u8]) -> Option<u64> {
    (header.len() >= FRAME_HEADER_LEN).then(|| le_u64(header, 8))
}

/// Parses the frame at the start of `b`.
pub fn parse_frame(b: &[u8]) -> Result<Frame<'_>, FrameError> {
    let len = declared_body_len(b)?;
    let end = FRAME_HEADER_LEN + len;
    if b.len() < end {
        return Err(FrameError::Short);
    }
    if frame_crc(&b[..end]) != le_u32(b, 4) {
        return Err(FrameError::BadChecksum);
    }
    Ok(Frame {
        seq: le_u64(b, 8),
        kind: b[16],
        body: &b[FRAME_HEADER_LEN..end],
    })
}

/// The file name of the segment whose first record is `first_seq`: zero
/// padded so names sort as numbers do.
pub fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}.log")
}

/// The first sequence number a segment file name stands for.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn sample() -> Record {
        Record::Messages {
            topic: 3,
            first_offset: 10,
            timestamp_ms: 1_700_000_000_000,
            payloads: vec![Bytes::from_static(b"hello"), Bytes::new()],
            producer: None,
        }
    }

    #[test]
    fn a_header_round_trips_and_every_flipped_bit_is_seen() {
        let h = SegmentHeader {
            first_seq: 42,
            valid_below: 40,
        };
        let bytes = encode_header(h);
        assert_eq!(decode_header(&bytes), Ok(h));
        for byte in 0..bytes.len() {
            for bit in 0..8 {
                let mut bad = bytes;
                bad[byte] ^= 1 << bit;
                assert!(decode_header(&bad).is_err(), "byte {byte} bit {bit}");
            }
        }
        assert_eq!(decode_header(&bytes[..31]), Err(HeaderError::Short));
    }

    #[test]
    fn every_prefix_of_a_frame_is_short_and_every_flip_is_seen() {
        let mut out = Vec::new();
        encode_frame(7, &sample(), &mut out);
        assert_eq!(Some(out.len()), frame_len(&sample()));
        let f = parse_frame(&out).expect("valid frame");
        assert_eq!((f.seq, f.size()), (7, out.len()));
        assert_eq!(Record::decode(f.kind, f.body), Ok(sample()));
        for cut in 0..out.len() {
            assert_eq!(
                parse_frame(&out[..cut]),
                Err(FrameError::Short),
                "cut {cut}"
            );
        }
        for byte in 0..out.len() {
            let mut bad = out.clone();
            bad[byte] ^= 0x10;
            assert!(parse_frame(&bad).is_err(), "byte {byte}");
        }
    }

    #[test]
    fn segment_names_sort_as_numbers_and_parse_back() {
        assert_eq!(segment_name(1), "00000000000000000001.log");
        assert!(segment_name(9) < segment_name(10));
        assert_eq!(parse_segment_name(&segment_name(u64::MAX)), Some(u64::MAX));
        for bad in [
            "1.log",
            "0000000000000000000x.log",
            "00000000000000000001.tmp",
            "LOCK",
        ] {
            assert_eq!(parse_segment_name(bad), None, "{bad}");
        }
    }
}
