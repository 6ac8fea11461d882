//! One test per refusal of a token's form, header or signature: `malformed`,
//! `alg_not_allowed`, `unsupported_crit`, `missing_claim`, `bad_signature`, `unknown_kid`.

use crate::common;

use std::time::Duration;

use super::{header, jwks, signed, without};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::metrics::assert_only_denials;
use common::tokens::{b64, parts, sign_raw, with};
use common::verdicts::{accepted, refused};
use common::{Harness, TENANT, now};
use entragate::dev::{SigningKey, sign_jwt};
use entragate::keys::TokenVersion;
use serde_json::{Value, json};

#[tokio::test]
async fn malformed_tokens_are_refused_as_malformed() {
    let h = Harness::start().await;
    let key = h.issuer.signing_key();
    let good = h.token(TokenVersion::V1);
    let (hp, pp, sp) = parts(&good);
    let header_json = header(&h, &json!({})).to_string();
    let claims_json = Value::Object(h.claims(TokenVersion::V1)).to_string();

    // base64url of a length no encoder produces (4n+1 characters).
    let mut bad_len = pp.to_owned();
    while bad_len.len() % 4 != 1 {
        bad_len.push('A');
    }
    let cases: Vec<(&str, String)> = vec![
        ("two parts", format!("{hp}.{pp}")),
        ("four parts", format!("{good}.{sp}")),
        ("empty payload", format!("{hp}..{sp}")),
        (
            "'+' is base64, not base64url",
            format!("+{}.{pp}.{sp}", &hp[1..]),
        ),
        ("payload of 4n+1 characters", format!("{hp}.{bad_len}.{sp}")),
        (
            "header is not JSON",
            sign_raw(&key, "{\"alg\":\"RS256\",", &claims_json),
        ),
        (
            "payload is not JSON",
            sign_raw(&key, &header_json, "{\"aud\""),
        ),
        (
            "payload is not an object",
            sign_raw(&key, &header_json, "[1]"),
        ),
        (
            "exp as a string",
            signed(
                &h,
                &header(&h, &json!({})),
                &with(
                    h.claims(TokenVersion::V1),
                    "exp",
                    json!((now() + 3600).to_string()),
                ),
            ),
        ),
        (
            "aud as a number",
            signed(
                &h,
                &header(&h, &json!({})),
                &with(h.claims(TokenVersion::V2), "aud", json!(5)),
            ),
        ),
        (
            "duplicate aud member",
            sign_raw(
                &key,
                &header_json,
                &format!(
                    "{{\"aud\":\"https://other-api.example\",{}",
                    &claims_json[1..]
                ),
            ),
        ),
        (
            "duplicate alg member",
            sign_raw(
                &key,
                &format!("{{\"alg\":\"none\",{}", &header_json[1..]),
                &claims_json,
            ),
        ),
        ("not a b64token", format!("{hp}.{pp}.{sp}!")),
    ];
    let n = u64::try_from(cases.len()).expect("count");
    for (what, token) in &cases {
        refused(&h, token, what).await;
    }
    assert_eq!(h.echo.requests(), 0);
    assert_only_denials(&h, "malformed", n).await;
}

#[tokio::test]
async fn alg_none_with_a_signature_hmac_and_unlisted_rsa_algorithms_are_refused_as_alg_not_allowed()
{
    let h = Harness::start().await;
    let key = h.issuer.signing_key();
    let claims = Value::Object(h.claims(TokenVersion::V1)).to_string();

    // `none` in any spelling, carrying a real RS256 signature over the same input.
    let mut cases: Vec<(String, String)> = ["none", "None", "NONE"]
        .iter()
        .map(|alg| {
            let hdr = header(&h, &json!({"alg": alg})).to_string();
            let input = format!("{}.{}", b64(&hdr), b64(&claims));
            let sig = key.sign("RS256", input.as_bytes()).expect("signature");
            (
                format!("alg {alg} with a signature"),
                format!("{input}.{}", b64(sig)),
            )
        })
        .collect();

    // The key-confusion attack: HS256 keyed with the RSA public key as published (JWK `n`).
    let published = jwks(&h, &h.issuer, TENANT).await;
    let n = published["keys"][0]["n"].as_str().expect("published n");
    assert_eq!(published["keys"][0]["kid"], key.kid.as_str());
    for (alg, hmac) in [
        ("HS256", aws_lc_rs::hmac::HMAC_SHA256),
        ("HS512", aws_lc_rs::hmac::HMAC_SHA512),
    ] {
        let hdr = header(&h, &json!({"alg": alg})).to_string();
        let input = format!("{}.{}", b64(&hdr), b64(&claims));
        let tag = aws_lc_rs::hmac::sign(
            &aws_lc_rs::hmac::Key::new(hmac, n.as_bytes()),
            input.as_bytes(),
        );
        cases.push((
            format!("{alg} keyed with the JWK n"),
            format!("{input}.{}", b64(tag.as_ref())),
        ));
    }

    // Correctly signed with the published key, but with algorithms not in entra.algorithms.
    for alg in ["RS512", "PS256"] {
        let token = signed(
            &h,
            &header(&h, &json!({"alg": alg})),
            &h.claims(TokenVersion::V2),
        );
        assert!(!parts(&token).2.is_empty(), "{alg} was signed");
        cases.push((format!("{alg} (not configured)"), token));
    }

    let count = u64::try_from(cases.len()).expect("count");
    for (what, token) in &cases {
        refused(&h, token, what).await;
    }
    assert_eq!(h.echo.requests(), 0);
    assert_only_denials(&h, "alg_not_allowed", count).await;
}

#[tokio::test]
async fn unsigned_alg_none_token_is_refused_as_alg_not_allowed() {
    let h = Harness::start().await;
    // The textbook `alg: none` token: an empty third part (RFC 7519 §6.1 Unsecured JWT).
    for claims in [h.claims(TokenVersion::V1), h.claims(TokenVersion::V2)] {
        let token = signed(&h, &header(&h, &json!({"alg": "none"})), &claims);
        assert!(token.ends_with('.'), "an unsecured JWS has no signature");
        refused(&h, &token, "alg none, empty signature").await;
    }
    assert_eq!(h.echo.requests(), 0);
    assert_only_denials(&h, "alg_not_allowed", 2).await;
}

#[tokio::test]
async fn crit_header_is_refused_as_unsupported_crit() {
    let h = Harness::start().await;
    let cases = [
        ("crit exp", json!({"crit": ["exp"], "exp": now() + 3600})),
        ("crit b64=false", json!({"crit": ["b64"], "b64": false})),
    ];
    for (what, extra) in &cases {
        let token = signed(&h, &header(&h, extra), &h.claims(TokenVersion::V2));
        refused(&h, &token, what).await;
    }
    assert_eq!(h.echo.requests(), 0);
    assert_only_denials(&h, "unsupported_crit", 2).await;
}

#[tokio::test]
async fn token_without_exp_aud_or_iss_is_refused_as_missing_claim() {
    let h = Harness::start().await;
    let hdr = header(&h, &json!({}));
    for (what, claims) in [
        ("no exp", without(h.claims(TokenVersion::V1), "exp")),
        ("no aud", without(h.claims(TokenVersion::V1), "aud")),
        ("no aud (v2)", without(h.claims(TokenVersion::V2), "aud")),
        ("no iss", without(h.claims(TokenVersion::V2), "iss")),
    ] {
        refused(&h, &signed(&h, &hdr, &claims), what).await;
    }
    assert_eq!(h.echo.requests(), 0);
    assert_only_denials(&h, "missing_claim", 4).await;
}

#[tokio::test]
async fn tampered_or_foreign_signatures_are_refused_as_bad_signature() {
    let h = Harness::start().await;
    let published_kid = h.issuer.signing_key().kid.clone();

    // One bit of the signature flipped.
    let good = h.token(TokenVersion::V1);
    let (hp, pp, sp) = parts(&good);
    let mut sig = URL_SAFE_NO_PAD.decode(sp).expect("signature base64");
    let middle = sig.len() / 2;
    sig[middle] ^= 0x01;
    let flipped = format!("{hp}.{pp}.{}", b64(&sig));

    // The claims changed after signing (a different oid), signature kept.
    let mut claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(pp).expect("payload")).expect("claims json");
    claims["oid"] = json!("ffffffff-ffff-4fff-bfff-ffffffffffff");
    let tampered = format!("{hp}.{}.{sp}", b64(claims.to_string()));

    // Signed by another RSA key, under the published kid.
    let attacker = SigningKey::generate();
    let foreign: Vec<String> = [TokenVersion::V1, TokenVersion::V2]
        .into_iter()
        .map(|v| {
            sign_jwt(
                &attacker,
                &json!({"typ": "JWT", "alg": "RS256", "kid": published_kid}),
                &Value::Object(h.claims(v)),
            )
        })
        .collect();

    refused(&h, &flipped, "one signature bit flipped").await;
    refused(&h, &format!("{hp}.{pp}."), "signature removed").await;
    refused(&h, &tampered, "claims changed after signing").await;
    refused(&h, &foreign[0], "another key, published kid (v1)").await;
    refused(&h, &foreign[1], "another key, published kid (v2)").await;
    assert_eq!(h.echo.requests(), 0);
    assert_only_denials(&h, "bad_signature", 5).await;

    // The untouched original is still good: the refusals were about the signature.
    accepted(&h, &good, "original").await;
}

#[tokio::test]
async fn unpublished_kid_is_refused_as_unknown_kid_at_once_within_min_refetch() {
    let h = Harness::start().await;
    let metadata_before = h.issuer.metadata_fetches();
    let jwks_before = h.issuer.jwks_fetches();
    assert_eq!((metadata_before, jwks_before), (2, 2), "v1 + v2 at startup");

    let key = h.issuer.signing_key();
    let cases = [
        (
            "kid not published (v1)",
            signed(
                &h,
                &header(
                    &h,
                    &json!({"kid": "kid-never-published", "x5t": "kid-never-published"}),
                ),
                &h.claims(TokenVersion::V1),
            ),
        ),
        (
            "kid not published (v2)",
            signed(
                &h,
                &header(&h, &json!({"kid": format!("{}x", key.kid)})),
                &h.claims(TokenVersion::V2),
            ),
        ),
        (
            "empty kid",
            signed(
                &h,
                &header(&h, &json!({"kid": ""})),
                &h.claims(TokenVersion::V2),
            ),
        ),
        (
            "no kid, only x5t of the published key",
            signed(
                &h,
                &json!({"typ": "JWT", "alg": "RS256", "x5t": key.kid}),
                &h.claims(TokenVersion::V1),
            ),
        ),
    ];
    let started = std::time::Instant::now();
    for (what, token) in &cases {
        refused(&h, token, what).await;
    }
    // jwks_min_refetch (5m) has not passed since startup's fetch: no refetch, no waiting.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refused without waiting: {:?}",
        started.elapsed()
    );
    assert_eq!(h.issuer.metadata_fetches(), metadata_before, "no refetch");
    assert_eq!(h.issuer.jwks_fetches(), jwks_before, "no refetch");
    assert_eq!(h.echo.requests(), 0);
    assert_only_denials(&h, "unknown_kid", 4).await;
}
