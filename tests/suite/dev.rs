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
    let out =
        dev_with_config("[dev]\naccess_token_version = 3\n[[dev.clients]]\nclient_id = \"nope\"\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("dev.access_token_version"), "{stderr}");
    assert!(stderr.contains("dev.clients[0].client_id"), "{stderr}");
}
