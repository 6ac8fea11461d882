//! nginx `auth_request` in front of the echo upstream, asking entragate (forward-auth mode).
//! The same shape as `deploy/ingress/nginx/auth_request.conf`.

use std::net::SocketAddr;
use std::process::Command;

use super::{Proxy, binary, write};
use crate::common::{Harness, free_port};

/// The identity headers copied from entragate's 200 to the upstream request. Listing a
/// header here also removes a client's value when entragate sets none (an empty
/// `proxy_set_header` value drops the header).
pub const IDENTITY: [&str; 6] = [
    "X-Auth-Subject",
    "X-Auth-Tenant",
    "X-Auth-Client",
    "X-Auth-Scopes",
    "X-Auth-Roles",
    "X-Auth-Name",
];

fn config(prefix: &str, port: u16, gateway: SocketAddr, upstream: SocketAddr) -> String {
    let mut set = String::new();
    let mut copy = String::new();
    for name in IDENTITY {
        let var = name.to_ascii_lowercase().replace('-', "_");
        set.push_str(&format!(
            "            auth_request_set ${var} $upstream_http_{var};\n"
        ));
        copy.push_str(&format!("            proxy_set_header {name} ${var};\n"));
    }
    format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            auth_request /_entragate;
{set}{copy}            proxy_pass http://{upstream};
        }}
        location = /_entragate {{
            internal;
            proxy_pass http://{gateway}/;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Original-URI $request_uri;
            proxy_set_header X-Original-Method $request_method;
        }}
    }}
}}
"#
    )
}

/// Starts nginx on a free loopback port.
pub fn start(h: &Harness) -> Proxy {
    let nginx = binary(
        "nginx",
        "ENTRAGATE_TEST_NGINX",
        "apt-get install -y --no-install-recommends nginx",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = dir.path().to_str().expect("utf-8 path").to_owned();
    let port = free_port();
    let conf = write(
        dir.path(),
        "nginx.conf",
        &config(&prefix, port, h.gw.addr, h.echo.addr),
    );
    let mut cmd = Command::new(nginx);
    cmd.arg("-e")
        .arg(format!("{prefix}/error.log"))
        .arg("-c")
        .arg(&conf)
        .arg("-p")
        .arg(format!("{prefix}/"));
    Proxy::spawn("nginx", cmd, SocketAddr::from(([127, 0, 0, 1], port)), dir)
}
