//! The misbehaving identity provider: Entra-shaped v1 and v2 metadata and the dev issuer's keys,
//! served from its own address, with one [`Fault`] at a time.

use crate::common;

use std::net::SocketAddr;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::atomic::{AtomicU8, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use common::TENANT;
use entragate::dev::DevIssuer;
use entragate::keys::{MAX_DOCUMENT_BYTES, TokenVersion};
use futures_util::StreamExt as _;
use serde_json::{Value, json};

/// What the IdP does wrong; one at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Fault {
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

pub(super) struct Idp {
    pub(super) authority: String,
    state: Arc<IdpState>,
    /// Serves until the owner is dropped.
    _task: common::Task,
}

impl Idp {
    /// Serves `issuer`'s keys under its issuer values, from its own address.
    pub(super) async fn start(issuer: &DevIssuer) -> Self {
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
        let task = common::Task(tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        }));
        let idp = Self {
            authority,
            state,
            _task: task,
        };
        idp.load_keys_from(issuer).await;
        idp
    }

    /// Copies the keys `issuer` publishes now (after a rotation, say).
    pub(super) async fn load_keys_from(&self, issuer: &DevIssuer) {
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

    pub(super) fn set(&self, fault: Fault) {
        self.state.fault.store(fault as u8, SeqCst);
    }

    pub(super) fn streamed(&self) -> u64 {
        self.state.streamed.load(SeqCst)
    }

    /// When each JWKS request for `path_suffix` arrived.
    pub(super) fn jwks_arrivals(&self, path_suffix: &str) -> Vec<Instant> {
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
