//! The verified-token cache: hits skip verification, never outlive `exp` or the key, refusals
//! are not cached, and route rules still run on every request.

use crate::common;

use std::time::Duration;

use common::{Extra, Harness};
use entragate::keys::TokenVersion;
use serde_json::json;

async fn cache_counts(h: &Harness) -> (u64, u64) {
    let text = h.metrics_text().await;
    let read = |result: &str| {
        let prefix = format!("entragate_token_cache_lookups_total{{result=\"{result}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {result} counter in:\n{text}"))
    };
    (read("hit"), read("miss"))
}

#[tokio::test]
async fn the_same_token_is_verified_once_then_served_from_the_cache() {
    let h = Harness::start().await;
    let token = h.token(TokenVersion::V2);
    for _ in 0..3 {
        assert_eq!(h.get_with_token("/a", &token).await.status(), 200);
    }
    assert_eq!(cache_counts(&h).await, (2, 1));
    assert_eq!(h.echo.requests(), 3);
    // A different token is a different entry.
    let other = h.token(TokenVersion::V1);
    assert_eq!(h.get_with_token("/a", &other).await.status(), 200);
    assert_eq!(cache_counts(&h).await, (2, 2));
}

#[tokio::test]
async fn a_cached_token_is_refused_once_its_key_is_withdrawn() {
    let h = Harness::start_with(Extra {
        entra: "jwks_min_refetch = \"0s\"".into(),
        ..Default::default()
    })
    .await;
    let old_kid = h.issuer.signing_key().kid.clone();
    let token = h.token(TokenVersion::V2);
    assert_eq!(h.get_with_token("/a", &token).await.status(), 200);
    assert_eq!(h.get_with_token("/a", &token).await.status(), 200);
    assert_eq!(cache_counts(&h).await.0, 1);

    // Rotate, withdraw the old key, and let an unknown kid make the gateway refetch.
    let new_kid = h.issuer.rotate();
    assert!(h.issuer.withdraw(&old_kid));
    let fresh = h.token(TokenVersion::V2);
    assert_eq!(h.get_with_token("/a", &fresh).await.status(), 200);
    assert_ne!(old_kid, new_kid);

    let r = h.get_with_token("/a", &token).await;
    assert_eq!(r.status(), 401, "a cached token outlived its key");
}

#[tokio::test]
async fn a_cached_token_is_not_served_past_exp() {
    let h = Harness::start_with(Extra {
        entra: "clock_skew = \"0s\"".into(),
        ..Default::default()
    })
    .await;
    let mut claims = h.claims(TokenVersion::V1);
    claims.insert("exp".into(), json!(common::now() + 2));
    let token = h.issuer.mint(&claims);
    assert_eq!(h.get_with_token("/a", &token).await.status(), 200);
    assert_eq!(h.get_with_token("/a", &token).await.status(), 200);
    assert_eq!(cache_counts(&h).await.0, 1);
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let r = h.get_with_token("/a", &token).await;
    assert_eq!(r.status(), 401);
    assert_eq!(cache_counts(&h).await.0, 1, "an expired entry was served");
}

#[tokio::test]
async fn refusals_are_not_cached() {
    let h = Harness::start().await;
    let mut claims = h.claims(TokenVersion::V2);
    claims.insert("aud".into(), json!("https://other.example"));
    let token = h.issuer.mint(&claims);
    for _ in 0..3 {
        assert_eq!(h.get_with_token("/a", &token).await.status(), 401);
    }
    assert_eq!(cache_counts(&h).await, (0, 3));
}

#[tokio::test]
async fn route_rules_run_on_cache_hits() {
    let h = Harness::start_with(Extra {
        tail: "[[routes]]\npath = \"/admin\"\nscopes = [\"admin\"]\n".into(),
        ..Default::default()
    })
    .await;
    let token = h.token(TokenVersion::V2);
    assert_eq!(h.get_with_token("/data", &token).await.status(), 200);
    for _ in 0..2 {
        let r = h.get_with_token("/admin/x", &token).await;
        assert_eq!(r.status(), 403);
        assert_eq!(
            r.headers()["www-authenticate"],
            "Bearer error=\"insufficient_scope\", scope=\"admin\""
        );
    }
    assert_eq!(cache_counts(&h).await, (2, 1));
}

#[tokio::test]
async fn the_cache_can_be_turned_off() {
    let h = Harness::start_with(Extra {
        server: "token_cache_entries = 0".into(),
        ..Default::default()
    })
    .await;
    let token = h.token(TokenVersion::V2);
    for _ in 0..2 {
        assert_eq!(h.get_with_token("/a", &token).await.status(), 200);
    }
    assert_eq!(cache_counts(&h).await, (0, 0));
}
