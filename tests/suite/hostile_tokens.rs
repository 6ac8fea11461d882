//! The hostile-token corpus of issue 6 item 1 that `validation.rs` does not already hold:
//! odd `kid` values and keys of another trusted issuer, nested JWTs and JWE shapes, duplicate
//! JSON members, odd NumericDates, non-canonical base64url, the same key used for another
//! issuer, and credentials under a scheme other than Bearer.
//!
//! Every token is built here at run time (nothing committed). Each refusal is checked on the
//! wire (401, the exact `invalid_token` challenge, the JSON body), at the upstream (never
//! reached) and in `/metrics` (exactly the expected reasons counted, nothing else). Tokens
//! are never printed: assertion messages name the case, not the token.

use crate::common;

use std::collections::BTreeMap;

use base64::Engine as _;
use common::metrics::{allowed, assert_denials};
use common::tokens::{b64, nonce, parts, sign_parts, sign_raw, signed, unique_claims, with};
use common::verdicts::{PATH, accepted, refused, refused_with};
use common::{AUDIENCE, Extra, Harness, TENANT, now};
use entragate::auth::Reason;
use entragate::dev::{DevIssuer, EchoUpstream, SigningKey};
use entragate::keys::TokenVersion;
use serde_json::{Value, json};

/// A tenant this gateway does not serve through `[entra]`.
const OTHER_TENANT: &str = "2b1c0d9e-8f7a-4b6c-9d5e-4f3a2b1c0d9e";
/// Base64url alphabet, in value order.
const B64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

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

/// JSON text of `claims` padded with blanks before the closing brace until its length is
/// `rem` modulo 3, so that its base64url form ends in a character with unused bits.
fn json_with_len_mod3(claims: &Value, rem: usize) -> String {
    let mut text = claims.to_string();
    while text.len() % 3 != rem {
        text.insert(text.len() - 1, ' ');
    }
    text
}

/// The same base64url text with the unused low bits of its last character set: it decodes
/// to the same bytes in a lenient decoder, and is refused by a strict one.
fn with_trailing_bits(canonical: &str) -> String {
    let spare_bits = match canonical.len() % 4 {
        2 => 4,
        3 => 2,
        _ => panic!(
            "no unused bits in a base64url string of length {}",
            canonical.len()
        ),
    };
    let last = *canonical.as_bytes().last().expect("non-empty");
    let value = B64URL.iter().position(|c| *c == last).expect("base64url");
    assert_eq!(value % (1 << spare_bits), 0, "canonical input");
    let mut out = canonical[..canonical.len() - 1].to_owned();
    out.push(char::from(B64URL[value | 1]));
    assert_ne!(out, canonical);
    out
}

// ---------------------------------------------------------------------------------------------
// Observing the gateway
// ---------------------------------------------------------------------------------------------

/// The 401 for no credential at all (SPEC §4: any scheme other than Bearer is treated like a
/// missing header): realm and authorization_uri, no error.
async fn refused_as_missing(h: &Harness, name: &str, value: &str, what: &str) {
    let before = h.echo.requests();
    let r = h
        .client
        .get(h.url(PATH))
        .header(name, value)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{what}: request failed: {e}"));
    assert_eq!(r.status(), 401, "{what}: status");
    let challenges: Vec<_> = r.headers().get_all("www-authenticate").iter().collect();
    assert_eq!(challenges.len(), 1, "{what}: one challenge");
    let authority = h.issuer.authority();
    assert_eq!(
        challenges[0].to_str().expect("ascii challenge"),
        format!(
            "Bearer realm={authority}/{TENANT}, authorization_uri={authority}/{TENANT}/oauth2/authorize"
        ),
        "{what}: challenge without error"
    );
    assert_eq!(h.echo.requests(), before, "{what}: upstream not reached");
}

/// Sends every case, each expected to be refused with `reason`, and checks the counters.
async fn refuse_all(h: &Harness, cases: &[(String, String, Reason)]) {
    let mut expected: BTreeMap<&str, u64> = BTreeMap::new();
    for (what, token, reason) in cases {
        refused(h, token, what).await;
        *expected.entry(reason.as_str()).or_default() += 1;
    }
    assert_denials(h, &expected).await;
}

// ---------------------------------------------------------------------------------------------
// 1. kid: very long, path- or URL-shaped, not a string
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn odd_kid_values_are_refused_and_nothing_they_name_is_fetched() {
    let h = Harness::start().await;
    let key = h.issuer.signing_key();
    let kid = key.kid.clone();
    let fetched_before = (h.issuer.metadata_fetches(), h.issuer.jwks_fetches());

    // An attacker's issuer, reachable: a URL-shaped kid must never make the gateway call it.
    let attacker = DevIssuer::start(common::loopback(), TENANT)
        .await
        .expect("attacker issuer");
    let attacker_jwks = format!("{}/{TENANT}/discovery/keys", attacker.authority());

    let upper = kid.to_ascii_uppercase();
    assert_ne!(upper, kid, "the published kid has lower-case letters");
    let string_kids: Vec<(&str, String)> = vec![
        ("10 KB kid", "k".repeat(10 * 1024)),
        (
            "10 KB kid starting with the published kid",
            format!("{kid}{}", "k".repeat(10 * 1024)),
        ),
        ("path traversal", "../../etc/passwd".to_owned()),
        ("absolute path", "/etc/passwd".to_owned()),
        (
            "percent-encoded traversal",
            "..%2F..%2Fetc%2Fpasswd".to_owned(),
        ),
        ("URL", "https://evil/x".to_owned()),
        ("file URL", "file:///etc/passwd".to_owned()),
        ("the attacker's JWKS URL", attacker_jwks.clone()),
        ("the attacker's kid", attacker.signing_key().kid.clone()),
        ("NUL inside", "k\u{0}id".to_owned()),
        ("published kid + NUL", format!("{kid}\u{0}")),
        ("published kid + blank", format!("{kid} ")),
        ("published kid + newline", format!("{kid}\n")),
        ("published kid, upper case", upper),
        (
            "CRLF and a fake log line",
            "x\r\nlevel=INFO msg=\"accepted\"".to_owned(),
        ),
    ];
    let mut cases: Vec<(String, String, Reason)> = Vec::new();
    for (what, value) in &string_kids {
        for version in [TokenVersion::V1, TokenVersion::V2] {
            cases.push((
                format!("{what} ({})", version.claim()),
                signed(
                    &key,
                    &header_with_kid(json!(value)),
                    &unique_claims(&h, version),
                ),
                Reason::UnknownKid,
            ));
        }
    }
    // Not a string at all: a kid that could be read as "the published one" by a lax parser.
    for (what, value, reason) in [
        ("kid null", json!(null), Reason::UnknownKid),
        ("kid number", json!(1), Reason::Malformed),
        (
            "kid array holding the published kid",
            json!([kid]),
            Reason::Malformed,
        ),
        (
            "kid object holding the published kid",
            json!({"kid": kid}),
            Reason::Malformed,
        ),
        ("kid true", json!(true), Reason::Malformed),
    ] {
        cases.push((
            what.to_owned(),
            signed(
                &key,
                &header_with_kid(value),
                &unique_claims(&h, TokenVersion::V2),
            ),
            reason,
        ));
    }
    refuse_all(&h, &cases).await;
    assert_eq!(h.echo.requests(), 0);

    // jwks_min_refetch (5m) had not passed: no refetch, and nothing the kids name was asked.
    assert_eq!(
        (h.issuer.metadata_fetches(), h.issuer.jwks_fetches()),
        fetched_before,
        "no key fetch"
    );
    assert_eq!(
        attacker.metadata_fetches(),
        0,
        "attacker metadata never fetched"
    );
    assert_eq!(attacker.jwks_fetches(), 0, "attacker JWKS never fetched");

    // The same construction with the published kid passes: the kid alone was the reason.
    accepted(
        &h,
        &signed(
            &key,
            &header_with_kid(json!(kid)),
            &unique_claims(&h, TokenVersion::V2),
        ),
        "published kid",
    )
    .await;
}

#[tokio::test]
async fn odd_kid_values_with_refetch_allowed_fetch_only_the_configured_keys() {
    // With no cooldown, an unknown kid refetches: from the configured issuer, nowhere else.
    let h = Harness::start_with(Extra {
        entra: "jwks_min_refetch = \"0s\"".into(),
        ..Default::default()
    })
    .await;
    let attacker = DevIssuer::start(common::loopback(), TENANT)
        .await
        .expect("attacker issuer");
    let key = h.issuer.signing_key();
    let jwks_before = h.issuer.jwks_fetches();
    let kids = [
        format!("{}/{TENANT}/discovery/keys", attacker.authority()),
        format!(
            "{}/{TENANT}/.well-known/openid-configuration",
            attacker.authority()
        ),
        "../../../../../../etc/passwd".to_owned(),
        "k".repeat(10 * 1024),
    ];
    let cases: Vec<(String, String, Reason)> = kids
        .iter()
        .enumerate()
        .map(|(i, k)| {
            (
                format!("odd kid #{i}"),
                signed(
                    &key,
                    &header_with_kid(json!(k)),
                    &unique_claims(&h, TokenVersion::V2),
                ),
                Reason::UnknownKid,
            )
        })
        .collect();
    refuse_all(&h, &cases).await;
    assert_eq!(
        h.issuer.jwks_fetches(),
        jwks_before + 4,
        "one refetch of the configured v2 JWKS per unknown kid"
    );
    assert_eq!(attacker.metadata_fetches(), 0);
    assert_eq!(attacker.jwks_fetches(), 0);
    assert_eq!(h.echo.requests(), 0);
}

// ---------------------------------------------------------------------------------------------
// 2. A kid naming a key of another trusted issuer ([[oidc]]), and the same key for another
//    issuer
// ---------------------------------------------------------------------------------------------

/// The harness's issuer as `[entra]`, plus `other` (another tenant's Entra-shaped issuer)
/// trusted as an `[[oidc]]` issuer for the same audience.
async fn harness_with_oidc() -> (Harness, DevIssuer) {
    let issuer = DevIssuer::start(common::loopback(), TENANT)
        .await
        .expect("issuer");
    let other = DevIssuer::start(common::loopback(), OTHER_TENANT)
        .await
        .expect("other issuer");
    let echo = EchoUpstream::start(common::loopback()).await.expect("echo");
    let toml = format!(
        "{}\n[[oidc]]\nissuer = \"{iss}\"\ndiscovery_url = \"{auth}/{OTHER_TENANT}/v2.0/.well-known/openid-configuration\"\naudiences = [\"{AUDIENCE}\"]\n",
        common::config_toml(&issuer, &echo.url(), &Extra::default()),
        iss = other.issuer(TokenVersion::V2, OTHER_TENANT),
        auth = other.authority(),
    );
    let config = common::load(&toml);
    assert_eq!(config.oidc.len(), 1);
    let h = Harness::launch(issuer, echo, &config).await;
    h.wait_ready().await;
    assert_eq!(h.gw.keys().issuers.len(), 3, "entra v1, entra v2, oidc-0");
    (h, other)
}

#[tokio::test]
async fn a_kid_of_another_trusted_issuers_key_is_refused() {
    let (h, other) = harness_with_oidc().await;
    let ours = h.issuer.signing_key();
    let theirs = other.signing_key();
    assert_ne!(ours.kid, theirs.kid);
    let their_claims = || {
        with(
            other.claims(TokenVersion::V2, AUDIENCE),
            "uti",
            json!(format!("{:016x}", nonce())),
        )
    };

    // Each issuer's own tokens pass: the setup trusts both.
    accepted(
        &h,
        &h.issuer.mint(&unique_claims(&h, TokenVersion::V1)),
        "ours, v1",
    )
    .await;
    accepted(
        &h,
        &h.issuer.mint(&unique_claims(&h, TokenVersion::V2)),
        "ours, v2",
    )
    .await;
    accepted(
        &h,
        &signed(
            &theirs,
            &header_with_kid(json!(theirs.kid)),
            &their_claims(),
        ),
        "theirs",
    )
    .await;

    let cases: Vec<(String, String, Reason)> = vec![
        (
            "our v1 claims, their kid, their key".into(),
            signed(
                &theirs,
                &header_with_kid(json!(theirs.kid)),
                &unique_claims(&h, TokenVersion::V1),
            ),
            Reason::UnknownKid,
        ),
        (
            "our v2 claims, their kid, their key".into(),
            signed(
                &theirs,
                &header_with_kid(json!(theirs.kid)),
                &unique_claims(&h, TokenVersion::V2),
            ),
            Reason::UnknownKid,
        ),
        (
            "our v2 claims, their kid, our key".into(),
            signed(
                &ours,
                &header_with_kid(json!(theirs.kid)),
                &unique_claims(&h, TokenVersion::V2),
            ),
            Reason::UnknownKid,
        ),
        (
            "their claims, our kid, our key".into(),
            signed(&ours, &header_with_kid(json!(ours.kid)), &their_claims()),
            Reason::UnknownKid,
        ),
        (
            "their claims, our kid, their key".into(),
            signed(&theirs, &header_with_kid(json!(ours.kid)), &their_claims()),
            Reason::UnknownKid,
        ),
        // The same key for another issuer: their issuer and kid, signed with our key.
        (
            "their claims, their kid, our key".into(),
            signed(&ours, &header_with_kid(json!(theirs.kid)), &their_claims()),
            Reason::BadSignature,
        ),
        // Their issuer's token with our tenant's issuer value but their tid.
        (
            "our v2 claims with their tid, their kid, their key".into(),
            signed(
                &theirs,
                &header_with_kid(json!(theirs.kid)),
                &with(
                    unique_claims(&h, TokenVersion::V2),
                    "tid",
                    json!(OTHER_TENANT),
                ),
            ),
            Reason::UnknownKid,
        ),
    ];
    refuse_all(&h, &cases).await;
    assert_eq!(allowed(&h).await, 3);
    assert_eq!(h.echo.requests(), 3);
}

#[tokio::test]
async fn a_token_signed_with_the_right_key_for_another_issuer_or_tenant_is_refused() {
    let h = Harness::start().await;
    let authority = h.issuer.authority().to_owned();
    let v1 = || unique_claims(&h, TokenVersion::V1);
    let v2 = || unique_claims(&h, TokenVersion::V2);
    let ours_v2 = h.issuer.issuer(TokenVersion::V2, TENANT);
    let mut cases: Vec<(String, String, Reason)> = Vec::new();
    for (what, claims, reason) in [
        (
            "Entra's public v2 issuer (not the configured authority)",
            with(
                v2(),
                "iss",
                json!(format!("https://login.microsoftonline.com/{TENANT}/v2.0")),
            ),
            Reason::IssuerMismatch,
        ),
        (
            "v2 issuer in upper case",
            with(v2(), "iss", json!(ours_v2.to_ascii_uppercase())),
            Reason::IssuerMismatch,
        ),
        (
            "v2 issuer with a trailing slash",
            with(v2(), "iss", json!(format!("{ours_v2}/"))),
            Reason::IssuerMismatch,
        ),
        (
            "v2 issuer with a trailing blank",
            with(v2(), "iss", json!(format!("{ours_v2} "))),
            Reason::IssuerMismatch,
        ),
        (
            "v2 issuer template left unfilled",
            with(v2(), "iss", json!(format!("{authority}/{{tenantid}}/v2.0"))),
            Reason::IssuerMismatch,
        ),
        (
            "v1 issuer of another tenant, our tid",
            with(
                v1(),
                "iss",
                json!(format!("https://sts.windows.net/{OTHER_TENANT}/")),
            ),
            Reason::IssuerMismatch,
        ),
        (
            "another tenant (iss and tid) and another audience",
            with(
                with(
                    with(
                        v2(),
                        "iss",
                        json!(h.issuer.issuer(TokenVersion::V2, OTHER_TENANT)),
                    ),
                    "tid",
                    json!(OTHER_TENANT),
                ),
                "aud",
                json!("https://other-api.example"),
            ),
            Reason::IssuerMismatch,
        ),
        (
            "another issuer altogether",
            with(v2(), "iss", json!("https://evil.example/")),
            Reason::IssuerMismatch,
        ),
        (
            "our v2 issuer, ver 2 (not 2.0)",
            with(v2(), "ver", json!("2")),
            Reason::IssuerMismatch,
        ),
        (
            "our v1 issuer, ver 1.0 with a blank",
            with(v1(), "ver", json!("1.0 ")),
            Reason::IssuerMismatch,
        ),
        (
            "another audience, our issuer (v2)",
            with(v2(), "aud", json!("api://another-app")),
            Reason::AudienceMismatch,
        ),
        (
            "ver as a number",
            with(v2(), "ver", json!(2.0)),
            Reason::Malformed,
        ),
        (
            "iss as an array holding our issuer",
            with(v2(), "iss", json!([ours_v2])),
            Reason::Malformed,
        ),
        (
            "tid as a number",
            with(v2(), "tid", json!(7)),
            Reason::Malformed,
        ),
    ] {
        cases.push((what.to_owned(), h.issuer.mint(&claims), reason));
    }
    refuse_all(&h, &cases).await;
    assert_eq!(h.echo.requests(), 0);
    // Minted the same way, untouched: accepted.
    accepted(&h, &h.issuer.mint(&v1()), "v1 control").await;
    accepted(&h, &h.issuer.mint(&v2()), "v2 control").await;
}

// ---------------------------------------------------------------------------------------------
// 3. Nested JWT and JWE shapes
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
// 4. Duplicate JSON members (validation.rs covers a duplicate `aud` and `alg`)
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

// ---------------------------------------------------------------------------------------------
// 5. exp / nbf: strings, floats, negative, huge
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn numeric_dates_of_every_shape_are_judged_as_rfc_7519_numeric_dates() {
    let h = Harness::start().await;
    let key = h.issuer.signing_key();
    let header = header_text(&key.kid);
    let t = now();
    let v2 = || unique_claims(&h, TokenVersion::V2);
    // Claims JSON with `exp`/`nbf` replaced by raw JSON number text (to write 1e300, 1e309 and
    // integers beyond i64 exactly as an attacker would).
    let raw_dates = |exp: &str, nbf: Option<&str>| {
        let mut claims = v2();
        claims.remove("exp");
        claims.remove("nbf");
        let text = Value::Object(claims).to_string();
        let text = prepend_member(&text, &format!("\"exp\":{exp}"));
        let text = match nbf {
            Some(n) => prepend_member(&text, &format!("\"nbf\":{n}")),
            None => text,
        };
        sign_raw(&key, &header, &text)
    };

    let refusals: Vec<(String, String, Reason)> = vec![
        (
            "nbf as a string",
            h.issuer
                .mint(&with(v2(), "nbf", json!((t - 60).to_string()))),
            Reason::Malformed,
        ),
        (
            "exp as a string float",
            h.issuer
                .mint(&with(v2(), "exp", json!(format!("{}.5", t + 3600)))),
            Reason::Malformed,
        ),
        (
            "exp as an ISO date",
            h.issuer
                .mint(&with(v2(), "exp", json!("2999-01-01T00:00:00Z"))),
            Reason::Malformed,
        ),
        (
            "exp true",
            h.issuer.mint(&with(v2(), "exp", json!(true))),
            Reason::Malformed,
        ),
        (
            "exp as an array",
            h.issuer.mint(&with(v2(), "exp", json!([t + 3600]))),
            Reason::Malformed,
        ),
        (
            "exp as an object",
            h.issuer
                .mint(&with(v2(), "exp", json!({"value": t + 3600}))),
            Reason::Malformed,
        ),
        (
            "nbf as an array",
            h.issuer.mint(&with(v2(), "nbf", json!([t - 60]))),
            Reason::Malformed,
        ),
        (
            "exp 1e309 (beyond f64)",
            raw_dates("1e309", None),
            Reason::Malformed,
        ),
        (
            "exp -1e309 (beyond f64)",
            raw_dates("-1e309", None),
            Reason::Malformed,
        ),
        (
            "nbf 1e309 (beyond f64)",
            raw_dates(&(t + 3600).to_string(), Some("1e309")),
            Reason::Malformed,
        ),
        (
            "exp null",
            h.issuer.mint(&with(v2(), "exp", json!(null))),
            Reason::MissingClaim,
        ),
        (
            "exp negative",
            h.issuer.mint(&with(v2(), "exp", json!(-1))),
            Reason::Expired,
        ),
        (
            "exp 0",
            h.issuer.mint(&with(v2(), "exp", json!(0))),
            Reason::Expired,
        ),
        ("exp -1e300", raw_dates("-1e300", None), Reason::Expired),
        (
            "exp float 2 min ago",
            h.issuer.mint(&with(v2(), "exp", json!(t as f64 - 120.5))),
            Reason::Expired,
        ),
        ("exp -0.0", raw_dates("-0.0", None), Reason::Expired),
        (
            "nbf float 5 min ahead",
            h.issuer.mint(&with(v2(), "nbf", json!(t as f64 + 300.5))),
            Reason::NotYetValid,
        ),
        (
            "nbf 1e300",
            raw_dates(&(t + 3600).to_string(), Some("1e300")),
            Reason::NotYetValid,
        ),
        (
            "nbf f64::MAX",
            raw_dates(&(t + 3600).to_string(), Some("1.7976931348623157e308")),
            Reason::NotYetValid,
        ),
        // Signed, but claiming to live for years: entra.max_token_lifetime (28 h).
        (
            "exp 1e300",
            raw_dates("1e300", None),
            Reason::LifetimeTooLong,
        ),
        (
            "exp f64::MAX",
            raw_dates("1.7976931348623157e308", None),
            Reason::LifetimeTooLong,
        ),
        (
            "exp i64::MAX",
            raw_dates(&i64::MAX.to_string(), None),
            Reason::LifetimeTooLong,
        ),
        (
            "exp beyond u64",
            raw_dates("18446744073709551616", None),
            Reason::LifetimeTooLong,
        ),
        (
            "exp ten years ahead",
            h.issuer
                .mint(&with(v2(), "exp", json!(t + 10 * 365 * 24 * 3600))),
            Reason::LifetimeTooLong,
        ),
        (
            "exp 29 h ahead, no iat",
            h.issuer.mint(&with(
                {
                    let mut c = v2();
                    c.remove("iat");
                    c
                },
                "exp",
                json!(t + 29 * 3600),
            )),
            Reason::LifetimeTooLong,
        ),
        (
            "issued 30 h ago, exp 1 h ahead (lives 31 h)",
            h.issuer.mint(&with(v2(), "iat", json!(t - 30 * 3600))),
            Reason::LifetimeTooLong,
        ),
        (
            "iat as a string",
            h.issuer.mint(&with(v2(), "iat", json!(t.to_string()))),
            Reason::Malformed,
        ),
    ]
    .into_iter()
    .map(|(w, tok, r)| (w.to_owned(), tok, r))
    .collect();
    refuse_all(&h, &refusals).await;
    assert_eq!(h.echo.requests(), 0);

    // RFC 7519 §2: NumericDate is a JSON number, "non-integer values can be represented".
    let acceptances: Vec<(&str, String)> = vec![
        (
            "exp float 1 h ahead",
            h.issuer.mint(&with(v2(), "exp", json!(t as f64 + 3600.5))),
        ),
        (
            "exp float with exponent",
            raw_dates(&format!("{:e}", (t + 3600) as f64), None),
        ),
        (
            "nbf float in the past",
            h.issuer.mint(&with(v2(), "nbf", json!(t as f64 - 0.5))),
        ),
        ("nbf negative", h.issuer.mint(&with(v2(), "nbf", json!(-1)))),
        (
            "nbf -1e300",
            raw_dates(&(t + 3600).to_string(), Some("-1e300")),
        ),
        ("nbf null", h.issuer.mint(&with(v2(), "nbf", json!(null)))),
        // entra.max_token_lifetime (28 h by default): up to it, from iat and from now.
        (
            "exp 27 h ahead, iat now",
            h.issuer.mint(&with(
                with(v2(), "iat", json!(t)),
                "exp",
                json!(t + 27 * 3600),
            )),
        ),
        (
            "exp 28 h ahead, no iat",
            h.issuer.mint(&with(
                {
                    let mut c = v2();
                    c.remove("iat");
                    c
                },
                "exp",
                json!(t + 28 * 3600),
            )),
        ),
        (
            "iat in the future (not checked: Entra does not require it)",
            h.issuer.mint(&with(v2(), "iat", json!(t + 600))),
        ),
    ];
    for (what, token) in &acceptances {
        accepted(&h, token, what).await;
    }
    assert_eq!(allowed(&h).await, 9);
    assert_eq!(h.echo.requests(), 9);
    // Nothing was refused after the refusals above.
    let mut expected: BTreeMap<&str, u64> = BTreeMap::new();
    for (_, _, r) in &refusals {
        *expected.entry(r.as_str()).or_default() += 1;
    }
    assert_denials(&h, &expected).await;
}

// ---------------------------------------------------------------------------------------------
// 6. Non-canonical base64url, padding, whitespace, other encodings
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn non_canonical_base64url_padding_and_whitespace_are_refused() {
    let h = Harness::start().await;
    let key = h.issuer.signing_key();
    let header = json!({"typ": "JWT", "alg": "RS256", "kid": key.kid});

    // Header and payload whose base64url ends in a character with unused bits (lengths 1 and
    // 2 modulo 3), each signed as sent, so only the encoding can be the reason.
    let header_1 = b64(json_with_len_mod3(&header, 1));
    let header_2 = b64(json_with_len_mod3(&header, 2));
    let payload_1 = b64(json_with_len_mod3(
        &Value::Object(unique_claims(&h, TokenVersion::V2)),
        1,
    ));
    let payload_2 = b64(json_with_len_mod3(
        &Value::Object(unique_claims(&h, TokenVersion::V1)),
        2,
    ));
    let good = h.issuer.mint(&unique_claims(&h, TokenVersion::V2));
    let (gh, gp, gs) = parts(&good);
    assert_eq!(gs.len() % 4, 2, "a 256-byte signature has 4 unused bits");

    // A signature with a base64 (not base64url) character in it.
    let std_alphabet_sig = loop {
        let t = h.issuer.mint(&unique_claims(&h, TokenVersion::V2));
        let (th, tp, ts) = parts(&t);
        if let Some(i) = ts.find(['-', '_']) {
            let swapped = if &ts[i..=i] == "-" { "+" } else { "/" };
            break format!("{th}.{tp}.{}{swapped}{}", &ts[..i], &ts[i + 1..]);
        }
    };

    let cases: Vec<(String, String, Reason)> = vec![
        (
            "header with trailing bits (4 unused)",
            sign_parts(&key, &with_trailing_bits(&header_1), &payload_1),
            Reason::Malformed,
        ),
        (
            "header with trailing bits (2 unused)",
            sign_parts(&key, &with_trailing_bits(&header_2), &payload_2),
            Reason::Malformed,
        ),
        (
            "payload with trailing bits (4 unused)",
            sign_parts(&key, &header_1, &with_trailing_bits(&payload_1)),
            Reason::Malformed,
        ),
        (
            "payload with trailing bits (2 unused)",
            sign_parts(&key, &header_2, &with_trailing_bits(&payload_2)),
            Reason::Malformed,
        ),
        (
            "signature with trailing bits",
            format!("{gh}.{gp}.{}", with_trailing_bits(gs)),
            Reason::BadSignature,
        ),
        (
            "signature padded with ==",
            format!("{good}=="),
            Reason::BadSignature,
        ),
        (
            "signature in the base64 alphabet",
            std_alphabet_sig,
            Reason::BadSignature,
        ),
        (
            "header padded with =",
            sign_parts(&key, &format!("{header_1}=="), &payload_1),
            Reason::Malformed,
        ),
        (
            "payload padded with =",
            sign_parts(&key, &header_1, &format!("{payload_1}==")),
            Reason::Malformed,
        ),
        (
            "header with a '/' (base64 alphabet)",
            format!("/{}.{gp}.{gs}", &gh[1..]),
            Reason::Malformed,
        ),
        (
            "UTF-8 BOM before the header JSON",
            sign_raw(
                &key,
                &format!("\u{feff}{header}"),
                &Value::Object(unique_claims(&h, TokenVersion::V2)).to_string(),
            ),
            Reason::Malformed,
        ),
        (
            "trailing bytes after the payload JSON",
            sign_raw(
                &key,
                &header.to_string(),
                &format!("{}x", Value::Object(unique_claims(&h, TokenVersion::V2))),
            ),
            Reason::Malformed,
        ),
        (
            "two JSON objects as the payload",
            sign_raw(
                &key,
                &header.to_string(),
                &format!("{0}{0}", Value::Object(unique_claims(&h, TokenVersion::V2))),
            ),
            Reason::Malformed,
        ),
        (
            "lone surrogate escape in a claim",
            sign_raw(
                &key,
                &header.to_string(),
                &prepend_member(
                    &Value::Object(unique_claims(&h, TokenVersion::V2)).to_string(),
                    "\"name\":\"\\ud800\"",
                ),
            ),
            Reason::Malformed,
        ),
        (
            "invalid UTF-8 in the payload",
            sign_parts(
                &key,
                &b64(header.to_string()),
                &b64([
                    &b"{\"name\":\"\xff\","[..],
                    &Value::Object(unique_claims(&h, TokenVersion::V2))
                        .to_string()
                        .as_bytes()[1..],
                ]
                .concat()),
            ),
            Reason::Malformed,
        ),
        (
            "payload nested 20000 deep",
            sign_raw(
                &key,
                &header.to_string(),
                &prepend_member(
                    &Value::Object(unique_claims(&h, TokenVersion::V2)).to_string(),
                    &format!("\"deep\":{}{}", "[".repeat(20_000), "]".repeat(20_000)),
                ),
            ),
            Reason::Malformed,
        ),
    ]
    .into_iter()
    .map(|(w, t, r)| (w.to_owned(), t, r))
    .collect();
    refuse_all(&h, &cases).await;

    // Whitespace inside the token: never a b64token (RFC 6750 §2.1), so never parsed.
    let mut whitespace = 0;
    for (what, value) in [
        (
            "blank inside the header",
            format!("Bearer {} {}.{gp}.{gs}", &gh[..4], &gh[4..]),
        ),
        ("blank before a dot", format!("Bearer {gh} .{gp}.{gs}")),
        (
            "tab inside the payload",
            format!("Bearer {gh}.{}\t{}.{gs}", &gp[..4], &gp[4..]),
        ),
        (
            "blank inside the signature",
            format!("Bearer {gh}.{gp}.{} {}", &gs[..4], &gs[4..]),
        ),
        (
            "a second token after a blank",
            format!("Bearer {good} {good}"),
        ),
        (
            "a second credential after a comma",
            format!("Bearer {good}, Basic dXNlcjpwYXNz"),
        ),
    ] {
        refused_with(&h, TENANT, &value, what).await;
        whitespace += 1;
    }
    let mut expected: BTreeMap<&str, u64> = BTreeMap::new();
    for (_, _, r) in &cases {
        *expected.entry(r.as_str()).or_default() += 1;
    }
    *expected.entry("malformed").or_default() += whitespace;
    assert_denials(&h, &expected).await;
    assert_eq!(h.echo.requests(), 0);

    // Controls: the padded-JSON constructions, canonically encoded, and blanks around the
    // token (RFC 6750 allows 1*SP after the scheme; the gateway also trims tabs).
    accepted(
        &h,
        &sign_parts(&key, &header_1, &payload_1),
        "canonical, 4 unused bits",
    )
    .await;
    accepted(
        &h,
        &sign_parts(&key, &header_2, &payload_2),
        "canonical, 2 unused bits",
    )
    .await;
    accepted(&h, &good, "the untouched token").await;
    let r = h
        .client
        .get(h.url(PATH))
        .header("authorization", format!("Bearer  \t {good}"))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200, "blanks between scheme and token");
}

// ---------------------------------------------------------------------------------------------
// 7. Schemes other than Bearer, and the token in the wrong header
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_valid_token_under_another_scheme_or_header_is_no_credential() {
    let h = Harness::start().await;
    let token = h.issuer.mint(&unique_claims(&h, TokenVersion::V2));
    let basic_with_token = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("user:{token}"))
    );
    let cases: Vec<(&str, &str, String)> = vec![
        (
            "authorization",
            "Basic with the JWT as credentials",
            format!("Basic {token}"),
        ),
        ("authorization", "Basic user:<JWT>", basic_with_token),
        (
            "authorization",
            "Basic user:pass",
            "Basic dXNlcjpwYXNz".to_owned(),
        ),
        ("authorization", "DPoP scheme", format!("DPoP {token}")),
        (
            "authorization",
            "Negotiate scheme",
            format!("Negotiate {token}"),
        ),
        ("authorization", "JWT scheme", format!("JWT {token}")),
        ("authorization", "Token scheme", format!("Token {token}")),
        (
            "authorization",
            "Bearer glued to the token",
            format!("Bearer{token}"),
        ),
        (
            "authorization",
            "Bearer, then a comma",
            format!("Bearer,{token}"),
        ),
        (
            "authorization",
            "Bearer, then a colon",
            format!("Bearer:{token}"),
        ),
        ("authorization", "the bare token, no scheme", token.clone()),
        (
            "proxy-authorization",
            "Bearer in Proxy-Authorization",
            format!("Bearer {token}"),
        ),
        (
            "x-authorization",
            "Bearer in X-Authorization",
            format!("Bearer {token}"),
        ),
    ];
    for (name, what, value) in &cases {
        refused_as_missing(&h, name, value, what).await;
    }
    let n = u64::try_from(cases.len()).expect("count");
    assert_denials(&h, &BTreeMap::from([("missing_token", n)])).await;
    assert_eq!(h.echo.requests(), 0);
    accepted(&h, &token, "the same token as a Bearer").await;
}
