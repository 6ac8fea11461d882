//! Shared harness for the integration tests: the embedded Entra-shaped issuer, the echo
//! upstream and the gateway, all on 127.0.0.1 port 0, talked to with a real HTTP client.
#![allow(dead_code)]

pub mod ext_authz;
pub mod metrics;
pub mod pki;
pub mod process;
pub mod redis;
pub mod tokens;
pub mod verdicts;
pub mod wire;

use std::net::SocketAddr;
use std::time::Duration;

use entragate::app::{self, Running};
use entragate::config::Config;
use entragate::dev::echo::hex;
use entragate::dev::{DevIssuer, EchoUpstream};
use entragate::keys::TokenVersion;
use serde_json::{Map, Value};

/// The tenant the tests' issuer signs for.
pub const TENANT: &str = "6c3f6b2e-1d2a-4b8e-9a51-0e5c2f7d9a10";
/// The API's Application ID URI, as Power BI requests it (scheme + host).
pub const AUDIENCE: &str = "https://api.contoso.example";
/// The API's client ID (v2 tokens' `aud`).
pub const API_CLIENT_ID: &str = "11111111-2222-4333-8444-555555555555";

/// Two route rules, for the forward-auth, ext_authz and ingress tests: `/admin` needs the
/// `admin.write` scope, `/public` is anonymous.
pub const ROUTES: &str = r#"
[[routes]]
path = "/admin"
scopes = ["admin.write"]

[[routes]]
path = "/public"
anonymous = true
"#;

/// 127.0.0.1, port 0: a listener there gets a free port.
pub fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A loopback port nothing listens on (bound, read, released): for a fixed port in a config,
/// or a connection that is refused.
pub fn free_port() -> u16 {
    let [port] = process::free_ports::<1>();
    port
}

/// Extra TOML lines per table, appended to the harness's defaults (do not repeat its keys:
/// `listen`, `admin_listen`, `url`, `tenant_id`, `authority`, `audiences`).
#[derive(Debug, Clone, Default)]
pub struct Extra {
    pub server: String,
    pub upstream: String,
    pub entra: String,
    pub challenge: String,
    /// Replaces the echo upstream's URL.
    pub upstream_url: Option<String>,
    /// Replaces the issuer's tenant in `entra.tenant_id` (e.g. `organizations`).
    pub tenant_id: Option<String>,
    /// Appended after every table, e.g. `[[routes]]`.
    pub tail: String,
}

/// The gateway's TOML for an issuer and upstream.
pub fn config_toml(issuer: &DevIssuer, upstream_url: &str, extra: &Extra) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
{server}
[upstream]
url = "{upstream}"
{upstream_extra}
[entra]
tenant_id = "{tenant}"
authority = "{authority}"
audiences = ["{AUDIENCE}", "{API_CLIENT_ID}"]
{entra}
[challenge]
{challenge}
{tail}
"#,
        server = extra.server,
        upstream = extra.upstream_url.as_deref().unwrap_or(upstream_url),
        upstream_extra = extra.upstream,
        tenant = extra.tenant_id.as_deref().unwrap_or(issuer.tenant_id()),
        authority = issuer.authority(),
        entra = extra.entra,
        challenge = extra.challenge,
        tail = extra.tail,
    )
}

/// [`config_toml`] with `authority` in place of the issuer's own (an identity provider in front
/// of it, or a port nothing listens on).
pub fn config_toml_at(
    issuer: &DevIssuer,
    upstream_url: &str,
    extra: &Extra,
    authority: &str,
) -> String {
    let toml = config_toml(issuer, upstream_url, extra);
    let line = format!("authority = \"{}\"", issuer.authority());
    assert!(
        toml.contains(&line),
        "the issuer's authority line is in the config"
    );
    toml.replace(&line, &format!("authority = \"{authority}\""))
}

/// `toml` loaded as the harness loads it: no environment, files read from disk.
pub fn load(toml: &str) -> Config {
    Config::load(toml, &[], &|p| std::fs::read_to_string(p))
        .unwrap_or_else(|e| panic!("config loads: {e}\n{toml}"))
}

/// Issuer + echo upstream + gateway.
pub struct Harness {
    pub issuer: DevIssuer,
    pub echo: EchoUpstream,
    pub gw: Running,
    pub client: reqwest::Client,
}

impl Harness {
    /// Everything with default settings, keys loaded.
    pub async fn start() -> Self {
        Self::start_with(Extra::default()).await
    }

    /// Everything with `extra` settings; waits until the gateway is ready.
    pub async fn start_with(extra: Extra) -> Self {
        let h = Self::start_unready(extra).await;
        h.wait_ready().await;
        h
    }

    /// Everything with defaults, but forwarding to `upstream_url` with extra `[upstream]`
    /// lines; waits until the gateway is ready.
    pub async fn to_upstream(upstream_url: String, upstream_lines: &str) -> Self {
        Self::start_with(Extra {
            upstream_url: Some(upstream_url),
            upstream: upstream_lines.to_owned(),
            ..Extra::default()
        })
        .await
    }

    /// Everything with `extra` settings, without waiting for keys.
    pub async fn start_unready(extra: Extra) -> Self {
        let issuer = DevIssuer::start(loopback(), TENANT).await.expect("issuer");
        let echo = EchoUpstream::start(loopback()).await.expect("echo");
        let config = load(&config_toml(&issuer, &echo.url(), &extra));
        Self::launch(issuer, echo, &config).await
    }

    /// An echo upstream and the gateway with `extra` settings, trusting `issuer`'s tokens but
    /// fetching its keys from `authority` (an identity provider in front of it); waits until
    /// the gateway is ready.
    pub async fn start_at(issuer: DevIssuer, authority: &str, extra: Extra) -> Self {
        let h = Self::start_at_unready(issuer, authority, extra).await;
        h.wait_ready().await;
        h
    }

    /// Like [`Harness::start_at`], without waiting for keys.
    pub async fn start_at_unready(issuer: DevIssuer, authority: &str, extra: Extra) -> Self {
        let echo = EchoUpstream::start(loopback()).await.expect("echo");
        let config = load(&config_toml_at(&issuer, &echo.url(), &extra, authority));
        Self::launch(issuer, echo, &config).await
    }

    /// The gateway for `config` in front of `issuer` and `echo`, without waiting for keys.
    pub async fn launch(issuer: DevIssuer, echo: EchoUpstream, config: &Config) -> Self {
        let gw = app::start(config).await.expect("gateway starts");
        Self {
            issuer,
            echo,
            gw,
            client: client(),
        }
    }

    /// Everything with `extra` settings, but the authority is a port nothing listens on, so
    /// no keys ever load; returns once both key sources have tried. Also returns that port.
    pub async fn start_without_keys(extra: Extra) -> (Self, u16) {
        let closed = free_port();
        let issuer = DevIssuer::start(loopback(), TENANT).await.expect("issuer");
        let h = Self::start_at_unready(issuer, &format!("http://127.0.0.1:{closed}"), extra).await;
        for _ in 0..400 {
            if h.gw
                .keys()
                .issuers
                .iter()
                .all(|i| i.source.metrics.fetches() > 0)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(!h.gw.keys().is_ready());
        (h, closed)
    }

    /// Waits (at most 10 s) until the gateway has keys for every issuer.
    pub async fn wait_ready(&self) {
        for _ in 0..400 {
            if self.gw.keys().is_ready() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("gateway not ready after 10s");
    }

    /// `http://gateway{path}`
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.gw.addr)
    }

    /// `http://admin{path}`
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.gw.admin_addr)
    }

    /// Claims of a valid delegated token of `version` for [`AUDIENCE`].
    pub fn claims(&self, version: TokenVersion) -> Map<String, Value> {
        self.issuer.claims(version, AUDIENCE)
    }

    /// A valid delegated token of `version` for [`AUDIENCE`].
    pub fn token(&self, version: TokenVersion) -> String {
        self.issuer.mint(&self.claims(version))
    }

    /// GET `path` with `Authorization: Bearer {token}`.
    pub async fn get_with_token(&self, path: &str, token: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .header("authorization", format!("Bearer {token}"))
            .send()
            .await
            .expect("request")
    }

    /// [`Harness::get_with_token`], failing the test if no answer comes within `bound`.
    pub async fn get_within(&self, bound: Duration, path: &str, token: &str) -> reqwest::Response {
        tokio::time::timeout(bound, self.get_with_token(path, token))
            .await
            .unwrap_or_else(|_| panic!("GET {path}: the gateway did not answer within {bound:?}"))
    }

    /// GET `path` on the admin listener, failing the test if no answer comes within `bound`.
    pub async fn admin_get_within(&self, bound: Duration, path: &str) -> reqwest::Response {
        tokio::time::timeout(bound, self.client.get(self.admin_url(path)).send())
            .await
            .unwrap_or_else(|_| panic!("admin {path} did not answer within {bound:?}"))
            .unwrap_or_else(|e| panic!("admin {path}: {e}"))
    }

    /// The admin `/metrics` text (status 200), within `bound`.
    pub async fn metrics_text_within(&self, bound: Duration) -> String {
        let r = self.admin_get_within(bound, "/metrics").await;
        assert_eq!(r.status(), 200, "/metrics status");
        r.text().await.expect("metrics text")
    }

    /// The admin `/metrics` text (status 200).
    pub async fn metrics_text(&self) -> String {
        self.metrics_text_within(Duration::from_secs(30)).await
    }
}

/// A client that never follows redirects, never pools across tests, and never hangs.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// A server task spawned by a test, aborted when dropped (with whatever owns it).
pub struct Task(pub tokio::task::JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What the echo upstream shows for an `Authorization` value: its scheme and the SHA-256 of
/// the whole value, never the value itself.
pub fn echoed_authorization(value: &str) -> String {
    let scheme = value.split(' ').next().unwrap_or_default();
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, value.as_bytes());
    format!("{scheme} sha256:{}", hex(digest.as_ref()))
}

/// Polls `check` every 25 ms until it holds; panics with `what` after `limit`.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + limit;
    loop {
        if check().await {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Now, in Unix seconds.
pub fn now() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs(),
    )
    .expect("time")
}
