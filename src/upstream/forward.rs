//! Sending a request to the upstream and streaming the answer back.
//!
//! HTTP/1.1 connections come from a pool per worker ([`super::pool`]), HTTP/2 ones from
//! hyper-util's client; bodies pass through as streams in both directions, so an
//! upload or download of any size uses constant memory. Failures map to 502 (unreachable,
//! reset, TLS refused) and 504 (connect or response-header timeout). An `https` upstream is
//! reached through [`crate::tls::upstream`].
//!
//! Idle pooled connections are closed after `upstream.idle_timeout`, which should be shorter
//! than the upstream's own keep-alive timeout. When a pooled connection fails anyway (the
//! upstream closed it as the request went out), a replayable request — `GET`, `HEAD`,
//! `OPTIONS` or `TRACE` with no body, as Go's and nginx's clients also retry — is sent once
//! more on another connection; anything else gets 502. At most `upstream.max_connections`
//! requests are with the upstream at once (each holds an HTTP/1.1 connection, or an HTTP/2
//! stream, until its response body ends); more wait for a slot within `upstream.timeout`, so a
//! wave of slow requests cannot open connections until the process runs out of file
//! descriptors. The HTTP version is [`super::protocol`]'s (`upstream.protocol`); on HTTP/2 the
//! same retry and the same 502 / 504 apply (a stream refused or reset before its response is
//! 502, a `GOAWAY` that ends an unstarted request is retried by hyper's pool itself). Every failure's cause is logged at
//! `warn` under the target `entragate::upstream` (no headers, no token).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderValue, Method, Request, Response, Uri, Version, header};
use http_body::Body as _;
use hyper::client::conn::http1;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use ipnet::IpNet;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt as _;

use super::pool::Pool;
use super::{headers, protocol};
use crate::config::{Upstream, UpstreamProtocol};
use crate::telemetry::ErrorChain;
use crate::tls::upstream::{Connector, UpstreamTlsError};

/// Why the upstream gave no response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamError {
    /// Connection refused, reset, or closed before a response: 502.
    Unreachable,
    /// No connection or no response headers in time: 504.
    Timeout,
    /// The client's body went past its limit while streaming: 413.
    BodyTooLarge,
    /// The client's body broke off while streaming (the client went away, or sent a body
    /// its framing cannot carry): the upstream request is abandoned. Logged as
    /// `client_closed`, 499; a client still listening gets 400.
    ClientBody,
}

/// The upstream and how to reach it.
#[derive(Debug, Clone)]
pub struct Forwarder {
    /// One pool per worker of the main listener ([`crate::worker`]): a request's upstream
    /// connection is one its own worker opened and drives, as nginx's workers keep their own
    /// upstream keep-alive connections.
    pools: Pools,
    /// `upstream.max_connections` permits; one is held from sending until the response body
    /// ends (or is dropped).
    slots: Arc<Semaphore>,
    scheme: Scheme,
    authority: Authority,
    host: HeaderValue,
    base_path: String,
    timeout: Duration,
    trusted_proxies: Vec<IpNet>,
    /// `X-Forwarded-Proto` for a client of this listener: `https` when it terminates TLS.
    client_proto: &'static str,
    /// The API prefix removed from the path the upstream receives (`strip_prefix`).
    strip_prefix: Option<String>,
    /// `upstream.protocol`, with `auto` on plain `http` already HTTP/1.1.
    protocol: UpstreamProtocol,
    /// `upstream.websocket_idle_timeout` when WebSocket upgrades are forwarded
    /// (`upstream.websocket`, and an upstream reached over HTTP/1.1).
    websocket: Option<Duration>,
}

/// Where a worker's upstream connections come from.
#[derive(Debug, Clone)]
enum Pools {
    /// HTTP/1.1 (`upstream.protocol = "http1"`, or `auto` on plain `http`): this crate's pools.
    Http1 {
        pools: Arc<[Arc<Pool>]>,
        connector: Connector,
        /// The URI the connector is called with: the upstream's scheme and origin.
        target: Uri,
    },
    /// HTTP/2 (`h2c`, or `auto` over TLS, where ALPN decides): hyper-util's clients.
    Clients(Arc<[Client<Connector, Body>]>),
}

/// Why a request got no response from the upstream, before it is classified.
#[derive(Debug)]
enum SendError {
    Client(hyper_util::client::legacy::Error),
    /// The connection could not be made (refused, timed out, TLS refused).
    Connect(tower::BoxError),
    Hyper(hyper::Error),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Client(e) => write!(f, "{}", ErrorChain(e)),
            Self::Connect(e) => write!(f, "connect: {}", ErrorChain(&**e)),
            Self::Hyper(e) => write!(f, "{}", ErrorChain(e)),
        }
    }
}

/// The upstream's side of a WebSocket tunnel, once its 101 has arrived: its connection (when
/// hyper hands it over) and the `upstream.max_connections` slot it holds while open.
pub struct UpstreamUpgrade {
    pub on: hyper::upgrade::OnUpgrade,
    pub slot: Option<OwnedSemaphorePermit>,
}

impl Forwarder {
    /// `workers`: the main listener's workers, one pool each.
    ///
    /// # Errors
    /// An `https` upstream whose TLS client cannot be built (e.g. no trusted roots).
    pub fn new(
        upstream: &Upstream,
        trusted_proxies: Vec<IpNet>,
        workers: usize,
    ) -> Result<Self, UpstreamTlsError> {
        let connector = crate::tls::upstream::connector(upstream)?;
        let protocol = protocol::effective(upstream.protocol, &upstream.scheme);
        // `upstream.max_idle_connections` is the whole gateway's: shared out over the pools,
        // the remainder one each to the first ones, so the sum is exact.
        let pools = workers.max(1);
        let max_idle = |i: usize| {
            upstream.max_idle_connections / pools
                + usize::from(i < upstream.max_idle_connections % pools)
        };
        let client = |max_idle: usize| {
            Client::builder(TokioExecutor::new())
                // h2c: every connection is HTTP/2 with prior knowledge. (`auto` needs nothing
                // here: a connection whose ALPN chose h2 is HTTP/2.)
                .http2_only(protocol == UpstreamProtocol::H2c)
                .timer(hyper_util::rt::TokioTimer::new())
                .pool_idle_timeout(upstream.idle_timeout)
                .pool_timer(hyper_util::rt::TokioTimer::new())
                // Unbounded, a burst of concurrent requests would leave as many idle connections
                // (each with its buffers and task) open for the idle timeout.
                .pool_max_idle_per_host(max_idle)
                .build(connector.clone())
        };
        let host = HeaderValue::from_str(upstream.origin.as_str())
            .unwrap_or_else(|_| HeaderValue::from_static("localhost"));
        let pools = if protocol == UpstreamProtocol::Http1 {
            let mut target = http::uri::Parts::default();
            target.scheme = Some(upstream.scheme.clone());
            target.authority = Some(upstream.origin.clone());
            target.path_and_query = Some(PathAndQuery::from_static("/"));
            Pools::Http1 {
                pools: (0..pools)
                    .map(|i| Pool::new(max_idle(i), upstream.idle_timeout))
                    .collect(),
                connector,
                target: Uri::from_parts(target).unwrap_or_default(),
            }
        } else {
            Pools::Clients((0..pools).map(|i| client(max_idle(i))).collect())
        };
        Ok(Self {
            pools,
            slots: Arc::new(Semaphore::new(upstream.max_connections)),
            scheme: upstream.scheme.clone(),
            authority: upstream.origin.clone(),
            host,
            base_path: upstream.base_path.clone(),
            timeout: upstream.timeout,
            trusted_proxies,
            client_proto: "http",
            strip_prefix: None,
            protocol,
            // An HTTP/2 connection has no `Upgrade` (extended CONNECT, RFC 8441, is not
            // spoken to upstreams): to h2c the request goes as a plain one.
            websocket: (upstream.websocket && protocol != UpstreamProtocol::H2c)
                .then_some(upstream.websocket_idle_timeout),
        })
    }

    /// Removes `prefix` (normalised, no trailing `/`) from the path the upstream receives.
    #[must_use]
    pub fn with_strip_prefix(mut self, prefix: Option<String>) -> Self {
        self.strip_prefix = prefix;
        self
    }

    /// Marks the listener as HTTPS: `X-Forwarded-Proto: https`, and `https://` origins.
    #[must_use]
    pub fn with_client_tls(mut self, tls: bool) -> Self {
        self.client_proto = if tls { "https" } else { "http" };
        self
    }

    /// The upstream's `host:port`.
    #[must_use]
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// `http` or `https`: how the upstream is reached.
    #[must_use]
    pub fn scheme(&self) -> &Scheme {
        &self.scheme
    }

    /// The scheme clients use to reach this listener.
    #[must_use]
    pub fn client_proto(&self) -> &'static str {
        self.client_proto
    }

    /// True when `peer` may set forwarding headers (`server.trusted_proxies`): its
    /// `X-Forwarded-*` chain is extended here, and in forward-auth mode its original-request
    /// headers are believed ([`crate::forward_auth`]).
    #[must_use]
    pub fn trusts(&self, peer: SocketAddr) -> bool {
        headers::is_trusted(&self.trusted_proxies, peer.ip())
    }

    /// The tunnels' idle timeout when WebSocket upgrades are forwarded to this upstream;
    /// `None` when they are not (`upstream.websocket = false`, or an h2c upstream): the
    /// request then goes on without its upgrade headers.
    #[must_use]
    pub fn websocket(&self) -> Option<Duration> {
        self.websocket
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
        self.forward_upgrade(req, peer, false)
            .await
            .map(|(response, _)| response)
    }

    /// [`Forwarder::forward`], and with `upgrade` (a WebSocket handshake whose upgrade
    /// headers were kept) a 101 from the upstream comes back with its `Connection` /
    /// `Upgrade` and the upstream's side of the tunnel. Any other answer is as `forward`'s.
    ///
    /// # Errors
    /// [`UpstreamError`] when no response headers arrive.
    pub async fn forward_upgrade(
        &self,
        req: Request<Body>,
        peer: SocketAddr,
        upgrade: bool,
    ) -> Result<(Response<Body>, Option<UpstreamUpgrade>), UpstreamError> {
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
            self.client_proto,
            original_host,
        );
        parts.uri = self.upstream_uri(&parts.uri);
        protocol::prepare(self.protocol, &mut parts, &self.host);

        let replay = Replay::of(&parts, &body);
        let request = Request::from_parts(parts, body);
        let send = async {
            // Never closed, so never `None`.
            let slot = Arc::clone(&self.slots).acquire_owned().await.ok();
            let worker = crate::worker::index();
            let result = match &self.pools {
                Pools::Http1 {
                    pools,
                    connector,
                    target,
                } => {
                    let pool = &pools[worker % pools.len()];
                    send_http1(pool, connector, target, request, replay)
                        .await
                        .map(|(r, sender)| (r, Some((Arc::clone(pool), sender))))
                }
                Pools::Clients(clients) => {
                    let client = &clients[worker % clients.len()];
                    let first = client.request(request).await.map_err(SendError::Client);
                    let result = match (first, replay) {
                        (Err(e), Some(replay)) if e.may_retry() => {
                            sending_again(&e);
                            client
                                .request(replay.request())
                                .await
                                .map_err(SendError::Client)
                        }
                        (result, _) => result,
                    };
                    result.map(|r| (r, None))
                }
            };
            result.map(|(r, back)| (r, back, slot))
        };
        let (response, back, slot) = match tokio::time::timeout(self.timeout, send).await {
            Err(_) => {
                tracing::warn!(
                    target: "entragate::upstream",
                    timeout = ?self.timeout,
                    "no upstream response headers within upstream.timeout"
                );
                return Err(UpstreamError::Timeout);
            }
            Ok(Err(e)) => {
                let kind = e.classify();
                if kind != UpstreamError::ClientBody {
                    tracing::warn!(
                        target: "entragate::upstream",
                        error = %e,
                        "upstream request failed"
                    );
                }
                return Err(kind);
            }
            Ok(Ok(sent)) => sent,
        };
        let mut response = response;
        if upgrade && response.status() == http::StatusCode::SWITCHING_PROTOCOLS {
            // The connection is the tunnel's now: it does not go back to the pool.
            drop(back);
            let on = hyper::upgrade::on(&mut response);
            let (mut parts, _) = response.into_parts();
            headers::remove_hop_by_hop(&mut parts.headers);
            super::websocket::keep_upgrade(&mut parts.headers);
            return Ok((
                Response::from_parts(parts, Body::empty()),
                Some(UpstreamUpgrade { on, slot }),
            ));
        }
        let (mut parts, body) = response.into_parts();
        headers::remove_hop_by_hop(&mut parts.headers);
        let body = Slotted {
            inner: body,
            slot,
            back,
        };
        Ok((Response::from_parts(parts, Body::new(body)), None))
    }

    /// The upstream's URI for a client's request target: the path is kept exactly as sent
    /// (only prefixed with the base path), the query too.
    fn upstream_uri(&self, original: &Uri) -> Uri {
        let pq = original
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let pq = match &self.strip_prefix {
            Some(prefix) => strip_prefix(&pq, prefix).unwrap_or(pq),
            None => pq,
        };
        let pq = if self.base_path.is_empty() {
            pq
        } else {
            PathAndQuery::try_from(format!("{}{}", self.base_path, pq.as_str())).unwrap_or(pq)
        };
        let mut parts = http::uri::Parts::default();
        if let Pools::Clients(_) = self.pools {
            // hyper-util's client takes the absolute form; an HTTP/1.1 connection of this
            // crate's pools is sent the origin form it writes.
            parts.scheme = Some(self.scheme.clone());
            parts.authority = Some(self.authority.clone());
        }
        parts.path_and_query = Some(pq);
        Uri::from_parts(parts).unwrap_or_else(|_| original.clone())
    }
}

/// A pooled HTTP/1.1 connection's answer, and the connection to hand back when its body
/// ends.
type Answer = (Response<hyper::body::Incoming>, http1::SendRequest<Body>);

/// Sends `request` on the worker's most recent idle connection, or on a new one. When a
/// pooled connection turns out to be closed, the request goes once more on a new connection:
/// as it was when hyper hands it back unsent, else from `replay` when it may be sent again
/// (the upstream closed the connection as the request went out).
async fn send_http1(
    pool: &Arc<Pool>,
    connector: &Connector,
    target: &Uri,
    request: Request<Body>,
    replay: Option<Replay>,
) -> Result<Answer, SendError> {
    // (The connect futures are boxed: a new connection is the rare case, and its future,
    // TLS handshake included, would otherwise make every request's future that much larger
    // to move.)
    let (sender, reused) = match pool.take() {
        Some(sender) => (sender, true),
        None => (Box::pin(connect(pool, connector, target)).await?, false),
    };
    let (e, unsent) = match send_on(sender, request).await {
        Ok(answer) => return Ok(answer),
        Err((e, unsent)) => (SendError::Hyper(e), unsent),
    };
    let again = match unsent {
        Some(request) => Some(request),
        None if e.may_retry() => replay.map(Replay::request),
        None => None,
    };
    match again {
        Some(request) if reused => {
            sending_again(&e);
            let sender = Box::pin(connect(pool, connector, target)).await?;
            send_on(sender, request)
                .await
                .map_err(|(e, _)| SendError::Hyper(e))
        }
        _ => Err(e),
    }
}

/// The log line of a request sent a second time ([`SendError::may_retry`]).
fn sending_again(e: &SendError) {
    tracing::debug!(
        target: "entragate::upstream",
        error = %e,
        "upstream connection failed before a response; sending the request again"
    );
}

/// Sends on one connection; on failure the error, and the request if hyper never sent it.
async fn send_on(
    mut sender: http1::SendRequest<Body>,
    request: Request<Body>,
) -> Result<Answer, (hyper::Error, Option<Request<Body>>)> {
    if let Err(e) = sender.ready().await {
        return Err((e, Some(request)));
    }
    match sender.try_send_request(request).await {
        Ok(response) => Ok((response, sender)),
        Err(mut e) => {
            let unsent = e.take_message();
            Err((e.into_error(), unsent))
        }
    }
}

/// A new HTTP/1.1 connection to the upstream (TCP, TLS for `https`), driven by a task of
/// the current worker.
async fn connect(
    pool: &Arc<Pool>,
    connector: &Connector,
    target: &Uri,
) -> Result<http1::SendRequest<Body>, SendError> {
    let io = connector
        .clone()
        .oneshot(target.clone())
        .await
        .map_err(SendError::Connect)?;
    let (sender, connection) = http1::Builder::new()
        .handshake(io)
        .await
        .map_err(SendError::Hyper)?;
    tokio::spawn(async move {
        if let Err(e) = connection.with_upgrades().await {
            tracing::debug!(
                target: "entragate::upstream",
                error = %ErrorChain(&e),
                "upstream connection ended"
            );
        }
    });
    pool.start_sweep();
    Ok(sender)
}

/// The path and query without the API's `prefix`: `/ehrbase/rest?x` under `/ehrbase` is
/// `/rest?x`, and `/ehrbase` alone is `/`. When the path as sent starts with the prefix on a
/// segment boundary (the usual case), the rest is kept byte for byte; otherwise (the prefix
/// was reached through percent-encoding or dot segments) the rest of the normalised path is
/// sent, percent-encoded again where a path needs it. `None` when neither applies (the
/// decision matched this API, so that does not happen).
fn strip_prefix(pq: &PathAndQuery, prefix: &str) -> Option<PathAndQuery> {
    let path = pq.path();
    let rest = match path.strip_prefix(prefix) {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => rest.to_owned(),
        _ => {
            let normalized = crate::path::normalize(path).ok()?;
            let rest = normalized.strip_prefix(prefix)?;
            if !(rest.is_empty() || rest.starts_with('/')) {
                return None;
            }
            percent_encoding::utf8_percent_encode(rest, PATH_UNSAFE).to_string()
        }
    };
    let rest = if rest.is_empty() { "/" } else { &rest };
    let text = match pq.query() {
        Some(q) => format!("{rest}?{q}"),
        None => rest.to_owned(),
    };
    PathAndQuery::try_from(text).ok()
}

/// What a decoded path must have percent-encoded again to be sent: controls, space, and the
/// characters that end or escape a path (`"`, `#`, `%`, `<`, `>`, `?`, `` ` ``, `{`, `}`, `\\`, `|`, `^`).
const PATH_UNSAFE: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'\\')
    .add(b'|')
    .add(b'^');

/// An upstream response body holding its request's slot until it ends or is dropped, and
/// its pooled connection, which goes back to the pool when the body has ended.
struct Slotted {
    inner: hyper::body::Incoming,
    slot: Option<OwnedSemaphorePermit>,
    back: Option<(Arc<Pool>, http1::SendRequest<Body>)>,
}

impl Slotted {
    /// The body has ended: the connection goes back, the slot is free.
    fn ended(&mut self) {
        if let Some((pool, sender)) = self.back.take() {
            pool.put(sender);
        }
        self.slot = None;
    }
}

impl Drop for Slotted {
    fn drop(&mut self) {
        // Dropped at its end (a body hyper's server never polled: empty, or `HEAD`'s): the
        // connection may serve another request. Dropped before, it closes with the sender.
        if self.inner.is_end_stream() {
            self.ended();
        }
    }
}

impl http_body::Body for Slotted {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let frame = Pin::new(&mut self.inner).poll_frame(cx);
        match &frame {
            // Free the slot (and give the connection back) now, not when the client's side
            // drops the body.
            Poll::Ready(None) => self.ended(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.ended(),
            Poll::Ready(Some(Err(_))) => {
                self.back = None;
                self.slot = None;
            }
            _ => {}
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// What is needed to send a replayable request again: its method, target and headers (its
/// body is empty).
struct Replay {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
}

impl Replay {
    fn of(parts: &http::request::Parts, body: &Body) -> Option<Self> {
        let replayable = matches!(
            parts.method,
            Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
        ) && body.is_end_stream();
        replayable.then(|| Self {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            version: parts.version,
            headers: parts.headers.clone(),
        })
    }

    fn request(self) -> Request<Body> {
        let mut r = Request::new(Body::empty());
        *r.method_mut() = self.method;
        *r.uri_mut() = self.uri;
        *r.headers_mut() = self.headers;
        *r.version_mut() = self.version;
        r
    }
}

impl SendError {
    /// A failure after the connection was made and before any response: on a pooled
    /// connection that the upstream closed as the request went out, a second try succeeds.
    /// Connect errors (nothing listening, connect timeout) would only fail again.
    fn may_retry(&self) -> bool {
        let after_connect = match self {
            Self::Client(e) => !e.is_connect(),
            Self::Connect(_) => false,
            Self::Hyper(_) => true,
        };
        after_connect && self.classify() == UpstreamError::Unreachable
    }

    fn classify(&self) -> UpstreamError {
        match self {
            Self::Client(e) => classify(e, e.is_connect()),
            Self::Connect(e) => classify(&**e, true),
            Self::Hyper(e) => classify(e, false),
        }
    }
}

/// What a failure is for the client, from its chain of causes (`connect`: it happened while
/// the connection was being made).
fn classify(e: &(dyn std::error::Error + 'static), connect: bool) -> UpstreamError {
    let chain = || std::iter::successors(Some(e), |s| s.source());
    if chain().any(<dyn std::error::Error>::is::<http_body_util::LengthLimitError>) {
        return UpstreamError::BodyTooLarge;
    }
    // The request body is the only `axum::Body` on the way to the upstream, so its error in
    // the chain means the client's side failed, not the upstream's.
    if chain().any(<dyn std::error::Error>::is::<axum::Error>) {
        return UpstreamError::ClientBody;
    }
    if connect {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn strip(pq: &str, prefix: &str) -> Option<String> {
        strip_prefix(&PathAndQuery::try_from(pq).expect("pq"), prefix).map(|p| p.to_string())
    }

    #[test]
    fn strip_prefix_keeps_the_rest_as_sent() {
        assert_eq!(
            strip("/ehrbase/rest/a%20b?q=1", "/ehrbase").as_deref(),
            Some("/rest/a%20b?q=1")
        );
        assert_eq!(strip("/ehrbase", "/ehrbase").as_deref(), Some("/"));
        assert_eq!(strip("/ehrbase?x", "/ehrbase").as_deref(), Some("/?x"));
        assert_eq!(strip("/ehrbase/", "/ehrbase").as_deref(), Some("/"));
        // Reached through encoding or dot segments: the normalised rest, encoded again.
        assert_eq!(
            strip("/ehr%62ase/a%20b", "/ehrbase").as_deref(),
            Some("/a%20b")
        );
        assert_eq!(strip("/x/../ehrbase/r", "/ehrbase").as_deref(), Some("/r"));
        assert_eq!(strip("/other", "/ehrbase"), None);
    }
}
