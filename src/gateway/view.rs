//! The request as a front door saw it: what [`super::Gateway::check`] decides on.
//!
//! Each door translates its own transport into a [`RequestView`] and nothing more:
//! - the proxy: the request line and headers as received;
//! - forward-auth: the original request the ingress names in `X-Forwarded-*` /
//!   `X-Original-*` (believed only from `server.trusted_proxies`), with the auth request's
//!   own headers;
//! - `ext_authz`: the `CheckRequest`'s HTTP attributes.

use std::net::IpAddr;

use http::HeaderMap;

use crate::access::Via;

/// One request, borrowed from the door: `'t` is where the request line lives, `'h` the
/// headers (for the proxy they are apart, since the request is mutated and forwarded after
/// the decision, while the line is kept for the log).
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'t, 'h> {
    pub via: Via,
    /// The method, as text (a door may hand over one it could not parse).
    pub method: &'t str,
    /// The request target: path and query, as sent (never normalised here).
    pub target: &'t str,
    /// False when the door could not read the original request: forward-auth headers that
    /// disagree, an `ext_authz` check without a method or an origin-form path. `method` and
    /// `target` are then the door's own request, for the log only.
    pub readable: bool,
    pub headers: &'h HeaderMap,
    /// The client: the TCP peer, or the downstream address Envoy reports.
    pub peer: Option<IpAddr>,
    /// `http` or `https`, as the client reached the API.
    pub scheme: &'h str,
    /// The host the client named (`Host`, `:authority`, or the ingress's forwarded host).
    pub host: Option<&'h str>,
}

impl<'t> RequestView<'t, '_> {
    /// The path part of the target, as sent.
    #[must_use]
    pub fn path(&self) -> &'t str {
        split_target(self.target).0
    }

    /// `scheme://host` as the client reached the API, when both are plain.
    #[must_use]
    pub fn origin(&self) -> Option<String> {
        origin(self.scheme, self.host?)
    }
}

/// `(path, query)` of a request target; a fragment is dropped.
#[must_use]
pub fn split_target(target: &str) -> (&str, Option<&str>) {
    let target = &target[..target.find('#').unwrap_or(target.len())];
    match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    }
}

/// `scheme://host[:port]`, when `scheme` is http(s) and `host` a plain host[:port]: only those
/// may flow into a header value (the RFC 9728 metadata URL of a challenge).
#[must_use]
pub fn origin(scheme: &str, host: &str) -> Option<String> {
    if !matches!(scheme, "http" | "https")
        || host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
    {
        return None;
    }
    Some(format!("{scheme}://{host}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_split_into_path_and_query() {
        assert_eq!(split_target("/a/b?x=1#f"), ("/a/b", Some("x=1")));
        assert_eq!(split_target("/a#f?x"), ("/a", None));
        assert_eq!(split_target("/"), ("/", None));
        assert_eq!(split_target("/p?"), ("/p", Some("")));
    }

    #[test]
    fn only_plain_origins() {
        assert_eq!(
            origin("https", "api.contoso.com:8443").as_deref(),
            Some("https://api.contoso.com:8443")
        );
        assert_eq!(origin("ftp", "h"), None);
        assert_eq!(origin("http", ""), None);
        assert_eq!(origin("http", "evil\"host"), None);
    }
}
