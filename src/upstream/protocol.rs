//! The HTTP version spoken to the upstream (`upstream.protocol`), what a request needs to be
//! valid in it, and how a gRPC request is recognised.
//!
//! - `http1` (the default): HTTP/1.1 on every connection, whatever the client spoke.
//! - `h2c`: HTTP/2 with prior knowledge over plain TCP (an `http://` upstream only; for
//!   `https://` the config check says to use `auto`).
//! - `auto`: the TLS handshake offers ALPN `h2, http/1.1` and the upstream's choice decides
//!   the connection; an `http://` upstream is HTTP/1.1.
//!
//! On HTTP/2 the pool holds one connection per upstream and multiplexes every request on it
//! (hyper's client opens another only when that one fails); `upstream.max_connections` then
//! bounds the concurrent streams rather than connections. An HTTP/2 request carries no
//! connection-specific header: `Host` gives way to `:authority` (the upstream's origin, as
//! `Host` is on HTTP/1.1), and `TE` is kept only as `te: trailers`, which gRPC requires.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Version, request};

use crate::config::UpstreamProtocol;

/// The version to send a request in, once the upstream's scheme is known: `auto` on plain
/// `http` is HTTP/1.1.
#[must_use]
pub fn effective(protocol: UpstreamProtocol, scheme: &http::uri::Scheme) -> UpstreamProtocol {
    match protocol {
        UpstreamProtocol::Auto if *scheme != http::uri::Scheme::HTTPS => UpstreamProtocol::Http1,
        p => p,
    }
}

/// True for a gRPC request: `content-type: application/grpc`, or a subtype such as
/// `application/grpc+proto` / `application/grpc+json` (gRPC over HTTP/2, "Requests").
/// gRPC-Web (`application/grpc-web…`) is not: its trailers travel in the body.
#[must_use]
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let v = v.as_bytes();
            let prefix = b"application/grpc";
            (v.len() >= prefix.len() && v[..prefix.len()].eq_ignore_ascii_case(prefix))
                .then(|| v.get(prefix.len()).copied())
        })
        .is_some_and(|next| matches!(next, None | Some(b'+' | b';')))
}

/// True when the client's `TE` names `trailers` (a gRPC client always sends `te: trailers`).
#[must_use]
pub fn asks_for_trailers(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            t.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("trailers"))
        })
}

/// Removes the hop-by-hop headers of the client's request (see
/// [`super::headers::remove_hop_by_hop`]), except that a `TE` naming `trailers` becomes
/// exactly `te: trailers`: the one `TE` HTTP/2 allows, which gRPC servers expect. Whether it
/// goes on is the upstream's protocol's matter ([`prepare`]).
pub fn end_hop(headers: &mut HeaderMap) {
    let trailers = asks_for_trailers(headers);
    super::headers::remove_hop_by_hop(headers);
    if trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// Makes `parts` (its URI already the upstream's) a request of `protocol`'s version.
/// `host` is the upstream's origin as a header value.
pub fn prepare(protocol: UpstreamProtocol, parts: &mut request::Parts, host: &HeaderValue) {
    match protocol {
        UpstreamProtocol::Http1 => {
            // Whatever the client spoke (HTTP/1.0, 1.1 or 2), the connection is HTTP/1.1,
            // where `TE` is hop-by-hop.
            parts.version = Version::HTTP_11;
            parts.headers.remove(header::TE);
            parts.headers.insert(header::HOST, host.clone());
        }
        UpstreamProtocol::H2c => {
            parts.version = Version::HTTP_2;
            // `:authority` comes from the URI (the upstream's origin).
            parts.headers.remove(header::HOST);
        }
        UpstreamProtocol::Auto => {
            // The connection's ALPN decides. On HTTP/1.1 the client sets `Host` from the
            // URI (the upstream's origin); on HTTP/2 the URI is `:authority`.
            parts.version = Version::HTTP_11;
            parts.headers.remove(header::HOST);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(name: header::HeaderName, value: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_static(value));
        h
    }

    #[test]
    fn grpc_content_types() {
        for ct in [
            "application/grpc",
            "application/grpc+proto",
            "application/grpc+json",
            "Application/GRPC",
            "application/grpc; charset=utf-8",
        ] {
            assert!(is_grpc(&with(header::CONTENT_TYPE, ct)), "{ct}");
        }
        for ct in [
            "application/grpc-web",
            "application/grpc-web+proto",
            "application/json",
            "application/grp",
            "text/plain",
        ] {
            assert!(!is_grpc(&with(header::CONTENT_TYPE, ct)), "{ct}");
        }
        assert!(!is_grpc(&HeaderMap::new()));
    }

    #[test]
    fn te_trailers_survives_the_hop_and_nothing_else_of_te_does() {
        let mut h = with(header::TE, "gzip, trailers;q=1");
        h.insert(header::CONNECTION, HeaderValue::from_static("te"));
        end_hop(&mut h);
        assert_eq!(
            h.get(header::TE).map(HeaderValue::as_bytes),
            Some(&b"trailers"[..])
        );
        assert!(!h.contains_key(header::CONNECTION));

        let mut h = with(header::TE, "gzip");
        end_hop(&mut h);
        assert!(!h.contains_key(header::TE));
    }

    #[test]
    fn each_protocol_gets_a_request_valid_for_its_version() {
        let host = HeaderValue::from_static("upstream:8080");
        let parts = || {
            let mut req = http::Request::new(());
            req.headers_mut()
                .insert(header::HOST, HeaderValue::from_static("client-side"));
            req.headers_mut()
                .insert(header::TE, HeaderValue::from_static("trailers"));
            *req.version_mut() = Version::HTTP_2;
            req.into_parts().0
        };
        let mut p = parts();
        prepare(UpstreamProtocol::Http1, &mut p, &host);
        assert_eq!(p.version, Version::HTTP_11);
        assert_eq!(p.headers[header::HOST], "upstream:8080");
        assert!(!p.headers.contains_key(header::TE));

        let mut p = parts();
        prepare(UpstreamProtocol::H2c, &mut p, &host);
        assert_eq!(p.version, Version::HTTP_2);
        assert!(!p.headers.contains_key(header::HOST));
        assert_eq!(p.headers[header::TE], "trailers");

        let mut p = parts();
        prepare(UpstreamProtocol::Auto, &mut p, &host);
        assert_eq!(p.version, Version::HTTP_11);
        assert!(!p.headers.contains_key(header::HOST));
        assert_eq!(p.headers[header::TE], "trailers");
    }

    #[test]
    fn auto_on_plain_http_is_http1() {
        use http::uri::Scheme;
        assert_eq!(
            effective(UpstreamProtocol::Auto, &Scheme::HTTP),
            UpstreamProtocol::Http1
        );
        assert_eq!(
            effective(UpstreamProtocol::Auto, &Scheme::HTTPS),
            UpstreamProtocol::Auto
        );
        assert_eq!(
            effective(UpstreamProtocol::H2c, &Scheme::HTTP),
            UpstreamProtocol::H2c
        );
    }
}
