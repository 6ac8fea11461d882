//! Fetching and parsing an issuer's OpenID metadata and JWKS.
//!
//! Only RSA signing keys are kept; a key that cannot be used is skipped with a log line rather
//! than failing the whole set. A set with no usable key is a failed fetch, so the previous
//! (last-known-good) set stays in service.

use std::collections::HashMap;
use std::sync::Arc;

use aws_lc_rs::signature::{self, ParsedPublicKey, RsaPublicKeyComponents};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

use super::IssuerTemplate;
use crate::config::Algorithm;
use crate::telemetry::ErrorChain;

/// Metadata and key documents larger than this are refused (Entra's are a few KiB).
pub const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;
/// RSA moduli shorter than this are not trusted.
const MIN_RSA_BITS: usize = 2048;
/// The longest RSA signature checked: RSA-8192, 1,024 bytes.
const MAX_SIGNATURE_BYTES: usize = 1024;

/// A verification key from the issuer's JWKS.
pub struct Key {
    /// The key's own `alg`, when published: a token must use exactly it.
    pub alg: Option<Algorithm>,
    /// Entra v2 keys may carry their own `issuer`; a token verified with the key must match it.
    pub issuer: Option<IssuerTemplate>,
    /// The RSA public key, parsed once per algorithm when the key set is loaded (in the order
    /// of [`Algorithm::ALL`]): a verification then starts from a ready key and its
    /// Montgomery context.
    parsed: [ParsedPublicKey; 6],
}

impl Key {
    /// The RSA key with big-endian modulus `n` and exponent `e`, ready for every RSA
    /// signature algorithm; `None` when aws-lc refuses it.
    #[must_use]
    pub fn rsa(
        n: &[u8],
        e: &[u8],
        alg: Option<Algorithm>,
        issuer: Option<IssuerTemplate>,
    ) -> Option<Self> {
        let components = RsaPublicKeyComponents { n, e };
        let parse = |a: Algorithm| components.to_parsed_public_key(rsa_params(a)).ok();
        let [a, b, c, d, f, g] = Algorithm::ALL;
        Some(Self {
            alg,
            issuer,
            parsed: [
                parse(a)?,
                parse(b)?,
                parse(c)?,
                parse(d)?,
                parse(f)?,
                parse(g)?,
            ],
        })
    }

    /// Checks `signature` (base64url, as in the token) over `message` with this key for `alg`.
    #[must_use]
    pub fn verify(&self, alg: Algorithm, message: &[u8], signature: &str) -> bool {
        let key = &self.parsed[alg as usize];
        // Decoded onto the stack; a longer one cannot be an RSA-8192 signature.
        let mut sig = [0_u8; MAX_SIGNATURE_BYTES];
        match URL_SAFE_NO_PAD.decode_slice(signature, &mut sig) {
            Ok(len) => key.verify_sig(message, &sig[..len]).is_ok(),
            Err(_) => false,
        }
    }
}

/// An RSA-2048 public key for tests of what holds keys (it verifies nothing).
#[cfg(test)]
pub(crate) fn test_key() -> Key {
    Key::rsa(&[0xc5; 256], &[1, 0, 1], None, None).expect("a well-formed RSA public key")
}

/// aws-lc's parameters for `alg`: PKCS#1 v1.5 or PSS, 2048 to 8192 bits.
fn rsa_params(alg: Algorithm) -> &'static signature::RsaParameters {
    match alg {
        Algorithm::RS256 => &signature::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::RS384 => &signature::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::RS512 => &signature::RSA_PKCS1_2048_8192_SHA512,
        Algorithm::PS256 => &signature::RSA_PSS_2048_8192_SHA256,
        Algorithm::PS384 => &signature::RSA_PSS_2048_8192_SHA384,
        Algorithm::PS512 => &signature::RSA_PSS_2048_8192_SHA512,
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("alg", &self.alg)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

/// The issuer and keys of one metadata document, fetched together.
#[derive(Debug)]
pub struct Fetched {
    pub issuer: IssuerTemplate,
    pub keys: HashMap<String, Arc<Key>>,
    /// Keys present in the JWKS but not usable here, with why (for logs).
    pub skipped: Vec<(String, &'static str)>,
}

/// Why a fetch failed. Kept short: it goes to logs and metrics labels.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    #[error("{what}: request failed: {detail}")]
    Http { what: &'static str, detail: String },
    #[error("{what}: HTTP status {status}")]
    Status { what: &'static str, status: u16 },
    #[error("{what}: larger than {MAX_DOCUMENT_BYTES} bytes")]
    TooLarge { what: &'static str },
    #[error("{what}: not valid JSON of the expected shape: {detail}")]
    Json { what: &'static str, detail: String },
    #[error("jwks: no usable RSA signing key ({skipped} skipped)")]
    NoKeys { skipped: usize },
    #[error("metadata: issuer is {found:?}, expected {expected:?}")]
    IssuerMismatch { expected: String, found: String },
    #[error("jwks file: {detail}")]
    Unreadable { detail: String },
}

impl FetchError {
    /// A short label for metrics.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Http { .. } => "http_error",
            Self::Status { .. } => "bad_status",
            Self::TooLarge { .. } => "too_large",
            Self::Json { .. } => "bad_json",
            Self::NoKeys { .. } => "no_keys",
            Self::IssuerMismatch { .. } => "issuer_mismatch",
            Self::Unreadable { .. } => "unreadable",
        }
    }
}

/// The members of an OpenID metadata document the gateway uses.
#[derive(Debug, Clone, Deserialize)]
pub struct Metadata {
    pub issuer: String,
    pub jwks_uri: String,
}

#[derive(Deserialize)]
struct Jwks {
    keys: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct RsaJwk {
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(rename = "use", default)]
    use_: Option<String>,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
    #[serde(default)]
    issuer: Option<String>,
}

/// Fetches the metadata at `metadata_url` (checking its issuer when one is expected), then the
/// JWKS it names.
///
/// # Errors
/// Any transport, status, size or parse failure, or a key set with no usable key.
pub async fn fetch(
    client: &reqwest::Client,
    metadata_url: &str,
    expected_issuer: Option<&str>,
) -> Result<Fetched, FetchError> {
    let metadata = fetch_metadata(client, metadata_url, expected_issuer).await?;
    fetch_keys(client, &metadata).await
}

/// Fetches and checks an OpenID metadata document.
///
/// # Errors
/// Any transport, status, size or parse failure, or another issuer than `expected_issuer`.
pub async fn fetch_metadata(
    client: &reqwest::Client,
    metadata_url: &str,
    expected_issuer: Option<&str>,
) -> Result<Metadata, FetchError> {
    let metadata: Metadata = get_json(client, metadata_url, "metadata").await?;
    // OpenID Connect Discovery 1.0 §4.3: the document's issuer must be the one configured.
    if let Some(expected) = expected_issuer
        && metadata.issuer != expected
    {
        return Err(FetchError::IssuerMismatch {
            expected: expected.to_owned(),
            found: metadata.issuer,
        });
    }
    Ok(metadata)
}

/// Fetches the JWKS that `metadata` names and keeps its usable keys.
///
/// # Errors
/// Any transport, status, size or parse failure, or a key set with no usable key.
pub async fn fetch_keys(
    client: &reqwest::Client,
    metadata: &Metadata,
) -> Result<Fetched, FetchError> {
    let jwks: Jwks = get_json(client, &metadata.jwks_uri, "jwks").await?;
    usable_keys(jwks, IssuerTemplate::new(&metadata.issuer))
}

/// The usable keys of a JWKS document read from a file (`what` names it in errors), as
/// `issuer`'s: the same rules as a fetched JWKS.
///
/// # Errors
/// A document too large, not a JWKS, or with no usable key.
pub fn parse_jwks(
    bytes: &[u8],
    what: &'static str,
    issuer: IssuerTemplate,
) -> Result<Fetched, FetchError> {
    if bytes.len() > MAX_DOCUMENT_BYTES {
        return Err(FetchError::TooLarge { what });
    }
    let jwks: Jwks = serde_json::from_slice(bytes).map_err(|e| FetchError::Json {
        what,
        detail: e.to_string(),
    })?;
    usable_keys(jwks, issuer)
}

fn usable_keys(jwks: Jwks, issuer: IssuerTemplate) -> Result<Fetched, FetchError> {
    let mut keys = HashMap::new();
    let mut skipped = Vec::new();
    for raw in jwks.keys {
        match parse_key(raw) {
            Ok((kid, key)) => {
                keys.insert(kid, Arc::new(key));
            }
            Err((kid, why)) => skipped.push((kid, why)),
        }
    }
    if keys.is_empty() {
        return Err(FetchError::NoKeys {
            skipped: skipped.len(),
        });
    }
    Ok(Fetched {
        issuer,
        keys,
        skipped,
    })
}

fn parse_key(raw: serde_json::Value) -> Result<(String, Key), (String, &'static str)> {
    let jwk: RsaJwk = serde_json::from_value(raw).map_err(|_| (String::new(), "not a JWK"))?;
    let kid = jwk.kid.unwrap_or_default();
    let fail = |why| Err((kid.clone(), why));
    if kid.is_empty() {
        return fail("no kid");
    }
    if jwk.kty != "RSA" {
        return fail("kty is not RSA");
    }
    if jwk.use_.as_deref().is_some_and(|u| u != "sig") {
        return fail("use is not sig");
    }
    let alg = match jwk.alg.as_deref() {
        None => None,
        Some(name) => match Algorithm::from_name(name) {
            Some(alg) => Some(alg),
            None => return fail("alg is not an RSA signature algorithm"),
        },
    };
    let (Some(n), Some(e)) = (jwk.n.as_deref(), jwk.e.as_deref()) else {
        return fail("missing n or e");
    };
    let (Ok(n), Ok(e)) = (URL_SAFE_NO_PAD.decode(n), URL_SAFE_NO_PAD.decode(e)) else {
        return fail("n or e is not base64url");
    };
    if modulus_bits(&n) < MIN_RSA_BITS {
        return fail("RSA modulus shorter than 2048 bits");
    }
    let issuer = jwk.issuer.as_deref().map(IssuerTemplate::new);
    let Some(key) = Key::rsa(&n, &e, alg, issuer) else {
        return fail("not a usable RSA public key");
    };
    Ok((kid, key))
}

/// Bit length of a big-endian modulus.
fn modulus_bits(n: &[u8]) -> usize {
    let Some(first) = n.iter().position(|b| *b != 0) else {
        return 0;
    };
    (n.len() - first) * 8 - n[first].leading_zeros() as usize
}

async fn get_json<T: serde::de::DeserializeOwned>(
    client: &reqwest::Client,
    url: &str,
    what: &'static str,
) -> Result<T, FetchError> {
    let http_err = |e: reqwest::Error| FetchError::Http {
        what,
        detail: ErrorChain(&e).to_string(),
    };
    let mut resp = client.get(url).send().await.map_err(http_err)?;
    if !resp.status().is_success() {
        return Err(FetchError::Status {
            what,
            status: resp.status().as_u16(),
        });
    }
    if resp
        .content_length()
        .is_some_and(|l| l > MAX_DOCUMENT_BYTES as u64)
    {
        return Err(FetchError::TooLarge { what });
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(http_err)? {
        if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            return Err(FetchError::TooLarge { what });
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).map_err(|e| FetchError::Json {
        what,
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modulus_length() {
        let mut n = vec![0x80u8];
        n.extend([0u8; 255]);
        assert_eq!(modulus_bits(&n), 2048);
        let mut small = vec![0x00u8, 0x7f];
        small.extend([0u8; 254]);
        assert_eq!(modulus_bits(&small), 2039);
        assert_eq!(modulus_bits(&[0, 0]), 0);
    }

    #[test]
    fn skips_unusable_keys() {
        let skip = |v: serde_json::Value| parse_key(v).err().map(|(_, why)| why);
        assert_eq!(
            skip(serde_json::json!({"kty":"EC","kid":"a","crv":"P-256"})),
            Some("kty is not RSA")
        );
        assert_eq!(
            skip(serde_json::json!({"kty":"RSA","kid":"a","use":"enc","n":"AQAB","e":"AQAB"})),
            Some("use is not sig")
        );
        assert_eq!(
            skip(serde_json::json!({"kty":"RSA","n":"AQAB","e":"AQAB"})),
            Some("no kid")
        );
        assert_eq!(
            skip(serde_json::json!({"kty":"RSA","kid":"a","n":"AQAB","e":"AQAB"})),
            Some("RSA modulus shorter than 2048 bits")
        );
        assert_eq!(
            skip(serde_json::json!({"kty":"RSA","kid":"a","alg":"HS256","n":"AQAB","e":"AQAB"})),
            Some("alg is not an RSA signature algorithm")
        );
    }
}
