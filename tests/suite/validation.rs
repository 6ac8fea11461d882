//! Token validation through real sockets (SPEC §3-4), by theme:
//!
//! - `accepted`: v1 and v2 tokens accepted with the verified identity passed upstream, and
//!   client-sent identity headers replaced;
//! - `shape`: one test per refusal of the token's form, header and signature;
//! - `claims`: one test per refusal of its claims (times, issuer, audience, tenant, client),
//!   with the accepted cases at their edges;
//! - `keys`: no reachable keys, and keys named by the token itself.
//!
//! Each refusal is checked on the wire (status, challenge, body), at the upstream (never
//! reached) and in the admin `/metrics` text (exactly that reason counted). Every token is
//! minted at run time by the embedded issuer or built here from its parts.

mod accepted;
mod claims;
mod keys;
mod shape;

use crate::common;

use common::Harness;
use entragate::dev::DevIssuer;
use serde_json::{Map, Value, json};

/// A tenant this gateway does not serve.
const OTHER_TENANT: &str = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d";
/// A client application that is not Power Query.
const OTHER_CLIENT: &str = "0f1e2d3c-4b5a-4987-a654-3210fedcba98";

// ---------------------------------------------------------------------------------------------
// Building tokens
// ---------------------------------------------------------------------------------------------

/// The issuer's default header for the published signing key, with `extra` members merged in.
fn header(h: &Harness, extra: &Value) -> Value {
    let kid = h.issuer.signing_key().kid.clone();
    let mut header = json!({"typ": "JWT", "alg": "RS256", "kid": kid});
    if let (Some(obj), Some(more)) = (header.as_object_mut(), extra.as_object()) {
        for (k, v) in more {
            obj.insert(k.clone(), v.clone());
        }
    }
    header
}

/// A token with `header`, signed with the issuer's published signing key.
fn signed(h: &Harness, header: &Value, claims: &Map<String, Value>) -> String {
    common::tokens::signed(&h.issuer.signing_key(), header, claims)
}

/// `claims` without `name`.
fn without(mut claims: Map<String, Value>, name: &str) -> Map<String, Value> {
    assert!(claims.remove(name).is_some(), "claim {name} was present");
    claims
}

/// The published JWKS of `issuer` (v1 endpoint of `tenant`).
async fn jwks(h: &Harness, issuer: &DevIssuer, tenant: &str) -> Value {
    h.client
        .get(format!("{}/{tenant}/discovery/keys", issuer.authority()))
        .send()
        .await
        .expect("jwks request")
        .json()
        .await
        .expect("jwks json")
}
