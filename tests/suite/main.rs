//! The integration suite: one test binary (one link, one set of debug info) holding every
//! area's tests as a module. Each module starts its own gateway, issuer and upstream on
//! loopback, so they run in parallel like separate binaries would. Run one area with
//! `cargo test --test suite <module>::`, e.g. `cargo test --test suite hostile_tokens::`.

mod access_log;
mod apis;
mod cache;
mod challenge;
mod check;
mod common;
mod conformance;
mod deploy;
mod dev;
mod dev_msal;
mod docs;
mod explain;
mod ext_authz;
mod forward_auth;
mod grpc;
mod hardening;
mod hostile_tokens;
mod idp_faults;
mod import_apim;
mod ingress;
mod init;
mod keys;
mod layers;
mod limits;
mod observability;
mod otel;
mod process;
mod properties;
mod proxy;
mod reload;
mod routes;
mod tls;
mod tls_idp;
mod tls_upstream;
mod upstream_faults;
mod validation;
mod websocket;
