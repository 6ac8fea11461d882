//! Token validation through real sockets (SPEC §3-4): v1 and v2 tokens accepted with the
//! verified identity passed upstream, client-sent identity headers replaced, and one test per
//! refusal reason, each checked on the wire (status, challenge, body), at the upstream (never
//! reached) and in the admin `/metrics` text (exactly that reason counted).
//!
//! Every token is minted at run time by the embedded issuer or built here from its parts.

use crate::common;

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::metrics::{allowed, assert_only_denials, denials};
use common::tokens::{b64, parts, sign_raw, with};
use common::verdicts::{PATH, accepted, refused, refused_with};
use common::{API_CLIENT_ID, AUDIENCE, Extra, Harness, TENANT, echoed_authorization, now};
use entragate::dev::{DevIssuer, POWER_QUERY_CLIENT_ID, SigningKey, sign_jwt};
use entragate::keys::TokenVersion;
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

// ---------------------------------------------------------------------------------------------
// Observing the gateway
// ---------------------------------------------------------------------------------------------

/// The `X-Auth-*` headers the upstream received.
fn identity(seen: &Value) -> BTreeMap<String, String> {
    seen["headers"]
        .as_object()
        .expect("headers object")
        .iter()
        .filter(|(k, _)| k.starts_with("x-auth-"))
        .map(|(k, v)| (k.clone(), v.as_str().expect("string header").to_owned()))
        .collect()
}

fn expected_identity(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// 1. Accepted tokens and the identity passed upstream
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn v1_token_is_accepted_and_upstream_sees_oid_tid_appid_scp_roles_upn() {
    let h = Harness::start().await;
    let mut claims = h.claims(TokenVersion::V1);
    claims.insert("oid".into(), json!("3f2504e0-4f89-41d3-9a0c-0305e82c3301"));
    claims.insert("scp".into(), json!("user_impersonation aql.read"));
    claims.insert("roles".into(), json!(["AQL.Read.All", "EHR.Write"]));
    claims.insert("upn".into(), json!("adele.v1@contoso.example"));
    claims.insert("unique_name".into(), json!("not-the-upn@contoso.example"));
    let token = h.issuer.mint(&claims);

    let seen = accepted(&h, &token, "v1").await;
    assert_eq!(
        identity(&seen),
        expected_identity(&[
            ("x-auth-subject", "3f2504e0-4f89-41d3-9a0c-0305e82c3301"),
            ("x-auth-tenant", TENANT),
            ("x-auth-client", POWER_QUERY_CLIENT_ID),
            ("x-auth-scopes", "user_impersonation aql.read"),
            ("x-auth-roles", "AQL.Read.All,EHR.Write"),
            ("x-auth-name", "adele.v1@contoso.example"),
        ])
    );
    // upstream.authorization defaults to "forward": the same credential, unchanged.
    assert_eq!(
        seen["headers"]["authorization"],
        echoed_authorization(&format!("Bearer {token}")).as_str()
    );
    assert_eq!(allowed(&h).await, 1);
    assert_only_denials(&h, "missing_token", 0).await;
}

#[tokio::test]
async fn v2_token_is_accepted_and_upstream_sees_oid_tid_azp_scp_roles_preferred_username() {
    let h = Harness::start().await;
    let mut claims = h.claims(TokenVersion::V2);
    claims.insert("oid".into(), json!("6ba7b810-9dad-41d1-80b4-00c04fd430c8"));
    claims.insert("azp".into(), json!(OTHER_CLIENT));
    claims.insert("scp".into(), json!("user_impersonation"));
    claims.insert("roles".into(), json!(["AQL.Read.All"]));
    claims.insert(
        "preferred_username".into(),
        json!("adele.v2@contoso.example"),
    );
    let token = h.issuer.mint(&claims);

    let seen = accepted(&h, &token, "v2").await;
    assert_eq!(
        identity(&seen),
        expected_identity(&[
            ("x-auth-subject", "6ba7b810-9dad-41d1-80b4-00c04fd430c8"),
            ("x-auth-tenant", TENANT),
            ("x-auth-client", OTHER_CLIENT),
            ("x-auth-scopes", "user_impersonation"),
            ("x-auth-roles", "AQL.Read.All"),
            ("x-auth-name", "adele.v2@contoso.example"),
        ])
    );
    assert_eq!(
        seen["headers"]["authorization"],
        echoed_authorization(&format!("Bearer {token}")).as_str()
    );
    assert_eq!(allowed(&h).await, 1);
    assert_only_denials(&h, "missing_token", 0).await;
}

#[tokio::test]
async fn token_without_roles_sends_no_roles_header() {
    let h = Harness::start().await;
    for version in [TokenVersion::V1, TokenVersion::V2] {
        let claims = h.claims(version);
        assert!(!claims.contains_key("roles"));
        let seen = accepted(&h, &h.issuer.mint(&claims), version.claim()).await;
        let ids = identity(&seen);
        assert!(!ids.contains_key("x-auth-roles"), "{ids:?}");
        assert_eq!(
            ids["x-auth-subject"],
            "00000000-0000-4000-8000-00000000a11e"
        );
        assert_eq!(ids["x-auth-client"], POWER_QUERY_CLIENT_ID);
        assert_eq!(ids.len(), 5, "{ids:?}");
    }
    assert_eq!(allowed(&h).await, 2);
}

// ---------------------------------------------------------------------------------------------
// 2. Client-sent identity headers
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn client_sent_x_auth_headers_are_replaced_by_the_verified_identity() {
    let h = Harness::start().await;
    for version in [TokenVersion::V1, TokenVersion::V2] {
        // No roles in the token: a spoofed X-Auth-Roles must vanish, not survive.
        let token = h.token(version);
        let r = h
            .client
            .get(h.url(PATH))
            .header("authorization", format!("Bearer {token}"))
            .header("x-auth-subject", "spoofed-admin")
            .header("x-auth-subject", "spoofed-twice")
            .header("X-Auth-Tenant", OTHER_TENANT)
            .header("x-auth-client", OTHER_CLIENT)
            .header("x-auth-scopes", "everything")
            .header("x-auth-roles", "Admin,Superuser")
            .header("X-AUTH-NAME", "root@contoso.example")
            .header("x-auth-anything", "surprise")
            .header("x-authz-unrelated", "kept")
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 200, "{}", version.claim());
        let seen: Value = r.json().await.expect("echo json");
        assert_eq!(
            identity(&seen),
            expected_identity(&[
                ("x-auth-subject", "00000000-0000-4000-8000-00000000a11e"),
                ("x-auth-tenant", TENANT),
                ("x-auth-client", POWER_QUERY_CLIENT_ID),
                ("x-auth-scopes", "user_impersonation"),
                ("x-auth-name", "adele@contoso.example"),
            ]),
            "{}",
            version.claim()
        );
        // Only the X-Auth-* family is reserved.
        assert_eq!(seen["headers"]["x-authz-unrelated"], "kept");
    }
    assert_eq!(h.echo.requests(), 2);
}

// ---------------------------------------------------------------------------------------------
// 3. One test per refusal reason
// ---------------------------------------------------------------------------------------------

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

#[tokio::test]
async fn token_expired_beyond_clock_skew_is_refused_as_expired() {
    let h = Harness::start().await;
    let t = now();
    for (what, version, exp) in [
        ("v1, exp 2 min ago", TokenVersion::V1, t - 120),
        ("v2, exp 2 min ago", TokenVersion::V2, t - 120),
        ("v2, exp 1 h ago", TokenVersion::V2, t - 3600),
    ] {
        let claims = with(
            with(h.claims(version), "exp", json!(exp)),
            "nbf",
            json!(exp - 3600),
        );
        refused(&h, &h.issuer.mint(&claims), what).await;
    }
    assert_eq!(h.echo.requests(), 0);
    assert_only_denials(&h, "expired", 3).await;
}

#[tokio::test]
async fn token_expired_or_not_yet_valid_within_clock_skew_is_accepted() {
    let h = Harness::start().await;
    let t = now();
    for version in [TokenVersion::V1, TokenVersion::V2] {
        let expired_30s = with(
            with(h.claims(version), "exp", json!(t - 30)),
            "nbf",
            json!(t - 3600),
        );
        accepted(&h, &h.issuer.mint(&expired_30s), "exp 30 s ago").await;
        let nbf_in_30s = with(h.claims(version), "nbf", json!(t + 30));
        accepted(&h, &h.issuer.mint(&nbf_in_30s), "nbf in 30 s").await;
    }
    assert_eq!(h.echo.requests(), 4);
    assert_eq!(allowed(&h).await, 4);
    assert_only_denials(&h, "expired", 0).await;
}

#[tokio::test]
async fn token_with_nbf_beyond_clock_skew_is_refused_as_not_yet_valid() {
    let h = Harness::start().await;
    let t = now();
    for version in [TokenVersion::V1, TokenVersion::V2] {
        let claims = with(h.claims(version), "nbf", json!(t + 300));
        refused(&h, &h.issuer.mint(&claims), "nbf in 5 min").await;
    }
    assert_eq!(h.echo.requests(), 0);
    assert_only_denials(&h, "not_yet_valid", 2).await;
}

#[tokio::test]
async fn foreign_or_inconsistent_issuer_is_refused_as_issuer_mismatch() {
    let h = Harness::start().await;
    let other_v1 = with(
        with(
            h.claims(TokenVersion::V1),
            "iss",
            json!(format!("https://sts.windows.net/{OTHER_TENANT}/")),
        ),
        "tid",
        json!(OTHER_TENANT),
    );
    let other_v2 = with(
        with(
            h.claims(TokenVersion::V2),
            "iss",
            json!(h.issuer.issuer(TokenVersion::V2, OTHER_TENANT)),
        ),
        "tid",
        json!(OTHER_TENANT),
    );
    // Our tenant's v2 issuer, but the token says it is a v1 token.
    let v2_iss_v1_ver = with(h.claims(TokenVersion::V2), "ver", json!("1.0"));
    // Our tenant's v1 issuer, but the token says it is a v2 token.
    let v1_iss_v2_ver = with(h.claims(TokenVersion::V1), "ver", json!("2.0"));
    // Our tenant, without the v1 issuer's trailing slash.
    let no_slash = with(
        h.claims(TokenVersion::V1),
        "iss",
        json!(format!("https://sts.windows.net/{TENANT}")),
    );
    for (what, claims) in [
        ("other tenant's v1 issuer", &other_v1),
        ("other tenant's v2 issuer", &other_v2),
        ("v2 issuer with ver 1.0", &v2_iss_v1_ver),
        ("v1 issuer with ver 2.0", &v1_iss_v2_ver),
        ("v1 issuer without trailing slash", &no_slash),
    ] {
        refused(&h, &h.issuer.mint(claims), what).await;
    }
    assert_eq!(h.echo.requests(), 0);
    assert_only_denials(&h, "issuer_mismatch", 5).await;
}

#[tokio::test]
async fn token_for_another_audience_is_refused_as_audience_mismatch() {
    let h = Harness::start().await;
    for (what, version, aud) in [
        (
            "another API",
            TokenVersion::V1,
            json!("https://other-api.example"),
        ),
        (
            "look-alike host",
            TokenVersion::V1,
            json!("https://api.contoso.example.attacker.test"),
        ),
        (
            "http instead of https",
            TokenVersion::V1,
            json!("http://api.contoso.example"),
        ),
        (
            "Microsoft Graph",
            TokenVersion::V2,
            json!("00000003-0000-0000-c000-000000000000"),
        ),
        (
            "another app's client ID",
            TokenVersion::V2,
            json!(OTHER_CLIENT),
        ),
        (
            "array of other audiences",
            TokenVersion::V2,
            json!(["https://other-api.example", OTHER_CLIENT]),
        ),
    ] {
        let claims = with(h.claims(version), "aud", aud);
        refused(&h, &h.issuer.mint(&claims), what).await;
    }
    assert_eq!(h.echo.requests(), 0);
    assert_only_denials(&h, "audience_mismatch", 6).await;
}

#[tokio::test]
async fn audience_with_trailing_slash_and_v2_client_id_audience_are_accepted() {
    let h = Harness::start().await;
    for (what, version, aud) in [
        ("App ID URI", TokenVersion::V1, json!(AUDIENCE)),
        (
            "App ID URI with trailing slash",
            TokenVersion::V1,
            json!(format!("{AUDIENCE}/")),
        ),
        ("v2 client ID", TokenVersion::V2, json!(API_CLIENT_ID)),
        (
            "array holding the client ID",
            TokenVersion::V2,
            json!(["https://other-api.example", API_CLIENT_ID]),
        ),
    ] {
        let claims = with(h.claims(version), "aud", aud);
        accepted(&h, &h.issuer.mint(&claims), what).await;
    }
    assert_eq!(allowed(&h).await, 4);
    assert_only_denials(&h, "audience_mismatch", 0).await;
}

fn multi_tenant(allowed: &str) -> Extra {
    Extra {
        tenant_id: Some("organizations".into()),
        entra: format!("allowed_tenants = [\"{allowed}\"]"),
        ..Default::default()
    }
}

#[tokio::test]
async fn multi_tenant_token_from_unlisted_tenant_is_refused_as_tenant_not_allowed() {
    let h = Harness::start_with(multi_tenant(OTHER_TENANT)).await;
    for version in [TokenVersion::V1, TokenVersion::V2] {
        // A genuine token of TENANT: the `{tenantid}` issuer template matches, tid is not allowed.
        refused_with(
            &h,
            "organizations",
            &format!("Bearer {}", h.token(version)),
            &format!("{} token of an unlisted tenant", version.claim()),
        )
        .await;
    }
    assert_eq!(h.echo.requests(), 0);
    assert_only_denials(&h, "tenant_not_allowed", 2).await;
}

#[tokio::test]
async fn multi_tenant_token_from_listed_tenant_is_accepted() {
    let h = Harness::start_with(multi_tenant(TENANT)).await;
    for version in [TokenVersion::V1, TokenVersion::V2] {
        let seen = accepted(&h, &h.token(version), version.claim()).await;
        assert_eq!(seen["headers"]["x-auth-tenant"], TENANT);
    }
    assert_eq!(allowed(&h).await, 2);
    assert_only_denials(&h, "tenant_not_allowed", 0).await;
}

#[tokio::test]
async fn token_of_unlisted_client_is_refused_as_client_not_allowed() {
    let h = Harness::start_with(Extra {
        entra: format!("allowed_client_ids = [\"{OTHER_CLIENT}\"]"),
        ..Default::default()
    })
    .await;
    // Power Query's appid (v1) / azp (v2) is not the listed client.
    for version in [TokenVersion::V1, TokenVersion::V2] {
        refused(&h, &h.token(version), version.claim()).await;
    }
    // A token naming no client at all.
    let no_client = without(h.claims(TokenVersion::V1), "appid");
    refused(&h, &h.issuer.mint(&no_client), "no appid").await;
    assert_eq!(h.echo.requests(), 0);
    assert_only_denials(&h, "client_not_allowed", 3).await;
}

#[tokio::test]
async fn token_of_listed_client_is_accepted() {
    let h = Harness::start_with(Extra {
        entra: format!("allowed_client_ids = [\"{OTHER_CLIENT}\", \"{POWER_QUERY_CLIENT_ID}\"]"),
        ..Default::default()
    })
    .await;
    for version in [TokenVersion::V1, TokenVersion::V2] {
        let seen = accepted(&h, &h.token(version), version.claim()).await;
        assert_eq!(seen["headers"]["x-auth-client"], POWER_QUERY_CLIENT_ID);
    }
    let v2_other = with(h.claims(TokenVersion::V2), "azp", json!(OTHER_CLIENT));
    let seen = accepted(&h, &h.issuer.mint(&v2_other), "other listed client").await;
    assert_eq!(seen["headers"]["x-auth-client"], OTHER_CLIENT);
    assert_eq!(allowed(&h).await, 3);
    assert_only_denials(&h, "client_not_allowed", 0).await;
}

#[tokio::test]
async fn unreachable_authority_answers_503_with_retry_after_as_keys_unavailable() {
    // The authority is a port that nothing listens on; both key sources have tried and failed.
    let (h, _) = Harness::start_without_keys(Extra::default()).await;
    for i in &h.gw.keys().issuers {
        assert!(i.source.metrics.fetches() > 0, "{} tried", i.source.name);
        assert_eq!(
            i.source.metrics.age_seconds(),
            None,
            "{} never fetched successfully",
            i.source.name
        );
    }
    assert!(!h.gw.keys().is_ready());

    for version in [TokenVersion::V1, TokenVersion::V2] {
        let r = h.get_with_token(PATH, &h.token(version)).await;
        assert_eq!(r.status(), 503, "{}", version.claim());
        let retry_after = r
            .headers()
            .get("retry-after")
            .expect("Retry-After")
            .to_str()
            .expect("ascii")
            .parse::<u64>()
            .expect("delay-seconds");
        assert!(retry_after > 0);
        assert_eq!(r.headers()["content-type"], "application/json");
        assert_eq!(
            r.text().await.expect("body"),
            r#"{"error":"temporarily_unavailable"}"#
        );
    }
    assert_eq!(h.echo.requests(), 0);
    assert_only_denials(&h, "keys_unavailable", 2).await;
}

// ---------------------------------------------------------------------------------------------
// 4. Keys named by the token itself are ignored
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn keys_named_by_the_token_jwk_jku_x5u_x5c_are_ignored() {
    let h = Harness::start().await;
    let published_kid = h.issuer.signing_key().kid.clone();
    let gateway_jwks_before = h.issuer.jwks_fetches();

    // The attacker runs an issuer of their own: its key signs, its JWKS is reachable.
    let attacker = DevIssuer::start(common::loopback(), TENANT)
        .await
        .expect("attacker issuer");
    let attacker_key = attacker.signing_key();
    let attacker_jwks_url = format!("{}/{TENANT}/discovery/keys", attacker.authority());
    let attacker_jwks = jwks(&h, &attacker, TENANT).await;
    let attacker_jwk = attacker_jwks["keys"][0].clone();
    assert_eq!(attacker_jwk["kid"], attacker_key.kid.as_str());
    assert_ne!(attacker_key.kid, published_kid);
    let attacker_cert = attacker_jwk["x5c"][0].clone();
    let public_jwk = json!({
        "kty": "RSA",
        "n": attacker_jwk["n"],
        "e": attacker_jwk["e"],
    });
    assert_eq!(attacker.jwks_fetches(), 1);

    let named = [
        ("jwk", json!({"jwk": public_jwk})),
        ("jku", json!({"jku": attacker_jwks_url})),
        ("x5u", json!({"x5u": attacker_jwks_url})),
        ("x5c", json!({"x5c": [attacker_cert]})),
        (
            "all of them",
            json!({"jwk": public_jwk, "jku": attacker_jwks_url, "x5u": attacker_jwks_url, "x5c": [attacker_cert]}),
        ),
    ];
    let mut bad_signature = 0;
    let mut unknown_kid = 0;
    for (what, extra) in &named {
        for (kid_what, kid) in [
            ("published kid", json!(published_kid)),
            ("attacker's kid", json!(attacker_key.kid)),
        ] {
            for version in [TokenVersion::V1, TokenVersion::V2] {
                let mut hdr = json!({"typ": "JWT", "alg": "RS256", "kid": kid});
                if let (Some(obj), Some(more)) = (hdr.as_object_mut(), extra.as_object()) {
                    for (k, v) in more {
                        obj.insert(k.clone(), v.clone());
                    }
                }
                let token = sign_jwt(&attacker_key, &hdr, &Value::Object(h.claims(version)));
                refused(
                    &h,
                    &token,
                    &format!("{what} + {kid_what} ({})", version.claim()),
                )
                .await;
            }
            if kid_what == "published kid" {
                bad_signature += 2;
            } else {
                unknown_kid += 2;
            }
        }
    }

    let counts = denials(&h).await;
    assert_eq!(counts["bad_signature"], bad_signature);
    assert_eq!(counts["unknown_kid"], unknown_kid);
    assert_eq!(
        counts.values().sum::<u64>(),
        bad_signature + unknown_kid,
        "{counts:?}"
    );
    assert_eq!(h.echo.requests(), 0);
    // The gateway fetched neither the URLs in the tokens nor its own keys again.
    assert_eq!(attacker.jwks_fetches(), 1, "jku/x5u never fetched");
    assert_eq!(attacker.metadata_fetches(), 0);
    assert_eq!(h.issuer.jwks_fetches(), gateway_jwks_before);
}
