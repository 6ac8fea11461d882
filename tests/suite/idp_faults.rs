//! Identity-provider faults (issue 6 item 3) that `keys` does not already cover: metadata or
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
//!
//! The misbehaving IdP is in `idp`, the tests in `faults`; this file starts the gateway in
//! front of it and reads its counters.

mod faults;
mod idp;

use crate::common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::metrics::series;
use common::tokens::{nonce, unique_claims};
use common::{Extra, Harness, TENANT};
use entragate::dev::{DevIssuer, SigningKey, sign_jwt};
use entragate::keys::TokenVersion;
use idp::Idp;
use serde_json::{Value, json};

/// Longest any single request may take before it counts as a hang (metadata_timeout is 5 s).
const REQUEST_BOUND: Duration = Duration::from_secs(15);
/// Every `result` label of `entragate_key_fetches_total`.
const RESULTS: [&str; 8] = [
    "ok",
    "http_error",
    "bad_status",
    "too_large",
    "bad_json",
    "no_keys",
    "issuer_mismatch",
    "unreadable",
];
const SOURCES: [&str; 2] = ["entra-v1", "entra-v2"];

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
