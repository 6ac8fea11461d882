//! The path that route rules are matched against: percent-decoded, with `.`/`..` segments and
//! empty segments (`//`) resolved, so `/ehrbase/rest/openehr/v1/%71uery/aql` or
//! `/x/../ehrbase/...` cannot slip past a rule written for the plain form.
//!
//! Matrix parameters (`/query;x=1/aql`) are dropped from each segment as servlet containers
//! do, so `;` cannot hide a segment from a rule either.
//!
//! The upstream still receives the path exactly as the client sent it; this form is only for
//! deciding. A path that does not decode to clean segments is refused (400): a decoded `/`,
//! `\` or NUL inside a segment, invalid UTF-8, or `..` above the root.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;

/// Why a path cannot be normalised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadPath;

/// `/a/b` form: leading `/`, no trailing `/` (the root is `/`).
///
/// Borrows `raw` when it is already in that form, which is what real clients send, so the
/// common request costs one scan and no allocation.
///
/// # Errors
/// [`BadPath`] for paths that cannot be decoded into clean segments.
pub fn normalize(raw: &str) -> Result<Cow<'_, str>, BadPath> {
    if is_normal(raw) {
        return Ok(Cow::Borrowed(raw));
    }
    let mut segments: Vec<String> = Vec::new();
    for seg in raw.split('/') {
        // Servlet containers (Tomcat, under EHRbase) drop `;parameters` from each segment
        // before routing, so rules must see the segment without them too.
        let seg = seg.split(';').next().unwrap_or("");
        if !valid_escapes(seg) {
            return Err(BadPath);
        }
        let decoded = percent_decode_str(seg).decode_utf8().map_err(|_| BadPath)?;
        if decoded.contains(['/', '\\', '\0']) {
            return Err(BadPath);
        }
        match decoded.as_ref() {
            "" | "." => {}
            ".." => {
                segments.pop().ok_or(BadPath)?;
            }
            _ => segments.push(decoded.into_owned()),
        }
    }
    if segments.is_empty() {
        return Ok(Cow::Borrowed("/"));
    }
    let mut out = String::with_capacity(raw.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    Ok(Cow::Owned(out))
}

/// True when normalising `raw` would give `raw` back: `/` alone, or `/`-led segments that
/// are neither empty, `.` nor `..`, holding no `%` (nothing to decode), no `;` (no
/// parameters to drop) and nothing a decoded segment may not hold.
fn is_normal(raw: &str) -> bool {
    if raw == "/" {
        return true;
    }
    let Some(rest) = raw.strip_prefix('/') else {
        return false;
    };
    rest.split('/').all(|seg| {
        !matches!(seg, "" | "." | "..")
            && !seg
                .bytes()
                .any(|b| matches!(b, b'%' | b';' | b'\\' | b'\0'))
    })
}

/// Every `%` starts a two-hex-digit escape (RFC 3986 §2.1).
fn valid_escapes(seg: &str) -> bool {
    let b = seg.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            match (b.get(i + 1), b.get(i + 2)) {
                (Some(h), Some(l)) if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => i += 3,
                _ => return false,
            }
        } else {
            i += 1;
        }
    }
    true
}

/// Segment-wise prefix: `/a/b` is under `/a` and `/a/b`, not under `/a/bc`. `/` covers all.
#[must_use]
pub fn is_under(path: &str, prefix: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises() {
        for (raw, want) in [
            ("/", "/"),
            ("", "/"),
            ("/a/b/", "/a/b"),
            ("//a///b", "/a/b"),
            ("/a/./b", "/a/b"),
            ("/x/../a/b", "/a/b"),
            (
                "/ehrbase/rest/openehr/v1/%71uery/aql",
                "/ehrbase/rest/openehr/v1/query/aql",
            ),
            ("/a/%2e%2e/b", "/b"),
            ("/a/%2E/b", "/a/b"),
            ("/caf%C3%A9", "/café"),
            ("/a%20b", "/a b"),
            ("/q;x=1/aql", "/q/aql"),
            ("/q;/aql;jsessionid=1", "/q/aql"),
            ("/q%3Bx/aql", "/q;x/aql"),
        ] {
            assert_eq!(normalize(raw).as_deref(), Ok(want), "{raw}");
        }
    }

    #[test]
    fn normal_paths_are_borrowed() {
        for raw in ["/", "/ehrbase/rest/openehr/v1/ehr", "/a.b/c..d/.e"] {
            assert!(
                matches!(normalize(raw), Ok(Cow::Borrowed(p)) if p == raw),
                "{raw}"
            );
        }
        for raw in ["/a/", "//a", "/a/./b", "/a/../b", "/a;x", "/%61"] {
            assert!(matches!(normalize(raw), Ok(Cow::Owned(_))), "{raw}");
        }
    }

    #[test]
    fn refuses() {
        for raw in [
            "/a%2Fb", "/a%5cb", "/a%00b", "/%ff", "/..", "/a/../..", "/%2e%2e", "/a%", "/a%4",
            "/a%zz",
        ] {
            assert_eq!(normalize(raw), Err(BadPath), "{raw}");
        }
    }

    #[test]
    fn prefix_is_segment_wise() {
        assert!(is_under("/a/b", "/a"));
        assert!(is_under("/a", "/a"));
        assert!(!is_under("/ab", "/a"));
        assert!(is_under("/anything", "/"));
    }
}
