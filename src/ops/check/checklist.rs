//! The Entra app-registration checklist for one config: what Power BI / Power Query need from
//! the API's registration and from the gateway's `[entra]` settings, judged from the config
//! and the metadata just fetched.

use super::{Fetch, Item, Status};
use crate::config::{Config, is_guid};
use crate::ops::{POWER_PLATFORM_CLIENTS, origin_of};

/// An Entra-terms fix for a config problem of `key`, where the message alone does not say
/// where in Entra to find the value.
pub(super) fn config_fix(key: &str) -> Option<&'static str> {
    Some(match key {
        "entra.allowed_tenants" => {
            "List the Directory (tenant) IDs of the organisations that may call (Entra admin center -> Overview of each tenant). An API registered as multi-tenant accepts sign-ins from any tenant that consents, so the gateway needs this list."
        }
        "entra.audiences" => {
            "List the API's Application ID URI (App registrations -> the API -> Expose an API; for Power BI the public scheme+host, e.g. https://api.contoso.com) and its Application (client) ID."
        }
        "entra.tenant_id" => {
            "Use the Directory (tenant) ID shown on the API's app registration Overview page."
        }
        "entra.allowed_client_ids" => {
            "Client IDs are the Application (client) IDs of the calling apps, e.g. a672d62c-fc7b-4e81-a576-e60dc46e951d for Power BI Desktop."
        }
        _ => return None,
    })
}

/// The line for one key source's fetch.
pub(super) fn fetch_item(f: &Fetch) -> Item {
    let id = format!("keys.{}", f.source);
    if let Some(path) = &f.file {
        return match &f.error {
            None => Item::new(
                id,
                Status::Ok,
                format!(
                    "{}: keys from file {path} (entra.jwks_file): issuer {}, {} signing key(s)",
                    f.source,
                    f.issuer.as_deref().unwrap_or("?"),
                    f.keys
                ),
            ),
            Some(e) => Item::new(
                id,
                Status::Fail,
                format!("{}: cannot load keys from file {path}: {e}", f.source),
            )
            .fix("entra.jwks_file must be a JWKS ({\"keys\": [...]}, as an issuer's jwks_uri serves) with at least one RSA signing key that has a kid."),
        };
    }
    match &f.error {
        None => Item::new(
            id,
            Status::Ok,
            format!(
                "{}: metadata {} ms, keys {} ms: issuer {}, {} signing key(s)",
                f.source,
                f.metadata_ms.unwrap_or(0),
                f.jwks_ms.unwrap_or(0),
                f.issuer.as_deref().unwrap_or("?"),
                f.keys
            ),
        ),
        Some(e) => Item::new(
            id,
            Status::Fail,
            format!("{}: cannot load keys from {}: {e}", f.source, f.metadata_url),
        )
        .fix(
            "Check entra.authority and entra.tenant_id (the metadata URL is <authority>/<tenant_id>[/v2.0]/.well-known/openid-configuration), and that this machine reaches the authority (proxy, firewall, DNS). The gateway starts anyway and answers 503 to tokens until keys load.",
        ),
    }
}

/// How to confirm the registration's side without the admin center.
const BY_APP: &str = "Or compare the registration itself, offline: az ad app show --id <client ID> > app.json && entragate check --app app.json";

/// The checklist proper.
pub(super) fn items(config: &Config, fetches: &[Fetch]) -> Vec<Item> {
    let mut out = Vec::new();
    let entra = &config.entra;
    tenant(config, fetches, &mut out);
    app_id_uri(config, &mut out);
    versions(config, &mut out);
    clients(config, &mut out);
    route_scopes(config, &mut out);
    route_auth_context(config, &mut out);

    // What only the Entra admin center shows.
    let uri = entra
        .audiences
        .iter()
        .find_map(|a| origin_of(a))
        .unwrap_or_else(|| "https://<public host>".into());
    out.push(Item::new(
        "expose_scope",
        Status::Todo,
        format!("Expose an API: the Application ID URI is {uri} and the scope user_impersonation is exposed (Power Query asks for it: AADSTS650053 otherwise)"),
    ).fix(BY_APP));
    out.push(Item::new(
        "preauthorize",
        Status::Todo,
        "Expose an API -> Add a client application: a672d62c-fc7b-4e81-a576-e60dc46e951d (Power BI Desktop / Power Query) and b52893c8-bc2e-47fc-918b-77022b299bbc (Power BI service refresh) pre-authorized for user_impersonation (AADSTS650057 otherwise)",
    ).fix(BY_APP));
    out.push(Item::new(
        "offline_access",
        Status::Todo,
        "Scheduled refresh in the Power BI service needs a refresh token: users (or an admin for the whole tenant, Enterprise applications -> Permissions -> Grant admin consent) consent to offline_access together with user_impersonation",
    ));
    out
}

fn tenant(config: &Config, fetches: &[Fetch], out: &mut Vec<Item>) {
    let entra = &config.entra;
    if entra.authority.matches('/').count() > 2 {
        out.push(
            Item::new(
                "authority",
                Status::Fail,
                format!("entra.authority {} has a path", entra.authority),
            )
            .fix("entra.authority is the host only (https://login.microsoftonline.com, or a sovereign cloud's); the gateway adds the tenant and /v2.0 itself."),
        );
    }
    if entra.is_multi_tenant() {
        let mut item = Item::new(
            "tenants",
            Status::Ok,
            format!(
                "multi-tenant ({}): tokens of {} tenant(s) accepted: {}",
                entra.tenant_id,
                entra.allowed_tenants.len(),
                entra.allowed_tenants.join(", ")
            ),
        );
        if entra.tenant_id.eq_ignore_ascii_case("common") {
            item.status = Status::Warn;
            item = item.fix("Power Query's challenge then names /common/: Microsoft advises the tenant ID unless the API has none. Prefer \"organizations\" (no personal accounts) or one tenant's ID.");
        }
        out.push(item);
        return;
    }
    if !is_guid(&entra.tenant_id) {
        let guid = fetches
            .iter()
            .find(|f| f.source == "entra-v1")
            .and_then(|f| f.issuer.as_deref())
            .and_then(|iss| {
                iss.strip_prefix("https://sts.windows.net/")
                    .or_else(|| iss.strip_prefix("https://sts.chinacloudapi.cn/"))
            })
            .map(|rest| rest.trim_end_matches('/').to_owned())
            .filter(|g| is_guid(g));
        let fix = match guid {
            Some(g) => format!(
                "Set entra.tenant_id = \"{g}\" (the tenant's ID, from its metadata): Microsoft documents the tenant ID in the challenge Power Query reads."
            ),
            None => "Set entra.tenant_id to the Directory (tenant) ID.".into(),
        };
        out.push(
            Item::new(
                "tenant_id",
                Status::Warn,
                format!(
                    "entra.tenant_id is the domain {}; the challenge sends it to Power Query as is",
                    entra.tenant_id
                ),
            )
            .fix(fix),
        );
    }
}

fn app_id_uri(config: &Config, out: &mut Vec<Item>) {
    let audiences = &config.entra.audiences;
    let urls: Vec<&String> = audiences
        .iter()
        .filter(|a| origin_of(a).is_some())
        .collect();
    let public = config.server.public_url.as_deref().and_then(origin_of);
    if urls.is_empty() {
        let target = public
            .clone()
            .unwrap_or_else(|| "https://<public host>".into());
        out.push(
            Item::new(
                "app_id_uri",
                Status::Fail,
                format!("entra.audiences {audiences:?} has no URL: Power BI asks Entra for a token whose resource is the scheme+host of the URL the user typed, so it cannot get one for this API (AADSTS500011)"),
            )
            .fix(format!("Set the API's Application ID URI (Expose an API) to {target}, on a verified domain of the tenant, and add \"{target}\" to entra.audiences.")),
        );
        return;
    }
    for a in &urls {
        let origin = origin_of(a).unwrap_or_default();
        if a.trim_end_matches('/') != origin {
            out.push(
                Item::new(
                    "app_id_uri",
                    Status::Fail,
                    format!("audience {a} has a path: Power Query asks for the scheme+host only ({origin}), so Entra never issues a token for {a} to Power BI"),
                )
                .fix(format!("Set the Application ID URI (Expose an API) to {origin} and put \"{origin}\" in entra.audiences instead of \"{a}\".")),
            );
        }
        if origin.starts_with("http://") {
            out.push(
                Item::new(
                    "app_id_uri",
                    Status::Warn,
                    format!("audience {a} is plain http: Power BI only signs in to https URLs"),
                )
                .fix("Publish the API over https (TLS in front of the gateway) and use the https Application ID URI."),
            );
        }
    }
    // An audience with a path (failed above) does not cover the public URL.
    let exact = |p: &str| {
        urls.iter()
            .any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(p))
    };
    match &public {
        Some(p) if !exact(p) => out.push(
            Item::new(
                "app_id_uri",
                Status::Fail,
                format!("server.public_url is {p}, but no audience is that scheme+host ({urls:?}): tokens Power BI gets for {p} would be refused as audience_mismatch"),
            )
            .fix(format!("Set the Application ID URI (Expose an API) to {p} and add \"{p}\" to entra.audiences, or correct server.public_url.")),
        ),
        Some(p) => out.push(Item::new(
            "app_id_uri",
            Status::Ok,
            format!("Application ID URI {p} = server.public_url, listed in entra.audiences"),
        )),
        None => out.push(
            Item::new(
                "app_id_uri",
                Status::Ok,
                format!("URL audience(s) {urls:?}: Power BI users must type exactly that scheme+host"),
            )
            .fix("Set server.public_url to the URL clients call, so check can compare it with the audiences."),
        ),
    }
}

fn versions(config: &Config, out: &mut Vec<Item>) {
    let audiences = &config.entra.audiences;
    let v2 = audiences.iter().any(|a| is_guid(a));
    let v1 = audiences.iter().any(|a| !is_guid(a));
    if !v1 {
        out.push(
            Item::new(
                "token_version",
                Status::Fail,
                format!("entra.audiences {audiences:?} lists only client IDs: v1 tokens, which Entra issues while the API's manifest has accessTokenAcceptedVersion null or 1 (the default), carry the Application ID URI as aud and would all be refused"),
            )
            .fix("Add the Application ID URI to entra.audiences, or set accessTokenAcceptedVersion to 2 in the API's manifest so tokens carry the client ID."),
        );
    } else if !v2 {
        out.push(
            Item::new(
                "token_version",
                Status::Warn,
                "entra.audiences lists no client ID: accepted while the API's manifest has accessTokenAcceptedVersion null or 1 (v1 tokens); set to 2, Entra issues v2 tokens whose aud is the client ID, and every one is refused",
            )
            .fix("Add the API's Application (client) ID to entra.audiences."),
        );
    } else {
        out.push(Item::new(
            "token_version",
            Status::Ok,
            "entra.audiences covers v1 tokens (Application ID URI) and v2 tokens (client ID), whatever accessTokenAcceptedVersion says",
        ));
    }
}

fn clients(config: &Config, out: &mut Vec<Item>) {
    let allowed = &config.entra.allowed_client_ids;
    if allowed.is_empty() {
        out.push(Item::new(
            "clients",
            Status::Ok,
            "entra.allowed_client_ids is empty: any client the app registration lets in may call",
        ));
        return;
    }
    let missing: Vec<&(&str, &str)> = POWER_PLATFORM_CLIENTS
        .iter()
        .filter(|(id, _)| !allowed.iter().any(|a| a.eq_ignore_ascii_case(id)))
        .collect();
    if missing.is_empty() {
        out.push(Item::new(
            "clients",
            Status::Ok,
            "entra.allowed_client_ids has every Power Query / Power BI / Power Platform client",
        ));
        return;
    }
    let status = if missing.len() == POWER_PLATFORM_CLIENTS.len() {
        Status::Fail
    } else {
        Status::Warn
    };
    let names: Vec<String> = missing
        .iter()
        .map(|(id, n)| format!("{id} ({n})"))
        .collect();
    let list: Vec<String> = missing.iter().map(|(id, _)| format!("\"{id}\"")).collect();
    out.push(
        Item::new(
            "clients",
            status,
            format!("entra.allowed_client_ids lacks {}: their tokens are refused as client_not_allowed", names.join(", ")),
        )
        .fix(format!("If these clients should call, add {} to entra.allowed_client_ids (and pre-authorize them under Expose an API).", list.join(", "))),
    );
}

fn route_scopes(config: &Config, out: &mut Vec<Item>) {
    for r in config.apis.iter().flat_map(|a| config.routes_of(a)) {
        if !r.scopes.is_empty() && !r.scopes.iter().any(|s| s == "user_impersonation") {
            out.push(
                Item::new(
                    "route_scopes",
                    Status::Warn,
                    format!("route {} needs one of the scopes [{}]: Power Query asks only for user_impersonation, so Power BI gets 403 there", r.path, r.scopes.join(" ")),
                )
                .fix("Add \"user_impersonation\" to the route's scopes if Power BI should reach it, or have the client request and consent to the route's scopes."),
            );
        }
    }
}

/// True when only app-only (client-credentials) tokens can pass `r`'s rules: it names app
/// roles and no scopes, or requires `idtyp = "app"`.
fn only_app_only(r: &crate::config::Route) -> bool {
    let roles_only = !r.roles.is_empty() && r.scopes.is_empty();
    let idtyp_app = r
        .claims
        .iter()
        .any(|(name, values)| name == "idtyp" && values.iter().all(|v| v == "app"));
    roles_only || idtyp_app
}

/// `auth_context` asks a user to step up (MFA, a compliant device) through Conditional
/// Access; an application signing in with its own credentials has no user and cannot.
fn route_auth_context(config: &Config, out: &mut Vec<Item>) {
    for api in &config.apis {
        for r in config.routes_of(api) {
            let Some(context) = &r.auth_context else {
                continue;
            };
            if only_app_only(r) {
                out.push(
                    Item::new(
                        "route_auth_context",
                        Status::Warn,
                        format!(
                            "route {} requires the authentication context {context} but only app-only tokens reach it ({}): an application cannot step up, so every request there gets 401 insufficient_claims",
                            r.path,
                            if r.scopes.is_empty() && !r.roles.is_empty() {
                                format!("roles [{}] and no scopes", r.roles.join(" "))
                            } else {
                                "idtyp = app".to_owned()
                            }
                        ),
                    )
                    .fix("Remove auth_context from this route, or let delegated (user) tokens reach it with scopes; protect app-only callers with roles, clients or ip_allow instead."),
                );
            } else {
                out.push(
                    Item::new(
                        "route_auth_context",
                        Status::Todo,
                        format!(
                            "route {} requires the authentication context {context}: create it under Entra ID -> Protection -> Conditional Access -> Authentication contexts, target a Conditional Access policy at it, and have the client pass the claims challenge to MSAL (it answers 401 error=\"insufficient_claims\")",
                            r.path
                        ),
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn warnings(routes: &str) -> Vec<Item> {
        let toml = format!(
            "[entra]\ntenant_id = \"72f988bf-86f1-41af-91ab-2d7cd011db47\"\naudiences = [\"https://api.contoso.com\"]\n{routes}"
        );
        let config =
            Config::load(&toml, &[], &|_| Err(std::io::Error::other("no files"))).expect("config");
        let mut out = Vec::new();
        route_auth_context(&config, &mut out);
        out
    }

    #[test]
    fn auth_context_on_an_app_only_route_is_a_warning() {
        let out = warnings(
            "[[apis]]\nname = \"a\"\nprefix = \"/a\"\nupstream = { url = \"http://127.0.0.1:1\" }\n\
             [[apis.routes]]\npath = \"/a/jobs\"\nroles = [\"Jobs.Run\"]\nauth_context = \"c1\"\n\
             [[apis.routes]]\npath = \"/a/svc\"\nclaims = { idtyp = \"app\" }\nauth_context = \"c2\"\n\
             [[apis.routes]]\npath = \"/a/admin\"\nscopes = [\"admin\"]\nroles = [\"Admin\"]\nauth_context = \"c3\"\n",
        );
        let status: Vec<(Status, bool)> = out
            .iter()
            .map(|i| (i.status, i.message.contains("cannot step up")))
            .collect();
        assert_eq!(
            status,
            [
                (Status::Warn, true),
                (Status::Warn, true),
                (Status::Todo, false)
            ]
        );
        assert!(warnings("[[routes]]\npath = \"/x\"\nscopes = [\"s\"]\n").is_empty());
    }
}
