//! `entragate check` against the embedded Entra-shaped issuer on loopback: a sound config
//! passes with every fetch timed; the classic misconfigurations (wrong Application ID URI
//! form, a public URL the audiences do not cover, a v1/v2 mix-up, missing Power Platform
//! clients, multi-tenant without an allow-list, an unreachable authority) are each named with
//! their fix, and the exit code says which kind of trouble it is.

use crate::common;

use common::process::{Proc, TempFile};
use common::{API_CLIENT_ID, TENANT, loopback};
use entragate::dev::DevIssuer;
use serde_json::Value;

const PQ: &str = "a672d62c-fc7b-4e81-a576-e60dc46e951d";
const REFRESH: &str = "b52893c8-bc2e-47fc-918b-77022b299bbc";
const APPS: &str = "7ab7862c-4c57-491e-8a45-d52a7e023983";

/// A config for `issuer` with `server` and `entra` lines (the latter must set `audiences`).
fn config(issuer: &DevIssuer, server: &str, entra: &str) -> TempFile {
    TempFile::with(
        "check.toml",
        &format!(
            r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
{server}

[entra]
tenant_id = "{TENANT}"
authority = "{authority}"
{entra}
"#,
            authority = issuer.authority()
        ),
    )
}

async fn check_json(file: &TempFile) -> (Option<i32>, Value, String) {
    let out = Proc::run(
        &["check", "--config", file.as_str(), "--format", "json"],
        &[],
        None,
    )
    .await;
    let report: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}\n{}", out.stdout, out.stderr));
    (out.code, report, out.stderr)
}

/// The checklist items with this id.
fn items<'a>(report: &'a Value, id: &str) -> Vec<&'a Value> {
    report["checklist"]
        .as_array()
        .expect("checklist")
        .iter()
        .filter(|i| i["id"] == id)
        .collect()
}

fn the_failure<'a>(report: &'a Value, id: &str) -> &'a Value {
    items(report, id)
        .into_iter()
        .find(|i| i["status"] == "fail")
        .unwrap_or_else(|| panic!("no failed {id} item in {report:#}"))
}

#[tokio::test]
async fn a_sound_config_passes_and_every_fetch_is_shown_with_its_timing() {
    let issuer = DevIssuer::start(loopback(), TENANT).await.expect("issuer");
    let file = config(
        &issuer,
        r#"public_url = "https://api.contoso.example""#,
        &format!(
            r#"audiences = ["https://api.contoso.example", "{API_CLIENT_ID}"]
allowed_client_ids = ["{PQ}", "{REFRESH}", "{APPS}"]"#
        ),
    );

    let text = Proc::run(&["check", "--config", file.as_str()], &[], None).await;
    assert_eq!(text.code, Some(0), "{}\n{}", text.stdout, text.stderr);
    assert!(text.stdout.contains("All is well"), "{}", text.stdout);
    assert!(!text.stdout.contains("FAIL"), "{}", text.stdout);
    for source in ["entra-v1", "entra-v2"] {
        // What it is fetching, as it fetches (stderr), and the result with timing (stdout).
        assert!(
            text.stderr.contains(&format!(
                "fetching {source} metadata http://{}",
                issuer.addr
            )),
            "{}",
            text.stderr
        );
        assert!(
            text.stdout.contains(&format!("ok    {source}: metadata ")),
            "{}",
            text.stdout
        );
    }
    // The steps only the Entra admin center can confirm are listed.
    for step in ["user_impersonation", PQ, REFRESH, "offline_access"] {
        assert!(
            text.stdout.contains(step),
            "{step} not in:\n{}",
            text.stdout
        );
    }

    let (code, report, _) = check_json(&file).await;
    assert_eq!(code, Some(0));
    assert_eq!(report["ok"], true);
    let fetches = report["fetches"].as_array().expect("fetches");
    assert_eq!(fetches.len(), 2);
    for f in fetches {
        assert!(f["metadata_ms"].is_u64() && f["jwks_ms"].is_u64(), "{f}");
        assert_eq!(f["keys"], 1, "{f}");
        assert!(f["error"].is_null(), "{f}");
    }
    assert_eq!(
        fetches[0]["issuer"],
        format!("https://sts.windows.net/{TENANT}/")
    );
    assert!(issuer.jwks_fetches() >= 4, "two runs, two key sets each");
}

#[tokio::test]
async fn an_application_id_uri_with_a_path_fails_with_the_scheme_and_host_as_fix() {
    let issuer = DevIssuer::start(loopback(), TENANT).await.expect("issuer");
    let file = config(
        &issuer,
        r#"public_url = "https://api.contoso.example""#,
        &format!(r#"audiences = ["https://api.contoso.example/ehrbase", "{API_CLIENT_ID}"]"#),
    );
    let (code, report, _) = check_json(&file).await;
    assert_eq!(code, Some(1), "{report:#}");
    let item = the_failure(&report, "app_id_uri");
    assert!(
        item["message"]
            .as_str()
            .unwrap_or_default()
            .contains("has a path"),
        "{item}"
    );
    let fix = item["fix"].as_str().unwrap_or_default();
    assert!(
        fix.contains("Application ID URI") && fix.contains("\"https://api.contoso.example\""),
        "{fix}"
    );
    // The same host with a path does not cover the public URL either.
    assert!(
        items(&report, "app_id_uri")
            .iter()
            .all(|i| i["status"] == "fail"),
        "{report:#}"
    );
}

#[tokio::test]
async fn a_public_url_no_audience_covers_fails_naming_both() {
    let issuer = DevIssuer::start(loopback(), TENANT).await.expect("issuer");
    let file = config(
        &issuer,
        r#"public_url = "https://gateway.contoso.example/""#,
        &format!(r#"audiences = ["https://api.contoso.example", "{API_CLIENT_ID}"]"#),
    );
    let (code, report, _) = check_json(&file).await;
    assert_eq!(code, Some(1));
    let item = the_failure(&report, "app_id_uri");
    let message = item["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("https://gateway.contoso.example")
            && message.contains("https://api.contoso.example"),
        "{message}"
    );
    assert!(
        item["fix"].as_str().unwrap_or_default().contains(
            "Set the Application ID URI (Expose an API) to https://gateway.contoso.example"
        ),
        "{item}"
    );
}

#[tokio::test]
async fn client_ids_only_is_the_v1_v2_mix_up_and_names_access_token_accepted_version() {
    let issuer = DevIssuer::start(loopback(), TENANT).await.expect("issuer");
    let file = config(&issuer, "", &format!(r#"audiences = ["{API_CLIENT_ID}"]"#));
    let out = Proc::run(&["check", "--config", file.as_str()], &[], None).await;
    assert_eq!(out.code, Some(1), "{}", out.stdout);
    let line = out
        .stdout
        .lines()
        .find(|l| l.contains("FAIL") && l.contains("only client IDs"))
        .unwrap_or_else(|| panic!("no v1/v2 line in:\n{}", out.stdout));
    assert!(line.contains("accessTokenAcceptedVersion"), "{line}");
    assert!(
        out.stdout
            .contains("fix: Add the Application ID URI to entra.audiences, or set accessTokenAcceptedVersion to 2"),
        "{}",
        out.stdout
    );
    // No URL audience at all: Power BI cannot get a token (the Application ID URI check).
    assert!(out.stdout.contains("AADSTS500011"), "{}", out.stdout);

    // The other way round is a warning: fine until the manifest switches to v2.
    let file = config(
        &issuer,
        "",
        r#"audiences = ["https://api.contoso.example"]"#,
    );
    let (code, report, _) = check_json(&file).await;
    assert_eq!(code, Some(0), "{report:#}");
    let item = items(&report, "token_version")[0];
    assert_eq!(item["status"], "warn");
    assert!(
        item["fix"]
            .as_str()
            .unwrap_or_default()
            .contains("client) ID to entra.audiences")
    );
}

#[tokio::test]
async fn power_platform_clients_missing_from_the_allow_list_are_named() {
    let issuer = DevIssuer::start(loopback(), TENANT).await.expect("issuer");
    let audiences = format!(r#"audiences = ["https://api.contoso.example", "{API_CLIENT_ID}"]"#);
    // Power BI Desktop only: the service's refresh and Power Apps are left out (warning).
    let file = config(
        &issuer,
        "",
        &format!("{audiences}\nallowed_client_ids = [\"{PQ}\"]"),
    );
    let (code, report, _) = check_json(&file).await;
    assert_eq!(code, Some(0));
    let item = items(&report, "clients")[0];
    assert_eq!(item["status"], "warn");
    let message = item["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(REFRESH) && message.contains(APPS) && !message.contains(PQ),
        "{message}"
    );

    // None of them: Power BI cannot call at all.
    let file = config(
        &issuer,
        "",
        &format!("{audiences}\nallowed_client_ids = [\"{API_CLIENT_ID}\"]"),
    );
    let (code, report, _) = check_json(&file).await;
    assert_eq!(code, Some(1));
    assert!(
        the_failure(&report, "clients")["fix"]
            .as_str()
            .unwrap_or_default()
            .contains(&format!("\"{PQ}\""))
    );
}

#[tokio::test]
async fn multi_tenant_without_allowed_tenants_exits_2_with_every_problem_and_its_fix() {
    let issuer = DevIssuer::start(loopback(), TENANT).await.expect("issuer");
    let file = TempFile::with(
        "check-bad.toml",
        &format!(
            r#"
[server]
listen = "127.0.0.1:0"
colour = "blue"

[entra]
tenant_id = "organizations"
authority = "{}"
audiences = ["https://api.contoso.example"]
clock_skew = "soon"
"#,
            issuer.authority()
        ),
    );
    let out = Proc::run(&["check", "--config", file.as_str()], &[], None).await;
    assert_eq!(out.code, Some(2), "{}\n{}", out.stdout, out.stderr);
    for key in ["entra.allowed_tenants", "server.colour", "entra.clock_skew"] {
        assert!(out.stdout.contains(key), "{key} not in:\n{}", out.stdout);
    }
    assert!(
        out.stdout.contains("Directory (tenant) IDs"),
        "the fix says where to find tenant IDs:\n{}",
        out.stdout
    );
    assert_eq!(
        issuer.metadata_fetches(),
        0,
        "nothing fetched for a bad config"
    );

    let (code, report, _) = check_json(&file).await;
    assert_eq!(code, Some(2));
    assert_eq!(report["ok"], false);
    let tenants = report["config"]
        .as_array()
        .expect("config problems")
        .iter()
        .find(|i| i["id"] == "entra.allowed_tenants")
        .expect("allowed_tenants named");
    assert!(
        tenants["message"]
            .as_str()
            .unwrap_or_default()
            .contains("any Entra tenant could call")
    );
}

#[tokio::test]
async fn an_unreachable_issuer_fails_with_what_to_check() {
    let issuer = DevIssuer::start(loopback(), TENANT).await.expect("issuer");
    issuer.set_up(false);
    let file = config(
        &issuer,
        "",
        &format!(
            r#"audiences = ["https://api.contoso.example", "{API_CLIENT_ID}"]
metadata_timeout = "5s""#
        ),
    );
    let (code, report, stderr) = check_json(&file).await;
    assert_eq!(code, Some(1), "{report:#}");
    assert!(stderr.contains("failed"), "{stderr}");
    for source in ["keys.entra-v1", "keys.entra-v2"] {
        let item = the_failure(&report, source);
        assert!(
            item["message"]
                .as_str()
                .unwrap_or_default()
                .contains("HTTP status 503"),
            "{item}"
        );
        assert!(
            item["fix"]
                .as_str()
                .unwrap_or_default()
                .contains("entra.authority"),
            "{item}"
        );
    }
}

#[tokio::test]
async fn a_route_scope_power_query_never_asks_for_is_a_warning() {
    let issuer = DevIssuer::start(loopback(), TENANT).await.expect("issuer");
    let file = TempFile::with(
        "check-routes.toml",
        &format!(
            r#"
[entra]
tenant_id = "{TENANT}"
authority = "{}"
audiences = ["https://api.contoso.example", "{API_CLIENT_ID}"]

[[routes]]
path = "/ehrbase/rest/openehr/v1/query"
scopes = ["aql.read"]
"#,
            issuer.authority()
        ),
    );
    let (code, report, _) = check_json(&file).await;
    assert_eq!(code, Some(0));
    let item = items(&report, "route_scopes")[0];
    assert_eq!(item["status"], "warn");
    assert!(
        item["message"]
            .as_str()
            .unwrap_or_default()
            .contains("/ehrbase/rest/openehr/v1/query")
    );
}

#[tokio::test]
async fn a_key_file_is_shown_as_the_key_source_with_its_path_and_key_count() {
    let issuer = DevIssuer::start(loopback(), TENANT).await.expect("issuer");
    let second = entragate::dev::SigningKey::generate();
    let jwks = TempFile::with(
        "jwks.json",
        &serde_json::json!({"keys": [issuer.signing_key().jwk(None), second.jwk(None)]})
            .to_string(),
    );
    let file = config(
        &issuer,
        "",
        &format!(
            "audiences = [\"{API_CLIENT_ID}\"]\njwks_file = {:?}",
            jwks.as_str()
        ),
    );
    let text = Proc::run(&["check", "--config", file.as_str()], &[], None).await;
    for source in ["entra-v1", "entra-v2"] {
        assert!(
            text.stdout.contains(&format!(
                "ok    {source}: keys from file {} (entra.jwks_file)",
                jwks.as_str()
            )),
            "{}",
            text.stdout
        );
    }
    assert!(text.stdout.contains("2 signing key(s)"), "{}", text.stdout);
    let (_, report, _) = check_json(&file).await;
    let fetches = report["fetches"].as_array().expect("fetches");
    assert_eq!(fetches[1]["file"], jwks.as_str());
    assert_eq!(fetches[1]["keys"], 2);
    assert_eq!(
        fetches[1]["issuer"],
        format!("{}/{TENANT}/v2.0", issuer.authority())
    );
    assert_eq!(issuer.metadata_fetches(), 0, "no discovery");

    jwks.write("[]");
    let (code, report, _) = check_json(&file).await;
    assert_eq!(code, Some(2), "{report:#}");
    assert_eq!(report["config"][0]["id"], "entra.jwks_file", "{report:#}");
}
