//! `entragate dev`: the whole flow on one machine with no Entra access.
//!
//! Starts an Entra-shaped issuer and an echo upstream on loopback, the gateway between them
//! (configured through the same TOML loading as `serve`), then shows, and runs itself, the
//! `curl` lines a newcomer can paste: Power Query's empty-bearer probe, a v1 and a v2 token
//! accepted, and a wrong-audience token refused.

pub mod echo;
pub mod issuer;

use std::net::SocketAddr;
use std::time::Duration;

pub use echo::EchoUpstream;
pub use issuer::{DevIssuer, POWER_QUERY_CLIENT_ID, SigningKey, sign_jwt};

use crate::app;
use crate::config::Config;

/// The demo tenant.
pub const DEV_TENANT: &str = "7e1b1bd0-5a1e-4c3e-9d6b-0c0ffee0d0e0";

/// Options of `entragate dev`.
#[derive(Debug, Clone)]
pub struct DevOptions {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    /// Run the demo requests, print them, and exit (0 when every answer was as expected).
    pub once: bool,
    /// The Entra cloud whose tokens the embedded issuer imitates (`entra.cloud`).
    pub cloud: crate::config::Cloud,
}

/// Runs the demo. Returns whether every demo request got the expected answer.
///
/// # Errors
/// When a listener cannot be bound or the gateway cannot start.
pub async fn run(opts: DevOptions) -> Result<bool, Box<dyn std::error::Error>> {
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let issuer = DevIssuer::start(any, DEV_TENANT).await?;
    issuer.set_cloud(opts.cloud);
    let echo = EchoUpstream::start(any).await?;

    let listener = bind_or_any(opts.listen).await;
    let admin_listener = bind_or_any(opts.admin_listen).await;
    let gateway_url = format!("http://{listener}");
    issuer.set_default_audience(&gateway_url);

    let toml = format!(
        r#"# The configuration this demo runs with (entragate serve reads the same keys).
[server]
listen = "{listener}"
admin_listen = "{admin_listener}"

[upstream]
url = "{upstream}"

[entra]
tenant_id = "{tenant}"
cloud = "{cloud}"   # v1 tokens' iss: https://{sts}/<tenant>/
authority = "{authority}"   # the embedded issuer; in production {cloud_authority} (entra.cloud's)
# Power BI asks Entra for a token whose audience is the URL's scheme+host:
audiences = ["{gateway_url}", "api://entragate-dev"]
jwks_min_refetch = "10s"
"#,
        upstream = echo.url(),
        tenant = DEV_TENANT,
        cloud = opts.cloud.as_str(),
        sts = opts.cloud.v1_issuer_host(),
        cloud_authority = opts.cloud.authority(),
        authority = issuer.authority(),
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
    println!("  issuer    {}   (tenant {DEV_TENANT})", issuer.authority());
    println!("  upstream  {}   (echoes what it receives)\n", echo.url());
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
