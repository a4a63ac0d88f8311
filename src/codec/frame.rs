//! The length prefix around every frame, in both directions.
//!
//! A frame is a 4-byte big-endian length followed by that many bytes of one
//! MessagePack value. [`split_frame`] answers "incomplete" (`Ok(None)`),
//! distinct from "invalid" (`Err`), and rejects an oversized length as soon as
//! the 4 header bytes are in, before a byte of the body is buffered. Writers
//! reserve the prefix first and fill it in last ([`begin_frame`],
//! [`end_frame`]), so that a body is encoded straight into the output buffer
//! without being measured beforehand.

use crate::protocol::FRAME_HEADER_LEN;

/// A length prefix larger than the receiver accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameTooLarge {
    pub len: usize,
    pub max: usize,
}

/// Looks for one complete frame at the start of `buf`.
///
/// Returns the body and the total bytes the frame occupies (header included),
/// `Ok(None)` while more bytes are needed, or an error as soon as the header
/// announces a body larger than `max_body`.
pub fn split_frame(buf: &[u8], max_body: usize) -> Result<Option<(&[u8], usize)>, FrameTooLarge> {
    let Some(header) = buf.first_chunk::<FRAME_HEADER_LEN>() else {
        return Ok(None);
    };
    let len = u32::from_be_bytes(*header) as usize;
    if len > max_body {
        return Err(FrameTooLarge { len, max: max_body });
    }
    let total = FRAME_HEADER_LEN + len;
    Ok(buf.get(FRAME_HEADER_LEN..total).map(|body| (body, total)))
}

/// Reserves a length prefix; returns where the frame starts in `out`.
pub fn begin_frame(out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER_LEN]);
    start
}

/// Fills in the length prefix reserved by [`begin_frame`].
pub fn end_frame(out: &mut [u8], start: usize) {
    let len = out.len() - start - FRAME_HEADER_LEN;
    // Bodies are bounded by max_frame_bytes, far below u32::MAX.
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    out[start..start + FRAME_HEADER_LEN].copy_from_slice(&len.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode_request, encode_request};
    use crate::protocol::Request;

    #[test]
    fn a_frame_split_at_every_byte_is_incomplete_until_whole() {
        let mut stream = Vec::new();
        encode_request(
            &mut stream,
            7,
            &Request::Publish {
                topic: "news",
                payload: b"hello",
            },
        );
        let whole = stream.len();
        encode_request(&mut stream, 8, &Request::Stats);
        for cut in 0..whole {
            assert_eq!(split_frame(&stream[..cut], 1 << 20), Ok(None), "cut {cut}");
        }
        let (body, used) = split_frame(&stream, 1 << 20).unwrap().unwrap();
        assert_eq!(used, whole);
        assert!(matches!(
            decode_request(body),
            Ok((7, Request::Publish { topic: "news", .. }))
        ));
        let (body, _) = split_frame(&stream[used..], 1 << 20).unwrap().unwrap();
        assert_eq!(decode_request(body), Ok((8, Request::Stats)));
    }

    #[test]
    fn an_oversized_length_is_refused_from_the_header_alone() {
        let header = 2_000_000u32.to_be_bytes();
        assert_eq!(
            split_frame(&header, 1 << 20),
            Err(FrameTooLarge {
                len: 2_000_000,
                max: 1 << 20
            })
        );
    }

    #[test]
    fn end_frame_writes_the_body_length() {
        let mut out = vec![0xaa];
        let start = begin_frame(&mut out);
        out.extend_from_slice(b"xyz");
        end_frame(&mut out, start);
        assert_eq!(out, [0xaa, 0, 0, 0, 3, b'x', b'y', b'z']);
    }
}
