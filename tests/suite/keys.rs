//! Signing keys through real sockets (SPEC §3 `jwks_refresh`/`jwks_min_refetch`, §5), by theme:
//!
//! - `rotation`: rotation, unknown-`kid` floods and the refetch cooldown;
//! - `outages`: identity-provider outages after and at startup, and the key-fetch metrics;
//! - `documents`: key fetches that hang, broken key documents, and v2 keys that name their
//!   issuer;
//! - `file`: keys from `entra.jwks_file` instead of discovery, reloaded when it changes.
//!
//! This file holds what they share: tokens, bounded requests, counters, and a programmable
//! identity provider in front of the dev issuer.

mod documents;
mod file;
mod outages;
mod rotation;

use crate::common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use common::metrics::series;
use common::tokens::{nonce, unique_claims};
use common::{Extra, Harness, TENANT};
use entragate::dev::{DevIssuer, SigningKey, sign_jwt};
use entragate::keys::{KeySource, TokenVersion};
use serde_json::{Map, Value, json};

/// Longest any single request may take in these tests before it counts as a hang.
const REQUEST_BOUND: Duration = Duration::from_secs(10);

fn entra(lines: &str) -> Extra {
    Extra {
        entra: lines.to_owned(),
        ..Extra::default()
    }
}

/// The gateway's key source named `name` (`entra-v1` or `entra-v2`).
fn source(h: &Harness, name: &str) -> Arc<KeySource> {
    h.gw.keys()
        .issuers
        .iter()
        .find(|i| i.source.name == name)
        .map(|i| Arc::clone(&i.source))
        .unwrap_or_else(|| panic!("no key source {name}"))
}

/// Fetches (successful or not) the gateway has made of one source so far.
fn fetches(h: &Harness, name: &str) -> u64 {
    source(h, name).metrics.fetches()
}

/// A token with `claims`, signed by `key` but naming `kid` in its header (as Entra does: RS256,
/// and `x5t` too for v1).
fn mint_with(key: &SigningKey, kid: &str, claims: &Map<String, Value>) -> String {
    let header = if claims.get("ver").and_then(Value::as_str) == Some("1.0") {
        json!({"typ": "JWT", "alg": "RS256", "x5t": kid, "kid": kid})
    } else {
        json!({"typ": "JWT", "alg": "RS256", "kid": kid})
    };
    sign_jwt(key, &header, &Value::Object(claims.clone()))
}

/// A new valid token of `version`, signed with the issuer's current key.
fn fresh(h: &Harness, version: TokenVersion) -> String {
    h.issuer.mint(&unique_claims(h, version))
}

/// A new valid token of `version`, signed with `key` (e.g. one rotated out of signing).
fn signed_by(h: &Harness, key: &SigningKey, version: TokenVersion) -> String {
    mint_with(key, &key.kid, &unique_claims(h, version))
}

/// `n` otherwise valid tokens of `version`, each naming a different never-published `kid`.
fn unknown_kid_tokens(h: &Harness, version: TokenVersion, n: usize) -> Vec<String> {
    let stranger = SigningKey::generate();
    let claims = h.claims(version);
    (0..n)
        .map(|i| {
            let kid = format!("never-published-{i}-{:016x}", nonce());
            mint_with(&stranger, &kid, &claims)
        })
        .collect()
}

/// GET `/data` with `token`, bounded by [`REQUEST_BOUND`].
async fn call(h: &Harness, token: &str) -> reqwest::Response {
    h.get_within(REQUEST_BOUND, "/data", token).await
}

async fn status(h: &Harness, token: &str) -> u16 {
    call(h, token).await.status().as_u16()
}

async fn admin_status(h: &Harness, path: &str) -> u16 {
    h.admin_get_within(REQUEST_BOUND, path)
        .await
        .status()
        .as_u16()
}

/// The admin `/metrics` text, bounded by [`REQUEST_BOUND`].
async fn metrics_text(h: &Harness) -> String {
    h.metrics_text_within(REQUEST_BOUND).await
}

fn key_fetches(text: &str, source: &str, result: &str) -> u64 {
    series(
        text,
        &format!("entragate_key_fetches_total{{source=\"{source}\",result=\"{result}\"}}"),
    )
}

fn denied(text: &str, reason: &str) -> u64 {
    series(
        text,
        &format!("entragate_requests_total{{outcome=\"denied\",reason=\"{reason}\"}}"),
    )
}

/// A client for floods: its connections are kept for the next flood.
fn flood_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}

/// Sends every token at once (one connection each, reusing `client`'s idle ones) and returns
/// the statuses.
async fn flood(client: &reqwest::Client, h: &Harness, tokens: &[String]) -> Vec<u16> {
    let url = h.url("/data");
    let requests = tokens.iter().map(|t| {
        let req = client.get(&url).bearer_auth(t).send();
        async move { req.await.map(|r| r.status().as_u16()) }
    });
    futures_util::future::join_all(requests)
        .await
        .into_iter()
        .map(|r| r.unwrap_or_else(|e| panic!("flood request failed: {e}")))
        .collect()
}

fn assert_all_401(statuses: &[u16], what: &str) {
    let other: Vec<_> = statuses.iter().filter(|s| **s != 401).collect();
    assert!(
        other.is_empty(),
        "{what}: {} of {} requests were not refused with 401: {:?}",
        other.len(),
        statuses.len(),
        &other[..other.len().min(10)]
    );
}

// ---------------------------------------------------------------------------------------------
// A programmable identity provider in front of the dev issuer: passes its documents through,
// pointing `jwks_uri` back at itself, and can rewrite the v2 keys' `issuer` or hang.

#[derive(Debug, Clone)]
enum IdpMode {
    Pass,
    /// Every v2 key published with this `issuer`.
    V2KeyIssuer(String),
    /// Accepts requests and never answers.
    Hang,
    /// Every JWKS (v1 and v2) answered 200 with this body instead.
    JwksBody(&'static str),
    /// Passes everything through, each answer this much later.
    Slow(Duration),
}

struct IdpState {
    upstream: String,
    own: String,
    mode: Mutex<IdpMode>,
    client: reqwest::Client,
    hung: std::sync::atomic::AtomicU64,
}

struct IdpProxy {
    authority: String,
    state: Arc<IdpState>,
    /// Serves until the owner is dropped.
    _task: common::Task,
}

impl IdpProxy {
    async fn start(upstream: &str) -> Self {
        let listener = tokio::net::TcpListener::bind(common::loopback())
            .await
            .expect("bind");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        let authority = format!("http://{addr}");
        let state = Arc::new(IdpState {
            upstream: upstream.to_owned(),
            own: authority.clone(),
            mode: Mutex::new(IdpMode::Pass),
            client: common::client(),
            hung: std::sync::atomic::AtomicU64::new(0),
        });
        let router = axum::Router::new()
            .fallback(idp_proxy)
            .with_state(Arc::clone(&state));
        let task = common::Task(tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        }));
        Self {
            authority,
            state,
            _task: task,
        }
    }

    fn set_mode(&self, mode: IdpMode) {
        *self.state.mode.lock().expect("mode") = mode;
    }

    fn hung(&self) -> u64 {
        self.state.hung.load(std::sync::atomic::Ordering::SeqCst)
    }
}

async fn idp_proxy(State(s): State<Arc<IdpState>>, uri: Uri) -> Response {
    let mode = s.mode.lock().expect("mode").clone();
    if matches!(mode, IdpMode::Hang) {
        s.hung.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        std::future::pending::<()>().await;
    }
    if let IdpMode::Slow(delay) = mode {
        tokio::time::sleep(delay).await;
    }
    if let IdpMode::JwksBody(body) = mode
        && uri.path().ends_with("/keys")
    {
        return ([("content-type", "application/json")], body).into_response();
    }
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let Ok(resp) = s.client.get(format!("{}{path}", s.upstream)).send().await else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    let status = resp.status().as_u16();
    let Ok(mut doc) = resp.json::<Value>().await else {
        return StatusCode::from_u16(status)
            .unwrap_or(StatusCode::BAD_GATEWAY)
            .into_response();
    };
    if let Some(Value::String(jwks_uri)) = doc.get_mut("jwks_uri") {
        *jwks_uri = jwks_uri.replacen(&s.upstream, &s.own, 1);
    }
    if let (IdpMode::V2KeyIssuer(iss), true) = (&mode, uri.path().ends_with("/v2.0/keys")) {
        for key in doc["keys"].as_array_mut().into_iter().flatten() {
            key["issuer"] = json!(iss);
        }
    }
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
        axum::Json(doc),
    )
        .into_response()
}

/// Issuer, IdP proxy, echo and a gateway whose `authority` is the proxy; ready.
async fn harness_behind_proxy(entra_lines: &str) -> (Harness, IdpProxy) {
    let issuer = DevIssuer::start(common::loopback(), TENANT)
        .await
        .expect("issuer");
    let proxy = IdpProxy::start(issuer.authority()).await;
    let h = Harness::start_at(issuer, &proxy.authority, entra(entra_lines)).await;
    (h, proxy)
}
