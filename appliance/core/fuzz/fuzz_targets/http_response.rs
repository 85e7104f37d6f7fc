//! Arbitrary bytes as the metadata service's HTTP response, read the way cloudpiped
//! reads a socket: in pieces, `metadata::http::parse_response` after each. Whoever
//! answers on 169.254.169.254 (or the `--metadata-url`) writes them.
//!
//! Input: one byte each for the header and body limits (small, so that every limit
//! is reachable), one byte seeding the read sizes, then the response.
//!
//! Checks, besides "never panics":
//! - the answer does not depend on how the response is split into reads: the
//!   first prefix that is not `Incomplete` gives the same answer as the whole
//!   response read at once, and so does every longer prefix;
//! - a complete body is never larger than the limit, and a non-200 has none;
//! - a `Content-Length` body is the bytes after the header, as many as it says.
#![no_main]

use cloudpipe_core::metadata::http::{parse_response, Limits, Parsed};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [h, b, seed, response @ ..] = data else {
        return;
    };
    let limits = Limits {
        max_header: usize::from(*h) * 4,
        max_body: usize::from(*b) * 4,
    };
    let whole = parse_response(response, true, limits);
    if let Ok(Parsed::Complete { status, body }) = &whole {
        assert!(body.len() <= limits.max_body, "body over the limit");
        if *status != 200 {
            assert!(body.is_empty());
        }
    }
    // Reads of 1 to 16 bytes, sizes from a small generator seeded by the input.
    let mut state = u32::from(*seed) | 1;
    let mut end = 0;
    let mut first = None;
    while end < response.len() {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        end = (end + 1 + (state % 16) as usize).min(response.len());
        let eof = end == response.len();
        let got = parse_response(&response[..end], eof, limits);
        match (&first, got) {
            (None, Ok(Parsed::Incomplete)) => {}
            (None, got) => first = Some(got),
            // Every longer prefix keeps the first answer (the reader would have
            // stopped there).
            (Some(f), got) => assert_eq!(&got, f, "a longer prefix changed the answer"),
        }
    }
    if let Some(first) = first {
        assert_eq!(
            first, whole,
            "the answer depends on how reads split the response"
        );
    } else {
        assert!(response.is_empty() || whole == Ok(Parsed::Incomplete));
    }
});
