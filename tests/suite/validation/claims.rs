//! One test per refusal of a token's claims (`expired`, `not_yet_valid`, `issuer_mismatch`,
//! `audience_mismatch`, `tenant_not_allowed`, `client_not_allowed`), and the accepted cases at
//! their edges (clock skew, audience forms, listed tenants and clients).

use crate::common;

use super::{OTHER_CLIENT, OTHER_TENANT, without};
use common::metrics::{allowed, assert_only_denials};
use common::tokens::with;
use common::verdicts::{accepted, refused, refused_with};
use common::{API_CLIENT_ID, AUDIENCE, Extra, Harness, TENANT, now};
use entragate::dev::POWER_QUERY_CLIENT_ID;
use entragate::keys::TokenVersion;
use serde_json::json;

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
