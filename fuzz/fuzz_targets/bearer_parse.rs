//! `entragate::auth::bearer::parse` on any `Authorization` header value (and
//! `token_in_query` on any query string): never panics, and a token it returns is a non-empty
//! RFC 6750 `b64token` taken from the input, with the scheme `Bearer` in front of it.
#![no_main]

use entragate::auth::Bearer;
use entragate::auth::bearer::{extract, parse, token_in_query};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let parsed = parse(data);
    if let Bearer::Token(t) = parsed {
        let bytes = t.as_bytes();
        assert!(!bytes.is_empty());
        let body_end = bytes.iter().rposition(|b| *b != b'=').map_or(0, |i| i + 1);
        assert!(body_end > 0, "a token of only '='");
        assert!(
            bytes[..body_end].iter().all(|b| b.is_ascii_alphanumeric()
                || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')),
            "not a b64token"
        );
        // A slice of the input, after a case-insensitive "Bearer".
        let range = data.as_ptr_range();
        assert!(range.contains(&bytes.as_ptr()));
        let offset = bytes.as_ptr() as usize - data.as_ptr() as usize;
        let before = String::from_utf8_lossy(&data[..offset]);
        assert!(
            before.trim().eq_ignore_ascii_case("bearer"),
            "scheme is {before:?}"
        );
    }

    // Blanks around the value do not change the answer.
    let mut padded = b" \t".to_vec();
    padded.extend_from_slice(data);
    padded.extend_from_slice(b"\t ");
    assert_eq!(parse(&padded), parsed);

    // Through a header map, as the gateway reads it: the same answer, or refused as a value.
    if let Ok(value) = http::HeaderValue::from_bytes(data) {
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::AUTHORIZATION, value);
        assert_eq!(extract(&headers), parsed);
    }

    if let Ok(query) = std::str::from_utf8(data) {
        let _ = token_in_query(Some(query));
    }
});
