//! Envoy external authorization over gRPC (`envoy.service.auth.v3.Authorization/Check`) on
//! `server.ext_authz_listen`, in any mode. This is what Envoy's `ext_authz` HTTP filter with a
//! `grpc_service`, Envoy Gateway's `SecurityPolicy` `extAuth.grpc` and Istio's `CUSTOM`
//! authorization (`envoyExtAuthzGrpc`) call. Message types come from the `envoy-types` crate.
//!
//! Envoy sends the original request's method, path and headers as data, so no header needs to
//! be trusted here; the listener itself must be reachable only by Envoy (a NetworkPolicy).
//! The decision is [`Gateway::check`]'s; this door only renders it:
//! - pass: an OK response whose `headers` are the decision's `set` edits (the verified
//!   identity, the upstream credential of `upstream.authorization = "basic"`), overwriting,
//!   and whose `headers_to_remove` are its removals (every other client-sent identity header,
//!   and `Authorization` for `strip`);
//! - refuse: a denied response with the proxy mode's status (400, 401, 403, 405, 413 or 503,
//!   since Envoy passes any status on), its `WWW-Authenticate`, `Retry-After` and JSON body.

use std::net::IpAddr;

use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse, HeaderAppendAction, HttpStatus,
};
use envoy_types::ext_authz::v3::{
    CheckRequestExt as _, CheckResponseExt as _, DeniedHttpResponseBuilder, OkHttpResponseBuilder,
};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest;
use http::header::HeaderName;
use http::{HeaderMap, HeaderValue, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::access::{self, Via};
#[cfg(doc)]
use crate::gateway::Gateway;
use crate::gateway::{AccessRecord, Edits, Refusal, RequestView, SharedGateway, Verdict};

/// The `Authorization` gRPC service. It reads the gateway in force once per `Check`, so a
/// reload's routes, audiences and issuers apply here as on the main listener.
#[derive(Debug, Clone)]
pub struct ExtAuthz {
    gw: SharedGateway,
}

impl ExtAuthz {
    #[must_use]
    pub fn new(gw: SharedGateway) -> Self {
        Self { gw }
    }
}

/// Serves the `Authorization` service on `listener` (HTTP/2, plaintext) until `signal` turns
/// true.
pub fn serve(
    listener: TcpListener,
    service: ExtAuthz,
    mut signal: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tokio::spawn(async move {
        let result = tonic::transport::Server::builder()
            .add_service(AuthorizationServer::new(service))
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = signal.wait_for(|stop| *stop).await;
            })
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "ext_authz listener failed");
        }
    })
}

#[tonic::async_trait]
impl Authorization for ExtAuthz {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        let check = request.into_inner();
        Ok(tonic::Response::new(self.decide(&check).await))
    }
}

impl ExtAuthz {
    /// The answer to one `Check`.
    pub async fn decide(&self, check: &CheckRequest) -> CheckResponse {
        let gw = self.gw.load_full();
        let Some(http) = check
            .attributes
            .as_ref()
            .and_then(|a| a.request.as_ref())
            .and_then(|r| r.http.as_ref())
        else {
            // The network (L4) ext_authz filter: nothing to decide on.
            return CheckResponse::with_status(tonic::Status::permission_denied(
                "entragate decides on HTTP requests only",
            ));
        };
        let headers = header_map(http);
        let client_ip = check
            .get_client_address()
            .and_then(|a| a.parse::<IpAddr>().ok());
        let request_id = headers
            .get(access::REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .or_else(|| (!http.id.is_empty()).then_some(http.id.as_str()));
        // `path` is the request target as sent: path and query.
        let view = RequestView {
            via: Via::ExtAuthz,
            method: &http.method,
            target: &http.path,
            readable: !http.method.is_empty() && http.path.starts_with('/'),
            headers: &headers,
            peer: client_ip,
            scheme: &http.scheme,
            host: (!http.host.is_empty()).then_some(http.host.as_str()),
        };
        let mut record = AccessRecord::start(
            &gw.metrics,
            Via::ExtAuthz,
            (view.method, view.path()),
            client_ip,
            request_id,
        );
        let protocol = match http.protocol.as_str() {
            "HTTP/1.0" => Some("1.0"),
            "HTTP/1.1" => Some("1.1"),
            "HTTP/2" => Some("2"),
            "HTTP/3" => Some("3"),
            _ => None,
        };
        let decision = record.check(&gw, &view, protocol).await;
        let (response, status) = match decision.verdict {
            Verdict::Refuse(refusal) => (denied(&refusal), refusal.status),
            Verdict::Pass(pass) => (ok(&pass.edits), StatusCode::OK),
        };
        record.finish(status.as_u16(), None, None);
        response
    }
}

/// Pass: set the `set` edits upstream, remove the removals.
fn ok(edits: &Edits) -> CheckResponse {
    let mut ok = OkHttpResponseBuilder::new();
    for (name, value) in edits.set.iter() {
        // Identity values are visible ASCII (checked when set), the Basic header too.
        if let Ok(v) = value.to_str() {
            ok.add_header(
                name.as_str(),
                v,
                Some(HeaderAppendAction::OverwriteIfExistsOrAdd),
                false,
            );
        }
    }
    for name in edits.removals() {
        ok.remove_header(name.as_str());
    }
    let mut response = CheckResponse::with_status(tonic::Status::ok("allowed"));
    response.set_http_response(ok);
    response
}

/// Denied: the proxy mode's refusal, for Envoy to send to the client as is.
fn denied(refusal: &Refusal) -> CheckResponse {
    let mut d = DeniedHttpResponseBuilder::new();
    for (name, value) in refusal.headers() {
        if let Ok(v) = value.to_str() {
            d.add_header(
                name.as_str(),
                v,
                Some(HeaderAppendAction::OverwriteIfExistsOrAdd),
                false,
            );
        }
    }
    d.set_body(refusal.body);
    let mut denied = d.build();
    denied.status = Some(HttpStatus {
        code: i32::from(refusal.status.as_u16()),
    });
    let status = match refusal.status {
        StatusCode::UNAUTHORIZED => tonic::Status::unauthenticated("unauthenticated"),
        StatusCode::BAD_REQUEST => tonic::Status::invalid_argument("invalid request"),
        StatusCode::SERVICE_UNAVAILABLE => tonic::Status::unavailable("keys unavailable"),
        StatusCode::PAYLOAD_TOO_LARGE => tonic::Status::invalid_argument("payload too large"),
        StatusCode::METHOD_NOT_ALLOWED => tonic::Status::invalid_argument("method not allowed"),
        StatusCode::TOO_MANY_REQUESTS => tonic::Status::resource_exhausted("rate limited"),
        _ => tonic::Status::permission_denied("forbidden"),
    };
    let mut response = CheckResponse::with_status(status);
    response.set_http_response(denied);
    response
}

/// The original request's headers. Envoy sends either a map (repeated headers merged with
/// `,`) or, with `encode_raw_headers`, a list that keeps repeats apart (so two
/// `Authorization` headers are seen as two). Pseudo-headers and unreadable entries are left out.
fn header_map(http: &HttpRequest) -> HeaderMap {
    let mut out = HeaderMap::new();
    let mut add = |key: &str, value: &[u8]| {
        if key.starts_with(':') {
            return;
        }
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_bytes(value),
        ) {
            out.append(name, value);
        }
    };
    match &http.header_map {
        Some(raw) if !raw.headers.is_empty() => {
            for h in &raw.headers {
                let value = if h.raw_value.is_empty() {
                    h.value.as_bytes()
                } else {
                    &h.raw_value
                };
                add(&h.key, value);
            }
        }
        _ => {
            for (k, v) in &http.headers {
                add(k, v.as_bytes());
            }
        }
    }
    out
}
