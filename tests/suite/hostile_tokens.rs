//! The hostile-token corpus of issue 6 item 1 that `validation` does not already hold, by
//! theme:
//!
//! - `keys`: odd `kid` values, a kid of another trusted issuer's key, and the right key used
//!   for another issuer or tenant;
//! - `structure`: nested JWTs and JWE shapes, duplicate JSON members;
//! - `dates`: odd NumericDates in `exp` and `nbf`;
//! - `base64url`: non-canonical base64url, padding, whitespace and other encodings;
//! - `schemes`: credentials under a scheme other than Bearer, or in another header.
//!
//! Every token is built here at run time (nothing committed). Each refusal is checked on the
//! wire (401, the exact `invalid_token` challenge, the JSON body), at the upstream (never
//! reached) and in `/metrics` (exactly the expected reasons counted, nothing else). Tokens
//! are never printed: assertion messages name the case, not the token.

mod base64url;
mod dates;
mod keys;
mod schemes;
mod structure;

use crate::common;

use std::collections::BTreeMap;

use common::Harness;
use common::metrics::assert_denials;
use common::verdicts::refused;
use entragate::auth::Reason;
use serde_json::{Value, json};

/// A tenant this gateway does not serve through `[entra]`.
const OTHER_TENANT: &str = "2b1c0d9e-8f7a-4b6c-9d5e-4f3a2b1c0d9e";

// ---------------------------------------------------------------------------------------------
// Building tokens
// ---------------------------------------------------------------------------------------------

/// `{"typ":"JWT","alg":"RS256","kid":<kid>}` as text.
fn header_text(kid: &str) -> String {
    json!({"typ": "JWT", "alg": "RS256", "kid": kid}).to_string()
}

/// The header the issuer uses, with `kid` replaced by any JSON value.
fn header_with_kid(kid: Value) -> Value {
    json!({"typ": "JWT", "alg": "RS256", "kid": kid})
}

/// JSON object text with `member` (already `"name":value`) inserted as the first member.
fn prepend_member(object: &str, member: &str) -> String {
    assert!(object.starts_with('{') && object.len() > 2, "an object");
    format!("{{{member},{}", &object[1..])
}

// ---------------------------------------------------------------------------------------------
// Observing the gateway
// ---------------------------------------------------------------------------------------------

/// Sends every case, each expected to be refused with `reason`, and checks the counters.
async fn refuse_all(h: &Harness, cases: &[(String, String, Reason)]) {
    let mut expected: BTreeMap<&str, u64> = BTreeMap::new();
    for (what, token, reason) in cases {
        refused(h, token, what).await;
        *expected.entry(reason.as_str()).or_default() += 1;
    }
    assert_denials(h, &expected).await;
}
