//! The token's structure: nested JWTs and JWE shapes, and duplicate JSON members in the header
//! or the payload.

use crate::common;

use super::{OTHER_TENANT, header_text, prepend_member, refuse_all};
use common::tokens::{b64, nonce, parts, sign_raw, unique_claims, with};
use common::verdicts::accepted;
use common::{Harness, now};
use entragate::auth::Reason;
use entragate::dev::SigningKey;
use entragate::keys::TokenVersion;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// Nested JWT and JWE shapes
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn nested_jwts_and_jwe_shapes_are_refused_as_malformed() {
    let h = Harness::start().await;
    let key = h.issuer.signing_key();
    let kid = key.kid.clone();
    let attacker = SigningKey::generate();
    let inner = h.issuer.mint(&unique_claims(&h, TokenVersion::V2));
    let (ih, ip, is) = parts(&inner);

    let nested_header = |cty: &str, alg: &str, kid: &str| {
        json!({"typ": "JWT", "alg": alg, "kid": kid, "cty": cty}).to_string()
    };
    let random_b64 = |n: usize| {
        b64((0..n)
            .map(|i| (nonce() as u8).wrapping_add(i as u8))
            .collect::<Vec<u8>>())
    };

    let mut cases: Vec<(String, String, Reason)> = vec![
        // RFC 7519 §5.2 nested JWT: the payload is the inner compact JWT, the outer signed by
        // the issuer's own key.
        (
            "cty JWT, valid inner token as payload".into(),
            sign_raw(&key, &nested_header("JWT", "RS256", &kid), &inner),
        ),
        (
            "cty jwt (lower case), valid inner token as payload".into(),
            sign_raw(&key, &nested_header("jwt", "RS256", &kid), &inner),
        ),
        (
            "cty JWT, inner token as a JSON string".into(),
            sign_raw(
                &key,
                &nested_header("JWT", "RS256", &kid),
                &json!(inner).to_string(),
            ),
        ),
        (
            "cty JWT, outer signed by an attacker's key".into(),
            sign_raw(
                &attacker,
                &nested_header("JWT", "RS256", &attacker.kid),
                &inner,
            ),
        ),
        (
            "cty JWT, outer alg none, unsigned".into(),
            format!(
                "{}.{}.",
                b64(nested_header("JWT", "none", &kid)),
                b64(&inner)
            ),
        ),
        // JWE compact serialisation (RFC 7516 §7.1): five parts.
        (
            "JWE RSA-OAEP-256 / A256GCM".into(),
            format!(
                "{}.{}.{}.{}.{}",
                b64(json!({"alg": "RSA-OAEP-256", "enc": "A256GCM", "kid": kid}).to_string()),
                random_b64(256),
                random_b64(12),
                random_b64(300),
                random_b64(16),
            ),
        ),
        (
            "JWE dir with an empty encrypted key".into(),
            format!(
                "{}..{}.{}.{}",
                b64(json!({"alg": "dir", "enc": "A128CBC-HS256", "kid": kid}).to_string()),
                random_b64(16),
                random_b64(300),
                random_b64(16),
            ),
        ),
        (
            "JWE wrapping a nested JWT (cty JWT)".into(),
            format!(
                "{}.{}.{}.{}.{}",
                b64(
                    json!({"alg": "RSA-OAEP", "enc": "A256GCM", "cty": "JWT", "kid": kid})
                        .to_string()
                ),
                random_b64(256),
                random_b64(12),
                b64(&inner),
                random_b64(16),
            ),
        ),
        (
            "a valid JWS followed by two more parts".into(),
            format!("{ih}.{ip}.{is}.{}.{}", random_b64(12), random_b64(16)),
        ),
        (
            "a valid JWS with two empty parts inserted".into(),
            format!("{ih}...{ip}.{is}"),
        ),
    ]
    .into_iter()
    .map(|(what, token)| (what, token, Reason::Malformed))
    .collect();
    // A JWS whose payload is the inner token's payload, but header says it is nested.
    cases.push((
        "cty JWT over ordinary claims, alg HS256".into(),
        sign_raw(
            &key,
            &nested_header("JWT", "HS256", &kid),
            &Value::Object(h.claims(TokenVersion::V2)).to_string(),
        ),
        Reason::AlgNotAllowed,
    ));
    refuse_all(&h, &cases).await;
    assert_eq!(h.echo.requests(), 0);
    accepted(&h, &inner, "the inner token on its own").await;
}

// ---------------------------------------------------------------------------------------------
// Duplicate JSON members (`validation` covers a duplicate `aud` and `alg`)
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn duplicate_members_in_header_or_payload_are_refused_as_malformed() {
    let h = Harness::start().await;
    let key = h.issuer.signing_key();
    let kid = key.kid.clone();
    let header = header_text(&kid);
    let t = now();

    let mut cases: Vec<(String, String, Reason)> = Vec::new();
    // Header: every member the gateway reads, with the same and with a different value, and
    // spelled with a JSON escape (the same name after decoding).
    for (what, member) in [
        ("kid twice, same value", format!("\"kid\":{}", json!(kid))),
        ("kid twice, unknown first", "\"kid\":\"unknown\"".to_owned()),
        ("alg twice, same value", "\"alg\":\"RS256\"".to_owned()),
        ("alg twice, HS256 first", "\"alg\":\"HS256\"".to_owned()),
        ("typ twice", "\"typ\":\"at+jwt\"".to_owned()),
        ("crit twice", "\"crit\":null".to_owned()),
        (
            "kid escaped as \\u006bid",
            format!("\"\\u006bid\":{}", json!(kid)),
        ),
        (
            "alg escaped as \\u0061lg",
            "\"\\u0061lg\":\"none\"".to_owned(),
        ),
    ] {
        let text = if what == "crit twice" {
            // crit appears twice (both null): only the duplication can refuse it.
            prepend_member(&prepend_member(&header, &member), &member)
        } else {
            prepend_member(&header, &member)
        };
        let claims = Value::Object(unique_claims(&h, TokenVersion::V2)).to_string();
        cases.push((
            format!("header: {what}"),
            sign_raw(&key, &text, &claims),
            Reason::Malformed,
        ));
    }

    // Payload: every claim the gateway reads, duplicated with the same value (only the
    // duplication is wrong) and, for the ones that decide, with a value that would pass where
    // the original fails or the other way round.
    for version in [TokenVersion::V1, TokenVersion::V2] {
        let claims = unique_claims(&h, version);
        let text = Value::Object(claims.clone()).to_string();
        for (name, value) in &claims {
            cases.push((
                format!("payload ({}): {name} twice, same value", version.claim()),
                sign_raw(
                    &key,
                    &header,
                    &prepend_member(&text, &format!("{}:{value}", json!(name))),
                ),
                Reason::Malformed,
            ));
        }
    }
    let claims = with(
        unique_claims(&h, TokenVersion::V2),
        "roles",
        json!(["Reader"]),
    );
    let text = Value::Object(claims).to_string();
    for (what, member) in [
        (
            "iss of another tenant first",
            format!(
                "\"iss\":{}",
                json!(h.issuer.issuer(TokenVersion::V2, OTHER_TENANT))
            ),
        ),
        ("exp in the past first", format!("\"exp\":{}", t - 7200)),
        ("nbf in the future first", format!("\"nbf\":{}", t + 7200)),
        (
            "tid of another tenant first",
            format!("\"tid\":\"{OTHER_TENANT}\""),
        ),
        ("ver 1.0 first", "\"ver\":\"1.0\"".to_owned()),
        (
            "azp of another client first",
            "\"azp\":\"0f1e2d3c-4b5a-4987-a654-3210fedcba98\"".to_owned(),
        ),
        ("scp admin first", "\"scp\":\"admin\"".to_owned()),
        ("roles Admin first", "\"roles\":[\"Admin\"]".to_owned()),
        (
            "oid of someone else first",
            "\"oid\":\"ffffffff-ffff-4fff-bfff-ffffffffffff\"".to_owned(),
        ),
        (
            "iss escaped as \\u0069ss",
            format!(
                "\"\\u0069ss\":{}",
                json!(h.issuer.issuer(TokenVersion::V2, OTHER_TENANT))
            ),
        ),
        (
            "aud escaped as a\\u0075d",
            "\"a\\u0075d\":\"https://other-api.example\"".to_owned(),
        ),
        (
            "exp escaped as \\u0065\\u0078\\u0070",
            format!("\"\\u0065\\u0078\\u0070\":{}", t - 7200),
        ),
        // A claim the gateway does not read: still one JSON text, two meanings.
        (
            "groups twice",
            "\"groups\":[\"a\"],\"groups\":[\"b\"]".to_owned(),
        ),
    ] {
        cases.push((
            format!("payload: {what}"),
            sign_raw(&key, &header, &prepend_member(&text, &member)),
            Reason::Malformed,
        ));
    }
    refuse_all(&h, &cases).await;
    assert_eq!(h.echo.requests(), 0);

    // The same raw construction without a duplicate passes.
    let text = Value::Object(unique_claims(&h, TokenVersion::V2)).to_string();
    accepted(&h, &sign_raw(&key, &header, &text), "raw control").await;
}
