//! RFC 9728 protected-resource metadata: advertised in every challenge but the probe's, and
//! served at the path-inserted URL.

use crate::common;

use super::{AQL_Q, CDR_URI, call, counts, request_counts, start_example, user_token};
use common::{Harness, TENANT};
use entragate::dev::POWER_QUERY_CLIENT_ID;
use entragate::keys::TokenVersion;
use serde_json::{Value, json};

const METADATA_URL: &str = "https://cdr.contoso.com/.well-known/oauth-protected-resource/ehrbase";

async fn start_example_with_metadata() -> Harness {
    start_example(&[
        ("ENTRAGATE_CHALLENGE__RESOURCE_METADATA", "true"),
        (
            "ENTRAGATE_SERVER__PUBLIC_URL",
            "https://cdr.contoso.com/ehrbase",
        ),
    ])
    .await
}

#[tokio::test]
async fn resource_metadata_is_advertised_in_challenges_and_served_path_inserted() {
    let h = start_example_with_metadata().await;
    let authority = h.issuer.authority().to_owned();
    let authorize = format!("{authority}/{TENANT}/oauth2/authorize");

    let r = call(&h, "GET", AQL_Q, None).await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["www-authenticate"],
        format!(
            "Bearer realm={authority}/{TENANT}, authorization_uri={authorize}, resource_metadata=\"{METADATA_URL}\""
        )
        .as_str()
    );
    let r = call(&h, "GET", AQL_Q, Some("not-a-jwt")).await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["www-authenticate"],
        format!(
            "Bearer authorization_uri={authorize}, error=\"invalid_token\", resource_metadata=\"{METADATA_URL}\""
        )
        .as_str()
    );
    // Power Query's probe: exactly as Microsoft documents it, nothing added.
    for probe in ["Bearer", "Bearer ", "bearer"] {
        let r = h
            .client
            .get(h.url(AQL_Q))
            .header("authorization", probe)
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 401);
        let challenges: Vec<_> = r.headers().get_all("www-authenticate").iter().collect();
        assert_eq!(
            challenges,
            [format!("Bearer authorization_uri={authorize}").as_str()],
            "{probe:?}"
        );
    }

    // The document at the path-inserted URL, without a token, never proxied.
    let r = h
        .client
        .get(h.url("/.well-known/oauth-protected-resource/ehrbase"))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let doc: Value = r.json().await.expect("metadata JSON");
    assert_eq!(
        doc,
        json!({
            "resource": "https://cdr.contoso.com/ehrbase",
            "authorization_servers": [format!("{authority}/{TENANT}/v2.0")],
            "scopes_supported": ["https://cdr.contoso.com/AQL.Read", "https://cdr.contoso.com/EHR.Read"],
            "bearer_methods_supported": ["header"],
        })
    );
    assert_eq!(h.echo.requests(), 0);
    assert_eq!(
        request_counts(&h).await,
        counts(&[
            ("denied/missing_token", 1),
            ("denied/malformed", 1),
            ("denied/empty_bearer", 3),
        ])
    );
}

/// SPEC §4: with `challenge.resource_metadata`, `resource_metadata="…"` is added to every
/// challenge except the answer to Power Query's empty-bearer probe; a 403's challenge is one.
#[tokio::test]
async fn insufficient_scope_challenge_also_advertises_resource_metadata() {
    let h = start_example_with_metadata().await;
    let token = user_token(
        &h,
        TokenVersion::V1,
        CDR_URI,
        POWER_QUERY_CLIENT_ID,
        "user_impersonation",
    );
    let r = call(&h, "GET", AQL_Q, Some(&token)).await;
    assert_eq!(r.status(), 403);
    assert_eq!(
        r.headers()["www-authenticate"],
        format!(
            "Bearer error=\"insufficient_scope\", scope=\"AQL.Read\", resource_metadata=\"{METADATA_URL}\""
        )
        .as_str()
    );
}
