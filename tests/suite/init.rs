//! `entragate init` and `check --app`, as an operator runs them: `init` writes the three
//! files; `entra-app.sh` (which passes `bash -n` and `shellcheck`) runs against a stand-in
//! `az` on PATH that records its calls and answers like the real one, including two rules of
//! Microsoft Graph a script can trip over; the registration it leaves, and `entra-app.json`,
//! agree with the config (`check --app` finds nothing; `check` against the loopback issuer
//! passes). Re-running the script updates instead of creating; a hand-broken application
//! object gets one named finding per fault; bad input gets named errors and nothing is
//! overwritten without `--force`.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::process::Proc;
use common::{API_CLIENT_ID, TENANT, loopback};
use entragate::dev::DevIssuer;
use serde_json::Value;

const URL: &str = "https://cdr.example.org";
const PQ: &str = "a672d62c-fc7b-4e81-a576-e60dc46e951d";
const REFRESH: &str = "b52893c8-bc2e-47fc-918b-77022b299bbc";
const APPS: &str = "7ab7862c-4c57-491e-8a45-d52a7e023983";
const HOW: &str = "run `bash scripts/test.sh` (the README's test command), which installs it";

/// A tool on PATH, or the test fails saying how to get it.
fn tool(name: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("the init tests need `{name}` (Debian package {package}), which is not installed: {HOW}")
        })
}

/// A Python that has jmespath, the query library of the real `az` (the test venv's first),
/// as its real executable (not a version manager's shim: the stand-in runs many times).
fn python() -> PathBuf {
    static FOUND: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    let venv = std::env::var_os("TEST_TOOLS_VENV").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-tools/venv"),
        PathBuf::from,
    );
    FOUND
        .get_or_init(|| {
            [venv.join("bin/python3"), PathBuf::from("python3")]
                .into_iter()
                .find_map(|py| {
                    let out = Command::new(py)
                        .args(["-c", "import sys, jmespath; print(sys.executable)"])
                        .output()
                        .ok()
                        .filter(|o| o.status.success())?;
                    let exe = String::from_utf8_lossy(&out.stdout).trim().to_owned();
                    (!exe.is_empty()).then(|| PathBuf::from(exe))
                })
        })
        .clone()
        .unwrap_or_else(|| {
            panic!("the stand-in az needs Python with jmespath (PyPI jmespath, az's own query library): {HOW} into target/test-tools/venv")
        })
}

/// The stand-in `az`: `bin/az` and its state under `dir`.
struct Az {
    bin: PathBuf,
    state: PathBuf,
}

impl Az {
    fn new(dir: &Path) -> Self {
        let bin = dir.join("bin");
        let state = dir.join("az-state");
        std::fs::create_dir_all(&bin).expect("bin dir");
        std::fs::create_dir_all(&state).expect("state dir");
        let stub = state.join("az_stub.py");
        std::fs::write(&stub, include_str!("init/az_stub.py")).expect("write stub");
        let az = bin.join("az");
        std::fs::write(
            &az,
            format!(
                "#!/bin/sh\nexec '{}' '{}' \"$@\"\n",
                python().display(),
                stub.display()
            ),
        )
        .expect("write az");
        make_executable(&az);
        Self { bin, state }
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut dirs = vec![self.bin.clone()];
        dirs.extend(std::env::split_paths(&path));
        cmd.env("PATH", std::env::join_paths(dirs).expect("PATH"))
            .env("AZ_STUB_STATE", &self.state)
            .env("AZ_STUB_TENANT", TENANT)
            .env("AZ_STUB_APP_ID", API_CLIENT_ID);
        cmd
    }

    /// `bash script`: exit code, stdout, stderr.
    fn run_script(&self, script: &Path) -> (Option<i32>, String, String) {
        let out = self.command("bash").arg(script).output().expect("run bash");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `az args…` through the stand-in; its stdout.
    fn az(&self, args: &[&str]) -> String {
        let out = self
            .command(self.bin.join("az").to_str().expect("path"))
            .args(args)
            .output()
            .expect("run az");
        assert!(
            out.status.success(),
            "az {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Every call so far, as argument lists.
    fn calls(&self) -> Vec<Vec<String>> {
        std::fs::read_to_string(self.state.join("calls.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("call line"))
            .collect()
    }

    fn count(&self, words: &[&str]) -> usize {
        self.calls()
            .iter()
            .filter(|c| c.iter().take(words.len()).eq(words.iter()))
            .count()
    }
}

#[cfg(unix)]
fn make_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

async fn init(args: &[&str]) -> common::process::Output {
    let mut all = vec!["init"];
    all.extend_from_slice(args);
    Proc::run(&all, &[], None).await
}

/// `check --app FILE --config CONFIG --format json`: exit code and report.
async fn check_app(app: &Path, config: &Path) -> (Option<i32>, Value) {
    let out = Proc::run(
        &[
            "check",
            "--app",
            app.to_str().expect("path"),
            "--config",
            config.to_str().expect("path"),
            "--format",
            "json",
        ],
        &[],
        None,
    )
    .await;
    let report = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}\n{}", out.stdout, out.stderr));
    (out.code, report)
}

/// The items that are not `ok`.
fn findings(report: &Value) -> Vec<&Value> {
    report["checklist"]
        .as_array()
        .expect("checklist")
        .iter()
        .filter(|i| i["status"] != "ok")
        .collect()
}

fn lint(script: &Path) {
    let out = Command::new("bash")
        .args(["-n", script.to_str().expect("path")])
        .output()
        .expect("bash -n");
    assert!(out.status.success(), "bash -n: {out:?}");
    let out = Command::new(tool("shellcheck", "shellcheck"))
        .arg(script)
        .output()
        .expect("shellcheck");
    assert!(
        out.status.success(),
        "shellcheck {}:\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test]
async fn init_then_entra_app_sh_then_check_app_finds_nothing_and_a_rerun_updates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("gw");
    let out_s = out.to_str().expect("path");
    let clients = "power-query,power-bi,power-platform,posit-connect";
    let done = init(&[
        "--url",
        URL,
        "--tenant",
        TENANT,
        "--clients",
        clients,
        "--out",
        out_s,
    ])
    .await;
    assert_eq!(done.code, Some(0), "{}\n{}", done.stdout, done.stderr);
    let (toml, script, manifest) = (
        out.join("entragate.toml"),
        out.join("entra-app.sh"),
        out.join("entra-app.json"),
    );
    for f in [&toml, &script, &manifest] {
        assert!(
            done.stdout.contains(&f.display().to_string()),
            "{}",
            done.stdout
        );
    }
    lint(&script);

    // The first run creates the registration and its service principal.
    let az = Az::new(dir.path());
    let (code, stdout, stderr) = az.run_script(&script);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("client ID {API_CLIENT_ID}")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("{URL}/user_impersonation")),
        "{stdout}"
    );
    assert!(stdout.contains("Posit Connect"), "{stdout}");
    assert_eq!(az.count(&["ad", "app", "create"]), 1, "{:?}", az.calls());
    assert_eq!(
        az.count(&["rest", "--method", "PATCH"]),
        2,
        "{:?}",
        az.calls()
    );
    assert_eq!(az.count(&["ad", "sp", "create"]), 1, "{:?}", az.calls());
    let text = std::fs::read_to_string(&toml).expect("config");
    assert!(
        text.contains(&format!("audiences = [\"{URL}\", \"{API_CLIENT_ID}\"]")),
        "the client ID is written into entra.audiences:\n{text}"
    );

    // What the registration now is, as `az ad app show` prints it.
    let shown: Value =
        serde_json::from_str(&az.az(&["ad", "app", "show", "--id", API_CLIENT_ID])).expect("json");
    assert_eq!(shown["identifierUris"], serde_json::json!([URL]));
    assert_eq!(shown["api"]["requestedAccessTokenVersion"], 2);
    let pre: Vec<&str> = shown["api"]["preAuthorizedApplications"]
        .as_array()
        .expect("pre-authorized")
        .iter()
        .filter_map(|a| a["appId"].as_str())
        .collect();
    assert_eq!(pre, [PQ, REFRESH, APPS]);
    let app_json = dir.path().join("app.json");
    std::fs::write(&app_json, shown.to_string()).expect("app.json");

    for app in [&manifest, &app_json] {
        let (code, report) = check_app(app, &toml).await;
        assert_eq!(code, Some(0), "{report:#}");
        assert!(
            findings(&report).is_empty(),
            "{}: {report:#}",
            app.display()
        );
        assert!(
            report["fetches"].as_array().is_some_and(Vec::is_empty),
            "offline"
        );
    }
    let (_, report) = check_app(&app_json, &toml).await;
    let app_id = report["checklist"]
        .as_array()
        .and_then(|items| items.iter().find(|i| i["id"] == "app.app_id"))
        .expect("app.app_id");
    assert!(
        app_id["message"]
            .as_str()
            .unwrap_or_default()
            .contains(API_CLIENT_ID),
        "the appId is compared: {app_id}"
    );

    // A working config: `check` (pointed at the loopback issuer) accepts it.
    let issuer = DevIssuer::start(loopback(), TENANT).await.expect("issuer");
    let online = Proc::run(
        &["check", "--config", toml.to_str().expect("path")],
        &[("ENTRAGATE_ENTRA__AUTHORITY", issuer.authority())],
        None,
    )
    .await;
    assert_eq!(online.code, Some(0), "{}\n{}", online.stdout, online.stderr);
    assert!(online.stdout.contains("All is well"), "{}", online.stdout);

    // Run again: the registration is found and updated, nothing is added twice.
    let (code, stdout, stderr) = az.run_script(&script);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("updating the app registration {API_CLIENT_ID}")),
        "{stdout}"
    );
    assert_eq!(az.count(&["ad", "app", "create"]), 1);
    assert_eq!(az.count(&["ad", "sp", "create"]), 1);
    let text = std::fs::read_to_string(&toml).expect("config");
    assert_eq!(text.matches(API_CLIENT_ID).count(), 1, "{text}");

    // A fresh `init --force` has new scope and role IDs; the script keeps the registration's
    // (the stand-in, like Graph, refuses to change an enabled scope's ID).
    let again = init(&["--url", URL, "--tenant", TENANT, "--out", out_s, "--force"]).await;
    assert_eq!(again.code, Some(0), "{}", again.stderr);
    let (code, stdout, stderr) = az.run_script(&script);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert_eq!(az.count(&["ad", "app", "create"]), 1);
    let reshown = az.az(&["ad", "app", "show", "--id", API_CLIENT_ID]);
    std::fs::write(&app_json, &reshown).expect("app.json");
    let (code, report) = check_app(&app_json, &toml).await;
    assert_eq!(code, Some(0), "{report:#}");
    assert!(findings(&report).is_empty(), "{report:#}");
}

#[tokio::test]
async fn a_run_graph_refused_half_way_is_finished_by_the_next_run_without_a_second_registration() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("gw");
    let done = init(&["--url", URL, "--out", out.to_str().expect("p")]).await;
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    let script = out.join("entra-app.sh");
    lint(&script);
    let az = Az::new(dir.path());

    // cdr.example.org is not (yet) a verified domain of the tenant: Graph refuses the URI
    // after the registration was created.
    let mut cmd = az.command("bash");
    cmd.arg(&script)
        .env("AZ_STUB_VERIFIED_DOMAINS", "contoso.example");
    let first = cmd.output().expect("bash");
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert_eq!(first.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("verified domain"),
        "the hint names the cause: {stderr}"
    );
    assert_eq!(az.count(&["ad", "app", "create"]), 1);

    // Once it is verified, the next run finds the registration by its name and finishes it.
    let mut cmd = az.command("bash");
    cmd.arg(&script).env(
        "AZ_STUB_VERIFIED_DOMAINS",
        "contoso.example,cdr.example.org",
    );
    let second = cmd.output().expect("bash");
    assert_eq!(second.status.code(), Some(0), "{second:?}");
    assert_eq!(az.count(&["ad", "app", "create"]), 1, "{:?}", az.calls());
    let text = std::fs::read_to_string(out.join("entragate.toml")).expect("config");
    // Without --tenant, the tenant az is signed in to is written into the config.
    assert!(
        text.contains(&format!("tenant_id = \"{TENANT}\"")),
        "{text}"
    );
    assert!(text.contains(&format!("\"{API_CLIENT_ID}\"]")), "{text}");
}

#[tokio::test]
async fn the_stand_in_az_refuses_what_graph_refuses() {
    // A test of the test: a script that pre-authorized a scope in the request creating it, or
    // that changed an enabled scope's ID, would fail against the stand-in as against Graph.
    let dir = tempfile::tempdir().expect("tempdir");
    let az = Az::new(dir.path());
    let object = az.az(&[
        "ad",
        "app",
        "create",
        "--display-name",
        "x",
        "--query",
        "id",
        "-o",
        "tsv",
    ]);
    let uri = format!(
        "https://graph.microsoft.com/v1.0/applications/{}",
        object.trim()
    );
    let scope =
        |id: &str| serde_json::json!({"id": id, "value": "user_impersonation", "isEnabled": true});
    let patch = |body: Value| {
        az.command(az.bin.join("az").to_str().expect("path"))
            .args([
                "rest",
                "--method",
                "PATCH",
                "--uri",
                &uri,
                "--body",
                &body.to_string(),
            ])
            .output()
            .expect("az rest")
    };
    let one_request = patch(serde_json::json!({"api": {
        "oauth2PermissionScopes": [scope("00000000-0000-0000-0000-00000000000a")],
        "preAuthorizedApplications": [{"appId": PQ, "delegatedPermissionIds": ["00000000-0000-0000-0000-00000000000a"]}]
    }}));
    assert!(!one_request.status.success());
    assert!(String::from_utf8_lossy(&one_request.stderr).contains("cannot be found"));
    let first = patch(
        serde_json::json!({"api": {"oauth2PermissionScopes": [scope("00000000-0000-0000-0000-00000000000a")]}}),
    );
    assert!(first.status.success(), "{first:?}");
    let changed = patch(
        serde_json::json!({"api": {"oauth2PermissionScopes": [scope("00000000-0000-0000-0000-00000000000b")]}}),
    );
    assert!(!changed.status.success());
    assert!(String::from_utf8_lossy(&changed.stderr).contains("disabled first"));
}

#[tokio::test]
async fn multi_tenant_init_gets_its_tenant_list_started_by_the_script() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path();
    let done = init(&[
        "--url",
        URL,
        "--tenant",
        "organizations",
        "--out",
        out.to_str().expect("p"),
    ])
    .await;
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    lint(&out.join("entra-app.sh"));
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("entra-app.json")).expect("json"))
            .expect("json");
    assert_eq!(manifest["signInAudience"], "AzureADMultipleOrgs");
    // Before the script: the empty tenant list is the one problem, named by its key.
    let toml = out.join("entragate.toml");
    let (code, report) = check_app(&out.join("entra-app.json"), &toml).await;
    assert_eq!(code, Some(2), "{report:#}");
    let keys: Vec<&str> = report["config"]
        .as_array()
        .expect("problems")
        .iter()
        .filter_map(|p| p["id"].as_str())
        .collect();
    assert_eq!(keys, ["entra.allowed_tenants"]);

    let az = Az::new(&dir.path().join("az"));
    let (code, stdout, stderr) = az.run_script(&out.join("entra-app.sh"));
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let text = std::fs::read_to_string(&toml).expect("config");
    assert!(
        text.contains(&format!("allowed_tenants = [\"{TENANT}\"]")),
        "{text}"
    );
    let app_json = dir.path().join("app.json");
    std::fs::write(
        &app_json,
        az.az(&["ad", "app", "show", "--id", API_CLIENT_ID]),
    )
    .expect("w");
    let (code, report) = check_app(&app_json, &toml).await;
    assert_eq!(code, Some(0), "{report:#}");
    assert!(findings(&report).is_empty(), "{report:#}");
}

#[tokio::test]
async fn a_hand_broken_application_gets_one_named_finding_per_fault() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path();
    let done = init(&[
        "--url",
        URL,
        "--tenant",
        TENANT,
        "--out",
        out.to_str().expect("p"),
    ])
    .await;
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    // The config as the script leaves it, plus a route only Power Query may use.
    let toml = out.join("entragate.toml");
    let text = std::fs::read_to_string(&toml).expect("config").replace(
        &format!("audiences = [\"{URL}\"]"),
        &format!("audiences = [\"{URL}\", \"{API_CLIENT_ID}\"]"),
    );
    std::fs::write(
        &toml,
        format!("{text}\n[[routes]]\npath = \"/reports\"\nscopes = [\"user_impersonation\"]\nclients = [\"{PQ}\"]\n"),
    )
    .expect("config");
    let mut app: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("entra-app.json")).expect("json"))
            .expect("json");
    app["appId"] = API_CLIENT_ID.into();
    let file = out.join("app.json");
    std::fs::write(&file, app.to_string()).expect("w");
    let (code, report) = check_app(&file, &toml).await;
    assert_eq!(code, Some(0), "the unbroken one agrees: {report:#}");
    assert!(findings(&report).is_empty(), "{report:#}");

    // Six faults.
    let other = "99999999-9999-4999-8999-999999999999";
    app["identifierUris"] = serde_json::json!([]);
    app["appId"] = other.into();
    app["signInAudience"] = "AzureADMultipleOrgs".into();
    app["api"]["oauth2PermissionScopes"][0]["value"] = "Reports.Read".into();
    app["api"]["preAuthorizedApplications"] = serde_json::json!(
        app["api"]["preAuthorizedApplications"]
            .as_array()
            .expect("pre")
            .iter()
            .filter(|a| a["appId"] != PQ)
            .collect::<Vec<_>>()
    );
    let roles: Vec<Value> = app["appRoles"]
        .as_array()
        .expect("roles")
        .iter()
        .filter(|r| r["value"] != "CDR.Write.All")
        .cloned()
        .collect();
    app["appRoles"] = Value::Array(roles);
    std::fs::write(&file, app.to_string()).expect("w");

    let (code, report) = check_app(&file, &toml).await;
    assert_eq!(code, Some(1), "{report:#}");
    let found = findings(&report);
    let ids: Vec<&str> = found.iter().filter_map(|i| i["id"].as_str()).collect();
    assert_eq!(
        ids,
        [
            "app.identifier_uris",
            "app.app_id",
            "app.sign_in_audience",
            "app.scopes",
            "app.roles",
            "app.pre_authorized"
        ],
        "{report:#}"
    );
    let text = |i: usize| format!("{} {}", found[i]["message"], found[i]["fix"]);
    for (i, names) in [
        (0, &[URL, "AADSTS500011", "--identifier-uris"][..]),
        (1, &[other, "audience_mismatch", API_CLIENT_ID][..]),
        (
            2,
            &["AzureADMultipleOrgs", "--sign-in-audience AzureADMyOrg"][..],
        ),
        (
            3,
            &["user_impersonation", "AADSTS650053", "Expose an API"][..],
        ),
        (4, &["CDR.Write.All", "App roles"][..]),
        (5, &[PQ, "AADSTS650057", "Add a client application"][..]),
    ] {
        for name in names {
            assert!(text(i).contains(name), "{name} not in {}", text(i));
        }
    }
    assert_eq!(found[2]["status"], "warn", "{}", found[2]);

    // The same in check's text format.
    let out = Proc::run(
        &[
            "check",
            "--app",
            file.to_str().expect("p"),
            "--config",
            toml.to_str().expect("p"),
        ],
        &[],
        None,
    )
    .await;
    assert_eq!(out.code, Some(1));
    assert!(out.stdout.contains("App registration "), "{}", out.stdout);
    assert_eq!(out.stdout.matches("  FAIL  ").count(), 5, "{}", out.stdout);
    assert!(out.stdout.contains("5 problem(s) to fix"), "{}", out.stdout);

    // Not an application object at all: a usage error naming the file.
    let junk = out_file(dir.path(), "junk.json", "{\"value\": []}");
    let bad = Proc::run(
        &[
            "check",
            "--app",
            junk.to_str().expect("p"),
            "--config",
            toml.to_str().expect("p"),
        ],
        &[],
        None,
    )
    .await;
    assert_eq!(bad.code, Some(2));
    assert!(
        bad.stderr.contains("junk.json") && bad.stderr.contains("empty list"),
        "{}",
        bad.stderr
    );
}

fn out_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p
}

#[tokio::test]
async fn bad_input_gets_a_named_error_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("gw");
    let out_s = out.to_str().expect("p");
    for (args, expected) in [
        (
            &["--url", "https://cdr.example.org/ehrbase"][..],
            "has a path",
        ),
        (
            &["--url", "https://cdr.example.org/?x=1"][..],
            "has a query",
        ),
        (
            &["--url", "http://cdr.example.org"][..],
            "Entra requires https",
        ),
        (
            &["--url", URL, "--clients", "power-bi,tableau"][..],
            "unknown client tableau",
        ),
        (
            &["--url", URL, "--tenant", "contoso"][..],
            "--tenant \"contoso\" is neither a tenant ID",
        ),
    ] {
        let mut all = args.to_vec();
        all.extend(["--out", out_s]);
        let done = init(&all).await;
        assert_eq!(done.code, Some(2), "{args:?}: {}", done.stdout);
        assert!(done.stderr.contains(expected), "{args:?}: {}", done.stderr);
        assert!(!out.exists(), "{args:?} wrote something");
    }
    // api:// is the one non-https Application ID URI Entra takes.
    let done = init(&["--url", "api://cdr-api", "--tenant", TENANT, "--out", out_s]).await;
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    let manifest = std::fs::read_to_string(out.join("entra-app.json")).expect("json");
    assert!(manifest.contains("\"api://cdr-api\""), "{manifest}");
    lint(&out.join("entra-app.sh"));
}

#[tokio::test]
async fn init_never_overwrites_without_force() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().to_str().expect("p");
    let first = init(&["--url", URL, "--tenant", TENANT, "--out", out]).await;
    assert_eq!(first.code, Some(0), "{}", first.stderr);
    let toml = dir.path().join("entragate.toml");
    let edited = format!(
        "{}\n# my edit\n",
        std::fs::read_to_string(&toml).expect("read")
    );
    std::fs::write(&toml, &edited).expect("write");
    // Only the script exists elsewhere: still no file is written.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).expect("dir");
    std::fs::write(other.join("entra-app.sh"), "mine").expect("write");

    let second = init(&["--url", URL, "--tenant", TENANT, "--out", out]).await;
    assert_eq!(second.code, Some(2));
    assert!(
        second.stderr.contains("entragate.toml") && second.stderr.contains("--force"),
        "{}",
        second.stderr
    );
    assert_eq!(std::fs::read_to_string(&toml).expect("read"), edited);
    let third = init(&["--url", URL, "--out", other.to_str().expect("p")]).await;
    assert_eq!(third.code, Some(2));
    assert!(!other.join("entragate.toml").exists());
    assert_eq!(
        std::fs::read_to_string(other.join("entra-app.sh")).expect("r"),
        "mine"
    );

    let forced = init(&["--url", URL, "--tenant", TENANT, "--out", out, "--force"]).await;
    assert_eq!(forced.code, Some(0), "{}", forced.stderr);
    assert!(
        !std::fs::read_to_string(&toml)
            .expect("read")
            .contains("# my edit")
    );
}
