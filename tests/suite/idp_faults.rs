//! Identity-provider faults (issue 6 item 3) that `keys.rs` does not already cover: metadata or
//! JWKS documents that are huge (with a Content-Length and chunked without one, at and past
//! `MAX_DOCUMENT_BYTES`), not JSON, without `keys` or `jwks_uri`, holding only keys of an
//! unsupported `kty`; a JWKS URL on a closed port, on a name that does not resolve, or behind
//! TLS that is not there; 5xx, redirect loops and bodies cut off mid-stream.
//!
//! A small misbehaving IdP runs in the test: it serves Entra-shaped v1 and v2 metadata and the
//! keys of the embedded dev issuer (which mints the tokens), and switches to one fault at a
//! time. The gateway first loads good keys; then an unknown `kid` (with
//! `jwks_min_refetch = "0s"`) or the background refresh runs into the fault. Each time: the
//! gateway keeps its last good keys (valid tokens still pass), counts exactly that failure in
//! `entragate_key_fetches_total{source,result}`, stays ready, and answers promptly.

use crate::common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use common::metrics::series;
use common::tokens::{nonce, unique_claims};
use common::{Extra, Harness, TENANT, eventually};
use entragate::dev::{DevIssuer, SigningKey, sign_jwt};
use entragate::keys::{MAX_DOCUMENT_BYTES, TokenVersion};
use futures_util::StreamExt as _;
use serde_json::{Value, json};

/// Longest any single request may take before it counts as a hang (metadata_timeout is 5 s).
const REQUEST_BOUND: Duration = Duration::from_secs(15);
/// Every `result` label of `entragate_key_fetches_total`.
const RESULTS: [&str; 7] = [
    "ok",
    "http_error",
    "bad_status",
    "too_large",
    "bad_json",
    "no_keys",
    "issuer_mismatch",
];
const SOURCES: [&str; 2] = ["entra-v1", "entra-v2"];

// ---------------------------------------------------------------------------------------------
// The misbehaving identity provider
// ---------------------------------------------------------------------------------------------

/// What the IdP does wrong; one at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Fault {
    None,
    /// Metadata of 2 × MAX_DOCUMENT_BYTES, Content-Length declared.
    MetadataHugeLength,
    /// Metadata streamed chunked without end.
    MetadataEndless,
    MetadataNotJson,
    /// Metadata without `jwks_uri`.
    MetadataWithoutJwksUri,
    Metadata500,
    /// Metadata redirecting to itself.
    MetadataRedirectLoop,
    /// JWKS of 2 × MAX_DOCUMENT_BYTES, Content-Length declared.
    JwksHugeLength,
    /// JWKS streamed chunked without end.
    JwksEndless,
    /// A valid JWKS padded to exactly MAX_DOCUMENT_BYTES, Content-Length declared.
    JwksAtLimitLength,
    /// The same, chunked.
    JwksAtLimitChunked,
    /// A valid JWKS padded to MAX_DOCUMENT_BYTES + 1, Content-Length declared.
    JwksOverLimitLength,
    /// The same, chunked.
    JwksOverLimitChunked,
    JwksNotJson,
    /// `{"Keys": [...]}`: no `keys` member.
    JwksWithoutKeys,
    /// `{"keys": null}`.
    JwksKeysNull,
    /// Only EC, oct and OKP keys, all under the published kids.
    JwksUnsupportedKty,
    Jwks503,
    /// `jwks_uri` on a port nothing listens on.
    JwksClosedPort,
    /// `jwks_uri` on a name that cannot resolve (RFC 6761 `.invalid`).
    JwksDnsFailure,
    /// `jwks_uri` with https:// on this plain-HTTP IdP.
    JwksTlsToPlainPort,
    /// JWKS body cut off mid-stream (the connection is aborted).
    JwksTruncated,
}

const FAULTS: [Fault; 22] = [
    Fault::None,
    Fault::MetadataHugeLength,
    Fault::MetadataEndless,
    Fault::MetadataNotJson,
    Fault::MetadataWithoutJwksUri,
    Fault::Metadata500,
    Fault::MetadataRedirectLoop,
    Fault::JwksHugeLength,
    Fault::JwksEndless,
    Fault::JwksAtLimitLength,
    Fault::JwksAtLimitChunked,
    Fault::JwksOverLimitLength,
    Fault::JwksOverLimitChunked,
    Fault::JwksNotJson,
    Fault::JwksWithoutKeys,
    Fault::JwksKeysNull,
    Fault::JwksUnsupportedKty,
    Fault::Jwks503,
    Fault::JwksClosedPort,
    Fault::JwksDnsFailure,
    Fault::JwksTlsToPlainPort,
    Fault::JwksTruncated,
];

impl Fault {
    fn from_u8(v: u8) -> Self {
        FAULTS
            .into_iter()
            .find(|f| *f as u8 == v)
            .unwrap_or(Fault::None)
    }
}

struct IdpState {
    fault: AtomicU8,
    /// `http://127.0.0.1:port`
    own: String,
    v1_issuer: String,
    v2_issuer: String,
    jwks_v1: Mutex<Value>,
    jwks_v2: Mutex<Value>,
    closed_port: u16,
    /// Bytes produced by endless bodies so far.
    streamed: Arc<AtomicU64>,
    /// Every JWKS request: its path and when it arrived.
    jwks_requests: Mutex<Vec<(String, Instant)>>,
}

struct Idp {
    authority: String,
    state: Arc<IdpState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Idp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Idp {
    /// Serves `issuer`'s keys under its issuer values, from its own address.
    async fn start(issuer: &DevIssuer) -> Self {
        let listener = tokio::net::TcpListener::bind(common::loopback())
            .await
            .expect("bind");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        let authority = format!("http://{addr}");
        let state = Arc::new(IdpState {
            fault: AtomicU8::new(Fault::None as u8),
            own: authority.clone(),
            v1_issuer: issuer.issuer(TokenVersion::V1, TENANT),
            v2_issuer: issuer.issuer(TokenVersion::V2, TENANT),
            jwks_v1: Mutex::new(Value::Null),
            jwks_v2: Mutex::new(Value::Null),
            closed_port: common::free_port(),
            streamed: Arc::new(AtomicU64::new(0)),
            jwks_requests: Mutex::new(Vec::new()),
        });
        let router = axum::Router::new()
            .fallback(idp)
            .with_state(Arc::clone(&state));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        let idp = Self {
            authority,
            state,
            task,
        };
        idp.load_keys_from(issuer).await;
        idp
    }

    /// Copies the keys `issuer` publishes now (after a rotation, say).
    async fn load_keys_from(&self, issuer: &DevIssuer) {
        let client = common::client();
        for (path, slot) in [
            ("discovery/keys", &self.state.jwks_v1),
            ("discovery/v2.0/keys", &self.state.jwks_v2),
        ] {
            let doc: Value = client
                .get(format!("{}/{TENANT}/{path}", issuer.authority()))
                .send()
                .await
                .expect("dev issuer JWKS")
                .json()
                .await
                .expect("JWKS JSON");
            assert!(!doc["keys"].as_array().expect("keys").is_empty());
            *slot.lock().expect("jwks") = doc;
        }
    }

    fn set(&self, fault: Fault) {
        self.state.fault.store(fault as u8, SeqCst);
    }

    fn streamed(&self) -> u64 {
        self.state.streamed.load(SeqCst)
    }

    /// When each JWKS request for `path_suffix` arrived.
    fn jwks_arrivals(&self, path_suffix: &str) -> Vec<Instant> {
        self.state
            .jwks_requests
            .lock()
            .expect("requests")
            .iter()
            .filter(|(p, _)| p.ends_with(path_suffix))
            .map(|(_, at)| *at)
            .collect()
    }
}

async fn idp(State(s): State<Arc<IdpState>>, uri: Uri) -> Response {
    let fault = Fault::from_u8(s.fault.load(SeqCst));
    let path = uri.path().to_owned();
    let tenant = path
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or("")
        .to_owned();
    if path == "/redirect" {
        return (StatusCode::FOUND, [(header::LOCATION, "/redirect")]).into_response();
    }
    if path.ends_with("/v2.0/.well-known/openid-configuration") {
        return metadata(&s, fault, TokenVersion::V2, &tenant);
    }
    if path.ends_with("/.well-known/openid-configuration") {
        return metadata(&s, fault, TokenVersion::V1, &tenant);
    }
    if path.ends_with("/keys") {
        s.jwks_requests
            .lock()
            .expect("requests")
            .push((path.clone(), Instant::now()));
        let version = if path.ends_with("/discovery/v2.0/keys") {
            TokenVersion::V2
        } else {
            TokenVersion::V1
        };
        return jwks(&s, fault, version);
    }
    StatusCode::NOT_FOUND.into_response()
}

fn metadata(s: &IdpState, fault: Fault, version: TokenVersion, tenant: &str) -> Response {
    let (issuer, keys_path) = match version {
        TokenVersion::V1 => (&s.v1_issuer, "discovery/keys"),
        TokenVersion::V2 => (&s.v2_issuer, "discovery/v2.0/keys"),
    };
    let jwks_uri = match fault {
        Fault::JwksClosedPort => format!("http://127.0.0.1:{}/{tenant}/{keys_path}", s.closed_port),
        Fault::JwksDnsFailure => format!("http://nonexistent.invalid/{tenant}/{keys_path}"),
        Fault::JwksTlsToPlainPort => format!(
            "https://{}/{tenant}/{keys_path}",
            s.own.trim_start_matches("http://")
        ),
        _ => format!("{}/{tenant}/{keys_path}", s.own),
    };
    let mut doc = json!({
        "issuer": issuer,
        "jwks_uri": jwks_uri,
        "authorization_endpoint": format!("{}/{tenant}/oauth2/authorize", s.own),
        "token_endpoint": format!("{}/{tenant}/oauth2/token", s.own),
        "response_types_supported": ["code", "id_token", "code id_token", "token id_token", "token"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
    });
    match fault {
        Fault::MetadataHugeLength => json_of_length(&doc, 2 * MAX_DOCUMENT_BYTES),
        Fault::MetadataEndless => endless(&doc, &s.streamed),
        Fault::MetadataNotJson => not_json(),
        Fault::MetadataWithoutJwksUri => {
            if let Some(o) = doc.as_object_mut() {
                o.remove("jwks_uri");
            }
            axum::Json(doc).into_response()
        }
        Fault::Metadata500 => {
            (StatusCode::INTERNAL_SERVER_ERROR, "internal server error").into_response()
        }
        Fault::MetadataRedirectLoop => {
            (StatusCode::FOUND, [(header::LOCATION, "/redirect")]).into_response()
        }
        _ => axum::Json(doc).into_response(),
    }
}

fn jwks(s: &IdpState, fault: Fault, version: TokenVersion) -> Response {
    let doc = match version {
        TokenVersion::V1 => s.jwks_v1.lock().expect("jwks").clone(),
        TokenVersion::V2 => s.jwks_v2.lock().expect("jwks").clone(),
    };
    match fault {
        Fault::JwksHugeLength => json_of_length(&doc, 2 * MAX_DOCUMENT_BYTES),
        Fault::JwksEndless => endless(&doc, &s.streamed),
        Fault::JwksAtLimitLength => json_of_length(&doc, MAX_DOCUMENT_BYTES),
        Fault::JwksAtLimitChunked => chunked(padded(&doc, MAX_DOCUMENT_BYTES)),
        Fault::JwksOverLimitLength => json_of_length(&doc, MAX_DOCUMENT_BYTES + 1),
        Fault::JwksOverLimitChunked => chunked(padded(&doc, MAX_DOCUMENT_BYTES + 1)),
        Fault::JwksNotJson => not_json(),
        Fault::JwksWithoutKeys => axum::Json(json!({ "Keys": doc["keys"] })).into_response(),
        Fault::JwksKeysNull => axum::Json(json!({ "keys": null })).into_response(),
        Fault::JwksUnsupportedKty => {
            // Under the kids of the published RSA keys, so a lax parser would replace them.
            let keys: Vec<Value> = doc["keys"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|k| {
                    let kid = k["kid"].clone();
                    let n = k["n"].clone();
                    [
                        json!({"kty": "EC", "use": "sig", "kid": kid, "crv": "P-256",
                               "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
                               "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}),
                        json!({"kty": "oct", "use": "sig", "kid": kid, "alg": "HS256", "k": n}),
                        json!({"kty": "OKP", "use": "sig", "kid": kid, "crv": "Ed25519",
                               "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}),
                    ]
                })
                .collect();
            assert!(!keys.is_empty());
            axum::Json(json!({ "keys": keys })).into_response()
        }
        Fault::Jwks503 => (StatusCode::SERVICE_UNAVAILABLE, "down").into_response(),
        Fault::JwksTruncated => {
            let text = doc.to_string();
            let half = Bytes::from(text.as_bytes()[..text.len() / 2].to_vec());
            let stream =
                futures_util::stream::iter([Ok(half), Err(std::io::Error::other("cut off"))]);
            json_response(Body::from_stream(stream))
        }
        _ => axum::Json(doc).into_response(),
    }
}

/// `doc` as JSON text followed by blanks up to exactly `len` bytes: still valid JSON.
fn padded(doc: &Value, len: usize) -> Vec<u8> {
    let mut text = doc.to_string().into_bytes();
    assert!(text.len() < len);
    text.resize(len, b' ');
    text
}

/// `padded` with a Content-Length.
fn json_of_length(doc: &Value, len: usize) -> Response {
    let body = padded(doc, len);
    let r = json_response(Body::from(body));
    assert_eq!(
        http_body::Body::size_hint(r.body()).exact(),
        Some(len as u64)
    );
    r
}

/// `bytes` in 64 KiB chunks, without a Content-Length.
fn chunked(bytes: Vec<u8>) -> Response {
    let bytes = Bytes::from(bytes);
    let chunks: Vec<Result<Bytes, std::io::Error>> = (0..bytes.len())
        .step_by(64 * 1024)
        .map(|i| Ok(bytes.slice(i..(i + 64 * 1024).min(bytes.len()))))
        .collect();
    let r = json_response(Body::from_stream(futures_util::stream::iter(chunks)));
    assert_eq!(http_body::Body::size_hint(r.body()).exact(), None);
    r
}

/// The start of `doc` (valid so far), then blanks for ever, chunked; counts what it produced.
fn endless(doc: &Value, counter: &Arc<AtomicU64>) -> Response {
    let text = doc.to_string();
    let start = Bytes::from(text[..text.len() - 1].to_owned());
    let blanks = Bytes::from(vec![b' '; 64 * 1024]);
    let counter = Arc::clone(counter);
    let stream = futures_util::stream::iter([start])
        .chain(futures_util::stream::repeat(blanks))
        .map(move |chunk| {
            counter.fetch_add(chunk.len() as u64, SeqCst);
            Ok::<_, std::io::Error>(chunk)
        });
    json_response(Body::from_stream(stream))
}

fn json_response(body: Body) -> Response {
    let mut r = Response::new(body);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

fn not_json() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html")],
        "<html><body>Scheduled maintenance</body></html>",
    )
        .into_response()
}

// ---------------------------------------------------------------------------------------------
// The gateway in front of it
// ---------------------------------------------------------------------------------------------

/// Dev issuer (mints tokens), the misbehaving IdP serving its keys, echo upstream, gateway
/// whose `authority` is the IdP; ready.
async fn start(entra_lines: &str) -> (Harness, Idp) {
    let issuer = DevIssuer::start(common::loopback(), TENANT)
        .await
        .expect("issuer");
    let idp = Idp::start(&issuer).await;
    let extra = Extra {
        entra: entra_lines.to_owned(),
        ..Extra::default()
    };
    let h = Harness::start_at(issuer, &idp.authority, extra).await;
    (h, idp)
}

fn signed_by(h: &Harness, key: &SigningKey, kid: &str, version: TokenVersion) -> String {
    sign_jwt(
        key,
        &json!({"typ": "JWT", "alg": "RS256", "kid": kid}),
        &Value::Object(unique_claims(h, version)),
    )
}

/// A valid token of `version` signed with `key`, under its own kid.
fn valid(h: &Harness, key: &SigningKey, version: TokenVersion) -> String {
    signed_by(h, key, &key.kid, version)
}

/// An otherwise valid token of `version` naming a never-published kid: makes its source
/// refetch.
fn unknown_kid(h: &Harness, version: TokenVersion) -> String {
    let stranger = SigningKey::generate();
    signed_by(
        h,
        &stranger,
        &format!("never-published-{:016x}", nonce()),
        version,
    )
}

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

/// `entragate_key_fetches_total` for every source and result.
async fn key_fetches(h: &Harness) -> BTreeMap<(&'static str, &'static str), u64> {
    let text = h.metrics_text_within(REQUEST_BOUND).await;
    let mut out = BTreeMap::new();
    for source in SOURCES {
        for result in RESULTS {
            let value = series(
                &text,
                &format!("entragate_key_fetches_total{{source=\"{source}\",result=\"{result}\"}}"),
            );
            out.insert((source, result), value);
        }
    }
    out
}

/// The counters that changed between two readings, and by how much.
fn changed(
    before: &BTreeMap<(&'static str, &'static str), u64>,
    after: &BTreeMap<(&'static str, &'static str), u64>,
) -> BTreeMap<(&'static str, &'static str), u64> {
    after
        .iter()
        .filter_map(|(k, v)| {
            let was = before.get(k).copied().unwrap_or(0);
            (*v != was).then(|| (*k, v.checked_sub(was).expect("counters only grow")))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// One fault, met by unknown-kid refetches of each source
// ---------------------------------------------------------------------------------------------

/// Loads good keys, switches the IdP to `fault`, makes each source refetch once (an unknown
/// kid), and checks: 401 `invalid_token` promptly, exactly one fetch counted as `result` for
/// that source and nothing else, the last good keys still in service, ready and healthy; then
/// the IdP recovers and a rotated key is learnt.
async fn last_good_keys_survive(fault: Fault, result: &'static str) {
    let (h, idp) = start("jwks_min_refetch = \"0s\"\nmetadata_timeout = \"5s\"").await;
    let old = h.issuer.signing_key();
    for v in [TokenVersion::V1, TokenVersion::V2] {
        assert_eq!(
            status(&h, &valid(&h, &old, v)).await,
            200,
            "good keys loaded"
        );
    }

    idp.set(fault);
    for (version, source) in [
        (TokenVersion::V1, "entra-v1"),
        (TokenVersion::V2, "entra-v2"),
    ] {
        let before = key_fetches(&h).await;
        let started = Instant::now();
        let r = call(&h, &unknown_kid(&h, version)).await;
        assert_eq!(r.status(), 401, "{fault:?} {source}: unknown kid");
        assert_eq!(
            r.headers()["www-authenticate"],
            format!(
                "Bearer authorization_uri={}/{TENANT}/oauth2/authorize, error=\"invalid_token\"",
                idp.authority
            )
            .as_str(),
            "{fault:?} {source}: challenge"
        );
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{fault:?} {source}: answered after {:?}",
            started.elapsed()
        );
        let after = key_fetches(&h).await;
        assert_eq!(
            changed(&before, &after),
            BTreeMap::from([((source, result), 1)]),
            "{fault:?} {source}: one fetch, counted as {result}"
        );
        for v in [TokenVersion::V1, TokenVersion::V2] {
            assert_eq!(
                status(&h, &valid(&h, &old, v)).await,
                200,
                "{fault:?} after the {source} fetch: last good {} keys",
                v.claim()
            );
        }
        assert_eq!(admin_status(&h, "/readyz").await, 200, "{fault:?}: ready");
        assert_eq!(
            admin_status(&h, "/healthz").await,
            200,
            "{fault:?}: healthy"
        );
    }

    if matches!(fault, Fault::MetadataEndless | Fault::JwksEndless) {
        // The endless body was abandoned at the cap, not read on and on.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let streamed = idp.streamed();
        assert!(
            streamed > MAX_DOCUMENT_BYTES as u64 && streamed < 2 * 32 * 1024 * 1024,
            "{fault:?}: the IdP produced {streamed} bytes for two fetches"
        );
    }

    // The IdP recovers; a key rotated meanwhile is learnt at the next unknown-kid fetch.
    idp.set(Fault::None);
    h.issuer.rotate();
    idp.load_keys_from(&h.issuer).await;
    let new = h.issuer.signing_key();
    for v in [TokenVersion::V1, TokenVersion::V2] {
        assert_eq!(
            status(&h, &valid(&h, &new, v)).await,
            200,
            "{fault:?}: new {} key after recovery",
            v.claim()
        );
        assert_eq!(status(&h, &valid(&h, &old, v)).await, 200);
    }
    assert_eq!(h.echo.requests(), 2 + 2 * 2 + 2 * 2);
}

#[tokio::test]
async fn huge_metadata_with_content_length_is_too_large() {
    last_good_keys_survive(Fault::MetadataHugeLength, "too_large").await;
}

#[tokio::test]
async fn endless_chunked_metadata_is_too_large_and_abandoned() {
    last_good_keys_survive(Fault::MetadataEndless, "too_large").await;
}

#[tokio::test]
async fn huge_jwks_with_content_length_is_too_large() {
    last_good_keys_survive(Fault::JwksHugeLength, "too_large").await;
}

#[tokio::test]
async fn endless_chunked_jwks_is_too_large_and_abandoned() {
    last_good_keys_survive(Fault::JwksEndless, "too_large").await;
}

#[tokio::test]
async fn jwks_of_exactly_max_document_bytes_is_accepted_with_content_length() {
    last_good_keys_survive(Fault::JwksAtLimitLength, "ok").await;
}

#[tokio::test]
async fn jwks_of_exactly_max_document_bytes_is_accepted_chunked() {
    last_good_keys_survive(Fault::JwksAtLimitChunked, "ok").await;
}

#[tokio::test]
async fn jwks_one_byte_over_max_document_bytes_is_too_large_with_content_length() {
    last_good_keys_survive(Fault::JwksOverLimitLength, "too_large").await;
}

#[tokio::test]
async fn jwks_one_byte_over_max_document_bytes_is_too_large_chunked() {
    last_good_keys_survive(Fault::JwksOverLimitChunked, "too_large").await;
}

#[tokio::test]
async fn metadata_that_is_not_json_is_bad_json() {
    last_good_keys_survive(Fault::MetadataNotJson, "bad_json").await;
}

#[tokio::test]
async fn metadata_without_jwks_uri_is_bad_json() {
    last_good_keys_survive(Fault::MetadataWithoutJwksUri, "bad_json").await;
}

#[tokio::test]
async fn jwks_that_is_not_json_is_bad_json() {
    last_good_keys_survive(Fault::JwksNotJson, "bad_json").await;
}

#[tokio::test]
async fn jwks_without_keys_member_is_bad_json() {
    last_good_keys_survive(Fault::JwksWithoutKeys, "bad_json").await;
}

#[tokio::test]
async fn jwks_with_null_keys_is_bad_json() {
    last_good_keys_survive(Fault::JwksKeysNull, "bad_json").await;
}

#[tokio::test]
async fn jwks_with_only_ec_oct_and_okp_keys_is_no_keys() {
    last_good_keys_survive(Fault::JwksUnsupportedKty, "no_keys").await;
}

#[tokio::test]
async fn metadata_500_is_bad_status() {
    last_good_keys_survive(Fault::Metadata500, "bad_status").await;
}

#[tokio::test]
async fn jwks_503_is_bad_status() {
    last_good_keys_survive(Fault::Jwks503, "bad_status").await;
}

#[tokio::test]
async fn metadata_redirect_loop_is_http_error() {
    last_good_keys_survive(Fault::MetadataRedirectLoop, "http_error").await;
}

#[tokio::test]
async fn jwks_uri_on_a_closed_port_is_http_error() {
    last_good_keys_survive(Fault::JwksClosedPort, "http_error").await;
}

#[tokio::test]
async fn jwks_uri_that_does_not_resolve_is_http_error() {
    last_good_keys_survive(Fault::JwksDnsFailure, "http_error").await;
}

#[tokio::test]
async fn jwks_uri_with_tls_to_a_plain_http_port_is_http_error() {
    last_good_keys_survive(Fault::JwksTlsToPlainPort, "http_error").await;
}

#[tokio::test]
async fn jwks_body_cut_off_mid_stream_is_http_error() {
    last_good_keys_survive(Fault::JwksTruncated, "http_error").await;
}

// ---------------------------------------------------------------------------------------------
// The background refresh meets a fault
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn background_refresh_into_an_endless_jwks_backs_off_and_keeps_the_last_good_keys() {
    // Background refresh every 4 s; unknown kids cannot refetch (5 min cooldown). After a
    // failure the retry waits 1 s, 2 s, then 4 s (capped at jwks_refresh), each + up to 25 %.
    let (h, idp) = start("jwks_refresh = \"4s\"").await;
    let old = h.issuer.signing_key();
    let before = key_fetches(&h).await;
    idp.set(Fault::JwksEndless);
    let set_at = Instant::now();

    eventually(
        Duration::from_secs(20),
        "three failed background fetches per source",
        || {
            let h = &h;
            let before = &before;
            async move {
                let now = key_fetches(h).await;
                SOURCES
                    .iter()
                    .all(|s| now[&(*s, "too_large")] >= before[&(*s, "too_large")] + 3)
            }
        },
    )
    .await;
    // Meanwhile and afterwards: last good keys, ready.
    for v in [TokenVersion::V1, TokenVersion::V2] {
        assert_eq!(status(&h, &valid(&h, &old, v)).await, 200);
    }
    assert_eq!(admin_status(&h, "/readyz").await, 200);
    let after = key_fetches(&h).await;
    for source in SOURCES {
        assert_eq!(
            after[&(source, "ok")],
            before[&(source, "ok")],
            "{source}: no success"
        );
        for result in ["http_error", "bad_status", "bad_json", "no_keys"] {
            assert_eq!(
                after[&(source, result)],
                before[&(source, result)],
                "{source} {result}"
            );
        }
    }

    // Backoff: the gaps between failed fetches grow (1 s + jitter, then 2 s + jitter).
    for suffix in ["/discovery/keys", "/discovery/v2.0/keys"] {
        let failed: Vec<Instant> = idp
            .jwks_arrivals(suffix)
            .into_iter()
            .filter(|at| *at >= set_at)
            .collect();
        assert!(
            failed.len() >= 3,
            "{suffix}: {} failed fetches",
            failed.len()
        );
        let gap1 = failed[1] - failed[0];
        let gap2 = failed[2] - failed[1];
        assert!(
            gap1 >= Duration::from_millis(950) && gap1 <= Duration::from_millis(1800),
            "{suffix}: first retry after {gap1:?}"
        );
        assert!(
            gap2 >= Duration::from_millis(1950) && gap2 <= Duration::from_millis(3300),
            "{suffix}: second retry after {gap2:?}"
        );
    }
    let streamed = idp.streamed();
    assert!(
        streamed < 6 * 32 * 1024 * 1024,
        "the IdP produced {streamed} bytes for six failed fetches"
    );
    assert_eq!(h.echo.requests(), 2);
}
