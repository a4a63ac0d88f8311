//! The broker fed an arbitrary byte stream over a few connections, the way
//! the server feeds it, with connections closing and reopening and time
//! passing. See `courier::testing::Harness` for what is checked.
//!
//! The input is a list of records, each starting with a control byte whose
//! low two bits pick the connection (modulo `CONNS`, so 3 is 0 again) and
//! whose upper six bits the action:
//!
//! | `ctl >> 2` | action | followed by |
//! |---|---|---|
//! | 0..=39 | one frame, with its true length prefix | length `L` (1 byte; 255 = a 2-byte big-endian length follows), then `L` bytes of body |
//! | 40..=51 | raw bytes, framing included | length (1 byte), then the bytes |
//! | 52..=57 | time passes, then the end of a batch | milliseconds / 4 (1 byte) |
//! | 58..=60 | the end of a batch | — |
//! | 61..=62 | the connection is replaced by a new one; HELLO sent if 61 | — |
//! | 63 | the connection closes | — |
//!
//! A record cut short by the end of the input takes what there is.

#![no_main]

use courier::testing::framed;
use courier_fuzz::{CONNS, harness};
use libfuzzer_sys::fuzz_target;
use std::time::Duration;

/// Splits `n` bytes (or what is left) off the front of `input`.
fn take<'a>(input: &mut &'a [u8], n: usize) -> &'a [u8] {
    let (head, tail) = input.split_at(n.min(input.len()));
    *input = tail;
    head
}

fn byte(input: &mut &[u8]) -> u8 {
    take(input, 1).first().copied().unwrap_or(0)
}

fuzz_target!(|data: &[u8]| {
    let mut harness = harness();
    let mut input = data;
    while let Some((&ctl, rest)) = input.split_first() {
        input = rest;
        let conn = usize::from(ctl & 3) % CONNS;
        match ctl >> 2 {
            0..=39 => {
                let len = match byte(&mut input) {
                    255 => {
                        let wide = take(&mut input, 2);
                        wide.iter().fold(0usize, |n, &b| n << 8 | usize::from(b))
                    }
                    n => usize::from(n),
                };
                let body = take(&mut input, len);
                harness.feed(conn, &framed(body));
            }
            40..=51 => {
                let len = usize::from(byte(&mut input));
                let bytes = take(&mut input, len);
                harness.feed(conn, bytes);
            }
            52..=57 => {
                let ms = u64::from(byte(&mut input)) * 4;
                harness.advance(Duration::from_millis(ms));
            }
            58..=60 => harness.end_of_batch(),
            61 | 62 => harness.connect(conn, ctl >> 2 == 61),
            _ => harness.disconnect(conn),
        }
    }
    harness.finish();
});
