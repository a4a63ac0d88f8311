//! Frames and their contents, as bytes: no I/O happens here.
//!
//! Both directions are encoded and decoded here so that the broker and the
//! client cannot disagree, and so that every round trip can be tested in one
//! place. Each file has one job:
//!
//! - [`msgpack`]: the MessagePack the protocol uses, on the `rmp` crate —
//!   a borrowing reader with exact-type checks, shortest-form writers,
//!   encoded sizes.
//! - `frame`: the 4-byte length prefix ([`split_frame`], [`begin_frame`],
//!   [`end_frame`]); "incomplete" is not "invalid".
//! - `request`: requests `[op, id, args…]` and their typed decode errors
//!   ([`DecodeError`]).
//! - `reply`: replies `[id, 0, body]` / `[id, code, message]` and their
//!   typed decode errors ([`ReplyDecodeError`]).
//! - `pull_reply`: the pull reply written piece by piece from the broker's
//!   storage, and the size bounds its planner uses.
//!
//! Everything public is re-exported here, so callers name `codec::X`.

pub mod msgpack;

mod frame;
mod pull_reply;
mod reply;
mod request;

pub use frame::{FrameTooLarge, begin_frame, end_frame, split_frame};
pub use msgpack::{Expected, ReadError};
pub use pull_reply::{
    group_header_len, messages_header_len, payload_len, write_group_header, write_lost,
    write_lost_group_header, write_messages_header, write_payload,
};
pub use reply::{
    DecodedReply, FETCHED_OVERHEAD, ReplyDecodeError, ReplyField, decode_reply, decode_reply_id,
    encode_error, encode_reply, fetched_message_bound, topic_summary_bound,
};
pub use request::{
    DecodeError, DecodeErrorKind, RequestField, decode_request, encode_payloads,
    encode_publish_batch, encode_publish_batch_seq, encode_request,
};
pub(crate) use request::{iter_payloads, skip_payloads};
