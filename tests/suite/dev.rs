//! `entragate dev` runs the whole demo flow and says so (README's first command).

use std::process::Command;

#[test]
fn dev_demo_runs_the_whole_flow() {
    let out = Command::new(env!("CARGO_BIN_EXE_entragate"))
        .args([
            "dev",
            "--once",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .output()
        .expect("entragate dev runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{stderr}",
        out.status
    );
    assert_eq!(stdout.matches("(ok)").count(), 5, "{stdout}");
    // Where real clients sign in: the HTTPS authority and the CA to trust.
    assert!(stdout.contains("authority  https://127.0.0.1:"), "{stdout}");
    assert!(stdout.contains("CA file    "), "{stdout}");
    assert!(stdout.contains("grant_type=client_credentials"), "{stdout}");
    assert!(
        stdout.contains("curl -i -H 'Authorization: Bearer'"),
        "{stdout}"
    );
    assert!(stdout.contains("www-authenticate: Bearer authorization_uri=http://127.0.0.1:"));
    assert!(stdout.contains("error=\"invalid_token\""));
    assert!(stdout.contains("demo complete"));
    // The decision log names the refusal's reason; the client never sees it.
    assert!(stderr.contains("audience_mismatch"), "{stderr}");
    // Tokens are fetched by the pasted curl lines, never printed by the demo.
    assert!(!stdout.contains("eyJ"), "a token was printed:\n{stdout}");
    assert!(!stderr.contains("eyJ"), "a token was logged:\n{stderr}");
}

fn dev_with_config(toml: &str) -> std::process::Output {
    let file = crate::common::process::TempFile::with("dev.toml", toml);
    Command::new(env!("CARGO_BIN_EXE_entragate"))
        .args([
            "dev",
            "--once",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--config",
            file.as_str(),
        ])
        .output()
        .expect("entragate dev runs")
}

#[test]
fn dev_reads_its_users_and_clients_from_the_dev_section() {
    let out = dev_with_config(
        r#"
[dev]
tenant_id = "0d6c1a5e-1111-4222-8333-444455556666"
https_listen = "127.0.0.1:0"

[[dev.users]]
username = "grace@example.org"
name = "Grace Hopper"

[[dev.clients]]
client_id = "9a8b7c6d-0000-4000-8000-00000000c0de"
name = "nightly export"
secret = "not-shown-anywhere"
roles = ["AQL.Read.All"]
"#,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("tenant 0d6c1a5e-1111-4222-8333-444455556666"),
        "{stdout}"
    );
    assert!(
        stdout.contains("grace@example.org (Grace Hopper)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("9a8b7c6d-0000-4000-8000-00000000c0de (nightly export"),
        "{stdout}"
    );
    // The configured client signed in with its secret (step 5), which is never printed.
    assert_eq!(stdout.matches("(ok)").count(), 5, "{stdout}");
    assert!(stdout.contains("dev.clients[0].secret"), "{stdout}");
    assert!(!stdout.contains("not-shown-anywhere"), "{stdout}");
    assert!(!stderr.contains("not-shown-anywhere"), "{stderr}");
}

#[test]
fn a_bad_dev_section_is_a_config_error_naming_the_key() {
    let out = dev_with_config(
        "[dev]\naccess_token_version = 3\ncloud = \"germany\"\n[[dev.clients]]\nclient_id = \"nope\"\n",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("dev.access_token_version"), "{stderr}");
    assert!(stderr.contains("dev.clients[0].client_id"), "{stderr}");
    assert!(stderr.contains("dev.cloud"), "{stderr}");
}

#[test]
fn dev_mints_tokens_shaped_for_a_sovereign_cloud() {
    for cloud in ["china", "usgov"] {
        let out = dev_with_config(&format!(
            "[dev]\nhttps_listen = \"127.0.0.1:0\"\ncloud = \"{cloud}\"\n"
        ));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{cloud}: {stdout}\n{stderr}");
        // The gateway runs on that cloud and accepts the v1 and v2 tokens the issuer minted
        // with the cloud's issuers (read from the issuer's discovery documents).
        assert!(stdout.contains(&format!("cloud = \"{cloud}\"")), "{stdout}");
        assert_eq!(stdout.matches("(ok)").count(), 5, "{cloud}: {stdout}");
        assert!(!stdout.contains("eyJ") && !stderr.contains("eyJ"));
    }
}

/// What a `dev.cloud` issuer publishes and mints: that cloud's issuers, read off its metadata
/// documents and off the payload of the tokens `/dev/token` returns.
#[tokio::test]
async fn a_sovereign_cloud_dev_issuer_publishes_and_mints_that_clouds_issuers() {
    use base64::Engine as _;
    use entragate::config::{Cloud, Dev};
    use entragate::dev::DevIssuer;
    let tid = "0d6c1a5e-1111-4222-8333-444455556666";
    for (cloud, v1, v2, instance) in [
        (
            Cloud::China,
            "https://sts.chinacloudapi.cn",
            "https://login.partner.microsoftonline.cn",
            "partner.microsoftonline.cn",
        ),
        (
            Cloud::UsGov,
            "https://sts.windows.net",
            "https://login.microsoftonline.us",
            "microsoftonline.us",
        ),
    ] {
        let dev = Dev {
            tenant_id: tid.to_owned(),
            https_listen: crate::common::loopback(),
            cloud: Some(cloud),
            ..Dev::default()
        };
        let issuer = DevIssuer::start_with(crate::common::loopback(), dev)
            .await
            .expect("issuer");
        let base = format!("http://{}", issuer.addr);
        let client = reqwest::Client::new();
        let get = |url: String| {
            let client = client.clone();
            async move {
                client
                    .get(url)
                    .send()
                    .await
                    .expect("get")
                    .text()
                    .await
                    .expect("body")
            }
        };
        for (path, want) in [
            (
                format!("/{tid}/.well-known/openid-configuration"),
                format!("{v1}/{tid}/"),
            ),
            (
                format!("/{tid}/v2.0/.well-known/openid-configuration"),
                format!("{v2}/{tid}/v2.0"),
            ),
        ] {
            let doc: serde_json::Value =
                serde_json::from_str(&get(format!("{base}{path}")).await).expect("json");
            assert_eq!(doc["issuer"], want.as_str(), "{cloud:?} {path}");
            assert_eq!(doc["cloud_instance_name"], instance, "{cloud:?}");
        }
        for (ver, want) in [
            ("1", format!("{v1}/{tid}/")),
            ("2", format!("{v2}/{tid}/v2.0")),
        ] {
            let token = get(format!("{base}/dev/token?ver={ver}")).await;
            let payload = token.split('.').nth(1).expect("a JWS");
            let claims: serde_json::Value = serde_json::from_slice(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(payload)
                    .expect("base64url"),
            )
            .expect("claims");
            assert_eq!(claims["iss"], want.as_str(), "{cloud:?} v{ver}");
            assert_eq!(claims["tid"], tid);
        }
    }
}
