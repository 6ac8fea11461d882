//! What `check` says about each API's upstream: where it is and the HTTP version spoken to
//! it (`upstream.protocol`).

use super::{Item, Status};
use crate::config::{Config, UpstreamProtocol};

/// One item per API.
pub(super) fn items(config: &Config) -> Vec<Item> {
    config
        .apis
        .iter()
        .map(|api| {
            let u = config.upstream_of(api);
            let https = u.scheme == http::uri::Scheme::HTTPS;
            let words = match u.protocol {
                UpstreamProtocol::Http1 => "HTTP/1.1",
                UpstreamProtocol::H2c => {
                    "HTTP/2 with prior knowledge (h2c), requests multiplexed on one connection; gRPC passes through"
                }
                UpstreamProtocol::Auto if https => {
                    "HTTP/2 when the upstream offers h2 by ALPN, else HTTP/1.1; gRPC needs HTTP/2"
                }
                UpstreamProtocol::Auto => "HTTP/1.1 (auto on plain http: ALPN needs TLS)",
            };
            Item::new(
                format!("upstream.{}", api.name),
                Status::Ok,
                format!(
                    "API {}: upstream {}://{}{} over {words} (upstream.protocol = {:?}), at most {} requests at once",
                    api.name,
                    u.scheme,
                    u.origin,
                    u.base_path,
                    u.protocol.as_str(),
                    u.max_connections,
                ),
            )
        })
        .collect()
}
