//! The main listener's service: the whole stack a request passes before its door, written out
//! in one function ([`Front::serve`]) instead of an axum `Router` under five tower layers.
//!
//! Order, as each step needs the one before it:
//! 1. sensitive headers: `Authorization`, `Proxy-Authorization` and `Cookie` are marked
//!    sensitive before anything could log them (and HTTP/2 does not index them in HPACK);
//! 2. request id: every request gets an `x-request-id` (kept if the client sent one) so the
//!    decision log, the upstream and the client can be correlated;
//! 3. load shedding: past `server.max_in_flight` requests at once, 503 with `Retry-After` at
//!    once instead of queueing without bound (after the request id, so shed requests are
//!    still traceable);
//! 4. with `debug` logging on (`RUST_LOG`, read at startup), a `request` span carrying the
//!    request id into every event of the request, and its start and end as events;
//! 5. the door of `server.mode`, reading the config in force per request (a reload swaps it):
//!    - proxy: [`proxy::handle`] (decide, then mutate and forward, or refuse); `GET` of the
//!      RFC 9728 document while `challenge.resource_metadata` is on;
//!    - forward-auth: [`forward_auth::handle`] (the same decision, answered instead of
//!      forwarded; it serves the RFC 9728 document itself when asked for directly);
//! 6. the request id on the response, refusals and shed requests included (unless the
//!    upstream's response carries its own).
//!
//! The same steps as the tower stack it replaces (`SetSensitiveRequestHeaders`,
//! `SetRequestId`, `TraceLayer`, `PropagateRequestId`, `LoadShed` over `ConcurrencyLimit`, the
//! router); written out, a cached request costs about 10,000 instructions less
//! (docs/performance.md).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use axum::body::Body;
use http::{HeaderMap, HeaderValue, Method, Request, Response, header};
use tracing::Instrument as _;

use crate::access;
use crate::auth::challenge::metadata_resource_path;
use crate::config::Mode;
use crate::forward_auth;
use crate::gateway::SharedGateway;
use crate::metrics::Metrics;
use crate::proxy;
use crate::server::Handler;

/// The main listener's handler (see the module's documentation); one per listener, cloned
/// into each connection as one pointer.
#[derive(Clone)]
pub struct Front {
    inner: Arc<Inner>,
}

struct Inner {
    mode: Mode,
    gateway: SharedGateway,
    metrics: Arc<Metrics>,
    max_in_flight: usize,
    in_flight: AtomicUsize,
    /// `debug` is enabled for request spans; fixed at startup, as `RUST_LOG` is read once.
    request_spans: bool,
}

impl Front {
    /// The stack of `mode` over `gateway`, shedding past `max_in_flight` requests at once.
    #[must_use]
    pub fn new(
        mode: Mode,
        gateway: SharedGateway,
        max_in_flight: usize,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                mode,
                gateway,
                metrics,
                max_in_flight,
                in_flight: AtomicUsize::new(0),
                request_spans: tracing::enabled!(tracing::Level::DEBUG),
            }),
        }
    }

    /// One request, through steps 1 to 6.
    pub async fn serve(&self, mut req: Request<Body>, peer: SocketAddr) -> Response<Body> {
        let inner = &*self.inner;
        mark_sensitive(req.headers_mut());
        let id = request_id(req.headers_mut());
        let response = match Slot::take(&inner.in_flight, inner.max_in_flight) {
            None => proxy::overloaded(&inner.metrics),
            Some(_slot) if inner.request_spans => {
                let span =
                    tracing::debug_span!("request", request_id = id.to_str().unwrap_or_default());
                async {
                    let start = Instant::now();
                    tracing::debug!(method = %req.method(), uri = %req.uri().path(), "started processing request");
                    let response = inner.door(req, peer).await;
                    tracing::debug!(
                        status = response.status().as_u16(),
                        latency = ?start.elapsed(),
                        "finished processing request"
                    );
                    response
                }
                .instrument(span)
                .await
            }
            Some(_slot) => inner.door(req, peer).await,
        };
        with_request_id(response, id)
    }
}

impl Inner {
    /// Step 5: the door of the mode, under the config in force now.
    async fn door(&self, req: Request<Body>, peer: SocketAddr) -> Response<Body> {
        let gateway = self.gateway.load_full();
        match self.mode {
            Mode::Proxy if is_resource_metadata(&req) => {
                proxy::resource_metadata(&gateway, peer, req).await
            }
            Mode::Proxy => proxy::handle(&gateway, peer, req).await,
            Mode::ForwardAuth => forward_auth::handle(&gateway, peer, req).await,
        }
    }
}

impl Handler for Front {
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn handle(&self, req: Request<Body>, peer: SocketAddr) -> Self::Future {
        let front = self.clone();
        Box::pin(async move { Ok(front.serve(req, peer).await) })
    }
}

/// One of `server.max_in_flight` places, held until the door has answered (as tower's
/// `ConcurrencyLimit` held its permit: the response head, not its body).
struct Slot<'a>(&'a AtomicUsize);

impl<'a> Slot<'a> {
    /// A place among `max` counted in `in_flight`, or `None` when all are taken.
    fn take(in_flight: &'a AtomicUsize, max: usize) -> Option<Self> {
        let before = in_flight.fetch_add(1, Ordering::AcqRel);
        let slot = Slot(in_flight);
        (before < max).then_some(slot)
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Step 1, in one pass over the headers.
fn mark_sensitive(headers: &mut HeaderMap) {
    for (name, value) in headers.iter_mut() {
        if name == header::AUTHORIZATION
            || name == header::PROXY_AUTHORIZATION
            || name == header::COOKIE
        {
            value.set_sensitive(true);
        }
    }
}

/// Step 2: the client's `x-request-id`, or a new one set on the request.
fn request_id(headers: &mut HeaderMap) -> HeaderValue {
    // Room, in one step, for what the way to the upstream adds: this id, the identity
    // headers, `X-Forwarded-*`, `traceparent` (the map would otherwise grow, rehashing every
    // name, two or three times).
    headers.reserve(REQUEST_HEADROOM);
    if let Some(id) = headers.get(access::REQUEST_ID) {
        return id.clone();
    }
    let id = proxy::request_id::new();
    headers.insert(access::REQUEST_ID, id.clone());
    id
}

/// Headers a request may gain on its way to the upstream (see [`request_id`]).
const REQUEST_HEADROOM: usize = 14;

/// Step 6.
fn with_request_id(mut response: Response<Body>, id: HeaderValue) -> Response<Body> {
    if !response.headers().contains_key(access::REQUEST_ID) {
        response.headers_mut().insert(access::REQUEST_ID, id);
    }
    response
}

/// `GET` (or `HEAD`) of `/.well-known/oauth-protected-resource`, or of its path-inserted form
/// for a resource with a path (RFC 9728 §3.1); anything else there is an ordinary request.
/// (The document's path with only a `/` after it is not one here, as under the axum router
/// this replaced.)
fn is_resource_metadata(req: &Request<Body>) -> bool {
    (req.method() == Method::GET || req.method() == Method::HEAD)
        && metadata_resource_path(req.uri().path()).is_some_and(|rest| rest != "/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_marked_sensitive_and_nothing_else() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        h.append(header::COOKIE, HeaderValue::from_static("a=1"));
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        h.insert(
            header::PROXY_AUTHORIZATION,
            HeaderValue::from_static("Basic y"),
        );
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        mark_sensitive(&mut h);
        for (name, value) in &h {
            assert_eq!(value.is_sensitive(), name != header::ACCEPT, "{name}");
        }
    }

    #[test]
    fn a_clients_request_id_is_kept_and_a_missing_one_made() {
        let mut h = HeaderMap::new();
        h.insert(access::REQUEST_ID, HeaderValue::from_static("abc"));
        assert_eq!(request_id(&mut h), "abc");
        let mut h = HeaderMap::new();
        let made = request_id(&mut h);
        assert_eq!(made.len(), 36, "a UUID: {made:?}");
        assert_eq!(h.get(access::REQUEST_ID), Some(&made));
        assert_ne!(request_id(&mut HeaderMap::new()), made);
    }

    #[test]
    fn the_response_keeps_its_own_request_id() {
        let own = Response::builder()
            .header(access::REQUEST_ID, "upstream")
            .body(Body::empty())
            .expect("response");
        let r = with_request_id(own, HeaderValue::from_static("mine"));
        assert_eq!(r.headers()[access::REQUEST_ID], "upstream");
        let r = with_request_id(
            Response::new(Body::empty()),
            HeaderValue::from_static("mine"),
        );
        assert_eq!(r.headers()[access::REQUEST_ID], "mine");
    }

    #[test]
    fn the_metadata_paths() {
        let req = |m: Method, p: &str| {
            Request::builder()
                .method(m)
                .uri(p)
                .body(Body::empty())
                .expect("request")
        };
        let doc = crate::auth::challenge::RESOURCE_METADATA_PATH;
        assert!(is_resource_metadata(&req(Method::GET, doc)));
        assert!(is_resource_metadata(&req(Method::HEAD, doc)));
        assert!(is_resource_metadata(&req(
            Method::GET,
            &format!("{doc}/ehrbase")
        )));
        assert!(!is_resource_metadata(&req(Method::GET, &format!("{doc}/"))));
        assert!(!is_resource_metadata(&req(Method::GET, &format!("{doc}x"))));
        assert!(!is_resource_metadata(&req(Method::POST, doc)));
        assert!(!is_resource_metadata(&req(Method::GET, "/ehrbase/rest")));
    }

    #[test]
    fn slots_are_given_back() {
        let in_flight = AtomicUsize::new(0);
        let a = Slot::take(&in_flight, 2).expect("first");
        let b = Slot::take(&in_flight, 2).expect("second");
        assert!(Slot::take(&in_flight, 2).is_none(), "over max_in_flight");
        drop(a);
        let c = Slot::take(&in_flight, 2).expect("a slot given back");
        drop((b, c));
        assert_eq!(in_flight.load(Ordering::Acquire), 0);
    }
}
