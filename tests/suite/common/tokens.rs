//! Building tokens by hand: base64url parts, RS256 signatures over exactly the given text,
//! and claims made unique so that no answer comes from the token cache.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use entragate::dev::{SigningKey, sign_jwt};
use entragate::keys::TokenVersion;
use serde_json::{Map, Value, json};

use super::Harness;

/// Base64url without padding, as JWS compact serialization writes every part.
pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// RS256 over `header_b64.payload_b64` exactly as given (which need not be canonical).
pub fn sign_parts(key: &SigningKey, header_b64: &str, payload_b64: &str) -> String {
    let input = format!("{header_b64}.{payload_b64}");
    let sig = key
        .sign("RS256", input.as_bytes())
        .expect("RS256 signature");
    format!("{input}.{}", b64(sig))
}

/// RS256 over raw header and claims JSON text, so that anything but the signature can be the
/// reason for a refusal.
pub fn sign_raw(key: &SigningKey, header: &str, claims: &str) -> String {
    sign_parts(key, &b64(header), &b64(claims))
}

/// A token with `header` and `claims`, signed with `key`.
pub fn signed(key: &SigningKey, header: &Value, claims: &Map<String, Value>) -> String {
    sign_jwt(key, header, &Value::Object(claims.clone()))
}

/// The three parts of a compact token.
pub fn parts(token: &str) -> (&str, &str, &str) {
    let mut it = token.split('.');
    let (Some(h), Some(p), Some(s), None) = (it.next(), it.next(), it.next(), it.next()) else {
        panic!("not a compact JWS");
    };
    (h, p, s)
}

/// `claims` with `name` set to `value`.
pub fn with(mut claims: Map<String, Value>, name: &str, value: Value) -> Map<String, Value> {
    claims.insert(name.to_owned(), value);
    claims
}

/// A fresh random-looking value, different on every call.
pub fn nonce() -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_nanos(),
    );
    h.finish()
}

/// Claims of a valid token of `version`, made unique by Entra's `uti` claim, so that no two
/// tokens are equal and none is answered from the token cache.
pub fn unique_claims(h: &Harness, version: TokenVersion) -> Map<String, Value> {
    with(h.claims(version), "uti", json!(format!("{:016x}", nonce())))
}
