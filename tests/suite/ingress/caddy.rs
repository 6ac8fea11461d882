//! Caddy (Debian package) `forward_auth` in front of the echo upstream, asking entragate
//! (forward-auth mode) and copying the identity headers of its 200 into the upstream request
//! with `copy_headers`. The same shape as `deploy/ingress/caddy/Caddyfile`: client `X-Auth-*`
//! headers are removed before `forward_auth` runs, because `copy_headers` alone leaves a
//! client's value in place when entragate sets none (Caddy 2.10 and later, GHSA-7r4p-vjf4-gxv4)
//! or replaces it with the placeholder's own text (Caddy before 2.9, as Debian 12's 2.6).

use std::net::SocketAddr;
use std::process::Command;

use super::{Proxy, binary, nginx::IDENTITY, write};
use crate::common::{Harness, free_port};

/// Starts Caddy on a free loopback port, with no admin endpoint and no automatic HTTPS.
pub fn start(h: &Harness) -> Proxy {
    let caddy = binary("caddy", "ENTRAGATE_TEST_CADDY", "apt-get install caddy");
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let caddyfile = write(
        dir.path(),
        "Caddyfile",
        &format!(
            r"{{
    admin off
    auto_https off
    storage file_system {storage}
}}
http://127.0.0.1:{port} {{
    route {{
        request_header -X-Auth-*
        forward_auth {gateway} {{
            uri /
            copy_headers {identity}
        }}
        reverse_proxy {upstream}
    }}
}}
",
            storage = dir.path().join("data").display(),
            gateway = h.gw.addr,
            upstream = h.echo.addr,
            identity = IDENTITY.join(" "),
        ),
    );
    let mut cmd = Command::new(caddy);
    cmd.arg("run")
        .arg("--config")
        .arg(&caddyfile)
        .arg("--adapter")
        .arg("caddyfile")
        .env("HOME", dir.path())
        .env("XDG_DATA_HOME", dir.path().join("data"))
        .env("XDG_CONFIG_HOME", dir.path().join("config"))
        .current_dir(dir.path());
    Proxy::spawn("caddy", cmd, SocketAddr::from(([127, 0, 0, 1], port)), dir)
}
