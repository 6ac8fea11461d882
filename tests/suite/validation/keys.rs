//! Keys: an unreachable authority answers 503 `keys_unavailable`, and keys named by the token
//! itself (`jwk`, `jku`, `x5u`, `x5c`) are never used.

use crate::common;

use super::jwks;
use common::metrics::{assert_only_denials, denials};
use common::verdicts::{PATH, refused};
use common::{Extra, Harness, TENANT};
use entragate::dev::{DevIssuer, sign_jwt};
use entragate::keys::TokenVersion;
use serde_json::{Value, json};

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
// Keys named by the token itself are ignored
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
