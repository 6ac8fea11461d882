//! An Entra-shaped token issuer on loopback, for `entragate dev` and the integration tests.
//!
//! It publishes what Entra publishes for a tenant: v1 and v2 OpenID metadata, and JWKS whose
//! keys carry `kid`, `x5t` (the same SHA-1 thumbprint) and an `x5c` self-signed certificate,
//! with the v2 keys also naming their `issuer`. Tokens are minted with the claims Entra puts in
//! v1 and v2 access tokens. For tests it counts its fetches, rotates keys, and can be taken
//! down to simulate an outage. `common`/`organizations` metadata uses the `{tenantid}`
//! issuer template, as Entra's does.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, KeyPair as _, RsaKeyPair};
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Map, Value, json};

use std::path::PathBuf;

use super::endpoints;
use super::oauth::grants::Grants;
use super::tls::{DevTls, DevTlsError};
pub use crate::config::POWER_QUERY_CLIENT_ID;
use crate::config::{Cloud, Dev};
use crate::keys::TokenVersion;

/// An RSA signing key as the issuer publishes it.
pub struct SigningKey {
    pub kid: String,
    pair: RsaKeyPair,
    /// base64url modulus and exponent.
    n: String,
    e: String,
    /// Standard base64 DER certificate.
    x5c: String,
}

impl SigningKey {
    /// Generates a 2048-bit RSA key with a self-signed certificate; `kid` = `x5t`.
    ///
    /// # Panics
    /// When the system's RNG or the crypto library fails (a broken machine, not input).
    #[must_use]
    #[allow(clippy::expect_used)]
    pub fn generate() -> Self {
        let rc_key =
            rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).expect("RSA key generation");
        let cert = rcgen::CertificateParams::new(vec!["entragate-dev-issuer".to_owned()])
            .expect("certificate parameters")
            .self_signed(&rc_key)
            .expect("self-signed certificate");
        let pair = RsaKeyPair::from_pkcs8(&rc_key.serialize_der()).expect("own PKCS#8 key");
        let public = pair.public_key();
        let n = URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero());
        let e = URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero());
        let der = cert.der();
        let thumbprint =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, der);
        Self {
            kid: URL_SAFE_NO_PAD.encode(thumbprint.as_ref()),
            pair,
            n,
            e,
            x5c: STANDARD.encode(der),
        }
    }

    /// The key as a JWKS member, naming `issuer` when given (Entra's v2 keys do).
    #[must_use]
    pub fn jwk(&self, issuer: Option<&str>) -> Value {
        let mut jwk = json!({
            "kty": "RSA",
            "use": "sig",
            "kid": self.kid,
            "x5t": self.kid,
            "n": self.n,
            "e": self.e,
            "x5c": [self.x5c],
        });
        if let (Some(iss), Some(obj)) = (issuer, jwk.as_object_mut()) {
            obj.insert("issuer".into(), json!(iss));
        }
        jwk
    }

    /// Signs `header.payload` with this key for `alg` (RS256..512, PS256..512).
    /// Returns `None` for any other algorithm.
    #[must_use]
    pub fn sign(&self, alg: &str, signing_input: &[u8]) -> Option<Vec<u8>> {
        let padding: &'static dyn signature::RsaEncoding = match alg {
            "RS256" => &signature::RSA_PKCS1_SHA256,
            "RS384" => &signature::RSA_PKCS1_SHA384,
            "RS512" => &signature::RSA_PKCS1_SHA512,
            "PS256" => &signature::RSA_PSS_SHA256,
            "PS384" => &signature::RSA_PSS_SHA384,
            "PS512" => &signature::RSA_PSS_SHA512,
            _ => return None,
        };
        let mut sig = vec![0; self.pair.public_modulus_len()];
        self.pair
            .sign(padding, &SystemRandom::new(), signing_input, &mut sig)
            .ok()?;
        Some(sig)
    }
}

/// Compact JWS from a header and claims, signed with `key` per the header's `alg`
/// (an unsigned, empty signature for an algorithm the key cannot do).
#[must_use]
pub fn sign_jwt(key: &SigningKey, header: &Value, claims: &Value) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let alg = header.get("alg").and_then(Value::as_str).unwrap_or("");
    let sig = key.sign(alg, input.as_bytes()).unwrap_or_default();
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

pub(super) struct IssuerState {
    /// The canonical authority (`http://127.0.0.1:port`): the `iss` of every token, and what
    /// the gateway is configured with. The HTTPS listener serves the same tenant.
    pub(super) authority: String,
    /// `dev.cloud`: whose issuers the tokens and metadata carry (`None`: the authority's).
    cloud: Option<Cloud>,
    tenant_id: String,
    /// Published keys; the first signs new tokens.
    keys: RwLock<Vec<Arc<SigningKey>>>,
    /// Audience of `/dev/token` when the query names none.
    default_audience: RwLock<String>,
    metadata_fetches: AtomicU64,
    jwks_fetches: AtomicU64,
    up: AtomicBool,
    /// `[dev]`: the API, users and clients of the tenant.
    pub(super) dev: RwLock<Dev>,
    pub(super) grants: Grants,
}

impl IssuerState {
    /// The `iss` of tokens of `version` for tenant `tid`: the cloud's issuers with
    /// `dev.cloud`; otherwise v1 as Entra's always is (`sts.windows.net`) and v2 on this
    /// issuer's own authority.
    pub(super) fn issuer(&self, version: TokenVersion, tid: &str) -> String {
        match (self.cloud, version) {
            (Some(cloud), TokenVersion::V1) => cloud.v1_issuer(tid),
            (Some(cloud), TokenVersion::V2) => cloud.v2_issuer(tid),
            (None, TokenVersion::V1) => Cloud::Global.v1_issuer(tid),
            (None, TokenVersion::V2) => format!("{}/{tid}/v2.0", self.authority),
        }
    }

    /// Signs `claims` with the current key and the default header.
    pub(super) fn sign(&self, claims: Value) -> String {
        let Some(key) = self.keys.read().ok().and_then(|k| k.first().cloned()) else {
            return String::new();
        };
        let Value::Object(claims) = claims else {
            return String::new();
        };
        let header = default_header(&key, &claims);
        sign_jwt(&key, &header, &Value::Object(claims))
    }
}

/// A listener's view of the issuer: the state and the base URL it is reached at (the
/// endpoints a metadata document names are on the listener that served it).
#[derive(Clone)]
pub(super) struct Ctx {
    pub(super) state: Arc<IssuerState>,
    pub(super) base: Arc<str>,
}

/// The issuer's HTTPS side.
struct Https {
    addr: SocketAddr,
    ca_file: PathBuf,
    /// Whether the CA file is ours to remove (written to the temp dir).
    remove_ca: bool,
    task: tokio::task::JoinHandle<()>,
    _stop: tokio::sync::watch::Sender<bool>,
}

/// A running embedded issuer.
pub struct DevIssuer {
    pub addr: SocketAddr,
    state: Arc<IssuerState>,
    task: tokio::task::JoinHandle<()>,
    https: Option<Https>,
}

impl Drop for DevIssuer {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(h) = &self.https {
            h.task.abort();
            if h.remove_ca {
                let _ = std::fs::remove_file(&h.ca_file);
            }
        }
    }
}

/// Why the issuer could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot bind the dev issuer's listener: {0}")]
    Bind(#[from] std::io::Error),
    #[error(transparent)]
    Tls(#[from] DevTlsError),
}

fn router(state: &Arc<IssuerState>, base: String) -> Router {
    Router::new()
        .route(
            "/{tenant}/.well-known/openid-configuration",
            get(metadata_v1),
        )
        .route(
            "/{tenant}/v2.0/.well-known/openid-configuration",
            get(metadata_v2),
        )
        .route("/{tenant}/discovery/keys", get(jwks_v1))
        .route("/{tenant}/discovery/v2.0/keys", get(jwks_v2))
        .route(
            "/{tenant}/oauth2/v2.0/authorize",
            get(endpoints::authorize_v2),
        )
        .route("/{tenant}/oauth2/authorize", get(endpoints::authorize_v1))
        .route("/{tenant}/oauth2/v2.0/token", post(endpoints::token_v2))
        .route("/{tenant}/oauth2/token", post(endpoints::token_v1))
        .route("/dev/token", get(mint_endpoint))
        .with_state(Ctx {
            state: Arc::clone(state),
            base: base.into(),
        })
}

impl DevIssuer {
    /// Starts on `addr` (use port 0 for any) for tenant `tenant_id` with one signing key,
    /// the default `[dev]` API, users and clients, and no HTTPS listener.
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub async fn start(addr: SocketAddr, tenant_id: &str) -> std::io::Result<Self> {
        let dev = Dev {
            tenant_id: tenant_id.to_owned(),
            ..Dev::default()
        };
        Self::start_inner(addr, dev).await
    }

    async fn start_inner(addr: SocketAddr, dev: Dev) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let authority = format!("http://{addr}");
        let state = Arc::new(IssuerState {
            authority: authority.clone(),
            cloud: dev.cloud,
            tenant_id: dev.tenant_id.clone(),
            keys: RwLock::new(vec![Arc::new(SigningKey::generate())]),
            default_audience: RwLock::new("api://entragate-dev".to_owned()),
            metadata_fetches: AtomicU64::new(0),
            jwks_fetches: AtomicU64::new(0),
            up: AtomicBool::new(true),
            grants: Grants::new(dev.code_lifetime, dev.refresh_token_lifetime),
            dev: RwLock::new(dev),
        });
        let router = router(&state, authority);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(Self {
            addr,
            state,
            task,
            https: None,
        })
    }

    /// Starts with the `[dev]` settings `dev`: plain HTTP on `addr` (the canonical
    /// authority, for the gateway) and HTTPS on `dev.https_listen` (for MSAL and other
    /// clients that insist on https) with a generated CA, written to `dev.ca_file` or a
    /// file in the temp directory. A taken `https_listen` port falls back to a free one.
    ///
    /// When the CA cannot be written to the temp directory (no `dev.ca_file`), the issuer
    /// starts without HTTPS and says so on stderr.
    ///
    /// # Errors
    /// When a listener cannot be bound or the CA cannot be written to `dev.ca_file`.
    pub async fn start_with(addr: SocketAddr, dev: Dev) -> Result<Self, StartError> {
        let https_listen = dev.https_listen;
        let ca_path = dev.ca_file.clone();
        let mut issuer = Self::start_inner(addr, dev).await?;
        let tls = DevTls::generate()?;
        let ca_file = match tls.write_ca(ca_path.as_deref()) {
            Ok(f) => f,
            // The default place (the temp directory) may not be writable, as in the
            // shipped image: the demo still runs, without the HTTPS listener MSAL needs.
            Err(e) if ca_path.is_none() => {
                eprintln!(
                    "entragate dev: {e}; HTTPS for MSAL clients is off (set dev.ca_file to a writable path)"
                );
                return Ok(issuer);
            }
            Err(e) => return Err(e.into()),
        };
        let listener = match tokio::net::TcpListener::bind(https_listen).await {
            Ok(l) => l,
            Err(_) => tokio::net::TcpListener::bind(SocketAddr::new(https_listen.ip(), 0)).await?,
        };
        let https_addr = listener.local_addr()?;
        let router = router(&issuer.state, format!("https://{https_addr}"));
        let (stop, signal) = tokio::sync::watch::channel(false);
        let server = Arc::clone(&tls.server);
        let task = tokio::spawn(async move {
            crate::server::serve(
                listener,
                router,
                crate::config::Limits::default(),
                Some(server),
                signal,
            )
            .await;
        });
        issuer.https = Some(Https {
            addr: https_addr,
            ca_file,
            remove_ca: ca_path.is_none(),
            task,
            _stop: stop,
        });
        Ok(issuer)
    }

    /// `https://127.0.0.1:port/<tenant>`: the authority to give MSAL, when HTTPS is on.
    #[must_use]
    pub fn https_authority(&self) -> Option<String> {
        self.https
            .as_ref()
            .map(|h| format!("https://{}/{}", h.addr, self.state.tenant_id))
    }

    /// The file holding the CA certificate of the HTTPS listener, when it is on.
    #[must_use]
    pub fn ca_file(&self) -> Option<&std::path::Path> {
        self.https.as_ref().map(|h| h.ca_file.as_path())
    }

    /// The `[dev]` settings in force.
    #[must_use]
    pub fn dev(&self) -> Dev {
        self.state.dev.read().map(|d| d.clone()).unwrap_or_default()
    }

    /// Adds an Application ID URI to the dev API (e.g. the gateway's URL, which Power BI
    /// asks for as the resource).
    pub fn add_api_uri(&self, uri: &str) {
        if let Ok(mut d) = self.state.dev.write()
            && !d.api_uris.iter().any(|u| u == uri)
        {
            d.api_uris.push(uri.to_owned());
        }
    }

    /// `http://127.0.0.1:port`: the `entra.authority` to configure.
    #[must_use]
    pub fn authority(&self) -> &str {
        &self.state.authority
    }

    #[must_use]
    pub fn tenant_id(&self) -> &str {
        &self.state.tenant_id
    }

    /// The `iss` of tokens of `version`, for tenant `tid`.
    #[must_use]
    pub fn issuer(&self, version: TokenVersion, tid: &str) -> String {
        self.state.issuer(version, tid)
    }

    /// Sets the audience `/dev/token` uses by default.
    pub fn set_default_audience(&self, aud: &str) {
        if let Ok(mut a) = self.state.default_audience.write() {
            aud.clone_into(&mut a);
        }
    }

    /// Metadata documents served so far (v1 and v2 together).
    #[must_use]
    pub fn metadata_fetches(&self) -> u64 {
        self.state.metadata_fetches.load(SeqCst)
    }

    /// JWKS documents served so far (v1 and v2 together).
    #[must_use]
    pub fn jwks_fetches(&self) -> u64 {
        self.state.jwks_fetches.load(SeqCst)
    }

    /// Simulates an outage (`false`: every request gets 503) or its end.
    pub fn set_up(&self, up: bool) {
        self.state.up.store(up, SeqCst);
    }

    /// Publishes a new key and signs with it from now on; the old keys stay published.
    /// Returns the new `kid`.
    pub fn rotate(&self) -> String {
        let key = Arc::new(SigningKey::generate());
        let kid = key.kid.clone();
        if let Ok(mut keys) = self.state.keys.write() {
            keys.insert(0, key);
        }
        kid
    }

    /// Stops publishing the key `kid` (a withdrawal, e.g. after a compromise). The last key
    /// cannot be withdrawn. Returns whether a key was removed.
    pub fn withdraw(&self, kid: &str) -> bool {
        let Ok(mut keys) = self.state.keys.write() else {
            return false;
        };
        let before = keys.len();
        if before > 1 {
            keys.retain(|k| k.kid != kid);
        }
        keys.len() < before
    }

    /// The key that signs new tokens.
    ///
    /// # Panics
    /// Never: the issuer always holds at least one key.
    #[must_use]
    #[allow(clippy::expect_used)]
    pub fn signing_key(&self) -> Arc<SigningKey> {
        let keys = self.state.keys.read().expect("issuer key lock");
        Arc::clone(&keys[0])
    }

    /// Claims of a typical delegated (user) token from Power Query, valid for an hour.
    #[must_use]
    pub fn claims(&self, version: TokenVersion, audience: &str) -> Map<String, Value> {
        user_claims(&self.state, version, audience)
    }

    /// A signed token with the default header (RS256, `kid`, and `x5t` for v1).
    #[must_use]
    pub fn mint(&self, claims: &Map<String, Value>) -> String {
        let key = self.signing_key();
        let header = default_header(&key, claims);
        sign_jwt(&key, &header, &Value::Object(claims.clone()))
    }
}

fn default_header(key: &SigningKey, claims: &Map<String, Value>) -> Value {
    if claims.get("ver").and_then(Value::as_str) == Some("1.0") {
        json!({"typ": "JWT", "alg": "RS256", "x5t": key.kid, "kid": key.kid})
    } else {
        json!({"typ": "JWT", "alg": "RS256", "kid": key.kid})
    }
}

fn user_claims(state: &IssuerState, version: TokenVersion, audience: &str) -> Map<String, Value> {
    let tid = state.tenant_id.as_str();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut c = json!({
        "aud": audience,
        "iss": state.issuer(version, tid),
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
        "tid": tid,
        "oid": "00000000-0000-4000-8000-00000000a11e",
        "sub": "dev-subject-pairwise",
        "scp": "user_impersonation",
        "name": "Adele Vance",
        "ver": version.claim(),
    });
    if let Some(obj) = c.as_object_mut() {
        match version {
            TokenVersion::V1 => {
                obj.insert("appid".into(), json!(POWER_QUERY_CLIENT_ID));
                obj.insert("appidacr".into(), json!("0"));
                obj.insert("upn".into(), json!("adele@contoso.example"));
                obj.insert("unique_name".into(), json!("adele@contoso.example"));
            }
            TokenVersion::V2 => {
                obj.insert("azp".into(), json!(POWER_QUERY_CLIENT_ID));
                obj.insert("azpacr".into(), json!("0"));
                obj.insert("preferred_username".into(), json!("adele@contoso.example"));
            }
        }
    }
    match c {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// The issuer value a metadata document of `tenant` publishes.
fn metadata_issuer(state: &IssuerState, tenant: &str, version: TokenVersion) -> String {
    let tid =
        if tenant.eq_ignore_ascii_case("common") || tenant.eq_ignore_ascii_case("organizations") {
            "{tenantid}"
        } else {
            state.tenant_id.as_str()
        };
    state.issuer(version, tid)
}

fn unavailable() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "issuer down (simulated outage)",
    )
        .into_response()
}

async fn metadata_v1(State(c): State<Ctx>, Path(tenant): Path<String>) -> Response {
    metadata(&c, &tenant, TokenVersion::V1)
}

async fn metadata_v2(State(c): State<Ctx>, Path(tenant): Path<String>) -> Response {
    metadata(&c, &tenant, TokenVersion::V2)
}

/// The tenant's OpenID metadata as Entra publishes it; the endpoints are on the listener
/// that served the document, the issuer is the canonical one.
fn metadata(c: &Ctx, tenant: &str, version: TokenVersion) -> Response {
    let s = &*c.state;
    if !s.up.load(SeqCst) {
        return unavailable();
    }
    s.metadata_fetches.fetch_add(1, SeqCst);
    let base = format!("{}/{tenant}", c.base);
    let (jwks_uri, authorize, token) = match version {
        TokenVersion::V1 => (
            format!("{base}/discovery/keys"),
            format!("{base}/oauth2/authorize"),
            format!("{base}/oauth2/token"),
        ),
        TokenVersion::V2 => (
            format!("{base}/discovery/v2.0/keys"),
            format!("{base}/oauth2/v2.0/authorize"),
            format!("{base}/oauth2/v2.0/token"),
        ),
    };
    axum::Json(json!({
        "issuer": metadata_issuer(s, tenant, version),
        "jwks_uri": jwks_uri,
        "authorization_endpoint": authorize,
        "token_endpoint": token,
        "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
        "response_modes_supported": ["query", "form_post"],
        "response_types_supported": ["code", "id_token", "code id_token", "token id_token", "token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nonce", "name", "oid", "tid", "preferred_username", "upn", "ver"],
        "request_uri_parameter_supported": false,
        "tenant_region_scope": "EU",
        "cloud_instance_name": s.cloud.unwrap_or_default().instance_name(),
    }))
    .into_response()
}

async fn jwks_v1(State(c): State<Ctx>, Path(_tenant): Path<String>) -> Response {
    jwks(&c.state, None)
}

async fn jwks_v2(State(c): State<Ctx>, Path(tenant): Path<String>) -> Response {
    let issuer = metadata_issuer(&c.state, &tenant, TokenVersion::V2);
    jwks(&c.state, Some(&issuer))
}

fn jwks(s: &IssuerState, issuer: Option<&str>) -> Response {
    if !s.up.load(SeqCst) {
        return unavailable();
    }
    s.jwks_fetches.fetch_add(1, SeqCst);
    let keys: Vec<Value> = s
        .keys
        .read()
        .map(|keys| keys.iter().map(|k| k.jwk(issuer)).collect())
        .unwrap_or_default();
    axum::Json(json!({ "keys": keys })).into_response()
}

#[derive(serde::Deserialize)]
struct MintQuery {
    /// `1` or `2`.
    #[serde(default)]
    ver: Option<String>,
    #[serde(default)]
    aud: Option<String>,
    #[serde(default)]
    scp: Option<String>,
}

/// `GET /dev/token?ver=1|2&aud=…&scp=…`: a signed token as text (the demo's stand-in for
/// signing in; real Entra needs a browser or a client credential).
async fn mint_endpoint(State(c): State<Ctx>, Query(q): Query<MintQuery>) -> Response {
    let s = &*c.state;
    let version = match q.ver.as_deref() {
        None | Some("1" | "1.0") => TokenVersion::V1,
        Some("2" | "2.0") => TokenVersion::V2,
        Some(_) => return (StatusCode::BAD_REQUEST, "ver must be 1 or 2\n").into_response(),
    };
    let aud = match q.aud {
        Some(a) => a,
        None => s
            .default_audience
            .read()
            .map(|a| a.clone())
            .unwrap_or_default(),
    };
    let mut claims = user_claims(s, version, &aud);
    if let Some(scp) = q.scp {
        claims.insert("scp".into(), json!(scp));
    }
    let Some(key) = s.keys.read().ok().and_then(|k| k.first().cloned()) else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "no key").into_response();
    };
    let header = default_header(&key, &claims);
    sign_jwt(&key, &header, &Value::Object(claims)).into_response()
}
