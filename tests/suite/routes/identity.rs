//! The identity sent upstream (`[identity]`): header names renamed, disabled or stripped, the
//! claims header, and claims that are not header text.

use crate::common;

use std::collections::BTreeMap;

use super::{call, passed, start_with_tail};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{Extra, Harness, TENANT};
use entragate::dev::POWER_QUERY_CLIENT_ID;
use entragate::keys::TokenVersion;
use serde_json::{Value, json};

#[tokio::test]
async fn identity_headers_renamed_disabled_stripped_and_the_claims_header() {
    let h = start_with_tail(
        Extra::default(),
        r#"
[identity]
subject_header = "X-User-Id"
roles_header = "X-User-Roles"
name_header = ""
claims_header = "X-Auth-Claims"
strip_headers = ["X-User", "X-Remote-User"]

[[routes]]
path = "/public"
anonymous = true
"#,
    )
    .await;
    let spoofed_claims = URL_SAFE_NO_PAD.encode(r#"{"oid":"evil","roles":["Admin"]}"#);
    let spoofs: Vec<(&str, &str)> = vec![
        ("X-User-Id", "spoofed-admin"),
        ("X-User-Roles", "Admin"),
        ("X-User", "root"),
        ("x-remote-user", "root"),
        ("X-Auth-Subject", "spoofed"),
        ("X-Auth-Name", "root@contoso.example"),
        ("X-Auth-Roles", "Admin"),
        ("X-Auth-Claims", &spoofed_claims),
        ("X-Auth-Anything", "1"),
        ("X-Userx", "kept"),
    ];
    let send = |path: &'static str, token: Option<String>| {
        let mut req = h.client.get(h.url(path));
        for (n, v) in &spoofs {
            req = req.header(*n, *v);
        }
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        req.send()
    };
    let headers_of = |seen: &Value| -> BTreeMap<String, String> {
        seen["headers"]
            .as_object()
            .expect("headers")
            .iter()
            .filter(|(k, _)| k.starts_with("x-"))
            .filter(|(k, _)| !k.starts_with("x-forwarded-") && *k != "x-request-id")
            .map(|(k, v)| (k.clone(), v.as_str().expect("string").to_owned()))
            .collect()
    };

    // A v2 token without roles: the renamed roles header must vanish, not carry the spoof.
    let mut claims = h.claims(TokenVersion::V2);
    claims.insert("oid".into(), json!("3f2504e0-4f89-41d3-9a0c-0305e82c3301"));
    let token = h.issuer.mint(&claims);
    let seen = passed(
        send("/data", Some(token.clone())).await.expect("request"),
        "v2",
    )
    .await;
    let got = headers_of(&seen);
    let encoded = got.get("x-auth-claims").cloned().unwrap_or_default();
    let decoded: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(encoded.as_bytes())
            .expect("base64url claims header"),
    )
    .expect("claims header is JSON");
    assert_eq!(decoded["oid"], "3f2504e0-4f89-41d3-9a0c-0305e82c3301");
    assert_eq!(
        decoded,
        Value::Object(claims.clone()),
        "the verified claims"
    );
    assert_eq!(
        encoded,
        token.split('.').nth(1).expect("payload"),
        "the token's own payload segment"
    );
    let mut without_claims = got.clone();
    without_claims.remove("x-auth-claims");
    assert_eq!(
        without_claims,
        counts_s(&[
            ("x-user-id", "3f2504e0-4f89-41d3-9a0c-0305e82c3301"),
            ("x-auth-tenant", TENANT),
            ("x-auth-client", POWER_QUERY_CLIENT_ID),
            ("x-auth-scopes", "user_impersonation"),
            ("x-userx", "kept"),
        ]),
        "renamed, disabled and stripped headers"
    );

    // With roles, the renamed header carries them, comma-joined.
    let mut claims = h.claims(TokenVersion::V1);
    claims.insert("roles".into(), json!(["EHR.Read.All", "AQL.Read.All"]));
    let seen = passed(
        send("/data", Some(h.issuer.mint(&claims)))
            .await
            .expect("request"),
        "v1 with roles",
    )
    .await;
    let got = headers_of(&seen);
    assert_eq!(got["x-user-roles"], "EHR.Read.All,AQL.Read.All");
    assert_eq!(got["x-user-id"], "00000000-0000-4000-8000-00000000a11e");
    assert!(!got.contains_key("x-auth-name"), "{got:?}");
    assert!(!got.contains_key("x-auth-subject"), "{got:?}");

    // Anonymous route without a token: every spoof removed, nothing set.
    let seen = passed(send("/public", None).await.expect("request"), "anonymous").await;
    assert_eq!(
        headers_of(&seen),
        counts_s(&[("x-userx", "kept")]),
        "anonymous"
    );

    // A preflight: the same.
    let mut req = h
        .client
        .request(reqwest::Method::OPTIONS, h.url("/data"))
        .header("origin", "https://app.powerbi.com")
        .header("access-control-request-method", "GET");
    for (n, v) in &spoofs {
        req = req.header(*n, *v);
    }
    let seen = passed(req.send().await.expect("request"), "preflight").await;
    assert_eq!(seen["method"], "OPTIONS");
    assert_eq!(
        headers_of(&seen),
        counts_s(&[("x-userx", "kept")]),
        "preflight"
    );
    assert_eq!(h.echo.requests(), 4);
}

fn counts_s(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[tokio::test]
async fn a_claim_that_is_not_header_text_is_left_out_not_a_500() {
    let h = Harness::start().await;
    for (upn, why) in [
        ("a@b\r\nX-Injected: 1", "CR LF"),
        ("a@b\nX-Injected: 1", "LF"),
        ("a@b\u{7f}", "DEL"),
        ("a@b\u{0}", "NUL"),
    ] {
        let mut claims = h.claims(TokenVersion::V1);
        claims.insert("upn".into(), json!(upn));
        let seen = passed(
            call(&h, "GET", "/data", Some(&h.issuer.mint(&claims))).await,
            why,
        )
        .await;
        assert!(
            seen["headers"].get("x-auth-name").is_none(),
            "{why}: {seen}"
        );
        assert!(seen["headers"].get("x-injected").is_none(), "{why}: {seen}");
        assert_eq!(seen["headers"]["x-auth-tenant"], TENANT, "{why}");
    }
    // Non-ASCII is not dropped: it travels as its UTF-8 bytes (RFC 9110 obs-text).
    let mut claims = h.claims(TokenVersion::V2);
    claims.insert("preferred_username".into(), json!("adèle@contoso.example"));
    let seen = passed(
        call(&h, "GET", "/data", Some(&h.issuer.mint(&claims))).await,
        "non-ASCII",
    )
    .await;
    assert_eq!(seen["headers"]["x-auth-name"], "adèle@contoso.example");
    assert_eq!(h.echo.requests(), 5);
}
