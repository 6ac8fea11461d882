//! entragate: a reverse-proxy auth gateway for Microsoft Entra ID access tokens.
//!
//! It answers Power Query's sign-in probe with the challenge Power BI expects, validates v1
//! and v2 Entra access tokens against the tenant's published keys, and proxies the request,
//! streamed, with the verified identity in `X-Auth-*` headers. See `README.md` and
//! `config/entragate.example.toml`.
//!
//! The request's way: [`app`] (the one stack) -> [`proxy::handle`] -> [`auth`] (bearer, token,
//! validation against [`keys`]) -> [`proxy::headers`] -> [`proxy::forward`]. In forward-auth
//! mode [`forward_auth::handle`] answers with the decision instead of forwarding; Envoy's gRPC
//! `ext_authz` asks [`ext_authz`] on a listener of its own.

pub mod access;
pub mod admin;
pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod dev;
pub mod ext_authz;
pub mod forward_auth;
pub mod keys;
pub mod metrics;
pub mod ops;
pub mod proxy;
pub mod reload;
pub mod server;
pub mod telemetry;
pub mod tls;
