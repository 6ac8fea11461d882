//! Which key a token names: odd `kid` values (very long, path- or URL-shaped, not a string),
//! a kid of another trusted issuer's key, and the right key used for another issuer or tenant.

use crate::common;

use super::{OTHER_TENANT, header_with_kid, refuse_all};
use common::metrics::allowed;
use common::tokens::{nonce, signed, unique_claims, with};
use common::verdicts::accepted;
use common::{AUDIENCE, Extra, Harness, TENANT};
use entragate::auth::Reason;
use entragate::dev::{DevIssuer, EchoUpstream};
use entragate::keys::TokenVersion;
use serde_json::json;

// ---------------------------------------------------------------------------------------------
// kid: very long, path- or URL-shaped, not a string
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
// A kid naming a key of another trusted issuer ([[oidc]]), and the same key for another
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
