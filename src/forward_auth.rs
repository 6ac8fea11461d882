//! Forward-auth mode (`server.mode = "forward-auth"`): the main listener answers every request
//! with the decision only, for an ingress that asks before it forwards: nginx `auth_request`,
//! ingress-nginx `auth-url`, Traefik `ForwardAuth`, Envoy `ext_authz` (HTTP flavour).
//!
//! The original method and URI come from the ingress's headers, believed only from a peer in
//! `server.trusted_proxies` (otherwise the request's own method and URI are decided on):
//!
//! | header | set by |
//! |---|---|
//! | `X-Forwarded-Method`, `X-Forwarded-Uri` | Traefik |
//! | `X-Original-Method`, `X-Original-URL` (a full URL; its path is used) | ingress-nginx |
//! | `X-Original-URI` | nginx `auth_request` (as the docs configure it), ingress-nginx with `auth-method` |
//!
//! Each ingress overwrites its own headers but passes the client's other headers through, so a
//! client could add another family's header naming a different path. Whenever the values
//! present disagree (after taking the path of each), the request is refused
//! (`bad_forwarded_request`, 401 `invalid_request`) instead of one of them being picked.
//!
//! That original request is decided by [`Gateway::check`] like any other; this door only
//! renders the decision: 200 with the decision's `set` edits as response headers (the
//! identity, and the upstream credential for `upstream.authorization = "basic"`) for nginx
//! `auth_request_set`, Traefik `authResponseHeaders` and Caddy `copy_headers`, and the
//! removals in `x-envoy-auth-headers-to-remove` (Envoy's HTTP `ext_authz` removes them
//! upstream; the others ignore it); or the refusal in forward-auth's shape: 401 with exactly
//! one `WWW-Authenticate`, or 403 ([`Refusal::forward_auth`]).

use std::net::SocketAddr;

use axum::body::Body;
use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};

use crate::access::{self, Via};
use crate::auth::challenge::metadata_resource_path;
#[cfg(doc)]
use crate::gateway::Refusal;
use crate::gateway::{AccessRecord, Edits, Gateway, RequestView, Verdict};
use crate::gateway::{origin, split_target};
use crate::upstream::headers::{X_FORWARDED_HOST, X_FORWARDED_PROTO};

/// Traefik: the original method.
pub const X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
/// Traefik: the original request target (path and query).
pub const X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
/// ingress-nginx: the original method.
pub const X_ORIGINAL_METHOD: HeaderName = HeaderName::from_static("x-original-method");
/// ingress-nginx: `$scheme://$http_host$request_uri`.
pub const X_ORIGINAL_URL: HeaderName = HeaderName::from_static("x-original-url");
/// nginx `auth_request` (and ingress-nginx with `auth-method`): `$request_uri`.
pub const X_ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");
/// Envoy's HTTP `ext_authz`: request headers to remove before forwarding upstream.
pub const ENVOY_HEADERS_TO_REMOVE: HeaderName =
    HeaderName::from_static("x-envoy-auth-headers-to-remove");

/// The request the ingress asks about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Original<'a> {
    pub method: Method,
    /// The raw path, without query or fragment.
    pub path: &'a str,
    /// The raw request target: the path and the query.
    pub target: &'a str,
    /// True when it came from forward-auth headers, false when it is the request's own.
    pub forwarded: bool,
}

/// The forward-auth headers disagree with each other or cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadForwarded;

/// The original method and target: from the forward-auth headers when `trusted`, else (or
/// when there are none) the request's own (`own_target`: path and query).
///
/// # Errors
/// [`BadForwarded`] when the values present disagree (on the path), or one is not a
/// method / target.
pub fn original<'a>(
    own_method: &Method,
    own_target: &'a str,
    headers: &'a HeaderMap,
    trusted: bool,
) -> Result<Original<'a>, BadForwarded> {
    let own = Original {
        method: own_method.clone(),
        path: split_target(own_target).0,
        target: own_target,
        forwarded: false,
    };
    if !trusted {
        return Ok(own);
    }
    let method = agree(
        [&X_FORWARDED_METHOD, &X_ORIGINAL_METHOD]
            .into_iter()
            .flat_map(|name| headers.get_all(name))
            .map(|v| v.to_str().map_err(|_| BadForwarded)),
        |m| m,
    )?;
    let target = agree(
        [
            (&X_FORWARDED_URI, origin_form as fn(&str) -> Option<&str>),
            (&X_ORIGINAL_URI, origin_form),
            (&X_ORIGINAL_URL, url_target),
        ]
        .into_iter()
        .flat_map(|(name, target_of)| headers.get_all(name).iter().map(move |v| (v, target_of)))
        .map(|(v, target_of)| v.to_str().ok().and_then(target_of).ok_or(BadForwarded)),
        |t| split_target(t).0,
    )?;
    if method.is_none() && target.is_none() {
        return Ok(own);
    }
    let method = match method {
        Some(m) => Method::from_bytes(m.as_bytes()).map_err(|_| BadForwarded)?,
        None => own.method,
    };
    let target = target.unwrap_or(own_target);
    Ok(Original {
        method,
        path: split_target(target).0,
        target,
        forwarded: true,
    })
}

/// The first of `values` when all agree on `key` (the whole text for a method, the path for
/// a target: a URL and a request target of the same request may write the query
/// differently), `None` when there are none.
fn agree<'a>(
    values: impl Iterator<Item = Result<&'a str, BadForwarded>>,
    key: fn(&str) -> &str,
) -> Result<Option<&'a str>, BadForwarded> {
    let mut found: Option<&str> = None;
    for v in values {
        let v = v?;
        match found {
            Some(f) if key(f) != key(v) => return Err(BadForwarded),
            Some(_) => {}
            None => found = Some(v),
        }
    }
    Ok(found)
}

/// A request target (`/p?q`), without its fragment; an absolute-form target is read as a URL.
fn origin_form(target: &str) -> Option<&str> {
    if target.starts_with('/') {
        Some(&target[..target.find('#').unwrap_or(target.len())])
    } else {
        url_target(target)
    }
}

/// The request target of `scheme://authority/path?query` (`/` when it has no path).
fn url_target(url: &str) -> Option<&str> {
    let Some(i) = url.find("://") else {
        return url.starts_with('/').then(|| origin_form(url)).flatten();
    };
    let rest = &url[i + 3..];
    match rest.find(['/', '?', '#']) {
        Some(j) if rest.as_bytes()[j] == b'/' => origin_form(&rest[j..]),
        _ => Some("/"),
    }
}

/// The scheme and host of the original request: from `X-Original-URL`, else
/// `X-Forwarded-Proto` + `X-Forwarded-Host`, when trusted; else the request's own `Host` as
/// `http`.
fn original_scheme_host(headers: &HeaderMap, trusted: bool) -> (&str, Option<&str>) {
    let text = |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    if trusted {
        if let Some((scheme, rest)) = text(&X_ORIGINAL_URL).and_then(|u| u.split_once("://")) {
            return (
                scheme,
                Some(&rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())]),
            );
        }
        if let Some(host) = text(&X_FORWARDED_HOST) {
            return (text(&X_FORWARDED_PROTO).unwrap_or("http"), Some(host));
        }
    }
    ("http", text(&header::HOST))
}

/// The origin (`scheme://host`) of the original request, for an RFC 9728 metadata URL that
/// follows the request (see [`original_scheme_host`]). Public for the fuzz targets and
/// property tests (`fuzz/`, `tests/suite/properties.rs`).
#[doc(hidden)]
#[must_use]
pub fn original_origin(headers: &HeaderMap, trusted: bool) -> Option<String> {
    let (scheme, host) = original_scheme_host(headers, trusted);
    origin(scheme, host?)
}

/// The forward-auth listener's only handler. It reads the gateway in force (routes,
/// audiences, issuers, `server.trusted_proxies`) once per request, so a reload applies here
/// exactly as in proxy mode.
pub async fn handle(gw: &Gateway, peer: SocketAddr, req: Request<Body>) -> Response<Body> {
    let headers = req.headers();
    let trusted = gw.trusts(peer);
    let own_target = req
        .uri()
        .path_and_query()
        .map_or(req.uri().path(), |pq| pq.as_str());
    let original = original(req.method(), own_target, headers, trusted);

    // The RFC 9728 document, asked for directly (an Ingress rule routing it here without
    // auth), not an auth check about it.
    if let (Ok(o), Some(doc)) = (&original, &gw.resource_metadata)
        && !o.forwarded
        && o.method == Method::GET
        && let Some(resource_path) = metadata_resource_path(o.path)
    {
        let origin = original_origin(headers, trusted).map(|o| format!("{o}{resource_path}"));
        return doc.render(origin.as_deref());
    }

    let mut record = AccessRecord::start(
        &gw.metrics,
        Via::ForwardAuth,
        (req.method().as_str(), req.uri().path()),
        Some(peer.ip()),
        headers
            .get(access::REQUEST_ID)
            .and_then(|v| v.to_str().ok()),
    );
    let (scheme, host) = original_scheme_host(headers, trusted);
    let (method, target, readable) = match &original {
        Ok(o) => (o.method.as_str(), o.target, true),
        Err(BadForwarded) => (req.method().as_str(), own_target, false),
    };
    let view = RequestView {
        via: Via::ForwardAuth,
        method,
        target,
        readable,
        headers,
        peer: Some(peer.ip()),
        scheme,
        host,
    };
    // The original request's HTTP version is not forwarded by the ingresses: none recorded.
    let decision = record.check(gw, &view, None).await;
    let response = match decision.verdict {
        Verdict::Refuse(refusal) => refusal.into_response(),
        Verdict::Pass(pass) => allow(pass.edits),
    };
    record.finish(response.status().as_u16(), None, None);
    response
}

/// 200: the `set` edits (the verified identity; none for preflights and anonymous routes)
/// for the ingress to copy upstream, and the removals for Envoy.
fn allow(edits: Edits) -> Response<Body> {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::OK;
    let removals = edits
        .removals()
        .map(HeaderName::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    let h = r.headers_mut();
    if !removals.is_empty()
        && let Ok(v) = HeaderValue::try_from(removals)
    {
        h.insert(ENVOY_HEADERS_TO_REMOVE, v);
    }
    for (name, value) in edits.set {
        h.insert(name, value);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append((*n).clone(), HeaderValue::from_str(v).expect("value"));
        }
        h
    }

    fn decided(h: &HeaderMap, trusted: bool) -> Result<(Method, String, bool), BadForwarded> {
        original(&Method::GET, "/auth", h, trusted)
            .map(|o| (o.method, o.path.to_owned(), o.forwarded))
    }

    #[test]
    fn the_target_keeps_its_query() {
        let h = headers(&[(&X_FORWARDED_URI, "/q?access_token=x#f")]);
        let o = original(&Method::GET, "/auth", &h, true).expect("one header");
        assert_eq!((o.path, o.target), ("/q", "/q?access_token=x"));
        let h = headers(&[
            (&X_ORIGINAL_URL, "https://h/p?a=1"),
            (&X_ORIGINAL_URI, "/p?a=1"),
        ]);
        let o = original(&Method::GET, "/auth", &h, true).expect("agreeing");
        assert_eq!(o.target, "/p?a=1");
        let h = headers(&[(&X_ORIGINAL_URL, "https://h?a=1")]);
        let o = original(&Method::GET, "/auth", &h, true).expect("root");
        assert_eq!((o.path, o.target), ("/", "/"));
    }

    #[test]
    fn each_family_is_read() {
        let traefik = headers(&[
            (&X_FORWARDED_METHOD, "POST"),
            (&X_FORWARDED_URI, "/q/aql?q=SELECT"),
        ]);
        assert_eq!(
            decided(&traefik, true),
            Ok((Method::POST, "/q/aql".into(), true))
        );
        let ingress_nginx = headers(&[
            (&X_ORIGINAL_METHOD, "DELETE"),
            (&X_ORIGINAL_URL, "https://api.contoso.com/ehr/1?x=1"),
        ]);
        assert_eq!(
            decided(&ingress_nginx, true),
            Ok((Method::DELETE, "/ehr/1".into(), true))
        );
        let nginx = headers(&[(&X_ORIGINAL_URI, "/a/b#frag")]);
        assert_eq!(
            decided(&nginx, true),
            Ok((Method::GET, "/a/b".into(), true))
        );
        // ingress-nginx with auth-method sets both, agreeing.
        let both = headers(&[
            (&X_ORIGINAL_URL, "http://h:8080/p?x"),
            (&X_ORIGINAL_URI, "/p?x"),
        ]);
        assert_eq!(decided(&both, true), Ok((Method::GET, "/p".into(), true)));
        let host_only = headers(&[(&X_ORIGINAL_URL, "https://h?x")]);
        assert_eq!(
            decided(&host_only, true),
            Ok((Method::GET, "/".into(), true))
        );
    }

    #[test]
    fn untrusted_or_absent_means_the_request_itself() {
        let h = headers(&[(&X_FORWARDED_URI, "/public"), (&X_FORWARDED_METHOD, "PUT")]);
        assert_eq!(decided(&h, false), Ok((Method::GET, "/auth".into(), false)));
        assert_eq!(
            decided(&HeaderMap::new(), true),
            Ok((Method::GET, "/auth".into(), false))
        );
    }

    #[test]
    fn disagreement_is_refused_not_resolved() {
        // A client adding Traefik's header behind nginx, which passes it through.
        let h = headers(&[(&X_ORIGINAL_URI, "/admin"), (&X_FORWARDED_URI, "/public")]);
        assert_eq!(decided(&h, true), Err(BadForwarded));
        let h = headers(&[(&X_FORWARDED_METHOD, "GET"), (&X_ORIGINAL_METHOD, "POST")]);
        assert_eq!(decided(&h, true), Err(BadForwarded));
        let h = headers(&[(&X_FORWARDED_URI, "/a"), (&X_FORWARDED_URI, "/b")]);
        assert_eq!(decided(&h, true), Err(BadForwarded));
        for bad in ["*", "", "relative/path", "https:/x"] {
            let h = headers(&[(&X_FORWARDED_URI, bad)]);
            assert_eq!(decided(&h, true), Err(BadForwarded), "{bad:?}");
        }
        let h = headers(&[(&X_FORWARDED_METHOD, "GE T")]);
        assert_eq!(decided(&h, true), Err(BadForwarded));
    }

    #[test]
    fn origin_of_the_original_request() {
        let h = headers(&[(&X_ORIGINAL_URL, "https://api.contoso.com/x")]);
        assert_eq!(
            original_origin(&h, true).as_deref(),
            Some("https://api.contoso.com")
        );
        let h = headers(&[
            (&X_FORWARDED_PROTO, "https"),
            (&X_FORWARDED_HOST, "api.contoso.com"),
            (&header::HOST, "entragate:8080"),
        ]);
        assert_eq!(
            original_origin(&h, true).as_deref(),
            Some("https://api.contoso.com")
        );
        assert_eq!(
            original_origin(&h, false).as_deref(),
            Some("http://entragate:8080")
        );
        let h = headers(&[(&X_ORIGINAL_URL, "https://evil\"host/x")]);
        assert_eq!(original_origin(&h, true), None);
    }
}
