//! entragate: a reverse-proxy auth gateway for Microsoft Entra ID access tokens.
//!
//! It answers Power Query's sign-in probe with the challenge Power BI expects, validates v1
//! and v2 Entra access tokens against the tenant's published keys, and proxies the request,
//! streamed, with the verified identity in `X-Auth-*` headers. See `README.md`, `docs/` and
//! `config/entragate.example.toml`.
//!
//! The request's way: [`app`] (the one stack) -> a door ([`proxy`], [`forward_auth`] or
//! [`ext_authz`]) -> [`gateway::Gateway::check`], the one decision (using [`auth`] and
//! [`keys`]) -> the door renders it: the proxy applies its header edits and forwards through
//! [`upstream`]; forward-auth and `ext_authz` answer with them. `docs/architecture.md` is
//! the map.

pub mod access;
pub mod admin;
pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod dev;
pub mod ext_authz;
pub mod forward_auth;
pub mod gateway;
pub mod keys;
pub mod limits;
pub mod metrics;
pub mod ops;
pub mod path;
pub mod pem;
pub mod proxy;
pub mod reason;
pub mod redis;
pub mod reload;
pub mod revocation;
pub mod server;
pub mod sync;
pub mod telemetry;
pub mod tls;
pub mod trace;
pub mod upstream;
pub mod worker;
