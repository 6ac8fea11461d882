//! The dev issuer signs in real clients: MSAL for Python (from PyPI, installed by
//! `scripts/test.sh` into the test venv) gets tokens from the issuer's HTTPS endpoints with
//! the generated CA, in the client-credentials and the authorization-code (PKCE) flows, and
//! the gateway accepts them; MSAL sees Entra's errors for a wrong secret, a replayed code,
//! a wrong PKCE verifier and a scope not granted. The v1 token endpoint (`resource=`) and
//! the authorize page's refusals are checked with a plain HTTP client.

use std::path::PathBuf;
use std::process::Command;

use crate::common::{self, API_CLIENT_ID, AUDIENCE, Extra, Harness, TENANT, loopback};
use entragate::config::{DEV_APP_CLIENT_ID, DEV_APP_SECRET, Dev, POWER_QUERY_CLIENT_ID};
use entragate::dev::{DevIssuer, EchoUpstream};
use serde_json::Value;

/// The routes the tokens are tried on: an app role for `/app`, a delegated scope for `/user`.
const ROUTES: &str = r#"
[[routes]]
path = "/app"
roles = ["AQL.Read.All"]

[[routes]]
path = "/user"
scopes = ["user_impersonation"]
"#;

/// The test venv's python with `msal` importable, or a failure saying how to get it.
fn msal_python() -> PathBuf {
    let venv = std::env::var_os("TEST_TOOLS_VENV")
        .filter(|v| !v.is_empty())
        .map_or_else(
            || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-tools/venv"),
            PathBuf::from,
        );
    let python = venv.join("bin/python");
    let ok = Command::new(&python)
        .args(["-c", "import msal, requests"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "the MSAL test needs the real `msal` (PyPI) in the test venv {}, which is missing: run `bash scripts/test.sh` (the README's test command), which installs it, or set TEST_TOOLS_VENV to a venv with msal",
        venv.display()
    );
    python
}

/// The dev tenant the tests use: the suite's tenant and API, the default users and
/// clients, one more exposed scope that no client is granted, HTTPS on a free port.
fn dev() -> Dev {
    Dev {
        tenant_id: TENANT.to_owned(),
        api_client_id: API_CLIENT_ID.to_owned(),
        api_uris: vec![AUDIENCE.to_owned()],
        scopes: vec!["user_impersonation".to_owned(), "Reports.Read".to_owned()],
        https_listen: loopback(),
        ..Dev::default()
    }
}

async fn harness(dev: Dev) -> Harness {
    let issuer = DevIssuer::start_with(loopback(), dev)
        .await
        .expect("dev issuer");
    let echo = EchoUpstream::start(loopback()).await.expect("echo");
    let extra = Extra {
        tail: ROUTES.to_owned(),
        ..Extra::default()
    };
    let config = common::load(&common::config_toml(&issuer, &echo.url(), &extra));
    let h = Harness::launch(issuer, echo, &config).await;
    h.wait_ready().await;
    h
}

fn code(v: &Value) -> Option<u64> {
    v["error_codes"][0].as_u64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn msal_python_signs_in_with_both_flows_and_the_gateway_accepts() {
    let python = msal_python();
    let h = harness(dev()).await;
    let args = serde_json::json!({
        "authority": h.issuer.https_authority().expect("https on"),
        "ca": h.issuer.ca_file().expect("CA file"),
        "app_client_id": DEV_APP_CLIENT_ID,
        "app_secret": DEV_APP_SECRET,
        "public_client_id": POWER_QUERY_CLIENT_ID,
        "user": "adele@contoso.example",
        "resource": AUDIENCE,
        "gateway": format!("http://{}", h.gw.addr),
    });
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/suite/dev_msal.py");
    let out = tokio::task::spawn_blocking(move || {
        // requests lets these override a session's `verify=` (MSAL's), psf/requests#3829.
        Command::new(python)
            .env_remove("REQUESTS_CA_BUNDLE")
            .env_remove("CURL_CA_BUNDLE")
            .arg(script)
            .arg(args.to_string())
            .output()
            .expect("python runs")
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "MSAL script failed:\n{stdout}\n{stderr}"
    );
    let r: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(r["msal_version"], "1.39.0", "{r:#}");

    // Client credentials: an app token with the granted roles, accepted on the role route.
    let cc = &r["client_credentials"];
    assert_eq!(cc["error"], Value::Null, "{cc:#}");
    let c = &cc["claims"];
    assert_eq!(c["ver"], "2.0");
    assert_eq!(c["aud"], API_CLIENT_ID);
    assert_eq!(c["azp"], DEV_APP_CLIENT_ID);
    assert_eq!(c["azpacr"], "1");
    assert_eq!(c["idtyp"], "app");
    assert_eq!(c["tid"], TENANT);
    assert_eq!(c["roles"], serde_json::json!(["AQL.Read.All"]));
    assert!(c.get("scp").is_none(), "{c:#}");
    assert_eq!(
        c["iss"],
        h.issuer.issuer(entragate::keys::TokenVersion::V2, TENANT)
    );
    assert_eq!(cc["gateway"], 200, "{cc:#}");

    // A wrong secret: MSAL hands back Entra's invalid_client.
    let w = &r["wrong_secret"];
    assert_eq!(w["error"], "invalid_client", "{w:#}");
    assert_eq!(code(w), Some(7_000_215), "{w:#}");
    assert!(
        w["error_description"]
            .as_str()
            .is_some_and(|d| d.starts_with("AADSTS7000215: ")),
        "{w:#}"
    );

    // Authorization code with PKCE S256: a user token with the granted scope.
    let ac = &r["auth_code"];
    assert_eq!(ac["authorize_status"], 302, "{ac:#}");
    assert_eq!(ac["redirect"], "http://localhost:8400", "{ac:#}");
    assert_eq!(ac["pkce_method"], serde_json::json!(["S256"]));
    assert_eq!(ac["error"], Value::Null, "{ac:#}");
    let c = &ac["claims"];
    assert_eq!(c["scp"], "user_impersonation", "{c:#}");
    assert_eq!(c["azp"], POWER_QUERY_CLIENT_ID);
    assert_eq!(c["azpacr"], "0", "a public client");
    assert_eq!(c["oid"], "00000000-0000-4000-8000-00000000a11e");
    assert_eq!(c["preferred_username"], "adele@contoso.example");
    assert!(
        c.get("idtyp").is_none() && c.get("roles").is_none(),
        "{c:#}"
    );
    assert_eq!(ac["id_token_claims"]["aud"], POWER_QUERY_CLIENT_ID);
    assert_eq!(
        ac["has_refresh_token"], true,
        "MSAL asks for offline_access"
    );
    assert_eq!(ac["gateway"], 200, "{ac:#}");

    // Single use, bound to the PKCE challenge.
    let replay = &r["code_replay"];
    assert_eq!(
        (replay["error"].as_str(), code(replay)),
        (Some("invalid_grant"), Some(70000)),
        "{replay:#}"
    );
    let wv = &r["wrong_verifier"];
    assert_eq!(
        (wv["error"].as_str(), code(wv)),
        (Some("invalid_grant"), Some(501_481)),
        "{wv:#}"
    );

    // Refresh: MSAL's silent renewal through the refresh token.
    assert_eq!(r["accounts"], serde_json::json!(["adele@contoso.example"]));
    let rf = &r["refresh"];
    assert_eq!(rf["error"], Value::Null, "{rf:#}");
    assert_eq!(rf["claims"]["scp"], "user_impersonation");
    assert_ne!(rf["claims"]["uti"], ac["claims"]["uti"], "a new token");
    assert_eq!(rf["gateway"], 200, "{rf:#}");

    // A scope not granted: AADSTS65001, at the authorize step and at the token endpoint.
    let na = &r["not_granted_authorize"];
    assert_eq!(na["error"], "consent_required", "{na:#}");
    assert!(
        na["error_description"]
            .as_str()
            .is_some_and(|d| d.starts_with("AADSTS65001: ")),
        "{na:#}"
    );
    let nr = &r["not_granted_refresh"];
    assert_eq!(
        (nr["error"].as_str(), code(nr)),
        (Some("invalid_grant"), Some(65001)),
        "{nr:#}"
    );
}

async fn post(h: &Harness, path: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let r = h
        .client
        .post(format!("{}/{TENANT}/{path}", h.issuer.authority()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(
            form.iter()
                .map(|(k, v)| format!("{k}={}", urlencode(v)))
                .collect::<Vec<_>>()
                .join("&"),
        )
        .send()
        .await
        .expect("token request");
    let status = r.status().as_u16();
    (status, r.json().await.expect("JSON answer"))
}

fn urlencode(v: &str) -> String {
    percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn claims(token: &str) -> Value {
    use base64::Engine as _;
    let body = token.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(body)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("claims")
}

#[tokio::test]
async fn the_v1_token_endpoint_takes_a_resource_and_gives_v1_tokens_when_the_api_asks() {
    let h = harness(Dev {
        access_token_version: 1,
        ..dev()
    })
    .await;
    let (status, body) = post(
        &h,
        "oauth2/token",
        &[
            ("grant_type", "client_credentials"),
            ("client_id", DEV_APP_CLIENT_ID),
            ("client_secret", DEV_APP_SECRET),
            ("resource", AUDIENCE),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body:#}");
    assert_eq!(body["resource"], AUDIENCE);
    assert!(
        body["expires_in"].is_string(),
        "v1 writes numbers as strings"
    );
    let token = body["access_token"].as_str().expect("access_token");
    let c = claims(token);
    assert_eq!(c["ver"], "1.0");
    assert_eq!(c["aud"], AUDIENCE, "v1: the resource as requested");
    assert_eq!(c["iss"], format!("https://sts.windows.net/{TENANT}/"));
    assert_eq!(c["appid"], DEV_APP_CLIENT_ID);
    assert_eq!(c["appidacr"], "1");
    assert_eq!(c["idtyp"], "app");
    let r = h
        .client
        .get(format!("http://{}/app/x", h.gw.addr))
        .bearer_auth(token)
        .send()
        .await
        .expect("gateway");
    assert_eq!(r.status(), 200);
}

/// A token request's form fields.
type Form<'a> = &'a [(&'a str, &'a str)];

#[tokio::test]
async fn token_errors_have_entras_shape_and_codes() {
    let h = harness(dev()).await;
    let unknown = "0badc0de-0000-4000-8000-000000000000";
    let cases: [(Form<'_>, u16, &str, u64); 4] = [
        (
            &[
                ("grant_type", "client_credentials"),
                ("client_id", unknown),
                ("client_secret", "x"),
                ("scope", "https://api.contoso.example/.default"),
            ],
            400,
            "unauthorized_client",
            700_016,
        ),
        (
            &[
                ("grant_type", "client_credentials"),
                ("client_id", DEV_APP_CLIENT_ID),
                ("client_secret", DEV_APP_SECRET),
                ("scope", "https://api.contoso.example/user_impersonation"),
            ],
            400,
            "invalid_scope",
            1_002_012,
        ),
        (
            &[
                ("grant_type", "authorization_code"),
                ("client_id", POWER_QUERY_CLIENT_ID),
                ("code", "dev.code.never-issued"),
                ("redirect_uri", "http://localhost"),
            ],
            400,
            "invalid_grant",
            70000,
        ),
        (
            &[
                ("grant_type", "password"),
                ("client_id", POWER_QUERY_CLIENT_ID),
            ],
            400,
            "unsupported_grant_type",
            70003,
        ),
    ];
    for (form, status, error, number) in cases {
        let (got, body) = post(&h, "oauth2/v2.0/token", form).await;
        assert_eq!(
            (got, body["error"].as_str()),
            (status, Some(error)),
            "{body:#}"
        );
        assert_eq!(code(&body), Some(number), "{body:#}");
        let desc = body["error_description"].as_str().expect("description");
        assert!(desc.starts_with(&format!("AADSTS{number}: ")), "{desc}");
        for field in ["timestamp", "trace_id", "correlation_id"] {
            assert!(body[field].is_string(), "{field} in {body:#}");
        }
        assert!(!desc.contains(DEV_APP_SECRET), "a secret in an answer");
    }
}

#[tokio::test]
async fn the_authorize_page_refuses_plain_pkce_and_lists_users_without_a_hint() {
    let h = harness(dev()).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let url = |extra: &str| {
        format!(
            "{}/{TENANT}/oauth2/v2.0/authorize?client_id={POWER_QUERY_CLIENT_ID}&response_type=code&redirect_uri=http%3A%2F%2Flocalhost&scope=https%3A%2F%2Fapi.contoso.example%2Fuser_impersonation&state=s1{extra}",
            h.issuer.authority()
        )
    };
    // A plain challenge goes back to the client as an error.
    let r = client
        .get(url(
            "&code_challenge=abc&code_challenge_method=plain&login_hint=adele@contoso.example",
        ))
        .send()
        .await
        .expect("authorize");
    assert_eq!(r.status(), 302);
    let location = r.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    assert!(
        location.starts_with("http://localhost?error=invalid_request"),
        "{location}"
    );
    assert!(location.contains("state=s1"), "{location}");
    assert!(!location.contains("code="), "{location}");
    // No login_hint: the page lists the dev users, each a link that signs in.
    let challenge = "ngF5GsXcbwljx6u133FFr3Xht9xooA_DuaX_3QwODtc";
    let r = client
        .get(url(&format!(
            "&code_challenge={challenge}&code_challenge_method=S256"
        )))
        .send()
        .await
        .expect("authorize");
    assert_eq!(r.status(), 200);
    let page = r.text().await.expect("page");
    assert!(
        page.contains("Adele Vance") && page.contains("Alex Wilber"),
        "{page}"
    );
    assert!(page.contains("login_hint=alex%40contoso.example"), "{page}");
    // A redirect URI the client did not register is never redirected to.
    let r = client
        .get(url("").replace("http%3A%2F%2Flocalhost", "https%3A%2F%2Fevil.example"))
        .send()
        .await
        .expect("authorize");
    assert_eq!(r.status(), 400);
    assert!(r.text().await.expect("page").contains("AADSTS50011"));
}

/// Power BI Desktop's sign-in, by hand: the v1 authorize endpoint with `resource=` (the
/// URL's scheme and host), Power Query's public client and redirect URI, PKCE; then the v1
/// token endpoint. With a v1 API the token is v1, its `aud` the resource as requested.
#[tokio::test]
async fn power_querys_v1_sign_in_gets_a_v1_user_token_the_gateway_accepts() {
    let h = harness(Dev {
        access_token_version: 1,
        ..dev()
    })
    .await;
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let redirect = "https://oauth.powerbi.com/views/oauthredirect.html";
    let verifier = "dBjftJeZ4CVP-mJ92K27uhbUJU1p1r_wW1gFWFOEjXk";
    let challenge = "ngF5GsXcbwljx6u133FFr3Xht9xooA_DuaX_3QwODtc";
    let r = no_redirects
        .get(format!(
            "{}/{TENANT}/oauth2/authorize?client_id={POWER_QUERY_CLIENT_ID}&response_type=code&redirect_uri={}&resource={}&state=pq&code_challenge={challenge}&code_challenge_method=S256&login_hint=alex%40contoso.example",
            h.issuer.authority(),
            urlencode(redirect),
            urlencode(AUDIENCE),
        ))
        .send()
        .await
        .expect("authorize");
    assert_eq!(r.status(), 302);
    let location = r.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    let query = location
        .strip_prefix(&format!("{redirect}?"))
        .unwrap_or_else(|| panic!("{location}"));
    let code = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("code="))
        .expect("a code");
    assert!(query.contains("state=pq"), "{location}");
    let (status, body) = post(
        &h,
        "oauth2/token",
        &[
            ("grant_type", "authorization_code"),
            ("client_id", POWER_QUERY_CLIENT_ID),
            ("code", code),
            ("redirect_uri", redirect),
            ("code_verifier", verifier),
            ("resource", AUDIENCE),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body:#}");
    assert_eq!(body["scope"], "user_impersonation");
    assert!(
        body.get("refresh_token").is_none(),
        "no offline_access asked"
    );
    let token = body["access_token"].as_str().expect("access_token");
    let c = claims(token);
    assert_eq!(c["ver"], "1.0");
    assert_eq!(c["aud"], AUDIENCE);
    assert_eq!(c["appid"], POWER_QUERY_CLIENT_ID);
    assert_eq!(c["appidacr"], "0");
    assert_eq!(c["upn"], "alex@contoso.example");
    assert_eq!(c["scp"], "user_impersonation");
    let r = h
        .client
        .get(format!("http://{}/user/ehr", h.gw.addr))
        .bearer_auth(token)
        .send()
        .await
        .expect("gateway");
    assert_eq!(r.status(), 200);
}
