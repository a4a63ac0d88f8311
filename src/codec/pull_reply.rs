//! The pull reply, written piece by piece, and bounds on its size.
//!
//! A pull reply is `[id, 0, [[topic, first_offset, [payload, ...]], ...]]`
//! (a group may end with a 4th element, `lost`, see PROTOCOL.md).
//! The broker does not build a `Reply::Messages` for it: it plans the reply
//! against exact encoded sizes (so that it stays within `max_frame_bytes`),
//! then writes the headers here and each payload with [`write_payload`],
//! straight from where the topic keeps it into the socket buffer. The size
//! functions answer for the widest count a header may carry, since the
//! planner measures before it knows the counts.

use super::begin_frame;
use super::msgpack;
use super::reply::write_ok_header;
use crate::protocol::FRAME_HEADER_LEN;

/// Starts a pull reply frame: `[id, 0, [` with `groups` groups to follow.
/// Returns the frame start for [`end_frame`](super::end_frame).
pub fn write_messages_header(out: &mut Vec<u8>, id: u64, groups: u32) -> usize {
    let start = begin_frame(out);
    write_ok_header(out, id);
    msgpack::write_array_len(out, groups);
    start
}

/// Starts one group of a pull reply: `[topic, first_offset, [` with `count`
/// payloads to follow, each written with [`write_payload`].
pub fn write_group_header(out: &mut Vec<u8>, topic: &str, first_offset: u64, count: u32) {
    msgpack::write_array_len(out, 3);
    msgpack::write_str(out, topic);
    msgpack::write_u64(out, first_offset);
    msgpack::write_array_len(out, count);
}

/// Starts a group that ends with `lost` (version 2, only when retention
/// overtook the subscriber's cursor): `[topic, first_offset, [` with
/// `count` payloads to follow, then [`write_lost`]. Same size as
/// [`write_group_header`] (a 4-element array header is one byte too).
pub fn write_lost_group_header(out: &mut Vec<u8>, topic: &str, first_offset: u64, count: u32) {
    msgpack::write_array_len(out, 4);
    msgpack::write_str(out, topic);
    msgpack::write_u64(out, first_offset);
    msgpack::write_array_len(out, count);
}

/// Ends a group started by [`write_lost_group_header`]; its size is
/// `msgpack::u64_len(lost)`.
pub fn write_lost(out: &mut Vec<u8>, lost: u64) {
    msgpack::write_u64(out, lost);
}

/// Writes one payload of a group (as `bin`).
pub fn write_payload(out: &mut Vec<u8>, payload: &[u8]) {
    msgpack::write_bin(out, payload);
}

/// Encoded size of [`write_payload`] for a payload of `len` bytes.
pub fn payload_len(len: usize) -> usize {
    msgpack::bin_len(len)
}

/// Encoded size of [`write_messages_header`] (length prefix included), taking
/// the widest group count.
pub fn messages_header_len(id: u64) -> usize {
    FRAME_HEADER_LEN
        + msgpack::array_len_len(3)
        + msgpack::u64_len(id)
        + msgpack::u64_len(0)
        + WIDEST_ARRAY_HEADER
}

/// Encoded size of a group header, taking the widest message count.
pub fn group_header_len(topic: &str, first_offset: u64) -> usize {
    msgpack::array_len_len(3)
        + msgpack::str_len(topic.len())
        + msgpack::u64_len(first_offset)
        + WIDEST_ARRAY_HEADER
}

/// An array32 header: the most an array header can take.
const WIDEST_ARRAY_HEADER: usize = 5;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::end_frame;

    #[test]
    fn piecewise_pull_reply_sizes_are_upper_bounds() {
        let mut out = Vec::new();
        let start = write_messages_header(&mut out, u64::MAX, 1);
        assert!(out.len() - start <= messages_header_len(u64::MAX));
        let before = out.len();
        write_group_header(&mut out, &"t".repeat(255), u64::MAX, 70_000);
        assert!(out.len() - before <= group_header_len(&"t".repeat(255), u64::MAX));
        for len in [0, 255, 256, 65_535, 65_536] {
            let before = out.len();
            write_payload(&mut out, &vec![1; len]);
            assert_eq!(out.len() - before, payload_len(len));
        }
    }

    #[test]
    fn the_widest_headers_reach_the_bounds_exactly() {
        let mut out = Vec::new();
        let start = write_messages_header(&mut out, 7, u32::MAX);
        assert_eq!(out.len() - start, messages_header_len(7));
        let before = out.len();
        write_group_header(&mut out, "t", 0x1_0000, u32::MAX);
        assert_eq!(out.len() - before, group_header_len("t", 0x1_0000));
        end_frame(&mut out, start);
    }
}
