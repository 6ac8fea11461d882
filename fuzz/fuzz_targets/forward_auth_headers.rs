//! `entragate::forward_auth::original` (and `original_origin`) on any set of forward-auth
//! headers. The input's first byte says whether the peer is trusted; then each line is one
//! header: its first byte picks the name (the five forward-auth headers, `Host`,
//! `X-Forwarded-Host`, `X-Forwarded-Proto`), the rest is the value.
//!
//! Checked besides "never panics": an untrusted peer, or no forward-auth header, gives the
//! request's own method and path; a forwarded path is a `/`-led path without query or
//! fragment, taken from one of the headers, and every path-carrying header names it (any
//! disagreement is refused); a forwarded method is the one every method header names; an
//! origin is `http(s)://host` built only from characters a header value may carry.
#![no_main]

use entragate::forward_auth::{
    BadForwarded, X_FORWARDED_METHOD, X_FORWARDED_URI, X_ORIGINAL_METHOD, X_ORIGINAL_URI,
    X_ORIGINAL_URL, original, original_origin,
};
use http::header::{HOST, HeaderName};
use http::{HeaderMap, HeaderValue, Method};
use libfuzzer_sys::fuzz_target;

const NAMES: [HeaderName; 8] = [
    X_FORWARDED_METHOD,
    X_FORWARDED_URI,
    X_ORIGINAL_METHOD,
    X_ORIGINAL_URI,
    X_ORIGINAL_URL,
    HOST,
    HeaderName::from_static("x-forwarded-host"),
    HeaderName::from_static("x-forwarded-proto"),
];

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let trusted = flags & 1 == 1;
    let mut headers = HeaderMap::new();
    for line in rest.split(|b| *b == b'\n') {
        let Some((&pick, value)) = line.split_first() else {
            continue;
        };
        let Ok(value) = HeaderValue::from_bytes(value) else {
            continue;
        };
        headers.append(NAMES[usize::from(pick) % NAMES.len()].clone(), value);
    }
    let own_method = Method::PATCH;
    let own_path = "/own";
    let methods: Vec<&[u8]> = [&X_FORWARDED_METHOD, &X_ORIGINAL_METHOD]
        .into_iter()
        .flat_map(|n| headers.get_all(n))
        .map(HeaderValue::as_bytes)
        .collect();
    let targets: Vec<&[u8]> = [&X_FORWARDED_URI, &X_ORIGINAL_URI, &X_ORIGINAL_URL]
        .into_iter()
        .flat_map(|n| headers.get_all(n))
        .map(HeaderValue::as_bytes)
        .collect();

    match original(&own_method, own_path, &headers, trusted) {
        Ok(o) if !o.forwarded => {
            assert_eq!(o.method, own_method);
            assert_eq!(o.path, own_path);
            assert!(!trusted || (methods.is_empty() && targets.is_empty()));
        }
        Ok(o) => {
            assert!(trusted);
            assert!(!methods.is_empty() || !targets.is_empty());
            for m in &methods {
                assert_eq!(*m, o.method.as_str().as_bytes());
            }
            if methods.is_empty() {
                assert_eq!(o.method, own_method);
            }
            if targets.is_empty() {
                assert_eq!(o.path, own_path);
            } else {
                assert!(o.path.starts_with('/'), "{:?}", o.path);
                assert!(!o.path.contains(['?', '#']), "{:?}", o.path);
                // Each header holds the path: as its start (a request target) or after the
                // authority (a URL). A URL without a path stands for `/`.
                for t in &targets {
                    let t = std::str::from_utf8(t).expect("read as text");
                    let holds = t.starts_with(o.path)
                        || t.split_once("://")
                            .is_some_and(|(_, rest)| rest.contains(o.path) || o.path == "/");
                    assert!(holds, "{t:?} -> {:?}", o.path);
                }
            }
        }
        Err(BadForwarded) => {
            assert!(trusted);
            assert!(!methods.is_empty() || !targets.is_empty());
        }
    }

    if let Some(origin) = original_origin(&headers, trusted) {
        let (scheme, host) = origin.split_once("://").expect("scheme://host");
        assert!(scheme == "http" || scheme == "https", "{origin:?}");
        assert!(!host.is_empty(), "{origin:?}");
        assert!(
            host.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']')),
            "{origin:?}"
        );
        assert!(HeaderValue::from_str(&origin).is_ok());
    }
});
