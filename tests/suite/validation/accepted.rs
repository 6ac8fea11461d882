//! Accepted tokens and the identity passed upstream; client-sent identity headers are replaced
//! by the verified ones.

use crate::common;

use std::collections::BTreeMap;

use super::{OTHER_CLIENT, OTHER_TENANT};
use common::metrics::{allowed, assert_only_denials};
use common::verdicts::{PATH, accepted};
use common::{Harness, TENANT, echoed_authorization};
use entragate::dev::POWER_QUERY_CLIENT_ID;
use entragate::keys::TokenVersion;
use serde_json::{Value, json};

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
// Accepted tokens and the identity passed upstream
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
// Client-sent identity headers
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
