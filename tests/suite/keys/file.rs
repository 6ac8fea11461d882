//! `entra.jwks_file`: the keys come from a file (no discovery, no JWKS fetch), the issuers from
//! the tenant; a rewritten file is picked up within `entra.jwks_file_reload`, a broken one
//! keeps the last good keys and counts as a failed fetch.

use super::*;
use common::process::TempFile;

fn jwks(keys: &[&SigningKey]) -> String {
    json!({ "keys": keys.iter().map(|k| k.jwk(None)).collect::<Vec<_>>() }).to_string()
}

fn file_lines(file: &TempFile) -> Extra {
    entra(&format!(
        "jwks_file = {:?}\njwks_file_reload = \"200ms\"",
        file.as_str()
    ))
}

#[tokio::test]
async fn a_key_file_replaces_discovery_and_is_reloaded_when_rewritten() {
    let issuer = DevIssuer::start(common::loopback(), TENANT)
        .await
        .expect("issuer");
    let file = TempFile::with("jwks.json", &jwks(&[&issuer.signing_key()]));
    let echo = entragate::dev::EchoUpstream::start(common::loopback())
        .await
        .expect("echo");
    let config = common::load(&common::config_toml(
        &issuer,
        &echo.url(),
        &file_lines(&file),
    ));
    let h = Harness::launch(issuer, echo, &config).await;
    assert!(
        h.gw.keys().is_ready(),
        "a key file is loaded before serving"
    );
    for version in [TokenVersion::V1, TokenVersion::V2] {
        assert_eq!(status(&h, &fresh(&h, version)).await, 200, "{version:?}");
    }
    let stranger = SigningKey::generate();
    assert_eq!(
        status(&h, &signed_by(&h, &stranger, TokenVersion::V2)).await,
        401,
        "a kid that is not in the file"
    );

    // A broken file: the keys in service stay, the failure is counted (once).
    file.write("{ truncated");
    let broken = || async { key_fetches(&metrics_text(&h).await, "entra-v2", "bad_json") >= 1 };
    common::eventually(Duration::from_secs(10), "bad_json counted", broken).await;
    assert_eq!(status(&h, &fresh(&h, TokenVersion::V2)).await, 200);
    assert_eq!(admin_status(&h, "/readyz").await, 200);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        key_fetches(&metrics_text(&h).await, "entra-v2", "bad_json"),
        1,
        "the same failure is counted once"
    );

    // Rewritten with a new key: a token naming it passes within the reload interval.
    let new_key = SigningKey::generate();
    file.write(&jwks(&[&new_key]));
    let token = signed_by(&h, &new_key, TokenVersion::V2);
    common::eventually(Duration::from_secs(10), "the new key is used", || async {
        status(&h, &token).await == 200
    })
    .await;
    assert_eq!(
        status(&h, &fresh(&h, TokenVersion::V2)).await,
        401,
        "the old key is no longer in the file"
    );
    assert_eq!(
        (h.issuer.metadata_fetches(), h.issuer.jwks_fetches()),
        (0, 0),
        "nothing was fetched from the identity provider"
    );
}

#[tokio::test]
async fn a_key_file_without_usable_keys_stops_the_start_naming_the_key() {
    let issuer = DevIssuer::start(common::loopback(), TENANT)
        .await
        .expect("issuer");
    // A JWKS (the config loads) whose only key is a shared secret: never trusted.
    let file = TempFile::with(
        "jwks.json",
        r#"{"keys":[{"kty":"oct","kid":"h","k":"c2VjcmV0LXNlY3JldC1zZWNyZXQ"}]}"#,
    );
    let config = common::load(&common::config_toml(
        &issuer,
        "http://127.0.0.1:9",
        &file_lines(&file),
    ));
    let Err(e) = entragate::app::start(&config).await else {
        panic!("started with an HMAC-only key file");
    };
    assert!(e.is_config(), "{e}");
    let text = e.to_string();
    assert!(
        text.contains("entra.jwks_file") && text.contains(file.as_str()),
        "{text}"
    );
}
