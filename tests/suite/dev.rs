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
    assert_eq!(stdout.matches("(ok)").count(), 4, "{stdout}");
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

/// `dev --cloud china`: the embedded issuer mints and publishes the China cloud's v1 issuer
/// (`sts.chinacloudapi.cn`), and the gateway, configured with `entra.cloud = "china"`,
/// accepts its tokens.
#[test]
fn dev_mints_tokens_shaped_for_a_sovereign_cloud() {
    let out = Command::new(env!("CARGO_BIN_EXE_entragate"))
        .args([
            "dev",
            "--once",
            "--cloud",
            "china",
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
    assert_eq!(stdout.matches("(ok)").count(), 4, "{stdout}");
    assert!(stdout.contains("cloud = \"china\""), "{stdout}");
    assert!(
        stderr.contains("issuer=https://sts.chinacloudapi.cn/"),
        "the v1 key source reads the China issuer: {stderr}"
    );
    let bad = Command::new(env!("CARGO_BIN_EXE_entragate"))
        .args(["dev", "--once", "--cloud", "germany"])
        .output()
        .expect("entragate dev runs");
    assert_eq!(bad.status.code(), Some(2), "an unknown cloud is bad usage");
}
