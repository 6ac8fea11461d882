//! Finding the bearer token in a request, without allocating.
//!
//! RFC 6750 §2.1: `credentials = "Bearer" 1*SP b64token`. Power Query's probe sends the scheme
//! with no token at all (`Authorization: Bearer`); that is not an error here but a request for the
//! challenge, so it gets its own variant.

use http::HeaderMap;
use http::header::AUTHORIZATION;

/// What the `Authorization` header holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bearer<'a> {
    /// No header, or a scheme other than Bearer (e.g. Basic): treated alike (SPEC §4).
    Missing,
    /// `Bearer` with nothing (or only blanks) after it: Power Query's probe.
    Empty,
    /// A token made only of RFC 6750 `b64token` characters.
    Token(&'a str),
    /// A Bearer credential whose token has characters a `b64token` cannot hold.
    Malformed,
    /// More than one `Authorization` header: RFC 6750 `invalid_request`.
    Duplicate,
}

/// Reads the bearer credential of a request.
#[must_use]
pub fn extract(headers: &HeaderMap) -> Bearer<'_> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Bearer::Missing;
    };
    if values.next().is_some() {
        return Bearer::Duplicate;
    }
    parse(value.as_bytes())
}

/// Parses one `Authorization` header value.
#[must_use]
pub fn parse(value: &[u8]) -> Bearer<'_> {
    let value = trim(value);
    let (scheme, rest) = match value.iter().position(|b| *b == b' ' || *b == b'\t') {
        Some(i) => value.split_at(i),
        None => (value, &[][..]),
    };
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Bearer::Missing;
    }
    let token = trim(rest);
    if token.is_empty() {
        return Bearer::Empty;
    }
    if !is_b64token(token) {
        return Bearer::Malformed;
    }
    // b64token is ASCII, so this cannot fail; the match keeps it panic-free regardless.
    match std::str::from_utf8(token) {
        Ok(t) => Bearer::Token(t),
        Err(_) => Bearer::Malformed,
    }
}

/// True when the query carries an RFC 6750 §2.3 `access_token` parameter. The gateway reads
/// tokens only from the header, but one sent in both places is refused (`invalid_request`),
/// and one sent only in the query is no credential at all.
#[must_use]
pub fn token_in_query(query: Option<&str>) -> bool {
    query.is_some_and(|q| {
        q.split('&')
            .any(|pair| pair.split('=').next() == Some("access_token"))
    })
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// `b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`
///
/// A token is a kilobyte or two and checked on every request, so the check is branch-free
/// arithmetic over all bytes, which the compiler turns into vector instructions.
fn is_b64token(t: &[u8]) -> bool {
    let body_end = t.iter().rposition(|b| *b != b'=').map_or(0, |i| i + 1);
    body_end > 0
        && t[..body_end]
            .iter()
            .fold(true, |ok, &b| ok & is_b64token_byte(b))
}

#[inline]
fn is_b64token_byte(b: u8) -> bool {
    // Five tests, not eight: `-`, `.`, `/` and the digits are one run (0x2D..=0x39).
    let letter = (b | 0x20).wrapping_sub(b'a') < 26;
    let digit_or_mark = b.wrapping_sub(b'-') < 13;
    letter | digit_or_mark | (b == b'_') | (b == b'~') | (b == b'+')
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn schemes_and_blanks() {
        assert_eq!(parse(b"Bearer"), Bearer::Empty);
        assert_eq!(parse(b"bearer "), Bearer::Empty);
        assert_eq!(parse(b"BEARER \t "), Bearer::Empty);
        assert_eq!(parse(b"  Bearer"), Bearer::Empty);
        assert_eq!(parse(b"Bearer a.b.c"), Bearer::Token("a.b.c"));
        assert_eq!(parse(b"bEaReR   a.b.c  "), Bearer::Token("a.b.c"));
        assert_eq!(parse(b"Basic dXNlcjpwYXNz"), Bearer::Missing);
        assert_eq!(parse(b"Bearerx a.b.c"), Bearer::Missing);
        assert_eq!(parse(b""), Bearer::Missing);
        assert_eq!(parse(b"Bearer a b"), Bearer::Malformed);
        assert_eq!(parse(b"Bearer a,b"), Bearer::Malformed);
        assert_eq!(parse(b"Bearer ==="), Bearer::Malformed);
        assert_eq!(parse(b"Bearer abc=="), Bearer::Token("abc=="));
        assert_eq!(parse(b"Bearer ab=c"), Bearer::Malformed);
        assert_eq!(parse("Bearer é".as_bytes()), Bearer::Malformed);
    }

    /// The byte test against the ABNF's list, for every byte.
    #[test]
    fn b64token_bytes_are_exactly_the_rfc_6750_set() {
        for b in 0..=255u8 {
            let listed = b.is_ascii_alphanumeric() || b"-._~+/".contains(&b);
            assert_eq!(is_b64token_byte(b), listed, "byte {b:#04x}");
        }
    }

    #[test]
    fn query_tokens() {
        assert!(token_in_query(Some("a=1&access_token=x")));
        assert!(token_in_query(Some("access_token")));
        assert!(!token_in_query(Some("my_access_token=x")));
        assert!(!token_in_query(None));
    }

    #[test]
    fn every_byte_is_classified_as_rfc_6750_says() {
        for b in 0..=255_u8 {
            let expected =
                b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/');
            assert_eq!(is_b64token_byte(b), expected, "byte {b}");
        }
    }

    #[test]
    fn duplicate_headers() {
        let mut h = HeaderMap::new();
        assert_eq!(extract(&h), Bearer::Missing);
        h.append(AUTHORIZATION, HeaderValue::from_static("Bearer a"));
        assert_eq!(extract(&h), Bearer::Token("a"));
        h.append(AUTHORIZATION, HeaderValue::from_static("Bearer b"));
        assert_eq!(extract(&h), Bearer::Duplicate);
    }
}
