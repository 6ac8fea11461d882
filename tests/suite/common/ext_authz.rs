//! A tonic client for the `ext_authz` listener, sending `CheckRequest`s the way Envoy does.

use std::collections::HashMap;
use std::net::SocketAddr;

use envoy_types::ext_authz::v3::pb::{CheckRequest, CheckResponse, HttpResponse};
use envoy_types::pb::envoy::config::core::v3::{
    Address, HeaderMap as PbHeaderMap, HeaderValue as PbHeaderValue, SocketAddress, address,
};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, attribute_context};

/// A `Check` for `method path` with `headers`, from client 203.0.113.7 to
/// `https://api.contoso.example`.
pub fn request(method: &str, path: &str, headers: &[(&str, &str)]) -> CheckRequest {
    let http = attribute_context::HttpRequest {
        id: "envoy-request-id".into(),
        method: method.into(),
        path: path.into(),
        host: "api.contoso.example".into(),
        scheme: "https".into(),
        protocol: "HTTP/1.1".into(),
        headers: headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<HashMap<_, _>>(),
        ..Default::default()
    };
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(attribute_context::Peer {
                address: Some(Address {
                    address: Some(address::Address::SocketAddress(SocketAddress {
                        address: "203.0.113.7".into(),
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            }),
            request: Some(attribute_context::Request {
                http: Some(http),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

/// `req` with its headers as a list, as Envoy's `encode_raw_headers` sends them: repeated
/// headers stay apart (the map form joins them with `,`).
pub fn with_raw_headers<K: AsRef<str>, V: AsRef<str>>(
    mut req: CheckRequest,
    headers: &[(K, V)],
) -> CheckRequest {
    if let Some(http) = req
        .attributes
        .as_mut()
        .and_then(|a| a.request.as_mut())
        .and_then(|r| r.http.as_mut())
    {
        http.header_map = Some(PbHeaderMap {
            headers: headers
                .iter()
                .map(|(k, v)| PbHeaderValue {
                    key: k.as_ref().to_owned(),
                    raw_value: v.as_ref().as_bytes().to_vec(),
                    ..Default::default()
                })
                .collect(),
        });
    }
    req
}

/// Sends `req` to the `ext_authz` listener at `addr`.
pub async fn check(addr: SocketAddr, req: CheckRequest) -> CheckResponse {
    let mut client = AuthorizationClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    client.check(req).await.expect("Check").into_inner()
}

/// `(status, headers, body)` of a denied response.
pub fn denied(r: &CheckResponse) -> (i32, Vec<(String, String)>, String) {
    match &r.http_response {
        Some(HttpResponse::DeniedResponse(d)) => (
            d.status.as_ref().map_or(0, |s| s.code),
            d.headers
                .iter()
                .filter_map(|h| h.header.as_ref())
                .map(|h| (h.key.clone(), h.value.clone()))
                .collect(),
            d.body.clone(),
        ),
        other => panic!("not denied: {other:?}"),
    }
}

/// `(headers set upstream, headers removed)` of an OK response.
pub fn allowed(r: &CheckResponse) -> (HashMap<String, String>, Vec<String>) {
    assert_eq!(r.status.as_ref().map(|s| s.code), Some(0), "{r:?}");
    match &r.http_response {
        Some(HttpResponse::OkResponse(ok)) => (
            ok.headers
                .iter()
                .filter_map(|h| h.header.as_ref())
                .map(|h| (h.key.clone(), h.value.clone()))
                .collect(),
            ok.headers_to_remove.clone(),
        ),
        other => panic!("not OK: {other:?}"),
    }
}

/// The HTTP status Envoy would answer with: 200 when allowed, else the denied status.
pub fn status(r: &CheckResponse) -> i32 {
    match &r.http_response {
        Some(HttpResponse::OkResponse(_)) => 200,
        _ => denied(r).0,
    }
}
