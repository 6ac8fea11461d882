//! A valid token under a scheme other than Bearer, or in another header, is no credential at
//! all (SPEC §4): the 401 for a missing token.

use crate::common;

use std::collections::BTreeMap;

use base64::Engine as _;
use common::metrics::assert_denials;
use common::tokens::unique_claims;
use common::verdicts::{PATH, accepted};
use common::{Harness, TENANT};
use entragate::keys::TokenVersion;

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
