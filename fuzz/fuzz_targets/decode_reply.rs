//! Arbitrary bytes as a reply body, decoded as the reply to every operation
//! in turn: a reply's shape depends on the request it answers, and a client
//! must survive whatever a broken or hostile server sends.

#![no_main]

use bytes::Bytes;
use courier::testing::{ALL_OPS, check_reply_body};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let body = Bytes::copy_from_slice(data);
    for op in ALL_OPS {
        check_reply_body(op, &body);
    }
});
