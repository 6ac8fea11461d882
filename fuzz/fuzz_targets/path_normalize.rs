//! `entragate::path::normalize` on any path: never panics, and a path it accepts is
//! `/` or `/seg/seg...` with no empty, `.` or `..` segment and no `\` or NUL, which the
//! segment-wise prefix match (`is_under`) treats consistently.
#![no_main]

use entragate::path::{is_under, normalize};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(p) = normalize(raw) else {
        return;
    };
    assert!(p.starts_with('/'), "{p:?}");
    assert!(is_under(&p, "/"));
    assert!(is_under(&p, &p));
    if p == "/" {
        return;
    }
    assert!(!p.ends_with('/'), "{p:?}");
    let segments: Vec<&str> = p[1..].split('/').collect();
    for seg in &segments {
        assert!(!seg.is_empty(), "{p:?}");
        assert!(*seg != "." && *seg != "..", "{p:?}");
        assert!(!seg.contains(['\\', '\0']), "{p:?}");
    }
    // Every segment-wise prefix covers the path; a prefix cut inside a segment does not.
    let first = format!("/{}", segments[0]);
    assert!(is_under(&p, &first));
    if segments[0].len() > 1 && segments[0].is_char_boundary(1) {
        let cut = format!("/{}", &segments[0][..1]);
        assert!(!is_under(&p, &cut) || segments[0] == &segments[0][..1]);
    }
});
