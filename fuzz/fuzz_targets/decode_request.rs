//! Arbitrary bytes against the request decoder: first as one frame body,
//! then as a stream of frames split off the front the way the server does.
//! The first byte picks the frame limit, so that oversized length prefixes
//! are met at every size.

#![no_main]

use courier::testing::{check_request_body, check_request_stream};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    check_request_body(data);
    if let Some((&limit, stream)) = data.split_first() {
        let max = match limit {
            0 => usize::MAX,
            n => usize::from(n) * 16,
        };
        check_request_stream(stream, max);
    }
});
