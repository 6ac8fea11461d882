//! Sending a request to the upstream and streaming the answer back.
//!
//! A pooled hyper-util client; bodies pass through as streams in both directions, so an
//! upload or download of any size uses constant memory. Failures map to 502 (unreachable,
//! reset) and 504 (connect or response-header timeout).

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, Uri, Version, header};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use ipnet::IpNet;

use super::headers;
use crate::config::Upstream;

/// Why the upstream gave no response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamError {
    /// Connection refused, reset, or closed before a response: 502.
    Unreachable,
    /// No connection or no response headers in time: 504.
    Timeout,
    /// The client's body went past its limit while streaming: 413.
    BodyTooLarge,
}

/// The upstream and how to reach it.
#[derive(Debug, Clone)]
pub struct Forwarder {
    client: Client<HttpConnector, Body>,
    scheme: Scheme,
    authority: Authority,
    host: HeaderValue,
    base_path: String,
    timeout: Duration,
    trusted_proxies: Vec<IpNet>,
}

impl Forwarder {
    #[must_use]
    pub fn new(upstream: &Upstream, trusted_proxies: Vec<IpNet>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(upstream.connect_timeout));
        connector.set_nodelay(true);
        connector.enforce_http(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector);
        let host = HeaderValue::from_str(upstream.origin.as_str())
            .unwrap_or_else(|_| HeaderValue::from_static("localhost"));
        Self {
            client,
            scheme: upstream.scheme.clone(),
            authority: upstream.origin.clone(),
            host,
            base_path: upstream.base_path.clone(),
            timeout: upstream.timeout,
            trusted_proxies,
        }
    }

    /// True when `peer` may set forwarding headers (`server.trusted_proxies`): its
    /// `X-Forwarded-*` chain is extended here, and in forward-auth mode its original-request
    /// headers are believed ([`crate::forward_auth`]).
    #[must_use]
    pub fn trusts(&self, peer: SocketAddr) -> bool {
        headers::is_trusted(&self.trusted_proxies, peer.ip())
    }

    /// Forwards `req`: already authorized, hop-by-hop headers removed (before the identity was
    /// set, so `Connection` cannot name an identity header away), identity headers set.
    ///
    /// # Errors
    /// [`UpstreamError`] when no response headers arrive.
    pub async fn forward(
        &self,
        req: Request<Body>,
        peer: SocketAddr,
    ) -> Result<Response<Body>, UpstreamError> {
        let (mut parts, body) = req.into_parts();
        let original_host = parts.headers.get(header::HOST).cloned().or_else(|| {
            parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        headers::set_forwarded(
            &mut parts.headers,
            peer.ip(),
            self.trusts(peer),
            "http",
            original_host,
        );
        parts.headers.insert(header::HOST, self.host.clone());
        parts.uri = self.upstream_uri(&parts.uri);
        // Whatever the client spoke (HTTP/1.0, 1.1 or 2), the upstream connection is HTTP/1.1.
        parts.version = Version::HTTP_11;

        let request = Request::from_parts(parts, body);
        let response = match tokio::time::timeout(self.timeout, self.client.request(request)).await
        {
            Err(_) => return Err(UpstreamError::Timeout),
            Ok(Err(e)) => return Err(classify(&e)),
            Ok(Ok(r)) => r,
        };
        let (mut parts, body) = response.into_parts();
        headers::remove_hop_by_hop(&mut parts.headers);
        Ok(Response::from_parts(parts, Body::new(body)))
    }

    /// The upstream's URI for a client's request target: the path is kept exactly as sent
    /// (only prefixed with the base path), the query too.
    fn upstream_uri(&self, original: &Uri) -> Uri {
        let pq = original
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let pq = if self.base_path.is_empty() {
            pq
        } else {
            PathAndQuery::try_from(format!("{}{}", self.base_path, pq.as_str())).unwrap_or(pq)
        };
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(pq);
        Uri::from_parts(parts).unwrap_or_else(|_| original.clone())
    }
}

fn classify(e: &hyper_util::client::legacy::Error) -> UpstreamError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<http_body_util::LengthLimitError>() {
            return UpstreamError::BodyTooLarge;
        }
        source = s.source();
    }
    if e.is_connect() {
        let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
        while let Some(s) = source {
            if let Some(io) = s.downcast_ref::<std::io::Error>()
                && io.kind() == std::io::ErrorKind::TimedOut
            {
                return UpstreamError::Timeout;
            }
            if s.to_string().contains("timed out") || s.to_string().contains("timeout") {
                return UpstreamError::Timeout;
            }
            source = s.source();
        }
    }
    UpstreamError::Unreachable
}
