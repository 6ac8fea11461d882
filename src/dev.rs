//! `entragate dev`: the whole flow on one machine with no Entra access.
//!
//! Starts an Entra-shaped issuer and an echo upstream on loopback, the gateway between them
//! (configured through the same TOML loading as `serve`), then shows, and runs itself, the
//! `curl` lines a newcomer can paste: Power Query's empty-bearer probe, a v1 and a v2 token
//! accepted, a wrong-audience token refused, and a client-credentials token from the
//! issuer's Entra-style token endpoint accepted. The issuer also speaks Entra's OAuth
//! endpoints over HTTPS (with a CA it generates) for real clients such as MSAL; its tenant,
//! API, users and clients come from a `[dev]` section ([`crate::config::Dev`]).

pub mod echo;
mod endpoints;
pub mod issuer;
pub mod oauth;
pub mod tls;

use std::net::SocketAddr;
use std::time::Duration;

pub use echo::EchoUpstream;
pub use issuer::{DevIssuer, POWER_QUERY_CLIENT_ID, SigningKey, sign_jwt};

use crate::app;
use crate::config::{Config, DEV_APP_SECRET, Dev};

/// The demo tenant.
pub use crate::config::DEV_TENANT;

/// Options of `entragate dev`.
#[derive(Debug, Clone)]
pub struct DevOptions {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    /// Run the demo requests, print them, and exit (0 when every answer was as expected).
    pub once: bool,
    /// A file whose `[dev]` section is read (the rest of it is not used).
    pub config: Option<std::path::PathBuf>,
}

/// The `[dev]` settings: from the file's `[dev]` section and the environment, or the
/// defaults.
fn dev_settings(path: Option<&std::path::Path>) -> Result<Dev, crate::config::ConfigError> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    let text = match path {
        Some(p) => std::fs::read_to_string(p).map_err(|e| {
            crate::config::ConfigError::single(
                "config",
                format!("cannot read {}: {e}", p.display()),
            )
        })?,
        None => String::new(),
    };
    Config::load_dev(&text, &env)
}

/// Runs the demo. Returns whether every demo request got the expected answer.
///
/// # Errors
/// When a listener cannot be bound or the gateway cannot start.
pub async fn run(opts: DevOptions) -> Result<bool, Box<dyn std::error::Error>> {
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let dev = dev_settings(opts.config.as_deref())?;
    let tenant = dev.tenant_id.clone();
    let issuer = DevIssuer::start_with(any, dev).await?;
    let echo = EchoUpstream::start(any).await?;

    let listener = bind_or_any(opts.listen).await;
    let admin_listener = bind_or_any(opts.admin_listen).await;
    let gateway_url = format!("http://{listener}");
    issuer.set_default_audience(&gateway_url);
    // Power BI asks for the URL's scheme and host as the resource: the API answers to it.
    issuer.add_api_uri(&gateway_url);
    let dev = issuer.dev();
    let audiences = std::iter::once(gateway_url.clone())
        .chain(dev.api_uris.iter().cloned())
        .chain(std::iter::once(dev.api_client_id.clone()))
        .fold(Vec::<String>::new(), |mut all, a| {
            if !all.contains(&a) {
                all.push(a);
            }
            all
        })
        .iter()
        .map(|a| format!("{a:?}"))
        .collect::<Vec<_>>()
        .join(", ");

    let toml = format!(
        r#"# The configuration this demo runs with (entragate serve reads the same keys).
[server]
listen = "{listener}"
admin_listen = "{admin_listener}"

[upstream]
url = "{upstream}"

[entra]
tenant_id = "{tenant}"
authority = "{authority}"   # the embedded issuer; in production https://login.microsoftonline.com
# Power BI asks Entra for a token whose audience is the URL's scheme+host (v1 tokens);
# v2 tokens carry the API's client ID:
audiences = [{audiences}]
jwks_min_refetch = "10s"
{cloud}"#,
        upstream = echo.url(),
        authority = issuer.authority(),
        cloud = dev.cloud.map_or_else(String::new, |c| format!(
            "# dev.cloud: the issuer's metadata and tokens carry this cloud's issuers\ncloud = \"{}\"\n",
            c.as_str()
        )),
    );
    let config = Config::load(&toml, &[], &|p| std::fs::read_to_string(p))?;
    let _log = crate::telemetry::init(config.server.log_format == crate::config::LogFormat::Json);
    let running = app::start(&config).await?;
    wait_ready(&running).await;

    let gw = format!("http://{}", running.addr);
    let mint = format!("http://{}/dev/token", issuer.addr);
    println!(
        "\nentragate dev: an Entra-shaped issuer, an echo upstream and the gateway, all on loopback.\n"
    );
    println!(
        "  gateway   {gw}   (admin: http://{}/readyz, /metrics)",
        running.admin_addr
    );
    println!("  issuer    {}   (tenant {tenant})", issuer.authority());
    println!("  upstream  {}   (echoes what it receives)\n", echo.url());
    print_sign_in(&issuer, &dev);
    println!("{toml}");

    let client = reqwest::Client::new();
    let mut all_ok = true;
    let path = "/ehrbase/rest/openehr/v1/query/aql?q=SELECT%20e/ehr_id/value%20FROM%20EHR%20e";

    println!("# 1. Power Query's probe: an empty bearer gets 401 and where to sign in");
    println!("curl -i -H 'Authorization: Bearer' '{gw}{path}'");
    let r = client
        .get(format!("{gw}{path}"))
        .header("Authorization", "Bearer")
        .send()
        .await?;
    all_ok &= show(&r, 401, "www-authenticate");

    for (n, ver) in [(2, 1), (3, 2)] {
        println!(
            "\n# {n}. a v{ver} token (as Power BI gets for the API's Application ID URI) is accepted"
        );
        println!("TOKEN=$(curl -s '{mint}?ver={ver}')");
        println!("curl -i -H \"Authorization: Bearer $TOKEN\" '{gw}{path}'");
        let token = client
            .get(format!("{mint}?ver={ver}"))
            .send()
            .await?
            .text()
            .await?;
        let r = client
            .get(format!("{gw}{path}"))
            .bearer_auth(&token)
            .send()
            .await?;
        all_ok &= show(&r, 200, "content-type");
        let body = r.text().await.unwrap_or_default();
        let identity: Vec<String> = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("headers").cloned())
            .and_then(|h| h.as_object().cloned())
            .map(|h| {
                h.iter()
                    .filter(|(k, _)| k.starts_with("x-auth-"))
                    .map(|(k, v)| format!("{k}: {}", v.as_str().unwrap_or_default()))
                    .collect()
            })
            .unwrap_or_default();
        println!("   the upstream saw: {}", identity.join("; "));
    }

    println!("\n# 4. a token for another audience is refused");
    println!("TOKEN=$(curl -s '{mint}?ver=2&aud=https://other-api.example')");
    println!("curl -i -H \"Authorization: Bearer $TOKEN\" '{gw}{path}'");
    let token = client
        .get(format!("{mint}?ver=2&aud=https://other-api.example"))
        .send()
        .await?
        .text()
        .await?;
    let r = client
        .get(format!("{gw}{path}"))
        .bearer_auth(&token)
        .send()
        .await?;
    all_ok &= show(&r, 401, "www-authenticate");
    println!(
        "   (the reason, audience_mismatch, is in the gateway's log line above, never in the answer)"
    );

    all_ok &= client_credentials_step(&issuer, &dev, &client, &gw, path).await;

    if opts.once {
        running.shutdown(Duration::from_secs(5)).await;
        println!(
            "\n{}",
            if all_ok {
                "demo complete: every answer as expected"
            } else {
                "demo FAILED: see the answers above"
            }
        );
        return Ok(all_ok);
    }
    println!(
        "\nThe gateway keeps running; paste the lines above into another terminal. Ctrl-C stops it."
    );
    running.run_until_signal(Duration::from_secs(5)).await;
    Ok(all_ok)
}

/// What a client developer needs to point MSAL (or Posit Connect, or curl) at the issuer.
fn print_sign_in(issuer: &DevIssuer, dev: &Dev) {
    let (Some(authority), Some(ca)) = (issuer.https_authority(), issuer.ca_file()) else {
        return;
    };
    println!("Sign in with a real client (MSAL: instance_discovery=False, and trust the CA):");
    println!(
        "  authority  {authority}   (v2: /oauth2/v2.0/authorize, /oauth2/v2.0/token; v1: /oauth2/token)"
    );
    println!("  CA file    {}", ca.display());
    println!(
        "  API        client ID {}, scopes {}, app roles {}",
        dev.api_client_id,
        join_or_none(&dev.scopes),
        join_or_none(&dev.roles)
    );
    println!(
        "             Application ID URIs: api://{}, {}",
        dev.api_client_id,
        dev.api_uris.join(", ")
    );
    for (i, c) in dev.clients.iter().enumerate() {
        let kind = match &c.secret {
            None => "public client".to_owned(),
            Some(s) if s.expose() == DEV_APP_SECRET => format!("secret {DEV_APP_SECRET}"),
            Some(_) => format!("secret from dev.clients[{i}].secret"),
        };
        println!(
            "  client     {} ({}; {kind}; scopes {}; roles {})",
            c.client_id,
            c.name,
            join_or_none(&c.scopes),
            join_or_none(&c.roles)
        );
    }
    for u in &dev.users {
        println!(
            "  user       {} ({}): login_hint={} signs in without the page",
            u.username, u.name, u.username
        );
    }
    println!();
}

fn join_or_none(list: &[String]) -> String {
    if list.is_empty() {
        "none".to_owned()
    } else {
        list.join(" ")
    }
}

/// Step 5: a service's token from the HTTPS token endpoint, as MSAL's
/// `acquire_token_for_client` gets it, accepted by the gateway.
async fn client_credentials_step(
    issuer: &DevIssuer,
    dev: &Dev,
    client: &reqwest::Client,
    gw: &str,
    path: &str,
) -> bool {
    let (Some(authority), Some(ca)) = (issuer.https_authority(), issuer.ca_file()) else {
        return true;
    };
    let Some((i, app)) = dev
        .clients
        .iter()
        .enumerate()
        .find(|(_, c)| c.secret.is_some())
    else {
        println!("\n# 5. (no client with a secret in [dev]: no client-credentials example)");
        return true;
    };
    let secret_arg = match &app.secret {
        Some(s) if s.expose() == DEV_APP_SECRET => DEV_APP_SECRET.to_owned(),
        _ => format!("\"$SECRET\"   # dev.clients[{i}].secret"),
    };
    let scope = format!("api://{}/.default", dev.api_client_id);
    println!(
        "\n# 5. a service signs in with its secret (client credentials, as MSAL's acquire_token_for_client)"
    );
    println!(
        "TOKEN=$(curl -s --cacert {} {authority}/oauth2/v2.0/token -d grant_type=client_credentials -d client_id={} -d scope={scope} -d client_secret={secret_arg} | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"access_token\"])')",
        ca.display(),
        app.client_id,
    );
    println!("curl -i -H \"Authorization: Bearer $TOKEN\" '{gw}{path}'");
    let Some(secret) = app.secret.as_ref() else {
        return false;
    };
    let token = async {
        let pem = std::fs::read(ca).ok()?;
        let https = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).ok()?)
            .build()
            .ok()?;
        let body = format!(
            "grant_type=client_credentials&client_id={}&scope={}&client_secret={}",
            app.client_id,
            percent_encoding::utf8_percent_encode(&scope, percent_encoding::NON_ALPHANUMERIC),
            percent_encoding::utf8_percent_encode(
                secret.expose(),
                percent_encoding::NON_ALPHANUMERIC
            ),
        );
        let answer: serde_json::Value = https
            .post(format!("{authority}/oauth2/v2.0/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        answer.get("access_token")?.as_str().map(str::to_owned)
    }
    .await;
    let Some(token) = token else {
        println!("   -> the token endpoint gave no token (UNEXPECTED)");
        return false;
    };
    match client
        .get(format!("{gw}{path}"))
        .bearer_auth(&token)
        .send()
        .await
    {
        Ok(r) => show(&r, 200, "content-type"),
        Err(e) => {
            println!("   -> {e} (UNEXPECTED)");
            false
        }
    }
}

fn show(r: &reqwest::Response, expected: u16, header: &str) -> bool {
    let status = r.status().as_u16();
    let value = r
        .headers()
        .get(header)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    let mark = if status == expected {
        "ok"
    } else {
        "UNEXPECTED"
    };
    println!("   -> {status} ({mark}), {header}: {value}");
    status == expected
}

/// The requested address if free, else any free port on the same IP (so the demo runs even
/// when 8080 is taken).
async fn bind_or_any(addr: SocketAddr) -> SocketAddr {
    match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l.local_addr().unwrap_or(addr),
        Err(_) => {
            let any = SocketAddr::new(addr.ip(), 0);
            match tokio::net::TcpListener::bind(any).await {
                Ok(l) => l.local_addr().unwrap_or(any),
                Err(_) => any,
            }
        }
    }
}

async fn wait_ready(running: &app::Running) {
    for _ in 0..200 {
        if running.keys().is_ready() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
