//! `[[routes]]` and `[[oidc]]`: arrays of tables, each entry checked key by key and named as
//! `routes[2].scopes` in problems.

use std::collections::BTreeMap;

use figment::value::{Dict, Value};
use serde::de::DeserializeOwned;

use super::apis::read_ip_filter;
use super::read::{Reader, key_name};
use super::{Oidc, Route, is_guid};
use crate::path;

/// The keys of a `[[routes]]` entry.
pub const ROUTE_KEYS: &[&str] = &[
    "path",
    "max_body",
    "methods",
    "scopes",
    "roles",
    "clients",
    "claims",
    "anonymous",
    "auth_context",
    "ip_allow",
    "ip_deny",
];
/// The keys of an `[[oidc]]` entry.
pub const OIDC_KEYS: &[&str] = &["issuer", "discovery_url", "audiences", "allowed_client_ids"];

/// Reads `[[routes]]`.
pub(super) fn read_routes(r: &mut Reader) -> Vec<Route> {
    let value = r.value("routes");
    read_route_list(r, "routes", value)
}

/// Reads a list of routes found at `name` (`routes`, `apis[0].routes`).
pub(super) fn read_route_list(r: &mut Reader, name: &str, value: Option<Value>) -> Vec<Route> {
    entries_of(r, name, value, ROUTE_KEYS)
        .into_iter()
        .filter_map(|(name, dict)| read_route(r, &name, &dict))
        .collect()
}

/// Reads `[[oidc]]`.
pub(super) fn read_oidc(r: &mut Reader) -> Vec<Oidc> {
    entries(r, "oidc", OIDC_KEYS)
        .into_iter()
        .filter_map(|(name, dict)| read_one_oidc(r, &name, &dict))
        .collect()
}

/// The entries of an array of tables, with unknown keys reported.
pub(super) fn entries(r: &mut Reader, table: &str, known: &[&str]) -> Vec<(String, Dict)> {
    let value = r.value(table);
    entries_of(r, table, value, known)
}

/// The entries of the array of tables `value`, named `table[i]`, with unknown keys reported.
fn entries_of(
    r: &mut Reader,
    table: &str,
    value: Option<Value>,
    known: &[&str],
) -> Vec<(String, Dict)> {
    let Some(value) = value else {
        return Vec::new();
    };
    let Value::Array(_, items) = value else {
        r.problem(table, format!("must be an array of tables: [[{table}]]"));
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let name = format!("{table}[{i}]");
        let Value::Dict(_, dict) = item else {
            r.problem(&name, "must be a table");
            continue;
        };
        for key in dict.keys() {
            if !known.contains(&key.as_str()) {
                r.problem(&format!("{name}.{}", key_name(key)), "unknown key");
            }
        }
        out.push((name, dict));
    }
    out
}

/// A name that appears in metric labels, log fields and headers (`[[apis]]`, `[[limits]]`):
/// 1-64 letters, digits, `-`, `_` or `.`.
pub(super) fn is_label_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

pub(super) fn field<T: DeserializeOwned>(
    r: &mut Reader,
    dict: &Dict,
    name: &str,
    key: &str,
    expected: &str,
) -> Option<T> {
    let v = dict.get(key)?;
    match v.deserialize::<T>() {
        Ok(t) => Some(t),
        Err(_) => {
            r.problem(&format!("{name}.{key}"), format!("expected {expected}"));
            None
        }
    }
}

fn read_route(r: &mut Reader, name: &str, d: &Dict) -> Option<Route> {
    let raw_path: Option<String> = field(r, d, name, "path", "a string");
    let Some(raw_path) = raw_path else {
        r.problem(
            &format!("{name}.path"),
            "is required (a path prefix like \"/ehrbase/rest/openehr/v1/query\")",
        );
        return None;
    };
    let normalized = if raw_path.starts_with('/') {
        match path::normalize(&raw_path) {
            Ok(p) => Some(p.into_owned()),
            Err(_) => {
                r.problem(
                    &format!("{name}.path"),
                    format!("{raw_path:?} cannot be normalised"),
                );
                None
            }
        }
    } else {
        r.problem(
            &format!("{name}.path"),
            format!("{raw_path:?} must start with '/'"),
        );
        None
    };
    let methods = field::<Vec<String>>(r, d, name, "methods", "a list of HTTP methods")
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| {
            let upper = m.to_ascii_uppercase();
            match http::Method::from_bytes(upper.as_bytes()) {
                Ok(method) => Some(method),
                Err(_) => {
                    r.problem(
                        &format!("{name}.methods"),
                        format!("{m:?} is not an HTTP method"),
                    );
                    None
                }
            }
        })
        .collect::<Vec<http::Method>>();
    // GET covers HEAD, as in every HTTP router: a HEAD is a GET without the body.
    let mut methods = methods;
    if methods.contains(&http::Method::GET) && !methods.contains(&http::Method::HEAD) {
        methods.push(http::Method::HEAD);
    }
    let scopes = scope_tokens(r, d, name, "scopes");
    let roles = scope_tokens(r, d, name, "roles");
    let clients = field::<Vec<String>>(r, d, name, "clients", "a list of client IDs")
        .unwrap_or_default()
        .into_iter()
        .filter_map(|c| {
            // Entra client IDs are GUIDs; other issuers' (Keycloak `cdr-etl`) need not be.
            if c.trim().is_empty() {
                r.problem(&format!("{name}.clients"), "a client ID must not be empty");
                None
            } else if is_guid(&c) {
                Some(c.to_ascii_lowercase())
            } else {
                Some(c)
            }
        })
        .collect::<Vec<_>>();
    let claims: Vec<(String, Vec<String>)> =
        field::<BTreeMap<String, ClaimValues>>(r, d, name, "claims", "a table of claim = [values]")
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.into_vec()))
            .collect();
    for (claim, values) in &claims {
        if values.is_empty() {
            r.problem(
                &format!("{name}.claims.{}", key_name(claim)),
                "needs at least one value (the claim must hold one of them)",
            );
        }
    }
    let anonymous = field::<bool>(r, d, name, "anonymous", "true or false").unwrap_or(false);
    let max_body = d
        .get("max_body")
        .and_then(|v| match super::read::parse_size(v) {
            Ok(n) => Some((n > 0).then_some(n)),
            Err(msg) => {
                r.problem(&format!("{name}.max_body"), msg);
                None
            }
        });
    let requires = ["scopes", "roles", "clients", "claims", "auth_context"]
        .iter()
        .any(|k| d.contains_key(*k));
    if anonymous && requires {
        r.problem(
            &format!("{name}.anonymous"),
            "an anonymous route cannot also require scopes, roles, clients, claims or an auth_context",
        );
    }
    let auth_context = field::<String>(r, d, name, "auth_context", "a string").filter(|c| {
        // Entra's authentication context IDs are `c1` ... `c99`; the value goes into a JSON
        // claims request and a header, so only plain characters are taken.
        let ok = !c.is_empty()
            && c.len() <= 64
            && c.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            r.problem(
                &format!("{name}.auth_context"),
                format!("{c:?} is not an authentication context ID like \"c1\""),
            );
        }
        ok
    });
    let ip = read_ip_filter(r, d, name);
    Some(Route {
        path: normalized?,
        methods,
        scopes,
        roles,
        clients,
        claims,
        anonymous,
        max_body,
        auth_context,
        ip,
    })
}

/// A claim's allowed values: one string or a list.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum ClaimValues {
    One(String),
    Many(Vec<String>),
}

impl ClaimValues {
    fn into_vec(self) -> Vec<String> {
        match self {
            Self::One(s) => vec![s],
            Self::Many(v) => v,
        }
    }
}

/// Scope and role names: RFC 6750 `scope-token` characters, since they appear in
/// `WWW-Authenticate: Bearer error="insufficient_scope", scope="…"`.
fn scope_tokens(r: &mut Reader, d: &Dict, name: &str, key: &str) -> Vec<String> {
    field::<Vec<String>>(r, d, name, key, "a list of strings")
        .unwrap_or_default()
        .into_iter()
        .filter(|s| {
            let ok = !s.is_empty()
                && s
                    .bytes()
                    .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b));
            if !ok {
                r.problem(
                    &format!("{name}.{key}"),
                    format!("{s:?} has characters a scope cannot hold (space, quote, backslash, non-ASCII)"),
                );
            }
            ok
        })
        .collect()
}

fn read_one_oidc(r: &mut Reader, name: &str, d: &Dict) -> Option<Oidc> {
    let issuer: Option<String> = field(r, d, name, "issuer", "a string");
    let issuer = issuer.filter(|i| i.starts_with("https://") || i.starts_with("http://"));
    if issuer.is_none() {
        r.problem(
            &format!("{name}.issuer"),
            "is required: the issuer URL exactly as in its tokens' iss",
        );
    }
    let discovery_url = field::<String>(r, d, name, "discovery_url", "a string");
    let audiences =
        field::<Vec<String>>(r, d, name, "audiences", "a list of strings").unwrap_or_default();
    if audiences.is_empty() {
        r.problem(
            &format!("{name}.audiences"),
            "at least one audience is required",
        );
    }
    let allowed_client_ids =
        field::<Vec<String>>(r, d, name, "allowed_client_ids", "a list of strings")
            .unwrap_or_default();
    let issuer = issuer?;
    let discovery_url = discovery_url.unwrap_or_else(|| {
        format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        )
    });
    Some(Oidc {
        issuer,
        discovery_url,
        audiences,
        allowed_client_ids,
    })
}
