//! `check --app FILE`: an Entra application object against the config, offline.
//!
//! FILE is `az ad app show --id …` output, Microsoft Graph's JSON for an `application` (or a
//! list of one, as `az ad app list` prints it), the portal's manifest (the older Azure AD
//! Graph shape: `accessTokenAcceptedVersion`, `oauth2Permissions`), or `entra-app.json` from
//! `entragate init`. Each mismatch is one [`Item`], with what the user meets (the AADSTS code
//! or the gateway's refusal) and the fix (`az` command or portal blade).

use std::collections::BTreeMap;

use serde_json::Value;

use super::{Item, Status};
use crate::config::{Config, is_guid};
use crate::ops::client_name;

/// An exposed scope or an app role.
#[derive(Debug, Clone)]
struct Permission {
    id: String,
    value: String,
    enabled: bool,
    /// App roles: `Application`, `User`.
    member_types: Vec<String>,
}

/// What the comparison needs of an application object.
#[derive(Debug, Clone, Default)]
pub struct App {
    app_id: Option<String>,
    identifier_uris: Vec<String>,
    /// `None`: null or absent (v1 tokens).
    version: Option<i64>,
    scopes: Vec<Permission>,
    /// Client ID (lower case) -> the scope IDs it is pre-authorized for.
    pre_authorized: BTreeMap<String, Vec<String>>,
    roles: Vec<Permission>,
    sign_in_audience: Option<String>,
}

impl App {
    /// Reads an application object from JSON text.
    ///
    /// # Errors
    /// Not JSON, not one application object.
    pub fn parse(text: &str) -> Result<Self, String> {
        let v: Value = serde_json::from_str(text.trim_start_matches('\u{feff}')).map_err(|e| {
            format!("not JSON ({e}); pass the output of `az ad app show --id <client ID>`")
        })?;
        let v = one(v)?;
        let Value::Object(obj) = &v else {
            return Err(
                "not a JSON object: pass the output of `az ad app show --id <client ID>`".into(),
            );
        };
        let known = [
            "identifierUris",
            "api",
            "appRoles",
            "oauth2Permissions",
            "appId",
        ];
        if !known.iter().any(|k| obj.contains_key(*k)) {
            return Err(
                "not an application object: it has none of identifierUris, api, appRoles, appId"
                    .into(),
            );
        }
        let api = &v["api"];
        // Graph: api.requestedAccessTokenVersion; the portal's manifest: accessTokenAcceptedVersion.
        let version = [
            &api["requestedAccessTokenVersion"],
            &v["accessTokenAcceptedVersion"],
        ]
        .into_iter()
        .find_map(Value::as_i64);
        let scopes = permissions(if api["oauth2PermissionScopes"].is_array() {
            &api["oauth2PermissionScopes"]
        } else {
            &v["oauth2Permissions"]
        });
        let (pre, ids_key) = if api["preAuthorizedApplications"].is_array() {
            (&api["preAuthorizedApplications"], "delegatedPermissionIds")
        } else {
            (&v["preAuthorizedApplications"], "permissionIds")
        };
        let mut pre_authorized: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for a in pre.as_array().into_iter().flatten() {
            if let Some(id) = a["appId"].as_str() {
                pre_authorized
                    .entry(id.to_ascii_lowercase())
                    .or_default()
                    .extend(
                        strings(&a[ids_key])
                            .into_iter()
                            .map(|s| s.to_ascii_lowercase()),
                    );
            }
        }
        Ok(Self {
            app_id: v["appId"]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_ascii_lowercase),
            identifier_uris: strings(&v["identifierUris"]),
            version,
            scopes,
            pre_authorized,
            roles: permissions(&v["appRoles"]),
            sign_in_audience: v["signInAudience"].as_str().map(str::to_owned),
        })
    }
}

/// The one application of a Graph list (`{"value": [...]}`) or an `az ad app list` array.
fn one(v: Value) -> Result<Value, String> {
    let list = match v {
        Value::Array(items) => items,
        Value::Object(mut obj) if obj.get("value").is_some_and(Value::is_array) => {
            match obj.remove("value") {
                Some(Value::Array(items)) => items,
                _ => Vec::new(),
            }
        }
        other => return Ok(other),
    };
    match <[Value; 1]>::try_from(list) {
        Ok([one]) => Ok(one),
        Err(list) if list.is_empty() => {
            Err("an empty list: no application matched (check the az ad app list filter)".into())
        }
        Err(list) => Err(format!(
            "a list of {} applications: pass one (az ad app show --id <client ID>)",
            list.len()
        )),
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect()
}

fn permissions(v: &Value) -> Vec<Permission> {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|p| Permission {
            id: p["id"].as_str().unwrap_or_default().to_ascii_lowercase(),
            value: p["value"].as_str().unwrap_or_default().to_owned(),
            enabled: p["isEnabled"].as_bool().unwrap_or(true),
            member_types: strings(&p["allowedMemberTypes"]),
        })
        .collect()
}

/// An audience or identifier URI as compared: no trailing `/`, lower case.
fn norm(s: &str) -> String {
    s.trim().trim_end_matches('/').to_ascii_lowercase()
}

/// "route /a needs" or "routes /a, /b need": the routes (by path) that name `value` in their
/// scopes / roles.
fn routes_needing(config: &Config, value: &str, roles: bool) -> String {
    let paths = route_paths(config, value, roles);
    if paths.len() == 1 {
        format!("route {} needs", paths[0])
    } else {
        format!("routes {} need", paths.join(", "))
    }
}

fn route_paths<'a>(config: &'a Config, value: &str, roles: bool) -> Vec<&'a str> {
    let mut paths: Vec<&str> = config
        .routes
        .iter()
        .filter(|r| {
            let list = if roles { &r.roles } else { &r.scopes };
            list.iter().any(|v| v == value)
        })
        .map(|r| r.path.as_str())
        .collect();
    paths.dedup();
    paths
}

/// The comparison: one item per mismatch, and an `ok` line for each part that agrees.
#[must_use]
pub fn items(config: &Config, app: &App, file: &str) -> Vec<Item> {
    let mut out = Vec::new();
    let id = app.app_id.as_deref().unwrap_or("<client ID>");
    identifier_uris(config, app, id, &mut out);
    app_id(config, app, file, &mut out);
    tenants(config, app, id, &mut out);
    scopes(config, app, &mut out);
    roles(config, app, &mut out);
    pre_authorized(config, app, &mut out);
    out
}

fn identifier_uris(config: &Config, app: &App, id: &str, out: &mut Vec<Item>) {
    let uris: Vec<String> = app.identifier_uris.iter().map(|u| norm(u)).collect();
    let audiences: Vec<&String> = config
        .entra
        .audiences
        .iter()
        .filter(|a| !is_guid(a))
        .collect();
    let before = out.len();
    for a in &audiences {
        if !uris.contains(&norm(a)) {
            let mut all = app.identifier_uris.clone();
            all.push((*a).clone());
            out.push(
                Item::new(
                    "app.identifier_uris",
                    Status::Fail,
                    format!(
                        "entra.audiences lists {a}, but the app's identifierUris are {:?}: Entra issues no token for {a} (AADSTS500011: the resource principal was not found), and Power BI asks for exactly the scheme and host of the URL the user typed",
                        app.identifier_uris
                    ),
                )
                .fix(format!(
                    "az ad app update --id {id} --identifier-uris {} (portal: App registrations -> the API -> Expose an API -> Application ID URI; https only on a verified domain), or take {a} out of entra.audiences",
                    all.join(" ")
                )),
            );
        }
    }
    let v2 = app.version == Some(2);
    for (u, n) in app.identifier_uris.iter().zip(&uris) {
        if !audiences.iter().any(|a| norm(a) == *n) {
            let (status, effect) = if v2 {
                (
                    Status::Warn,
                    "refused as audience_mismatch once requestedAccessTokenVersion is null or 1 (v2 tokens carry the client ID)",
                )
            } else {
                (
                    Status::Fail,
                    "refused: 401 invalid_token, reason audience_mismatch",
                )
            };
            out.push(
                Item::new(
                    "app.identifier_uris",
                    status,
                    format!(
                        "identifierUris has {u}, which entra.audiences does not list: a v1 token requested for it carries aud = {u} and is {effect}"
                    ),
                )
                .fix(format!("Add \"{u}\" to entra.audiences.")),
            );
        }
    }
    if out.len() == before {
        out.push(Item::new(
            "app.identifier_uris",
            Status::Ok,
            format!(
                "identifierUris {:?} = the URI audiences of entra.audiences",
                app.identifier_uris
            ),
        ));
    }
}

fn app_id(config: &Config, app: &App, file: &str, out: &mut Vec<Item>) {
    let guids: Vec<String> = config
        .entra
        .audiences
        .iter()
        .filter(|a| is_guid(a))
        .map(|a| a.to_ascii_lowercase())
        .collect();
    let uri_audiences = config.entra.audiences.iter().any(|a| !is_guid(a));
    let version = match app.version {
        None => "null".to_owned(),
        Some(v) => v.to_string(),
    };
    match app.version {
        Some(2) => {}
        None | Some(1) if !uri_audiences => out.push(
            Item::new(
                "app.token_version",
                Status::Fail,
                format!(
                    "requestedAccessTokenVersion is {version}: Entra issues v1 tokens (iss https://sts.windows.net/<tenant>/) whose aud is the Application ID URI {:?}, and entra.audiences lists only client IDs: every token requested by URI is refused (audience_mismatch)",
                    app.identifier_uris
                ),
            )
            .fix(format!(
                "Add the Application ID URI to entra.audiences, or ask for v2 tokens: az ad app update --id {} --set api.requestedAccessTokenVersion=2 (portal: the API -> Manifest)",
                app.app_id.as_deref().unwrap_or("<client ID>")
            )),
        ),
        None | Some(1) => out.push(Item::new(
            "app.token_version",
            Status::Ok,
            format!("requestedAccessTokenVersion is {version}: v1 tokens (iss https://sts.windows.net/<tenant>/, aud = the Application ID URI), which the gateway accepts"),
        )),
        Some(other) => out.push(
            Item::new(
                "app.token_version",
                Status::Fail,
                format!("requestedAccessTokenVersion is {other}: Entra knows only null, 1 and 2"),
            )
            .fix("Set it to 2 (or 1) in the manifest (App registrations -> the API -> Manifest)."),
        ),
    }
    let Some(id) = app.app_id.as_deref() else {
        out.push(
            Item::new(
                "app.app_id",
                Status::Ok,
                format!("{file} has no appId (written before the registration exists): the client ID in entra.audiences is not compared"),
            )
            .fix("Compare the registration itself: az ad app show --id <client ID> > app.json, then check --app app.json."),
        );
        return;
    };
    let line = {
        let mut all: Vec<String> = config.entra.audiences.clone();
        all.push(id.to_owned());
        let quoted: Vec<String> = all.iter().map(|a| format!("\"{a}\"")).collect();
        format!("audiences = [{}]", quoted.join(", "))
    };
    if guids.iter().any(|g| g == id) {
        out.push(Item::new(
            "app.app_id",
            Status::Ok,
            format!("appId {id} is in entra.audiences (the aud of v2 tokens)"),
        ));
    } else if app.version == Some(2) {
        let others = if guids.is_empty() {
            String::new()
        } else {
            format!(
                " (it lists the client ID(s) {}, not this application's)",
                guids.join(", ")
            )
        };
        out.push(
            Item::new(
                "app.app_id",
                Status::Fail,
                format!(
                    "requestedAccessTokenVersion is 2: every token carries aud = the appId {id} (iss https://login.microsoftonline.com/<tenant>/v2.0), which entra.audiences does not list{others}: all are refused (401 invalid_token, audience_mismatch)"
                ),
            )
            .fix(format!("In [entra]: {line}")),
        );
    } else {
        for g in &guids {
            out.push(
                Item::new(
                    "app.app_id",
                    Status::Warn,
                    format!("entra.audiences lists the client ID {g}, but this application's appId is {id}: a token requested for {id} by client ID (or a v2 token, once requestedAccessTokenVersion is 2) is refused"),
                )
                .fix(format!("Replace \"{g}\" with \"{id}\" in entra.audiences if this is the API's registration.")),
            );
        }
    }
}

fn tenants(config: &Config, app: &App, id: &str, out: &mut Vec<Item>) {
    let Some(audience) = app.sign_in_audience.as_deref() else {
        return;
    };
    let multi_app = audience != "AzureADMyOrg";
    let entra = &config.entra;
    if entra.is_multi_tenant() && !multi_app {
        out.push(
            Item::new(
                "app.sign_in_audience",
                Status::Fail,
                format!(
                    "signInAudience is AzureADMyOrg (one tenant), but entra.tenant_id is {}: users of the other allowed tenants cannot get a token for this API (the API has no service principal in their tenant: AADSTS500011 or AADSTS50020)",
                    entra.tenant_id
                ),
            )
            .fix(format!("az ad app update --id {id} --sign-in-audience AzureADMultipleOrgs (portal: the API -> Authentication -> Supported account types), then an admin of each tenant consents")),
        );
    } else if !entra.is_multi_tenant() && multi_app {
        out.push(
            Item::new(
                "app.sign_in_audience",
                Status::Warn,
                format!(
                    "signInAudience is {audience}: users of any tenant may consent and get tokens for this API, and the gateway (entra.tenant_id {}) refuses them (401 invalid_token, issuer_mismatch)",
                    entra.tenant_id
                ),
            )
            .fix(format!("az ad app update --id {id} --sign-in-audience AzureADMyOrg, or set entra.tenant_id = \"organizations\" with entra.allowed_tenants")),
        );
    } else {
        out.push(Item::new(
            "app.sign_in_audience",
            Status::Ok,
            format!(
                "signInAudience {audience} fits entra.tenant_id {}",
                entra.tenant_id
            ),
        ));
    }
}

fn scopes(config: &Config, app: &App, out: &mut Vec<Item>) {
    let mut needed: Vec<&str> = config
        .routes
        .iter()
        .flat_map(|r| r.scopes.iter().map(String::as_str))
        .collect();
    needed.sort_unstable();
    needed.dedup();
    let before = out.len();
    for s in &needed {
        let paths = routes_needing(config, s, false);
        match app.scopes.iter().find(|p| p.value == *s) {
            Some(p) if p.enabled => {}
            Some(_) => out.push(
                Item::new(
                    "app.scopes",
                    Status::Fail,
                    format!("{paths} the scope {s}, which the app exposes disabled: no token carries it, and users get 403 insufficient_scope (scope_missing) there"),
                )
                .fix(format!("Enable {s}: App registrations -> the API -> Expose an API -> the scope -> State: Enabled (or isEnabled true in entra-app.json, then bash entra-app.sh)")),
            ),
            None => out.push(
                Item::new(
                    "app.scopes",
                    Status::Fail,
                    format!("{paths} the scope {s}, which the app does not expose: a client asking for it gets AADSTS650053 (the scope does not exist on the resource), and users get 403 insufficient_scope (scope_missing) there"),
                )
                .fix(format!("Expose it: App registrations -> the API -> Expose an API -> Add a scope -> {s} (or add it to api.oauth2PermissionScopes in entra-app.json with a new id, e.g. from uuidgen, then bash entra-app.sh)")),
            ),
        }
    }
    if !app
        .scopes
        .iter()
        .any(|p| p.enabled && p.value == "user_impersonation")
        && !needed.contains(&"user_impersonation")
    {
        out.push(
            Item::new(
                "app.scopes",
                Status::Warn,
                "the app exposes no user_impersonation scope: Power Query asks for it when signing in to this API (AADSTS650053)",
            )
            .fix("App registrations -> the API -> Expose an API -> Add a scope -> user_impersonation, admins and users, with consent texts"),
        );
    }
    if out.len() == before {
        out.push(Item::new(
            "app.scopes",
            Status::Ok,
            format!(
                "every scope the routes need is exposed ({})",
                needed.join(", ")
            ),
        ));
    }
}

fn roles(config: &Config, app: &App, out: &mut Vec<Item>) {
    let mut needed: Vec<&str> = config
        .routes
        .iter()
        .flat_map(|r| r.roles.iter().map(String::as_str))
        .collect();
    needed.sort_unstable();
    needed.dedup();
    let before = out.len();
    for r in &needed {
        let paths = routes_needing(config, r, true);
        match app.roles.iter().find(|p| p.value == *r) {
            Some(p) if !p.enabled => out.push(
                Item::new(
                    "app.roles",
                    Status::Fail,
                    format!("{paths} the app role {r}, which the app defines disabled: no token carries it, and service accounts get 403 insufficient_scope (role_missing) there"),
                )
                .fix(format!("Enable {r}: App registrations -> the API -> App roles -> {r} -> Enable this app role")),
            ),
            Some(p) if !p.member_types.is_empty() && !p.member_types.iter().any(|t| t == "Application") => out.push(
                Item::new(
                    "app.roles",
                    Status::Warn,
                    format!("{paths} the app role {r}, which only users can be assigned (allowedMemberTypes {:?}): service accounts (client credentials) cannot be granted it", p.member_types),
                )
                .fix(format!("App registrations -> the API -> App roles -> {r} -> Allowed member types: Both (Users/Groups + Applications)")),
            ),
            Some(_) => {}
            None => out.push(
                Item::new(
                    "app.roles",
                    Status::Fail,
                    format!("{paths} the app role {r}, which the app does not define: no service account can be granted it (a client asking for .default gets a token without it), so they get 403 insufficient_scope (role_missing) there"),
                )
                .fix(format!("Define it: App registrations -> the API -> App roles -> Create app role -> value {r}, Allowed member types: Applications (or add it to appRoles in entra-app.json with a new id, then bash entra-app.sh); then grant it: az ad app permission add --id <service account's client ID> --api <this API's client ID> --api-permissions <role id>=Role")),
            ),
        }
    }
    if out.len() == before {
        out.push(Item::new(
            "app.roles",
            Status::Ok,
            if needed.is_empty() {
                "no route needs an app role".to_owned()
            } else {
                format!(
                    "every app role the routes need is defined ({})",
                    needed.join(", ")
                )
            },
        ));
    }
}

fn pre_authorized(config: &Config, app: &App, out: &mut Vec<Item>) {
    let before = out.len();
    let scope_value = |id: &str| {
        app.scopes
            .iter()
            .find(|p| p.id == id)
            .map(|p| p.value.clone())
    };
    let fix_for = |c: &str, scopes: &str| {
        format!(
            "Pre-authorize it: App registrations -> the API -> Expose an API -> Add a client application -> {c}, with {scopes} ticked (or add {{\"appId\": \"{c}\", \"delegatedPermissionIds\": [<scope id>]}} to api.preAuthorizedApplications in entra-app.json, then bash entra-app.sh)"
        )
    };
    // Clients the route rules admit, with the routes and the scopes there; app-only routes
    // (roles and no scopes) are left out: client credentials need no pre-authorization.
    // Microsoft's clients in entra.allowed_client_ids sign users in too (they have no client
    // credentials of ours), so they count as well.
    let mut admitted: BTreeMap<String, (Vec<String>, Vec<&str>)> = BTreeMap::new();
    for r in &config.routes {
        if r.scopes.is_empty() && !r.roles.is_empty() {
            continue;
        }
        for c in &r.clients {
            let e = admitted.entry(c.to_ascii_lowercase()).or_default();
            e.0.push(format!("route {}", r.path));
            e.1.extend(r.scopes.iter().map(String::as_str));
        }
    }
    for c in &config.entra.allowed_client_ids {
        if client_name(c).is_some() {
            let e = admitted.entry(c.to_ascii_lowercase()).or_default();
            e.0.push("entra.allowed_client_ids".to_owned());
        }
    }
    for (c, (paths, scopes)) in &mut admitted {
        paths.dedup();
        scopes.sort_unstable();
        scopes.dedup();
        let name = client_name(c)
            .map(|n| format!(" ({n})"))
            .unwrap_or_default();
        let microsoft = client_name(c).is_some();
        let wanted = if scopes.is_empty() {
            "user_impersonation".to_owned()
        } else {
            scopes.join(" or ")
        };
        match app.pre_authorized.get(c) {
            None => {
                let effect = if microsoft {
                    "Microsoft's client cannot ask users for consent to this API, so sign-in fails with AADSTS650057"
                } else {
                    "its users get a consent prompt, or AADSTS65001 where user consent is turned off"
                };
                out.push(
                    Item::new(
                        "app.pre_authorized",
                        if microsoft { Status::Fail } else { Status::Warn },
                        format!(
                            "{} admits the client {c}{name}, which the app does not pre-authorize: {effect}",
                            paths.join(", ")
                        ),
                    )
                    .fix(fix_for(c, &wanted)),
                );
            }
            Some(ids) if !scopes.is_empty() => {
                let granted: Vec<String> = ids.iter().filter_map(|id| scope_value(id)).collect();
                let exposed: Vec<&&str> = scopes
                    .iter()
                    .filter(|s| app.scopes.iter().any(|p| p.value == **s))
                    .collect();
                if !exposed.is_empty() && !scopes.iter().any(|s| granted.iter().any(|g| g == s)) {
                    out.push(
                        Item::new(
                            "app.pre_authorized",
                            Status::Warn,
                            format!(
                                "the client {c}{name} is pre-authorized for [{}] only, and {} needs {wanted}: its token's scp lacks it (403 insufficient_scope) unless users consent to it",
                                granted.join(" "),
                                paths.join(", ")
                            ),
                        )
                        .fix(fix_for(c, &wanted)),
                    );
                }
            }
            Some(_) => {}
        }
    }
    for (c, ids) in &app.pre_authorized {
        for id in ids {
            if scope_value(id).is_none() {
                out.push(
                    Item::new(
                        "app.pre_authorized",
                        Status::Fail,
                        format!("the pre-authorization of {c} names the scope id {id}, which the app does not expose"),
                    )
                    .fix("Use the id of an exposed scope in api.preAuthorizedApplications (Graph refuses an unknown one)."),
                );
            }
        }
        let allowed = &config.entra.allowed_client_ids;
        if !allowed.is_empty() && !allowed.iter().any(|a| a == c) {
            let name = client_name(c)
                .map(|n| format!(" ({n})"))
                .unwrap_or_default();
            out.push(
                Item::new(
                    "app.pre_authorized",
                    Status::Warn,
                    format!("the app pre-authorizes {c}{name}, which entra.allowed_client_ids does not list: its tokens are refused (401 invalid_token, client_not_allowed)"),
                )
                .fix(format!("Add \"{c}\" to entra.allowed_client_ids, or remove its pre-authorization.")),
            );
        }
    }
    if out.len() == before {
        let names: Vec<String> = app
            .pre_authorized
            .keys()
            .map(|c| match client_name(c) {
                Some(n) => format!("{c} ({n})"),
                None => c.clone(),
            })
            .collect();
        out.push(Item::new(
            "app.pre_authorized",
            Status::Ok,
            format!(
                "pre-authorized clients agree with the route rules and entra.allowed_client_ids: {}",
                if names.is_empty() {
                    "none".to_owned()
                } else {
                    names.join(", ")
                }
            ),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const API: &str = "11111111-1111-1111-1111-111111111111";
    const PQ: &str = "a672d62c-fc7b-4e81-a576-e60dc46e951d";
    const SCOPE_ID: &str = "33333333-3333-3333-3333-333333333333";

    fn config(extra: &str) -> Config {
        let text = format!(
            r#"
[entra]
tenant_id = "72f988bf-86f1-41af-91ab-2d7cd011db47"
audiences = ["https://cdr.example.org", "{API}"]
{extra}

[[routes]]
path = "/q"
scopes = ["user_impersonation"]
roles = ["AQL.Read.All"]
clients = ["{PQ}"]
"#
        );
        Config::load(&text, &[], &|_| Err(std::io::ErrorKind::NotFound.into())).expect("config")
    }

    fn graph() -> Value {
        serde_json::json!({
            "appId": API,
            "signInAudience": "AzureADMyOrg",
            "identifierUris": ["https://cdr.example.org/"],
            "api": {
                "requestedAccessTokenVersion": 2,
                "oauth2PermissionScopes": [{"id": SCOPE_ID, "value": "user_impersonation", "isEnabled": true}],
                "preAuthorizedApplications": [{"appId": PQ, "delegatedPermissionIds": [SCOPE_ID]}]
            },
            "appRoles": [{"id": "44444444-4444-4444-4444-444444444444", "value": "AQL.Read.All", "isEnabled": true, "allowedMemberTypes": ["Application"]}]
        })
    }

    fn findings(c: &Config, v: &Value) -> Vec<Item> {
        let app = App::parse(&v.to_string()).expect("app");
        items(c, &app, "app.json")
            .into_iter()
            .filter(|i| i.status != Status::Ok)
            .collect()
    }

    #[test]
    fn an_agreeing_application_has_no_findings_in_either_shape() {
        let c = config("");
        assert!(
            findings(&c, &graph()).is_empty(),
            "{:?}",
            findings(&c, &graph())
        );
        // As `az ad app list` prints it, and the portal's older manifest shape.
        assert!(findings(&c, &serde_json::json!([graph()])).is_empty());
        let legacy = serde_json::json!({
            "appId": API,
            "signInAudience": "AzureADMyOrg",
            "identifierUris": ["https://cdr.example.org"],
            "accessTokenAcceptedVersion": 2,
            "oauth2Permissions": [{"id": SCOPE_ID, "value": "user_impersonation", "isEnabled": true}],
            "preAuthorizedApplications": [{"appId": PQ, "permissionIds": [SCOPE_ID]}],
            "appRoles": [{"id": "4", "value": "AQL.Read.All", "isEnabled": true, "allowedMemberTypes": ["Application"]}]
        });
        assert!(
            findings(&c, &legacy).is_empty(),
            "{:?}",
            findings(&c, &legacy)
        );
    }

    #[test]
    fn each_fault_is_one_named_finding() {
        let c = config("");
        let mut v = graph();
        v["api"]["requestedAccessTokenVersion"] = Value::Null;
        v["appId"] = "55555555-5555-5555-5555-555555555555".into();
        let f = findings(&c, &v);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].id, "app.app_id");
        assert_eq!(f[0].status, Status::Warn);

        let mut v = graph();
        v["appId"] = "55555555-5555-5555-5555-555555555555".into();
        let f = findings(&c, &v);
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(f[0].message.contains("audience_mismatch") && f[0].fix.contains("55555555"));

        let mut v = graph();
        v["api"]["preAuthorizedApplications"] = serde_json::json!([]);
        v["appRoles"] = serde_json::json!([]);
        let f = findings(&c, &v);
        let ids: Vec<&str> = f.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, ["app.roles", "app.pre_authorized"], "{f:?}");
        assert!(f[0].message.contains("AQL.Read.All"));
        assert!(f[1].message.contains("AADSTS650057") && f[1].message.contains(PQ));
    }

    #[test]
    fn v1_tokens_need_the_application_id_uri_among_the_audiences() {
        let text = format!(
            "[entra]\ntenant_id = \"72f988bf-86f1-41af-91ab-2d7cd011db47\"\naudiences = [\"{API}\"]\n"
        );
        let c = Config::load(&text, &[], &|_| Err(std::io::ErrorKind::NotFound.into()))
            .expect("config");
        let mut v = graph();
        v["identifierUris"] = serde_json::json!([]);
        v["api"]["requestedAccessTokenVersion"] = Value::Null;
        let f = findings(&c, &v);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].id, "app.token_version");
        assert!(
            f[0].fix.contains("api.requestedAccessTokenVersion=2"),
            "{}",
            f[0].fix
        );
        // Asking for v2 tokens ends it: their aud is the client ID, which is listed.
        v["api"]["requestedAccessTokenVersion"] = 2.into();
        assert!(findings(&c, &v).is_empty(), "{:?}", findings(&c, &v));
    }

    #[test]
    fn microsoft_clients_in_the_allow_list_need_pre_authorization_too() {
        let c = config(&format!(
            "allowed_client_ids = [\"{PQ}\", \"7ab7862c-4c57-491e-8a45-d52a7e023983\"]"
        ));
        let f = findings(&c, &graph());
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(
            f[0].message
                .starts_with("entra.allowed_client_ids admits the client 7ab7862c")
                && f[0].message.contains("AADSTS650057"),
            "{}",
            f[0].message
        );
    }

    #[test]
    fn lists_and_non_applications_are_named() {
        assert!(App::parse("[]").expect_err("empty").contains("empty list"));
        assert!(
            App::parse(&serde_json::json!([graph(), graph()]).to_string())
                .expect_err("two")
                .contains("2 applications")
        );
        assert!(
            App::parse("{\"a\": 1}")
                .expect_err("obj")
                .contains("not an application")
        );
        assert!(App::parse("<xml/>").expect_err("xml").contains("not JSON"));
    }
}
