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
//! Then the same [`Authorizer::decide`](crate::auth::decide::Authorizer::decide) as the proxy
//! runs, and the answer is one of: 200 with the identity headers, 401 with exactly one
//! `WWW-Authenticate` (the proxy's challenge), or 403 (see [`Refusal::forward_auth`]). A 200
//! also lists the client-sent identity headers it does not overwrite in
//! `x-envoy-auth-headers-to-remove` (Envoy's HTTP `ext_authz` removes them upstream; nginx and
//! Traefik ignore it).

use std::net::SocketAddr;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};

use crate::access::{self, Via};
use crate::auth::challenge::RESOURCE_METADATA_PATH;
use crate::auth::decide::{Facts, Verdict};
use crate::auth::{Reason, Refusal};
use crate::metrics::Outcome;
use crate::proxy::{
    self, Gateway, SharedGateway, headers::X_FORWARDED_HOST, headers::X_FORWARDED_PROTO,
};

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
    /// True when it came from forward-auth headers, false when it is the request's own.
    pub forwarded: bool,
}

/// The forward-auth headers disagree with each other or cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadForwarded;

/// The original method and path: from the forward-auth headers when `trusted`, else (or
/// when there are none) the request's own.
///
/// # Errors
/// [`BadForwarded`] when the values present disagree, or one is not a method / path.
pub fn original<'a>(
    own_method: &Method,
    own_path: &'a str,
    headers: &'a HeaderMap,
    trusted: bool,
) -> Result<Original<'a>, BadForwarded> {
    let own = Original {
        method: own_method.clone(),
        path: own_path,
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
    )?;
    let path = agree(
        [
            (&X_FORWARDED_URI, target_path as fn(&str) -> Option<&str>),
            (&X_ORIGINAL_URI, target_path),
            (&X_ORIGINAL_URL, url_path),
        ]
        .into_iter()
        .flat_map(|(name, path_of)| headers.get_all(name).iter().map(move |v| (v, path_of)))
        .map(|(v, path_of)| v.to_str().ok().and_then(path_of).ok_or(BadForwarded)),
    )?;
    if method.is_none() && path.is_none() {
        return Ok(own);
    }
    let method = match method {
        Some(m) => Method::from_bytes(m.as_bytes()).map_err(|_| BadForwarded)?,
        None => own.method,
    };
    Ok(Original {
        method,
        path: path.unwrap_or(own_path),
        forwarded: true,
    })
}

/// The one value all of `values` hold, `None` when there are none.
fn agree<'a>(
    values: impl Iterator<Item = Result<&'a str, BadForwarded>>,
) -> Result<Option<&'a str>, BadForwarded> {
    let mut found: Option<&str> = None;
    for v in values {
        let v = v?;
        match found {
            Some(f) if f != v => return Err(BadForwarded),
            _ => found = Some(v),
        }
    }
    Ok(found)
}

/// The path of a request target (`/p?q`); an absolute-form target is read as a URL.
fn target_path(target: &str) -> Option<&str> {
    if target.starts_with('/') {
        let end = target.find(['?', '#']).unwrap_or(target.len());
        Some(&target[..end])
    } else {
        url_path(target)
    }
}

/// The path of `scheme://authority/path?query` (`/` when it has none).
fn url_path(url: &str) -> Option<&str> {
    let Some(i) = url.find("://") else {
        return url.starts_with('/').then(|| target_path(url)).flatten();
    };
    let rest = &url[i + 3..];
    match rest.find(['/', '?', '#']) {
        Some(j) if rest.as_bytes()[j] == b'/' => target_path(&rest[j..]),
        _ => Some("/"),
    }
}

/// The origin (`scheme://host`) of the original request, for an RFC 9728 metadata URL that
/// follows the request: from `X-Original-URL`, else `X-Forwarded-Proto` + `X-Forwarded-Host`,
/// when trusted; else the request's own `Host` as `http`. Public for the fuzz targets and
/// property tests (`fuzz/`, `tests/suite/properties.rs`); the handler is its only caller.
#[doc(hidden)]
#[must_use]
pub fn original_origin(headers: &HeaderMap, trusted: bool) -> Option<String> {
    let text = |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    if trusted {
        if let Some((scheme, rest)) = text(&X_ORIGINAL_URL).and_then(|u| u.split_once("://")) {
            let host = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
            return proxy::origin(scheme, host);
        }
        if let Some(host) = text(&X_FORWARDED_HOST) {
            return proxy::origin(text(&X_FORWARDED_PROTO).unwrap_or("http"), host);
        }
    }
    proxy::origin("http", text(&header::HOST)?)
}

/// The forward-auth listener's only handler. It reads the gateway in force (routes,
/// audiences, issuers, `server.trusted_proxies`) once per request, so a reload applies here
/// exactly as in proxy mode.
pub async fn handle(
    State(shared): State<SharedGateway>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request<Body>,
) -> Response<Body> {
    let started = Instant::now();
    let gw = shared.load_full();
    let headers = req.headers();
    let trusted = gw.forwarder.trusts(peer);
    let original = original(req.method(), req.uri().path(), headers, trusted);

    // The RFC 9728 document, asked for directly (an Ingress rule routing it here without
    // auth), not an auth check about it.
    if let (Ok(o), Some(doc)) = (&original, &gw.resource_metadata)
        && !o.forwarded
        && o.method == Method::GET
        && let Some(resource_path) = o.path.strip_prefix(RESOURCE_METADATA_PATH)
        && (resource_path.is_empty() || resource_path.starts_with('/'))
    {
        let origin = original_origin(headers, trusted).map(|o| format!("{o}{resource_path}"));
        return doc.render(origin.as_deref());
    }

    let in_flight = gw.metrics.in_flight();
    let (verdict, facts, method, path) = match &original {
        Ok(o) => {
            let (verdict, facts) = gw.authorizer.decide(&o.method, o.path, headers).await;
            (verdict, facts, o.method.as_str(), o.path)
        }
        Err(BadForwarded) => {
            if trusted {
                tracing::debug!("forward-auth headers disagree or cannot be read");
            }
            (
                Verdict::Refused {
                    reason: Reason::BadForwardedRequest,
                    scope: String::new(),
                },
                Facts::default(),
                req.method().as_str(),
                req.uri().path(),
            )
        }
    };
    gw.metrics.auth_latency.observe(started.elapsed());
    let (response, outcome) = match verdict {
        Verdict::Refused { reason, scope } => {
            if reason == Reason::KeysUnavailable {
                tracing::warn!(
                    "no usable signing keys: answering 401 with Retry-After (forward-auth cannot send 503 through nginx)"
                );
            }
            let origin = original_origin(headers, trusted);
            (
                Refusal::forward_auth(reason, &scope, &gw.challenges, origin.as_deref())
                    .into_response(),
                Outcome::Denied(reason),
            )
        }
        Verdict::Preflight => (allow(&gw, headers, None), Outcome::Preflight),
        Verdict::Anonymous => (allow(&gw, headers, None), Outcome::Anonymous),
        Verdict::Allowed(principal) => (allow(&gw, headers, Some(&principal)), Outcome::Allowed),
    };
    drop(in_flight);
    gw.metrics.record_request(outcome);
    access::log(&access::Entry {
        via: Via::ForwardAuth,
        method,
        path,
        status: response.status().as_u16(),
        outcome,
        facts: &facts,
        client_ip: Some(peer.ip()),
        request_id: headers
            .get(access::REQUEST_ID)
            .and_then(|v| v.to_str().ok()),
        started,
        upstream: None,
    });
    response
}

/// 200: the verified identity (none for preflights and anonymous routes) for the ingress to
/// copy upstream, and the client's other identity headers for Envoy to remove.
fn allow(
    gw: &Gateway,
    request: &HeaderMap,
    principal: Option<&crate::auth::Principal>,
) -> Response<Body> {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::OK;
    let h = r.headers_mut();
    if let Some(p) = principal {
        gw.identity.set(h, p);
    }
    let remove: Vec<HeaderName> = gw
        .identity
        .client_sent(request)
        .into_iter()
        .filter(|n| !h.contains_key(n))
        .collect();
    if !remove.is_empty() {
        let list = remove
            .iter()
            .map(HeaderName::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        if let Ok(v) = HeaderValue::try_from(list) {
            h.insert(ENVOY_HEADERS_TO_REMOVE, v);
        }
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
